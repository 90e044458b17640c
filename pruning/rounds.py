"""One round of iterative pruning: which layers it prunes, to what target, with which mask.

A run prunes in rounds 1..R after dense training (Han et al. 2015, §3.4).
:func:`prune_round` turns a run's final per-layer targets into round
``r``'s mask with the run's criterion (any registered in
:data:`pruning.criteria.CRITERIA`): densities fall geometrically
(:func:`pruning.schedule.round_targets`) and qualities rise linearly
(:func:`pruning.schedule.round_qualities`), over
all layers each round or, alternating, over FC rounds and CONV rounds
(§3.3, :func:`layer_groups`). The previous mask is passed on, so a weight
pruned once stays pruned.

The run's settings come as any object with the fields of
:class:`pruning.experiment.config.PruneConfig` that a round reads (``criterion``,
``density``, ``quality``, ``std_of``, ``rounds``, ``alternate``, ``seed``),
so this module needs neither the configuration nor the models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from pruning import _tree, criteria, schedule
from pruning.masks import KERNEL_PATTERN

PyTree = Any


class RoundSettings(Protocol):
  """What a round reads of a run's configuration (see :class:`pruning.experiment.config.PruneConfig`)."""

  criterion: str  # a name in pruning.criteria.CRITERIA
  density: Mapping[str, float]  # final kept fraction per layer (criteria that select by count)
  quality: Mapping[str, float]  # final quality per layer (criteria that select by threshold)
  std_of: str  # 'all' or 'kept': the weights whose std scales the quality
  rounds: int  # R, the number of prune-retrain rounds
  alternate: bool  # FC and CONV layers in alternate rounds (§3.3)
  seed: int  # with the round index, seeds the random criterion


def layer_groups(params: PyTree) -> dict[str, list[str]]:
  """Prunable layers by kind: ``'conv'`` (kernels of 3+ dims) and ``'fc'`` (2 dims).

  A kernel of fewer dimensions belongs to neither group.

  Examples:
    >>> import numpy as np
    >>> params = {'conv1': {'kernel': np.zeros((5, 5, 1, 20)), 'bias': np.zeros(20)},
    ...           'fc1': {'kernel': np.zeros((800, 500)), 'bias': np.zeros(500)}}
    >>> layer_groups(params)
    {'conv': ['conv1'], 'fc': ['fc1']}
  """
  pattern = _tree.compile_pattern(KERNEL_PATTERN)
  ndims = {
    name.rpartition('/')[0]: len(np.shape(_tree.unbox(leaf)))
    for name, leaf in _tree.named_leaves(params)
    if pattern.search(name)
  }
  return {
    'conv': [layer for layer, ndim in ndims.items() if ndim > 2],
    'fc': [layer for layer, ndim in ndims.items() if ndim == 2],
  }


def prune_round(
  params: PyTree,
  mask: PyTree,
  settings: RoundSettings,
  round_index: int,
  groups: Mapping[str, list[str]],
) -> tuple[PyTree, str, dict[str, float]]:
  """The mask after round ``round_index``, the layer group it pruned and its targets.

  Args:
    params: the trained params, on the host.
    mask: the current mask (its pruned weights stay pruned).
    settings: the run's configuration (:class:`RoundSettings`).
    round_index: the round, 1..``settings.rounds``.
    groups: ``{'conv': [...], 'fc': [...]}`` from :func:`layer_groups`; it
      only matters with ``settings.alternate``.

  Returns:
    ``(mask, group, targets)``: the new mask; ``'fc'``, ``'conv'`` or
    ``'all'``; and per layer pruned in this round its kept fraction (a
    criterion that selects by count: ``'sparsity'``, ``'random'``) or its
    quality (by threshold: ``'quality'``).

  Examples:
    >>> import types
    >>> import numpy as np
    >>> params = {'fc1': {'kernel': np.arange(1.0, 101.0).reshape(10, 10)}}
    >>> settings = types.SimpleNamespace(criterion='sparsity', density={'fc1': 0.04},
    ...     quality={}, std_of='all', rounds=2, alternate=False, seed=0)
    >>> mask, group, targets = prune_round(params, None, settings, 1, {'conv': [], 'fc': ['fc1']})
    >>> group, targets, int(mask['fc1']['kernel'].sum())
    ('all', {'fc1': 0.2}, 20)

  References:
    Han et al. 2015, §3.4 (iterative pruning), §3.3 (alternating FC/CONV).
  """
  criterion = criteria.get_criterion(settings.criterion)
  alternate = groups if settings.alternate else None
  by_quality = criterion.selection == 'threshold'
  final = settings.quality if by_quality else settings.density
  group, _ = schedule.round_fractions(list(final), settings.rounds, round_index, alternate)
  if by_quality:
    targets = schedule.round_qualities(final, settings.rounds, round_index, alternate)
    new = criteria.quality_mask(
      params, targets, criterion=criterion.name, std_of=settings.std_of, mask=mask
    )
    return new, group, targets
  targets = schedule.round_targets(final, settings.rounds, round_index, alternate)
  sparsity = {name: 1.0 - kept for name, kept in targets.items()}
  key = (settings.seed, round_index) if criterion.random else None
  new = criteria.sparsity_mask(params, sparsity, criterion=criterion.name, key=key, mask=mask)
  return new, group, targets
