"""N:M structured sparsity: keep the N largest of every M consecutive input weights.

An N:M mask splits each output unit's input weights into groups of ``M``
consecutive ones and keeps the ``N`` of largest magnitude in every group
(``N < M``). 2:4 (half the weights, in a fixed pattern) is what the sparse
tensor cores of NVIDIA Ampere and later GPUs run at up to twice the dense
speed; other ratios (1:4, 3:8) trade accuracy for density the same way.

Groups run along the *input* axis of a kernel, the axis a matrix multiply
reduces over: axis 0 of a flax ``Dense``/``Linear`` kernel ``(in, out)``
and the input-channel axis of a ``Conv`` kernel ``(kh, kw, in, out)``
(HWIO), i.e. the second-to-last axis of both, for each output unit (and each
kernel position). A layer whose input dimension is not a multiple of ``M``
cannot be grouped; leave it out with ``pattern=`` (a first convolution on 3
RGB channels, typically).

Three entry points:

* :func:`nm_mask`: a mask pytree for the params, computed on the host in
  numpy with float64 scores, like the masks of :mod:`pruning.criteria`.
  With the current ``mask=``, pruned weights stay pruned (Han et al. 2015,
  §3.4: masks only shrink).
* :func:`nm_keep`: the same selection for one array in pure ``jax.numpy``,
  jittable (``n`` and ``m`` static), for pruning inside a compiled step;
  it gives the host's result bit for bit.
* :func:`nm_validity`: per layer, how many groups of a mask keep at most
  ``N`` of ``M``.

Tie rule: within a group, weights already pruned rank first, then the
others by magnitude; among equal magnitudes the weight earlier in the group
(lower input index) is pruned first, the rule of the count selection in
:mod:`pruning.criteria`. A group with no weight pruned before therefore
keeps exactly ``N``; a group that already lost more than ``M - N`` keeps
fewer than ``N`` (its survivors, none pruned anew).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pruning import _tree
from pruning.criteria import _rebuild, _selected_layers
from pruning.masks import KERNEL_PATTERN

PyTree = Any

INPUT_AXIS = -2
"""The input axis of flax kernels: 0 of ``Dense`` ``(in, out)``, 2 of ``Conv`` ``(kh, kw, in, out)``."""


def _check_nm(n: Any, m: Any) -> tuple[int, int]:
  """``(n, m)`` as Python ints if they are integers with ``0 <= n < m``."""

  def is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)

  if not (is_int(n) and is_int(m) and 0 <= n < m):
    raise ValueError(
      f'N:M is {n!r}:{m!r}; expected integers with 0 <= N < M (N = M would keep every '
      'weight; under jit, pass n and m as static arguments)'
    )
  return int(n), int(m)


def parse_nm(nm: str | tuple[int, int] | list[int]) -> tuple[int, int]:
  """An N:M pattern as an option gives it, ``'N:M'`` or a pair ``(N, M)``, as ints ``(N, M)``.

  A pattern to prune to keeps at least one weight of every group and not all
  of them: ``1 <= N < M``.

  Examples:
    >>> parse_nm('2:4')
    (2, 4)
    >>> parse_nm((1, 8))
    (1, 8)

  Raises:
    ValueError: ``nm`` is neither form, or its N and M are not integers with
      ``1 <= N < M``.
  """
  if isinstance(nm, str):
    parts = nm.split(':')
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
      raise ValueError(f"nm is {nm!r}; expected 'N:M' (e.g. '2:4') or a pair (N, M)")
    n, m = int(parts[0]), int(parts[1])
  elif isinstance(nm, tuple | list) and len(nm) == 2:
    n, m = _check_nm(*nm)
  else:
    raise ValueError(f"nm is {nm!r}; expected 'N:M' (e.g. '2:4') or a pair (N, M)")
  if not 1 <= n < m:
    raise ValueError(f'nm is {nm!r}; expected 1 <= N < M')
  return n, m


def _check_groups(name: str, shape: tuple[int, ...], m: int, axis: int) -> int:
  """The input axis as a non-negative index, once ``shape`` splits into groups of ``m`` along it."""
  if len(shape) < 2:
    raise ValueError(
      f'cannot split {name} of shape {shape} into N:M groups: that needs a kernel with two '
      'or more dimensions (Dense (in, out), Conv (kh, kw, in, out))'
    )
  if not -len(shape) <= axis < len(shape):
    raise ValueError(f'axis {axis} is out of range for {name} of shape {shape}')
  axis %= len(shape)
  if shape[axis] % m:
    raise ValueError(
      f'{name} of shape {shape} has {shape[axis]} inputs along axis {axis}, not a multiple '
      f'of M={m}: N:M groups of M run along the input axis. Leave the layer out with '
      'pattern= (e.g. a first convolution on 3 channels)'
    )
  return axis


def _grouped(x: Any, m: int, axis: int) -> Any:
  """``x`` with ``axis`` moved last and split into ``(groups, m)``; numpy or jax arrays."""
  moved = x.swapaxes(axis, -1)
  return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def _ungrouped(x: Any, shape: tuple[int, ...], axis: int) -> Any:
  """The inverse of :func:`_grouped` for an array of the original ``shape``."""
  moved = list(shape)
  moved[axis], moved[-1] = moved[-1], moved[axis]
  return x.reshape(moved).swapaxes(axis, -1)


def _host_keep(weights: np.ndarray, n: int, m: int, pruned: np.ndarray, axis: int) -> np.ndarray:
  """Keep-mask of one layer: per group, ``pruned`` first, then the smallest |w|, earliest first."""
  scores = np.where(pruned, -np.inf, np.abs(weights.astype(np.float64)))
  order = np.argsort(_grouped(scores, m, axis), axis=-1, kind='stable')
  keep = np.ones(order.shape, dtype=bool)
  np.put_along_axis(keep, order[..., : m - n], False, axis=-1)
  return _ungrouped(keep, weights.shape, axis) & ~pruned


def nm_keep(
  weights: jax.Array,
  n: int,
  m: int,
  already_pruned: jax.Array | None = None,
  *,
  axis: int = INPUT_AXIS,
) -> jax.Array:
  """Which weights an N:M mask keeps, in pure ``jax.numpy``: jittable with ``n``, ``m`` static.

  The selection of :func:`nm_mask` for one array, bit for bit (same tie
  rule), for use inside a compiled step, e.g. gradual pruning. A weight's
  rank in its group is counted by comparisons with the ``M - 1`` others
  (``M`` elementwise passes), with no sort, so the result does not depend on
  a backend's sorting. Magnitudes are compared in the weights' own dtype,
  whose values float64 holds exactly, so the ranking is the host's. The
  weights must be finite: unlike :func:`nm_mask`, this cannot check them
  under ``jit``.

  Args:
    weights: a floating kernel; groups of ``m`` run along ``axis``.
    n: weights kept per group, ``0 <= n < m``; a Python int (static).
    m: group size; a Python int (static).
    already_pruned: optional bool array of the weights' shape, ``True``
      where a weight is already pruned (the negation of a mask leaf). These
      rank first and stay pruned; a group with more than ``m - n`` of them
      keeps fewer than ``n``.
    axis: the input axis: the default, -2, fits flax ``Dense`` and ``Conv``
      kernels.

  Returns:
    A bool array of the weights' shape, ``True`` where the weight is kept.

  Raises:
    ValueError: ``n``, ``m`` not integers with ``0 <= n < m`` (a traced
      value included); weights of fewer than two dimensions, not floating,
      or whose ``axis`` is not a multiple of ``m``; ``already_pruned`` of
      another shape or not bool.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> w = jnp.array([[0.3], [-0.1], [0.2], [0.4]])  # Dense (in=4, out=1)
    >>> jax.jit(nm_keep, static_argnums=(1, 2))(w, 2, 4)[:, 0].tolist()
    [True, False, False, True]
    >>> nm_keep(w, 2, 4, jnp.array([[True], [False], [False], [False]]))[:, 0].tolist()
    [False, False, True, True]
  """
  n, m = _check_nm(n, m)
  shape = tuple(jnp.shape(weights))
  axis = _check_groups('weights', shape, m, axis)
  if not jnp.issubdtype(jnp.result_type(weights), jnp.floating):
    raise ValueError(f'weights have dtype {jnp.result_type(weights)}; expected a floating dtype')
  scores = jnp.abs(weights)
  if already_pruned is not None:
    if jnp.shape(already_pruned) != shape or jnp.result_type(already_pruned) != jnp.bool_:
      raise ValueError(
        f'already_pruned has shape {jnp.shape(already_pruned)} and dtype '
        f'{jnp.result_type(already_pruned)}; expected bool of the weights shape {shape}'
      )
    scores = jnp.where(already_pruned, -jnp.inf, scores)
  groups = _grouped(scores, m, axis)
  position = jnp.arange(m)
  # rank = how many weights of the group are pruned before this one: smaller
  # scores, and equal scores earlier in the group (the host's stable sort).
  rank = jnp.zeros(groups.shape, jnp.int32)
  for j in range(m):
    other = groups[..., j : j + 1]
    rank += (other < groups) | ((other == groups) & (j < position))
  keep = _ungrouped(rank >= m - n, shape, axis)
  return keep if already_pruned is None else keep & ~already_pruned


def nm_mask(
  params: PyTree,
  n: int,
  m: int,
  *,
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """Per selected layer, keeps the ``n`` largest-magnitude of every ``m`` consecutive input weights.

  Groups run along the input axis (the second-to-last: ``in`` of a
  ``Dense`` kernel ``(in, out)`` and of a ``Conv`` kernel
  ``(kh, kw, in, out)``), one set of groups per output unit and kernel
  position. Computed on the host with float64 magnitudes; among equal
  magnitudes the weight earlier in the group is pruned first.

  Args:
    params: trained params (plain dicts or an nnx ``State``).
    n: weights kept per group: an integer with ``0 <= n < m``.
    m: group size: a positive integer dividing each selected layer's input
      dimension.
    mask: the current mask. Its pruned weights rank first in their group and
      stay pruned, so masks only shrink: a group that already lost more than
      ``m - n`` keeps fewer than ``n``. Without it the decision rests on the
      weights alone.
    pattern: which prunable layers this call prunes (regex on leaf paths);
      the others keep their current mask.

  Returns:
    The new mask, mirroring ``params`` (``None`` for leaves never pruned).

  Raises:
    ValueError: ``n``, ``m`` not integers with ``0 <= n < m`` (``bool``
      included); a selected layer whose input dimension is not a multiple of
      ``m`` (naming the layer, its shape and ``m``); weights holding NaN or
      inf; a mask that does not fit the params; a pattern that selects no
      layer.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[0.3, 1.0], [-0.1, 1.0],
    ...                                       [0.2, 1.0], [0.4, 1.0]]),
    ...                  'bias': jnp.zeros(2)}}
    >>> mask = nm_mask(params, 2, 4)  # 2:4, ties: the later weights stay
    >>> mask['fc']['kernel'].tolist(), mask['fc']['bias']
    ([[True, False], [False, False], [False, True], [True, True]], None)
    >>> nm_mask(params, 1, 4, mask=mask)['fc']['kernel'].tolist()
    [[False, False], [False, False], [False, False], [True, True]]

  References:
    Han et al. 2015, §3.4 (iterative pruning: masks only shrink); Mishra et
    al. 2021, "Accelerating Sparse Deep Neural Networks" (2:4 sparsity).
  """
  n, m = _check_nm(n, m)
  base, layers = _selected_layers(params, mask, pattern)
  new = {}
  for name, (weights, kept) in layers.items():
    axis = _check_groups(f'layer {name!r}', weights.shape, m, INPUT_AXIS)
    _tree.check_all_finite(name, weights)
    new[name] = _host_keep(weights, n, m, ~kept, axis)
  return _rebuild(base, new)


class NMValidity(NamedTuple):
  """How many N:M groups of one layer's mask keep at most N."""

  groups: int  # groups of M consecutive inputs in the layer
  valid_groups: int  # groups that keep at most N

  @property
  def valid(self) -> bool:
    """Whether every group keeps at most N: the layer runs as N:M sparse."""
    return self.valid_groups == self.groups

  @property
  def share(self) -> float:
    """Fraction of the groups that keep at most N."""
    return self.valid_groups / self.groups if self.groups else 1.0


