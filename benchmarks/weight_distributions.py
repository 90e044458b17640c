"""A LeNet-300-100 layer's weights before pruning, after pruning and after retraining.

Trains the default dense LeNet-300-100 (or reuses a dense run with the same
configuration, ``--dense-from``), prunes it once by magnitude to ``--pruned``
of its weights (per-layer kept fractions in the pipeline default's
proportions), retrains for ``--retrain-epochs`` and draws the three
histograms of ``--layer`` with :func:`pruning.weight_histograms`.

Writes ``<output-dir>/weight_distributions.{md,json,png}``.

Usage (about a minute on 2 cores; seconds more with --dense-from):
  python benchmarks/weight_distributions.py
  python benchmarks/weight_distributions.py --dense-from runs/magnitude_vs_random/seed0/dense
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

import _common
import numpy as np

from models import LeNet300100, layer_costs
from pruning import plot_weight_distributions, weight_histograms
from pruning.experiment import pipeline


def _kernel(tree, layer: str) -> np.ndarray:
  leaf = tree[layer]['kernel']
  return np.asarray(leaf.get_value() if hasattr(leaf, 'get_value') else leaf)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--layer', default='fc1')
  parser.add_argument('--pruned', type=float, default=0.9, help='fraction of all weights pruned')
  parser.add_argument('--retrain-epochs', type=int, default=16)
  parser.add_argument('--runs', default='runs/weight_distributions')
  parser.add_argument('--dense-from', default=None, help='a finished dense run (rounds=0) to reuse')
  parser.add_argument('--output-dir', default='benchmarks/results')
  _common.add_data_arguments(parser)
  args = parser.parse_args(argv)
  header = _common.provenance(
    sys.argv if argv is None else ['benchmarks/weight_distributions.py', *argv]
  )
  runs, out = pathlib.Path(args.runs), pathlib.Path(args.output_dir)
  out.mkdir(parents=True, exist_ok=True)

  dense_config = _common.shipped_config('lenet300', seed=args.seed, rounds=0)
  dense_dir = pathlib.Path(args.dense_from) if args.dense_from else runs / f'seed{args.seed}-dense'
  _common.ensure_run(dense_config, dense_dir, data=_common.data_options(args), invocation=header)
  dense = pipeline.train_and_evaluate(
    dense_config, dense_dir, resume=True, progress=False, **_common.data_options(args)
  )
  sizes = {name: cost.weights for name, cost in layer_costs(LeNet300100).items()}
  density = _common.level_densities(1 - args.pruned, dense_config.density, sizes)
  config = dataclasses.replace(
    dense_config, rounds=1, retrain_epochs=args.retrain_epochs, density=density
  )
  workdir = runs / f'seed{args.seed}-one-shot-{args.pruned:g}'
  _common.ensure_run(
    config, workdir, dense_from=dense_dir, data=_common.data_options(args), invocation=header
  )
  pruned = pipeline.train_and_evaluate(
    config, workdir, resume=True, progress=False, **_common.data_options(args)
  )

  histograms = weight_histograms(dense['params'], pruned['mask'], pruned['params'], args.layer)
  kept = histograms['after pruning'].kept / histograms['after pruning'].total
  records = pruned['records']
  errors = {
    'dense': dense['records'][-1]['test_error'],
    'after pruning': next(r for r in records if r['event'] == 'pruned')['test_error'],
    'after retraining': records[-1]['test_error'],
  }
  title = (
    f'LeNet-300-100 {args.layer}: one-shot magnitude pruning to {100 * kept:.1f} % kept, '
    f'{args.retrain_epochs} epochs of retraining'
  )
  plot_weight_distributions(histograms, out / 'weight_distributions.png', title=title)
  kept_mask = _kernel(pruned['mask'], args.layer)
  threshold = float(np.abs(_kernel(dense['params'], args.layer)[kept_mask]).min())
  retrained = np.abs(_kernel(pruned['params'], args.layer)[kept_mask])
  inside = float(np.mean(retrained < threshold))
  payload = {
    'header': header,
    'layer': args.layer,
    'density': density,
    'smallest kept magnitude': threshold,
    'kept weights inside the gap after retraining': inside,
    'test_error': errors,
    'histograms': {
      stage: {'counts': h.counts.tolist(), 'edges': h.edges.tolist(), 'kept': h.kept}
      for stage, h in histograms.items()
    },
  }
  _common.write_json(out / 'weight_distributions.json', payload)
  lines = [
    '# Weight distributions before pruning, after pruning and after retraining',
    '',
    *(f'- {key}: `{value}`' for key, value in header.items()),
    *_common.recorded_lines([dense_dir, workdir]),
    f'- seed: {args.seed}',
    f'- pruning: one-shot magnitude to {100 * args.pruned:g} % of all weights pruned '
    f'({", ".join(f"{k} {100 * v:.2f} %" for k, v in density.items())} kept), then '
    f'{config.retrain_epochs} epochs of retraining (schedule and regulariser as in its recipe)',
    f'- layer shown: {args.layer}; pruned weights (exactly 0) are left out of the last two panels',
    '',
    '![weight distributions](weight_distributions.png)',
    '',
    f'Pruning removed every {args.layer} weight with |w| < {threshold:.4f} (the smallest kept '
    f'magnitude). After retraining, {100 * inside:.1f} % of the kept weights lie inside that '
    f'gap (|w| < {threshold:.4f}); the pruned weights stay exactly 0.',
    '',
    '| stage | test error % |',
    '|---|---:|',
    *(f'| {stage} | {error:.2f} |' for stage, error in errors.items()),
    '',
  ]
  text = '\n'.join(lines)
  _common.write_text(out / 'weight_distributions.md', text)
  print(text)


if __name__ == '__main__':
  main()
