"""Table 1 on real MNIST: both LeNets, several seeds, mean ± std, in a results file.

Each (model, seed) trains its dense network once, the model's recipe
(``scripts/configs/<model>.py``, as ``scripts/prune_lenet.py`` runs it) with
``rounds=0``, in ``<runs>/<model>-dense-seed<seed>``; each retraining
schedule of that seed is then one run in ``<runs>/<model>-<schedule>-seed<seed>``
that starts from that very dense network (:func:`pruning.experiment.pipeline.start_from_dense`),
so schedules are compared on the same dense weights. A finished run leaves a
``summary.json`` (dense and final test error, compression, per-layer rows,
wall time, the dense run it started from, and the command, commit, uncommitted
files and machine as recorded when it started); an unfinished one is resumed
from its last complete round. Every invocation runs what it is asked to, then
rewrites the results file from *all* finished runs under ``--runs``, so the
work can be split into pieces of one seed each (each under the team lock):

  python benchmarks/lenet_results.py --models lenet300 --seeds 0 1 2 \
      --schedules rewind fine-tune
  python benchmarks/lenet_results.py --models lenet5 --seeds 0
  python benchmarks/lenet_results.py --models lenet5 --seeds 1
  python benchmarks/lenet_results.py --models lenet5 --seeds 2

``--tuning DIR ...`` adds the hyperparameter search to the file: each run
under the folders (made with ``scripts/prune_lenet.py --validation-size N``),
the settings it changed from the chosen configuration, its validation error,
the mean over seeds per configuration, and its command.
``--notes FILE`` puts a hand-written reading of the figures at the top.
``--earlier FILE`` appends sections written by an earlier version of this
script from runs that are not under ``--runs`` (kept verbatim, under a
heading that says so and lists the commits named in them).
``--write-only`` rewrites the file without running anything.

Every provenance line of the results file (commits, machine, data, recipe,
wall times) is read from the runs' summaries; none is typed here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any

import _common

from pruning.experiment import pipeline, report
from pruning.experiment.config import AFTER_DENSE_FIELDS

NAMES = {'lenet300': 'LeNet-300-100', 'lenet5': 'LeNet-5'}
# Han et al. 2015, Table 1 (error %, compression) and Tables 2-3 (weights % kept).
PAPER = {
  'lenet300': {'error': 1.59, 'compression': 12.0, 'layers': {'fc1': 8, 'fc2': 9, 'fc3': 26}},
  'lenet5': {
    'error': 0.77,
    'compression': 12.0,
    'layers': {'conv1': 66, 'conv2': 12, 'fc1': 8, 'fc2': 19},
  },
}
# The targets: (max error %, min compression) to match the paper and
# to aim for, and the wall-time budget of one run on 2 CPU cores.
TARGETS = {
  'lenet300': {'paper': (1.64, 12.0), 'aim': (1.60, 20.0), 'wall_s': 180},
  'lenet5': {'paper': (0.80, 12.0), 'aim': (0.80, 25.0), 'wall_s': 1200},
}


def run_dir(runs: pathlib.Path, model: str, schedule: str, seed: int) -> pathlib.Path:
  return runs / f'{model}-{schedule}-seed{seed}'


def dense_dir(runs: pathlib.Path, model: str, seed: int) -> pathlib.Path:
  """The dense run (``rounds=0``) every schedule of ``(model, seed)`` starts from."""
  return runs / f'{model}-dense-seed{seed}'


def _uncommitted() -> list[str]:
  """Tracked files with uncommitted changes (what a ``-dirty`` commit had on top)."""
  try:
    status = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no'],
      cwd=pathlib.Path(__file__).resolve().parent,
      capture_output=True,
      text=True,
      check=True,
    ).stdout
  except (OSError, subprocess.CalledProcessError):
    return []
  return sorted(line[3:] for line in status.splitlines())


def _started() -> dict[str, Any]:
  """Commit, uncommitted files and machine, taken when a run starts (later edits do not count)."""
  return {
    'commit': report.git_commit(),
    'uncommitted': _uncommitted(),
    'machine': report.machine_description(),
  }


def _dense_records(workdir: pathlib.Path) -> list[dict[str, Any]]:
  """The round-0 (dense) records of a run's ``metrics.jsonl``."""
  return [r for r in _common.records(workdir) if r['round'] == 0]


