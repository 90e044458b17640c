"""The paper's Fig. 5 on LeNet-300-100: error vs parameters pruned, L1 vs L2, one-shot vs iterative.

Han et al. (2015, §3.1, Fig. 5) found that L1 regularisation leaves a network
in better shape right after pruning, L2 gives better accuracy once the
survivors are retrained, and iterative pruning beats pruning in one shot.
This script runs that experiment on LeNet-300-100 and MNIST:

1. Regularisation strengths are chosen on a 5000-image validation split
   carved from the training set (seed 0): the L1 and the L2 strength from
   small grids whose dense network has the lowest validation error.
2. For each seed, one dense network per regulariser (30 epochs, pipeline
   defaults otherwise) is pruned to each level of parameters pruned, with
   per-layer kept fractions in the pipeline default's proportions
   (fc1 : fc2 : fc3 = 3.5 : 7 : 25), by magnitude:

   * one-shot: one prune to the level, then 16 epochs of retraining; its
     test error right after the prune is the "without retraining" point;
   * iterative: 4 rounds of prune + 4 epochs of retraining, reaching the
     level geometrically: the same 16 retraining epochs in all.

   Retraining keeps the dense run's regulariser and uses the pipeline's
   default schedule (learning-rate rewinding).

Writes ``<output-dir>/regularization_tradeoff.{md,json,csv,png}`` from every
finished seed, with a verdict on each of the paper's three claims computed
from the runs. Runs live under ``--runs``; a killed invocation resumes.

Usage (one seed per invocation, about 10 minutes each on 2 cores; the first
also chooses the strengths, about 3 more minutes):
  python benchmarks/regularization_tradeoff.py --seeds 0
  python benchmarks/regularization_tradeoff.py --seeds 1
  python benchmarks/regularization_tradeoff.py --seeds 2
  python benchmarks/regularization_tradeoff.py --report-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys

import _common

from models import LeNet300100, layer_costs
from pruning.experiment import pipeline

LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98)  # fraction of parameters pruned
STRENGTHS = {'l1': (1e-5, 3e-5, 1e-4), 'l2': (1e-4, 5e-4, 2e-3)}
SCHEDULES = {
  'one-shot': {'rounds': 1, 'retrain_epochs': 16},
  'iterative': {'rounds': 4, 'retrain_epochs': 4},
}
VALIDATION_SIZE = 5000
SELECTION_SEED = 0


def dense_config(seed: int, regularization: str, strength: float) -> pipeline.PruneConfig:
  return _common.shipped_config(
    'lenet300',
    seed=seed,
    rounds=0,
    regularization=regularization,
    regularization_strength=strength,
    validation_size=VALIDATION_SIZE,
  )


def prune_config(dense: pipeline.PruneConfig, schedule: str, level: float) -> pipeline.PruneConfig:
  reference = _common.shipped_config('lenet300').density
  sizes = {name: cost.weights for name, cost in layer_costs(LeNet300100).items()}
  density = _common.level_densities(1 - level, reference, sizes)
  overrides = {**SCHEDULES[schedule], 'density': density}
  return dataclasses.replace(dense, **overrides)


def dense_dir(runs: pathlib.Path, seed: int, regularization: str, strength: float) -> pathlib.Path:
  return runs / f'seed{seed}' / f'dense-{regularization}-{strength:g}'


def choose_strengths(runs: pathlib.Path, data: dict, invocation: dict) -> dict:
  """Each regulariser's strength whose dense network has the lowest validation error."""
  path = runs / 'strengths.json'
  if path.exists():
    return json.loads(path.read_text())
  chosen = {}
  for regularization, grid in STRENGTHS.items():
    errors = {}
    for strength in grid:
      config = dense_config(SELECTION_SEED, regularization, strength)
      workdir = dense_dir(runs, SELECTION_SEED, regularization, strength)
      end = _common.ensure_run(config, workdir, data=data, invocation=invocation)[-1]
      errors[strength] = end['validation_error']
    best = min(grid, key=lambda s: (errors[s], s))
    chosen[regularization] = {'strength': best, 'validation_error': errors}
  runs.mkdir(parents=True, exist_ok=True)
  _common.write_json(path, chosen)
  return chosen


