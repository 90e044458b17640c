"""Sparse vs dense inference latency on CPU, and stored size, after pruning.

Two parts, each printed as a Markdown table of median milliseconds per call:

1. A VGG-16 fc6-sized layer (25088 x 4096) with 4 % of its weights kept at
   uniformly random positions (the paper's fc6 density, Table 5): the dense
   ``jax.jit`` matrix product against ``scipy.sparse`` CSR,
   ``jax.experimental.sparse`` BCSR and BCOO (jitted), and
   :class:`pruning.SparseLinear` with ``backend='auto'``.
2. A real pruned LeNet-300-100 from a pipeline run (``--workdir``): the masked
   model, the model after dead-neuron removal (both dense, jitted) and the
   same with sparse FC layers (:func:`pruning.sparsify`, each backend), plus
   the stored size of the sparse file against dense float32.

The variants run in interleaved rounds, so that drift in the shared machine's
speed affects all of them alike; each figure is the median over all timed
calls. Every variant's output is checked against the dense one first. A dense
numpy (OpenBLAS) product is left out: in a trial run that included it, the
scipy variant timed right after it took 7.1 ms at batch 1, against 2.9-3.1 ms
alone or without it (probably OpenBLAS's idle threads spinning on the two
cores), and it was slower than XLA's dense product anyway (16.0 vs 12.8 ms).

Usage:
  python benchmarks/sparse_inference.py --workdir runs/lenet300-seed0 [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from flax import nnx
from jax.experimental import sparse as jsparse

import pruning
from models import MODELS
from pruning.experiment import export, report

FC6_SHAPE = (25088, 4096)
FC6_DENSITY = 0.04


def interleaved_medians(
  variants: dict[str, Callable[[Any], object]], x: Any, rounds: int, calls: int
) -> dict[str, float]:
  """Median ms of ``fn(x)`` for each variant, timed in ``rounds`` interleaved blocks of ``calls``."""
  times: dict[str, list[float]] = {name: [] for name in variants}
  for fn in variants.values():
    jax.block_until_ready(fn(x))
    jax.block_until_ready(fn(x))
  for _ in range(rounds):
    for name, fn in variants.items():
      for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times[name].append(time.perf_counter() - start)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _table(results: dict[int, dict[str, float]], baseline: str) -> str:
  batches = sorted(results)
  lines = [
    '| variant | ' + ' | '.join(f'batch {b} (ms) | speed-up' for b in batches) + ' |',
    '|---|' + '---:|---:|' * len(batches),
  ]
  for name in results[batches[0]]:
    cells = []
    for b in batches:
      ms = results[b][name]
      cells.append(f'{ms:.3f} | {results[b][baseline] / ms:.2f}x')
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def fc6(batches, rounds, seed) -> str:
  rng = np.random.default_rng(seed)
  n_in, n_out = FC6_SHAPE
  kept = round(FC6_DENSITY * n_in * n_out)
  flat = np.sort(rng.choice(n_in * n_out, kept, replace=False))
  kernel = np.zeros((n_in, n_out), np.float32)
  kernel.reshape(-1)[flat] = rng.standard_normal(kept).astype(np.float32)
  bias = rng.standard_normal(n_out).astype(np.float32)
  matrix = scipy.sparse.csr_array(kernel.T)
  dense_jax = jax.jit(lambda x, w, b: x @ w + b)
  kernel_jax, bias_jax = jnp.asarray(kernel), jnp.asarray(bias)
  bcsr, bcoo = jsparse.BCSR.from_scipy_sparse(matrix), jsparse.BCOO.from_scipy_sparse(matrix)
  sparse_jax = jax.jit(lambda m, x, b: (m @ x.T).T + b)
  layer = pruning.SparseLinear(matrix, bias, backend='auto')
  stored = pruning.encode_sparse({'fc6': {'kernel': kernel, 'bias': bias}})[1]
  # Each variant takes (numpy input, the same input as a jax array).
  variants = {
    'dense, jax.jit (XLA)': lambda x: dense_jax(x[1], kernel_jax, bias_jax),
    'scipy.sparse CSR': lambda x: (matrix @ x[0].T).T + bias,
    'jax.experimental.sparse BCSR, jit': lambda x: sparse_jax(bcsr, x[1], bias_jax),
    'jax.experimental.sparse BCOO, jit': lambda x: sparse_jax(bcoo, x[1], bias_jax),
    "pruning.SparseLinear 'auto', eager": lambda x: layer(x[1]),
  }
  results = {}
  for batch in batches:
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    x = (x, jnp.asarray(x))
    expected = np.asarray(variants['dense, jax.jit (XLA)'](x))
    for name, fn in variants.items():
      np.testing.assert_allclose(np.asarray(fn(x)), expected, rtol=1e-3, atol=1e-3, err_msg=name)
    calls = 10 if batch >= 64 else 20
    results[batch] = interleaved_medians(variants, x, rounds, calls)
  picks = ', '.join(f'batch {b}: {layer.backend_for(b)}' for b in batches)
  leaf = next(leaf for leaf in stored.leaves if leaf.path == 'fc6/kernel')
  return (
    f'### VGG-16 fc6-sized layer {n_in}x{n_out}, {100 * FC6_DENSITY:.0f} % kept '
    f'({kept:,} weights), bias added\n\n'
    + _table(results, 'dense, jax.jit (XLA)')
    + f"\n\n'auto' picked {picks}.\nstored kernel (5-bit relative indices, float32): {leaf.total:,} bytes vs "
    f'{leaf.dense_float32:,} dense float32 ({leaf.compression:.1f}x; {leaf.filler_count:,} fillers)\n'
  )


def lenet(workdir, batches, rounds, seed) -> str:
  run = export.restore_run(workdir)
  input_shape = MODELS[run.config['model']].image_shape
  result = pruning.remove_dead_neurons(run.model, run.mask, input_shape=input_shape)
  data, accounting = pruning.encode_sparse(nnx_params(result.model), result.mask)
  checkpoint = pruning.decode_sparse(data)
  original_bytes = 4 * sum(np.size(leaf) for leaf in jax.tree.leaves(nnx_params(run.model)))
  variants_of = {
    'masked model, dense (jit)': export.jitted(run.model),
    'after neuron removal, dense (jit)': export.jitted(result.model),
  }
  for backend in ('scipy', 'bcsr', 'auto'):
    fast = pruning.sparsify(result.model, checkpoint.sparse, backend=backend)
    variants_of[f'sparse FC, {backend} (jit)'] = export.jitted(fast)
    if backend != 'bcsr':
      variants_of[f'sparse FC, {backend} (eager)'] = fast
  rng = np.random.default_rng(seed)
  results = {}
  for batch in batches:
    x = jnp.asarray(rng.random((batch, *input_shape), np.float32))
    expected = np.asarray(variants_of['masked model, dense (jit)'](x))
    for name, fn in variants_of.items():
      np.testing.assert_allclose(np.asarray(fn(x)), expected, rtol=1e-4, atol=1e-4, err_msg=name)
    results[batch] = interleaved_medians(variants_of, x, rounds, 200)
  kept = pruning.mask_stats(run.mask).overall
  units = {name: f'{n.units}->{n.kept}' for name, n in result.neurons.items()}
  return (
    f'### LeNet-300-100 from `{workdir}` (round {run.round}; {kept.total / kept.kept:.1f}x '
    f'pruned; units {units})\n\n'
    + _table(results, 'masked model, dense (jit)')
    + f'\n\nstored: {accounting.total:,} bytes (5-bit indices, float32 values) vs '
    f'{original_bytes:,} bytes of dense float32 params: {original_bytes / accounting.total:.1f}x '
    'smaller\n'
  )


def nnx_params(model):
  return nnx.state(model, nnx.Param)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', action='append', default=[], help='LeNet-300-100 run(s)')
  parser.add_argument('--batches', default='1,64', help='comma-separated batch sizes')
  parser.add_argument('--rounds', type=int, default=5, help='interleaved timing rounds')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--skip-fc6', action='store_true')
  args = parser.parse_args(argv)
  batches = [int(b) for b in args.batches.split(',')]
  print(f'command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}')
  print(f'commit: {report.git_commit()}; seed {args.seed}; machine: {report.machine_description()}')
  print('median ms per call over interleaved rounds; speed-up = baseline / variant\n')
  if not args.skip_fc6:
    print(fc6(batches, args.rounds, args.seed))
  for workdir in args.workdir:
    print(lenet(workdir, batches, args.rounds, args.seed))


if __name__ == '__main__':
  main()