def _write_summary(workdir: pathlib.Path, summary: dict[str, Any]) -> None:
  tmp = workdir / 'summary.json.tmp'
  tmp.write_text(json.dumps(summary, indent=2) + '\n')
  tmp.replace(workdir / 'summary.json')


def run_dense(
  model: str, seed: int, runs: pathlib.Path, data: dict, command: str
) -> dict[str, Any]:
  """Trains (or resumes) the dense network of ``(model, seed)``; returns its ``summary.json``."""
  workdir = dense_dir(runs, model, seed)
  if (workdir / 'summary.json').exists():
    return json.loads((workdir / 'summary.json').read_text())
  config = _common.shipped_config(model, seed=seed, rounds=0)
  resumed = (workdir / 'config.json').exists()
  provenance = _started()
  started = time.perf_counter()
  result = pipeline.train_and_evaluate(config, workdir, progress=False, resume=resumed, **data)
  elapsed = time.perf_counter() - started
  dense = next(r for r in result['records'] if r['event'] == 'round_end' and r['round'] == 0)
  summary = {
    'model': model,
    'schedule': 'dense',
    'seed': seed,
    'dense_error': dense['test_error'],
    'wall_s': elapsed,
    'resumed': resumed,
    'command': command,
    **provenance,
    'config': dataclasses.asdict(config),
  }
  _write_summary(workdir, summary)
  print(f'{model} dense seed {seed}: {dense["test_error"]:.2f} %, {elapsed:.0f} s', flush=True)
  return summary


def run_one(
  model: str, schedule: str, seed: int, runs: pathlib.Path, data: dict, command: str
) -> dict[str, Any]:
  """Runs (or resumes) one schedule from the seed's dense network; writes its ``summary.json``."""
  source = dense_dir(runs, model, seed)
  dense_summary = run_dense(model, seed, runs, data, command)
  config = _common.shipped_config(model, seed=seed, retrain_schedule=schedule)
  workdir = run_dir(runs, model, schedule, seed)
  resumed = (workdir / 'config.json').exists()
  if not resumed and not (workdir / 'checkpoints').exists():
    pipeline.start_from_dense(source, workdir, config)
  provenance = _started()
  started = time.perf_counter()
  result = pipeline.train_and_evaluate(config, workdir, progress=False, resume=True, **data)
  elapsed = time.perf_counter() - started
  rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
  header = {
    'model': model,
    'seed': seed,
    'retrain schedule': schedule,
    'dense network from': str(source),
    'command': command,
    'commit': provenance['commit'],
    'machine': provenance['machine'],
  }
  report.write_report(workdir, rows, result['records'], header)
  dense = next(r for r in result['records'] if r['event'] == 'round_end' and r['round'] == 0)
  final = result['records'][-1]
  total = report.totals(rows)
  # Read back, not assumed: a run begun before it had a dense run would differ here.
  shared = _dense_records(workdir) == _dense_records(source)
  summary = {
    'model': model,
    'schedule': schedule,
    'seed': seed,
    'dense_error': dense['test_error'],
    'error': final['test_error'],
    'compression': final['compression'],
    'weights_kept_pct': total.weights_kept_pct,
    'flops_kept_pct': total.flops_kept_pct,
    'layers': [r._asdict() for r in rows],
    'wall_s': elapsed,
    'resumed': resumed,
    'dense_run': str(source) if shared else None,
    'dense_wall_s': dense_summary['wall_s'] if shared else None,
    'dense_commit': dense_summary['commit'] if shared else None,
    'command': command,
    **provenance,
    'config': dataclasses.asdict(config),
  }
  _write_summary(workdir, summary)
  print(
    f'{model} {schedule} seed {seed}: {summary["error"]:.2f} % at '
    f'{summary["compression"]:.1f}x, {elapsed:.0f} s after the dense run',
    flush=True,
  )
  return summary