def run_seed(seed: int, runs: pathlib.Path, strengths: dict, data: dict, invocation: dict) -> None:
  for regularization, choice in strengths.items():
    dense = dense_config(seed, regularization, choice['strength'])
    source = dense_dir(runs, seed, regularization, choice['strength'])
    _common.ensure_run(dense, source, data=data, invocation=invocation)
    for level in LEVELS:
      for schedule in SCHEDULES:
        workdir = runs / f'seed{seed}' / f'{regularization}-{schedule}-{level:g}'
        config = prune_config(dense, schedule, level)
        _common.ensure_run(config, workdir, dense_from=source, data=data, invocation=invocation)


def collect(runs: pathlib.Path, strengths: dict) -> list[dict]:
  """One row per finished run and measurement (curve, level, seed, test error)."""
  rows = []
  seeds = sorted(int(p.name.removeprefix('seed')) for p in runs.glob('seed*'))
  for seed in seeds:
    for regularization, choice in strengths.items():
      dense = dense_config(seed, regularization, choice['strength'])
      dense_records = _common.records(dense_dir(runs, seed, regularization, choice['strength']))
      if not _common.is_complete(dense_dir(runs, seed, regularization, choice['strength']), 0):
        continue
      dense_error = dense_records[-1]['test_error']
      for level in LEVELS:
        for schedule in SCHEDULES:
          workdir = runs / f'seed{seed}' / f'{regularization}-{schedule}-{level:g}'
          config = prune_config(dense, schedule, level)
          if not _common.is_complete(workdir, config.rounds):
            continue
          records = _common.records(workdir)
          final = records[-1]
          base = {'seed': seed, 'regularization': regularization, 'level': level}
          base |= {'dense_test_error': dense_error, 'compression': final['compression']}
          if schedule == 'one-shot':
            pruned = next(r for r in records if r['event'] == 'pruned')
            rows.append(
              {
                **base,
                'curve': f'{regularization} without retraining',
                'test_error': pruned['test_error'],
              }
            )
          rows.append(
            {
              **base,
              'curve': f'{regularization} {schedule} retrained',
              'test_error': final['test_error'],
            }
          )
  return rows


CURVES = [
  f'{reg} {kind}'
  for kind in ('without retraining', 'one-shot retrained', 'iterative retrained')
  for reg in ('l1', 'l2')
]


def summarise(rows: list[dict], relative: bool = False) -> dict:
  """Mean and std over seeds of each curve at each level.

  Of the test error, or (``relative``) of its increase over the same seed's
  dense network with the same regulariser.
  """
  summary = {}
  for curve in CURVES:
    for level in LEVELS:
      errors = [
        r['test_error'] - (r['dense_test_error'] if relative else 0.0)
        for r in rows
        if (r['curve'], r['level']) == (curve, level)
      ]
      if errors:
        mean, std = _common.mean_std(errors)
        summary.setdefault(curve, {})[level] = {'mean': mean, 'std': std, 'seeds': len(errors)}
  return summary


def plot(summary: dict, dense: dict, path: pathlib.Path) -> None:
  """Left: every curve on a log scale; right: the retrained curves, zoomed in."""
  from matplotlib.figure import Figure
  from matplotlib.ticker import FuncFormatter

  fig = Figure(figsize=(10.0, 4.0))
  overview, zoom = fig.subplots(1, 2)
  colors = {'l1': 'tab:orange', 'l2': 'tab:blue'}
  styles = {'without retraining': ':', 'one-shot retrained': '--', 'iterative retrained': '-'}
  markers = {'without retraining': 'v', 'one-shot retrained': 's', 'iterative retrained': 'o'}
  for ax in (overview, zoom):
    for curve, points in summary.items():
      regularization, kind = curve.split(' ', 1)
      if ax is zoom and kind == 'without retraining':
        continue
      levels = sorted(points)
      ax.errorbar(
        [100 * level for level in levels],
        [points[level]['mean'] for level in levels],
        yerr=[points[level]['std'] for level in levels],
        color=colors[regularization],
        linestyle=styles[kind],
        marker=markers[kind],
        markersize=4,
        capsize=2,
        label=f'{regularization.upper()} {kind}',
      )
    for regularization, (mean, _) in dense.items():
      ax.axhline(mean, color=colors[regularization], linewidth=0.8, alpha=0.5)
    ax.set_xlabel('parameters pruned away (%)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  overview.set_yscale('log')
  overview.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f'{y:g}'))
  overview.yaxis.set_minor_formatter(
    FuncFormatter(lambda y, _: f'{y:g}' if str(y)[0] in '25' else '')
  )
  overview.set_ylabel('test error (%)  [thin lines: dense]')
  overview.set_title('all curves (log scale)', fontsize=10)
  zoom.set_title('after retraining', fontsize=10)
  fig.suptitle("LeNet-300-100: regularisation and retraining (cf. the paper's Fig. 5)")
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def _compare(summary, better: str, worse: str) -> tuple[list[float], list[float]]:
  """Levels where ``better`` has the lower mean error, and all levels both have."""
  levels = [lv for lv in LEVELS if lv in summary.get(better, {}) and lv in summary.get(worse, {})]
  wins = [lv for lv in levels if summary[better][lv]['mean'] < summary[worse][lv]['mean']]
  return wins, levels


