"""Magnitude vs random pruning on LeNet-300-100: test error at five compression levels.

Does magnitude matter? Each seed trains one dense LeNet-300-100 (the pipeline
defaults), then prunes and retrains it to each compression level twice: with
the magnitude criterion (``criterion='sparsity'``) and with random pruning of
exactly the same per-layer counts (``criterion='random'``), both iterative
with the pipeline's default rounds, retraining schedule and L2. The per-layer
kept fractions at a level keep the default's proportions
(fc1 : fc2 : fc3 = 3.5 : 7 : 25), scaled to the level's overall compression.
No hyperparameter is tuned: all are the pipeline defaults.

Writes ``<output-dir>/magnitude_vs_random.{md,json,csv,png}`` from every
finished seed; the runs live under ``--runs`` and a killed invocation resumes.

Usage (one seed per invocation, about 8 minutes each on 2 cores):
  python benchmarks/magnitude_vs_random.py --seeds 0
  python benchmarks/magnitude_vs_random.py --seeds 1 2
  python benchmarks/magnitude_vs_random.py --seeds 0 1 2 --report-only
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import _common

from models import LeNet300100, layer_costs

COMPRESSION = (5, 10, 20, 40, 80)
CRITERIA = {'magnitude': 'sparsity', 'random': 'random'}


def config_for(seed: int, criterion: str | None, compression: float | None):
  """The dense config (``criterion=None``) or a pruning config of the experiment."""
  if criterion is None:
    return _common.shipped_config('lenet300', seed=seed, rounds=0)
  reference = _common.shipped_config('lenet300').density
  sizes = {name: cost.weights for name, cost in layer_costs(LeNet300100).items()}
  density = _common.level_densities(1 / compression, reference, sizes)
  return _common.shipped_config(
    'lenet300', seed=seed, criterion=CRITERIA[criterion], density=density
  )


def run_seed(seed: int, runs: pathlib.Path, data: dict, invocation: dict) -> None:
  dense_dir = runs / f'seed{seed}' / 'dense'
  _common.ensure_run(config_for(seed, None, None), dense_dir, data=data, invocation=invocation)
  for compression in COMPRESSION:
    for criterion in CRITERIA:
      config = config_for(seed, criterion, compression)
      workdir = runs / f'seed{seed}' / f'{criterion}-{compression}x'
      _common.ensure_run(config, workdir, dense_from=dense_dir, data=data, invocation=invocation)


def collect(seeds, runs: pathlib.Path) -> list[dict]:
  """One row per finished run: seed, criterion, level, final test error and compression."""
  rows = []
  for seed in seeds:
    dense = _common.records(runs / f'seed{seed}' / 'dense')
    if not dense:
      continue
    dense_error = dense[-1]['test_error']
    for compression in COMPRESSION:
      for criterion in CRITERIA:
        config = config_for(seed, criterion, compression)
        workdir = runs / f'seed{seed}' / f'{criterion}-{compression}x'
        if not _common.is_complete(workdir, config.rounds):
          continue
        final = _common.records(workdir)[-1]
        rows.append(
          {
            'seed': seed,
            'criterion': criterion,
            'level': compression,
            'compression': final['compression'],
            'test_error': final['test_error'],
            'dense_test_error': dense_error,
            'density': dict(config.density),
          }
        )
  return rows


def summarise(rows: list[dict]) -> dict:
  summary = {}
  for criterion in CRITERIA:
    for compression in COMPRESSION:
      errors = [
        r['test_error'] for r in rows if (r['criterion'], r['level']) == (criterion, compression)
      ]
      if errors:
        mean, std = _common.mean_std(errors)
        summary[f'{criterion}-{compression}x'] = {
          'criterion': criterion,
          'level': compression,
          'seeds': len(errors),
          'mean': mean,
          'std': std,
        }
  return summary


def plot(summary: dict, dense: tuple[float, float], path: pathlib.Path) -> None:
  from matplotlib.figure import Figure
  from matplotlib.ticker import FuncFormatter, NullFormatter

  fig = Figure(figsize=(5.5, 3.8))
  ax = fig.subplots()
  for criterion, style in (('magnitude', 'o-'), ('random', 's--')):
    points = [v for v in summary.values() if v['criterion'] == criterion]
    ax.errorbar(
      [p['level'] for p in points],
      [p['mean'] for p in points],
      yerr=[p['std'] for p in points],
      fmt=style,
      capsize=3,
      markersize=4,
      label=f'{criterion} pruning + retraining',
    )
  ax.axhline(dense[0], color='grey', linestyle=':', label=f'dense ({dense[0]:.2f} %)')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f'{y:g}'))
  ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f'{y:g}' if str(y)[0] in '25' else ''))
  ax.set_xticks(COMPRESSION, [f'{c}x' for c in COMPRESSION])
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set_xlabel('compression (weights before / after)')
  ax.set_ylabel('test error (%)')
  ax.set_title('LeNet-300-100: magnitude vs random pruning')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def markdown(rows, summary, dense, seeds, header, recorded=()) -> str:
  """The results file; ``recorded`` are :func:`_common.recorded_lines` of the runs."""
  lines = [
    '# Magnitude vs random pruning: LeNet-300-100 on MNIST',
    '',
    *(f'- {key}: `{value}`' for key, value in header.items()),
    *recorded,
    f'- seeds: {seeds}',
    '- per-layer kept fractions: the proportions of the `density` of `scripts/configs/lenet300.py` '
    "scaled to each level (each run's own in its `config.json`); no hyperparameter tuned",
    '- errors: on the test set, after the last retraining round',
    '',
    '![test error vs compression](magnitude_vs_random.png)',
    '',
    f'Dense: {dense[0]:.2f} ± {dense[1]:.2f} % test error.',
    '',
    '| compression | magnitude: test error % | random: test error % | random - magnitude |',
    '|---:|---:|---:|---:|',
  ]
  verdicts = []
  for compression in COMPRESSION:
    m, r = summary.get(f'magnitude-{compression}x'), summary.get(f'random-{compression}x')
    if not (m and r):
      continue
    lines.append(
      f'| {compression}x | {m["mean"]:.2f} ± {m["std"]:.2f} (n={m["seeds"]}) '
      f'| {r["mean"]:.2f} ± {r["std"]:.2f} (n={r["seeds"]}) | {r["mean"] - m["mean"]:+.2f} |'
    )
    errors = {
      (x['seed'], x['criterion']): x['test_error'] for x in rows if x['level'] == compression
    }
    paired = [s for s in seeds if (s, 'magnitude') in errors and (s, 'random') in errors]
    wins = sum(errors[s, 'magnitude'] < errors[s, 'random'] for s in paired)
    verdicts.append((compression, wins, len(paired)))
  lines += ['', '## Verdict (computed from the runs above)', '']
  for compression, wins, pairs in verdicts:
    lines.append(
      f'- {compression}x: magnitude pruning has the lower test error on {wins} of {pairs} seeds'
    )
  lines += [
    '',
    'Per-layer kept fractions (identical for both criteria; exact counts per layer):',
    '',
    '| compression | ' + ' | '.join(rows[0]['density']) + ' |',
    '|---:|' + '---:|' * len(rows[0]['density']),
  ]
  for compression in COMPRESSION:
    density = next((r['density'] for r in rows if r['level'] == compression), None)
    if density:
      lines.append(
        f'| {compression}x | ' + ' | '.join(f'{100 * d:.2f} %' for d in density.values()) + ' |'
      )
  return '\n'.join(lines) + '\n'


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--runs', default='runs/magnitude_vs_random')
  parser.add_argument('--output-dir', default='benchmarks/results')
  _common.add_data_arguments(parser)
  parser.add_argument('--report-only', action='store_true', help='only aggregate finished runs')
  args = parser.parse_args(argv)
  header = _common.provenance(
    sys.argv if argv is None else ['benchmarks/magnitude_vs_random.py', *argv]
  )
  runs, out = pathlib.Path(args.runs), pathlib.Path(args.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  if not args.report_only:
    for seed in args.seeds:
      run_seed(seed, runs, _common.data_options(args), header)
  rows = collect(sorted(int(p.name.removeprefix('seed')) for p in runs.glob('seed*')), runs)
  done = sorted({r['seed'] for r in rows})
  if not rows:
    sys.exit('no finished runs to report')
  summary = summarise(rows)
  dense = _common.mean_std(
    [next(r['dense_test_error'] for r in rows if r['seed'] == s) for s in done]
  )
  header['runs made at commits'] = _common.run_commits(sorted(runs.glob('seed*/*')))
  plot(summary, dense, out / 'magnitude_vs_random.png')
  _common.write_json(
    out / 'magnitude_vs_random.json',
    {'header': header, 'seeds': done, 'dense': dense, 'summary': summary, 'runs': rows},
  )
  csv = ['seed,criterion,level,compression,test_error,dense_test_error']
  csv += [
    f'{r["seed"]},{r["criterion"]},{r["level"]},{r["compression"]!r},{r["test_error"]!r},'
    f'{r["dense_test_error"]!r}'
    for r in rows
  ]
  _common.write_text(out / 'magnitude_vs_random.csv', '\n'.join(csv) + '\n')
  recorded = _common.recorded_lines(sorted(runs.glob('seed*/*')))
  text = markdown(rows, summary, dense, done, header, recorded)
  _common.write_text(out / 'magnitude_vs_random.md', text)
  print(text)


if __name__ == '__main__':
  main()