# --- the results file ----------------------------------------------------------------------------


def _mean_std(values, digits: int = 2) -> str:
  mean = statistics.mean(values)
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def _mean(values) -> float:
  """Mean rounded to 1e-9, so that 0.77, 0.84, 0.79 average to exactly 0.80 (not 0.80000001)."""
  return round(statistics.mean(values), 9)


def _verdict(model: str, summaries: list[dict]) -> str:
  """Each target, met or missed, with the means it was decided on.

  The exact means are compared with the targets and quoted with one more
  decimal than the tables (3 for error, 2 for compression), enough to show on
  which side of the threshold they fall: a mean of 0.8033 % is not "0.80"
  and a miss.

  Examples:
    >>> runs = [{'error': e, 'compression': 28.5, 'wall_s': 500} for e in (0.77, 0.84, 0.79)]
    >>> _verdict('lenet5', runs).split('; ')[0]
    'paper (≥ 12x at ≤ 0.80 %): met (mean 0.800 % at 28.50x)'
    >>> runs[2]['error'] = 0.80
    >>> _verdict('lenet5', runs).split('; ')[1]
    'aim (≥ 25x at ≤ 0.80 %): missed: mean error 0.803 % is 0.003 points over 0.80 %'
  """
  error = _mean(s['error'] for s in summaries)
  compression = _mean(s['compression'] for s in summaries)
  parts = []
  for name, (max_error, min_compression) in (
    ('paper', TARGETS[model]['paper']),
    ('aim', TARGETS[model]['aim']),
  ):
    misses = []
    if error > max_error:
      misses.append(
        f'mean error {error:.3f} % is {error - max_error:.3f} points over {max_error:.2f} %'
      )
    if compression < min_compression:
      misses.append(f'mean compression {compression:.2f}x < {min_compression:.0f}x')
    target = f'{name} (≥ {min_compression:.0f}x at ≤ {max_error:.2f} %)'
    if misses:
      parts.append(f'{target}: missed: ' + ', '.join(misses))
    else:
      parts.append(f'{target}: met (mean {error:.3f} % at {compression:.2f}x)')
  slowest = max(_wall_s(s) for s in summaries)
  budget = TARGETS[model]['wall_s']
  parts.append(
    f'wall time ≤ {budget / 60:.0f} min: '
    + ('met' if slowest <= budget else 'missed')
    + f' (slowest seed {slowest:.0f} s)'
  )
  return '; '.join(parts)


def _layer_table(model: str, summaries: list[dict]) -> list[str]:
  names = [layer['layer'] for layer in summaries[0]['layers']]
  lines = [
    '| layer | weights | FLOP | weights % kept | FLOP % kept | paper: weights % kept |',
    '|---|---:|---:|---:|---:|---:|',
  ]
  for index, name in enumerate(names):
    layer = summaries[0]['layers'][index]
    kept = [100 * s['layers'][index]['kept'] / layer['weights'] for s in summaries]
    flops = [100 * s['layers'][index]['flops_kept'] / layer['flops'] for s in summaries]
    lines.append(
      f'| {name} | {layer["weights"]:,} | {layer["flops"]:,} | {_mean_std(kept)} '
      f'| {_mean_std(flops)} | {PAPER[model]["layers"].get(name, "")} |'
    )
  weights = sum(layer['weights'] for layer in summaries[0]['layers'])
  flops = sum(layer['flops'] for layer in summaries[0]['layers'])
  lines.append(
    f'| **total** | {weights:,} | {flops:,} '
    f'| {_mean_std([s["weights_kept_pct"] for s in summaries])} '
    f'| {_mean_std([s["flops_kept_pct"] for s in summaries])} '
    f'| {100 / PAPER[model]["compression"]:.1f} |'
  )
  return lines


