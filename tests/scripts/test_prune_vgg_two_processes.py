"""scripts/prune_vgg.py as two JAX processes on one machine: the very run of one process.

Two processes of the script join one mesh through its multi-host flags
(``--coordinator-address 127.0.0.1:<free port> --num-processes 2
--process-id 0|1``): one CPU device each, the gradient and the batch-norm
statistics all-reduced across the processes by gloo, each process reading
its half of every global batch of the real CIFAR-10 copy. The reference is
the script as one process on two (virtual) CPU devices: the same global
batches on a mesh of the same shape, so the same program, the collectives
run in one process instead of across two. Everything the runs write is then
identical to the bit: metrics, reports, and in every round's checkpoint the
params, masks, batch-norm statistics and momentum. (A one-device run
differs in the last bits: it sums the gradient in another order.)

That both processes end with the same params and masks, the run checks
itself: after each prune and each round it compares the processes' copies
(``parallel.check_replicated``) and fails if they differ.

A tiny VGG-16-CIFAR (width 1/16, batch norm, dropout), 64 training images in
global batches of 32, two dense epochs (the first one checkpointed), one
prune round and one retraining epoch, the three processes at once; then the
two-process run resumed on two processes. Compiling takes most of the time,
so XLA compiles without backend optimisations (all processes alike: it
changes the machine code, not what is compared): about 50 s on 2 CPU cores
instead of 80.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np

from pruning.experiment import checkpoints
from pruning.experiment.run_dir import RunDir

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'prune_vgg.py'

TINY = [
  '--width=0.0625',
  '--batch-norm',
  '--batch-size=32',
  '--eval-batch-size=48',  # 40 test images: the last batch is padded on one process only
  '--dense-epochs=2',  # an epoch checkpoint, saved by both processes and then removed
  '--rounds=1',
  '--no-alternate',
  '--retrain-epochs=1',
  '--train-subset=64',
  '--test-subset=40',
  '--dropout=none',  # the rates stay (no recompile after the prune): a faster test
  '--no-progress',
]
FAST_COMPILE = '--xla_backend_optimization_level=0'
TIMEOUT_S = 300  # for all three processes; a hung one fails the test, killed

RUN_FILES = [
  'checkpoints',
  'config.json',
  'error_vs_kept.png',
  'metrics.jsonl',
  'report.json',
  'report.md',
  'rewind_point',
]


def _records(run: RunDir) -> list[dict]:
  return [
    {k: v for k, v in record.items() if k not in ('time', 'wall_time_s')}
    for record in checkpoints.read_records(run.metrics)
  ]


def test_two_processes_compute_and_write_what_one_process_does(
  run_processes, free_port, cifar10_data_dir, tmp_path, assert_trees_equal
):
  two, one = RunDir(tmp_path / 'two'), RunDir(tmp_path / 'one')
  script = [sys.executable, str(SCRIPT), '--data-dir', str(cifar10_data_dir), *TINY]
  flags = os.environ.get('XLA_FLAGS', '')
  fast = {'XLA_FLAGS': f'{flags} {FAST_COMPILE}'}

  def on_two_processes(*argv):
    hosts = ['--coordinator-address', f'127.0.0.1:{free_port()}', '--num-processes', '2']
    return [
      [*script, '--workdir', str(two.path), *argv, *hosts, '--process-id', str(i)] for i in (0, 1)
    ]

  outputs = run_processes(
    [*on_two_processes(), [*script, '--workdir', str(one.path)]],
    env_updates=[
      fast,
      fast,
      {'XLA_FLAGS': f'{flags} {FAST_COMPILE} --xla_force_host_platform_device_count=2'},
    ],
    timeout=TIMEOUT_S,
  )

  # Process 0 prints the report, process 1 nothing of it; the run directory holds
  # what the one-process run's does (and below, each record once).
  assert 'final test error' in outputs[0] and 'final test error' in outputs[2]
  assert 'final test error' not in outputs[1] and '| layer |' not in outputs[1], outputs[1]
  for run in (two, one):
    assert sorted(path.name for path in run.path.iterdir()) == RUN_FILES, run.path
    assert sorted(path.name for path in run.checkpoints.iterdir()) == ['0', '1'], run.path
  assert two.config.read_text() == one.config.read_text()

  # The same records, every number equal, the test errors counted over the 40 images.
  records = _records(two)
  assert [r['event'] for r in records] == [
    'start',
    'epoch',
    'epoch',
    'round_end',
    'pruned',
    'epoch',
    'round_end',
  ]
  assert records == _records(one)
  errors = [r['test_error'] for r in records if 'test_error' in r]
  assert len(errors) == 6 and all(e * 40 / 100 == round(e * 40 / 100) for e in errors)
  reports = [json.loads(run.report_json.read_text()) for run in (two, one)]
  for key in ('layers', 'total', 'rounds'):
    assert reports[0][key] == reports[1][key], key
  for report in reports:
    assert report['header']['machine'].endswith('(2 device(s))'), report['header']

  # Every round's checkpoint (written by both processes together, read back here by
  # one): params, masks, batch-norm statistics and momentum identical to the bit.
  for round_index in (0, 1):
    saved = checkpoints.restore_to_host(two.round_checkpoint(round_index))
    assert_trees_equal(saved, checkpoints.restore_to_host(one.round_checkpoint(round_index)))
  params, mask = saved['params'], saved['opt_state']['mask']
  pruned = kept = 0
  for layer, leaves in mask.items():
    if leaves.get('kernel') is None:
      continue
    kernel, keep = params[layer]['kernel']['value'], leaves['kernel']
    assert np.all(kernel[~keep] == 0.0), layer
    pruned, kept = pruned + int((~keep).sum()), kept + int(keep.sum())
  assert (kept, kept + pruned) == (records[-1]['kept'], records[-1]['total'])
  assert 0 < kept < kept + pruned

  # Resumed on two processes (both restore the last round), the finished run does no
  # more work and reports the same.
  reported = two.report_json.read_text()
  resumed = run_processes(on_two_processes('--resume'), env_updates=[fast, fast], timeout=TIMEOUT_S)
  assert 'final test error' in resumed[0] and 'final test error' not in resumed[1]
  assert _records(two) == records
  assert json.loads(two.report_json.read_text())['rounds'] == json.loads(reported)['rounds']
  assert sorted(path.name for path in two.path.iterdir()) == RUN_FILES
