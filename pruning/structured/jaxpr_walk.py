"""Walking a jaxpr: a union-find over the axes of its values, and the walk itself.

Every axis of every value the forward pass computes is a node, keyed by the
*call site* of the equation that defines the value (the path of equation
indices through ``jit``/``custom_jvp_call``/... sub-jaxprs), the variable and
the axis. JAX shares one sub-jaxpr object between calls of the same shape
(every ``relu`` of a given shape is the same ``custom_jvp_call`` jaxpr), so a
key without the call site would merge all of them into one group.

Each primitive's rule (:mod:`pruning.structured.primitive_rules`) either
*joins* nodes whose indices must stay in step, *composes* an axis from others
(a reshape that merges ``H x W x C`` into one axis, a concatenation, zero
padding), or *pins* a node with the reason it cannot be pruned (a spatial axis
of a convolution, the model's input and output). Nodes of size 1 carry no
units and are never joined (broadcasting).

A class that is composed of parts is not a group itself: its units are
pruned through its parts, and the parameter axes in it appear in the parts'
groups with an index map (see :func:`leaf_maps`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from jax.extend import core as jcore

PRODUCT = 'product'  # row-major: the axis is the parts' axes merged, outermost first
CONCAT = 'concat'  # the axis is the parts' axes one after another


class UnsupportedPrimitiveError(NotImplementedError):
  """A primitive without a dependency rule, or used in a way its rule does not cover."""


class AxisClasses:
  """Union-find over axis nodes, with per-class pins and compositions."""

  def __init__(self):
    self.parent: list[int] = []
    self.size: list[int] = []
    self.pins: dict[int, list[str]] = {}
    self.parts: dict[int, tuple[str, tuple[int, ...]]] = {}

  def new(self, size: int) -> int:
    self.parent.append(len(self.parent))
    self.size.append(int(size))
    return len(self.parent) - 1

  def find(self, node: int) -> int:
    root = node
    while self.parent[root] != root:
      root = self.parent[root]
    while self.parent[node] != root:
      self.parent[node], node = root, self.parent[node]
    return root

  def pin(self, node: int, reason: str) -> None:
    reasons = self.pins.setdefault(self.find(node), [])
    if reason not in reasons:
      reasons.append(reason)

  def union(self, a: int, b: int, where: str = '') -> None:
    if self.size[a] != self.size[b]:
      raise UnsupportedPrimitiveError(
        f'axes of sizes {self.size[a]} and {self.size[b]} would be joined {where}'
      )
    if self.size[a] == 1:
      return
    ra, rb = self.find(a), self.find(b)
    if ra == rb:
      return
    self.parent[rb] = ra
    for reason in self.pins.pop(rb, []):
      self.pin(ra, reason)
    mine, theirs = self.parts.pop(ra, None), self.parts.pop(rb, None)
    if mine is None or theirs is None:
      if mine or theirs:
        self.parts[ra] = mine or theirs
      return
    self.parts[ra] = mine
    sizes = [[self.size[p] for p in parts] for _, parts in (mine, theirs)]
    if mine[0] == theirs[0] and sizes[0] == sizes[1]:
      for p, q in zip(mine[1], theirs[1], strict=False):
        self.union(p, q, where)
      return
    reason = f'split or merged in two incompatible ways ({mine[0]} {sizes[0]} and {theirs[0]} {sizes[1]}) {where}'
    self.pin(ra, reason)
    for part in (*mine[1], *theirs[1]):
      self.pin(part, reason)

  def compose(self, whole: int, kind: str, parts: Sequence[int], where: str = '') -> None:
    """Records that axis ``whole`` is made of ``parts`` (a reshape's factors, a concatenation)."""
    parts = tuple(p for p in parts if self.size[p] > (1 if kind == PRODUCT else 0))
    total = (
      int(np.prod([self.size[p] for p in parts]))
      if kind == PRODUCT
      else sum(self.size[p] for p in parts)
    )
    if total != self.size[whole]:
      raise UnsupportedPrimitiveError(
        f'parts of size {total} for an axis of {self.size[whole]} {where}'
      )
    if len(parts) == 1:
      self.union(whole, parts[0], where)
      return
    if self.size[whole] == 1 and not parts:
      return
    shadow = self.new(self.size[whole])
    self.parts[shadow] = (kind, parts)
    self.union(whole, shadow, where)

  def effective_pins(self) -> dict[int, list[str]]:
    """Pins of each root, with those of every class it is a part of added."""
    pins = {self.find(r): list(reasons) for r, reasons in self.pins.items()}
    order = sorted(self.parts, key=lambda r: -self.size[r])
    for root in order:
      for part in self.parts[root][1]:
        for reason in pins.get(root, []):
          target = pins.setdefault(self.find(part), [])
          if reason not in target:
            target.append(reason)
    return pins

  def leaf_maps(self, node: int, depth: int = 0) -> dict[int, np.ndarray]:
    """For each leaf class under ``node``'s class: ``(leaf size, k)`` indices into ``node``'s axis.

    Row ``u`` lists the positions of ``node``'s axis that unit ``u`` of the leaf
    stands for (one position for a plain join, several after a merge).
    """
    root = self.find(node)
    if root not in self.parts:
      return {root: np.arange(self.size[root]).reshape(-1, 1)}
    if depth > 64:
      raise UnsupportedPrimitiveError('compositions nest more than 64 deep')
    kind, parts = self.parts[root]
    sizes = [self.size[p] for p in parts]
    out: dict[int, np.ndarray] = {}
    offset = 0
    for k, part in enumerate(parts):
      if kind == PRODUCT:
        grid = np.arange(self.size[root]).reshape(sizes)
        unit_positions = np.moveaxis(grid, k, 0).reshape(sizes[k], -1)
      else:
        unit_positions = (offset + np.arange(sizes[k])).reshape(-1, 1)
        offset += sizes[k]
      for leaf, inner in self.leaf_maps(part, depth + 1).items():
        mapped = unit_positions[inner].reshape(inner.shape[0], -1)
        out[leaf] = np.concatenate([out[leaf], mapped], axis=1) if leaf in out else mapped
    return out


def is_literal(atom: Any) -> bool:
  return isinstance(atom, jcore.Literal)


def location(eqn: Any) -> str:
  """``'file.py:12 (fn)'``, the user's line an equation comes from, or ``''``."""
  from jax._src import source_info_util

  return source_info_util.summarize(eqn.source_info)


def where(eqn: Any, sites: Sequence[str]) -> str:
  """``'at file.py:12 (fn), inside jit(relu) at ...'``: where an equation sits."""
  text = f'at {location(eqn)}' if location(eqn) else 'at no known line'
  if sites:
    text += ', inside ' + ' / '.join(sites)
  return text


# (walker, eqn, ctx of its values, names of the calls it sits in, its own call site)
Rule = Callable[['Walker', Any, tuple[int, ...], tuple[str, ...], tuple[int, ...]], None]


class Walker:
  """Walks a closed jaxpr, applying one rule per primitive to an :class:`AxisClasses`.

  Args:
    rules: primitive name -> rule ``(walker, eqn, ctx, names, site)``.
  """

  def __init__(self, rules: dict[str, Rule]):
    self.rules = rules
    self.classes = AxisClasses()
    self._alias: dict[tuple[tuple[int, ...], Any], tuple[tuple[int, ...], Any]] = {}
    self._nodes: dict[tuple[tuple[tuple[int, ...], Any], int], int] = {}
    self.roles: dict[tuple[tuple[tuple[int, ...], Any], int], str] = {}

  # Nodes.
  def key(self, ctx: tuple[int, ...], var: Any) -> tuple[tuple[int, ...], Any]:
    key = (ctx, var)
    while key in self._alias:
      key = self._alias[key]
    return key

  def node(self, ctx: tuple[int, ...], atom: Any, axis: int) -> int:
    """The node of ``axis`` of ``atom``; a fresh one for a literal or a dropped output."""
    shape = atom.aval.shape
    if is_literal(atom) or isinstance(atom, jcore.DropVar):
      return self.classes.new(shape[axis])
    key = (self.key(ctx, atom), axis)
    if key not in self._nodes:
      self._nodes[key] = self.classes.new(shape[axis])
    return self._nodes[key]

  def alias(self, ctx_out: tuple[int, ...], out: Any, ctx_in: tuple[int, ...], atom: Any) -> None:
    """Makes ``out`` the same value as ``atom`` (a call's boundary, a cast)."""
    if is_literal(atom) or isinstance(out, jcore.DropVar) or is_literal(out):
      return
    target = self.key(ctx_in, atom)
    if target != (ctx_out, out):
      self._alias[(ctx_out, out)] = target

  def join_all(self, ctx_a, a, ctx_b, b, where_: str = '') -> None:
    """Joins every axis of ``a`` with the same axis of ``b`` (values that must agree)."""
    for axis in range(len(a.aval.shape)):
      self.join(ctx_a, a, axis, ctx_b, b, axis, where_)

  def pin_constants(self, site, jaxpr: Any, label: str) -> None:
    """Pins the axes of a closed jaxpr's constants: nothing can slice them."""
    for var, value in zip(jaxpr.jaxpr.constvars, jaxpr.consts, strict=True):
      for axis in range(np.ndim(value)):
        self.pin(site, var, axis, f'a constant closed over by {label}')

  def set_role(self, ctx: tuple[int, ...], atom: Any, axis: int, role: str) -> None:
    if not is_literal(atom):
      self.roles.setdefault((self.key(ctx, atom), axis), role)

  def role(self, ctx: tuple[int, ...], atom: Any, axis: int) -> str | None:
    return self.roles.get((self.key(ctx, atom), axis))

  # What rules do.
  def join(self, ctx_a, a, axis_a, ctx_b, b, axis_b, where_: str = '') -> None:
    self.classes.union(self.node(ctx_a, a, axis_a), self.node(ctx_b, b, axis_b), where_)

  def pin(self, ctx, atom, axis: int, reason: str) -> None:
    if not is_literal(atom):
      self.classes.pin(self.node(ctx, atom, axis), reason)

  # The walk.
  def walk(self, jaxpr: Any, ctx: tuple[int, ...], names: tuple[str, ...] = ()) -> None:
    """Applies the rules to every equation of ``jaxpr`` (a ``Jaxpr``), its values keyed by ``ctx``."""
    for index, eqn in enumerate(jaxpr.eqns):
      rule = self.rules.get(eqn.primitive.name)
      if rule is None:
        raise UnsupportedPrimitiveError(
          f'no dependency rule for primitive {eqn.primitive.name!r} {where(eqn, names)}; '
          'add one to pruning/structured/primitive_rules.py'
        )
      rule(self, eqn, ctx, names, (*ctx, index))

  def call(self, eqn: Any, ctx, names, site, jaxpr: Any, label: str) -> None:
    """Walks a sub-jaxpr at its call site, its inputs and outputs bound to the caller's."""
    inner = getattr(jaxpr, 'jaxpr', jaxpr)
    consts = getattr(jaxpr, 'consts', ())
    if len(inner.invars) != len(eqn.invars) or len(inner.outvars) != len(eqn.outvars):
      raise UnsupportedPrimitiveError(
        f'{eqn.primitive.name!r} {where(eqn, names)}: its jaxpr takes {len(inner.invars)} '
        f'inputs for {len(eqn.invars)} operands'
      )
    if consts:
      self.pin_constants(site, jaxpr, label)
    for var, atom in zip(inner.invars, eqn.invars, strict=False):
      self.alias(site, var, ctx, atom)
    label += f' at {location(eqn)}' if location(eqn) else ''
    self.walk(inner, site, (*names, label))
    for out, var in zip(eqn.outvars, inner.outvars, strict=False):
      self.alias(ctx, out, site, var)