def _tuning_runs(tuning: pathlib.Path) -> list[dict[str, Any]]:
  """The finished runs under ``tuning``: config, dense and final validation error, command."""
  runs = []
  for workdir in sorted(p for p in tuning.iterdir() if (p / 'metrics.jsonl').exists()):
    if not (workdir / 'config.json').exists():
      continue
    config = json.loads((workdir / 'config.json').read_text())
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    ends = [r for r in records if r['event'] == 'round_end']
    if not ends or ends[-1]['round'] != config['rounds'] or 'validation_error' not in ends[-1]:
      continue  # unfinished, or not a validation run
    header = {}
    if (workdir / 'report.json').exists():
      header = json.loads((workdir / 'report.json').read_text())['header']
    runs.append(
      {
        'name': f'{tuning.name}/{workdir.name}',
        'config': config,
        'dense': ends[0]['validation_error'],
        'final': ends[-1]['validation_error'],
        'compression': ends[-1]['compression'],
        'command': header.get('command', ''),
        'commit': header.get('commit', ''),
      }
    )
  return runs


def _changed(config: dict, final: dict) -> str:
  """The settings of a tuning run that differ from the chosen configuration.

  A dense-only run (``rounds=0``) is compared on what shapes dense training:
  its pruning and retraining settings were never used.
  """
  ignored = {'seed', 'validation_size'}
  if config.get('rounds') == 0:
    ignored |= AFTER_DENSE_FIELDS - {'rounds'}
  changed = {k: v for k, v in config.items() if k not in ignored and final.get(k) != v}
  return ', '.join(f'{k}={v}' for k, v in changed.items()) or '**(chosen)**'


def _tuning_tables(model: str, runs: list[dict], final: dict) -> list[str]:
  """A model's tuning runs one by one, then averaged over seeds per configuration."""
  lines = [
    '| run | seed | changed from the chosen configuration | compression '
    '| dense validation error % | final validation error % |',
    '|---|---:|---|---:|---:|---:|',
  ]
  groups: dict[str, list[dict]] = {}
  for run in sorted(runs, key=lambda r: (-r['compression'], r['name'])):
    changed = _changed(run['config'], final)
    groups.setdefault(changed, []).append(run)
    lines.append(
      f'| {run["name"]} | {run["config"]["seed"]} | {changed} | {run["compression"]:.1f}x '
      f'| {run["dense"]:.2f} | {run["final"]:.2f} |'
    )
  lines += [
    '',
    'Per configuration, mean over its seeds (each seed holds out different validation images and '
    'trains its own dense network; runs of one seed share it where they differ only in pruning '
    'and retraining):',
    '',
    '| changed from the chosen configuration | seeds | compression '
    '| mean dense validation error % | mean final validation error % |',
    '|---|---|---:|---:|---:|',
  ]
  for changed, group in groups.items():
    lines.append(
      f'| {changed} | {", ".join(str(r["config"]["seed"]) for r in group)} '
      f'| {_mean(r["compression"] for r in group):.1f}x '
      f'| {_mean(r["dense"] for r in group):.3f} | {_mean(r["final"] for r in group):.3f} |'
    )
  lines += ['', '<details><summary>Commands of the tuning runs</summary>', '']
  lines += [
    f'- `{run["name"]}`: `{run["command"]}` (commit `{run["commit"]}`)'
    for run in sorted(runs, key=lambda r: r['name'])
  ]
  lines += ['', '</details>']
  return lines


def _wall_s(summary: dict) -> float:
  """A whole run's wall time: its shared dense run's (timed once) plus its own rounds'.

  A summary without ``dense_wall_s`` timed dense training itself.
  """
  return summary['wall_s'] + (summary.get('dense_wall_s') or 0.0)


