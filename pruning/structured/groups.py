"""Dependency groups of a flax nnx model: parameter axes that must be pruned together.

:func:`dependency_groups` traces the model's forward pass with
``jax.make_jaxpr`` as a function of its state (parameters *and* batch
statistics are traced inputs, so their axes take part) and walks the jaxpr
(:mod:`pruning.structured.jaxpr_walk`, one rule per primitive in
:mod:`pruning.structured.primitive_rules`). Pruning unit ``u`` of a group
means removing index ``u`` of every member axis (or the indices its index
map lists, for an axis that a reshape or a concatenation built from
several). A group that reaches the model's input or output, a spatial axis,
or anything else the rules cannot follow is *pinned*: it is listed with the
reason and must not be pruned.

An axis that a reshape merged from several (a flatten before a classifier,
heads and head dimensions) is pruned through its factors: it is a member of
each factor's group, with an index map, and is not a group of its own. So a
kernel whose outputs are reshaped to ``(6, 4)`` and back is pruned 4 or 6
outputs at a time, never one: coarser than it could be, never wrong.

References: Fang et al. 2023, "DepGraph: Towards Any Structural Pruning",
§3 (grouping coupled parameters); here derived from the jaxpr.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from pruning.structured.jaxpr_walk import Walker
from pruning.structured.primitive_rules import RULES


class GroupMember(NamedTuple):
  """One axis of one parameter (or batch statistic) in a group.

  Attributes:
    path: the variable's path in the model, ``'conv1/kernel'``.
    axis: the axis of that variable.
    role: ``'out'`` (a kernel's output units), ``'in'`` (its inputs),
      ``'spatial'`` (a convolution window), ``'channel'`` (a bias, a norm's
      scale, a batch statistic, an embedding).
    module: the class name of the module holding it, ``'Conv'``.
    length: the axis's length.
    index_map: ``None`` when unit ``u`` of the group is index ``u`` of the
      axis; otherwise row ``u`` lists the indices of the axis unit ``u``
      stands for (a classifier's input after a flatten: one per position; an
      axis built by concatenation or padding: an offset).
  """

  path: str
  axis: int
  role: str
  module: str
  length: int
  index_map: tuple[tuple[int, ...], ...] | None = None

  def indices(self, units: Sequence[int]) -> np.ndarray:
    """The indices of this member's axis that ``units`` of the group stand for, sorted."""
    units = np.asarray(units, dtype=np.int64)
    if self.index_map is None:
      return np.sort(units)
    return np.sort(np.asarray(self.index_map, dtype=np.int64)[units].ravel())


class DependencyGroup(NamedTuple):
  """Parameter axes coupled by the forward pass.

  Attributes:
    size: the number of units (channels, filters, heads, ...).
    members: the coupled axes, in the model's state order.
    reason: why the group cannot be pruned, or ``None`` if it can.
  """

  size: int
  members: tuple[GroupMember, ...]
  reason: str | None = None

  @property
  def prunable(self) -> bool:
    return self.reason is None

  def axes(self) -> set[tuple[str, int]]:
    """``{(path, axis)}`` of the members."""
    return {(m.path, m.axis) for m in self.members}


def _module_names(model: nnx.Module) -> dict[str, str]:
  return {
    '/'.join(str(k) for k in keys): type(module).__name__
    for keys, module in nnx.iter_modules(model)
  }


def dependency_groups(model: nnx.Module, *example_inputs: Any) -> list[DependencyGroup]:
  """The groups of coupled parameter axes of ``model``, read off its jaxpr.

  The forward pass is traced once, in evaluation mode, on a copy (``model``
  is not changed), as ``model(*example_inputs)``; only the shapes and dtypes
  of the inputs matter. Every variable but the random-number state is a
  traced input.

  Args:
    model: a flax nnx module.
    *example_inputs: arrays (or ``jax.ShapeDtypeStruct``) to call it with.

  Returns:
    One group per class of coupled axes that holds a variable's axis, in
    the order of the variables; pinned groups (``reason`` set) included.

  Raises:
    UnsupportedPrimitiveError: if the forward pass uses a primitive that has
      no rule, naming it and where it sits.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    >>> groups = dependency_groups(model, jnp.zeros((1, 4)))
    >>> [sorted(g.axes()) for g in groups if g.prunable]
    [[('layers/0/bias', 0), ('layers/0/kernel', 1), ('layers/2/kernel', 0)]]
  """
  graphdef, state, rest = nnx.split(model, nnx.Not(nnx.RngState), ...)
  values, treedef = jax.tree.flatten(state)
  names = _leaf_names(state)

  def forward(values, *inputs):
    copy = nnx.merge(graphdef, jax.tree.unflatten(treedef, values), rest)
    copy.eval()
    return copy(*inputs)

  closed = jax.make_jaxpr(forward)(values, *example_inputs)
  walker = Walker(RULES)
  jaxpr = closed.jaxpr
  for var, value in zip(jaxpr.constvars, closed.consts, strict=False):
    for axis in range(np.ndim(value)):
      walker.pin((), var, axis, 'a constant the forward pass closes over (not a variable)')
  state_vars = jaxpr.invars[: len(values)]
  for number, var in enumerate(jaxpr.invars[len(values) :]):
    for axis in range(len(var.aval.shape)):
      walker.pin((), var, axis, f'the model input {number}, axis {axis}')
  walker.walk(jaxpr, ())
  for number, var in enumerate(jaxpr.outvars):
    for axis in range(len(var.aval.shape)):
      walker.pin((), var, axis, f'the model output {number}, axis {axis}')
  return _collect(walker, model, names, state_vars)


def _leaf_names(state: Any) -> list[str]:
  """The path of each array leaf of ``state``, in ``jax.tree.flatten`` order.

  A variable holding one array is named by its path (``'conv1/kernel'``); one
  holding several (rare) by its path and the leaf's (``'cache/k[0]'``); one
  holding none (``None``) has no leaf.
  """
  names = []
  variables = jax.tree_util.tree_flatten_with_path(
    state, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )[0]
  for path, variable in variables:
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    count = len(jax.tree.leaves(variable))
    names += [name] if count == 1 else [f'{name}[{i}]' for i in range(count)]
  return names


def _collect(walker: Walker, model, names, state_vars) -> list[DependencyGroup]:
  classes = walker.classes
  modules = _module_names(model)
  pins = classes.effective_pins()
  members: dict[int, list[GroupMember]] = {}
  for name, var in zip(names, state_vars, strict=True):
    module = modules.get(name.rpartition('/')[0], type(model).__name__)
    for axis in range(len(var.aval.shape)):
      role = walker.role((), var, axis) or 'channel'
      length = int(var.aval.shape[axis])
      for leaf, positions in classes.leaf_maps(walker.node((), var, axis)).items():
        identity = positions.shape[1] == 1 and np.array_equal(positions[:, 0], np.arange(length))
        index_map = None if identity else tuple(tuple(int(i) for i in row) for row in positions)
        members.setdefault(leaf, []).append(
          GroupMember(name, axis, role, module, length, index_map)
        )
  groups = []
  for leaf, found in members.items():
    reasons = pins.get(leaf)
    if classes.size[leaf] == 1 and not reasons:
      # Axes of size 1 are never joined (they broadcast), so what they are
      # coupled to is unknown.
      reasons = ['a single unit, whose coupling is not traced (axes of size 1 broadcast)']
    groups.append(
      DependencyGroup(classes.size[leaf], tuple(found), '; '.join(reasons) if reasons else None)
    )
  return groups


def format_groups(groups: Sequence[DependencyGroup], pinned: bool = False) -> str:
  """The groups as readable text, one line per member.

  Args:
    groups: from :func:`dependency_groups`.
    pinned: also list the pinned groups, with their reasons.

  Returns:
    A ``group N: size units`` line per group (``N`` its index in ``groups``),
    then one indented line per member: path, axis, role, module, and for an
    axis with an index map how many of its indices each unit stands for.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    >>> print(format_groups(dependency_groups(model, jnp.zeros((1, 4))), pinned=True))
    group 0: 8 units
      layers/0/bias axis 0 (channel, Linear)
      layers/0/kernel axis 1 (out, Linear)
      layers/2/kernel axis 0 (in, Linear)
    group 1: 4 units, pinned: the model input 0, axis 1
      layers/0/kernel axis 0 (in, Linear)
    group 2: 3 units, pinned: the model output 0, axis 1
      layers/2/bias axis 0 (channel, Linear)
      layers/2/kernel axis 1 (out, Linear)
  """
  lines = []
  for number, group in enumerate(groups):
    if group.reason is not None and not pinned:
      continue
    head = f'group {number}: {group.size} units'
    if group.reason is not None:
      head += f', pinned: {group.reason}'
    lines.append(head)
    for m in group.members:
      mapped = (
        '' if m.index_map is None else f', {len(m.index_map[0])} of {m.length} indices per unit'
      )
      lines.append(f'  {m.path} axis {m.axis} ({m.role}, {m.module}{mapped})')
  return '\n'.join(lines)
