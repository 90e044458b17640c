"""scripts/export_sparse.py end to end on a tiny pruning run: file, report, same predictions.

The run reads MNIST prepared once per session (``mnist_data_dir``, see
tests/conftest.py), so neither it nor the export needs the raw files.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import pruning
from models import MODELS
from pruning.data import mnist
from pruning.experiment import export, pipeline
from pruning.experiment.config import from_recipe
from pruning.sparse import file_format

RECIPES = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'configs'

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
def tiny_run(tmp_path_factory, mnist_data_dir):
  root = tmp_path_factory.mktemp('export')
  data_dir = str(mnist_data_dir)
  config = from_recipe(RECIPES / 'lenet300.py', **TINY)
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


def test_not_a_run_workdir_is_one_line_and_exit_2(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    load_script().main([str(tmp_path)])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip()
  assert (
    err == f'export_sparse.py: error: {tmp_path} holds no config.json: not a pruning run workdir'
  )
  with pytest.raises(SystemExit):
    load_script().main([str(tmp_path), '--fc-index-bits', 'many'])
  assert capsys.readouterr().err.count('\n') == 1


def test_export_takes_the_input_shape_from_the_model_registry(tiny_run, tmp_path, monkeypatch):
  # LeNet-300-100 flattens its input, so the same pixels in another (H, W, C)
  # make the same predictions: a registry entry of (7, 112, 1) with test
  # images of that shape must export, with that shape, not MNIST's (28, 28, 1).
  workdir, data_dir = tiny_run
  shape = (7, 112, 1)
  monkeypatch.setitem(MODELS, 'lenet300', MODELS['lenet300']._replace(image_shape=shape))
  load_mnist = mnist.load_mnist

  def reshaped(split, **kwargs):
    images, labels = load_mnist(split, **kwargs)
    return images.reshape(len(images), *shape), labels

  monkeypatch.setattr(mnist, 'load_mnist', reshaped)
  remove_dead_neurons = export.surgery.remove_dead_neurons
  shapes = []

  def recording(model, mask, *, input_shape, **kwargs):
    shapes.append(tuple(input_shape))
    return remove_dead_neurons(model, mask, input_shape=input_shape, **kwargs)

  monkeypatch.setattr(export.surgery, 'remove_dead_neurons', recording)
  out = tmp_path / 'reshaped.jpsparse'
  payload = export.export_run(workdir, out, data_dir=data_dir, latency_repeats=0)
  assert shapes == [shape]
  assert file_format.load_sparse(out).metadata['input_shape'] == list(shape)
  assert payload['verification']['sparse FC, scipy (eager)']['prediction_mismatches'] == 0


def test_a_model_without_evaluation_data_names_what_is_missing(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model': 'vgg16_cifar', 'dataset': 'cifar10'}))
  with pytest.raises(ValueError) as error:
    export.export_run(tmp_path, tmp_path / 'vgg.jpsparse', latency_repeats=0)
  message = str(error.value)
  assert "model 'vgg16_cifar' cannot be exported yet" in message
  assert 'it takes (32, 32, 3) images of cifar10' in message
  assert 'reads only the test split of mnist' in message
  assert "['lenet300', 'lenet5']" in message
  assert not (tmp_path / 'vgg.jpsparse').exists()


def test_raw_data_defaults_to_the_checkout_copy(shared_mnist, monkeypatch, capsys):
  monkeypatch.delenv('PRUNING_MNIST_DIR', raising=False)
  script = load_script()
  assert script.BUNDLED_MNIST == shared_mnist
  assert script.parse_args(['run']).raw_data == str(shared_mnist)
  with pytest.raises(SystemExit):
    script.parse_args(['--help'])
  assert "the checkout's bundled copy" in ' '.join(capsys.readouterr().out.split())
  monkeypatch.setenv('PRUNING_MNIST_DIR', '/elsewhere')
  assert script.parse_args(['run']).raw_data is None  # the library reads the variable
