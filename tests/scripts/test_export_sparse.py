"""scripts/export_sparse.py end to end on a tiny pruning run: file, report, same predictions."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import pruning
from pruning.data import mnist
from pruning.experiment import export, pipeline

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'export_sparse.py'
TINY = {
  'dense_epochs': 1,
  'rounds': 1,
  'retrain_epochs': 1,
  'train_subset': 512,
  'test_subset': 500,
  'eval_batch_size': 250,
  'density': {'fc1': 0.02, 'fc2': 0.01, 'fc3': 0.3},
}


def load_script():
  spec = importlib.util.spec_from_file_location('export_sparse', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('export')
  data_dir = str(root / 'tfds')
  config = pipeline.default_config('lenet300', **TINY)
  pipeline.train_and_evaluate(config, root / 'run', data_dir=data_dir, progress=False)
  return root / 'run', data_dir


def test_export_writes_a_verified_file_and_report(tiny_run, tmp_path, capsys):
  workdir, data_dir = tiny_run
  out = tmp_path / 'lenet.jpsparse'
  argv = [str(workdir), '--out', str(out), '--data-dir', data_dir, '--latency-repeats', '2']
  payload = load_script().main(argv)
  assert 'smaller than the dense float32 params' in capsys.readouterr().out
  report = json.loads((tmp_path / 'lenet.report.json').read_text())
  assert report == json.loads(json.dumps(payload))
  storage = report['storage']
  assert storage['file_bytes'] == out.stat().st_size
  assert storage['dense_float32_bytes'] == 4 * (266_200 + 410)
  assert storage['compression'] > 10  # 2 %/1 %/30 % kept: far beyond 10x
  parts = ('values', 'fillers', 'indices', 'row_pointers', 'header')
  assert storage['file_bytes'] == storage['file_header_bytes'] + storage['metadata_bytes'] + sum(
    sum(leaf[p] for p in parts) for leaf in storage['leaves']
  )
  neurons = report['neurons']
  assert neurons['fc1']['no_outputs'] + neurons['fc1']['no_inputs'] > 0
  assert neurons['fc3']['kept'] == 10
  for name in ('after neuron removal, dense (jit)', 'sparse FC, scipy (eager)'):
    assert report['verification'][name]['prediction_mismatches'] == 0
  assert report['verification']['test_examples'] == 10_000
  assert set(report['latency_ms']) == {'batch 1', 'batch 64'}
  assert report['header']['command'].startswith('export_sparse.py ')
  markdown = (tmp_path / 'lenet.report.md').read_text()
  assert '## Dead neurons removed' in markdown and '| **total** |' in markdown

  # The file alone rebuilds a model that predicts what the masked model predicts.
  model, checkpoint = export.load_exported(out)
  run = export.restore_run(workdir)
  images, _ = mnist.load_mnist('test', data_dir=data_dir)
  x = jnp.asarray(images[:500], jnp.float32) / 255.0
  expected = np.asarray(run.model(x)).argmax(-1)
  np.testing.assert_array_equal(np.asarray(model(x)).argmax(-1), expected)
  sparse = pruning.sparsify(model, checkpoint.sparse)
  np.testing.assert_array_equal(np.asarray(sparse(x)).argmax(-1), expected)
  assert model.fc1.out_features == neurons['fc1']['kept']


def test_restore_run_reads_the_mask_of_each_round(tiny_run):
  workdir, _ = tiny_run
  dense, pruned = export.restore_run(workdir, 0), export.restore_run(workdir)
  assert (dense.round, pruned.round) == (0, 1)
  assert pruning.mask_stats(dense.mask).overall.density == 1.0
  kept = pruning.mask_stats(pruned.mask).layers['fc1/kernel'].kept
  assert kept == round(0.02 * 235_200)
  np.testing.assert_array_equal(
    np.asarray(pruned.model.fc1.kernel[...]) != 0, np.asarray(pruned.mask['fc1']['kernel'])
  )
  with pytest.raises(ValueError, match=r'round 7 has no checkpoint; rounds saved: \[0, 1\]'):
    export.restore_run(workdir, 7)


def test_a_disagreeing_export_is_not_written(tiny_run, tmp_path, monkeypatch):
  workdir, data_dir = tiny_run
  load_resized = export.resize.load_resized

  def broken(model, params):
    model = load_resized(model, params)
    model.fc3.bias[...] = model.fc3.bias[...].at[3].add(100.0)
    return model

  monkeypatch.setattr(export.resize, 'load_resized', broken)
  out = tmp_path / 'bad.jpsparse'
  with pytest.raises(export.VerificationError, match=r'bad.jpsparse was not written'):
    export.export_run(workdir, out, data_dir=data_dir, latency_repeats=0)
  assert not out.exists()


def test_not_a_run_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'holds no config\.json: not a pruning run workdir'):
    load_script().main([str(tmp_path)])
