"""Table 1 on real MNIST: both LeNets, several seeds, mean +- std.

Runs the default pipeline configuration of each model (``pruning.pipeline``)
for each seed, writes each run's full report under ``--runs``, and writes a
results file in Markdown with the command, commit, machine, per-seed rows,
mean +- std of test error and compression, the mean per-layer kept fractions
and wall times.

Usage:
  python benchmarks/lenet_results.py --models lenet300 lenet5 --seeds 0 1 2 \
      --output benchmarks/LENET_RESULTS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import shlex
import statistics
import sys
import time

from pruning import pipeline, report

PAPER = {'lenet300': (1.59, 12.0), 'lenet5': (0.77, 12.0)}


def _mean_std(values):
  mean = statistics.mean(values)
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{mean:.2f} ± {std:.2f}'


def run_model(model: str, seeds, runs: pathlib.Path, data_dir, resume: bool):
  rows = []
  for seed in seeds:
    config = pipeline.default_config(model, seed=seed)
    workdir = runs / f'{model}-seed{seed}'
    started = time.perf_counter()
    result = pipeline.train_and_evaluate(
      config, workdir, data_dir=data_dir, progress=False, resume=resume and workdir.exists()
    )
    elapsed = time.perf_counter() - started
    layer_rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
    report.write_report(workdir, layer_rows, result['records'], {'model': model, 'seed': seed})
    dense = next(r for r in result['records'] if r['event'] == 'round_end' and r['round'] == 0)
    final = result['records'][-1]
    rows.append(
      {
        'seed': seed,
        'dense_error': dense['test_error'],
        'error': final['test_error'],
        'compression': final['compression'],
        'layers': {r.layer: r.weights_kept_pct for r in layer_rows},
        'flops_kept': report.totals(layer_rows).flops_kept_pct,
        'wall_s': elapsed,
        'config': dataclasses.asdict(config),
      }
    )
    print(
      f'{model} seed {seed}: {final["test_error"]:.2f} % at {final["compression"]:.1f}x, {elapsed:.0f} s',
      flush=True,
    )
  return rows


def markdown(results, command: str) -> str:
  lines = [
    '# LeNet results on real MNIST (Han et al. 2015, Table 1)',
    '',
    f'- command: `{command}`',
    f'- commit: `{report.git_commit()}`',
    f'- machine: {report.machine_description()}',
    '- data: official MNIST IDX files (60000 train / 10000 test); errors are on the official test set',
    '- retraining: learning-rate rewinding (`retrain_schedule=rewind`); see each config below',
    '',
  ]
  for model, rows in results.items():
    paper_error, paper_compression = PAPER[model]
    lines += [
      f'## {model}',
      '',
      '| seed | dense error % | pruned error % | compression | FLOP kept % | wall time (s) |',
      '|---:|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
      lines.append(
        f'| {r["seed"]} | {r["dense_error"]:.2f} | {r["error"]:.2f} | {r["compression"]:.1f}x | {r["flops_kept"]:.1f} | {r["wall_s"]:.0f} |'
      )
    lines.append(
      f'| **mean ± std** | {_mean_std([r["dense_error"] for r in rows])} | {_mean_std([r["error"] for r in rows])} '
      f'| {_mean_std([r["compression"] for r in rows])} | {_mean_std([r["flops_kept"] for r in rows])} '
      f'| {_mean_std([r["wall_s"] for r in rows])} |'
    )
    lines += [
      '',
      f'Paper: {paper_error:.2f} % at {paper_compression:.0f}x.',
      '',
      '| layer | weights % kept (mean) |',
      '|---|---:|',
    ]
    for layer in rows[0]['layers']:
      lines.append(f'| {layer} | {statistics.mean(r["layers"][layer] for r in rows):.2f} |')
    config = {k: v for k, v in rows[0]['config'].items() if k != 'seed'}
    lines += ['', f'config: `{config}`', '']
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument(
    '--models', nargs='+', default=['lenet300', 'lenet5'], choices=sorted(pipeline.MODELS)
  )
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--runs', default='runs/results', help='where each run writes its outputs')
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--resume', action='store_true', help='resume runs whose workdir exists')
  parser.add_argument('--output', default='benchmarks/LENET_RESULTS.md')
  args = parser.parse_args(argv)
  command = shlex.join(['python', *sys.argv])
  results = {
    m: run_model(m, args.seeds, pathlib.Path(args.runs), args.data_dir, args.resume)
    for m in args.models
  }
  text = markdown(results, command)
  pathlib.Path(args.output).write_text(text)
  print(text)


if __name__ == '__main__':
  main()
