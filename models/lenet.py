"""LeNet-300-100 and LeNet-5 for MNIST, with per-layer weight and FLOP counts.

These are the two MNIST networks of the paper's §4.1. ``LeNet5`` follows the
Caffe ``lenet_train_test.prototxt`` that the paper used: no nonlinearity after
the convolutions, a ReLU only after ``fc1`` (Caffe's ``ip1``).

Kernels use a variance ``1 / fan_in`` initialiser and biases start at zero,
because He initialisation at learning rate 0.05 was seen to diverge on LeNet-5
while ``1 / fan_in`` did not.

Speed of LeNet-5 on CPU
-----------------------
A jitted LeNet-5 train step (batch 128, masked SGD) took 45 ms on the
project's 2-core CPU, 4.3x torch's 10.7 ms for the same pruned model
(``benchmarks/lenet5_vs_torch.py``, recorded in ``benchmarks/RESULTS.md``).
The time was not where it looked. Reading the compiled step
(``jax.jit(step).lower(...).compile().as_text()``) and timing each operation
on its own in both frameworks (``--part ops``) showed two causes:

1. **Max-pooling's gradient.** ``nnx.max_pool`` is a ``reduce_window``
   whose gradient is a select-and-scatter, which XLA's CPU backend expands
   into window-index iotas, a reduce-window over them and a scatter: 7.8 ms
   for the first pooling layer against 3.5 ms in torch, which stores argmax
   indices in the forward pass. :func:`max_pool` computes the same values and
   the same gradient (first maximum of each window) from a reshaped view and
   a chain of ``jnp.where``, which fuses into one loop: 0.6 ms.
2. **Convolutions on YNNPACK.** jax 0.10's CPU compiler hands convolutions to
   YNNPACK fusions by default. For LeNet-5's shapes they are slower than
   XLA's own (Eigen) convolutions, above all the kernel gradients: conv1
   4.0 ms vs 1.0 ms, conv2 5.5 ms vs 2.5 ms, conv2 forward 4.6 ms vs 2.1 ms.
   ``CPU_COMPILER_OPTIONS`` turns YNNPACK off for a compiled function; the
   pipeline's LeNet-5 configuration passes it to its jitted steps.

Together: 14.3 ms per step, 3.2x faster than before and 1.34x torch (medians
of 200 steps each, interleaved, on the shared 2-core VM). What remains is
Eigen's conv2 input gradient (5.1 ms vs 2.3 ms in torch's oneDNN) and conv1's
forward pass with its single input channel (1.4 ms vs 0.5 ms). In
exploratory runs (not part of the recorded benchmark) NCHW dimension numbers
did not help, nor did the other XLA CPU flags tried (``xla_cpu_use_onednn``,
``xla_cpu_enable_fast_math``, XNNPACK graph fusion).

``LeNet5`` can compute its convolutions in two ways from the same
``nnx.Conv`` parameters (so checkpoints and masks are interchangeable):
``'xla'`` calls ``lax.conv_general_dilated``; ``'patches'`` extracts image
patches with ``lax.conv_general_dilated_patches`` and multiplies them with
the reshaped kernel. ``'xla'`` is the default: with ``'patches'`` the step
takes 82 ms, because ``conv_general_dilated_patches`` is itself a grouped
convolution whose transpose (the gradient with respect to ``conv2``'s input)
is slow. Building the patches from 25 shifted slices instead, whose
transpose is a cheap pad-and-add, was measured too (``--part step``, a
second run): 37.8 ms against 14.0 ms for ``'xla'`` with Eigen convolutions,
as the concatenated patches cost more memory traffic than the cheaper input
gradient saves, so it is not offered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

CONV_IMPLS = ('patches', 'xla')

# XLA options under which LeNet-5 trains fastest on CPU (module docstring):
# compile its convolutions with XLA's own Eigen kernels, not YNNPACK fusions.
# Pass them to the jit of a train step: jax.jit(step, compiler_options=...).
CPU_COMPILER_OPTIONS: dict[str, str] = {'xla_cpu_experimental_ynn_fusion_type': ''}

# Variance 1/fan_in, not He: He at learning rate 0.05 diverged on LeNet-5.
_KERNEL_INIT = nnx.initializers.lecun_normal()
_BIAS_INIT = nnx.initializers.zeros_init()


class LayerCost(NamedTuple):
  """Per-example parameter and compute cost of one layer.

  Attributes:
    weights: Number of kernel entries (the prunable connections).
    biases: Number of bias entries.
    macs: Multiply-accumulates for one example.

  Examples:
    >>> LayerCost(weights=25, biases=1, macs=100).flops
    200

  References:
    Han et al. 2015, §4.1, Tables 2-3 (FLOP = 2 x multiply-accumulates).
  """

  weights: int
  biases: int
  macs: int

  @property
  def flops(self) -> int:
    """Floating point operations, counting a multiply-accumulate as two."""
    return 2 * self.macs


def _conv_as_patches_matmul(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
  out_sharding: Any = None,
) -> jax.Array:
  """Drop-in for ``lax.conv_general_dilated`` as image patches times a kernel.

  Takes the arguments ``nnx.Conv`` passes to its ``conv_general_dilated`` and
  any dimension numbers, strides, padding and dilations; not feature groups.
  """
  if feature_group_count != 1:
    raise ValueError(
      f'patches convolution supports feature_group_count=1 only, got {feature_group_count}'
    )
  if out_sharding is not None:
    raise NotImplementedError('patches convolution does not take out_sharding')
  dnums = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  rhs_spec, out_spec = dnums.rhs_spec, dnums.out_spec
  rhs_out_axis, rhs_in_axis, *rhs_spatial_axes = rhs_spec
  filter_shape = [rhs.shape[axis] for axis in rhs_spatial_axes]
  patches = jax.lax.conv_general_dilated_patches(
    lhs,
    filter_shape,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dnums,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  # Patch features are ordered input channel first, then the kernel's spatial
  # axes in rhs_spec order, so the kernel must be flattened the same way (for
  # HWIO that is IHW, not the HWI a plain reshape would give).
  kernel_matrix = jnp.transpose(rhs, (rhs_in_axis, *rhs_spatial_axes, rhs_out_axis)).reshape(
    -1, rhs.shape[rhs_out_axis]
  )
  feature_axis = out_spec[1]
  out = jnp.matmul(
    jnp.moveaxis(patches, feature_axis, -1),
    kernel_matrix,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  return jnp.moveaxis(out, -1, feature_axis)


def max_pool(x: jax.Array, window: Sequence[int] = (2, 2)) -> jax.Array:
  """Max-pooling of NHWC images over non-overlapping windows, with a cheap backward.

  Returns the same values as ``nnx.max_pool(x, window, strides=window)`` and
  the same gradient: each window passes its gradient to its first maximum in
  row-major order, as XLA's select-and-scatter and torch's ``max_pool2d`` do.
  The difference is speed on CPU: the window maximum is taken over a reshaped
  view and its gradient is a chain of ``jnp.where`` selections, which XLA
  fuses into one elementwise loop, where ``reduce_window``'s gradient (a
  select-and-scatter) is expanded into index computations and a scatter (see
  the module docstring for timings).

  Args:
    x: Images of shape (B, H, W, C).
    window: Window height and width; also the stride.

  Returns:
    Array of shape (B, H // window[0], W // window[1], C).

  Raises:
    ValueError: If ``x`` is not 4-D or its height or width is not a multiple
      of the window's.

  Examples:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([1.0, 3.0, 3.0, 2.0]).reshape(1, 2, 2, 1)
    >>> max_pool(x).ravel().tolist()
    [3.0]
    >>> jax.grad(lambda x: max_pool(x).sum())(x).ravel().tolist()  # first max
    [0.0, 1.0, 0.0, 0.0]

  References:
    Han et al. 2015, §4.1 (Caffe's LeNet-5 pools 2x2 with stride 2).
  """
  if x.ndim != 4:
    raise ValueError(f'max_pool expects NHWC images of 4 dims, got shape {x.shape}')
  batch, height, width, channels = x.shape
  window_height, window_width = window
  if height % window_height or width % window_width:
    raise ValueError(
      f'image size {height}x{width} is not a multiple of the pooling window '
      f'{window_height}x{window_width}'
    )
  blocks = x.reshape(
    batch, height // window_height, window_height, width // window_width, window_width, channels
  )
  # The peak is a constant for differentiation; each element is selected
  # where it is the first one equal to it, so the gradient reaches exactly one
  # element per window (a NaN peak equals nothing and is returned as it is).
  peak = jax.lax.stop_gradient(blocks.max(axis=(2, 4)))
  out = peak
  for i in reversed(range(window_height)):
    for j in reversed(range(window_width)):
      element = blocks[:, :, i, :, j, :]
      out = jnp.where(element == peak, element, out)
  return out


# The layers whose kernels layer_costs counts.
_COUNTED = (nnx.Linear, nnx.Conv, nnx.LinearGeneral)

_CONV_GENERAL_DILATED: dict[str, Callable[..., jax.Array]] = {
  'patches': _conv_as_patches_matmul,
  'xla': jax.lax.conv_general_dilated,
}


class LeNet300100(nnx.Module):
  """LeNet-300-100: a 784-300-100-10 fully connected ReLU network.

  Args:
    rngs: Random number streams for parameter initialisation.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = LeNet300100(nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> model.fc1.kernel.shape
    (784, 300)

  References:
    Han et al. 2015, §4.1, Table 2.
  """

  def __init__(self, rngs: nnx.Rngs):
    def dense(in_features: int, out_features: int) -> nnx.Linear:
      return nnx.Linear(
        in_features,
        out_features,
        kernel_init=_KERNEL_INIT,
        bias_init=_BIAS_INIT,
        rngs=rngs,
      )

    self.fc1 = dense(28 * 28, 300)
    self.fc2 = dense(300, 100)
    self.fc3 = dense(100, 10)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Returns logits of shape (B, 10) for images (B, 28, 28, 1) or (B, 784)."""
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc1(x))
    x = nnx.relu(self.fc2(x))
    return self.fc3(x)


class LeNet5(nnx.Module):
  """Caffe's LeNet-5: two 5x5 valid convolutions with 2x2 max-pooling, 500-10.

  Following Caffe there is no ReLU after ``conv1`` and ``conv2``; only ``fc1``
  has one.

  Args:
    rngs: Random number streams for parameter initialisation.
    conv_impl: How the convolutions are computed, one of ``CONV_IMPLS``. Both
      use the same ``nnx.Conv`` parameters (HWIO kernels) and agree up to
      float rounding; ``'xla'`` is about twice as fast on CPU (see the module
      docstring).

  Raises:
    ValueError: If ``conv_impl`` is not one of ``CONV_IMPLS``.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = LeNet5(nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> model.conv2.kernel.shape
    (5, 5, 20, 50)

  References:
    Han et al. 2015, §4.1, Table 3.
  """

  def __init__(self, rngs: nnx.Rngs, *, conv_impl: str = 'xla'):
    if conv_impl not in CONV_IMPLS:
      raise ValueError(f'conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}')
    self.conv_impl = conv_impl

    def conv(in_features: int, out_features: int) -> nnx.Conv:
      return nnx.Conv(
        in_features,
        out_features,
        kernel_size=(5, 5),
        padding='VALID',
        kernel_init=_KERNEL_INIT,
        bias_init=_BIAS_INIT,
        conv_general_dilated=_CONV_GENERAL_DILATED[conv_impl],
        rngs=rngs,
      )

    def dense(in_features: int, out_features: int) -> nnx.Linear:
      return nnx.Linear(
        in_features,
        out_features,
        kernel_init=_KERNEL_INIT,
        bias_init=_BIAS_INIT,
        rngs=rngs,
      )

    self.conv1 = conv(1, 20)
    self.conv2 = conv(20, 50)
    self.fc1 = dense(4 * 4 * 50, 500)
    self.fc2 = dense(500, 10)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Returns logits of shape (B, 10) for NHWC images of shape (B, 28, 28, 1)."""
    x = max_pool(self.conv1(x), (2, 2))
    x = max_pool(self.conv2(x), (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc1(x))
    return self.fc2(x)


class _ShapeRecorder:
  """Calls a layer and records the shape of its output under the layer's path."""

  def __init__(self, path: tuple, layer: nnx.Module, out_shapes: dict):
    self.path = path
    self.layer = layer
    self.out_shapes = out_shapes

  def __call__(self, x: jax.Array, **kwargs: Any) -> jax.Array:
    y = self.layer(x, **kwargs)
    self.out_shapes[self.path] = y.shape
    return y


class _AttentionRecorder:
  """Calls an attention function and records its query, key and value shapes."""

  def __init__(self, path: tuple, attention_fn: Callable[..., jax.Array], out_shapes: dict):
    self.path = path
    self.attention_fn = attention_fn
    self.out_shapes = out_shapes

  def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array, **kwargs: Any):
    self.out_shapes[(*self.path, _ATTENTION)] = (query.shape, key.shape, value.shape)
    return self.attention_fn(query, key, value, **kwargs)


# Marks the attention products of a MultiHeadAttention in the recorded shapes.
_ATTENTION = object()


def _attention_costs(
  query: tuple[int, ...], key: tuple[int, ...], value: tuple[int, ...]
) -> tuple[LayerCost, LayerCost]:
  """MACs of ``q k^T`` and of ``softmax(.) v`` for (batch, length, heads, head_dim) shapes."""
  *_, queries, heads, head_dim = query
  keys, value_dim = key[-3], value[-1]
  return (
    LayerCost(weights=0, biases=0, macs=queries * keys * heads * head_dim),
    LayerCost(weights=0, biases=0, macs=queries * keys * heads * value_dim),
  )


def layer_costs(
  model_or_cls: nnx.Module | type[nnx.Module],
  input_shape: Sequence[int] = (28, 28, 1),
) -> dict[str, LayerCost]:
  """Counts weights, biases and multiply-accumulates of each Linear/Conv layer and attention.

  The model is traced abstractly (no FLOPs are spent and no parameters are
  allocated for a class), so the spatial size of every convolution's output
  comes from the actual forward pass rather than from the architecture by hand.
  Counts are dense: pruning masks are not taken into account. Layers are
  ``nnx.Linear``, ``nnx.Conv`` and ``nnx.LinearGeneral`` (the ``query``,
  ``key``, ``value`` and ``out`` projections of ``nnx.MultiHeadAttention``);
  a ``MultiHeadAttention`` at path ``p`` adds two entries without weights for
  the products between its projections: ``p/qk`` (``q k^T``, queries x keys
  x heads x head dim) and ``p/av`` (attention weights times ``v``). Batch
  norm, layer norm, softmax, activations and residual additions are not
  counted, as is usual for MACs.

  Args:
    model_or_cls: A model instance, or a model class taking ``rngs``.
    input_shape: Shape of one example, without the batch dimension.

  Returns:
    A dict from layer path (``'conv1'``, ``'fc1'``, nested paths joined with
    ``'/'``) to its per-example ``LayerCost``, in the order the forward pass
    calls the layers.

  Examples:
    >>> costs = layer_costs(LeNet5)
    >>> costs['conv1']
    LayerCost(weights=500, biases=20, macs=288000)
    >>> costs['conv1'].flops
    576000
    >>> sum(cost.weights for cost in layer_costs(LeNet300100).values())
    266200

  References:
    Han et al. 2015, §4.1, Tables 2-3.
  """
  if isinstance(model_or_cls, type):
    model_cls = model_or_cls
    model = nnx.eval_shape(lambda: model_cls(rngs=nnx.Rngs(0)))
  else:
    model = model_or_cls
  graphdef, state = nnx.split(model)
  out_shapes: dict[tuple, tuple[int, ...]] = {}

  def forward(state: nnx.State, x: jax.Array) -> jax.Array:
    # The merged copy is private to this trace, so swapping its layers for
    # recorders leaves the caller's model untouched.
    traced = nnx.merge(graphdef, state)
    for path, layer in list(nnx.iter_modules(traced)):
      if isinstance(layer, nnx.MultiHeadAttention):
        layer.attention_fn = _AttentionRecorder(path, layer.attention_fn, out_shapes)
      if isinstance(layer, _COUNTED):
        parent = traced
        for key in path[:-1]:
          parent = parent[key] if isinstance(key, int) else getattr(parent, key)
        recorder = _ShapeRecorder(path, layer, out_shapes)
        if isinstance(path[-1], int):
          parent[path[-1]] = recorder
        else:
          setattr(parent, path[-1], recorder)
    return traced(x)

  example = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  jax.eval_shape(forward, state, example)

  layers = dict(nnx.iter_modules(model))
  costs = {}
  for path, out_shape in out_shapes.items():
    if path[-1] is _ATTENTION:
      name = '/'.join(str(key) for key in path[:-1])
      costs[f'{name}/qk'], costs[f'{name}/av'] = _attention_costs(*out_shape)
      continue
    layer = layers[path]
    # Every kernel entry is used once per output position (one position for a
    # Linear layer applied to one vector); a grouped conv's kernel already
    # holds only its group's input channels.
    if isinstance(layer, nnx.LinearGeneral):
      out_features = math.prod(layer.out_features)
    else:
      out_features = out_shape[-1]
    positions = math.prod(out_shape[1:]) // out_features
    costs['/'.join(str(key) for key in path)] = LayerCost(
      weights=layer.kernel.size,
      biases=0 if layer.bias is None else layer.bias.size,
      macs=positions * layer.kernel.size,
    )
  return costs
