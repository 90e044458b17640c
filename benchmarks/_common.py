"""Bookkeeping shared by the experiment scripts in this folder.

Each experiment is many pipeline runs, one workdir each, resumable: a script
invoked again finishes what a killed invocation left and skips what is done,
so long experiments run in pieces (one seed per invocation) under the team's
heavy-job lock. Runs that prune the same dense network start from one dense
run (:func:`pruning.pipeline.start_from_dense`) instead of training it again.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from pruning import _io, pipeline, report


def provenance(argv: Sequence[str] | None = None) -> dict[str, str]:
  """Command, commit and machine, for the top of a results file and each run's record."""
  argv = sys.argv if argv is None else argv
  return {
    'command': shlex.join(['python', *argv]),
    'commit': report.git_commit(),
    'machine': report.machine_description() + ' (the shared 2-core VM of the team)',
    'jax': jax.__version__,
  }


def records(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The ``metrics.jsonl`` records of a run."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def is_complete(workdir: str | os.PathLike[str], rounds: int) -> bool:
  """Whether the run in ``workdir`` has logged the end of its last round."""
  return any(r['event'] == 'round_end' and r['round'] == rounds for r in records(workdir))


def ensure_run(
  config: pipeline.PruneConfig,
  workdir: str | os.PathLike[str],
  *,
  invocation: Mapping[str, str],
  dense_from: str | os.PathLike[str] | None = None,
  data_dir: str | None = None,
) -> list[dict[str, Any]]:
  """The records of the run in ``workdir``, running or finishing it first if needed.

  With ``dense_from``, a new run starts from that run's dense network.
  ``invocation`` (the script's :func:`provenance`, taken when it started, so
  edits made while it runs do not count) is appended to the run's
  ``provenance.json``.
  """
  workdir = pathlib.Path(workdir)
  if is_complete(workdir, config.rounds):
    return records(workdir)
  started = (workdir / 'config.json').exists() or (workdir / 'checkpoints').exists()
  if not started and dense_from is not None:
    pipeline.start_from_dense(dense_from, workdir, config)
    started = True
  print(f'running {workdir}', flush=True)
  workdir.mkdir(parents=True, exist_ok=True)
  log = workdir / 'provenance.json'
  invocations = json.loads(log.read_text()) if log.exists() else []
  write_json(log, [*invocations, dict(invocation)])
  result = pipeline.train_and_evaluate(
    config, workdir, resume=started, data_dir=data_dir, progress=False
  )
  return result['records']


def level_densities(
  kept_fraction: float, reference: Mapping[str, float], sizes: Mapping[str, int]
) -> dict[str, float]:
  """Per-layer kept fractions in ``reference``'s proportions that keep ``kept_fraction`` overall.

  Each layer keeps ``min(1, c * reference[layer])`` of its weights, with the
  one scale ``c`` that makes the layers together keep ``kept_fraction`` of
  all their weights (bisection). So one family of configurations spans every
  compression level, with the layers' relative densities of the reference.
  """
  if not 0 < kept_fraction <= 1:
    raise ValueError(f'kept fraction is {kept_fraction}; expected a value in (0, 1]')
  total = sum(sizes.values())

  def kept(scale: float) -> float:
    return sum(n * min(1.0, scale * reference[layer]) for layer, n in sizes.items())

  low, high = 0.0, 1.0 / min(reference.values())
  for _ in range(200):
    middle = (low + high) / 2
    low, high = (middle, high) if kept(middle) < kept_fraction * total else (low, middle)
  return {layer: min(1.0, high * reference[layer]) for layer in sizes}


def run_commits(workdirs: Sequence[str | os.PathLike[str]]) -> dict[str, int]:
  """How many of the runs in ``workdirs`` each commit produced (or resumed)."""
  commits: dict[str, int] = {}
  for workdir in workdirs:
    path = pathlib.Path(workdir) / 'provenance.json'
    found = {i['commit'] for i in json.loads(path.read_text())} if path.exists() else {'unknown'}
    for commit in found:
      commits[commit] = commits.get(commit, 0) + 1
  return commits


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """Writes a results file whole (temporary file, then rename)."""
  _io.write_atomic(path, text)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
  """A JSON results file, written whole."""
  _io.write_atomic(path, json.dumps(payload, indent=2) + '\n')
