"""Structured runs side by side: errors, MACs and parameters from each run, time measured here.

Reads finished structured runs (``--structure channels``: ``prune_structured.py``,
``prune_vgg.py``/``prune_lenet.py`` with that flag, ``benchmarks/both_kinds.py``),
each a workdir with its ``metrics.jsonl`` and ``pruned/`` (the smaller model
and its plan). From the records: the dense network's errors (round 0), the
pruned network's (the last round, masked; the smaller model's outputs are
checked equal to it when it is cut out), and the MACs and parameter ratios.
Measured here, for the dense architecture and the smaller model, jitted with
the run's XLA options (:func:`_timing.median_times`, alternating blocks of
``--repeats`` calls): the forward latency in evaluation mode at each
``--batches`` size, and the time of a training step (cross-entropy, SGD with
momentum) at ``--train-batch`` (default: the run's batch size).

Writes ``benchmarks/results/structured.json`` (one entry per run: ``model``,
``criterion``, ``scope``, ``dense_test_error``, ``pruned_test_error``,
``macs_ratio``, ``params_ratio``, ``latency_ratio`` (at the largest batch),
``device``, ``command`` and ``commit`` of the run, every batch's latencies,
the step times, who measured them, and more), a Markdown table beside it and
``structured.png``, test error against measured speed-up. The earlier file's
entries of runs not measured now (another machine's) are kept with their own
``measured_by``; a run measured now replaces its entry::

  flock /tmp/heavy.lock .venv/bin/python benchmarks/structured_results.py runs/both_kinds/channels-seed0
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import _common
import _timing
import jax
import matplotlib

from models import MODELS
from pruning.experiment import cli, export
from pruning.experiment.run_dir import RunDir
from pruning.structured import load_plan, load_pruned

matplotlib.use('Agg')
from matplotlib import pyplot as plt

RESULTS = pathlib.Path(__file__).resolve().parent / 'results' / 'structured'


def entry(
  workdir: pathlib.Path, batches: Sequence[int], train_batch: int | None, repeats: int
) -> dict[str, Any]:
  """The results entry of one finished structured run (``train_batch``: ``None`` for the
  run's own batch size)."""
  files = RunDir(workdir)
  config = json.loads(files.config.read_text())
  if config.get('structure') != 'channels' or not files.pruned_model.is_dir():
    raise ValueError(f'{workdir} is not a finished structured run (no pruned/ folder)')
  records = _common.records(workdir)
  ends = [r for r in records if r['event'] == 'round_end']
  dense, last = ends[0], ends[-1]
  if dense['round'] != 0 or last['round'] != config['rounds']:
    raise ValueError(f'{workdir} has not finished its {config["rounds"]} rounds')
  dense_model = export.build_model(config)
  record = load_plan(files.pruned_model)
  smaller = load_pruned(files.pruned_model, export.build_model(config))
  dense_model.eval()
  smaller.eval()
  spec = MODELS[config['model']]
  train_batch = train_batch or config['batch_size']
  seconds = _timing.median_times(
    {'dense': dense_model, 'pruned': smaller},
    spec.image_shape,
    spec.num_classes,
    batches,
    train_batch,
    repeats,
    compiler_options=config.get('compiler_options'),
  )
  latency = {
    str(batch): _times(seconds, f'forward@{batch}') for batch in sorted(batches, reverse=True)
  }
  headline = max(batches)
  # Who ran it: a benchmark's provenance.json, or the header of a script's report.json.
  if files.provenance.exists():
    run = json.loads(files.provenance.read_text())[0]
  elif files.report_json.exists():
    run = json.loads(files.report_json.read_text())['header']
  else:
    run = {}
  return {
    'model': config['model'],
    'criterion': config.get('structured_criterion'),
    'scope': config.get('structured_scope'),
    'structured_sparsity': config.get('structured_sparsity'),
    'rounds': config['rounds'],
    'dense_validation_error': dense.get('validation_error'),
    'pruned_validation_error': last.get('validation_error'),
    'dense_test_error': dense['test_error'],
    'pruned_test_error': last['test_error'],
    'macs_ratio': last['macs_ratio'],
    'params_ratio': last['params_ratio'],
    'widths': {n: g['width'] for n, g in record['groups'].items()},
    'latency_batch': headline,
    'dense_latency_ms': latency[str(headline)]['dense'],
    'pruned_latency_ms': latency[str(headline)]['pruned'],
    'latency_ratio': latency[str(headline)]['ratio'],
    'latency_ms': latency,
    'train_step_ms': {'batch': train_batch, **_times(seconds, f'train@{train_batch}')},
    'device': jax.devices()[0].device_kind,
    'workdir': str(workdir),
    'command': run.get('command'),
    'commit': run.get('commit'),
    'machine': run.get('machine'),
  }


def _times(seconds: dict[str, dict[str, float]], key: str) -> dict[str, float]:
  """``{'dense': ms, 'pruned': ms, 'ratio': dense / pruned}`` of one kind of call."""
  dense, pruned = 1e3 * seconds['dense'][key], 1e3 * seconds['pruned'][key]
  return {'dense': dense, 'pruned': pruned, 'ratio': dense / pruned}


def earlier_entries(path: pathlib.Path) -> list[dict[str, Any]]:
  """The entries of an earlier results file at ``path``, each with its ``measured_by``
  and ``latency_ms`` (entries written before those were recorded per run take the
  file's ``measured_by`` and their one batch's latencies)."""
  if not path.exists():
    return []
  payload = json.loads(path.read_text())
  entries = []
  for e in payload.get('runs', []):
    if 'latency_ms' not in e:  # written when one batch was timed: its figures, by batch
      times = {'dense': e['dense_latency_ms'], 'pruned': e['pruned_latency_ms']}
      e = {**e, 'latency_ms': {str(e['latency_batch']): {**times, 'ratio': e['latency_ratio']}}}
    entries.append({'measured_by': payload.get('measured_by'), **e})
  return entries


def markdown(entries: Sequence[dict[str, Any]], provenance: dict[str, str]) -> str:
  """The table: per run, errors, MACs and parameters, measured latency and step time."""
  batches = sorted({int(b) for e in entries for b in e.get('latency_ms', {})})
  head = ['run', 'model', 'criterion', 'units removed', 'test error % (dense → pruned)']
  head += ['validation error %', 'MACs', 'params', *(f'latency @{b}' for b in batches)]
  head += ['train step', 'device']
  lines = [
    '# Structured pruning: errors, MACs and measured time',
    '',
    f'Written by `{provenance["command"]}` at `{provenance["commit"]}`. Errors are the '
    "runs' own records (dense: round 0; pruned: the last round); ratios are dense / pruned "
    "(above 1: smaller, faster), times measured on the machine named in each run's "
    '`measured_by` (median of alternating timed calls; forward in evaluation mode; train = '
    'cross-entropy + SGD momentum at the batch given).',
    '',
    '| ' + ' | '.join(head) + ' |',
    '|---|---|---|---:|---:|---:|---:|---:|' + '---:|' * len(batches) + '---:|---|',
  ]

  def ms(times: dict[str, float] | None) -> str:
    if not times:
      return '-'
    return f'{times["dense"]:.2f} → {times["pruned"]:.2f} ms ({times["ratio"]:.2f}x)'

  for e in entries:
    val = (e.get('dense_validation_error'), e.get('pruned_validation_error'))
    step = e.get('train_step_ms')
    cells = [
      f'`{e["workdir"]}`',
      e['model'],
      f'{e["criterion"]} ({e["scope"]})',
      f'{e["structured_sparsity"]:.0%}',
      f'{e["dense_test_error"]:.2f} → {e["pruned_test_error"]:.2f}',
      f'{val[0]:.2f} → {val[1]:.2f}' if None not in val else '-',
      f'{e["macs_ratio"]:.2f}x',
      f'{e["params_ratio"]:.2f}x',
      *(ms(e.get('latency_ms', {}).get(str(b))) for b in batches),
      f'{ms(step)} @{step["batch"]}' if step else '-',
      f'{e["device"]}, {e["measured_by"]["machine"]}' if e.get('measured_by') else e['device'],
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot(entries: list[dict[str, Any]], path: pathlib.Path) -> None:
  """Test error against measured speed-up, one point per run, each with its dense network."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for e in entries:
    label = (
      f'{e["model"]} {e["criterion"]} {e["structured_sparsity"]:.0%} (batch {e["latency_batch"]})'
    )
    ax.plot(
      [1.0, e['latency_ratio']], [e['dense_test_error'], e['pruned_test_error']], ':', c='0.6'
    )
    ax.scatter([1.0], [e['dense_test_error']], marker='s', c='0.3')
    ax.scatter([e['latency_ratio']], [e['pruned_test_error']], label=label)
  ax.set_xlabel('measured speed-up (dense / pruned forward latency)')
  ax.set_ylabel('test error (%)')
  ax.set_title('Structured pruning: accuracy against speed-up (squares: dense)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
  parser = cli.Parser(prog='structured_results.py', description=__doc__.split('\n\n')[0])
  parser.add_argument('runs', nargs='+', help='workdirs of finished structured runs')
  parser.add_argument('--batches', nargs='+', type=int, default=[1, 64])
  parser.add_argument(
    '--train-batch', type=int, default=None, help="train step's batch (default: the run's)"
  )
  parser.add_argument('--repeats', type=int, default=200)
  parser.add_argument('--output', default=str(RESULTS), help='path without the suffix')
  args = parser.parse_args(argv)
  for name, values in (('--batches', args.batches), ('--train-batch', [args.train_batch or 1])):
    if min(values) < 1:
      parser.error(f'{name} {min(values)}: expected a batch size of at least 1')
  if args.repeats < 1:
    parser.error(f'--repeats {args.repeats}: expected at least 1')
  provenance = _common.provenance(None if argv is None else [sys.argv[0], *argv])
  earlier = earlier_entries(pathlib.Path(f'{args.output}.json'))  # read before minutes of timing
  entries = []
  for workdir in args.runs:
    try:
      entries.append(
        {
          **entry(pathlib.Path(workdir), args.batches, args.train_batch, args.repeats),
          'measured_by': provenance,
        }
      )
    except (OSError, ValueError) as error:
      parser.error(str(error))
    e = entries[-1]
    print(
      f'{workdir}: test error {e["dense_test_error"]:.2f} -> {e["pruned_test_error"]:.2f} %, '
      f'MACs {e["macs_ratio"]:.2f}x, '
      + ', '.join(f'latency @{b} {t["ratio"]:.2f}x' for b, t in e['latency_ms'].items())
      + f', train step {e["train_step_ms"]["ratio"]:.2f}x',
      flush=True,
    )
  kept = _common.not_in(earlier, entries)
  entries = kept + entries
  _common.write_json(
    f'{args.output}.json', {'measured_by': provenance, 'carried_over': len(kept), 'runs': entries}
  )
  _common.write_text(f'{args.output}.md', markdown(entries, provenance))
  plot(entries, pathlib.Path(f'{args.output}.png'))
  print(f'written to {args.output}.json, .md and .png ({len(kept)} earlier entries kept)')


if __name__ == '__main__':
  main()
