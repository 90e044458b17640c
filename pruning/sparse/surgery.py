"""Dead-neuron removal: turn a pruned model into a smaller dense one (Han et al. 2015, §3.5).

After pruning, some neurons (FC units, CONV filters) have no remaining
connection in or out. :func:`remove_dead_neurons` deletes them physically,
with their rows and columns of the neighbouring weights, and returns a
smaller dense nnx model whose outputs equal the masked model's up to float
rounding:

* a unit with **no outgoing** connection contributes nothing: it is removed
  outright;
* a unit with **no incoming** connection still outputs a constant: its bias
  through whatever follows it (a BatchNorm in evaluation mode, ``(b - mean)
  / sqrt(var + eps) * scale + bias``, an activation, pooling). That constant
  times the next layer's weights is folded exactly into the next layer's
  bias, then the unit is removed. Into a following CONV layer the constant
  folds only where that is exact: when every kept weight of the unit's slice
  of the next kernel lies inside the input at every output position. Zero
  ("SAME") padding puts the border taps outside, so before a padded 3x3
  convolution (VGG's) the unit folds only if its kept weights there are all
  centre taps; otherwise it is kept and reported as ``constant``. A
  constant of exactly zero (a ReLU of a negative value) is simply dropped.

A removed unit takes its BatchNorm channel with it (``scale``, ``bias`` and
the running ``mean`` and ``var``).

Some units cannot go at all without changing the outputs: those of a grouped
convolution or of a layer feeding one, whose groups must stay equal, and
those followed by code that mixes channels (AlexNet's local response
normalisation). Such layers are kept whole and say why
(:meth:`~pruning.sparse.layer_chain.LayerChain.fixed_units`); AlexNet
loses units in ``fc1`` and ``fc2`` only.

Removing a unit can leave others without inputs or outputs, so the passes
repeat until nothing changes. A removed CONV filter takes with it its slice
of the next FC layer's inputs in channels-last flatten order (input
``p * channels + c`` belongs to filter ``c``). How the layers connect is
found by :class:`~pruning.sparse.layer_chain.LayerChain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pruning import _tree, masks
from pruning.sparse import resize
from pruning.sparse.layer_chain import LayerChain, get_module

PyTree = Any


class NeuronCounts(NamedTuple):
  """What happened to the units (neurons or filters) of one layer.

  Attributes:
    units: units before removal.
    no_outputs: removed because no outgoing connection remained.
    no_inputs: removed because no incoming connection remained; their
      constant output was folded into the next layer's bias.
    constant: units without incoming connections that were kept, because
      their constant output cannot be folded exactly (the next convolution's
      zero padding meets their kept weights, the next layer has no bias, or
      the layer is fixed).
    fixed: why no unit of this layer can be removed (a grouped convolution,
      channel-mixing code after it: :meth:`LayerChain.fixed_units`); empty
      if units can be.
  """

  units: int
  no_outputs: int = 0
  no_inputs: int = 0
  constant: int = 0
  fixed: str = ''

  @property
  def removed(self) -> int:
    return self.no_outputs + self.no_inputs

  @property
  def kept(self) -> int:
    return self.units - self.removed


class Surgery(NamedTuple):
  """What :func:`remove_dead_neurons` returns.

  Attributes:
    model: the smaller dense model (a new object; the input is untouched).
    mask: its mask, mirroring ``nnx.state(model, nnx.Param)``.
    neurons: layer path -> :class:`NeuronCounts`, in forward order.
    max_abs_difference: the largest absolute difference between the outputs
      of the masked and the smaller model on the check inputs (``None``
      without a check).
  """

  model: nnx.Module
  mask: PyTree
  neurons: dict[str, NeuronCounts]
  max_abs_difference: float | None

  def to_markdown(self) -> str:
    """Per-layer table of units before and after, by reason of removal."""
    lines = [
      '| layer | units | removed: no outputs | removed: no inputs (folded) | kept constant '
      '| units kept | kept whole because |',
      '|---|---:|---:|---:|---:|---:|---|',
    ]
    for name, n in self.neurons.items():
      lines.append(
        f'| {name} | {n.units:,} | {n.no_outputs:,} | {n.no_inputs:,} | {n.constant:,} '
        f'| {n.kept:,} | {n.fixed} |'
      )
    return '\n'.join(lines)


class _Layer:
  """Mutable working copy of one layer's weights during removal."""

  def __init__(self, module: Any, keep: np.ndarray, norms: dict):
    self.kernel = np.where(keep, np.asarray(module.kernel[...]), 0)
    self.keep = keep
    self.bias = None if module.bias is None else np.asarray(module.bias[...])
    self.units = np.arange(self.kernel.shape[-1])  # original index of each surviving unit
    self.norms = norms  # BatchNorm keys -> {variable name: array over units}

  def has_inputs(self) -> np.ndarray:
    return self.keep.reshape(-1, self.keep.shape[-1]).any(axis=0)

  def drop_units(self, drop: np.ndarray) -> None:
    self.kernel = np.delete(self.kernel, drop, axis=-1)
    self.keep = np.delete(self.keep, drop, axis=-1)
    self.units = np.delete(self.units, drop)
    if self.bias is not None:
      self.bias = np.delete(self.bias, drop)
    for variables in self.norms.values():
      for name, value in variables.items():
        variables[name] = np.delete(value, drop, axis=-1)

  def grouped(self, array: np.ndarray, positions: int, channels: int) -> np.ndarray:
    """This (following) layer's kernel with inputs split as ``(..., positions, channels, out)``."""
    if array.ndim == 2:
      return array.reshape(positions, channels, array.shape[-1])
    return array

  def has_outputs_from(self, positions: int, channels: int) -> np.ndarray:
    keep = self.grouped(self.keep, positions, channels)
    axes = tuple(a for a in range(keep.ndim) if a != keep.ndim - 2)
    return keep.any(axis=axes)

  def drop_inputs(self, drop: np.ndarray, positions: int, channels: int) -> None:
    kernel = np.delete(self.grouped(self.kernel, positions, channels), drop, axis=-2)
    keep = np.delete(self.grouped(self.keep, positions, channels), drop, axis=-2)
    if self.kernel.ndim == 2:
      kernel, keep = kernel.reshape(-1, kernel.shape[-1]), keep.reshape(-1, keep.shape[-1])
    self.kernel, self.keep = kernel, keep


