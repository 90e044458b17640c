"""One dependency rule per primitive: which axes of its operands and results stay in step.

A rule receives the walker, the equation, the context its values are keyed
by, the names of the calls it sits in (for messages) and its own call site
(the context of a sub-jaxpr it calls). Every axis a rule touches is either
joined to others, composed from others, or pinned with a reason; an axis of a
result that no rule joins is a fresh class with no parameters in it. The axes
a reduction sums over are left as they are: dropping a unit drops its term,
which is how DepGraph treats them (a LayerNorm over a pruned stream).

References: Fang et al. 2023 (DepGraph), §3.2-3.3: intra- and inter-layer
dependencies, here read off the jaxpr instead of the module graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pruning.structured.jaxpr_walk import (
  CONCAT,
  PRODUCT,
  Rule,
  UnsupportedPrimitiveError,
  Walker,
  location,
  where,
)

RULES: dict[str, Rule] = {}

ELEMENTWISE = (
  'abs', 'acos', 'acosh', 'add', 'add_any', 'and', 'asin', 'asinh', 'atan', 'atan2', 'atanh',
  'cbrt', 'ceil', 'clamp', 'conj', 'cos', 'cosh', 'digamma', 'div', 'eq', 'erf', 'erf_inv',
  'erfc', 'exp', 'exp2', 'expm1', 'floor', 'ge', 'gt', 'imag', 'integer_pow', 'is_finite', 'le',
  'lgamma', 'log', 'log1p', 'logistic', 'lt', 'max', 'min', 'mul', 'ne', 'neg', 'nextafter',
  'not', 'or', 'pow', 'real', 'reduce_precision', 'rem', 'round', 'rsqrt', 'select_n',
  'shift_left', 'shift_right_arithmetic', 'shift_right_logical', 'sign', 'sin', 'sqrt',
  'square', 'sub', 'tan', 'tanh', 'xor',
)  # fmt: skip
# Results that are their operand: keyed as the same value, so a parameter keeps its role.
IDENTITY = ('convert_element_type', 'copy', 'copy_p', 'stop_gradient', 'sharding_constraint')
REDUCTIONS = (
  'argmax', 'argmin', 'reduce_and', 'reduce_max', 'reduce_min', 'reduce_or', 'reduce_prod',
  'reduce_sum', 'reduce_xor',
)  # fmt: skip
CALLS = (
  'pjit', 'jit', 'closed_call', 'core_call', 'custom_jvp_call', 'custom_vjp_call', 'checkpoint',
  'remat', 'remat2',
)  # fmt: skip
CUMULATIVE = ('cumsum', 'cumprod', 'cummax', 'cummin', 'cumlogsumexp')
WINDOWED = ('reduce_window_sum', 'reduce_window_max', 'reduce_window_min', 'reduce_window')


def _register(*names: str):
  def decorate(rule: Rule) -> Rule:
    for name in names:
      RULES[name] = rule
    return rule

  return decorate


def _shape(atom: Any) -> tuple[int, ...]:
  return tuple(atom.aval.shape)


@_register(*ELEMENTWISE)
def _elementwise(w: Walker, eqn, ctx, names, site) -> None:
  for out in eqn.outvars:
    for operand in eqn.invars:
      if not _shape(operand):
        continue
      if len(_shape(operand)) != len(_shape(out)):
        raise UnsupportedPrimitiveError(
          f'{eqn.primitive.name!r} {where(eqn, names)}: operand of rank '
          f'{len(_shape(operand))} for a result of rank {len(_shape(out))}'
        )
      for axis, (n, m) in enumerate(zip(_shape(operand), _shape(out), strict=False)):
        if n == m:
          w.join(ctx, operand, axis, ctx, out, axis, where(eqn, names))
        elif n != 1:
          raise UnsupportedPrimitiveError(
            f'{eqn.primitive.name!r} {where(eqn, names)}: sizes {n} and {m}'
          )


@_register(*IDENTITY)
def _identity(w: Walker, eqn, ctx, names, site) -> None:
  if _shape(eqn.invars[0]) != _shape(eqn.outvars[0]):
    _elementwise(w, eqn, ctx, names, site)
    return
  w.alias(ctx, eqn.outvars[0], ctx, eqn.invars[0])


@_register('broadcast_in_dim')
def _broadcast_in_dim(w: Walker, eqn, ctx, names, site) -> None:
  operand, out = eqn.invars[0], eqn.outvars[0]
  for axis, target in enumerate(eqn.params['broadcast_dimensions']):
    if _shape(operand)[axis] == _shape(out)[target]:
      w.join(ctx, operand, axis, ctx, out, int(target), where(eqn, names))


@_register('transpose')
def _transpose(w: Walker, eqn, ctx, names, site) -> None:
  for axis, source in enumerate(eqn.params['permutation']):
    w.join(ctx, eqn.invars[0], int(source), ctx, eqn.outvars[0], axis, where(eqn, names))


@_register('squeeze')
def _squeeze(w: Walker, eqn, ctx, names, site) -> None:
  dropped = {int(d) % len(_shape(eqn.invars[0])) for d in eqn.params['dimensions']}
  kept = [a for a in range(len(_shape(eqn.invars[0]))) if a not in dropped]
  for out_axis, axis in enumerate(kept):
    w.join(ctx, eqn.invars[0], axis, ctx, eqn.outvars[0], out_axis, where(eqn, names))


@_register('reshape')
def _reshape(w: Walker, eqn, ctx, names, site) -> None:
  operand, out = eqn.invars[0], eqn.outvars[0]
  here = where(eqn, names)
  if eqn.params.get('dimensions') is not None:
    raise UnsupportedPrimitiveError(f"'reshape' with dimensions {where(eqn, names)}")
  ins = [(a, n) for a, n in enumerate(_shape(operand)) if n != 1]
  outs = [(a, n) for a, n in enumerate(_shape(out)) if n != 1]
  i = j = 0
  while i < len(ins) and j < len(outs):
    block_in, block_out = [ins[i]], [outs[j]]
    i, j = i + 1, j + 1
    while np.prod([n for _, n in block_in]) != np.prod([n for _, n in block_out]):
      if np.prod([n for _, n in block_in]) < np.prod([n for _, n in block_out]):
        block_in.append(ins[i])
        i += 1
      else:
        block_out.append(outs[j])
        j += 1
    if len(block_in) == 1 and len(block_out) == 1:
      w.join(ctx, operand, block_in[0][0], ctx, out, block_out[0][0], here)
    elif len(block_in) == 1:
      parts = [w.node(ctx, out, a) for a, _ in block_out]
      w.classes.compose(w.node(ctx, operand, block_in[0][0]), PRODUCT, parts, here)
    elif len(block_out) == 1:
      parts = [w.node(ctx, operand, a) for a, _ in block_in]
      w.classes.compose(w.node(ctx, out, block_out[0][0]), PRODUCT, parts, here)
    else:
      _regroup(w, ctx, operand, block_in, out, block_out, here)


def _common_factors(
  ins: list[int], outs: list[int]
) -> tuple[list[list[int]], list[list[int]]] | None:
  """Factors that both sides are products of, row-major: ``[6, 4] -> [2, 12]`` is ``2, 3, 4``.

  Returns, for each axis of either side, the positions of its factors, or
  ``None`` when an axis boundary of one side falls inside a factor of the
  other that does not divide it (``[3, 2] -> [2, 3]``).
  """
  factors: list[int] = []
  of_in: list[list[int]] = [[] for _ in ins]
  of_out: list[list[int]] = [[] for _ in outs]
  i = j = 0
  left_in, left_out = ins[0], outs[0]
  while i < len(ins) and j < len(outs):
    if left_in % left_out and left_out % left_in:
      return None
    factor = min(left_in, left_out)
    of_in[i].append(len(factors))
    of_out[j].append(len(factors))
    factors.append(factor)
    left_in, left_out = left_in // factor, left_out // factor
    if left_in == 1:
      i += 1
      left_in = ins[i] if i < len(ins) else 1
    if left_out == 1:
      j += 1
      left_out = outs[j] if j < len(outs) else 1
  return [[factors[k] for k in axis] for axis in of_in], [
    [factors[k] for k in axis] for axis in of_out
  ]


def _regroup(w: Walker, ctx, operand, block_in, out, block_out, here: str) -> None:
  """Several axes reshaped into several others: through common factors, or pinned."""
  sizes_in, sizes_out = [n for _, n in block_in], [n for _, n in block_out]
  common = _common_factors(sizes_in, sizes_out)
  if common is None:
    reason = f'reshape regroups axes {sizes_in} into {sizes_out} {here}'
    for a, _ in block_in:
      w.pin(ctx, operand, a, reason)
    for a, _ in block_out:
      w.pin(ctx, out, a, reason)
    return
  fine: list[int] = []
  for (a, _), factors in zip(block_in, common[0], strict=True):
    nodes = [w.classes.new(f) for f in factors]
    fine += nodes
    w.classes.compose(w.node(ctx, operand, a), PRODUCT, nodes, here)
  position = 0
  for (a, _), factors in zip(block_out, common[1], strict=True):
    nodes = fine[position : position + len(factors)]
    position += len(factors)
    w.classes.compose(w.node(ctx, out, a), PRODUCT, nodes, here)


@_register(*REDUCTIONS)
def _reduction(w: Walker, eqn, ctx, names, site) -> None:
  reduced = {int(a) for a in eqn.params['axes']}
  kept = [a for a in range(len(_shape(eqn.invars[0]))) if a not in reduced]
  for out in eqn.outvars:
    for out_axis, axis in enumerate(kept):
      w.join(ctx, eqn.invars[0], axis, ctx, out, out_axis, where(eqn, names))


@_register(*CUMULATIVE)
def _cumulative(w: Walker, eqn, ctx, names, site) -> None:
  along = int(eqn.params['axis'])
  for axis in range(len(_shape(eqn.invars[0]))):
    if axis == along:
      reason = f'{eqn.primitive.name} runs along it {where(eqn, names)}'
      w.pin(ctx, eqn.invars[0], axis, reason)
      w.pin(ctx, eqn.outvars[0], axis, reason)
    else:
      w.join(ctx, eqn.invars[0], axis, ctx, eqn.outvars[0], axis, where(eqn, names))


@_register('dot_general')
def _dot_general(w: Walker, eqn, ctx, names, site) -> None:
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params['dimension_numbers']
  lhs, rhs = eqn.invars
  out = eqn.outvars[0]
  here = where(eqn, names)
  for a, b in zip(lhs_contract, rhs_contract, strict=False):
    w.join(ctx, lhs, int(a), ctx, rhs, int(b), here)
    w.set_role(ctx, lhs, int(a), 'in')
    w.set_role(ctx, rhs, int(b), 'in')
  position = 0
  for a, b in zip(lhs_batch, rhs_batch, strict=False):
    w.join(ctx, lhs, int(a), ctx, out, position, here)
    w.join(ctx, rhs, int(b), ctx, out, position, here)
    position += 1
  for operand, contract, batch in ((lhs, lhs_contract, lhs_batch), (rhs, rhs_contract, rhs_batch)):
    used = {int(a) for a in (*contract, *batch)}
    for axis in range(len(_shape(operand))):
      if axis not in used:
        w.join(ctx, operand, axis, ctx, out, position, here)
        w.set_role(ctx, operand, axis, 'out')
        position += 1


@_register('conv_general_dilated')
def _conv(w: Walker, eqn, ctx, names, site) -> None:
  lhs, rhs = eqn.invars
  out = eqn.outvars[0]
  here = where(eqn, names)
  lhs_spec, rhs_spec, out_spec = eqn.params['dimension_numbers']
  if eqn.params['batch_group_count'] != 1:
    raise UnsupportedPrimitiveError(f"'conv_general_dilated' with batch_group_count > 1 {here}")
  w.join(ctx, lhs, lhs_spec[0], ctx, out, out_spec[0], here)
  reason = f'a spatial axis of a convolution {here}'
  for operand, spec in ((lhs, lhs_spec), (rhs, rhs_spec), (out, out_spec)):
    for axis in spec[2:]:
      w.pin(ctx, operand, axis, reason)
  for axis in rhs_spec[2:]:
    w.set_role(ctx, rhs, axis, 'spatial')
  w.set_role(ctx, rhs, rhs_spec[1], 'in')
  w.set_role(ctx, rhs, rhs_spec[0], 'out')
  w.join(ctx, rhs, rhs_spec[0], ctx, out, out_spec[1], here)
  groups = int(eqn.params['feature_group_count'])
  if groups == 1:
    w.join(ctx, lhs, lhs_spec[1], ctx, rhs, rhs_spec[1], here)
    return
  # Grouped: input channel g * per_group + j meets kernel input j of group g's
  # filters, output channels g * out_per_group + m. A group index g couples the
  # inputs and outputs of group g; j and m are pruned across all groups at once.
  group = w.classes.new(groups)
  per_group = w.node(ctx, rhs, rhs_spec[1])
  w.classes.compose(w.node(ctx, lhs, lhs_spec[1]), PRODUCT, [group, per_group], here)
  out_per_group = w.classes.new(_shape(rhs)[rhs_spec[0]] // groups)
  w.classes.compose(w.node(ctx, rhs, rhs_spec[0]), PRODUCT, [group, out_per_group], here)


@_register(*WINDOWED)
def _pooling(w: Walker, eqn, ctx, names, site) -> None:
  count = len(eqn.outvars)
  p = eqn.params
  here = where(eqn, names)
  for operand, out in zip(eqn.invars[:count], eqn.outvars, strict=False):
    for axis in range(len(_shape(operand))):
      plain = (
        p['window_dimensions'][axis] == 1
        and p['window_strides'][axis] == 1
        and tuple(p['padding'][axis]) == (0, 0)
        and p['base_dilation'][axis] == 1
        and p['window_dilation'][axis] == 1
      )
      if plain:
        w.join(ctx, operand, axis, ctx, out, axis, here)
      else:
        reason = f'a window axis of {eqn.primitive.name} {here}'
        w.pin(ctx, operand, axis, reason)
        w.pin(ctx, out, axis, reason)


@_register('concatenate')
def _concatenate(w: Walker, eqn, ctx, names, site) -> None:
  along = int(eqn.params['dimension'])
  out = eqn.outvars[0]
  here = where(eqn, names)
  for operand in eqn.invars:
    for axis in range(len(_shape(out))):
      if axis != along:
        w.join(ctx, operand, axis, ctx, out, axis, here)
  parts = [w.node(ctx, operand, along) for operand in eqn.invars]
  w.classes.compose(w.node(ctx, out, along), CONCAT, parts, here)


@_register('split')
def _split(w: Walker, eqn, ctx, names, site) -> None:
  along = int(eqn.params['axis'])
  operand = eqn.invars[0]
  here = where(eqn, names)
  for out in eqn.outvars:
    for axis in range(len(_shape(operand))):
      if axis != along:
        w.join(ctx, operand, axis, ctx, out, axis, here)
  parts = [w.node(ctx, out, along) for out in eqn.outvars]
  w.classes.compose(w.node(ctx, operand, along), CONCAT, parts, here)


@_register('pad')
def _pad(w: Walker, eqn, ctx, names, site) -> None:
  operand, out = eqn.invars[0], eqn.outvars[0]
  here = where(eqn, names)
  for axis, (low, high, interior) in enumerate(eqn.params['padding_config']):
    if (low, high, interior) == (0, 0, 0):
      w.join(ctx, operand, axis, ctx, out, axis, here)
    elif interior == 0 and low >= 0 and high >= 0:
      # Zero padding (an option-A shortcut's new channels): the padded units are
      # their own classes, the operand's units sit at an offset.
      parts = [w.classes.new(low), w.node(ctx, operand, axis), w.classes.new(high)]
      w.classes.compose(w.node(ctx, out, axis), CONCAT, parts, here)
    else:
      reason = f'padded with interior or negative padding {here}'
      w.pin(ctx, operand, axis, reason)
      w.pin(ctx, out, axis, reason)


@_register('slice')
def _slice(w: Walker, eqn, ctx, names, site) -> None:
  operand, out = eqn.invars[0], eqn.outvars[0]
  here = where(eqn, names)
  strides = eqn.params['strides'] or (1,) * len(_shape(operand))
  for axis, (start, limit, stride) in enumerate(
    zip(eqn.params['start_indices'], eqn.params['limit_indices'], strides, strict=False)
  ):
    size = _shape(operand)[axis]
    if stride == 1 and (start, limit) == (0, size):
      w.join(ctx, operand, axis, ctx, out, axis, here)
    elif stride == 1:
      # A contiguous window: the units cut off are classes of their own.
      parts = [w.classes.new(start), w.node(ctx, out, axis), w.classes.new(size - limit)]
      w.classes.compose(w.node(ctx, operand, axis), CONCAT, parts, here)
    else:
      reason = f'sliced with stride {stride} {here}'
      w.pin(ctx, operand, axis, reason)
      w.pin(ctx, out, axis, reason)


@_register('dynamic_slice')
def _dynamic_slice(w: Walker, eqn, ctx, names, site) -> None:
  operand, out = eqn.invars[0], eqn.outvars[0]
  for axis, (n, m) in enumerate(zip(_shape(operand), _shape(out), strict=False)):
    if n == m:
      w.join(ctx, operand, axis, ctx, out, axis, where(eqn, names))
    else:
      reason = f'sliced at a position known only at run time {where(eqn, names)}'
      w.pin(ctx, operand, axis, reason)
      w.pin(ctx, out, axis, reason)


@_register('dynamic_update_slice')
def _dynamic_update_slice(w: Walker, eqn, ctx, names, site) -> None:
  operand, update = eqn.invars[:2]
  out = eqn.outvars[0]
  for axis, (n, m) in enumerate(zip(_shape(operand), _shape(update), strict=False)):
    w.join(ctx, operand, axis, ctx, out, axis, where(eqn, names))
    if n == m:
      w.join(ctx, update, axis, ctx, out, axis, where(eqn, names))
    else:
      reason = f'updated at a position known only at run time {where(eqn, names)}'
      w.pin(ctx, update, axis, reason)
      w.pin(ctx, out, axis, reason)


@_register('iota')
def _iota(w: Walker, eqn, ctx, names, site) -> None:
  reason = f'its values are positions along it (iota) {where(eqn, names)}'
  w.pin(ctx, eqn.outvars[0], int(eqn.params['dimension']), reason)


@_register('gather')
def _gather(w: Walker, eqn, ctx, names, site) -> None:
  # The pattern of an embedding lookup (``jnp.take(table, ids, axis=0)``):
  # the indexed axes are pinned, whole slices of the others ride along.
  operand, indices = eqn.invars[:2]
  out = eqn.outvars[0]
  here = where(eqn, names)
  numbers = eqn.params['dimension_numbers']
  sizes = eqn.params['slice_sizes']
  if getattr(numbers, 'operand_batching_dims', ()):
    raise UnsupportedPrimitiveError(f"'gather' with batching dimensions {here}")
  offset_dims = list(numbers.offset_dims)
  sliced = [a for a in range(len(_shape(operand))) if a not in numbers.collapsed_slice_dims]
  reason = f'indexed by a gather {here}'
  for axis in range(len(_shape(operand))):
    if axis in numbers.collapsed_slice_dims or axis in numbers.start_index_map:
      w.pin(ctx, operand, axis, reason)
  for axis, out_axis in zip(sliced, offset_dims, strict=False):
    if sizes[axis] == _shape(operand)[axis] and axis not in numbers.start_index_map:
      w.join(ctx, operand, axis, ctx, out, out_axis, here)
    else:
      w.pin(ctx, out, out_axis, reason)
  batch_out = [a for a in range(len(_shape(out))) if a not in offset_dims]
  for index_axis, out_axis in zip(range(len(_shape(indices)) - 1), batch_out, strict=False):
    w.join(ctx, indices, index_axis, ctx, out, out_axis, here)


@_register(*CALLS)
def _call(w: Walker, eqn, ctx, names, site) -> None:
  jaxpr = eqn.params.get('jaxpr', eqn.params.get('call_jaxpr'))
  if jaxpr is None:
    raise UnsupportedPrimitiveError(f'{eqn.primitive.name!r} without a jaxpr {where(eqn, names)}')
  label = f'{eqn.primitive.name}({eqn.params.get("name", "")})'
  w.call(eqn, ctx, names, site, jaxpr, label)


def _label(eqn) -> str:
  return f'{eqn.primitive.name} at {location(eqn)}' if location(eqn) else eqn.primitive.name


@_register('scan')
def _scan(w: Walker, eqn, ctx, names, site) -> None:
  # One walk of the body stands for every iteration: stacked layers (nnx.scan)
  # share one width, and the carry that goes round must keep its own.
  closed = eqn.params['jaxpr']
  body = closed.jaxpr
  consts, carried = eqn.params['num_consts'], eqn.params['num_carry']
  label = _label(eqn)
  here = where(eqn, names)
  w.pin_constants(site, closed, label)
  for var, atom in zip(
    body.invars[: consts + carried], eqn.invars[: consts + carried], strict=True
  ):
    w.alias(site, var, ctx, atom)
  reason = f'the axis a scan runs over {here}'
  for var, atom in zip(
    body.invars[consts + carried :], eqn.invars[consts + carried :], strict=True
  ):
    w.pin(ctx, atom, 0, reason)
    for axis in range(len(_shape(var))):
      w.join(site, var, axis, ctx, atom, axis + 1, here)
  w.walk(body, site, (*names, label))
  for var, atom in zip(
    body.invars[consts + carried :], eqn.invars[consts + carried :], strict=True
  ):
    for axis in range(len(_shape(var))):
      if role := w.role(site, var, axis):
        w.set_role(ctx, atom, axis + 1, role)
  carry_in = body.invars[consts : consts + carried]
  for out, var, outer in zip(body.outvars[:carried], carry_in, eqn.outvars[:carried], strict=True):
    w.join_all(site, out, site, var, here)
    w.alias(ctx, outer, site, var)
  for out, outer in zip(body.outvars[carried:], eqn.outvars[carried:], strict=True):
    w.pin(ctx, outer, 0, reason)
    for axis in range(len(_shape(out))):
      w.join(site, out, axis, ctx, outer, axis + 1, here)


@_register('cond')
def _cond(w: Walker, eqn, ctx, names, site) -> None:
  # Either branch may run: each is walked at its own site, and what they
  # return must agree.
  here = where(eqn, names)
  for number, closed in enumerate(eqn.params['branches']):
    branch = (*site, number)
    label = f'{_label(eqn)} (branch {number})'
    w.pin_constants(branch, closed, label)
    for var, atom in zip(closed.jaxpr.invars, eqn.invars[1:], strict=True):
      w.alias(branch, var, ctx, atom)
    w.walk(closed.jaxpr, branch, (*names, label))
    for out, outer in zip(closed.jaxpr.outvars, eqn.outvars, strict=True):
      if number == 0:
        w.alias(ctx, outer, branch, out)
      else:
        w.join_all(ctx, outer, branch, out, here)


@_register('while')
def _while(w: Walker, eqn, ctx, names, site) -> None:
  p = eqn.params
  here = where(eqn, names)
  cond_consts, body_consts = p['cond_nconsts'], p['body_nconsts']
  init = eqn.invars[cond_consts + body_consts :]
  body, test = p['body_jaxpr'], p['cond_jaxpr']
  label = _label(eqn)
  w.pin_constants((*site, 0), body, label)
  consts = eqn.invars[cond_consts : cond_consts + body_consts]
  for var, atom in zip(body.jaxpr.invars, (*consts, *init), strict=True):
    w.alias((*site, 0), var, ctx, atom)
  w.walk(body.jaxpr, (*site, 0), (*names, label))
  carry_in = body.jaxpr.invars[body_consts:]
  for out, var, outer in zip(body.jaxpr.outvars, carry_in, eqn.outvars, strict=True):
    w.join_all((*site, 0), out, (*site, 0), var, here)
    w.alias(ctx, outer, (*site, 0), var)
  w.pin_constants((*site, 1), test, label)
  for var, atom in zip(test.jaxpr.invars, (*eqn.invars[:cond_consts], *init), strict=True):
    w.alias((*site, 1), var, ctx, atom)
  w.walk(test.jaxpr, (*site, 1), (*names, f'{label} (condition)'))
