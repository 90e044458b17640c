"""LeNet-5 training step: this toolkit (JAX) next to PyTorch's ``torch.nn.utils.prune``.

``--part step`` trains the same pruned LeNet-5 (Caffe variant) in both
frameworks from the same initial weights, with the same masks (each layer
pruned by magnitude to LeNet-5's default final kept fractions), the same
batches, SGD with momentum 0.9 at one learning rate and the same L2 penalty
over kept weights, and prints the median time of one training step of each
and their ratio. The JAX rows are the toolkit as the pipeline runs it
(``masked_optimizer``, ``models.CPU_COMPILER_OPTIONS``) and three ablations
that undo one change each: XLA's default YNNPACK convolutions, pooling with
``nnx.max_pool`` (``reduce_window``), and both (LeNet-5 before this
benchmark's findings), plus the ``'patches'`` convolution. After timing, the
toolkit's weights and torch's are compared: the same training must give the
same weights (up to float rounding), so both really run the same model.

``--part ops`` times each convolution's forward, backward-input and
backward-kernel and each pooling's forward+backward on their own, in JAX
(YNNPACK and XLA's own kernels) and in torch, which is where the per-step
difference comes from.

Variants run in alternating blocks so that other load on the machine hits
each alike; medians are over all timed steps. Torch is a benchmark-only
dependency: ``pip install torch==2.13.0`` (CPU wheel); the toolkit never
imports it.

Usage:
  python benchmarks/lenet5_vs_torch.py --part step [--steps 200] [--batch 128]
  python benchmarks/lenet5_vs_torch.py --part ops
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pruning
from models import CPU_COMPILER_OPTIONS, LeNet5, max_pool
from pruning.experiment import report

try:
  import torch
  from torch.nn.utils import prune as torch_prune
except ImportError:  # pragma: no cover - the message says what to do
  sys.exit('this benchmark needs torch: pip install torch==2.13.0')

LEARNING_RATE = 0.02
MOMENTUM = 0.9
L2 = 5e-4
DENSITY = _common.shipped_config('lenet5').density
YNNPACK_OPTIONS: dict[str, str] = {}  # XLA's defaults


class ReduceWindowLeNet5(LeNet5):
  """LeNet-5 pooling with ``nnx.max_pool``, as before ``models.max_pool``."""

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.max_pool(self.conv1(x), window_shape=(2, 2), strides=(2, 2))
    x = nnx.max_pool(self.conv2(x), window_shape=(2, 2), strides=(2, 2))
    x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
    return self.fc2(x)


def shifted_slices_conv(lhs, rhs, window_strides, padding, **unused) -> jax.Array:
  """A VALID, stride-1 NHWC/HWIO convolution as im2col from shifted slices + a matmul.

  The gradient of a slice is a pad and that of the concatenation a split, so
  the input gradient is a sum of padded slices rather than a transposed
  convolution. Measured here only; ``models.lenet`` does not offer it.
  """
  if padding != 'VALID' or tuple(window_strides) != (1, 1):
    raise ValueError('shifted_slices_conv supports VALID padding and stride 1 only')
  height, width, channels, features = rhs.shape
  out_height, out_width = lhs.shape[1] - height + 1, lhs.shape[2] - width + 1
  columns = jnp.concatenate(
    [lhs[:, i : i + out_height, j : j + out_width, :] for i in range(height) for j in range(width)],
    axis=-1,
  )
  return columns @ rhs.reshape(height * width * channels, features)


class ShiftedSlicesLeNet5(LeNet5):
  """LeNet-5 whose convolutions are :func:`shifted_slices_conv`."""

  def __init__(self, rngs: nnx.Rngs, conv_impl: str = 'xla'):
    super().__init__(rngs, conv_impl=conv_impl)
    self.conv1.conv_general_dilated = shifted_slices_conv
    self.conv2.conv_general_dilated = shifted_slices_conv


class TorchLeNet5(torch.nn.Module):
  """Caffe's LeNet-5 in torch, NCHW: no ReLU after the convolutions."""

  def __init__(self):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(1, 20, 5)
    self.conv2 = torch.nn.Conv2d(20, 50, 5)
    self.fc1 = torch.nn.Linear(800, 500)
    self.fc2 = torch.nn.Linear(500, 10)

  def forward(self, x):
    x = torch.nn.functional.max_pool2d(self.conv1(x), 2)
    x = torch.nn.functional.max_pool2d(self.conv2(x), 2)
    x = torch.relu(self.fc1(x.flatten(1)))
    return self.fc2(x)