def _sees_constants_uniformly(conv: nnx.Conv) -> bool:
  """Whether a constant input channel contributes the same at every output position.

  True unless zero padding (or input dilation) puts zeros under part of the
  kernel at some positions.
  """
  if any(d != 1 for d in np.atleast_1d(conv.input_dilation or 1)):
    return False
  padding = conv.padding
  if isinstance(padding, str):
    if padding in ('VALID', 'CIRCULAR', 'REFLECT'):
      return True
    return padding == 'SAME' and all(k == 1 for k in conv.kernel_size)
  if isinstance(padding, int):
    return padding == 0
  return all(np.all(np.asarray(pad) == 0) for pad in padding)


def _sees_constant_exactly(conv: nnx.Conv, keep: np.ndarray, spatial_shape: Sequence[int]) -> bool:
  """Whether a constant input channel adds the same amount at every output position of ``conv``.

  It does when every kept tap of the channel's kernel slice lies inside the
  input at every output position: then a constant ``c`` adds ``c`` times the
  sum of the kept weights everywhere, which folds into the bias exactly.
  Found with the layer's own convolution (padding, strides, dilations): an
  all-ones channel convolved with the kept taps as weights counts, at each
  output position, the taps that fall inside; those counts must all be the
  filter's full count. Small integers, so the comparison is exact.

  Args:
    conv: the next layer.
    keep: kept connections of the channel's kernel slice, ``(*kernel_size, out)``.
    spatial_shape: the input's spatial shape, ``(H, W)``.
  """
  if _sees_constants_uniformly(conv):
    return True
  probe = nnx.merge(*nnx.split(conv))
  taps = keep.astype(np.float32)[..., None, :]
  values = {'kernel': taps}
  if probe.bias is not None:
    values['bias'] = np.zeros(taps.shape[-1], np.float32)
  resize.resize_layer(probe, values, 'probe')
  counts = np.asarray(probe(jnp.ones((1, *spatial_shape, 1), jnp.float32)), np.float32)
  full = keep.reshape(-1, keep.shape[-1]).sum(axis=0)
  return bool(np.all(counts == full))


