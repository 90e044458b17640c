"""scripts/prune_vgg.py: documented options, a tiny run end to end, resume, clear errors."""

import importlib.util
import json
import pathlib
import re

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


# flag -> (argv, where its value lands: 'config.<field>' or 'args.<name>' for run-level flags,
# the value). Each value differs from the default, so a flag that stopped acting fails.
OPTIONS = {
  '--model': (['--model', 'alexnet'], 'config.model', 'alexnet'),
  '--dataset': (['--dataset', 'synthetic'], 'config.dataset', 'synthetic'),
  '--workdir': (['--workdir', 'runs/x'], 'args.workdir', 'runs/x'),
  '--data-dir': (['--data-dir', 'tfds'], 'args.data_dir', 'tfds'),
  '--raw-path': (['--raw-path', 'cifar.tar.gz'], 'args.raw_path', 'cifar.tar.gz'),
  '--seed': (['--seed', '3'], 'config.seed', 3),
  '--resume': (['--resume'], 'args.resume', True),
  '--no-epoch-checkpoints': (['--no-epoch-checkpoints'], 'args.no_epoch_checkpoints', True),
  '--no-progress': (['--no-progress'], 'args.no_progress', True),
  '--input-workers': (['--input-workers', '4'], 'args.input_workers', 4),
  '--width': (['--width', '0.5'], 'config.width', 0.5),
  '--batch-norm': (['--batch-norm'], 'config.batch_norm', True),
  '--dropout-rate': (['--dropout-rate', '0.3'], 'config.dropout_rate', 0.3),
  '--dtype': (['--dtype', 'bfloat16'], 'config.dtype', 'bfloat16'),
  '--dense-checkpoint': (['--dense-checkpoint', 'runs/d'], 'config.dense_checkpoint', 'runs/d'),
  '--dense-epochs': (['--dense-epochs', '3'], 'config.dense_epochs', 3),
  '--batch-size': (['--batch-size', '64'], 'config.batch_size', 64),
  '--eval-batch-size': (['--eval-batch-size', '100'], 'config.eval_batch_size', 100),
  '--learning-rate': (['--learning-rate', '0.02'], 'config.learning_rate', 0.02),
  '--momentum': (['--momentum', '0.8'], 'config.momentum', 0.8),
  '--regularization': (['--regularization', 'l1'], 'config.regularization', 'l1'),
  '--regularization-strength': (
    ['--regularization-strength', '1e-4'],
    'config.regularization_strength',
    1e-4,
  ),
  '--no-augment': (['--no-augment'], 'config.augment', False),
  '--validation-size': (['--validation-size', '100'], 'config.validation_size', 100),
  '--train-subset': (['--train-subset', '256'], 'config.train_subset', 256),
  '--test-subset': (['--test-subset', '50'], 'config.test_subset', 50),
  '--rounds': (['--rounds', '2'], 'config.rounds', 2),
  '--retrain-epochs': (['--retrain-epochs', '2'], 'config.retrain_epochs', 2),
  '--retrain-schedule': (
    ['--retrain-schedule', 'fine-tune'],
    'config.retrain_schedule',
    'fine-tune',
  ),
  '--retrain-lr-scale': (
    ['--retrain-schedule', 'fine-tune', '--retrain-lr-scale', '0.05'],
    'config.retrain_lr_scale',
    0.05,
  ),
  '--criterion': (['--criterion', 'random'], 'config.criterion', 'random'),
  '--auto-sensitivity': (
    ['--auto-sensitivity', '0.5', '--validation-size', '100'],
    'config.auto_sensitivity',
    0.5,
  ),
  '--density': (
    ['--density', 'conv1_1=0.5,fc6=0.1'],
    'config.density',
    {'conv1_1': 0.5, 'fc6': 0.1},
  ),
  '--quality': (
    ['--criterion', 'quality', '--quality', 'fc6=2.0'],
    'config.quality',
    {'fc6': 2.0},
  ),
  '--std-of': (
    ['--criterion', 'quality', '--quality', 'fc6=2.0', '--std-of', 'kept'],
    'config.std_of',
    'kept',
  ),
  '--no-alternate': (['--no-alternate'], 'config.alternate', False),
  '--no-dropout-adjustment': (['--no-dropout-adjustment'], 'config.dropout', {}),
  '--coordinator-address': (
    ['--coordinator-address', 'host0:1234'],
    'args.coordinator_address',
    'host0:1234',
  ),
  '--num-processes': (['--num-processes', '2'], 'args.num_processes', 2),
  '--process-id': (['--process-id', '1'], 'args.process_id', 1),
}


def _value(script, argv, where):
  args = script.parse_args(argv)
  owner, name = where.split('.')
  return getattr(script.build_config(args) if owner == 'config' else args, name)


def test_help_documents_exactly_the_options_tested_below(capsys):
  with pytest.raises(SystemExit):
    load_script().parse_args(['--help'])
  text = capsys.readouterr().out
  flags = set(re.findall(r'(?<![\w-])--[a-z][a-z0-9-]*', text))
  assert flags - {'--help'} == set(OPTIONS)
  for model in ('vgg16', 'vgg16_cifar', 'alexnet'):
    assert model in text
  # The defaults that depend on --model are listed.
  assert 'defaults per --model' in text and 'fine-tune' in text


