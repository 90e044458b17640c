"""scripts/export_sparse.py end to end on a tiny pruning run: file, report, same predictions.

The run reads MNIST prepared once per session (``mnist_data_dir``, see
tests/conftest.py), so neither it nor the export needs the raw files.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import pruning
from models import MODELS
from pruning.data import datasets, mnist
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


# As tests/pruning/experiment/test_pipeline_vgg.py's runs where it matters for compiled
# programs (width, batch norm, batch sizes), so that a whole test session compiles them once.
VGG_TINY = {
  'width': 1 / 16,
  'batch_norm': True,
  'batch_size': 32,
  'eval_batch_size': 48,
  'dense_epochs': 1,
  'rounds': 1,
  'retrain_epochs': 1,
  'alternate': False,  # CONV and FC pruned in the one round: filters lose inputs and outputs
  'train_subset': 64,
  'test_subset': 200,
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


def test_imagenet_model_without_imagenet_is_one_line_and_exit_2(tmp_path, capsys):
  (tmp_path / 'config.json').write_text(json.dumps({'model': 'vgg16', 'dataset': 'imagenet2012'}))
  data_dir = tmp_path / 'tfds'
  with pytest.raises(SystemExit) as exit_:
    load_script().main([str(tmp_path), '--data-dir', str(data_dir)])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1
  assert err.startswith(
    "export_sparse.py: error: model 'vgg16' is verified on the imagenet2012 validation split, "
    f'which is not available: No prepared imagenet2012 in {data_dir}. Prepare ImageNet once'
  )
  assert f'tfds build imagenet2012 --data_dir={data_dir} --file_format=array_record' in err
  with pytest.raises(SystemExit):
    load_script().main([str(tmp_path), '--raw-data', str(tmp_path / 'x.tar')])
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'raw_path is not used for imagenet2012' in err
  with pytest.raises(SystemExit):
    load_script().main([str(tmp_path), '--test-subset', '0'])
  err = capsys.readouterr().err
  assert err == "export_sparse.py: error: argument --test-subset: '0' is not a positive integer\n"


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


def test_a_model_without_evaluation_data_names_what_is_missing(tmp_path, monkeypatch):
  monkeypatch.setitem(MODELS, 'svhn_net', MODELS['vgg16_cifar']._replace(datasets=('svhn',)))
  (tmp_path / 'config.json').write_text(json.dumps({'model': 'svhn_net', 'dataset': 'svhn'}))
  with pytest.raises(ValueError) as error:
    export.export_run(tmp_path, tmp_path / 'svhn.jpsparse', latency_repeats=0)
  message = str(error.value)
  assert "model 'svhn_net' cannot be exported yet" in message
  assert 'it takes (32, 32, 3) images of svhn' in message
  assert 'reads only the test split of cifar10 and imagenet2012 and mnist' in message
  assert (
    "['alexnet', 'lenet300', 'lenet5', 'resnet20', 'resnet56', 'vgg16', 'vgg16_cifar', "
    "'vit_cifar']" in message
  )
  assert not (tmp_path / 'svhn.jpsparse').exists()


def test_raw_data_defaults_to_the_checkout_copy_of_the_run_dataset(
  shared_mnist, shared_cifar10, tmp_path, monkeypatch, capsys
):
  monkeypatch.delenv('PRUNING_MNIST_DIR', raising=False)
  monkeypatch.delenv('PRUNING_CIFAR10_PATH', raising=False)
  script = load_script()
  assert script.BUNDLED_MNIST == shared_mnist and script.BUNDLED_CIFAR10 == shared_cifar10
  assert script.parse_args(['run']).raw_data is None  # resolved once the run's model is known
  runs = {}
  for model in ('lenet5', 'vgg16_cifar', 'vgg16'):
    runs[model] = tmp_path / model
    runs[model].mkdir()
    (runs[model] / 'config.json').write_text(json.dumps({'model': model}))
  assert script.default_raw_data(runs['lenet5']) == str(shared_mnist)
  assert script.default_raw_data(runs['vgg16_cifar']) == str(shared_cifar10)
  assert script.default_raw_data(runs['vgg16']) is None  # ImageNet: prepared with tfds build
  assert script.default_raw_data(tmp_path / 'nothing here') is None
  with pytest.raises(SystemExit):
    script.parse_args(['--help'])
  assert "the checkout's bundled copy" in ' '.join(capsys.readouterr().out.split())
  monkeypatch.setenv('PRUNING_MNIST_DIR', '/elsewhere')
  monkeypatch.setenv('PRUNING_CIFAR10_PATH', '/elsewhere.tar.gz')
  assert script.default_raw_data(runs['lenet5']) is None  # the library reads the variable
  assert script.default_raw_data(runs['vgg16_cifar']) is None


@pytest.fixture(scope='module')
def tiny_vgg_run(tmp_path_factory, cifar10_data_dir):
  """A width-1/16 VGG-16-CIFAR with batch norm, trained and pruned a few steps on CIFAR-10."""
  workdir = tmp_path_factory.mktemp('export-vgg') / 'run'
  config = from_recipe(RECIPES / 'vgg16_cifar.py', **VGG_TINY)
  result = pipeline.train_and_evaluate(config, workdir, data_dir=cifar10_data_dir, progress=False)
  return workdir, str(cifar10_data_dir), result


def test_vgg16_cifar_exports_through_batch_norm_and_predicts_what_the_run_did(
  tiny_vgg_run, tmp_path, capsys
):
  workdir, data_dir, result = tiny_vgg_run
  out = tmp_path / 'vgg.jpsparse'
  argv = [str(workdir), '--out', str(out), '--data-dir', data_dir, '--test-subset', '200']
  # Whole-model latency compiles every variant at two more batch sizes: the LeNet test
  # covers it; the FC layers' latency is measured below.
  payload = load_script().main([*argv, '--latency-repeats', '0'])
  assert 'smaller than the dense float32 params' in capsys.readouterr().out
  verification = payload['verification']
  assert (verification['dataset'], verification['split']) == ('cifar10', 'test')
  assert verification['test_examples'] == 200
  # The masked model as restored (width, params, batch statistics) and fed the test
  # images as the run fed them (normalised per channel) errs exactly as the run did.
  last_round = [r for r in result['records'] if r['event'] == 'round_end'][-1]
  assert verification['masked model test_error_pct'] == pytest.approx(last_round['test_error'])
  for name in ('after neuron removal, dense (jit)', 'sparse FC, scipy (eager)'):
    assert verification[name]['prediction_mismatches'] == 0, name
    assert verification[name]['max_abs_logit_difference'] < 1e-4, name

  # Filters left without outputs by fc6 went, their batch-norm channels with them.
  neurons = payload['neurons']
  assert neurons['conv5_3']['no_outputs'] > 0
  assert neurons['fc6']['kept'] < neurons['fc6']['units']
  model, checkpoint = export.load_exported(out)
  kept = neurons['conv5_3']['kept']
  assert model.conv5_3.out_features == model.bn5_3.num_features == model.fc6.in_features == kept
  assert model.bn5_3.mean[...].shape == (kept,)
  assert model.fc6.out_features == neurons['fc6']['kept']

  storage = payload['storage']
  assert storage['file_bytes'] == out.stat().st_size
  # The run's params: kernels, biases and batch-norm scales and offsets.
  assert storage['dense_float32_bytes'] == 4 * sum(
    np.size(p) for p in jax.tree.leaves(result['params'])
  )
  sizes = storage['by_value_dtype']
  assert sizes['float32']['file_bytes'] == storage['file_bytes']
  assert sizes['float16']['file_bytes'] < sizes['float32']['file_bytes']
  assert sizes['float16']['compression'] > sizes['float32']['compression'] > 1
  markdown = (tmp_path / 'vgg.report.md').read_text()
  assert '## Verification on the cifar10 test split (200 images)' in markdown
  assert '| float16 |' in markdown

  # A few steps leave the tiny network's predictions all but blind to its input, so
  # matching errors alone would not show that it was restored and fed as the run was.
  # The batch statistics are the checkpoint's, not a fresh model's:
  run = export.restore_run(workdir)
  with ocp.CheckpointManager((workdir / 'checkpoints').absolute()) as manager:
    saved = manager.restore(1, args=ocp.args.StandardRestore())['rest']
  for bn in ('bn1_1', 'bn3_2', 'bn5_3'):
    for stat in ('mean', 'var'):
      restored = np.asarray(getattr(getattr(run.model, bn), stat)[...])
      np.testing.assert_array_equal(restored, np.asarray(saved[bn][stat]['value']), err_msg=bn)
  assert not np.allclose(run.model.bn1_1.mean[...], 0.0)
  # and the test images are exactly those the run was evaluated on, preprocessed alike.
  split = export.EVALUATION_DATA['cifar10'](data_dir, None, (32, 32, 3), 200)
  options = datasets.InputOptions(
    batch_size=32, eval_batch_size=48, seed=0, test_subset=200, data_dir=data_dir
  )
  runs_batches = datasets.open_input('cifar10', options).evaluation('test')
  for ours, theirs in zip(split.batches(48), runs_batches, strict=True):
    for got, want in zip(ours, theirs, strict=True):
      np.testing.assert_array_equal(got, want)

  # The file alone rebuilds a model that predicts what the masked model predicts.
  x, _, _ = next(split.batches(48))
  expected = np.asarray(export.jitted(run.model)(jnp.asarray(x))).argmax(-1)
  np.testing.assert_array_equal(
    np.asarray(export.jitted(model)(jnp.asarray(x))).argmax(-1), expected
  )

  # fc6, fc7 and fc8 alone: the masked layer, the smaller one, and its stored sparse rows.
  fc = export.fc_layer_latency(run.model, model, checkpoint.sparse, repeats=1, batches=(1,))
  assert list(fc) == ['fc6', 'fc7', 'fc8']
  assert fc['fc6']['masked_shape'] == [32, 32]
  assert fc['fc6']['shape'] == [kept, neurons['fc6']['kept']]
  assert fc['fc6']['kept_weights'] == int((~checkpoint.sparse['fc6/kernel'].is_filler).sum())
  assert set(fc['fc6']['batch 1']) == {
    'masked, dense (jit)',
    'after neuron removal, dense (jit)',
    'sparse, scipy (eager)',
    'sparse, bcsr (jit)',
  }
  assert all(ms > 0 for ms in fc['fc7']['batch 1'].values())