def _commit_lines(summaries: list[dict]) -> list[str]:
  """Each commit the runs recorded, with the files that had uncommitted changes on top of it."""
  commits: dict[str, set[str]] = {}
  for s in summaries:
    commits.setdefault(s['commit'], set()).update(s.get('uncommitted', []))
  lines = []
  for commit, files in sorted(commits.items()):
    changed = f' (uncommitted changes to: {", ".join(sorted(files))})' if files else ''
    lines.append(f'`{commit}`{changed}')
  return lines


def _sharing(schedule_runs: list[dict], dense_runs: list[dict]) -> list[str]:
  """Whether each seed's schedules started from one dense network, as the summaries say."""
  if not schedule_runs:
    return []
  own = [s for s in schedule_runs if not s.get('dense_run')]
  if own:
    names = ', '.join(f'{s["model"]}-{s["schedule"]}-seed{s["seed"]}' for s in own)
    return [
      'These runs trained their own dense network, so their dense errors are not those of '
      f'the other schedules of their seed: {names}.',
      '',
    ]
  names = dict.fromkeys(f'`{pathlib.Path(s["dense_run"]).name}`' for s in schedule_runs)
  epochs = sorted({d['config']['dense_epochs'] for d in dense_runs})
  trained = f'; {"/".join(map(str, epochs))} dense epochs' if epochs else ''
  return [
    "Each seed's dense network was trained once, by a run with `rounds=0` "
    f'({", ".join(names)}{trained}), and every retraining schedule of that seed started '
    "from it (`pipeline.start_from_dense`): each schedule run's round-0 records were read "
    "back and are that dense run's, so the schedules of a seed share one dense network and "
    'differ in retraining alone.',
    '',
  ]


def _earlier(text: str, path: str, runs: pathlib.Path) -> list[str]:
  """Sections an earlier version wrote, verbatim, under a heading naming their commits."""
  commits = list(dict.fromkeys(re.findall(r'commit `([^`]+)`', text)))
  return [
    '## Earlier sections (kept verbatim, not regenerated)',
    '',
    f'Everything below is `{path}` verbatim: written by an earlier version of '
    f'`benchmarks/lenet_results.py` from runs that are not under `{runs}`, so it was not '
    'regenerated with the runs above. Their commits, as listed in them: '
    + (', '.join(f'`{c}`' for c in commits) or 'none listed')
    + '.',
    '',
    text.strip(),
    '',
  ]


