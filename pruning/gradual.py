"""Gradual magnitude pruning inside the compiled train step (Zhu & Gupta 2017).

Instead of pruning between rounds and retraining (Han et al. 2015, §3.4),
the sparsity rises while the network trains, along a cubic schedule

    s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n Δt))³,   t ∈ [t_0, t_0 + n Δt],

and every ``Δt`` steps the mask is recomputed from the current weights
(:class:`GradualSchedule`). :func:`gradual_pruning` wraps an optax
transformation like :func:`~pruning.masked_optimizer` (it *is* one inside,
so pruned weights stay exactly zero and ``get_mask`` / ``replace_mask`` /
``set_frozen`` work on its state) and adds a step counter: at a scheduled
step, ``update`` recomputes the mask on the device, in a ``lax.cond``, from
the params it is given. The mask is data of the optimizer state, so a new
one never recompiles the step, and there is no host round-trip.

The device selection is the host's, exactly: per layer (or pooled across
layers, ``scope='global'``) the ``round(s_t * n)`` lowest scores are pruned,
weights already pruned counted first, ties broken by row-major position
(earlier pruned first) — the count selection of :mod:`pruning.criteria`
(:func:`~pruning.sparsity_mask`, :func:`~pruning.global_sparsity_mask`). It
finds the k-th smallest score by a binary search over the float32 bit
patterns (32 passes over the weights, no sort) and breaks ties at that
threshold by position with a cumulative sum. The counts ``round(s_t * n)``
are computed on the host in float64 when the step is traced, one per
scheduled update, so they are the host's too. With ``nm=(N, M)`` each
group of ``M`` inputs instead keeps ``M - round(s_t * M)`` weights,
reaching N:M at the end, by :func:`~pruning.nm_keep`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pruning import _tree
from pruning.masks import KERNEL_PATTERN
from pruning.nm import INPUT_AXIS, _check_groups, nm_keep, parse_nm
from pruning.optimizer import MaskedState, _zero_pruned, masked_optimizer

PyTree = Any
Scope = Literal['per-layer', 'global']


def _whole_number(value: Any, what: str, minimum: int) -> int:
  """``value`` as an int if it is an integer ``>= minimum`` (Python, numpy or 0-d jax; not bool)."""
  dtype = getattr(value, 'dtype', None)
  is_int = not isinstance(value, bool) and (
    isinstance(value, int)
    or (dtype is not None and np.dtype(dtype).kind in 'iu' and np.shape(value) == ())
  )
  if not is_int or int(value) < minimum:
    raise ValueError(f'{what} is {value!r}; expected an integer >= {minimum}')
  return int(value)


@dataclasses.dataclass(frozen=True)
class GradualSchedule:
  """The cubic sparsity schedule of Zhu & Gupta 2017: when the mask changes and to what sparsity.

  The mask is recomputed at steps ``t0 + k * delta_t`` for ``k = 0, ..., n``
  (``n + 1`` updates; the first prunes to ``initial_sparsity``, the last to
  ``final_sparsity``); between and after them it stays as it is.

  Args:
    t0: the step of the first update, an integer >= 0.
    n: the number of intervals of ``delta_t`` steps the sparsity rises over,
      an integer >= 1.
    delta_t: steps between updates, an integer >= 1.
    initial_sparsity: ``s_i`` in [0, 1].
    final_sparsity: ``s_f`` in [``s_i``, 1].

  Raises:
    ValueError: a value of the wrong kind (``bool`` included) or out of
      range, naming it; a last update beyond the int32 step counter.

  Examples:
    >>> schedule = GradualSchedule(t0=10, n=4, delta_t=5, initial_sparsity=0.0,
    ...                            final_sparsity=0.8)
    >>> [round(schedule.sparsity_at(t), 4) for t in (0, 10, 15, 20, 30, 99)]
    [0.0, 0.0, 0.4625, 0.7, 0.8, 0.8]
    >>> [t for t in range(40) if schedule.is_update_step(t)]
    [10, 15, 20, 25, 30]

  References:
    Zhu & Gupta 2017, "To prune, or not to prune", §3 (eq. 1).
  """

  t0: int
  n: int
  delta_t: int
  initial_sparsity: float
  final_sparsity: float

  def __post_init__(self) -> None:
    fields = {
      't0': _whole_number(self.t0, 't0', 0),
      'n': _whole_number(self.n, 'n', 1),
      'delta_t': _whole_number(self.delta_t, 'delta_t', 1),
      'initial_sparsity': _tree.real_number(
        self.initial_sparsity, 'initial_sparsity', minimum=0.0, maximum=1.0
      ),
      'final_sparsity': _tree.real_number(
        self.final_sparsity, 'final_sparsity', minimum=0.0, maximum=1.0
      ),
    }
    if fields['initial_sparsity'] > fields['final_sparsity']:
      raise ValueError(
        f'initial_sparsity {self.initial_sparsity!r} is above final_sparsity '
        f'{self.final_sparsity!r}; the sparsity of a gradual schedule only rises'
      )
    end = fields['t0'] + fields['n'] * fields['delta_t']
    if end >= 2**31:
      raise ValueError(
        f'the last update, t0 + n * delta_t = {end}, is beyond 2**31 - 1, the largest '
        'step the int32 step counter reaches'
      )
    for name, value in fields.items():
      object.__setattr__(self, name, value)

  @property
  def end(self) -> int:
    """The step of the last update, ``t0 + n * delta_t``."""
    return self.t0 + self.n * self.delta_t

  def update_steps(self) -> list[int]:
    """The ``n + 1`` steps at which the mask is recomputed."""
    return [self.t0 + k * self.delta_t for k in range(self.n + 1)]

  def sparsity_at(self, step: Any) -> Any:
    """``s_t``, the step clamped to ``[t0, t0 + n * delta_t]``.

    A Python or numpy integer step gives a Python float computed in float64
    (the value the host masks take); a traced or jax step gives a float32
    jax scalar, for use (and logging) inside a compiled step.
    """
    s_i, s_f, span = self.initial_sparsity, self.final_sparsity, self.n * self.delta_t
    if isinstance(step, int | np.integer) and not isinstance(step, bool):
      elapsed = min(max(int(step), self.t0), self.end) - self.t0
      return float(_host_sparsity(self, np.asarray(elapsed, np.int64)))
    t = jnp.clip(jnp.asarray(step), self.t0, self.end)
    progress = (t - self.t0).astype(jnp.float32) / span
    return jnp.float32(s_f) + jnp.float32(s_i - s_f) * (1.0 - progress) ** 3

  def is_update_step(self, step: Any) -> Any:
    """Whether the mask is recomputed at ``step`` (a jax bool; jittable)."""
    t = jnp.asarray(step)
    return (t >= self.t0) & (t <= self.end) & ((t - self.t0) % self.delta_t == 0)


def _host_sparsity(schedule: GradualSchedule, elapsed: np.ndarray) -> np.ndarray:
  """``s_t`` in float64 numpy for ``elapsed = t - t0`` steps (an int array): the one host formula.

  ``q * q * q`` rather than ``q ** 3``: elementwise IEEE products give the
  same bits for a scalar and an array, whatever ``pow`` a platform has.
  """
  progress = elapsed.astype(np.float64) / float(schedule.n * schedule.delta_t)
  q = 1.0 - progress
  s_i, s_f = schedule.initial_sparsity, schedule.final_sparsity
  return s_f + (s_i - s_f) * (q * q * q)


def _count_at(
  schedule: GradualSchedule, size: int
) -> tuple[Callable[[jax.Array], jax.Array], int, int]:
  """Jittable ``k -> round(s * size)`` at the ``k``-th update, with the host's float64 counts.

  Returns the function and its first and last values (at ``k = 0`` and ``n``).

  The counts are computed here, on the host, when the step is traced, and
  enter the compiled step as a constant: a table over the ``n + 1`` updates,
  or, when the count takes fewer distinct values than that (a large ``n``),
  the first update reaching each count (the count never falls as ``k``
  rises), so the constant holds at most ``min(n + 1, size + 1)`` entries.
  """

  def counts(k: np.ndarray) -> np.ndarray:
    # np.rint rounds half to even, as Python's round and torch's counts do.
    return np.rint(_host_sparsity(schedule, k * schedule.delta_t) * size).astype(np.int64)

  first, last = (int(c) for c in counts(np.array([0, schedule.n])))
  if schedule.n + 1 <= last - first:
    table = jnp.asarray(counts(np.arange(schedule.n + 1)), jnp.int32)
    return (lambda k: table[k]), first, last
  # For each count c in (first, last], the smallest k with counts(k) >= c.
  wanted = np.arange(first + 1, last + 1)
  lo, hi = np.zeros(wanted.size, np.int64), np.full(wanted.size, schedule.n, np.int64)
  while (lo < hi).any():
    mid = (lo + hi) // 2
    enough = counts(mid) >= wanted
    lo, hi = np.where(enough, lo, mid + 1), np.where(enough, mid, hi)
  reached = jnp.asarray(lo, jnp.int32)
  return (lambda k: first + jnp.sum(reached <= k, dtype=jnp.int32)), first, last


class GradualState(NamedTuple):
  """State of :func:`gradual_pruning`."""

  count: jax.Array  # int32[]: update calls so far, the step t of the schedule
  masked: MaskedState  # the masked_optimizer state: mask, trainable flags, inner state


def _ordered_keys(scores: jax.Array) -> jax.Array:
  """uint32 keys that order like the float32 ``scores`` (``-0.0`` and ``0.0`` equal)."""
  scores = scores.astype(jnp.float32)
  scores = jnp.where(scores == 0, jnp.float32(0), scores)
  bits = jax.lax.bitcast_convert_type(scores, jnp.uint32)
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _prune_smallest(keys: jax.Array, count: jax.Array) -> jax.Array:
  """Keep-mask of flat ``keys`` pruning the ``count`` smallest, earlier first among equals.

  Key 0 never comes from a score (it is a NaN's), so already-pruned weights
  given key 0 rank before all others, as ``-inf`` does on the host.
  """

  def search(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(keys <= mid, dtype=jnp.int32) >= count
    return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

  # The smallest key with at least `count` keys <= it: the count-th smallest.
  bounds = (jnp.uint32(0), jnp.uint32(0xFFFFFFFF))
  threshold, _ = jax.lax.fori_loop(0, 32, search, bounds)
  below = keys < threshold
  at = keys == threshold
  room = count - jnp.sum(below, dtype=jnp.int32)
  return ~(below | (at & (jnp.cumsum(at, dtype=jnp.int32) <= room)))


def gradual_pruning(
  inner: optax.GradientTransformation,
  schedule: GradualSchedule,
  *,
  scope: Scope = 'per-layer',
  nm: str | tuple[int, int] | None = None,
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
  score: Callable[[jax.Array], jax.Array] = jnp.abs,
  allow_regrowth: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` to prune gradually while training: the mask follows ``schedule`` on the device.

  Between updates it is :func:`~pruning.masked_optimizer`: pruned weights
  get no update and stay exactly ``0.0``. At each of the schedule's update
  steps (counted in ``update`` calls, the first being step 0) the mask is
  first recomputed from the ``params`` passed to ``update``, the optimizer
  state of newly pruned weights is cleared (as
  :func:`~pruning.replace_mask` does), and then this step's update lands
  the newly pruned weights on zero. All of it is inside the compiled step,
  behind a ``lax.cond``: no host round-trip, no recompile.

  Like ``masked_optimizer``, it must be the last transformation applied to
  the updates (wrap the chain, or put it last in an outer chain).

  Args:
    inner: any optax transformation.
    schedule: when to update the mask and to what sparsity.
    scope: ``'per-layer'``: each prunable layer pruned to ``s_t`` of its
      own weights (:func:`~pruning.sparsity_mask`); ``'global'``: ``s_t`` of
      all prunable weights pooled (:func:`~pruning.global_sparsity_mask`).
    nm: ``'N:M'`` or ``(N, M)`` for gradual N:M sparsity: each group of
      ``M`` consecutive inputs keeps ``M - round(s_t * M)`` weights
      (:func:`~pruning.nm_keep`), so ``final_sparsity`` must round to
      ``(M - N) / M``. Per layer only.
    mask: the initial mask; without one every connection of the leaves
      ``pattern`` selects is kept. Its non-``None`` leaves are the ones
      pruned.
    pattern: selects the prunable leaves when ``mask`` is not given.
    score: jittable ``score(weights) -> scores`` of one leaf, higher kept;
      ``jnp.abs`` (magnitude) by default. Scores are compared as float32
      (exact for float32, bfloat16 and float16 weights) and must be finite:
      under ``jit`` they cannot be checked as the host criteria check them.
    allow_regrowth: if ``False`` (the default), a pruned weight stays pruned
      and masks only shrink; if ``True``, each update chooses afresh from the
      scores of all weights (a pruned weight's is its score at ``0.0``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`GradualState`; its ``update`` requires ``params``.

  Raises:
    ValueError: a schedule that is not a :class:`GradualSchedule`, an
      unknown scope, an ``nm`` that is not N:M or does not fit
      ``final_sparsity``, ``nm`` with the global scope, a score that is not
      callable; at ``init``, as ``masked_optimizer`` and a layer whose input
      dimension is not a multiple of ``M``; at ``update``, missing
      ``params`` or scores not of the weights' shape (naming the layer).

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> from pruning import get_mask
    >>> params = {'fc': {'kernel': jnp.arange(1.0, 9.0).reshape(4, 2), 'bias': jnp.zeros(2)}}
    >>> schedule = GradualSchedule(t0=0, n=2, delta_t=2, initial_sparsity=0.0,
    ...                            final_sparsity=0.5)
    >>> tx = gradual_pruning(optax.sgd(0.0), schedule)
    >>> state = tx.init(params)
    >>> step = jax.jit(tx.update)
    >>> grads = jax.tree.map(jnp.zeros_like, params)
    >>> kept = []
    >>> for t in range(6):
    ...   updates, state = step(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    ...   kept.append(int(get_mask(state)['fc']['kernel'].sum()))
    >>> kept  # 8 weights; s_t = 0, 0.4375, 0.5 at steps 0, 2, 4
    [8, 8, 4, 4, 4, 4]
    >>> params['fc']['kernel'].tolist()
    [[0.0, 0.0], [0.0, 0.0], [5.0, 6.0], [7.0, 8.0]]

  References:
    Zhu & Gupta 2017, §3 (gradual pruning, eq. 1); Han et al. 2015, §3.4
    (masks only shrink); :mod:`pruning.criteria` (the count selection).
  """
  if not isinstance(schedule, GradualSchedule):
    raise ValueError(f'schedule is {schedule!r}; expected a GradualSchedule')
  if scope not in ('per-layer', 'global'):
    raise ValueError(f"scope is {scope!r}; expected 'per-layer' or 'global'")
  nm_pair = None if nm is None else parse_nm(nm)
  if nm_pair is not None:
    if scope == 'global':
      raise ValueError("nm groups are per layer; use scope='per-layer' with nm")
    n_keep, m = nm_pair
    if round(schedule.final_sparsity * m) != m - n_keep:
      raise ValueError(
        f'final_sparsity {schedule.final_sparsity!r} does not end at {n_keep}:{m} sparsity '
        f'{(m - n_keep) / m:g} (each group of {m} keeps {m} - round(s_t * {m}))'
      )
  if not callable(score):
    raise ValueError(f'score is {score!r}; expected a function of the weights')
  masked = masked_optimizer(inner, mask, pattern=pattern)

  def init_fn(params: PyTree) -> GradualState:
    state = masked.init(params)
    if nm_pair is not None:
      for name, leaf in _tree.named_leaves(state.mask):
        if leaf is not None:
          _check_groups(f'layer {name!r}', np.shape(leaf), nm_pair[1], INPUT_AXIS)
    return GradualState(count=jnp.zeros((), jnp.int32), masked=state)

  def new_mask(
    names: list[str], weights: list[Any], masks: list[Any], index: jax.Array
  ) -> list[Any]:
    """The recomputed mask leaves at the ``index``-th scheduled update."""
    layers = [(w, m) for w, m in zip(weights, masks, strict=True) if m is not None]
    names = [name for name, m in zip(names, masks, strict=True) if m is not None]
    pruned = [jnp.zeros(m.shape, bool) if allow_regrowth else ~m for _, m in layers]
    if nm_pair is not None:
      kept = [_nm_keep_at(w, p, index) for (w, _), p in zip(layers, pruned, strict=True)]
    else:
      keys = [
        jnp.where(p, jnp.uint32(0), _ordered_keys(scored(name, w))).reshape(-1)
        for name, (w, _), p in zip(names, layers, pruned, strict=True)
      ]
      if scope == 'global':
        sizes = [k.size for k in keys]
        count_at, _, _ = _count_at(schedule, sum(sizes))
        count = jnp.maximum(count_at(index), sum(jnp.sum(p, dtype=jnp.int32) for p in pruned))
        flat = _prune_smallest(jnp.concatenate(keys), count)
        pieces = jnp.split(flat, np.cumsum(sizes)[:-1])
      else:
        pieces = []
        for k, p in zip(keys, pruned, strict=True):
          count = _count_at(schedule, k.size)[0](index)
          pieces.append(_prune_smallest(k, jnp.maximum(count, jnp.sum(p, dtype=jnp.int32))))
      kept = [piece.reshape(m.shape) for piece, (_, m) in zip(pieces, layers, strict=True)]
    out = iter(kept)
    return [None if m is None else next(out) for m in masks]

  def scored(name: str, weights: Any) -> jax.Array:
    value = _tree.unbox(weights)
    scores = score(value)
    if jnp.shape(scores) != jnp.shape(value):
      raise ValueError(
        f'score gave {name!r} scores of shape {jnp.shape(scores)}; expected the weights '
        f'shape {jnp.shape(value)}'
      )
    return scores

  def _nm_keep_at(weights: Any, pruned: jax.Array, index: jax.Array) -> jax.Array:
    m = nm_pair[1]
    # Pruned per group at this update, round(s * m): one branch per value it takes.
    count_at, first, last = _count_at(schedule, m)
    value = _tree.unbox(weights)

    def branch(pruned_per_group: int) -> Callable[[], jax.Array]:
      if pruned_per_group == 0:
        return lambda: ~pruned
      return lambda: nm_keep(value, m - pruned_per_group, m, pruned)

    branches = [branch(c) for c in range(first, last + 1)]
    return jax.lax.switch(count_at(index) - first, branches)

  def update_fn(
    updates: optax.Updates,
    state: GradualState,
    params: optax.Params | None = None,
    **extra_args: Any,
  ) -> tuple[optax.Updates, GradualState]:
    if params is None:
      raise ValueError(
        'gradual_pruning recomputes the mask from the current params and lands pruned '
        'weights on exactly 0.0: call tx.update(grads, opt_state, params)'
      )
    step = state.count
    inner = state.masked
    structure = _tree.structure(inner.mask)
    names, masks = zip(*_tree.named_leaves(inner.mask), strict=True)
    masks = list(masks)
    weights = _tree.align(params, inner.mask, what='params', like_what='the mask')
    index = jnp.clip((step - schedule.t0) // schedule.delta_t, 0, schedule.n)

    def recompute(operands):
      masks, inner_state = operands
      leaves = new_mask(names, weights, masks, index)
      fresh = jax.tree.unflatten(structure, leaves)
      return leaves, _zero_pruned(inner_state, fresh)

    leaves, inner_state = jax.lax.cond(
      schedule.is_update_step(step),
      recompute,
      lambda operands: operands,
      (masks, inner.inner_state),
    )
    inner = inner._replace(mask=jax.tree.unflatten(structure, leaves), inner_state=inner_state)
    updates, inner = masked.update(updates, inner, params, **extra_args)
    return updates, GradualState(count=step + 1, masked=inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
