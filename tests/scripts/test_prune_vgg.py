"""scripts/prune_vgg.py: documented options, a tiny run end to end, resume, clear errors."""

import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'prune_vgg.py'

# The tiny VGG on a handful of real CIFAR-10 images of tests/pruning/experiment/test_pipeline_vgg.py: the
# same compiled programs.
TINY = [
  '--width=0.0625',
  '--batch-norm',
  '--batch-size=32',
  '--eval-batch-size=48',
  '--dense-epochs=1',
  '--rounds=2',
  '--retrain-epochs=1',
  '--train-subset=128',
  '--test-subset=40',
  '--no-progress',
]


def load_script():
  spec = importlib.util.spec_from_file_location('prune_vgg', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_tiny_run_writes_a_table5_format_report_and_resumes(cifar10_data_dir, tmp_path):
  script = load_script()
  workdir = tmp_path / 'run'
  argv = ['--workdir', str(workdir), '--data-dir', str(cifar10_data_dir), *TINY]
  out = script.main(argv)
  payload = json.loads((workdir / 'report.json').read_text())
  names = [layer['layer'] for layer in payload['layers']]
  assert names[:3] == ['conv1_1', 'conv1_2', 'conv2_1'] and names[-3:] == ['fc6', 'fc7', 'fc8']
  kept = {layer['layer']: layer['weights_kept_pct'] for layer in payload['layers']}
  # The recipe's CIFAR densities (fc6 0.1, conv1_1 0.6), reached after the 2 rounds here.
  assert kept['fc6'] == pytest.approx(10, abs=0.1) and kept['conv1_1'] == pytest.approx(60, abs=1)
  assert payload['total']['weights'] == sum(layer['weights'] for layer in payload['layers'])
  assert payload['header']['width'] == 0.0625 and payload['header']['batch norm'] is True
  assert [r['round'] for r in payload['rounds']] == [0, 1, 2]
  assert out['final']['round'] == 2
  # A finished run resumed does no more work and reports the same.
  again = script.main([*argv, '--resume'])
  assert again['final'] == out['final']


@pytest.mark.parametrize(
  ('argv', 'message'),
  [
    (['--model', 'alexnet', '--width', '0.5'], "model 'alexnet' takes no option width"),
    (['--model', 'vgg16', '--dataset', 'cifar10'], "dataset 'cifar10' does not fit model 'vgg16'"),
    (['--model', 'resnet20', '--batch-norm'], "model 'resnet20' takes no option batch_norm"),
  ],
)
def test_options_that_do_not_fit_the_model_are_named(argv, message):
  script = load_script()
  with pytest.raises(ValueError, match=message):
    script.build_config(script.parse_args(argv))


@pytest.mark.parametrize('model', ['resnet20', 'resnet56'])
def test_the_cifar_resnets_train_dense_with_he_et_al_s_recipe(model):
  script = load_script()
  config = script.build_config(script.parse_args(['--model', model]))
  assert (config.model, config.dataset, config.rounds) == (model, 'cifar10', 0)
  assert (config.learning_rate, config.momentum, config.batch_size) == (0.1, 0.9, 128)
  assert (config.regularization, config.regularization_strength) == ('l2', 1e-4)
  assert (config.dense_epochs, config.validation_size) == (182, 5000)
  pruned = script.build_config(
    script.parse_args(['--model', model, '--rounds', '1', '--density', 'stage3/0/conv1=0.5'])
  )
  assert pruned.density == {'stage3/0/conv1': 0.5}
