"""Structured runs side by side: errors, MACs and parameters from each run, latency measured here.

Reads finished structured runs (``--structure channels``: ``prune_structured.py``,
``prune_vgg.py``/``prune_lenet.py`` with that flag, ``benchmarks/both_kinds.py``),
each a workdir with its ``metrics.jsonl`` and ``pruned/`` (the smaller model
and its plan). From the records: the dense network's errors (round 0), the
pruned network's (the last round, masked; the smaller model's outputs are
checked equal to it when it is cut out), and the MACs and parameter ratios.
Measured here: the forward latency of the dense architecture and of the
smaller model on this machine, jitted with the run's XLA options, in
evaluation mode (the median of ``--repeats`` calls, alternating), at ``--batch``.

Writes ``benchmarks/results/structured.json`` (one entry per run: ``model``,
``criterion``, ``scope``, ``dense_test_error``, ``pruned_test_error``,
``macs_ratio``, ``params_ratio``, ``latency_ratio``, ``device``, ``command``
and ``commit`` of the run, and more) and ``structured.png``, test error
against measured speed-up::

  flock /tmp/heavy.lock .venv/bin/python benchmarks/structured_results.py runs/both_kinds/channels-seed0
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import _common
import _timing
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from flax import nnx

from models import MODELS
from pruning.experiment import export
from pruning.experiment.run_dir import RunDir
from pruning.structured import load_plan, load_pruned

matplotlib.use('Agg')
from matplotlib import pyplot as plt

RESULTS = pathlib.Path(__file__).resolve().parent / 'results' / 'structured'


def _latencies(
  models: dict[str, nnx.Module],
  image_shape: Sequence[int],
  batch: int,
  repeats: int,
  compiler_options: dict[str, str] | None = None,
) -> dict[str, float]:
  """Median seconds of a jitted forward pass per model (compiled with the run's XLA
  options), timed in alternating calls."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, *image_shape)), jnp.float32)
  calls = {}
  for name, model in models.items():
    model.eval()
    calls[name] = _timing.forward_call(model, x, compiler_options)
    _timing.time_calls(calls[name], 3)  # compile and warm up
  times: dict[str, list[float]] = {name: [] for name in calls}
  for _ in range(repeats):
    for name, call in calls.items():
      times[name] += _timing.time_calls(call, 1)
  return {name: statistics.median(t) for name, t in times.items()}


def entry(workdir: pathlib.Path, batch: int, repeats: int) -> dict[str, Any]:
  """The results entry of one finished structured run."""
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
  seconds = _latencies(
    {'dense': dense_model, 'pruned': smaller},
    MODELS[config['model']].image_shape,
    batch,
    repeats,
    config.get('compiler_options'),
  )
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
    'latency_batch': batch,
    'dense_latency_ms': 1e3 * seconds['dense'],
    'pruned_latency_ms': 1e3 * seconds['pruned'],
    'latency_ratio': seconds['dense'] / seconds['pruned'],
    'device': jax.devices()[0].device_kind,
    'workdir': str(workdir),
    'command': run.get('command'),
    'commit': run.get('commit'),
    'machine': run.get('machine'),
  }


def plot(entries: list[dict[str, Any]], path: pathlib.Path) -> None:
  """Test error against measured speed-up, one point per run, each with its dense network."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for e in entries:
    label = f'{e["model"]} {e["criterion"]} {e["structured_sparsity"]:.0%}'
    ax.plot(
      [1.0, e['latency_ratio']], [e['dense_test_error'], e['pruned_test_error']], ':', c='0.6'
    )
    ax.scatter([1.0], [e['dense_test_error']], marker='s', c='0.3')
    ax.scatter([e['latency_ratio']], [e['pruned_test_error']], label=label)
  ax.set_xlabel(f'measured speed-up (dense / pruned latency, batch {entries[0]["latency_batch"]})')
  ax.set_ylabel('test error (%)')
  ax.set_title('Structured pruning: accuracy against speed-up (squares: dense)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('runs', nargs='+', help='workdirs of finished structured runs')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=200)
  parser.add_argument('--output', default=str(RESULTS), help='path without the suffix')
  args = parser.parse_args(argv)
  provenance = _common.provenance(None if argv is None else [sys.argv[0], *argv])
  entries = []
  for workdir in args.runs:
    try:
      entries.append(entry(pathlib.Path(workdir), args.batch, args.repeats))
    except (OSError, ValueError) as error:
      parser.error(str(error))
    e = entries[-1]
    print(
      f'{workdir}: test error {e["dense_test_error"]:.2f} -> {e["pruned_test_error"]:.2f} %, '
      f'MACs {e["macs_ratio"]:.2f}x, latency {e["latency_ratio"]:.2f}x',
      flush=True,
    )
  _common.write_json(f'{args.output}.json', {'measured_by': provenance, 'runs': entries})
  plot(entries, pathlib.Path(f'{args.output}.png'))
  print(f'written to {args.output}.json and .png')


if __name__ == '__main__':
  main()
