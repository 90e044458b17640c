"""Pruning masks as pytrees that mirror the params.

A *mask* has the structure of the params it prunes. Each leaf is either

* a boolean array of the weight's shape, ``True`` where the connection is
  kept and ``False`` where it is pruned, for a *prunable* weight; or
* ``None`` for a leaf that is never pruned (biases, normalisation scales and
  anything else the selection pattern leaves out).

``None`` was chosen over an all-``True`` array because it is explicit in the
tree (a reader sees which leaves are prunable), costs no memory, and keeps
unpruned leaves out of the counts, as the paper's tables leave biases out
(Han et al. 2015, §4).

Prunable leaves are chosen by a regular expression searched in each leaf's
path, ``'fc1/kernel'``-style. The default, :data:`KERNEL_PATTERN`, selects
the ``kernel`` of every Dense/Linear and Conv layer (flax linen and nnx both
name them so) and nothing else.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pruning import _tree

PyTree = Any

KERNEL_PATTERN = r'(^|/)kernel$'
"""Default selection: the weight matrices/kernels of Dense and Conv layers."""


def prunable_mask(params: PyTree, pattern: str | re.Pattern[str] = KERNEL_PATTERN) -> PyTree:
  """A mask that keeps every connection of the leaves selected by ``pattern``.

  Args:
    params: the params pytree (plain dicts or an nnx ``State``).
    pattern: regular expression searched in each leaf's ``'a/b/kernel'`` path.

  Returns:
    A mask mirroring ``params``: all-``True`` boolean arrays for selected
    leaves, ``None`` for the others.

  Raises:
    ValueError: if ``pattern`` selects no leaf, or selects a leaf with fewer
      than two dimensions (a bias or a normalisation scale is not a
      connection weight).

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc1': {'kernel': jnp.ones((3, 2)), 'bias': jnp.zeros(2)}}
    >>> mask = prunable_mask(params)
    >>> mask['fc1']['bias'] is None, mask['fc1']['kernel'].dtype
    (True, dtype('bool'))

  References:
    Han et al. 2015, §4 (masks are per weight tensor; biases are not pruned).
  """
  regex = _tree.compile_pattern(pattern)

  def select(name: str, leaf: Any) -> jax.Array | None:
    if leaf is None or not regex.search(name):
      return None
    value = _tree.unbox(leaf)
    if np.ndim(value) < 2:
      raise ValueError(
        f'pattern {regex.pattern!r} selects {name!r} of shape {np.shape(value)}; '
        'only weights with two or more dimensions (Dense/Conv kernels) are prunable, '
        'never biases or normalisation scales'
      )
    return jnp.ones(np.shape(value), dtype=bool)

  mask = _tree.map_named(select, params)
  if not any(leaf is not None for leaf in jax.tree.leaves(mask)):
    names = [name for name, _ in _tree.named_leaves(params)]
    raise ValueError(f'pattern {regex.pattern!r} selects no leaf of the params; leaves: {names}')
  return mask


def check_mask(
  mask: PyTree, params: PyTree, *, params_name: str = 'params'
) -> list[jax.Array | None]:
  """Validates ``mask`` against ``params`` and returns its leaves in params order.

  Works on abstract values too (inside ``jit``): only structure, shapes and
  dtypes are read. ``params_name`` names the tree in error messages.

  Raises:
    ValueError: the mask's leaf paths differ from the params'; a mask leaf's
      shape differs from its weight's; a mask leaf is not boolean. Each message
      names the offending leaf.
  """
  leaves = _tree.align(mask, params, what='mask', like_what=params_name)
  for (name, param), leaf in zip(_tree.named_leaves(params), leaves, strict=True):
    if leaf is None:
      continue
    leaf = _tree.unbox(leaf)
    dtype = getattr(leaf, 'dtype', None)
    if dtype != jnp.bool_:
      raise ValueError(f'mask leaf {name!r} has dtype {dtype}; expected bool')
    expected = np.shape(_tree.unbox(param))
    if np.shape(leaf) != expected:
      raise ValueError(
        f'mask leaf {name!r} has shape {np.shape(leaf)}; expected {expected} '
        f'to match the {params_name} leaf'
      )
  return leaves


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
  """Sets pruned weights to exactly ``0.0``; unpruned leaves pass through.

  Boxed nnx Variables stay boxed, so the result can go back into a model with
  ``nnx.update(model, apply_mask(nnx.state(model, nnx.Param), mask))``.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'kernel': jnp.array([[1.0, -2.0]]), 'bias': jnp.array([3.0])}
    >>> mask = {'kernel': jnp.array([[True, False]]), 'bias': None}
    >>> apply_mask(params, mask)['kernel'].tolist()
    [[1.0, 0.0]]
  """
  leaves = check_mask(mask, params)
  flat, treedef = jax.tree.flatten(params, is_leaf=_tree.is_leaf_or_none)
  masked = [
    p if m is None else _tree.rebox(p, jnp.where(_tree.unbox(m), _tree.unbox(p), 0))
    for p, m in zip(flat, leaves, strict=True)
  ]
  return jax.tree.unflatten(treedef, masked)


def intersect_masks(*masks: PyTree) -> PyTree:
  """A connection kept by the result is kept by every mask (logical AND).

  ``None`` (never pruned) acts as all-``True``; a leaf that is ``None`` in
  every mask stays ``None``.

  Examples:
    >>> import jax.numpy as jnp
    >>> a = {'w': jnp.array([True, True, False]), 'b': None}
    >>> b = {'w': jnp.array([True, False, True]), 'b': None}
    >>> intersect_masks(a, b)['w'].tolist()
    [True, False, False]
  """
  if not masks:
    raise ValueError('intersect_masks needs at least one mask')
  first = masks[0]
  aligned = [
    _tree.align(m, first, what=f'mask {i}', like_what='mask 0') for i, m in enumerate(masks)
  ]
  names = [name for name, _ in _tree.named_leaves(first)]
  out = []
  for name, leaves in zip(names, zip(*aligned, strict=True), strict=True):
    arrays = [_tree.unbox(leaf) for leaf in leaves if leaf is not None]
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) > 1:
      raise ValueError(f'mask leaf {name!r} has different shapes across masks: {sorted(shapes)}')
    out.append(None if not arrays else jnp.logical_and.reduce(jnp.stack(arrays)))
  return jax.tree.unflatten(_tree.structure(first), out)


class LayerStats(NamedTuple):
  """Connection counts of one layer (or of a whole model)."""

  total: int  # connections before pruning
  kept: int  # connections the mask keeps

  @property
  def density(self) -> float:
    """Fraction of connections kept."""
    return self.kept / self.total if self.total else 1.0

  @property
  def sparsity(self) -> float:
    """Fraction of connections pruned."""
    return 1.0 - self.density

  @property
  def compression(self) -> float:
    """``total / kept``: the paper's compression rate (``inf`` if nothing is kept)."""
    return self.total / self.kept if self.kept else math.inf


