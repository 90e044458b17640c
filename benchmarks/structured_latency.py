"""Does a structurally pruned model run faster? Measured latency and step time against MACs.

For each model, the dense network and copies with a fraction of every
prunable group's units cut out (L1 norm per group, the same fraction in each,
:func:`pruning.structured.select_units`; groups that removal cannot shrink,
such as an option-A ResNet's residual stream, stay whole, as in a pipeline
run) are timed side by side on this machine's default backend:

* inference latency: the jitted forward pass in evaluation mode, at each
  ``--batches`` size;
* a training step: cross-entropy, SGD with momentum, at ``--train-batch``.

The smaller models come from :func:`pruning.structured.remove_units`, which
checks their outputs against the masked dense model's. Weights are a random
initialisation: the time of a dense computation does not depend on the
values, only on the shapes, so the trained networks of a run time the same.
Each cell is the median over ``--repeats`` timed calls; the variants are
timed in alternating blocks so that a slow moment of the machine falls on
all of them. The ratios are dense / pruned (above 1: faster).

Writes ``benchmarks/results/structured_latency.json`` (one entry per model
and fraction, with the command, commit and machine) and a Markdown table
beside it. Run it under the team's heavy-job lock::

  flock /tmp/heavy.lock .venv/bin/python benchmarks/structured_latency.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import _common
import _timing
import jax
import numpy as np
from flax import nnx

from models import MODELS, layer_costs
from pruning import apply_mask, structured
from pruning.experiment import structured_rounds

RESULTS = pathlib.Path(__file__).resolve().parent / 'results' / 'structured_latency'


def pruned_models(
  model_name: str, fractions: Sequence[float], seed: int = 0, round_to: int = 1
) -> dict[float, nnx.Module]:
  """The dense model (fraction 0) and, per fraction, a copy with that share of each
  prunable group's units removed (L1 per group), all in evaluation mode."""
  spec = MODELS[model_name]
  dense = spec.build(nnx.Rngs(seed))
  dense.eval()
  groups, _ = structured_rounds.unit_groups(dense, spec.image_shape)
  params = nnx.state(dense, nnx.Param)
  scores = structured.group_scores(params, groups, 'l1')
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((8, *spec.image_shape)).astype(np.float32)
  out = {0.0: dense}
  for fraction in fractions:
    plan = structured_rounds.full_plan(params, groups)
    plan |= structured.select_units(groups, scores, fraction, round_to=round_to)
    masked = nnx.clone(dense)
    nnx.update(masked, apply_mask(params, structured.structured_mask(params, groups, plan)))
    out[fraction] = structured.remove_units(masked, groups, plan, images)
  return out


def _costs(model: nnx.Module, image_shape: Sequence[int]) -> tuple[int, int]:
  """(parameters, MACs per image) of ``model``."""
  params = sum(int(np.size(v)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return params, sum(c.macs for c in layer_costs(model, image_shape).values())


def _table(entries: list[dict[str, Any]], keys: list[str]) -> list[str]:
  header = '| model | units removed | params | MACs | MACs ratio | ' + ' | '.join(
    f'{key} (ms) | ratio' for key in keys
  )
  lines = [header + ' |', '|---|---:|---:|---:|---:|' + '---:|---:|' * len(keys)]
  for e in entries:
    cells = [
      e['model'],
      f'{e["units_removed"]:.0%}',
      f'{e["params"]:,}',
      f'{e["macs"]:,}',
      f'{e["macs_ratio"]:.2f}x',
    ]
    for key in keys:
      cells += [f'{1e3 * e["seconds"][key]:.2f}', f'{e["speedup"][key]:.2f}x']
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', nargs='+', default=['resnet20'], choices=sorted(MODELS))
  parser.add_argument('--fractions', nargs='+', type=float, default=[0.25, 0.5, 0.75])
  parser.add_argument('--batches', nargs='+', type=int, default=[1, 64])
  parser.add_argument('--train-batch', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=20, help='timed calls per cell')
  parser.add_argument('--round-to', type=int, default=1)
  parser.add_argument('--output', default=str(RESULTS), help='path without the suffix')
  args = parser.parse_args(argv)
  for f in args.fractions:
    if not 0 < f < 1:
      parser.error(f'--fractions: {f} is not a fraction of units in (0, 1)')
  provenance = _common.provenance(None if argv is None else [sys.argv[0], *argv])
  entries = []
  for name in args.models:
    spec = MODELS[name]
    models = pruned_models(name, args.fractions, round_to=args.round_to)
    seconds = _timing.median_times(
      models,
      spec.image_shape,
      spec.num_classes,
      args.batches,
      args.train_batch,
      args.repeats,
    )
    dense_params, dense_macs = _costs(models[0.0], spec.image_shape)
    for fraction, model in models.items():
      params, macs = _costs(model, spec.image_shape)
      entry = {
        'model': name,
        'units_removed': fraction,
        'params': params,
        'macs': macs,
        'params_ratio': dense_params / params,
        'macs_ratio': dense_macs / macs,
        'seconds': seconds[fraction],
        'speedup': {k: seconds[0.0][k] / v for k, v in seconds[fraction].items()},
        'device': jax.devices()[0].device_kind,
        **provenance,
      }
      entries.append(entry)
      print(
        f'{name} {fraction:.0%} removed: MACs {entry["macs_ratio"]:.2f}x, '
        + ', '.join(
          f'{k} {1e3 * s:.2f} ms ({entry["speedup"][k]:.2f}x)' for k, s in entry['seconds'].items()
        ),
        flush=True,
      )
  keys = list(entries[0]['seconds'])
  lines = [
    '# Structured pruning: measured time against MACs',
    '',
    f'- command: `{provenance["command"]}`',
    f'- commit: {provenance["commit"]}',
    f'- machine: {provenance["machine"]}',
    f'- each cell: median of {args.repeats} timed calls (alternating blocks); forward in '
    f'evaluation mode, train = cross-entropy + SGD momentum; units removed by L1 norm, the same '
    'fraction of every prunable group (groups removal cannot shrink kept whole); ratio = dense / '
    'pruned',
    '',
    *_table(entries, keys),
  ]
  _common.write_json(f'{args.output}.json', entries)
  _common.write_text(f'{args.output}.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))
  print(f'written to {args.output}.json and .md')


if __name__ == '__main__':
  main()