# --- weights and masks in both layouts ---------------------------------------------------------


def _fc1_rows_to_torch(kernel: np.ndarray) -> np.ndarray:
  """fc1's input features, flattened HWC by JAX, reordered to torch's CHW."""
  return kernel.reshape(4, 4, 50, 500).transpose(2, 0, 1, 3).reshape(800, 500)


def _to_torch_layout(name: str, kernel: np.ndarray) -> np.ndarray:
  if kernel.ndim == 4:  # HWIO -> OIHW
    return kernel.transpose(3, 2, 0, 1)
  if name == 'fc1':
    kernel = _fc1_rows_to_torch(kernel)
  return kernel.T  # (in, out) -> (out, in)


def _layers(tree) -> dict[str, dict[str, np.ndarray]]:
  return {
    layer: {leaf: np.asarray(value) for leaf, value in leaves.items()}
    for layer, leaves in nnx.to_pure_dict(tree).items()
  }


def torch_model(params, mask) -> TorchLeNet5:
  """The torch model holding ``params``, pruned with ``mask`` by ``custom_from_mask``."""
  model = TorchLeNet5()
  weights, kept = _layers(params), _layers(mask)
  with torch.no_grad():
    for name, module in model.named_children():
      module.weight.copy_(torch.tensor(_to_torch_layout(name, weights[name]['kernel'])))
      module.bias.copy_(torch.tensor(weights[name]['bias']))
      torch_prune.custom_from_mask(
        module, 'weight', torch.tensor(_to_torch_layout(name, kept[name]['kernel']))
      )
  return model


def torch_weights_as_jax(model: TorchLeNet5) -> dict[str, np.ndarray]:
  """Each layer's effective (masked) weight, back in the JAX layout."""
  out = {}
  for name, module in model.named_children():
    # Not ``module.weight``: the pruning hook refreshes it only at the next
    # forward pass, so after an optimizer step it is one update behind.
    weight = (module.weight_orig * module.weight_mask).detach().numpy()
    if weight.ndim == 4:
      out[name] = weight.transpose(2, 3, 1, 0)
    else:
      weight = weight.T
      if name == 'fc1':
        weight = weight.reshape(50, 4, 4, 500).transpose(1, 2, 0, 3).reshape(800, 500)
      out[name] = weight
  return out


# --- train steps -------------------------------------------------------------------------------


def jax_step(graphdef, tx, compiler_options):
  """The pipeline's train step: cross-entropy + L2 over kept weights, masked SGD."""

  def step(params, opt_state, images, labels):
    def loss_fn(params):
      logits = nnx.merge(graphdef, params)(images)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss + L2 * pruning.l2_penalty(params, pruning.get_mask(opt_state))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1), compiler_options=compiler_options or None)


def torch_step(model: TorchLeNet5):
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

  def step(images, labels):
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    penalty = sum(module.weight.square().sum() for module in model.children())
    (loss + 0.5 * L2 * penalty).backward()
    optimizer.step()
    return loss

  return step


def _batches(count: int, batch: int, seed: int):
  rng = np.random.default_rng(seed)
  images = rng.random((count, batch, 28, 28, 1), np.float32)
  labels = rng.integers(0, 10, (count, batch)).astype(np.int64)
  return images, labels


