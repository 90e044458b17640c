"""Structured criteria and scopes: which units of each dependency group to keep.

A structured criterion scores the *units* of a group (channels, filters,
heads, hidden units) over every parameter axis the group couples, not over
one tensor: unit ``u`` of a ResNet's stream group is scored over the stem's
filter ``u``, every BN scale and offset ``u`` on the stream, every outer
convolution's filter ``u`` and input channel ``u``, and the classifier's
input row ``u`` (Fang et al. 2023, §3.3, group-level importance).

Criteria are registered by name here (:data:`STRUCTURED_CRITERIA`,
:func:`register_structured_criterion`), beside the unstructured ones of
:mod:`pruning.criteria`, whose score functions take one tensor: a structured
score takes a group's slices, ``score(slices, rng) -> float64[units]``
(higher: keep), or ``None`` where the criterion does not apply to the group
(batch-norm scale on a group without batch norm), which is then kept whole.
Registered: ``'l1'``, ``'l2'``, ``'bn_scale'`` (network slimming),
``'taylor'`` (first order, needs gradients) and ``'random'`` (the floor).

A *scope* says which units compete (:func:`select_units`):

* ``'per_group'``: each group loses the same fraction of its units;
* ``'global'``: one ranking over the units of all groups, each group's scores
  divided by their mean first, so that a group of large weights (a wide
  stream) does not keep everything merely because of its scale;
* ``'isomorphic'``: groups of the same structure (members of the same
  modules, roles, axes and shapes, e.g. the inner groups of the blocks of one
  ResNet stage) compete with one another, on raw scores (Fang et al. 2024).

The result is a *plan*: ``{group name: kept unit indices}``, group names from
:func:`group_names` (stable across runs: a member's path and axis), and
:func:`structured_mask` turns it into an element mask for
:func:`pruning.masked_optimizer`, with whole channels ``False``.

As in :mod:`pruning.criteria`, everything runs on the host in float64, and
ties are broken by a stable sort: among equal scores the lower unit index
is pruned first.

References: Fang et al. 2023, "DepGraph", §3.3; Liu et al. 2017, "Learning
Efficient Convolutional Networks through Network Slimming", §3; Molchanov
et al. 2019, "Importance Estimation for Neural Network Pruning", §3 (first
order Taylor); Fang et al. 2024, "Isomorphic Pruning for Vision Models", §3.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from pruning import _tree
from pruning.criteria import _seed_entropy
from pruning.structured.groups import DependencyGroup, GroupMember

PyTree = Any
Plan = dict[str, tuple[int, ...]]
SCOPES = ('per_group', 'global', 'isomorphic')


class UnitSlices(NamedTuple):
  """One parameter member of a group, as one row per unit.

  Attributes:
    member: the member (path, axis, role, module, ...).
    weights: ``float64[units, k]``: row ``u`` holds every entry of the
      parameter that unit ``u`` stands for (the kernel's filter ``u``, the
      classifier's inputs of channel ``u`` at every position, ...).
    grads: the gradients, laid out as ``weights``, or ``None``.
  """

  member: GroupMember
  weights: np.ndarray
  grads: np.ndarray | None


ScoreFn = Callable[[Sequence[UnitSlices], 'np.random.Generator | None'], 'np.ndarray | None']


class StructuredCriterion(NamedTuple):
  """A registered structured criterion."""

  name: str
  score: ScoreFn  # (a group's UnitSlices, rng or None) -> float64[units] or None
  needs_grads: bool  # scores from gradients: the caller passes grads=
  random: bool  # draws from rng: needs a key


STRUCTURED_CRITERIA: dict[str, StructuredCriterion] = {}
"""Every structured criterion by name; :func:`register_structured_criterion` adds to it."""


def register_structured_criterion(
  name: str,
  score: ScoreFn | None = None,
  *,
  needs_grads: bool = False,
  random: bool = False,
) -> Any:
  """Registers a group score function under ``name``.

  Args:
    name: not already registered.
    score: ``score(slices, rng) -> float64[units]`` (higher: keep) or
      ``None`` to leave the group whole; ``slices`` are the group's parameter
      members (:class:`UnitSlices`), ``rng`` a generator seeded from the
      key and the group's name when ``random=True``, else ``None``.
    needs_grads: the score reads ``UnitSlices.grads``.
    random: the score draws from ``rng``.

  Returns:
    The :class:`StructuredCriterion`, or without ``score`` a decorator.

  Raises:
    ValueError: a name already registered or a score that is not callable.

  Examples:
    >>> @register_structured_criterion('max_abs')
    ... def max_abs(slices, rng):
    ...   return np.max([np.abs(s.weights).max(axis=1) for s in slices], axis=0)
    >>> STRUCTURED_CRITERIA['max_abs'].needs_grads
    False
    >>> del STRUCTURED_CRITERIA['max_abs']
  """
  if score is None:

    def decorator(fn: ScoreFn) -> ScoreFn:
      register_structured_criterion(name, fn, needs_grads=needs_grads, random=random)
      return fn

    return decorator
  if not (isinstance(name, str) and name):
    raise ValueError(f'criterion name is {name!r}; expected a non-empty string')
  if name in STRUCTURED_CRITERIA:
    raise ValueError(f'structured criterion {name!r} is already registered')
  if not callable(score):
    raise ValueError(f'score of structured criterion {name!r} is {score!r}; expected a function')
  criterion = StructuredCriterion(name, score, bool(needs_grads), bool(random))
  STRUCTURED_CRITERIA[name] = criterion
  return criterion


@register_structured_criterion('l1')
def group_l1(slices: Sequence[UnitSlices], rng: Any) -> np.ndarray:
  """``sum |w|`` over every entry of every member a unit stands for."""
  del rng
  return sum(np.abs(s.weights).sum(axis=1) for s in slices)


@register_structured_criterion('l2')
def group_l2(slices: Sequence[UnitSlices], rng: Any) -> np.ndarray:
  """``sqrt(sum w^2)`` over every entry of every member a unit stands for."""
  del rng
  return np.sqrt(sum(np.square(s.weights).sum(axis=1) for s in slices))


@register_structured_criterion('bn_scale')
def bn_scale(slices: Sequence[UnitSlices], rng: Any) -> np.ndarray | None:
  """``sum |gamma|`` over the group's batch-norm scales (Liu et al. 2017, §3); ``None`` without one."""
  del rng
  scales = [
    np.abs(s.weights).sum(axis=1)
    for s in slices
    if s.member.role == 'channel'
    and s.member.module == 'BatchNorm'
    and s.member.path.rpartition('/')[2] == 'scale'
  ]
  return sum(scales) if scales else None


@register_structured_criterion('taylor', needs_grads=True)
def taylor(slices: Sequence[UnitSlices], rng: Any) -> np.ndarray:
  """``|sum w * dL/dw|`` over the unit's entries: the first-order loss change of removing it."""
  del rng
  return np.abs(sum((s.weights * s.grads).sum(axis=1) for s in slices))


@register_structured_criterion('random', random=True)
def uniform(slices: Sequence[UnitSlices], rng: np.random.Generator) -> np.ndarray:
  """Uniform random scores: the floor any criterion must beat."""
  return rng.random(slices[0].weights.shape[0])


def group_names(groups: Sequence[DependencyGroup]) -> list[str]:
  """A stable name for each group: ``'path:axis'`` of its first output member.

  The member is the first with role ``'out'`` (a producing kernel), else the
  first; ``@i`` is appended when the group covers that axis from index
  ``i`` on (an option-A shortcut's padded channels), ``#n`` in the rare case
  that two names would still collide.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from pruning.structured import dependency_groups
    >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    >>> group_names(dependency_groups(model, jnp.zeros((1, 4))))
    ['layers/0/kernel:1', 'layers/0/kernel:0', 'layers/2/kernel:1']
  """
  names = []
  for group in groups:
    member = next((m for m in group.members if m.role == 'out'), group.members[0])
    name = f'{member.path}:{member.axis}'
    if member.index_map is not None:
      name += f'@{member.index_map[0][0]}'
    names.append(name)
  seen: dict[str, int] = {}
  for number, name in enumerate(names):
    if name in seen:
      names[number] = f'{name}#{number}'
    seen[name] = number
  return names


def _named_params(params: PyTree) -> dict[str, np.ndarray]:
  if isinstance(params, nnx.Module):
    params = nnx.state(params, nnx.Param)
  return {name: np.asarray(_tree.unbox(leaf)) for name, leaf in _tree.named_leaves(params)}


def _unit_rows(member: GroupMember, array: np.ndarray, size: int) -> np.ndarray:
  """``array``'s entries per unit of the group: ``float64[size, k]``."""
  moved = np.moveaxis(np.asarray(array, np.float64), member.axis, 0)
  if member.index_map is not None:
    moved = moved[np.asarray(member.index_map, np.int64)]
  return moved.reshape(size, -1)


def unit_slices(
  params: PyTree, group: DependencyGroup, grads: PyTree | None = None
) -> list[UnitSlices]:
  """The group's members that are parameters, one row per unit (batch statistics left out)."""
  weights = _named_params(params)
  gradients = None if grads is None else _named_params(grads)
  slices = []
  for member in group.members:
    if member.path not in weights:
      continue
    grad = None
    if gradients is not None:
      if member.path not in gradients:
        raise ValueError(f'grads lack {member.path!r}, a member of the group')
      grad = _unit_rows(member, gradients[member.path], group.size)
    slices.append(UnitSlices(member, _unit_rows(member, weights[member.path], group.size), grad))
  return slices


def group_scores(
  params: PyTree,
  groups: Sequence[DependencyGroup],
  criterion: str = 'l1',
  *,
  grads: PyTree | None = None,
  key: Any = None,
) -> dict[str, np.ndarray]:
  """Scores the units of every prunable group.

  Args:
    params: the model's parameters (``nnx.state(model, nnx.Param)``, a plain
      dict with the same paths) or the model itself.
    groups: from :func:`~pruning.dependency_groups`.
    criterion: a name in :data:`STRUCTURED_CRITERIA`.
    grads: gradients of the loss, like ``params`` (for ``'taylor'``).
    key: an int or a jax key (for ``'random'``).

  Returns:
    ``{group name: float64[units]}`` for the prunable groups the criterion
    scores, in the groups' order.

  Raises:
    ValueError: an unknown criterion, missing grads or key, a score of the
      wrong shape or with non-finite values (naming the group).
  """
  if criterion not in STRUCTURED_CRITERIA:
    raise ValueError(f'criterion is {criterion!r}; expected one of {sorted(STRUCTURED_CRITERIA)}')
  spec = STRUCTURED_CRITERIA[criterion]
  if spec.needs_grads and grads is None:
    raise ValueError(f'criterion {criterion!r} scores from gradients: pass grads=')
  if spec.random and key is None:
    raise ValueError(f'criterion {criterion!r} draws at random: pass key=')
  entropy = _seed_entropy(key) if spec.random else None
  scores = {}
  for name, group in zip(group_names(groups), groups, strict=True):
    if not group.prunable:
      continue
    slices = unit_slices(params, group, grads if spec.needs_grads else None)
    if not slices:
      continue
    rng = None
    if spec.random:
      rng = np.random.default_rng(np.random.SeedSequence([*entropy, zlib.crc32(name.encode())]))
    score = spec.score(slices, rng)
    if score is None:
      continue
    score = np.asarray(score, np.float64)
    if score.shape != (group.size,):
      raise ValueError(
        f'criterion {criterion!r} scored group {name!r} with shape {score.shape}; '
        f'expected ({group.size},)'
      )
    if not np.isfinite(score).all():
      raise ValueError(f'criterion {criterion!r} gave group {name!r} non-finite scores')
    scores[name] = score
  return scores


def rounded_width(keep: int, size: int, round_to: int) -> int:
  """``keep`` rounded to the nearest multiple of ``round_to``, at least one multiple, at most ``size``.

  Examples:
    >>> rounded_width(13, 64, 8), rounded_width(3, 64, 8), rounded_width(61, 64, 8)
    (16, 8, 64)
    >>> rounded_width(3, 6, 8)  # a group narrower than one multiple stays whole
    6
  """
  if round_to == 1:
    return keep
  multiples = max(1, int(np.floor(keep / round_to + 0.5)))
  return min(size, multiples * round_to)


def _keep_top(scores: np.ndarray, count: int) -> tuple[int, ...]:
  """The ``count`` best units, sorted; the lowest scores go first, ties by lower index."""
  order = np.argsort(scores, kind='stable')
  return tuple(int(u) for u in np.sort(order[scores.size - count :]))


def _signature(group: DependencyGroup, params: Mapping[str, np.ndarray] | None) -> tuple:
  """What makes two groups isomorphic: their members' modules, roles, axes and shapes."""
  return tuple(
    sorted(
      (
        m.module,
        m.role,
        m.axis,
        m.length,
        0 if m.index_map is None else len(m.index_map[0]),
        m.path.rpartition('/')[2],
        () if params is None or m.path not in params else np.shape(params[m.path]),
      )
      for m in group.members
    )
  )


def _pooled_counts(scores: Mapping[str, np.ndarray], sparsity: float) -> dict[str, int]:
  """Units each group keeps when ``round(sparsity * total)`` of the pooled lowest go."""
  names = list(scores)
  pooled = np.concatenate([scores[n] for n in names])
  owner = np.concatenate([np.full(scores[n].size, i) for i, n in enumerate(names)])
  order = np.argsort(pooled, kind='stable')
  pruned = order[: round(sparsity * pooled.size)]
  lost = np.bincount(owner[pruned], minlength=len(names))
  # A group never loses every unit: that would cut the network in two.
  return {n: max(1, scores[n].size - int(lost[i])) for i, n in enumerate(names)}


def _normalised(score: np.ndarray) -> np.ndarray:
  mean = float(score.mean())
  return score / mean if mean > 0 else np.zeros_like(score)


def select_units(
  groups: Sequence[DependencyGroup],
  scores: Mapping[str, np.ndarray],
  sparsity: float,
  *,
  scope: str = 'per_group',
  round_to: int = 1,
  params: PyTree | None = None,
) -> Plan:
  """Turns unit scores into a plan: the units each scored group keeps.

  Args:
    groups: from :func:`~pruning.dependency_groups`.
    scores: from :func:`group_scores`; groups without scores are not in the plan.
    sparsity: the fraction of units to prune, in ``[0, 1]``.
    scope: ``'per_group'``: each group keeps ``size - round(sparsity *
      size)`` units; ``'global'``: the ``round(sparsity * total)`` lowest of
      all units pooled, each group's scores divided by their mean; or
      ``'isomorphic'``: the same, without the division, within each class
      of isomorphic groups. A group keeps at least one unit.
    round_to: kept widths are rounded to the nearest multiple (8 for GPUs,
      128 for TPUs), at least one multiple, at most the full width; the
      units kept are then the best that many.
    params: the parameters, to compare the members' shapes in the
      isomorphic scope (without them only the group axes' lengths count).

  Returns:
    ``{group name: sorted kept unit indices}``.

  Raises:
    ValueError: an unknown scope, a sparsity outside ``[0, 1]``, a
      ``round_to`` that is not a positive int, a score for an unknown group.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from pruning.structured import dependency_groups
    >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    >>> groups = dependency_groups(model, jnp.zeros((1, 4)))
    >>> scores = {'layers/0/kernel:1': np.array([5., 1, 7, 3, 2, 8, 6, 4])}
    >>> select_units(groups, scores, 0.5)
    {'layers/0/kernel:1': (0, 2, 5, 6)}
  """
  if scope not in SCOPES:
    raise ValueError(f'scope is {scope!r}; expected one of {SCOPES}')
  sparsity = _tree.real_number(sparsity, 'sparsity', minimum=0.0, maximum=1.0)
  if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
    raise ValueError(
      f'round_to is {round_to!r}; expected a positive int (8 for GPUs, 128 for TPUs)'
    )
  by_name = dict(zip(group_names(groups), groups, strict=True))
  for name in scores:
    if name not in by_name:
      raise ValueError(f'scores given for {name!r}, which names no group; groups: {list(by_name)}')
    if not by_name[name].prunable:
      raise ValueError(f'group {name!r} is pinned ({by_name[name].reason}); it cannot be pruned')
  if scope == 'per_group':
    counts = {n: max(1, s.size - round(sparsity * s.size)) for n, s in scores.items()}
  elif scope == 'global':
    counts = _pooled_counts({n: _normalised(s) for n, s in scores.items()}, sparsity)
  else:
    named = None if params is None else _named_params(params)
    classes: dict[tuple, dict[str, np.ndarray]] = {}
    for name, score in scores.items():
      classes.setdefault(_signature(by_name[name], named), {})[name] = score
    counts = {}
    for members in classes.values():
      counts.update(_pooled_counts(members, sparsity))
  return {
    name: _keep_top(score, rounded_width(counts[name], score.size, round_to))
    for name, score in scores.items()
  }


def structured_plan(
  params: PyTree,
  groups: Sequence[DependencyGroup],
  sparsity: float,
  *,
  criterion: str = 'l1',
  scope: str = 'per_group',
  round_to: int = 1,
  grads: PyTree | None = None,
  key: Any = None,
) -> Plan:
  """Scores the groups (:func:`group_scores`) and selects units (:func:`select_units`)."""
  scores = group_scores(params, groups, criterion, grads=grads, key=key)
  return select_units(groups, scores, sparsity, scope=scope, round_to=round_to, params=params)


def removed_indices(
  groups: Sequence[DependencyGroup],
  plan: Mapping[str, Sequence[int]],
  *,
  roles: Sequence[str] = ('out', 'in', 'channel'),
) -> dict[tuple[str, int], np.ndarray]:
  """``{(path, axis): sorted removed indices}`` over the members (of those roles) of the plan's groups.

  Raises:
    ValueError: a plan naming no group or a pinned one, or kept units out of
      range, repeated or none at all (naming the group).
  """
  by_name = dict(zip(group_names(groups), groups, strict=True))
  removed: dict[tuple[str, int], list[np.ndarray]] = {}
  for name, kept in plan.items():
    if name not in by_name:
      raise ValueError(f'the plan names {name!r}, which is no group; groups: {list(by_name)}')
    group = by_name[name]
    if not group.prunable:
      raise ValueError(f'the plan prunes group {name!r}, which is pinned: {group.reason}')
    kept = np.asarray(kept, np.int64)
    if (
      kept.ndim != 1
      or kept.size == 0
      or np.unique(kept).size != kept.size
      or kept.min() < 0
      or kept.max() >= group.size
    ):
      raise ValueError(
        f'the plan keeps units {kept.tolist()} of group {name!r}; expected distinct '
        f'indices in [0, {group.size}), at least one'
      )
    dropped = np.setdiff1d(np.arange(group.size), kept)
    for member in group.members:
      if member.role not in roles:
        continue
      removed.setdefault((member.path, member.axis), []).append(member.indices(dropped))
  return {k: np.unique(np.concatenate(v)).astype(np.int64) for k, v in removed.items()}


def structured_mask(
  params: PyTree,
  groups: Sequence[DependencyGroup],
  plan: Mapping[str, Sequence[int]],
  *,
  roles: Sequence[str] = ('out', 'in', 'channel'),
) -> PyTree:
  """The element mask of a plan: every entry of a removed unit ``False``, in every member.

  A parameter that is a member of a group in the plan gets a boolean array
  (all ``True`` if the plan removes nothing from it), every other leaf
  ``None``; so the mask's structure depends on the groups, not on how much
  is pruned, and :func:`~pruning.replace_mask` can install the next round's.
  Holding it in :func:`~pruning.masked_optimizer` keeps whole channels,
  their biases, batch-norm scales and offsets, and the next layer's inputs
  from them at exactly zero while retraining.

  Args:
    params: ``nnx.state(model, nnx.Param)`` or a dict with the same paths.
    groups: from :func:`~pruning.dependency_groups`.
    plan: ``{group name: kept unit indices}``.
    roles: the members to mask, by role. The default masks them all, so a
      removed unit is absent from the masked model. ``('out',)`` masks only
      the producing kernels: a removed unit then outputs a constant (its
      bias, through batch norm and activation) that the next layer still
      reads, which :func:`~pruning.structured.remove_units` folds into that
      layer's bias.

  Returns:
    A mask mirroring ``params``.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from pruning.structured import dependency_groups
    >>> model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(3, 1, rngs=nnx.Rngs(0)))
    >>> groups = dependency_groups(model, jnp.zeros((1, 2)))
    >>> mask = structured_mask(nnx.state(model, nnx.Param), groups, {'layers/0/kernel:1': (0, 2)})
    >>> mask['layers'][0]['kernel'].tolist(), mask['layers'][2]['kernel'].tolist()
    ([[True, False, True], [True, False, True]], [[True], [False], [True]])
    >>> mask['layers'][2]['bias'] is None
    True
  """
  removed = removed_indices(groups, plan, roles=roles)
  members = {path for path, _ in removed}

  def leaf(name: str, value: Any) -> Any:
    if name not in members:
      return None
    keep = np.ones(np.shape(_tree.unbox(value)), bool)
    for (path, axis), indices in removed.items():
      if path == name and indices.size:
        index = [slice(None)] * keep.ndim
        index[axis] = indices
        keep[tuple(index)] = False
    return jnp.asarray(keep)

  return _tree.map_named(leaf, params)
