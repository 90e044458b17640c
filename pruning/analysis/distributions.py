"""A layer's weight distribution before pruning, after pruning and after retraining.

Trained weights pile up around zero. Magnitude pruning cuts out the middle of
that pile, leaving two lobes with a gap of width ``2 x threshold``;
retraining then lets the survivors move, and the lobes soften while the
pruned weights stay exactly at zero and out of the picture. The paper shows
this bimodal distribution (Han et al. 2015, §5); :func:`weight_histograms`
computes the three histograms on shared bins and
:func:`plot_weight_distributions` draws them side by side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from pruning import _tree

PyTree = Any

STAGES = ('before pruning', 'after pruning', 'after retraining')


class Histogram(NamedTuple):
  """Counts of a layer's kept weights in bins."""

  counts: np.ndarray  # int64[bins]: kept weights per bin
  edges: np.ndarray  # float64[bins + 1]: bin edges, shared by the stages
  kept: int  # weights counted (the pruned ones are left out)
  total: int  # weights in the layer


def _layer(tree: PyTree, layer: str, what: str) -> np.ndarray | None:
  leaves = dict(_tree.named_leaves(tree))
  matches = [n for n in leaves if n == layer or n == f'{layer}/kernel']
  if len(matches) != 1:
    raise ValueError(f'layer {layer!r} is not in {what}; leaves: {sorted(leaves)}')
  leaf = leaves[matches[0]]
  return None if leaf is None else np.asarray(_tree.unbox(leaf))


def weight_histograms(
  dense_params: PyTree,
  mask: PyTree,
  retrained_params: PyTree,
  layer: str,
  *,
  bins: int = 80,
) -> dict[str, Histogram]:
  """Histograms of one layer's weights at the three stages, on shared bins.

  Args:
    dense_params: the trained params before pruning.
    mask: the mask the layer was pruned with (``True`` = kept).
    retrained_params: the params after retraining with that mask.
    layer: the layer (``'fc1'``) or weight leaf (``'fc1/kernel'``) path.
    bins: number of bins, spread evenly over ``[-m, m]`` with ``m`` the
      largest kept magnitude of any stage.

  Returns:
    ``{'before pruning': ..., 'after pruning': ..., 'after retraining': ...}``:
    all weights of the dense layer; the dense weights the mask keeps; the
    retrained weights the mask keeps.

  Raises:
    ValueError: a layer missing from any of the trees, a mask leaf that is
      ``None`` (the layer is not prunable), or shapes that differ.

  Examples:
    >>> import jax.numpy as jnp
    >>> dense = {'fc': {'kernel': jnp.array([[-1.0, -0.1, 0.2, 2.0]])}}
    >>> mask = {'fc': {'kernel': jnp.array([[True, False, False, True]])}}
    >>> retrained = {'fc': {'kernel': jnp.array([[-1.5, 0.0, 0.0, 1.0]])}}
    >>> h = weight_histograms(dense, mask, retrained, 'fc', bins=4)
    >>> h['before pruning'].counts.tolist(), h['after pruning'].counts.tolist()
    ([0, 2, 1, 1], [0, 1, 0, 1])
    >>> h['after retraining'].counts.tolist(), h['after retraining'].kept
    ([1, 0, 0, 1], 2)

  References:
    Han et al. 2015, §5 (weight distribution before and after pruning).
  """
  before = _layer(dense_params, layer, 'dense_params')
  keep = _layer(mask, layer, 'mask')
  after = _layer(retrained_params, layer, 'retrained_params')
  if keep is None:
    raise ValueError(f'layer {layer!r} has no mask (None): it is not a prunable layer')
  if not before.shape == keep.shape == after.shape:
    raise ValueError(
      f'layer {layer!r} has shapes {before.shape} (dense), {keep.shape} (mask), '
      f'{after.shape} (retrained); expected one shape'
    )
  keep = keep.astype(bool)
  samples = {STAGES[0]: before.ravel(), STAGES[1]: before[keep], STAGES[2]: after[keep]}
  extent = max(float(np.abs(s).max()) if s.size else 0.0 for s in samples.values()) or 1.0
  edges = np.linspace(-extent, extent, bins + 1)
  return {
    stage: Histogram(np.histogram(s, bins=edges)[0], edges, int(s.size), int(before.size))
    for stage, s in samples.items()
  }


def plot_weight_distributions(
  histograms: Mapping[str, Histogram],
  path: str | os.PathLike[str] | None = None,
  *,
  title: str = '',
  dpi: int = 100,
) -> Any:
  """One panel per stage, sharing the x axis; returns the matplotlib ``Figure``.

  Saves a PNG to ``path`` if given.
  """
  from matplotlib.figure import Figure

  fig = Figure(figsize=(9.0, 2.8))
  axes = fig.subplots(1, len(histograms), sharex=True)
  for ax, (stage, h) in zip(np.atleast_1d(axes), histograms.items(), strict=True):
    ax.stairs(h.counts, h.edges, fill=True, alpha=0.8)
    ax.set_title(f'{stage}\n{h.kept:,} of {h.total:,} weights', fontsize=9)
    ax.set_xlabel('weight value')
    ax.grid(True, alpha=0.3)
  np.atleast_1d(axes)[0].set_ylabel('count')
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=dpi)
  return fig