@pytest.mark.parametrize('flag', sorted(OPTIONS))
def test_every_option_takes_effect(flag):
  script = load_script()
  argv, where, value = OPTIONS[flag]
  assert _value(script, argv, where) == value
  assert _value(script, [], where) != value


def test_tiny_run_writes_a_table5_report_and_resumes(cifar10_data_dir, tmp_path):
  script = load_script()
  workdir = tmp_path / 'run'
  argv = ['--workdir', str(workdir), '--data-dir', str(cifar10_data_dir), *TINY]
  out = script.main(argv)
  payload = json.loads((workdir / 'report.json').read_text())
  names = [layer['layer'] for layer in payload['layers']]
  assert names[:3] == ['conv1_1', 'conv1_2', 'conv2_1'] and names[-3:] == ['fc6', 'fc7', 'fc8']
  kept = {layer['layer']: layer['weights_kept_pct'] for layer in payload['layers']}
  assert kept['fc6'] == pytest.approx(4, abs=0.1) and kept['conv1_1'] == pytest.approx(58, abs=1)
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
  ],
)
def test_options_that_do_not_fit_the_model_are_named(argv, message):
  script = load_script()
  with pytest.raises(ValueError, match=message):
    script.build_config(script.parse_args(argv))


def test_bad_layer_values_are_named(capsys):
  with pytest.raises(SystemExit):
    load_script().parse_args(['--density', 'conv1_1:0.5'])
  assert "'conv1_1:0.5' is not LAYER=VALUE" in capsys.readouterr().err


def test_dense_checkpoint_skips_dense_training_unless_epochs_are_given():
  script = load_script()
  assert script.build_config(script.parse_args(['--dense-checkpoint', 'x'])).dense_epochs == 0
  config = script.build_config(script.parse_args(['--dense-checkpoint', 'x', '--dense-epochs=2']))
  assert config.dense_epochs == 2
  assert script.build_config(script.parse_args(['--no-dropout-adjustment'])).dropout == {}


@pytest.mark.parametrize(
  ('argv', 'message'),
  [
    (
      ['--quality', 'fc6=2.0'],
      "--quality needs --criterion quality (the criterion is 'sparsity', which selects by count)",
    ),
    (
      ['--criterion', 'quality', '--quality', 'fc6=2.0', '--density', 'fc6=0.1'],
      "--density needs --criterion sparsity or random (the criterion is 'quality', which selects by threshold)",
    ),
    (
      ['--retrain-lr-scale', '0.05'],
      "--retrain-lr-scale needs --retrain-schedule fine-tune (the retrain schedule is 'rewind')",
    ),
    # VGG-16's recipe fine-tunes at 0.01; a scale given with 'rewind' would do nothing.
    (
      ['--model', 'vgg16', '--retrain-schedule', 'rewind', '--retrain-lr-scale', '0.05'],
      "--retrain-lr-scale needs --retrain-schedule fine-tune (the retrain schedule is 'rewind')",
    ),
    (
      ['--std-of', 'kept'],
      "--std-of needs --criterion quality (the criterion is 'sparsity', which selects by count)",
    ),
    (
      ['--auto-sensitivity', '1', '--validation-size', '100', '--density', 'fc6=0.1'],
      "--density needs no --auto-sensitivity (the sensitivity curves choose every layer's density)",
    ),
    (
      ['--rounds', '0', '--no-alternate'],
      '--no-alternate needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
    ),
    (
      ['--rounds', '0', '--no-dropout-adjustment'],
      '--no-dropout-adjustment needs --rounds >= 1 '
      '(with 0 rounds the run only trains the dense network)',
    ),
    (
      ['--rounds', '0', '--retrain-epochs', '2'],
      '--retrain-epochs needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
    ),
    (
      ['--regularization', 'none', '--regularization-strength', '1e-3'],
      "--regularization-strength needs --regularization l2 or l1 (the regularization is 'none')",
    ),
    (
      ['--dataset', 'synthetic', '--input-workers', '4'],
      '--input-workers needs --dataset cifar10 '
      "(the dataset is 'synthetic', which is not read through grain)",
    ),
    (
      ['--dataset', 'synthetic', '--no-augment'],
      "--no-augment needs --dataset cifar10 (the dataset is 'synthetic', which is not augmented)",
    ),
    (
      ['--dataset', 'synthetic', '--data-dir', 'tfds'],
      "--data-dir needs --dataset cifar10 (the dataset is 'synthetic', made in memory)",
    ),
    (
      ['--model', 'vgg16', '--raw-path', 'archive.tar.gz'],
      '--raw-path needs a model that takes mnist or cifar10 '
      "(the dataset is 'imagenet2012', which is not prepared from raw files)",
    ),
  ],
)
def test_an_option_that_would_do_nothing_is_a_usage_error(argv, message, tmp_path, capsys):
  workdir = tmp_path / 'run'
  with pytest.raises(SystemExit) as exit_:
    load_script().main(['--workdir', str(workdir), *argv])
  assert exit_.value.code == 2
  errors = [line for line in capsys.readouterr().err.splitlines() if ': error: ' in line]
  assert [line.split(': error: ', 1)[1] for line in errors] == [message]
  assert not workdir.exists()


def test_incomplete_host_options_are_a_usage_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_:
    load_script().main(['--workdir', str(tmp_path / 'run'), '--num-processes', '2'])
  assert exit_.value.code == 2
  assert 'num_processes=2 and process_id=None need a coordinator_address' in capsys.readouterr().err
  assert not (tmp_path / 'run').exists()
