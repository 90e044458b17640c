"""Private pytree helpers shared by the mask, criteria and optimizer modules.

Params reach this library in two shapes: plain nested dicts of arrays
(linen-style) and flax nnx ``State`` trees, whose leaves may still be boxed in
``nnx.Variable`` objects (``nnx.Optimizer`` calls ``init`` with boxed
``Param``s and ``update`` with pure arrays, and wraps its optimizer state in
``OptArray`` variables). Everything here treats a ``Variable`` as a leaf and
reads its value, so one code path serves both.

Leaves are named by their path, ``keystr(path, simple=True, separator='/')``:
``'fc1/kernel'`` for ``{'fc1': {'kernel': w}}`` and for the nnx state of a
module with an ``fc1`` Linear layer alike.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

PyTree = Any


def _variable_type() -> type | None:
  """``flax.nnx.Variable`` if flax is loaded, else ``None``.

  The core never imports flax: a Variable can only reach it once the caller
  has imported flax, so a tree seen before that holds none.
  """
  nnx = sys.modules.get('flax.nnx')
  return None if nnx is None else nnx.Variable


def is_variable(x: Any) -> bool:
  variable = _variable_type()
  return variable is not None and isinstance(x, variable)


def is_leaf_or_none(x: Any) -> bool:
  """Stops flattening at ``None`` (an unpruned mask leaf) and at Variables."""
  return x is None or is_variable(x)


def unbox(x: Any) -> Any:
  """The array inside an ``nnx.Variable``; any other value unchanged."""
  return x.get_value() if is_variable(x) else x


def rebox(old: Any, value: Any) -> Any:
  """``value`` in the same kind of box as ``old`` (a Variable keeps its metadata)."""
  return old.replace(value) if is_variable(old) else value


def path_str(path: tuple) -> str:
  return jax.tree_util.keystr(path, simple=True, separator='/')


def named_leaves(tree: PyTree) -> list[tuple[str, Any]]:
  """``(path, leaf)`` pairs in flattening order; ``None`` and Variables are leaves."""
  pairs, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf_or_none)
  return [(path_str(p), leaf) for p, leaf in pairs]


def structure(tree: PyTree) -> jax.tree_util.PyTreeDef:
  return jax.tree.structure(tree, is_leaf=is_leaf_or_none)


def map_named(fn: Callable[..., Any], tree: PyTree, *rest: PyTree) -> PyTree:
  """``jax.tree.map`` that also passes each leaf's path as the first argument.

  ``None`` and Variables count as leaves of ``tree``; ``rest`` must have the
  same structure up to those leaves.
  """
  return jax.tree_util.tree_map_with_path(
    lambda p, *xs: fn(path_str(p), *xs), tree, *rest, is_leaf=is_leaf_or_none
  )


def compile_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(f'pattern {pattern!r} is not a valid regular expression: {e}') from e


def align(tree: PyTree, like: PyTree, *, what: str, like_what: str = 'params') -> list[Any]:
  """The leaves of ``tree`` in the leaf order of ``like``, matched by path.

  Trees whose containers differ (a plain dict against an nnx ``State``) but
  whose leaf paths agree are aligned; anything else raises.

  Raises:
    ValueError: naming the paths that one tree has and the other lacks.
  """
  own = dict(named_leaves(tree))
  other = [name for name, _ in named_leaves(like)]
  missing = [name for name in other if name not in own]
  unexpected = sorted(set(own) - set(other))
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f'missing leaves {missing} (in {like_what}, not in {what})')
    if unexpected:
      parts.append(f'unexpected leaves {unexpected} (in {what}, not in {like_what})')
    raise ValueError(f'{what} does not mirror the structure of {like_what}: ' + '; '.join(parts))
  return [own[name] for name in other]


def check_all_finite(name: str, weights: jax.Array) -> None:
  """Raises if a weight tensor holds NaN or inf (a threshold from it is meaningless)."""
  finite = np.isfinite(np.asarray(weights))
  if not finite.all():
    bad = np.argwhere(~finite)[0]
    value = np.asarray(weights)[tuple(bad)]
    raise ValueError(
      f'weights of {name!r} hold {int((~finite).sum())} non-finite value(s) '
      f'(first: {value} at index {tuple(int(i) for i in bad)}); '
      'cannot compute a pruning threshold from them'
    )


def real_number(
  value: Any, what: str, *, minimum: float | None = None, maximum: float | None = None
) -> float:
  """``value`` as a float, if it is a finite real number within the bounds.

  Python ints and floats, numpy scalars and 0-d numpy or jax arrays of an
  integer or floating dtype are real numbers; ``bool`` is not (``True`` is
  no sparsity).

  Raises:
    ValueError: naming ``what``, the value and what was expected.
  """
  if minimum is not None and maximum is not None:
    expected = f'a value in [{minimum:g}, {maximum:g}]'
  elif minimum is not None:
    expected = f'a finite number >= {minimum:g}'
  elif maximum is not None:
    expected = f'a finite number <= {maximum:g}'
  else:
    expected = 'a finite real number'
  dtype = getattr(value, 'dtype', None)
  is_real = not isinstance(value, bool) and (
    isinstance(value, int | float)
    or (dtype is not None and np.dtype(dtype).kind in 'iuf' and np.shape(value) == ())
  )
  if not is_real:
    raise ValueError(f'{what} is {value!r}; expected {expected}')
  number = float(value)
  if not (
    np.isfinite(number)
    and (minimum is None or number >= minimum)
    and (maximum is None or number <= maximum)
  ):
    raise ValueError(f'{what} is {value!r}; expected {expected}')
  return number