def markdown(
  runs: pathlib.Path, tuning: list[pathlib.Path], notes: str, earlier: tuple[str, str] | None = None
) -> str:
  """The results file: provenance read from the runs' summaries, notes, tables, earlier sections.

  ``earlier`` is ``(text, path)`` of sections to append verbatim (see :func:`_earlier`).
  """
  everything = [json.loads(path.read_text()) for path in sorted(runs.glob('*/summary.json'))]
  dense_runs = [s for s in everything if s['schedule'] == 'dense']
  summaries = [s for s in everything if s['schedule'] != 'dense']
  groups: dict[tuple[str, str], list[dict]] = {}
  for s in sorted(summaries, key=lambda s: (s['model'], s['schedule'] != 'rewind', s['seed'])):
    groups.setdefault((s['model'], s['schedule']), []).append(s)
  machines: dict[str, int] = {}
  for s in everything:
    machines[s['machine']] = machines.get(s['machine'], 0) + 1
  data = _common.data_description([s['config'] for s in everything])
  lines = [
    '# LeNet results on real MNIST (Han et al. 2015, Table 1)',
    '',
    'Written by `benchmarks/lenet_results.py` from the finished runs under '
    f'`{runs}`; every figure below is a measurement of those runs. The lines below are read '
    "from the runs' summaries (recorded when each run started).",
    '',
    f'- commit(s) of the runs: {"; ".join(_commit_lines(everything))}',
    '- machine(s): '
    + '; '.join(f'{machine} ({count} run(s))' for machine, count in sorted(machines.items())),
  ]
  if data:
    lines.append(f"- data, from the runs' configs: {data}")
  lines += [
    '- method: magnitude pruning + retraining only (no distillation)',
    "- wall times: each run's own, start to end (data loading, compilation, training, "
    "evaluation after every epoch); a schedule's is its dense run's plus its rounds'",
    '',
  ]
  if notes:
    lines += [notes.strip(), '']
  lines += [
    '## Summary (mean ± std over seeds)',
    '',
    *_sharing(summaries, dense_runs),
    '| model | retraining | seeds | dense error % | pruned error % | compression | '
    'FLOP kept % | wall time (s) | paper |',
    '|---|---|---|---:|---:|---:|---:|---:|---|',
  ]
  for (model, schedule), group in groups.items():
    lines.append(
      f'| {NAMES[model]} | {schedule} | {", ".join(str(s["seed"]) for s in group)} '
      f'| {_mean_std([s["dense_error"] for s in group])} '
      f'| {_mean_std([s["error"] for s in group])} '
      f'| {_mean_std([s["compression"] for s in group], 1)}x '
      f'| {_mean_std([s["flops_kept_pct"] for s in group], 1)} '
      f'| {_mean_std([_wall_s(s) for s in group], 0)} '
      f'| {PAPER[model]["error"]:.2f} % at {PAPER[model]["compression"]:.0f}x |'
    )
  schedules = {s['config']['retrain_schedule']: s['config'] for s in summaries}
  described = []
  if 'rewind' in schedules:
    described.append('`rewind` restarts the dense cosine learning-rate schedule every round')
  if 'fine-tune' in schedules:
    scale = schedules['fine-tune']['retrain_lr_scale']
    described.append(f"`fine-tune` restarts it at {scale:g}x the peak (the paper's §4: 1/10)")
  lines += [
    '',
    '"FLOP kept" counts pruned weights only (activations taken as dense); the paper also '
    'credits zero activations.' + (f' Retraining {"; ".join(described)}.' if described else ''),
    '',
  ]
  for (model, schedule), group in groups.items():
    config = {k: v for k, v in group[0]['config'].items() if k != 'seed'}
    lines += [
      f'## {NAMES[model]}, retraining: {schedule}',
      '',
      f'Targets: {_verdict(model, group)}.',
      '',
      '| seed | dense run | dense error % | pruned error % | compression | FLOP kept % '
      '| wall time (s): dense + rounds |',
      '|---:|---|---:|---:|---:|---:|---:|',
    ]
    for s in group:
      resumed = ' (resumed)' if s['resumed'] else ''
      dense_run = f'`{pathlib.Path(s["dense_run"]).name}`' if s.get('dense_run') else 'its own'
      wall = (
        f'{s["dense_wall_s"]:.0f} + {s["wall_s"]:.0f}'
        if s.get('dense_wall_s') is not None
        else f'{s["wall_s"]:.0f}'
      )
      lines.append(
        f'| {s["seed"]} | {dense_run} | {s["dense_error"]:.2f} | {s["error"]:.2f} '
        f'| {s["compression"]:.1f}x | {s["flops_kept_pct"]:.1f} | {wall}{resumed} |'
      )
    lines += ['', 'Per layer (mean ± std over seeds):', '', *_layer_table(model, group), '']
    lines += [
      f'Configuration: `{json.dumps(config)}`',
      '',
      f'Recipe (from that configuration): {_common.recipe(config)}.',
      '',
      'Commands:',
      '',
    ]
    lines += [f'- seed {s["seed"]}: `{s["command"]}` (commit `{s["commit"]}`)' for s in group]
    dense_of = {(d['model'], d['seed']): d for d in dense_runs}
    for s in group:
      d = dense_of.get((s['model'], s['seed']))
      if s.get('dense_run') and d:
        lines.append(
          f'- seed {s["seed"]}, dense run `{pathlib.Path(s["dense_run"]).name}`: '
          f'`{d["command"]}` (commit `{d["commit"]}`)'
        )
    lines.append('')
  tuning_runs = [run for folder in tuning for run in _tuning_runs(folder)]
  if tuning_runs:
    held_out = '/'.join(
      str(n) for n in sorted({r['config']['validation_size'] for r in tuning_runs})
    )
    lines += [
      '## Hyperparameter search (validation split, never the test set)',
      '',
      f'Runs under {", ".join(f"`{folder}`" for folder in tuning)}, each '
      f'`scripts/prune_lenet.py --validation-size {held_out} ...`: {held_out} training images '
      'held out (chosen by the seed), the rest used for training (as recorded in their '
      f'configs: {_common.data_description([r["config"] for r in tuning_runs])}); the errors '
      'are on the held-out images.',
      '',
    ]
  for model in NAMES:
    runs_of_model = [run for run in tuning_runs if run['config']['model'] == model]
    if not runs_of_model:
      continue
    # The chosen configuration is the rewind runs' (the fine-tune row only changes the schedule).
    final = next(
      (g[0]['config'] for (m, sched), g in groups.items() if m == model and sched == 'rewind'),
      None,
    ) or json.loads(json.dumps(dataclasses.asdict(_common.shipped_config(model))))
    chosen = [r['final'] for r in runs_of_model if _changed(r['config'], final) == '**(chosen)**']
    error = (
      statistics.mean(chosen) if chosen else statistics.mean(r['final'] for r in runs_of_model)
    )
    size = min(r['config']['validation_size'] for r in runs_of_model)
    stderr = 100 * math.sqrt(error / 100 * (1 - error / 100) / size)
    lines += [
      f'### {NAMES[model]}',
      '',
      f'A validation error of {error:.2f} % on {size} images has a standard error of about '
      f'±{stderr:.2f} points.',
      '',
      *_tuning_tables(model, runs_of_model, final),
      '',
    ]
  if earlier:
    lines += _earlier(*earlier, runs)
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', nargs='+', default=['lenet300', 'lenet5'], choices=list(NAMES))
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--schedules', nargs='+', default=['rewind'], choices=['rewind', 'fine-tune'])
  parser.add_argument('--runs', default='runs/results', help='where each run writes its outputs')
  _common.add_data_arguments(parser)
  parser.add_argument(
    '--tuning', nargs='*', default=[], help='folders of validation-split tuning runs'
  )
  parser.add_argument('--notes', default=None, help='Markdown file put at the top of the results')
  parser.add_argument(
    '--earlier',
    default=None,
    help='Markdown sections an earlier version wrote from runs not under --runs, kept verbatim',
  )
  parser.add_argument('--output', default='benchmarks/LENET_RESULTS.md')
  parser.add_argument('--write-only', action='store_true', help='only rewrite the results file')
  args = parser.parse_args(argv)
  command = shlex.join(['python', *(sys.argv if argv is None else ['lenet_results.py', *argv])])
  runs = pathlib.Path(args.runs)
  if not args.write_only:
    for model in args.models:
      for schedule in args.schedules:
        for seed in args.seeds:
          if not (run_dir(runs, model, schedule, seed) / 'summary.json').exists():
            run_one(model, schedule, seed, runs, _common.data_options(args), command)
  notes = pathlib.Path(args.notes).read_text() if args.notes else ''
  earlier = (pathlib.Path(args.earlier).read_text(), args.earlier) if args.earlier else None
  text = markdown(runs, [pathlib.Path(folder) for folder in args.tuning], notes, earlier)
  output = pathlib.Path(args.output)
  tmp = output.with_name(output.name + '.tmp')
  tmp.write_text(text + '\n')
  os.replace(tmp, output)
  print(f'wrote {output}')


if __name__ == '__main__':
  main()