def nm_validity(
  mask: PyTree, n: int, m: int, *, pattern: str | re.Pattern[str] = KERNEL_PATTERN
) -> dict[str, NMValidity]:
  """Per selected layer of ``mask``, whether every group of ``m`` inputs keeps at most ``n``.

  Groups are those of :func:`nm_mask`: ``m`` consecutive entries along the
  input (second-to-last) axis. A group keeping fewer than ``n`` is valid:
  the sparse format holds it with explicit zeros.

  Args:
    mask: a mask pytree (bool arrays for prunable leaves, ``None`` for the
      others), plain dicts or an nnx ``State``.
    n: the most a group may keep, ``0 <= n < m``.
    m: group size.
    pattern: which of the mask's non-``None`` leaves to check (regex on leaf
      paths).

  Returns:
    ``{leaf path: NMValidity}`` in flattening order.

  Raises:
    ValueError: ``n``, ``m`` as in :func:`nm_mask`; a selected leaf that is
      not a bool array, or whose input dimension is not a multiple of ``m``;
      a pattern that selects no leaf.

  Examples:
    >>> import jax.numpy as jnp
    >>> mask = {'fc': {'kernel': jnp.array([[True, True], [False, True],
    ...                                     [False, True], [True, False]]), 'bias': None}}
    >>> report = nm_validity(mask, 2, 4)['fc/kernel']
    >>> report, report.valid, report.share
    (NMValidity(groups=2, valid_groups=1), False, 0.5)
  """
  n, m = _check_nm(n, m)
  regex = _tree.compile_pattern(pattern)
  out = {}
  for name, leaf in _tree.named_leaves(mask):
    if leaf is None or not regex.search(name):
      continue
    array = _tree.unbox(leaf)
    dtype = getattr(array, 'dtype', None)
    if dtype is None or np.dtype(dtype) != np.bool_:
      raise ValueError(f'mask leaf {name!r} has dtype {dtype}; expected a bool array')
    array = np.asarray(array)
    axis = _check_groups(f'mask leaf {name!r}', array.shape, m, INPUT_AXIS)
    kept = _grouped(array, m, axis).sum(axis=-1)
    out[name] = NMValidity(groups=int(kept.size), valid_groups=int((kept <= n).sum()))
  if not out:
    masked = [name for name, leaf in _tree.named_leaves(mask) if leaf is not None]
    raise ValueError(f'pattern {regex.pattern!r} selects no mask leaf; mask leaves: {masked}')
  return out