def _kernel_masks(model: nnx.Module, chain: LayerChain, mask: PyTree | None) -> dict[str, Any]:
  """Layer path -> kept connections of its kernel (``None`` where nothing is pruned)."""
  if mask is None:
    return {
      layer.path: np.asarray(get_module(model, layer.keys).kernel[...]) != 0
      for layer in chain.layers
    }
  params = nnx.state(model, nnx.Param)
  leaves = masks.check_mask(mask, params)
  named = {name: leaf for (name, _), leaf in zip(_tree.named_leaves(params), leaves, strict=True)}
  return {
    layer.path: None if named.get(f'{layer.path}/kernel') is None
    else np.asarray(_tree.unbox(named[f'{layer.path}/kernel']))
    for layer in chain.layers
  }  # fmt: skip


def remove_dead_neurons(
  model: nnx.Module,
  mask: PyTree | None = None,
  *,
  input_shape: Sequence[int],
  check: bool = True,
  check_inputs: np.ndarray | None = None,
  tolerance: float = 1e-4,
) -> Surgery:
  """Removes units with no remaining inputs or outputs, folding constants exactly.

  Args:
    model: a sequential nnx model (see :mod:`pruning.sparse.layer_chain`).
    mask: its mask (``nnx.state(model, nnx.Param)``-shaped, as
      :func:`~pruning.get_mask` returns it). Without one, a connection counts
      as kept when its weight is nonzero.
    input_shape: shape of one input example, without the batch axis.
    check: compare the outputs of the masked model and the result on
      ``check_inputs`` and raise if they differ beyond ``tolerance``.
    check_inputs: a batch of inputs for the check (default: 4 standard
      normal examples).
    tolerance: allowed ``max |difference|``, relative to
      ``max(1, max |output|)``.

  Returns:
    The smaller model, its mask and the per-layer counts.

  Raises:
    ValueError: the model is not a supported sequential model, the mask does
      not match it, or the check fails.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from models import LeNet300100
    >>> import pruning
    >>> model = LeNet300100(nnx.Rngs(0))
    >>> mask = pruning.prunable_mask(nnx.state(model, nnx.Param))
    >>> mask['fc2']['kernel'] = mask['fc2']['kernel'].at[:, :40].set(False)  # 40 fc2 units lose inputs
    >>> result = remove_dead_neurons(model, mask, input_shape=(28, 28, 1))
    >>> result.neurons['fc2']
    NeuronCounts(units=100, no_outputs=0, no_inputs=40, constant=0, fixed='')
    >>> result.model.fc3.kernel.shape
    (60, 10)

  References:
    Han et al. 2015, §3.5 (dead neurons).
  """
  chain = LayerChain(model, input_shape)
  kernel_masks = _kernel_masks(model, chain, mask)
  layers = []
  for layer in chain.layers:
    module = get_module(model, layer.keys)
    keep = kernel_masks[layer.path]
    keep = np.ones(module.kernel.shape, bool) if keep is None else keep.astype(bool)
    norms = {keys: resize.norm_variables(get_module(model, keys)) for keys in layer.norms}
    layers.append(_Layer(module, keep, norms))
  fixed = [chain.fixed_units(index) for index in range(len(layers) - 1)]
  counts = {
    layer.path: NeuronCounts(layer.units, fixed=why or '')
    for layer, why in zip(chain.layers, [*fixed, None], strict=True)
  }

  changed = True
  while changed:
    changed = False
    for index in range(len(layers) - 1):
      if not fixed[index]:
        changed |= _remove_at(index, chain, layers, counts, model)

  for layer, work in zip(chain.layers, layers, strict=True):
    counts[layer.path] = counts[layer.path]._replace(constant=int((~work.has_inputs()).sum()))
  smaller = _rebuild(model, chain, layers)
  new_mask = _new_mask(smaller, chain, layers, mask)
  difference = None
  if check:
    difference = _check_outputs(model, mask, smaller, chain, check_inputs, tolerance)
  return Surgery(smaller, new_mask, counts, difference)