def benchmark_step(steps: int, batch: int, blocks: int = 10, seed: int = 0) -> list[dict]:
  """Median step time of torch and of each JAX variant, and the weight agreement."""
  params = nnx.state(LeNet5(nnx.Rngs(seed)), nnx.Param)
  mask = pruning.sparsity_mask(params, {name: 1.0 - d for name, d in DENSITY.items()})
  params = pruning.apply_mask(params, mask)
  per_block = max(1, steps // blocks)
  warmup = 5
  images, labels = _batches(warmup + blocks * per_block, batch, seed)
  # NCHW copies for torch, made once: the layout change is not part of a step.
  torch_images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3)))
  torch_labels = torch.from_numpy(labels)
  jax_images, jax_labels = jnp.asarray(images), jnp.asarray(labels.astype(np.int32))

  variants: dict[str, dict] = {}
  for name, model_cls, conv_impl, options in [
    ('toolkit (max_pool, Eigen convs)', LeNet5, 'xla', CPU_COMPILER_OPTIONS),
    ('ablation: YNNPACK convs', LeNet5, 'xla', YNNPACK_OPTIONS),
    ('ablation: reduce_window pooling', ReduceWindowLeNet5, 'xla', CPU_COMPILER_OPTIONS),
    ('before: both (reduce_window, YNNPACK)', ReduceWindowLeNet5, 'xla', YNNPACK_OPTIONS),
    ("conv_impl='patches'", LeNet5, 'patches', CPU_COMPILER_OPTIONS),
    ('shifted-slices im2col (not offered)', ShiftedSlicesLeNet5, 'xla', CPU_COMPILER_OPTIONS),
  ]:
    graphdef = nnx.graphdef(
      nnx.eval_shape(lambda cls=model_cls, impl=conv_impl: cls(nnx.Rngs(0), conv_impl=impl))
    )
    tx = pruning.masked_optimizer(optax.sgd(LEARNING_RATE, momentum=MOMENTUM), mask)
    own = jax.tree.map(jnp.copy, params)
    variants[name] = {
      'step': jax_step(graphdef, tx, options),
      'carry': (own, tx.init(own)),
      'times': [],
    }
  model = torch_model(params, mask)
  variants['torch.nn.utils.prune'] = {'step': torch_step(model), 'times': []}

  def run(variant, index):
    start = time.perf_counter()
    if 'carry' in variant:
      params, opt_state, loss = variant['step'](
        *variant['carry'], jax_images[index], jax_labels[index]
      )
      loss.block_until_ready()
      variant['carry'] = (params, opt_state)
    else:
      variant['step'](torch_images[index], torch_labels[index])
    return time.perf_counter() - start

  for variant in variants.values():
    for index in range(warmup):
      run(variant, index)
  for block in range(blocks):
    for variant in variants.values():
      for index in range(warmup + block * per_block, warmup + (block + 1) * per_block):
        variant['times'].append(run(variant, index))

  toolkit = variants['toolkit (max_pool, Eigen convs)']
  trained = _layers(toolkit['carry'][0])
  theirs = torch_weights_as_jax(model)
  difference = max(float(np.abs(trained[name]['kernel'] - theirs[name]).max()) for name in theirs)
  torch_median = statistics.median(variants['torch.nn.utils.prune']['times'])
  rows = []
  for name, variant in variants.items():
    median = statistics.median(variant['times'])
    rows.append(
      {
        'variant': name,
        'median_ms': 1e3 * median,
        'min_ms': 1e3 * min(variant['times']),
        'vs_torch': median / torch_median,
        'steps': len(variant['times']),
      }
    )
  return rows, difference


# --- single operations -------------------------------------------------------------------------


