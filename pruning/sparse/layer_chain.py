"""How the layers of a sequential nnx model feed each other, found by tracing it.

Removing a neuron needs to know which layer consumes its output and through
what: an activation, max-pooling, a flatten, a BatchNorm. :class:`LayerChain`
finds out from the model itself instead of a hand-written description: it
traces one abstract forward pass recording the order and shapes in which the
``nnx.Linear``, ``nnx.Conv`` and ``nnx.BatchNorm`` layers run, and it can
evaluate the model's own code *between* two consecutive layers on any value
(:meth:`LayerChain.next_input`), by running the model with the layers
replaced by stubs. So LeNet-300-100, Caffe's LeNet-5 (no ReLU after its
convolutions) and VGG-style stacks are handled by the same code.

Supported models: every Linear/Conv layer runs once per forward pass; each
one's input is computed from the previous layer's output alone and, at a
CONV -> FC boundary, by a channels-last flatten (``x.reshape(batch, -1)`` of
NHWC maps, so input ``p * channels + c`` of the FC layer comes from channel
``c``). Code that works channel by channel (activations, pooling, dropout,
BatchNorm in evaluation mode) lets units be removed; where a layer's units
cannot be removed without changing the outputs, :meth:`LayerChain.fixed_units`
says why: the layer or the next one is a grouped convolution (AlexNet's
two-GPU split, whose groups must stay equal), or the code between them mixes
channels (AlexNet's local response normalisation, found by probing it). The
chain checks the structure it can see (parameters outside the supported
layers, shared layers, masked convolutions, mismatched widths);
:func:`pruning.remove_dead_neurons` also compares outputs before and after,
which catches a model that breaks the rest (a skip connection, a channel
permutation between layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_LAYERS = (nnx.Linear, nnx.Conv)
_NORMS = (nnx.BatchNorm,)


class ChainLayer(NamedTuple):
  """One Linear/Conv layer of a sequential model.

  Attributes:
    path: the layer's path in the model, ``'fc1'`` or ``'features/0'``.
    keys: the same path as attribute names and list indices.
    kind: ``'dense'`` or ``'conv'``.
    in_shape: shape of one example's input (no batch axis).
    out_shape: shape of one example's output; channels last.
    norms: keys of the BatchNorm layers applied to this layer's output before
      the next layer.
    groups: the convolution's feature groups (1 for a dense layer).
  """

  path: str
  keys: tuple[Any, ...]
  kind: Literal['dense', 'conv']
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  norms: tuple[tuple[Any, ...], ...]
  groups: int = 1

  @property
  def units(self) -> int:
    """Output units (FC neurons or CONV filters)."""
    return self.out_shape[-1]


def path_string(keys: Sequence[Any]) -> str:
  return '/'.join(str(key) for key in keys)


def get_module(root: nnx.Module, keys: Sequence[Any]) -> Any:
  """The submodule of ``root`` at ``keys`` (attribute names and list indices)."""
  node = root
  for key in keys:
    node = node[key] if isinstance(key, int) else getattr(node, key)
  return node


def set_module(root: nnx.Module, keys: Sequence[Any], value: Any) -> None:
  """Replaces the submodule of ``root`` at ``keys`` by ``value``."""
  parent = get_module(root, keys[:-1])
  if isinstance(keys[-1], int):
    parent[keys[-1]] = value
  else:
    setattr(parent, keys[-1], value)


class _Recorder:
  """Calls a layer and records its path and shapes in call order."""

  def __init__(self, keys, layer, calls):
    self.keys, self.layer, self.calls = keys, layer, calls

  def __call__(self, x, *args, **kwargs):
    y = self.layer(x, *args, **kwargs)
    self.calls.append((self.keys, x.shape[1:], y.shape[1:]))
    return y


class _Stub:
  """Stands in for a layer: returns a fixed output, or captures its input and stops."""

  def __init__(self, output=None, capture=None):
    self.output, self.capture = output, capture

  def __call__(self, x, *args, **kwargs):
    if self.capture is not None:
      self.capture.append(x)
      raise _Captured
    return self.output


class _Captured(Exception):
  """Ends a stubbed forward pass once the wanted input has been captured."""


def _key(entry: Any) -> Any:
  """A pytree path entry as the plain key ``nnx.iter_modules`` uses."""
  for attribute in ('key', 'idx', 'name'):
    if hasattr(entry, attribute):
      return getattr(entry, attribute)
  return entry


def _check_variables(model: nnx.Module) -> None:
  """Every parameter and batch statistic must belong to a layer the chain knows."""
  owners = {
    keys for keys, module in nnx.iter_modules(model) if isinstance(module, _LAYERS + _NORMS)
  }
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
  stray = []
  for path, _ in jax.tree_util.tree_flatten_with_path(
    state, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )[0]:
    keys = tuple(_key(k) for k in path)
    if not any(keys[: len(owner)] == owner for owner in owners):
      stray.append(path_string(keys))
  if stray:
    raise ValueError(
      f'variables outside Linear/Conv/BatchNorm layers: {stray}; only sequential models of '
      'those layers (with parameter-free code between them) are supported'
    )


class LayerChain:
  """The Linear/Conv layers of a sequential nnx model, in the order they run.

  Args:
    model: the model. It is not modified; a snapshot of its state is kept for
      :meth:`next_input`.
    input_shape: shape of one input example, without the batch axis.

  Raises:
    ValueError: if the model is not a supported sequential model (see the
      module docstring), naming the offending layer or variable.

  Examples:
    >>> from flax import nnx
    >>> from models import LeNet5
    >>> chain = LayerChain(LeNet5(nnx.Rngs(0)), (28, 28, 1))
    >>> [(layer.path, layer.kind, layer.out_shape) for layer in chain.layers]
    [('conv1', 'conv', (24, 24, 20)), ('conv2', 'conv', (8, 8, 50)), ('fc1', 'dense', (500,)), ('fc2', 'dense', (10,))]
    >>> chain.positions(1)   # fc1 sees each conv2 filter at 4 x 4 pooled positions
    16
  """

  def __init__(self, model: nnx.Module, input_shape: Sequence[int]):
    _check_variables(model)
    self.input_shape = tuple(int(n) for n in input_shape)
    self._graphdef, self._state = nnx.split(model)
    calls: list[tuple[tuple[Any, ...], tuple[int, ...], tuple[int, ...]]] = []

    def forward(state, x):
      traced = self._merged(state)
      for keys, module in list(nnx.iter_modules(traced)):
        if isinstance(module, _LAYERS + _NORMS):
          set_module(traced, keys, _Recorder(keys, module, calls))
      return traced(x)

    jax.eval_shape(forward, self._state, jax.ShapeDtypeStruct((1, *self.input_shape), jnp.float32))
    modules = dict(nnx.iter_modules(model))
    counts: dict[tuple[Any, ...], int] = {}
    for keys, _, _ in calls:
      counts[keys] = counts.get(keys, 0) + 1
    shared = [path_string(keys) for keys, n in counts.items() if n > 1]
    if shared:
      raise ValueError(f'layers {shared} run more than once per forward pass; not supported')
    self.layers: list[ChainLayer] = []
    pending_norms: list[tuple[Any, ...]] = []
    for keys, in_shape, out_shape in calls:
      module = modules[keys]
      if isinstance(module, _NORMS):
        if self.layers:
          pending_norms.append(keys)
        continue
      if self.layers:
        self.layers[-1] = self.layers[-1]._replace(norms=tuple(pending_norms))
      pending_norms = []
      self.layers.append(self._layer(keys, module, tuple(in_shape), tuple(out_shape)))
    if not self.layers:
      raise ValueError('the model runs no Linear or Conv layer')
    for index in range(len(self.layers) - 1):
      self._check_link(index, modules)

  def _merged(self, state: Any) -> nnx.Module:
    """A private copy of the model in evaluation mode (dropout off, BatchNorm averages)."""
    model = nnx.merge(self._graphdef, state)
    model.eval()
    return model

  @staticmethod
  def _layer(keys, module, in_shape, out_shape) -> ChainLayer:
    path = path_string(keys)
    if isinstance(module, nnx.Linear):
      if len(in_shape) != 1:
        raise ValueError(f'Linear layer {path!r} takes inputs of shape {in_shape}; expected 1-D')
      return ChainLayer(path, keys, 'dense', in_shape, out_shape, ())
    if module.mask is not None:
      raise ValueError(f'Conv layer {path!r} is masked; not supported')
    return ChainLayer(path, keys, 'conv', in_shape, out_shape, (), module.feature_group_count)

  def _check_link(self, index: int, modules: dict) -> None:
    layer, following = self.layers[index], self.layers[index + 1]
    for keys in layer.norms:
      if modules[keys].num_features != layer.units:
        raise ValueError(
          f'BatchNorm {path_string(keys)!r} after {layer.path!r} normalises '
          f'{modules[keys].num_features} features; {layer.path!r} has {layer.units} units'
        )
    features = following.in_shape[-1]
    if following.kind == 'conv' and features != layer.units:
      raise ValueError(
        f'{following.path!r} takes {features} channels but {layer.path!r} gives {layer.units}'
      )
    if following.kind == 'dense' and (
      features % layer.units or (layer.kind == 'dense' and features != layer.units)
    ):
      raise ValueError(
        f'{following.path!r} takes {features} inputs, which do not split into the '
        f'{layer.units} units of {layer.path!r}'
      )

  def positions(self, index: int) -> int:
    """Inputs of layer ``index + 1`` per unit of layer ``index`` (1, or H x W after a flatten).

    For a following Conv layer, each unit is one input channel (1 position).
    """
    following = self.layers[index + 1]
    if following.kind == 'conv':
      return 1
    return following.in_shape[-1] // self.layers[index].units

  def fixed_units(self, index: int) -> str | None:
    """Why the units of layer ``index`` cannot be removed, or ``None`` if they can.

    They cannot when the layer is a grouped convolution or feeds one (its
    groups must stay equal), or when the code between it and the next layer
    mixes channels, so that removing one unit changes what the others pass
    on. The latter is probed: the layer's output is changed in one unit
    only, and the next layer's input must change in that unit's channel
    only (which a flatten that is not channels-last fails too).

    Examples:
      >>> from flax import nnx
      >>> from models import LeNet5
      >>> LayerChain(LeNet5(nnx.Rngs(0)), (28, 28, 1)).fixed_units(1) is None
      True
    """
    layer, following = self.layers[index], self.layers[index + 1]
    if layer.groups > 1:
      return f'a convolution of {layer.groups} groups'
    if following.groups > 1:
      return f'feeds {following.path!r}, a convolution of {following.groups} groups'
    rng = np.random.default_rng(0)
    # Positive values, so that a ReLU passes the change on.
    output = rng.uniform(1.0, 2.0, (1, *layer.out_shape)).astype(np.float32)
    unit = layer.units // 2
    changed = output.copy()
    changed[..., unit] += 1.0
    seen = self.next_input(index, output) != self.next_input(index, changed)
    channels = seen.reshape(-1, self.positions(index), layer.units).any(axis=(0, 1))
    if np.delete(channels, unit).any():
      return (
        f'the code between it and {following.path!r} does not keep each unit in its own channel'
      )
    return None

  def next_input(self, index: int, output: np.ndarray) -> np.ndarray:
    """Runs the model's code between layer ``index`` and the next one.

    Args:
      index: a layer of the chain, not the last.
      output: what layer ``index`` outputs, shape ``(batch, *out_shape)``.

    Returns:
      The input that layer ``index + 1`` receives, ``(batch, *in_shape)``.
    """
    if not 0 <= index < len(self.layers) - 1:
      raise ValueError(f'index {index} has no following layer in a chain of {len(self.layers)}')
    batch = output.shape[0]
    model = self._merged(self._state)
    captured: list[jax.Array] = []
    for position, layer in enumerate(self.layers[: index + 2]):
      if position < index:
        stub = _Stub(output=jnp.zeros((batch, *layer.out_shape), jnp.float32))
      elif position == index:
        stub = _Stub(output=jnp.asarray(output))
      else:
        stub = _Stub(capture=captured)
      set_module(model, layer.keys, stub)
    try:
      model(jnp.zeros((batch, *self.input_shape), jnp.float32))
    except _Captured:
      pass
    if not captured:
      raise ValueError(f'the forward pass never reached {self.layers[index + 1].path!r}')
    return np.asarray(captured[0])