def _remove_at(index, chain, layers, counts, model) -> bool:
  """One pass over the units of layer ``index``; True if any was removed."""
  work, following = layers[index], layers[index + 1]
  positions, name = chain.positions(index), chain.layers[index].path
  no_outputs = np.flatnonzero(~following.has_outputs_from(positions, work.units.size))
  if no_outputs.size:
    following.drop_inputs(no_outputs, positions, work.units.size)
    work.drop_units(no_outputs)
    counts[name] = counts[name]._replace(no_outputs=counts[name].no_outputs + no_outputs.size)
  no_inputs = np.flatnonzero(~work.has_inputs())
  if no_inputs.size == 0:
    return bool(no_outputs.size)
  # Each input-less unit outputs its bias everywhere; see what reaches the next layer.
  layer_spec = chain.layers[index]
  output = np.zeros((1, *layer_spec.out_shape), np.float32)
  if work.bias is not None:
    output[..., work.units] = work.bias
  next_input = chain.next_input(index, output)[0]
  next_module = get_module(model, chain.layers[index + 1].keys)
  dense = following.kernel.ndim == 2
  grouped = following.grouped(following.kernel, positions, work.units.size)
  folded = np.zeros(following.kernel.shape[-1], np.float64)
  drop = []
  for unit in no_inputs:
    if dense:
      seen = next_input.reshape(positions, layer_spec.units)[:, work.units[unit]]
    else:
      seen = next_input[..., work.units[unit]]
    if not seen.any():
      drop.append(unit)
      continue
    exact = dense or (
      np.all(seen == seen.flat[0])
      and _sees_constant_exactly(next_module, following.keep[..., unit, :], seen.shape)
    )
    if following.bias is None or not exact:
      continue  # kept: counted as constant
    weights = grouped[..., unit, :].astype(np.float64)
    if dense:
      folded += seen.astype(np.float64) @ weights
    else:
      folded += float(seen.flat[0]) * weights.reshape(-1, weights.shape[-1]).sum(axis=0)
    drop.append(unit)
  if not drop:
    return bool(no_outputs.size)
  if following.bias is not None:
    following.bias = (following.bias.astype(np.float64) + folded).astype(following.bias.dtype)
  drop = np.asarray(drop)
  following.drop_inputs(drop, positions, work.units.size)
  work.drop_units(drop)
  counts[name] = counts[name]._replace(no_inputs=counts[name].no_inputs + drop.size)
  return True


def _rebuild(model, chain, layers) -> nnx.Module:
  """A copy of ``model`` with every layer's (and BatchNorm's) variables resized."""
  smaller = nnx.merge(*nnx.split(model))
  for layer, work in zip(chain.layers, layers, strict=True):
    values = {'kernel': work.kernel}
    if work.bias is not None:
      values['bias'] = work.bias
    resize.resize_layer(get_module(smaller, layer.keys), values, layer.path)
    for keys, variables in work.norms.items():
      resize.resize_layer(get_module(smaller, keys), variables, layer.path)
  return smaller


def _new_mask(smaller, chain, layers, mask) -> PyTree:
  """The smaller model's mask, with ``None`` wherever the original mask had it."""
  params = nnx.state(smaller, nnx.Param)
  original = None if mask is None else dict(_tree.named_leaves(mask))
  kernels = {
    f'{layer.path}/kernel': work.keep for layer, work in zip(chain.layers, layers, strict=True)
  }

  def leaf(name: str, value: Any) -> Any:
    if name not in kernels or (original is not None and original.get(name) is None):
      return None
    return jnp.asarray(kernels[name])

  return _tree.map_named(leaf, params)


def _compiled_forward(model: nnx.Module):
  """``model``'s forward pass in evaluation mode, compiled.

  One compile of the whole model costs less than running it eagerly, which
  compiles each operation of a new shape on its own (over 200 for a VGG).
  """
  model.eval()
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
  return lambda x: forward(state, x)


def _check_outputs(model, mask, smaller, chain, inputs, tolerance) -> float:
  """Max |masked model - smaller model| on ``inputs``; raises beyond the tolerance."""
  if inputs is None:
    inputs = np.random.default_rng(0).standard_normal((4, *chain.input_shape)).astype(np.float32)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if mask is not None:
    params = masks.apply_mask(params, mask)
  reference = nnx.merge(graphdef, params, rest)
  candidate = nnx.merge(*nnx.split(smaller))
  expected, got = (
    np.asarray(_compiled_forward(m)(jnp.asarray(inputs))) for m in (reference, candidate)
  )
  difference = float(np.max(np.abs(expected - got))) if expected.size else 0.0
  scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 0.0)
  if not difference <= tolerance * scale:
    raise ValueError(
      f'the model after dead-neuron removal differs from the masked model by up to '
      f'{difference:.3g} (tolerance {tolerance * scale:.3g}); is the model sequential, with '
      'channel-wise code between its layers and a channels-last flatten? (see pruning.sparse.layer_chain)'
    )
  return difference