def _time_blocks(fns: dict[str, Callable[[], object]], rounds: int, repeats: int):
  times = {name: [] for name in fns}
  for fn in fns.values():
    fn()
    fn()
  for _ in range(rounds):
    for name, fn in fns.items():
      for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - start)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def benchmark_ops(batch: int, rounds: int = 8, repeats: int = 10) -> list[tuple[str, ...]]:
  """Per-op medians (ms): JAX with YNNPACK, JAX with Eigen (XLA's own), torch."""
  rng = np.random.default_rng(0)
  dimension_numbers = ('NHWC', 'HWIO', 'NHWC')

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), 'VALID', dimension_numbers=dimension_numbers)

  def reduce_window_pool(x):
    return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))

  jax_ops: dict[str, tuple[Callable, tuple]] = {}
  torch_ops: dict[str, Callable[[], object]] = {}
  for layer, image_shape, kernel_shape in [
    ('conv1', (batch, 28, 28, 1), (5, 5, 1, 20)),
    ('conv2', (batch, 12, 12, 20), (5, 5, 20, 50)),
  ]:
    x = jnp.asarray(rng.standard_normal(image_shape), jnp.float32)
    k = jnp.asarray(0.1 * rng.standard_normal(kernel_shape), jnp.float32)
    g = jnp.ones_like(conv(x, k))
    jax_ops[f'{layer} forward'] = (conv, (x, k))
    if layer != 'conv1':  # conv1's input is the data: no gradient needed
      jax_ops[f'{layer} backward-input'] = (
        lambda x, k, g: jax.vjp(lambda x: conv(x, k), x)[1](g)[0],
        (x, k, g),
      )
    jax_ops[f'{layer} backward-kernel'] = (
      lambda x, k, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0],
      (x, k, g),
    )
    tx = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))
    tk = torch.tensor(np.asarray(k).transpose(3, 2, 0, 1))
    tg = torch.ones(g.shape[0], g.shape[3], g.shape[1], g.shape[2])

    def torch_backward(which, tx=tx, tk=tk, tg=tg):
      output_mask = [which == 'input', which == 'kernel', False]
      return torch.ops.aten.convolution_backward(
        tg, tx, tk, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, output_mask
      )

    torch_ops[f'{layer} forward'] = lambda tx=tx, tk=tk: torch.nn.functional.conv2d(tx, tk)
    torch_ops[f'{layer} backward-input'] = lambda: torch_backward('input')
    torch_ops[f'{layer} backward-kernel'] = lambda: torch_backward('kernel')
  for layer, shape in [('pool1', (batch, 24, 24, 20)), ('pool2', (batch, 8, 8, 50))]:
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    for label, pool in [('reduce_window', reduce_window_pool), ('models.max_pool', max_pool)]:
      jax_ops[f'{layer} forward+backward ({label})'] = (
        lambda x, pool=pool: jax.vjp(pool, x)[1](jnp.ones_like(pool(x)))[0],
        (x,),
      )
    tx = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))

    def torch_pool(tx=tx):
      out, indices = torch.ops.aten.max_pool2d_with_indices(tx, [2, 2], [2, 2])
      return torch.ops.aten.max_pool2d_with_indices_backward(
        torch.ones_like(out), tx, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
      )

    torch_ops[f'{layer} forward+backward (reduce_window)'] = torch_pool
    torch_ops[f'{layer} forward+backward (models.max_pool)'] = torch_pool

  fns = {}
  for name, (fn, args) in jax_ops.items():
    lowered = jax.jit(fn).lower(*args)
    for options_name, options in [('ynnpack', YNNPACK_OPTIONS), ('eigen', CPU_COMPILER_OPTIONS)]:
      compiled = lowered.compile(compiler_options=options or None)
      fns[(name, options_name)] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))
  for name, fn in torch_ops.items():
    fns[(name, 'torch')] = fn
  medians = _time_blocks(fns, rounds, repeats)
  rows = []
  for name in jax_ops:
    ynn, eigen = medians[(name, 'ynnpack')], medians[(name, 'eigen')]
    reference = medians.get((name, 'torch'))
    rows.append((name, ynn, eigen, reference))
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--part', choices=['step', 'ops'], default='step')
  parser.add_argument('--steps', type=int, default=200, help='timed steps per variant')
  parser.add_argument('--batch', type=int, default=128)
  args = parser.parse_args(argv)
  print(f'command: python {" ".join(sys.argv)}')
  print(f'commit {report.git_commit()}; {report.machine_description()}')
  print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}\n')
  if args.part == 'step':
    rows, difference = benchmark_step(args.steps, args.batch)
    print(
      f'SGD momentum {MOMENTUM}, lr {LEARNING_RATE}, L2 {L2} over kept weights; '
      f'kept fractions {dict(DENSITY)}\n'
    )
    print('| variant | median step (ms) | min step (ms) | / torch | timed steps |')
    print('|---|---:|---:|---:|---:|')
    for r in rows:
      print(
        f'| {r["variant"]} | {r["median_ms"]:.2f} | {r["min_ms"]:.2f} '
        f'| {r["vs_torch"]:.2f} | {r["steps"]} |'
      )
    print(
      f'\nafter training, toolkit vs torch weights: max |difference| = {difference:.2e} '
      '(same masks, same updates)'
    )
  else:
    rows = benchmark_ops(args.batch)
    print('| operation | JAX, YNNPACK (ms) | JAX, Eigen (ms) | torch (ms) | Eigen / torch |')
    print('|---|---:|---:|---:|---:|')
    for name, ynn, eigen, reference in rows:
      print(f'| {name} | {ynn:.2f} | {eigen:.2f} | {reference:.2f} | {eigen / reference:.2f} |')


if __name__ == '__main__':
  main()