class MaskStats(NamedTuple):
  """Per-layer and overall connection counts of a mask."""

  layers: dict[str, LayerStats]  # leaf path -> counts, in params order
  overall: LayerStats  # sums over all prunable layers

  def to_markdown(self) -> str:
    """A table in the style of the paper's Tables 2-5 (weights only)."""
    rows = [
      '| layer | weights | kept | weights % kept | compression |',
      '|---|---:|---:|---:|---:|',
    ]
    for name, s in [*self.layers.items(), ('total', self.overall)]:
      rows.append(
        f'| {name} | {s.total:,} | {s.kept:,} | {100 * s.density:.2f} | {s.compression:.1f}x |'
      )
    return '\n'.join(rows)


def mask_stats(mask: PyTree) -> MaskStats:
  """Counts total and kept connections per prunable layer and overall.

  Only prunable leaves (non-``None``) are counted, as the paper counts only
  weights. The counts are exact integers computed on the host.

  Examples:
    >>> import jax.numpy as jnp
    >>> mask = {'fc1': {'kernel': jnp.array([[True, False], [False, False]]), 'bias': None}}
    >>> stats = mask_stats(mask)
    >>> stats.layers['fc1/kernel']
    LayerStats(total=4, kept=1)
    >>> stats.overall.compression
    4.0
  """
  layers = {}
  for name, leaf in _tree.named_leaves(mask):
    if leaf is None:
      continue
    array = _tree.unbox(leaf)
    dtype = getattr(array, 'dtype', None)
    if dtype is None:
      raise ValueError(f'mask leaf {name!r} is a {type(array).__name__}; expected a bool array')
    if np.dtype(dtype) != np.bool_:
      raise ValueError(f'mask leaf {name!r} has dtype {dtype}; expected bool')
    array = np.asarray(array)
    layers[name] = LayerStats(total=int(array.size), kept=int(np.count_nonzero(array)))
  if not layers:
    raise ValueError(
      f'{type(mask).__name__} is not a mask: it holds no boolean array '
      '(a mask mirrors the params, with a bool array per prunable leaf)'
    )
  overall = LayerStats(
    total=sum(s.total for s in layers.values()), kept=sum(s.kept for s in layers.values())
  )
  return MaskStats(layers=layers, overall=overall)
