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

With ``settings.nm = 'N:M'`` the rounds prune towards N:M sparsity
(:mod:`pruning.nm`) instead: every prunable layer (:func:`nm_layers`) ends
keeping ``N`` of each group of ``M`` consecutive inputs, and round ``r``
keeps ``round(M * (N/M) ** f)`` of them, ``f`` the layer's share of its
rounds (the geometric schedule of the densities, on whole weights per
group): 2:4 over two rounds keeps 3:4, then 2:4. One round is one-shot N:M.

The run's settings come as any object with the fields of
:class:`pruning.experiment.config.PruneConfig` that a round reads (``criterion``,
``density``, ``quality``, ``std_of``, ``rounds``, ``alternate``, ``seed``),
so this module needs neither the configuration nor the models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from pruning import _tree, criteria, nm, schedule
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
  nm: str | None  # 'N:M' to prune towards N:M sparsity; None: by criterion and density
  nm_dense: Sequence[str]  # with nm: layers left dense


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
    criterion that selects by count: ``'sparsity'``, ``'random'``; with
    ``settings.nm``, ``n / M`` for the ``n`` of every ``M`` it keeps) or its
    quality (by threshold: ``'quality'``).

  Examples:
    >>> import types
    >>> import numpy as np
    >>> params = {'fc1': {'kernel': np.arange(1.0, 101.0).reshape(10, 10)}}
    >>> settings = types.SimpleNamespace(criterion='sparsity', density={'fc1': 0.04},
    ...     quality={}, std_of='all', rounds=2, alternate=False, seed=0, nm=None, nm_dense=())
    >>> mask, group, targets = prune_round(params, None, settings, 1, {'conv': [], 'fc': ['fc1']})
    >>> group, targets, int(mask['fc1']['kernel'].sum())
    ('all', {'fc1': 0.2}, 20)

  References:
    Han et al. 2015, §3.4 (iterative pruning), §3.3 (alternating FC/CONV).
  """
  alternate = groups if settings.alternate else None
  if settings.nm is not None:
    return _nm_round(params, mask, settings, round_index, alternate)
  criterion = criteria.get_criterion(settings.criterion)
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


def kernels_pattern(layers: Sequence[str]) -> str:
  """A pattern selecting the kernels of ``layers`` (layer paths) and nothing else.

  Examples:
    >>> kernels_pattern(['fc1', 'stage1/0/conv1'])
    '^(fc1|stage1/0/conv1)/kernel$'
  """
  return '^(' + '|'.join(re.escape(layer) for layer in layers) + ')/kernel$'


def nm_layers(params: PyTree, m: int, dense: Sequence[str] = ()) -> list[str]:
  """The layers N:M pruning with groups of ``m`` prunes: every prunable kernel but ``dense``.

  Args:
    params: params or their shapes (``jax.ShapeDtypeStruct`` leaves).
    m: the group size M.
    dense: layers left dense (a first convolution on 3 RGB channels).

  Returns:
    The layer paths (``'fc1'``), in params order.

  Raises:
    ValueError: a layer of ``dense`` that is not a prunable layer; a layer
      pruned whose input dimension (axis -2) is not a multiple of ``m``, or
      whose kernel is 3-D (attention: its input axis is not -2), naming it
      and its shape; no layer left to prune.

  Examples:
    >>> import numpy as np
    >>> params = {'conv1': {'kernel': np.zeros((5, 5, 1, 20))},
    ...           'fc1': {'kernel': np.zeros((800, 500))}}
    >>> nm_layers(params, 4, dense=['conv1'])
    ['fc1']
  """
  pattern = _tree.compile_pattern(KERNEL_PATTERN)
  shapes = {
    name.rpartition('/')[0]: tuple(np.shape(_tree.unbox(leaf)))
    for name, leaf in _tree.named_leaves(params)
    if pattern.search(name)
  }
  unknown = sorted(set(dense) - set(shapes))
  if unknown:
    raise ValueError(f'nm_dense names {unknown}, not prunable layers; they are {list(shapes)}')
  pruned = [layer for layer in shapes if layer not in dense]
  for layer in pruned:
    shape = shapes[layer]
    if len(shape) == 3:  # LinearGeneral / attention: (in, heads, dim) or (heads, dim, out)
      raise ValueError(
        f'layer {layer!r} has a 3-D kernel {shape} (attention): N:M groups run along the '
        'input axis of a Dense or Conv kernel (axis -2), which is not its input axis; leave '
        f'it dense (nm_dense, --nm-dense {layer})'
      )
    if len(shape) < 2:
      raise ValueError(
        f'layer {layer!r} has a {len(shape)}-D kernel {shape}, with no input axis (-2) to '
        f'group; leave it dense (nm_dense, --nm-dense {layer})'
      )
    if shape[-2] % m:
      inputs = shape[-2]
      raise ValueError(
        f'layer {layer!r} has {inputs} inputs (axis -2 of its kernel, shape {shape}), not a '
        f'multiple of M={m}; leave it dense (nm_dense, --nm-dense {layer})'
      )
  if not pruned:
    raise ValueError(f'nm_dense leaves every prunable layer dense ({list(shapes)}); none to prune')
  return pruned


def _nm_round(
  params: PyTree,
  mask: PyTree,
  settings: RoundSettings,
  round_index: int,
  alternate: Mapping[str, list[str]] | None,
) -> tuple[PyTree, str, dict[str, float]]:
  """:func:`prune_round` of an N:M run: round ``r`` keeps ``round(M * (N/M) ** f)`` per group."""
  n, m = nm.parse_nm(settings.nm)
  layers = nm_layers(params, m, settings.nm_dense)
  if alternate is not None:
    alternate = {kind: [x for x in names if x in layers] for kind, names in alternate.items()}
  group, fractions = schedule.round_fractions(layers, settings.rounds, round_index, alternate)
  # Every layer a round prunes is equally far along, so one N serves them all; round() is
  # monotone, so N never rises from round to round, and at f = 1 it is N exactly.
  (f,) = set(fractions.values())
  keep = round(m * (n / m) ** f)
  mask = nm.nm_mask(params, keep, m, mask=mask, pattern=kernels_pattern(list(fractions)))
  return mask, group, dict.fromkeys(fractions, keep / m)
