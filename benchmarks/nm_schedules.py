"""N:M one-shot, iterative and gradual side by side: a table from finished runs.

Reads runs made with ``--nm`` (``prune_lenet.py`` or ``prune_vgg.py``) and
tabulates, per run, its schedule, its validation and test errors before
pruning (round 0's dense network, or for a gradual run its dense start) and
at the end, the kept fraction, whether every pruned layer is valid N:M at the
end, and the epochs it trained. Command, commit and machine come from each
run's ``report.json``. Writes ``benchmarks/results/nm_schedules.md`` and
``.json``::

  .venv/bin/python benchmarks/nm_schedules.py runs/nm/lenet5-2of4-*
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import _common

from pruning.experiment.run_dir import RunDir

RESULTS = pathlib.Path(__file__).resolve().parent / 'results' / 'nm_schedules'


def entry(workdir: pathlib.Path) -> dict[str, Any]:
  """One finished N:M run's row."""
  files = RunDir(workdir)
  if not (files.config.exists() and files.report_json.exists()):
    raise ValueError(f'{workdir} holds no finished run (config.json and report.json)')
  config = json.loads(files.config.read_text())
  if not config.get('nm'):
    raise ValueError(f'{workdir} is not an N:M run (no nm in its config)')
  records = _common.records(workdir)
  ends = [r for r in records if r['event'] == 'round_end']
  last = ends[-1]
  gradual = config.get('pruning_schedule') == 'gradual'
  if gradual:
    schedule, valid_record = 'gradual', [r for r in records if r['event'] == 'epoch'][-1]
    dense = None
  else:
    rounds = config['rounds']
    schedule = 'one-shot' if rounds == 1 else f'iterative ({rounds} rounds)'
    valid_record = [r for r in records if r['event'] == 'pruned'][-1]
    dense = ends[0]
  epochs = config['dense_epochs'] + config['rounds'] * config['retrain_epochs']
  header = json.loads(files.report_json.read_text())['header']
  return {
    'workdir': str(workdir),
    'model': config['model'],
    'nm': config['nm'],
    'nm_dense': config.get('nm_dense', []),
    'schedule': schedule,
    'seed': config['seed'],
    'epochs': epochs,
    'dense_validation_error': dense and dense.get('validation_error'),
    'dense_test_error': dense and dense['test_error'],
    'validation_error': last.get('validation_error'),
    'test_error': last['test_error'],
    'kept': last['kept'],
    'total': last['total'],
    'nm_valid_layers': valid_record.get('nm_valid_layers'),
    'command': header.get('command'),
    'commit': header.get('commit'),
    'machine': header.get('machine'),
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('runs', nargs='+', help='workdirs of finished N:M runs')
  parser.add_argument('--output', default=str(RESULTS), help='path without the suffix')
  args = parser.parse_args(argv)
  try:
    rows = [entry(pathlib.Path(w)) for w in args.runs]
  except (OSError, ValueError) as error:
    parser.error(str(error))
  provenance = _common.provenance(None if argv is None else [sys.argv[0], *argv])
  lines = [
    '# N:M sparsity: one-shot, iterative and gradual',
    '',
    f'- table: `{provenance["command"]}` at {provenance["commit"]}',
    '- each run: its own command, commit and machine below (from its report.json)',
    '',
    '| model | N:M | schedule | epochs | dense val / test (%) | val / test (%) | kept | valid N:M layers |',
    '|---|---|---|---:|---:|---:|---:|---|',
  ]

  def pct(value: float | None) -> str:
    return '-' if value is None else f'{value:.2f}'

  for r in rows:
    dense = (
      f'{pct(r["dense_validation_error"])} / {pct(r["dense_test_error"])}'
      if r['dense_test_error'] is not None
      else '(trains its own)'
    )
    lines.append(
      f'| {r["model"]} | {r["nm"]} (dense: {", ".join(r["nm_dense"]) or "none"}) | '
      f'{r["schedule"]} | {r["epochs"]} | {dense} | '
      f'{pct(r["validation_error"])} / {pct(r["test_error"])} | '
      f'{r["kept"]:,} of {r["total"]:,} | {", ".join(r["nm_valid_layers"] or [])} |'
    )
  lines += ['', 'Runs:', '']
  lines += [f'- `{r["workdir"]}`: `{r["command"]}` ({r["commit"]}, {r["machine"]})' for r in rows]
  _common.write_json(f'{args.output}.json', {'table': provenance, 'runs': rows})
  _common.write_text(f'{args.output}.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