def _seed_values(rows, curve: str, level: float, relative: bool) -> dict[int, float]:
  return {
    r['seed']: r['test_error'] - (r['dense_test_error'] if relative else 0.0)
    for r in rows
    if (r['curve'], r['level']) == (curve, level)
  }


def _claim(summary, rows, relative, claim: str, better: str, worse: str, quantity: str) -> str:
  wins, levels = _compare(summary, better, worse)
  if not levels:
    return f'- {claim}: no data'
  held = ', '.join(f'{100 * lv:g} %' for lv in wins) or 'none'
  every_seed = []
  for level in levels:
    good = _seed_values(rows, better, level, relative)
    bad = _seed_values(rows, worse, level, relative)
    seeds = sorted(good.keys() & bad.keys())
    if seeds and all(good[seed] < bad[seed] for seed in seeds):
      every_seed.append(level)
  margins = ', '.join(
    f'{100 * lv:g} %: {summary[worse][lv]["mean"] - summary[better][lv]["mean"]:+.2f}'
    for lv in levels
  )
  verdict = 'holds' if len(wins) == len(levels) else 'holds partly' if wins else 'does not hold'
  return (
    f'- **{claim}**: {verdict} here: {better} has the lower mean {quantity} at {len(wins)} of '
    f'{len(levels)} levels ({held}), and on every seed at {len(every_seed)} '
    f'({", ".join(f"{100 * lv:g} %" for lv in every_seed) or "none"}). '
    f'Margin ({worse} minus {better}, points): {margins}.'
  )


def _section(summary, rows, relative: bool, title: str, quantity: str) -> list[str]:
  """A table of one summary and the paper's claims checked on it."""
  lines = [
    f'## {title}',
    '',
    '| pruned | ' + ' | '.join(CURVES) + ' |',
    '|---:|' + '---:|' * len(CURVES),
  ]
  for level in LEVELS:
    cells = []
    for curve in CURVES:
      point = summary.get(curve, {}).get(level)
      cells.append(f'{point["mean"]:.2f} ± {point["std"]:.2f}' if point else '')
    lines.append(f'| {100 * level:g} % | ' + ' | '.join(cells) + ' |')
  claims = [
    ('L1 better than L2 before retraining', 'l1 without retraining', 'l2 without retraining'),
    (
      'L2 better than L1 after retraining (one-shot)',
      'l2 one-shot retrained',
      'l1 one-shot retrained',
    ),
    (
      'L2 better than L1 after retraining (iterative)',
      'l2 iterative retrained',
      'l1 iterative retrained',
    ),
    ('iterative beats one-shot (L2)', 'l2 iterative retrained', 'l2 one-shot retrained'),
    ('iterative beats one-shot (L1)', 'l1 iterative retrained', 'l1 one-shot retrained'),
  ]
  lines += ['', f"The paper's claims, checked on the {quantity}:", '']
  lines += [
    _claim(summary, rows, relative, claim, better, worse, quantity)
    for claim, better, worse in claims
  ]
  return [*lines, '']


