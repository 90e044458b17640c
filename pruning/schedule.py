"""Schedules of an iterative prune-retrain run: learning rate and pruning targets.

A run is a dense training phase (round 0) followed by rounds 1..R of prune
then retrain (Han et al. 2015, §3.4). Everything here is a pure function of
the configuration, so a resumed run follows the same schedule.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from pruning import _tree

RetrainSchedule = Literal['rewind', 'fine-tune', 'weight-rewind']


def learning_rate_schedule(
  learning_rate: float,
  steps_per_epoch: int,
  dense_epochs: int,
  rounds: int,
  retrain_epochs: int,
  retrain: RetrainSchedule = 'rewind',
  retrain_lr_scale: float = 0.1,
  warmup_steps: int = 0,
) -> Callable[[int], float]:
  """One schedule over the whole run: a cosine decay per phase, ``rate(step) -> float``.

  The dense phase decays from ``learning_rate`` to 0. Each retraining phase
  decays again, from ``learning_rate`` (``'rewind'``: learning-rate
  rewinding, Renda et al. 2020) or from ``learning_rate * retrain_lr_scale``
  (``'fine-tune'``: the paper retrains LeNets at 1/10 of the original rate,
  §4). ``'weight-rewind'`` rates are those of ``'rewind'``: the pipeline
  also sets the surviving weights back to their values early in dense
  training (Frankle et al. 2020), and the rate restarts with them. A phase of ``n`` steps gives step ``k`` of it
  ``peak * (1 + cos(pi * k / n)) / 2``, the curve of
  ``optax.cosine_decay_schedule``. With ``warmup_steps = w > 0`` the dense
  phase's first ``w`` steps are scaled by ``(k + 1) / w`` (a linear warm-up
  from ``learning_rate / w``, a safeguard for networks whose first large
  steps kill ReLU units); retraining phases start without one.

  The rate is computed on the host, in float64 rounded to float32, and
  handed to the compiled step as data (``optax.inject_hyperparams``): the
  step then holds no schedule, so it is the same program whatever the
  retraining settings, and the dense phase trains the same network whether
  or not pruning rounds follow. (Traced into the step, the schedule made XLA
  compile each run's own program, and same-seed dense networks differed by
  rounding from the first epoch on.)

  Examples:
    >>> schedule = learning_rate_schedule(0.1, 10, 2, 2, 1, retrain='fine-tune')
    >>> [round(schedule(step), 6) for step in (0, 10, 20, 25, 30)]
    [0.1, 0.05, 0.01, 0.005, 0.01]
    >>> warm = learning_rate_schedule(0.1, 10, 2, 0, 1, warmup_steps=4)
    >>> [round(warm(step), 6) for step in (0, 1, 3, 4)]
    [0.025, 0.049692, 0.09455, 0.090451]
  """
  if retrain not in ('rewind', 'fine-tune', 'weight-rewind'):
    raise ValueError(
      f"retrain schedule is {retrain!r}; expected 'rewind', 'fine-tune' or 'weight-rewind'"
    )
  if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
    raise ValueError(f'warmup_steps is {warmup_steps!r}; expected an integer >= 0')
  peak = learning_rate * retrain_lr_scale if retrain == 'fine-tune' else learning_rate
  dense_steps = max(1, dense_epochs * steps_per_epoch)
  round_steps = max(1, retrain_epochs * steps_per_epoch)
  # Round r's phase starts at boundaries[r - 1]; a later boundary takes over an
  # earlier equal one (rounds of 0 epochs), as in optax.join_schedules.
  boundaries = [(dense_epochs + i * retrain_epochs) * steps_per_epoch for i in range(rounds)]

  def rate(step: int) -> float:
    phase = bisect.bisect_right(boundaries, step)
    if phase == 0:
      top, k, n = learning_rate, step, dense_steps
      if warmup_steps > 0:
        top *= min(1.0, (max(step, 0) + 1) / warmup_steps)
    else:
      top, k, n = peak, step - boundaries[phase - 1], round_steps
    return float(np.float32(top * 0.5 * (1.0 + math.cos(math.pi * min(max(k, 0), n) / n))))

  return rate


def round_fractions(
  layers: Sequence[str],
  rounds: int,
  round_index: int,
  groups: Mapping[str, Sequence[str]] | None = None,
) -> tuple[str, dict[str, float]]:
  """Which layers round ``round_index`` prunes, and how far along each one is.

  With ``groups=None`` every layer is pruned every round and is
  ``round_index / rounds`` of the way to its final value after it. With
  ``groups`` (``{'fc': [...], 'conv': [...]}``), rounds alternate between the
  FC layers (odd rounds) and the CONV layers (even rounds), as the paper
  prunes and retrains them in turn (§3.3); each group counts only its own
  rounds and arrives at its final value on its last one. If either group is
  empty there is nothing to alternate and every round prunes every layer.

  Returns:
    ``(group, {layer: fraction in (0, 1]})``; ``group`` is ``'fc'``,
    ``'conv'`` or ``'all'``.

  Examples:
    >>> round_fractions(['fc1', 'fc2'], rounds=4, round_index=1)
    ('all', {'fc1': 0.25, 'fc2': 0.25})
    >>> round_fractions(['conv1', 'fc1'], 4, 4, {'conv': ['conv1'], 'fc': ['fc1']})
    ('conv', {'conv1': 1.0})
  """
  if not 1 <= round_index <= rounds:
    raise ValueError(f'round_index is {round_index}; expected 1..{rounds}')
  if groups is None or not groups.get('conv') or not groups.get('fc'):
    return 'all', dict.fromkeys(layers, round_index / rounds)
  group = 'fc' if round_index % 2 == 1 else 'conv'
  own_rounds = [r for r in range(1, rounds + 1) if (r % 2 == 1) == (group == 'fc')]
  fraction = (own_rounds.index(round_index) + 1) / len(own_rounds)
  members = set(groups[group])
  return group, {name: fraction for name in layers if name in members}


def round_targets(
  final: Mapping[str, float],
  rounds: int,
  round_index: int,
  groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
  """Per-layer kept fractions after one round, reaching ``final`` geometrically.

  A layer ``f`` of the way through its rounds keeps ``final ** f``: each of
  its rounds removes the same fraction of the survivors, raising the
  threshold a little at a time (§3.4). ``groups`` alternates FC and CONV
  rounds as in :func:`round_fractions`.

  Returns:
    ``{layer: kept fraction after this round}`` for the layers pruned in it.

  Examples:
    >>> round_targets({'fc1': 0.01}, rounds=2, round_index=1)
    {'fc1': 0.1}
    >>> groups = {'fc': ['fc1'], 'conv': ['conv1']}
    >>> round_targets({'fc1': 0.04, 'conv1': 0.5}, 4, 3, groups)
    {'fc1': 0.04}
  """
  final = {
    name: _tree.real_number(density, f'final kept fraction for {name!r}', maximum=1.0)
    for name, density in final.items()
  }
  for name, density in final.items():
    if not density > 0.0:
      raise ValueError(f'final kept fraction for {name!r} is {density}; expected a value in (0, 1]')
  _, fractions = round_fractions(list(final), rounds, round_index, groups)
  return {name: final[name] ** f for name, f in fractions.items()}


def round_qualities(
  final: Mapping[str, float],
  rounds: int,
  round_index: int,
  groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, float]:
  """Per-layer quality parameters after one round, rising linearly to ``final``.

  A layer ``f`` of the way through its rounds is pruned with
  ``final * f``: the threshold ``quality x std`` rises a little each round
  (§3.4). ``groups`` alternates FC and CONV rounds as in
  :func:`round_fractions`.

  Returns:
    ``{layer: quality for this round}`` for the layers pruned in it.

  Examples:
    >>> round_qualities({'fc1': 2.0, 'fc2': 1.0}, rounds=4, round_index=1)
    {'fc1': 0.5, 'fc2': 0.25}
    >>> groups = {'fc': ['fc1'], 'conv': ['conv1']}
    >>> round_qualities({'fc1': 2.0, 'conv1': 0.5}, 4, 4, groups)
    {'conv1': 0.5}
  """
  final = {
    name: _tree.real_number(quality, f'final quality for {name!r}', minimum=0.0)
    for name, quality in final.items()
  }
  _, fractions = round_fractions(list(final), rounds, round_index, groups)
  return {name: final[name] * f for name, f in fractions.items()}
