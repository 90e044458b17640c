"""Cost of ``masked_optimizer`` in a jitted train step: dense vs masked.

For LeNet-300-100 and LeNet-5 (batch 128 by default), times one jitted SGD
momentum train step with the plain optimizer and with the same optimizer
wrapped in ``masked_optimizer`` at 90 % sparsity, and prints a Markdown table
with the medians and the masked/dense ratio (target: <= 1.05).

The two variants run in alternating blocks so that drift in the machine's
speed (other processes, frequency scaling) hits both alike. Each step is
timed to completion (``block_until_ready``); the median is over all timed
steps. The step is functional (``nnx.split`` once, ``jax.jit`` with donated
buffers), so Python overhead of ``nnx.jit`` does not dilute the comparison.

Usage:
  python benchmarks/masked_step.py [--steps 400] [--batch 128] [--sparsity 0.9]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import _timing
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pruning
from models import LeNet5, LeNet300100
from pruning.experiment import report

MODELS = {'LeNet-300-100': LeNet300100, 'LeNet-5': LeNet5}


def benchmark_model(name, steps, batch, sparsity, blocks=10, seed=0):
  """Median step time (s) of the dense and the masked step for one model."""
  model = MODELS[name](nnx.Rngs(seed))
  graphdef, params = nnx.split(model, nnx.Param)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, 28, 28, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
  inner = optax.sgd(0.01, momentum=0.9)
  mask = pruning.sparsity_mask(params, sparsity)
  variants = {
    'dense': inner,
    'masked': pruning.masked_optimizer(inner, mask),
  }
  runs, times = {}, {key: [] for key in variants}
  for key, tx in variants.items():
    own = jax.tree.map(jnp.copy, params)
    step = _timing.sgd_train_step(graphdef, tx)
    carry = (own, tx.init(own))
    carry, _ = _timing.time_steps(step, carry, x, y, 20)  # compile and warm up
    runs[key] = (step, carry)
  per_block = max(1, steps // blocks)
  for _ in range(blocks):
    for key, (step, carry) in runs.items():
      carry, block = _timing.time_steps(step, carry, x, y, per_block)
      runs[key] = (step, carry)
      times[key].extend(block)
  masked_params = runs['masked'][1][0]
  stats = pruning.mask_stats(mask)
  pruned = stats.overall.total - stats.overall.kept
  landed = sum(
    int((np.asarray(leaf[...]) == 0).sum())
    for path, leaf in jax.tree_util.tree_leaves_with_path(
      masked_params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    if jax.tree_util.keystr(path, simple=True, separator='/').endswith('kernel')
  )
  if landed < pruned:
    raise AssertionError(f'{name}: only {landed} of {pruned} pruned weights are zero')
  return {key: statistics.median(t) for key, t in times.items()}, len(times['dense'])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=400, help='timed steps per variant')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--sparsity', type=float, default=0.9)
  parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
  args = parser.parse_args(argv)

  print(f'command: python {" ".join(sys.argv)}')
  print(f'commit {report.git_commit()}; {report.machine_description()}')
  print(f'batch {args.batch}, sparsity {args.sparsity}, SGD momentum 0.9, median of each variant\n')
  print('| model | dense step (ms) | masked step (ms) | masked / dense | timed steps |')
  print('|---|---:|---:|---:|---:|')
  for name in args.models:
    medians, count = benchmark_model(name, args.steps, args.batch, args.sparsity)
    ratio = medians['masked'] / medians['dense']
    print(
      f'| {name} | {1e3 * medians["dense"]:.3f} | {1e3 * medians["masked"]:.3f} '
      f'| {ratio:.3f} | {count} |',
      flush=True,
    )


if __name__ == '__main__':
  main()
