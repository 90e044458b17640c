"""``masked_optimizer``: an optax transformation that keeps pruned weights dead.

Retraining after pruning must leave pruned connections at exactly zero
(Han et al. 2015, §3). :func:`masked_optimizer` wraps any optax
transformation and holds the mask in its own state, so a new mask after a
pruning round is new *data* for the compiled train step, never a recompile.

In each ``update`` it

1. zeroes the gradients of pruned (and frozen) weights *before* the wrapped
   transformation, so momentum, Adam moments and the like never accumulate
   for them;
2. runs the wrapped transformation;
3. replaces the update of every pruned weight by ``-param``, so that
   ``optax.apply_updates`` lands it on exactly ``0.0`` whatever the wrapped
   transformation proposed (weight decay, a stale moment), and zeroes the
   updates of frozen layers.

``masked_optimizer`` must be the last transformation applied to the updates
(wrap the whole chain: ``masked_optimizer(optax.chain(...))``, or put it last
in an outer ``optax.chain``): a transformation after it could move pruned
weights off zero again.

Between rounds, :func:`replace_mask` installs a new mask and clears the
optimizer state (moments) of newly pruned weights, keeping the state of the
survivors; :func:`set_frozen` freezes whole layers for the paper's
alternating CONV/FC retraining (§3.3).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pruning import _tree
from pruning.masks import KERNEL_PATTERN, check_mask, prunable_mask

PyTree = Any


class MaskedState(NamedTuple):
  """State of :func:`masked_optimizer`."""

  mask: PyTree  # bool[*param.shape] per prunable leaf; None per leaf never pruned
  trainable: PyTree  # bool[] per params leaf; False freezes the whole leaf (§3.3)
  inner_state: optax.OptState  # state of the wrapped transformation


def _unboxed(tree: PyTree) -> PyTree:
  return jax.tree.map(_tree.unbox, tree, is_leaf=_tree.is_variable)


def _own_copy(mask_leaf: Any) -> jax.Array:
  """A copy of a mask leaf for the optimizer state.

  The caller keeps using its mask (the next round's criterion takes it as
  ``mask=``), while a train step that donates its optimizer state deletes the
  state's buffers: the two must never share one.
  """
  return jnp.array(mask_leaf, dtype=bool, copy=True)


def _params_like(mask: PyTree) -> Callable[[Any], bool]:
  """Predicate: is a subtree of an optimizer state shaped like the params?

  A subtree qualifies when its leaf paths are exactly the mask's (``None``
  and Variables count as leaves). Its leaves are then zeroed where the mask
  prunes, but only where a leaf's shape equals the mask leaf's, so factored
  or scalar statistics that merely share the tree structure are untouched.
  """
  names = [name for name, _ in _tree.named_leaves(mask)]

  def matches(x: Any) -> bool:
    if isinstance(x, MaskedState):
      return False
    return [name for name, _ in _tree.named_leaves(x)] == names

  return matches


def _zero_pruned(state: PyTree, mask: PyTree) -> PyTree:
  """Zeroes, in every params-shaped subtree of ``state``, the pruned entries."""
  matches = _params_like(mask)
  mask_leaves = [leaf for _, leaf in _tree.named_leaves(mask)]

  def zero(x: Any) -> Any:
    if not matches(x):
      return x
    flat, treedef = jax.tree.flatten(x, is_leaf=_tree.is_leaf_or_none)
    out = []
    for leaf, m in zip(flat, mask_leaves, strict=True):
      value, keep = _tree.unbox(leaf), _tree.unbox(m)
      if m is None or leaf is None or np.shape(value) != np.shape(keep):
        out.append(leaf)
      else:
        out.append(_tree.rebox(leaf, jnp.where(keep, value, jnp.zeros_like(value))))
    return jax.tree.unflatten(treedef, out)

  return jax.tree.map(zero, state, is_leaf=lambda x: matches(x) or _tree.is_leaf_or_none(x))


def masked_optimizer(
  inner: optax.GradientTransformation,
  mask: PyTree | None = None,
  *,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` so that pruned weights get no update and stay exactly zero.

  Args:
    inner: any optax transformation (an optimizer, a chain, an
      ``inject_hyperparams`` optimizer, ...). Extra ``update`` arguments are
      passed through to it.
    mask: the initial mask (see :mod:`pruning.masks`). Without one, every
      connection of the leaves selected by ``pattern`` is kept: dense
      training, ready for :func:`replace_mask` after the first prune with no
      recompile.
    pattern: selects the prunable leaves when ``mask`` is not given.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. Its ``update`` requires
    ``params``.

  Raises:
    ValueError: at ``init``, a mask that does not fit the params (naming the
      leaf); at ``update``, missing ``params`` or updates that do not fit the
      mask.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> params = {'fc': {'kernel': jnp.array([[1.0, 2.0]]), 'bias': jnp.zeros(2)}}
    >>> mask = {'fc': {'kernel': jnp.array([[True, False]]), 'bias': None}}
    >>> tx = masked_optimizer(optax.adamw(0.1, weight_decay=0.1), mask)
    >>> state = tx.init(params)
    >>> grads = {'fc': {'kernel': jnp.ones((1, 2)), 'bias': jnp.ones(2)}}
    >>> updates, state = tx.update(grads, state, params)
    >>> optax.apply_updates(params, updates)['fc']['kernel'].tolist()
    [[0.89..., 0.0]]

  References:
    Han et al. 2015, §3 (retrain the remaining connections; pruned ones stay
    removed), §3.3 (freezing layers while retraining others).
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params: PyTree) -> MaskedState:
    pure = _unboxed(params)
    initial = prunable_mask(pure, pattern) if mask is None else mask
    leaves = check_mask(initial, pure)
    for (name, param), leaf in zip(_tree.named_leaves(pure), leaves, strict=True):
      dtype = getattr(param, 'dtype', None)
      if leaf is not None and not (dtype is not None and jnp.issubdtype(dtype, jnp.inexact)):
        raise ValueError(
          f'masked_optimizer would prune leaf {name!r} of dtype {dtype}; prunable leaves '
          'must be floating point (choose the prunable leaves with pattern= or mask=)'
        )
    structure = _tree.structure(pure)
    own_mask = jax.tree.unflatten(
      structure,
      [None if leaf is None else _own_copy(_tree.unbox(leaf)) for leaf in leaves],
    )
    trainable = jax.tree.unflatten(
      structure, [jnp.ones((), dtype=bool) for _ in range(structure.num_leaves)]
    )
    # Boxed params go to the inner init so nnx keeps their metadata (sharding).
    inner_state = _zero_pruned(inner.init(params), own_mask)
    return MaskedState(mask=own_mask, trainable=trainable, inner_state=inner_state)

  def update_fn(
    updates: optax.Updates,
    state: MaskedState,
    params: optax.Params | None = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, MaskedState]:
    if params is None:
      raise ValueError(
        'masked_optimizer needs the current params to land pruned weights on exactly 0.0: '
        'call tx.update(grads, opt_state, params)'
      )
    # Updates and params keep the form the caller uses (boxed nnx Variables in
    # functional nnx code, plain arrays otherwise), so the inner transformation
    # and optax.apply_updates see consistent trees; only values are masked.
    masks = [_tree.unbox(m) for m in check_mask(state.mask, updates, params_name='updates')]
    trainable = [_tree.unbox(t) for t in _tree.align(state.trainable, updates, what='trainable')]
    weights = _tree.align(params, updates, what='params', like_what='updates')
    flat, treedef = jax.tree.flatten(updates, is_leaf=_tree.is_leaf_or_none)

    def keep_gradient(g, m, t):
      if g is None:
        return None
      keep = t if m is None else m & t
      value = _tree.unbox(g)
      return _tree.rebox(g, jnp.where(keep, value, jnp.zeros_like(value)))

    grads = [keep_gradient(*x) for x in zip(flat, masks, trainable, strict=True)]
    inner_updates, inner_state = inner.update(
      jax.tree.unflatten(treedef, grads), state.inner_state, params, **extra_args
    )
    inner_flat = treedef.flatten_up_to(inner_updates)

    def final_update(u, m, t, w):
      if u is None:
        return None
      value = _tree.unbox(u)
      value = jnp.where(t, value, jnp.zeros_like(value))
      if m is not None:
        # -w is what lands the weight on exactly 0.0 in apply_updates: w + (-w) == 0.
        value = jnp.where(m, value, -_tree.unbox(w))
      return _tree.rebox(u, value)

    out = [final_update(*x) for x in zip(inner_flat, masks, trainable, weights, strict=True)]
    new_state = MaskedState(mask=state.mask, trainable=state.trainable, inner_state=inner_state)
    return jax.tree.unflatten(treedef, out), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _map_masked_state(opt_state: PyTree, fn: Callable[[MaskedState], Any]) -> PyTree:
  """Applies ``fn`` to the one :class:`MaskedState` inside ``opt_state``."""
  found = []

  def visit(x: Any) -> Any:
    if isinstance(x, MaskedState):
      found.append(x)
      return fn(x)
    return x

  out = jax.tree.map(
    visit, opt_state, is_leaf=lambda x: isinstance(x, MaskedState) or _tree.is_leaf_or_none(x)
  )
  if len(found) != 1:
    raise ValueError(
      f'opt_state holds {len(found)} masked_optimizer states; expected exactly one '
      '(pass the state of an optimizer built with masked_optimizer)'
    )
  return out


def get_mask(opt_state: PyTree) -> PyTree:
  """The mask held by the ``masked_optimizer`` inside ``opt_state`` (unboxed).

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> params = {'kernel': jnp.ones((2, 2))}
    >>> state = optax.chain(masked_optimizer(optax.sgd(0.1))).init(params)
    >>> get_mask(state)['kernel'].all().item()
    True
  """
  found = []
  _map_masked_state(opt_state, found.append)
  return _unboxed(found[0].mask)


def replace_mask(opt_state: PyTree, mask: PyTree) -> PyTree:
  """Installs a new mask in an existing optimizer state, between pruning rounds.

  The new mask is data of the same structure, shapes and dtype, so a jitted
  train step taking the state does not recompile. The wrapped optimizer's
  state (momentum, Adam moments, ...) of weights the new mask prunes is set
  to zero; the state of surviving weights is kept. Pruned weights are landed
  on ``0.0`` by the next ``update``, or at once with :func:`~pruning.apply_mask`.

  Works on the state of a plain optax optimizer (any nesting of chains) and
  on the wrapped state of an ``nnx.Optimizer``:
  ``optimizer.opt_state = replace_mask(optimizer.opt_state, mask)``.

  Args:
    opt_state: a state holding exactly one :class:`MaskedState`.
    mask: the new mask, with the same prunable leaves as the current one.

  Returns:
    The new optimizer state.

  Raises:
    ValueError: the mask's paths, prunable leaves, shapes or dtype differ from
      the current mask's (naming the leaf), or ``opt_state`` holds no
      ``masked_optimizer`` state.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> params = {'kernel': jnp.array([[1.0, 2.0]])}
    >>> tx = masked_optimizer(optax.sgd(0.1, momentum=0.9))
    >>> state = tx.init(params)
    >>> _, state = tx.update({'kernel': jnp.ones((1, 2))}, state, params)
    >>> state = replace_mask(state, {'kernel': jnp.array([[True, False]])})
    >>> state.inner_state[0].trace['kernel'].tolist()
    [[1.0, 0.0]]
  """

  def swap(state: MaskedState) -> MaskedState:
    named_old = _tree.named_leaves(state.mask)
    new = _tree.align(mask, state.mask, what='new mask', like_what='the current mask')
    leaves = []
    for (name, old), leaf in zip(named_old, new, strict=True):
      if (old is None) != (leaf is None):
        raise ValueError(
          f'mask leaf {name!r} is {"None" if leaf is None else "an array"} but the optimizer '
          f'{"prunes" if leaf is None else "never prunes"} it; the prunable leaves are fixed '
          'when masked_optimizer is initialised'
        )
      if old is None:
        leaves.append(None)
        continue
      value, expected = _tree.unbox(leaf), _tree.unbox(old)
      if getattr(value, 'dtype', None) != jnp.bool_:
        raise ValueError(
          f'mask leaf {name!r} has dtype {getattr(value, "dtype", type(value))}; expected bool'
        )
      if np.shape(value) != np.shape(expected):
        raise ValueError(
          f'mask leaf {name!r} has shape {np.shape(value)}; expected {np.shape(expected)}'
        )
      leaves.append(_tree.rebox(old, _own_copy(value)))
    new_mask = jax.tree.unflatten(_tree.structure(state.mask), leaves)
    inner_state = _zero_pruned(state.inner_state, _unboxed(new_mask))
    return state._replace(mask=new_mask, inner_state=inner_state)

  return _map_masked_state(opt_state, swap)


def set_frozen(opt_state: PyTree, pattern: str | re.Pattern[str] | None) -> PyTree:
  """Freezes the leaves whose path matches ``pattern``; all others train.

  A frozen leaf gets no update (its pruned weights are still held at zero).
  ``pattern=None`` unfreezes everything. The flags are data: switching them
  does not recompile a jitted step.

  Raises:
    ValueError: if ``pattern`` matches no leaf.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> params = {'conv1': {'kernel': jnp.ones((3, 3, 1, 2))}, 'fc1': {'kernel': jnp.ones((2, 2))}}
    >>> tx = masked_optimizer(optax.sgd(0.1))
    >>> state = set_frozen(tx.init(params), r'^conv')  # retrain FC only (§3.3)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, _ = tx.update(grads, state, params)
    >>> bool(updates['conv1']['kernel'].any()), bool(updates['fc1']['kernel'].all())
    (False, True)

  References:
    Han et al. 2015, §3.3 (retrain FC with CONV frozen, and vice versa).
  """
  regex = None if pattern is None else _tree.compile_pattern(pattern)

  def freeze(state: MaskedState) -> MaskedState:
    named = _tree.named_leaves(state.trainable)
    if regex is not None and not any(regex.search(name) for name, _ in named):
      raise ValueError(
        f'pattern {regex.pattern!r} matches no leaf; leaves: {[name for name, _ in named]}'
      )

    def flag(name: str, old: Any) -> Any:
      frozen = regex is not None and regex.search(name) is not None
      return _tree.rebox(old, jnp.asarray(not frozen))

    return state._replace(trainable=_tree.map_named(flag, state.trainable))

  return _map_masked_state(opt_state, freeze)