def markdown(
  rows, summary, relative, dense, strengths, seeds, header, recorded=(), test_images=None
) -> str:
  """The results file; ``recorded`` are :func:`_common.recorded_lines` of the runs.

  ``test_images`` (from the runs' configs) sizes the noise remark.
  """
  noise = ''
  if test_images:
    error = 100 * math.sqrt(0.016 * 0.984 / test_images)
    noise = (
      f'; at 1.6 % error the binomial standard error of one measurement on {test_images:,} '
      f'images is about {error:.2f} points, so margins of a tenth of a point are within noise '
      'unless they hold on every seed'
    )
  lines = [
    "# Regularisation and retraining trade-off: LeNet-300-100 on MNIST (the paper's Fig. 5)",
    '',
    *(f'- {key}: `{value}`' for key, value in header.items()),
    *recorded,
    f'- seeds: {seeds}; seed {SELECTION_SEED} chose the strengths on the validation split',
    '- pruning: magnitude, per-layer kept fractions in the proportions of the `density` of '
    "`scripts/configs/lenet300.py` scaled to each level (each run's own in its `config.json`); "
    + '; '.join(f'{name} = `rounds={s["rounds"]}`' for name, s in SCHEDULES.items())
    + '; retraining with the dense regulariser',
    f'- errors: on the test set, mean ± std over seeds{noise}',
    '',
    '![error vs parameters pruned](regularization_tradeoff.png)',
    '',
    '## Strengths (chosen on validation, dense network, seed 0)',
    '',
    '| regulariser | strength: validation error % | chosen |',
    '|---|---|---:|',
  ]
  for regularization, choice in strengths.items():
    grid = ', '.join(f'{float(s):g}: {e:.2f}' for s, e in choice['validation_error'].items())
    lines.append(f'| {regularization.upper()} | {grid} | {choice["strength"]:g} |')
  lines += [
    '',
    'Dense test error: '
    + ', '.join(f'{reg.upper()} {m:.2f} ± {s:.2f} %' for reg, (m, s) in dense.items()),
    '',
  ]
  lines += _section(summary, rows, False, 'Test error (%) by parameters pruned', 'test error')
  lines += _section(
    relative,
    rows,
    True,
    'Increase in test error over the same dense network (points)',
    'increase over its dense network',
  )
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seeds', nargs='+', type=int, default=[])
  parser.add_argument('--runs', default='runs/regularization_tradeoff')
  parser.add_argument('--output-dir', default='benchmarks/results')
  _common.add_data_arguments(parser)
  parser.add_argument('--report-only', action='store_true', help='only aggregate finished runs')
  args = parser.parse_args(argv)
  header = _common.provenance(
    sys.argv if argv is None else ['benchmarks/regularization_tradeoff.py', *argv]
  )
  runs, out = pathlib.Path(args.runs), pathlib.Path(args.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  if args.report_only and not (runs / 'strengths.json').exists():
    sys.exit(f'no strengths chosen yet in {runs}')
  strengths = choose_strengths(runs, _common.data_options(args), header)
  if not args.report_only:
    for seed in args.seeds:
      run_seed(seed, runs, strengths, _common.data_options(args), header)
  rows = collect(runs, strengths)
  if not rows:
    sys.exit('no finished runs to report')
  seeds = sorted({r['seed'] for r in rows})
  summary = summarise(rows)
  dense = {
    reg: _common.mean_std(
      [
        next(r['dense_test_error'] for r in rows if (r['seed'], r['regularization']) == (s, reg))
        for s in seeds
      ]
    )
    for reg in strengths
  }
  header['runs made at commits'] = _common.run_commits(sorted(runs.glob('seed*/*')))
  plot(summary, dense, out / 'regularization_tradeoff.png')
  _common.write_json(
    out / 'regularization_tradeoff.json',
    {
      'header': header,
      'seeds': seeds,
      'strengths': strengths,
      'dense': dense,
      'summary': {
        curve: {str(k): v for k, v in points.items()} for curve, points in summary.items()
      },
      'runs': rows,
    },
  )
  csv = ['seed,regularization,curve,level,compression,test_error,dense_test_error']
  csv += [
    f'{r["seed"]},{r["regularization"]},{r["curve"]},{r["level"]!r},{r["compression"]!r},'
    f'{r["test_error"]!r},{r["dense_test_error"]!r}'
    for r in rows
  ]
  _common.write_text(out / 'regularization_tradeoff.csv', '\n'.join(csv) + '\n')
  relative = summarise(rows, relative=True)
  workdirs = sorted(runs.glob('seed*/*'))
  sizes = [s for w in workdirs if (c := _common.run_config(w)) and (s := _common.data_sizes(c))]
  test_images = min(s['test'] for s in sizes) if sizes else None
  text = markdown(
    rows,
    summary,
    relative,
    dense,
    strengths,
    seeds,
    header,
    _common.recorded_lines(workdirs),
    test_images,
  )
  _common.write_text(out / 'regularization_tradeoff.md', text)
  print(text)


if __name__ == '__main__':
  main()
