"""VGG-16 training throughput, dense vs masked: images/s, model FLOP utilisation, ratio.

Trains VGG-16 (224x224 by default) on one synthetic batch held on the
devices, with the same jitted data-parallel step the pipeline uses
(params, optimizer state and mask replicated, the batch sharded over a
``('data',)`` mesh of every device), twice: with plain SGD with momentum
(dense) and with the same optimizer wrapped in ``masked_optimizer`` holding a
mask at ``--sparsity`` (masked). The two variants run in alternating blocks
so drift in the machine's speed hits both alike; each block's time ends with
``block_until_ready``.

Model FLOP utilisation (MFU) = model FLOP per second / peak FLOP per second.
Model FLOP per image are 3x the forward FLOP of the convolutions and fully
connected layers (``models.layer_costs``; backward = 2x forward), the usual
convention (pooling, activations and the optimizer are not counted, and a
masked network is credited with its dense FLOP: the masked step multiplies
the zeros). The peak is measured, not taken from a datasheet: the best of
``--peak-repeats`` timings of one ``--peak-size`` cube matrix multiply per
device in ``--dtype``.

Targets on an accelerator: MFU >= 45 %, masked / dense time <= 1.03.

Usage:
  python benchmarks/vgg_throughput.py                       # VGG-16, bf16, batch 128
  python benchmarks/vgg_throughput.py --model vgg16 --width 0.125 --batch-size 8 \\
      --dtype float32 --steps 4 --blocks 3 --peak-size 1024  # a small CPU configuration
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import _common
import _timing
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pruning
from models import MODELS, create_model, layer_costs, model_options
from pruning.experiment import parallel


def measure_peak(mesh, size: int, dtype, repeats: int) -> float:
  """Best FLOP/s of one ``size`` cube matmul per device, over ``repeats`` timings."""
  devices = mesh.devices.size
  sharding = parallel.batch_sharded(mesh)
  a = jax.device_put(jnp.ones((devices, size, size), dtype), sharding)
  b = jax.device_put(jnp.ones((devices, size, size), dtype), sharding)
  matmul = jax.jit(
    lambda a, b: jnp.einsum('bij,bjk->bik', a, b, preferred_element_type=dtype),
    out_shardings=sharding,
  )
  matmul(a, b).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 * devices / best


def _train_step(graphdef, tx, mesh):
  """The pipeline's step (pruning.experiment.steps.train_step) without the regulariser,
  data-parallel over ``mesh``."""
  step = _timing.cross_entropy_step(graphdef, tx)
  state, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(
    step,
    in_shardings=(state, state, state, batch, batch),
    out_shardings=state,
    donate_argnums=(0, 2),
  )


def _run_block(variant, images, labels, steps: int) -> float:
  step, carry = variant['step'], variant['carry']
  start = time.perf_counter()
  for _ in range(steps):
    *carry, loss = step(*carry, images, labels)
  loss.block_until_ready()
  variant['carry'] = carry
  return time.perf_counter() - start


def benchmark(args) -> dict:
  mesh = parallel.data_mesh()
  spec = MODELS[args.model]
  options = model_options(
    args.model, width=args.width, batch_norm=args.batch_norm, dtype=args.dtype
  )
  dtype = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[args.dtype]
  peak = measure_peak(mesh, args.peak_size, dtype, args.peak_repeats)

  rng = np.random.default_rng(0)
  local = parallel.local_batch_size(args.batch_size, mesh)
  images, labels = parallel.global_batch(
    mesh,
    rng.standard_normal((local, *spec.image_shape), np.float32),
    rng.integers(0, spec.num_classes, local).astype(np.int32),
  )
  inner = optax.sgd(0.01, momentum=0.9)
  variants = {}
  forward_flops = None
  for name in ('dense', 'masked'):
    model = create_model(args.model, nnx.Rngs(0), **options)
    forward_flops = sum(c.flops for c in layer_costs(model, spec.image_shape).values())
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if name == 'dense':
      tx = inner
    else:
      mask = pruning.sparsity_mask(params, args.sparsity)
      tx = pruning.masked_optimizer(inner, mask)
    params, rest = parallel.replicate((params, rest), mesh)
    opt_state = parallel.replicate(tx.init(params), mesh)
    step = _train_step(graphdef, tx, mesh)
    variant = {'step': step, 'carry': (params, rest, opt_state), 'times': []}
    _run_block(variant, images, labels, args.warmup)  # compile and warm up
    variants[name] = variant
  for _ in range(args.blocks):
    for variant in variants.values():
      variant['times'].append(_run_block(variant, images, labels, args.steps))

  masked_params = variants['masked']['carry'][0]
  mask_stats = pruning.mask_stats(mask)
  zeros = sum(
    int((parallel.fetch(leaf) == 0).sum())
    for path, leaf in jax.tree_util.tree_leaves_with_path(masked_params)
    if 'kernel' in jax.tree_util.keystr(path)
  )
  pruned = mask_stats.overall.total - mask_stats.overall.kept
  if zeros < pruned:
    raise AssertionError(f'only {zeros} of {pruned} pruned weights are exactly zero')

  results = {}
  for name, variant in variants.items():
    median = float(np.median(variant['times'])) / args.steps
    images_per_s = args.batch_size / median
    results[name] = {
      'step_ms': 1e3 * median,
      'images_per_s': images_per_s,
      'mfu': 3 * forward_flops * images_per_s / peak,
    }
  return {
    'device': f'{jax.devices()[0].device_kind} x {mesh.devices.size} ({jax.default_backend()})',
    'model': args.model,
    'width': args.width,
    'image_shape': spec.image_shape,
    'dtype': args.dtype,
    'batch_size': args.batch_size,
    'sparsity': args.sparsity,
    'forward_gflop_per_image': forward_flops / 1e9,
    'peak_tflops': peak / 1e12,
    'peak_matmul': f'{args.peak_size}^3 {args.dtype}',
    'dense': results['dense'],
    'masked': results['masked'],
    'masked_over_dense_time': results['masked']['step_ms'] / results['dense']['step_ms'],
    'timed_steps': args.blocks * args.steps,
  }


def markdown(result: dict) -> str:
  dense, masked = result['dense'], result['masked']
  return '\n'.join(
    [
      f'device: {result["device"]}; {result["model"]} width {result["width"]} '
      f'{result["image_shape"][0]}x{result["image_shape"][1]}, {result["dtype"]}, '
      f'batch {result["batch_size"]}; forward {result["forward_gflop_per_image"]:.3f} GFLOP/image; '
      f'measured peak {result["peak_tflops"]:.3f} TFLOP/s ({result["peak_matmul"]} matmul)',
      '',
      '| variant | step (ms) | images/s | MFU |',
      '|---|---:|---:|---:|',
      f'| dense | {dense["step_ms"]:.2f} | {dense["images_per_s"]:.1f} | {100 * dense["mfu"]:.1f} % |',
      f'| masked ({100 * result["sparsity"]:.0f} % pruned) | {masked["step_ms"]:.2f} '
      f'| {masked["images_per_s"]:.1f} | {100 * masked["mfu"]:.1f} % |',
      '',
      f'masked / dense step time: {result["masked_over_dense_time"]:.3f} '
      f'(medians over {result["timed_steps"]} timed steps per variant, in blocks)',
    ]
  )


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0],
    epilog=__doc__.split('\n\n', 1)[1],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--model', choices=['vgg16', 'vgg16_cifar', 'alexnet'], default='vgg16')
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--batch-norm', action='store_true')
  parser.add_argument('--dtype', choices=['bfloat16', 'float32'], default='bfloat16')
  parser.add_argument('--batch-size', type=int, default=128, help='global, over all devices')
  parser.add_argument('--sparsity', type=float, default=0.9)
  parser.add_argument('--warmup', type=int, default=5, help='steps before timing')
  parser.add_argument('--steps', type=int, default=20, help='steps per timed block')
  parser.add_argument('--blocks', type=int, default=5, help='timed blocks per variant')
  parser.add_argument('--peak-size', type=int, default=8192, help='side of the peak matmul')
  parser.add_argument('--peak-repeats', type=int, default=10)
  parser.add_argument('--out', default=None, help='also write the result as JSON here')
  args = parser.parse_args(argv)

  provenance = _common.provenance()
  print(f'command: {provenance["command"]}')
  print(f'commit {provenance["commit"]}; {provenance["machine"]}')
  result = benchmark(args) | provenance
  print(markdown(result), flush=True)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + '\n')
  return result


if __name__ == '__main__':
  main()
