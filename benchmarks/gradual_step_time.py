"""Cost of ``gradual_pruning`` in a jitted train step: dense vs masked vs gradual.

On LeNet-300-100 (batch 128, SGD momentum 0.9, CPU by default), times one
jitted train step with

* ``dense``: the plain optimizer;
* ``masked``: ``masked_optimizer`` at 90 % sparsity (the paper's retraining);
* ``gradual per-layer`` / ``gradual global``: ``gradual_pruning`` on steps
  where the schedule does *not* update the mask (the mask held at 90 %): the
  price of the step counter and the ``lax.cond`` on ordinary steps;
* ``update per-layer`` / ``update global``: ``gradual_pruning`` with a
  schedule that recomputes the mask at *every* step, i.e. the cost of a
  mask-update step (a schedule with ``delta_t`` of hundreds of steps pays it
  once per ``delta_t``).

All variants run in alternating blocks so that drift in the machine's speed
hits them alike; each step is timed to completion (``block_until_ready``)
and the median over all timed steps is reported, with the ratio to dense.
Prints a Markdown table and writes it, with the command, commit, machine and
jax version of the run, to ``benchmarks/results/gradual_step_time.md``.

Usage:
  python benchmarks/gradual_step_time.py [--steps 400] [--batch 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import statistics
import sys

import _timing
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import pruning
from models.registry import MODELS
from pruning.experiment import report
from pruning.gradual import GradualSchedule, gradual_pruning

RESULTS = pathlib.Path(__file__).resolve().parent / 'results' / 'gradual_step_time.md'
SPARSITY = 0.9
NEVER = 10**9  # a delta_t no run reaches: after the first update, no other


def variants(inner, params):
  """The optimizers timed, by row label."""
  # Step 0 prunes to 90 % (in the warm-up); no later timed step updates the mask.
  held = GradualSchedule(
    t0=0, n=1, delta_t=NEVER, initial_sparsity=SPARSITY, final_sparsity=SPARSITY
  )
  # Every step is an update step (the sparsity creeping from 50 % up to 90 %).
  every = GradualSchedule(t0=0, n=NEVER, delta_t=1, initial_sparsity=0.5, final_sparsity=SPARSITY)
  return {
    'dense': inner,
    'masked': pruning.masked_optimizer(inner, pruning.sparsity_mask(params, SPARSITY)),
    'gradual per-layer (no update)': gradual_pruning(inner, held),
    'gradual global (no update)': gradual_pruning(inner, held, scope='global'),
    'update per-layer (every step)': gradual_pruning(inner, every),
    'update global (every step)': gradual_pruning(inner, every, scope='global'),
  }


def benchmark(model_name, steps, batch, blocks=10, seed=0):
  """Median step time (s) per variant, and the number of timed steps each."""
  spec = MODELS[model_name]
  graphdef, params = nnx.split(spec.build(nnx.Rngs(seed)), nnx.Param)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((batch, *spec.image_shape)), jnp.float32)
  y = jnp.asarray(rng.integers(0, spec.num_classes, batch), jnp.int32)
  txs = variants(optax.sgd(0.01, momentum=0.9), params)
  runs, times = {}, {key: [] for key in txs}
  for key, tx in txs.items():
    own = jax.tree.map(jnp.copy, params)
    step = _timing.sgd_train_step(graphdef, tx)
    carry, _ = _timing.time_steps(step, (own, tx.init(own)), x, y, 20)  # compile and warm up
    runs[key] = (step, carry)
  per_block = max(1, steps // blocks)
  for _ in range(blocks):
    for key, (step, carry) in runs.items():
      carry, block = _timing.time_steps(step, carry, x, y, per_block)
      runs[key] = (step, carry)
      times[key].extend(block)
  for key in txs:
    if key == 'dense':
      continue
    params_now, state = runs[key][1]
    mask = pruning.get_mask(state)
    weights = nnx.to_pure_dict(params_now)
    for name, leaf in pruning.mask_stats(mask).layers.items():
      layer, _ = name.rsplit('/', 1)
      kernel = np.asarray(weights[layer]['kernel'])
      kept = np.asarray(mask[layer]['kernel'])
      if (kernel[~kept] != 0).any() or leaf.kept == leaf.total:
        raise AssertionError(f'{key}: {name} is not pruned as it should be')
  return {key: statistics.median(t) for key, t in times.items()}, len(times['dense'])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=400, help='timed steps per variant and repeat')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=3, help='independent repeats; median taken')
  parser.add_argument('--model', default='lenet300', choices=['lenet300', 'lenet5'])
  parser.add_argument('--output', default=str(RESULTS))
  args = parser.parse_args(argv)
  argv = sys.argv if argv is None else [sys.argv[0], *argv]

  repeats = []
  for repeat in range(args.repeats):
    medians, count = benchmark(args.model, args.steps, args.batch, seed=repeat)
    repeats.append(medians)
    print(
      f'repeat {repeat}: ' + ', '.join(f'{k} {1e3 * v:.3f} ms' for k, v in medians.items()),
      flush=True,
    )
  dense = [r['dense'] for r in repeats]
  lines = [
    f'# gradual_pruning step time ({args.model}, {jax.default_backend().upper()})',
    '',
    f'- command: `{shlex.join(["python", *argv])}`',
    f'- commit: {report.git_commit()}',
    f'- machine: {report.machine_description()}',
    f'- jax {jax.__version__}, optax {optax.__version__}',
    f'- batch {args.batch}, SGD momentum 0.9, {SPARSITY:.0%} sparsity; {args.repeats} repeats '
    f'of {count} timed steps per variant (alternating blocks); each cell: median over a '
    "repeat's steps, then median (min-max) over repeats. Ratio: per repeat, then median.",
    '',
    '| variant | step (ms) | min-max over repeats (ms) | / dense |',
    '|---|---:|---:|---:|',
  ]
  for key in repeats[0]:
    values = [r[key] for r in repeats]
    ratios = [v / d for v, d in zip(values, dense, strict=True)]
    lines.append(
      f'| {key} | {1e3 * statistics.median(values):.3f} | '
      f'{1e3 * min(values):.3f}-{1e3 * max(values):.3f} | {statistics.median(ratios):.3f} |'
    )
  text = '\n'.join(lines) + '\n'
  print('\n' + text)
  pathlib.Path(args.output).write_text(text)
  print(f'written to {args.output}')


if __name__ == '__main__':
  main()
