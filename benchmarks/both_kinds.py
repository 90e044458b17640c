"""What each kind of pruning buys: channels removed, single weights pruned (Han), and both.

Four LeNet-5 networks of one seed and recipe (``scripts/configs/lenet5.py``,
with a 5,000-image validation split held out), each exported to the sparse
file format and verified against its masked model
(:func:`pruning.experiment.export.export_run`):

* ``dense``: the recipe's dense network (rounds 0);
* ``han``: Han et al.'s rounds on it (the recipe's densities, from the same
  dense network);
* ``channels``: whole units removed (``--structure channels``, L1 norm,
  ``--structured-sparsity`` over ``--structured-rounds`` rounds), trained from
  the same seed;
* ``both``: Han's rounds on the smaller model ``channels`` saved
  (``dense_checkpoint`` = its ``pruned/`` folder).

The table gives the errors, the kernel weights the file stores, the MACs of
the model that runs dense (after unit and dead-neuron removal), the file size, and the
latency of that smaller dense model and of its sparse FC form, at batch 1 and
64. Runs resume: an invocation finishes what a killed one left. Writes
``benchmarks/results/both_kinds.json`` (one entry per network, with its
command, commit and machine) and ``.md``::

  flock /tmp/heavy.lock .venv/bin/python benchmarks/both_kinds.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import _common

from models import MODELS, layer_costs
from pruning.experiment import export
from pruning.experiment.run_dir import RunDir

RESULTS = pathlib.Path(__file__).resolve().parent / 'results' / 'both_kinds'
RUNS = _common.REPO / 'runs' / 'both_kinds'
LATENCY = ('after neuron removal, dense (jit)', 'sparse FC, auto (jit)')


def configs(seed: int, structured_sparsity: float, structured_rounds: int) -> dict[str, Any]:
  """The configuration of each network, by name (``both`` is completed by :func:`main`)."""
  recipe = _common.shipped_config('lenet5', seed=seed, validation_size=5000)
  return {
    'dense': _common.shipped_config('lenet5', seed=seed, validation_size=5000, rounds=0),
    'han': recipe,
    'channels': _common.shipped_config(
      'lenet5',
      seed=seed,
      validation_size=5000,
      structure='channels',
      structured_sparsity=structured_sparsity,
      rounds=structured_rounds,
      density={},
    ),
  }


def _entry(name: str, records: list[dict[str, Any]], payload: dict[str, Any]) -> dict[str, Any]:
  last = [r for r in records if r['event'] == 'round_end'][-1]
  storage = payload['storage']
  model, _ = export.load_exported(payload['header']['file'])
  return {
    'network': name,
    'validation_error': last.get('validation_error'),
    'test_error': last['test_error'],
    # Kernel entries the file stores (a dense leaf stores every entry).
    'kernel_weights': sum(
      leaf['nonzeros'] for leaf in storage['leaves'] if leaf['path'].endswith('kernel')
    ),
    # MACs per image of the model that runs dense: after unit and dead-neuron removal.
    'dense_macs': sum(c.macs for c in layer_costs(model, MODELS['lenet5'].image_shape).values()),
    'file_bytes': storage['file_bytes'],
    'latency_ms': {
      batch: {variant: times[variant] for variant in LATENCY}
      for batch, times in payload['latency_ms'].items()
    },
  }


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--structured-sparsity', type=float, default=0.5)
  parser.add_argument('--structured-rounds', type=int, default=2)
  parser.add_argument('--latency-repeats', type=int, default=50)
  parser.add_argument('--runs', default=str(RUNS), help='where the runs are kept')
  parser.add_argument('--output', default=str(RESULTS), help='path without the suffix')
  _common.add_data_arguments(parser)
  args = parser.parse_args(argv)
  provenance = _common.provenance(None if argv is None else [sys.argv[0], *argv])
  data = _common.data_options(args)
  runs = pathlib.Path(args.runs)
  planned = configs(args.seed, args.structured_sparsity, args.structured_rounds)
  folders = {name: runs / f'{name}-seed{args.seed}' for name in (*planned, 'both')}
  records = {
    'dense': _common.ensure_run(
      planned['dense'], folders['dense'], invocation=provenance, data=data
    ),
    'han': _common.ensure_run(
      planned['han'],
      folders['han'],
      invocation=provenance,
      dense_from=folders['dense'],
      data=data,
    ),
    'channels': _common.ensure_run(
      planned['channels'], folders['channels'], invocation=provenance, data=data
    ),
  }
  both = _common.shipped_config(
    'lenet5',
    seed=args.seed,
    validation_size=5000,
    dense_checkpoint=str(RunDir(folders['channels']).pruned_model),
    dense_epochs=0,
  )
  records['both'] = _common.ensure_run(both, folders['both'], invocation=provenance, data=data)
  entries = []
  for name, run_records in records.items():
    out = folders[name] / 'model.jpsparse'
    print(f'exporting {folders[name]}', flush=True)
    payload = export.export_run(
      folders[name],
      out,
      data_dir=args.data_dir,
      raw_dir=args.raw_dir,
      latency_repeats=args.latency_repeats,
      command=provenance['command'],
    )
    entries.append({**_entry(name, run_records, payload), **provenance})
  dense = entries[0]
  lines = [
    '# LeNet-5: what each kind of pruning buys',
    '',
    f'- command: `{provenance["command"]}`',
    f'- commit: {provenance["commit"]}',
    f'- machine: {provenance["machine"]}',
    f'- seed {args.seed}; the recipe scripts/configs/lenet5.py with 5,000 training images held '
    f'out for validation; channels: L1, {args.structured_sparsity:.0%} of every group over '
    f'{args.structured_rounds} rounds; han and both: the recipe densities over its rounds',
    f'- latency: median of {args.latency_repeats} calls, jitted; "dense" is the model after '
    'unit and dead-neuron removal, "sparse FC" its FC layers as sparse matrices',
    '',
    '| network | validation error (%) | test error (%) | kernel weights | MACs (dense run) '
    '| file bytes | file vs dense | '
    + ' | '.join(f'{b}: {v.split(",")[0]} (ms)' for b in dense['latency_ms'] for v in LATENCY)
    + ' |',
    '|---|---:|---:|---:|---:|---:|---:|' + '---:|' * (len(LATENCY) * len(dense['latency_ms'])),
  ]
  for e in entries:
    cells = [
      e['network'],
      f'{e["validation_error"]:.2f}' if e['validation_error'] is not None else '',
      f'{e["test_error"]:.2f}',
      f'{e["kernel_weights"]:,}',
      f'{e["dense_macs"]:,}',
      f'{e["file_bytes"]:,}',
      f'{dense["file_bytes"] / e["file_bytes"]:.1f}x',
      *(f'{e["latency_ms"][b][v]:.3f}' for b in dense['latency_ms'] for v in LATENCY),
    ]
    lines.append('| ' + ' | '.join(cells) + ' |')
  _common.write_json(f'{args.output}.json', entries)
  _common.write_text(f'{args.output}.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
