"""The two prune scripts share one command line, generated from PruneConfig.

Every field is a flag of the same name in both scripts, every flag acts, and a
user's mistake ends in one line on stderr with exit status 2 and leaves the
workdir as it was (absent, or exactly as before).
"""

import dataclasses
import importlib.util
import json
import pathlib
import re

import pytest

from pruning.experiment import cli
from pruning.experiment.config import PruneConfig

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / 'scripts'
TINY = ['--train-subset', '256', '--test-subset', '200', '--eval-batch-size', '200']
TINY += ['--dense-epochs', '1', '--no-progress']


def load_script(name):
  spec = importlib.util.spec_from_file_location(name, SCRIPTS / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# flag -> (argv, where its value lands: 'config.<field>' or 'args.<name>', the value[, the
# baseline argv, default []]), for prune_lenet.py. Each value differs from the baseline's, so
# a flag that stopped acting fails. Options the LeNets cannot use are checked as parsed.
LENET = {
  '--config': (['--config', str(SCRIPTS / 'configs' / 'lenet5.py')], 'config.model', 'lenet5'),
  '--workdir': (['--workdir', 'runs/x'], 'args.workdir', 'runs/x'),
  '--resume': (['--resume'], 'args.resume', True),
  '--from-dense': (['--from-dense', 'runs/dense'], 'args.from_dense', 'runs/dense'),
  '--data-dir': (['--data-dir', 'tfds'], 'args.data_dir', 'tfds'),
  '--raw-data': (['--raw-data', 'raw'], 'args.raw_data', 'raw'),
  '--input-workers': (['--input-workers', '2'], 'args.input_workers', 2),
  '--epoch-checkpoints': (['--epoch-checkpoints'], 'args.epoch_checkpoints', True),
  '--no-epoch-checkpoints': (
    ['--no-epoch-checkpoints'],
    'args.epoch_checkpoints',
    False,
    ['--epoch-checkpoints'],
  ),
  '--progress': (['--progress'], 'args.progress', True, ['--no-progress']),
  '--no-progress': (['--no-progress'], 'args.progress', False),
  '--coordinator-address': (['--coordinator-address', 'h:1'], 'args.coordinator_address', 'h:1'),
  '--num-processes': (['--num-processes', '2'], 'args.num_processes', 2),
  '--process-id': (['--process-id', '1'], 'args.process_id', 1),
  '--model': (['--model', 'lenet5'], 'config.model', 'lenet5'),
  '--dataset': (['--dataset', 'synthetic'], 'config.dataset', 'synthetic'),
  '--width': (['--width', '0.5'], 'args.width', 0.5),
  '--batch-norm': (['--batch-norm'], 'args.batch_norm', True),
  '--no-batch-norm': (['--no-batch-norm'], 'args.batch_norm', False),
  '--dropout-rate': (['--dropout-rate', '0.3'], 'args.dropout_rate', 0.3),
  '--augment': (['--augment'], 'args.augment', True),
  '--no-augment': (['--no-augment'], 'args.augment', False),
  '--validation-size': (['--validation-size', '100'], 'config.validation_size', 100),
  '--train-subset': (['--train-subset', '256'], 'config.train_subset', 256),
  '--test-subset': (['--test-subset', '50'], 'config.test_subset', 50),
  '--seed': (['--seed', '3'], 'config.seed', 3),
  '--batch-size': (['--batch-size', '64'], 'config.batch_size', 64),
  '--learning-rate': (['--learning-rate', '0.02'], 'config.learning_rate', 0.02),
  '--warmup-steps': (['--warmup-steps', '20'], 'config.warmup_steps', 20),
  '--optimizer': (['--optimizer', 'adamw'], 'config.optimizer', 'adamw'),
  '--momentum': (['--momentum', '0.8'], 'config.momentum', 0.8),
  '--weight-decay': (
    ['--optimizer', 'adamw', '--weight-decay', '0.05'],
    'config.weight_decay',
    0.05,
  ),
  '--regularization': (['--regularization', 'l1'], 'config.regularization', 'l1'),
  '--regularization-strength': (
    ['--regularization-strength', '1e-4'],
    'config.regularization_strength',
    1e-4,
  ),
  '--dense-epochs': (['--dense-epochs', '3'], 'config.dense_epochs', 3),
  '--dense-checkpoint': (['--dense-checkpoint', 'runs/d'], 'config.dense_checkpoint', 'runs/d'),
  '--rounds': (['--rounds', '2'], 'config.rounds', 2),
  '--criterion': (['--criterion', 'random'], 'config.criterion', 'random'),
  '--density': (['--density', 'fc1=0.1,fc2=0.2'], 'config.density', {'fc1': 0.1, 'fc2': 0.2}),
  '--quality': (['--criterion', 'quality', '--quality', 'fc1=1.5'], 'config.quality', {'fc1': 1.5}),
  '--std-of': (
    ['--criterion', 'quality', '--quality', 'fc1=1', '--std-of', 'kept'],
    'config.std_of',
    'kept',
  ),
  '--auto-sensitivity': (
    ['--auto-sensitivity', '0.5', '--validation-size', '100'],
    'config.auto_sensitivity',
    0.5,
  ),
  '--alternate': (['--model', 'lenet5', '--alternate'], 'config.alternate', True),
  '--no-alternate': (
    ['--model', 'lenet5', '--no-alternate'],
    'config.alternate',
    False,
    ['--model', 'lenet5', '--alternate'],
  ),
  '--dropout': (['--dropout', 'none'], 'args.dropout', {}),
  '--retrain-epochs': (['--retrain-epochs', '2'], 'config.retrain_epochs', 2),
  '--retrain-schedule': (
    ['--retrain-schedule', 'fine-tune'],
    'config.retrain_schedule',
    'fine-tune',
  ),
  '--retrain-lr-scale': (
    ['--retrain-schedule', 'fine-tune', '--retrain-lr-scale', '0.5'],
    'config.retrain_lr_scale',
    0.5,
  ),
  '--pruning-schedule': (
    ['--rounds', '0', '--pruning-schedule', 'gradual', '--gradual-sparsity', '0.9'],
    'config.pruning_schedule',
    'gradual',
  ),
  '--gradual-sparsity': (
    ['--rounds', '0', '--pruning-schedule', 'gradual', '--gradual-sparsity', '0.9'],
    'config.gradual_sparsity',
    0.9,
  ),
  '--gradual-initial-sparsity': (
    [
      '--rounds',
      '0',
      '--pruning-schedule',
      'gradual',
      '--gradual-sparsity',
      '0.9',
      '--gradual-initial-sparsity',
      '0.5',
    ],
    'config.gradual_initial_sparsity',
    0.5,
  ),
  '--gradual-start-epoch': (
    [
      '--rounds',
      '0',
      '--pruning-schedule',
      'gradual',
      '--gradual-sparsity',
      '0.9',
      '--gradual-start-epoch',
      '2',
    ],
    'config.gradual_start_epoch',
    2,
  ),
  '--gradual-end-epoch': (
    [
      '--rounds',
      '0',
      '--pruning-schedule',
      'gradual',
      '--gradual-sparsity',
      '0.9',
      '--gradual-end-epoch',
      '20',
    ],
    'config.gradual_end_epoch',
    20,
  ),
  '--gradual-frequency': (
    [
      '--rounds',
      '0',
      '--pruning-schedule',
      'gradual',
      '--gradual-sparsity',
      '0.9',
      '--gradual-frequency',
      '50',
    ],
    'config.gradual_frequency',
    50,
  ),
  '--gradual-scope': (
    [
      '--rounds',
      '0',
      '--pruning-schedule',
      'gradual',
      '--gradual-sparsity',
      '0.9',
      '--gradual-scope',
      'per-layer',
    ],
    'config.gradual_scope',
    'per-layer',
  ),
  '--nm': (
    [
      *['--rounds', '0', '--pruning-schedule', 'gradual', '--gradual-sparsity', '0.5'],
      *['--gradual-scope', 'per-layer', '--nm', '2:4'],
    ],
    'config.nm',
    '2:4',
  ),
  '--nm-dense': (['--nm', '2:4', '--nm-dense', 'fc1,fc3'], 'config.nm_dense', ('fc1', 'fc3')),
  '--structure': (
    ['--structure', 'channels', '--structured-sparsity', '0.5'],
    'config.structure',
    'channels',
  ),
  '--structured-criterion': (
    ['--structure', 'channels', '--structured-sparsity', '0.5', '--structured-criterion', 'l2'],
    'config.structured_criterion',
    'l2',
  ),
  '--structured-scope': (
    ['--structure', 'channels', '--structured-sparsity', '0.5', '--structured-scope', 'global'],
    'config.structured_scope',
    'global',
  ),
  '--structured-sparsity': (
    ['--structure', 'channels', '--structured-sparsity', '0.5'],
    'config.structured_sparsity',
    0.5,
  ),
  '--structured-grad-batches': (
    [
      *['--structure', 'channels', '--structured-sparsity', '0.5'],
      *['--structured-criterion', 'taylor', '--structured-grad-batches', '3'],
    ],
    'config.structured_grad_batches',
    3,
  ),
  '--round-to': (
    ['--structure', 'channels', '--structured-sparsity', '0.5', '--round-to', '8'],
    'config.round_to',
    8,
  ),
  '--rewind-step': (
    ['--retrain-schedule', 'weight-rewind', '--rewind-step', '7'],
    'config.rewind_step',
    7,
  ),
  '--eval-batch-size': (['--eval-batch-size', '100'], 'config.eval_batch_size', 100),
  '--compiler-options': (
    ['--model', 'lenet5', '--compiler-options', 'none'],
    'config.compiler_options',
    {},
    ['--model', 'lenet5'],
  ),
  '--dtype': (['--dtype', 'bfloat16'], 'args.dtype', 'bfloat16'),
}
# prune_vgg.py: the same flags, with values that differ from its recipes'.
VGG = {
  **LENET,
  '--config': (['--config', str(SCRIPTS / 'configs' / 'vgg16.py')], 'config.model', 'vgg16'),
  '--model': (['--model', 'alexnet'], 'config.model', 'alexnet'),
  '--width': (['--width', '0.5'], 'config.width', 0.5),
  '--epoch-checkpoints': (
    ['--epoch-checkpoints'],
    'args.epoch_checkpoints',
    True,
    ['--no-epoch-checkpoints'],
  ),
  '--no-epoch-checkpoints': (['--no-epoch-checkpoints'], 'args.epoch_checkpoints', False),
  '--batch-norm': (['--batch-norm'], 'config.batch_norm', True, ['--no-batch-norm']),
  '--no-batch-norm': (['--no-batch-norm'], 'config.batch_norm', False),
  '--dropout-rate': (['--dropout-rate', '0.3'], 'config.dropout_rate', 0.3),
  '--augment': (['--augment'], 'config.augment', True),
  '--no-augment': (['--no-augment'], 'config.augment', False),
  '--dropout': (['--dropout', 'none'], 'config.dropout', {}),
  '--no-alternate': (['--no-alternate'], 'config.alternate', False),
  '--density': (
    ['--density', 'conv1_1=0.5,fc6=0.1'],
    'config.density',
    {'conv1_1': 0.5, 'fc6': 0.1},
  ),
  '--quality': (['--criterion', 'quality', '--quality', 'fc6=2'], 'config.quality', {'fc6': 2.0}),
  '--std-of': (
    ['--criterion', 'quality', '--quality', 'fc6=2', '--std-of', 'kept'],
    'config.std_of',
    'kept',
  ),
  '--alternate': (['--alternate'], 'config.alternate', True, ['--no-alternate']),
  '--compiler-options': (['--compiler-options', 'none'], 'config.compiler_options', {}),
  '--dtype': (['--dtype', 'bfloat16'], 'config.dtype', 'bfloat16'),
  '--nm-dense': (['--nm', '2:4', '--nm-dense', 'conv1_1'], 'config.nm_dense', ('conv1_1',)),
}
# prune_structured.py: the same flags, with values that differ from its recipes'. Its
# recipes prune channels: the options of single-weight pruning, which a structured
# recipe cannot take (its structured fields would do nothing), are checked as parsed.
_SINGLE_WEIGHT = (
  '--criterion', '--density', '--quality', '--std-of', '--alternate', '--no-alternate',
  '--pruning-schedule', '--nm', '--nm-dense', '--auto-sensitivity', '--structure',
)  # fmt: skip
STRUCTURED = {
  **VGG,
  **{
    flag: (argv, f'args.{where.split(".")[1]}', value, *baseline)
    for flag, (argv, where, value, *baseline) in VGG.items()
    if flag in _SINGLE_WEIGHT or flag.startswith('--gradual-')
  },
  '--config': (['--config', str(SCRIPTS / 'configs' / 'vgg16.py')], 'config.model', 'vgg16'),
  '--model': (['--model', 'resnet56'], 'config.model', 'resnet56'),
  '--width': (['--model', 'vgg16_cifar', '--width', '0.5'], 'config.width', 0.5),
  '--batch-norm': (
    ['--model', 'vgg16_cifar', '--batch-norm'],
    'config.batch_norm',
    True,
    ['--model', 'vgg16_cifar', '--no-batch-norm'],
  ),
  '--no-batch-norm': (
    ['--model', 'vgg16_cifar', '--no-batch-norm'],
    'config.batch_norm',
    False,
    ['--model', 'vgg16_cifar'],
  ),
  '--dropout-rate': (
    ['--model', 'vgg16_cifar', '--dropout-rate', '0.3'],
    'config.dropout_rate',
    0.3,
  ),
  '--dropout': (
    ['--model', 'vgg16_cifar', '--dropout', 'none'],
    'config.dropout',
    {},
    ['--model', 'vgg16_cifar'],
  ),
  '--structure': (['--structure', 'unstructured'], 'args.structure', 'unstructured'),
  '--regularization-strength': (
    ['--regularization-strength', '5e-5'],
    'config.regularization_strength',
    5e-5,
  ),
  '--structured-sparsity': (['--structured-sparsity', '0.5'], 'config.structured_sparsity', 0.5),
  '--round-to': (['--round-to', '16'], 'config.round_to', 16),  # the ResNet recipes round to 8
  '--compiler-options': (
    ['--compiler-options', 'xla_cpu_experimental_ynn_fusion_type='],
    'config.compiler_options',
    {'xla_cpu_experimental_ynn_fusion_type': ''},
  ),
}
OPTIONS = {'prune_lenet': LENET, 'prune_vgg': VGG, 'prune_structured': STRUCTURED}


def _value(script, argv, where):
  args = script.parse_args(argv)
  owner, name = where.split('.')
  return getattr(script.build_config(args) if owner == 'config' else args, name)


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_help_lists_exactly_the_options_tested_below(name, capsys):
  with pytest.raises(SystemExit):
    load_script(name).parse_args(['--help'])
  text = capsys.readouterr().out
  usage = text.split('\n\n', 1)[0]  # the flags themselves, not the recipes' listing
  assert set(re.findall(r'(?<![\w-])--[a-z][a-z0-9-]*', usage)) - {'--help'} == set(OPTIONS[name])
  for model in load_script(name).SCRIPT.models:
    assert f'  {model}: --' in text  # each recipe's values are shown


def test_every_configuration_field_is_a_flag_of_both_scripts():
  fields = {cli.flag(f.name) for f in dataclasses.fields(PruneConfig)}
  for options in OPTIONS.values():
    assert fields <= set(options)


@pytest.mark.parametrize(('name', 'flag'), [(n, f) for n in OPTIONS for f in sorted(OPTIONS[n])])
def test_every_option_takes_effect(name, flag):
  script = load_script(name)
  argv, where, value, *baseline = OPTIONS[name][flag]
  assert _value(script, argv, where) == value
  assert _value(script, baseline[0] if baseline else [], where) != value


def test_a_registered_criterion_is_a_choice_of_the_command_line(monkeypatch, capsys):
  from pruning import criteria

  monkeypatch.setattr(criteria, 'CRITERIA', dict(criteria.CRITERIA))
  criteria.register_criterion('squared', lambda weights, rng: weights**2)
  script = load_script('prune_lenet')
  assert script.build_config(script.parse_args(['--criterion', 'squared'])).criterion == 'squared'
  with pytest.raises(SystemExit):
    script.parse_args(['--help'])
  assert '{quality,random,sparsity,squared}' in capsys.readouterr().out


def test_dense_checkpoint_skips_dense_training_unless_epochs_are_given():
  script = load_script('prune_vgg')
  assert script.build_config(script.parse_args(['--dense-checkpoint', 'x'])).dense_epochs == 0
  config = script.build_config(script.parse_args(['--dense-checkpoint', 'x', '--dense-epochs=2']))
  assert config.dense_epochs == 2


def _fails(script, argv, capsys) -> str:
  """The one line a failing command prints; it must exit with status 2 and print nothing else."""
  capsys.readouterr()
  with pytest.raises(SystemExit) as exit_:
    load_script(script).main(argv)
  assert exit_.value.code == 2
  _, err = capsys.readouterr()
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1, err
  assert lines[0].startswith(f'{script}.py: error: ')
  return lines[0].split(': error: ', 1)[1]


IDLE = [
  (
    'prune_lenet',
    ['--quality', 'fc1=1.5'],
    "--quality needs --criterion quality (the criterion is 'sparsity', which selects by count)",
  ),
  (
    'prune_lenet',
    ['--criterion', 'random', '--quality', 'fc1=1.5'],
    "--quality needs --criterion quality (the criterion is 'random', which selects by count)",
  ),
  (
    'prune_lenet',
    ['--criterion', 'quality', '--quality', 'fc1=1.5', '--density', 'fc1=0.1'],
    "--density needs --criterion sparsity or random (the criterion is 'quality', which selects by threshold)",
  ),
  (
    'prune_lenet',
    ['--retrain-lr-scale', '0.5'],
    "--retrain-lr-scale needs --retrain-schedule fine-tune (the retrain schedule is 'rewind')",
  ),
  (
    'prune_lenet',
    ['--gradual-frequency', '50'],
    "--gradual-frequency needs --pruning-schedule gradual (the pruning schedule is 'iterative')",
  ),
  (
    'prune_lenet',
    ['--structured-sparsity', '0.5'],
    "--structured-sparsity needs --structure channels (the structure is 'unstructured', which prunes single weights)",
  ),
  (
    'prune_lenet',
    ['--structure', 'channels', '--structured-sparsity', '0.5', '--density', 'fc1=0.1'],
    "--density needs --structure unstructured (structure='channels' removes whole units, chosen by structured_criterion)",
  ),
  (
    'prune_vgg',
    ['--structure', 'channels', '--structured-sparsity', '0.5', '--criterion', 'random'],
    "--criterion needs --structure unstructured (structure='channels' removes whole units, chosen by structured_criterion)",
  ),
  (
    'prune_lenet',
    ['--rounds', '0', '--structure', 'channels', '--round-to', '8'],
    '--round-to needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
  ),
  (
    'prune_lenet',
    ['--rewind-step', '7'],
    "--rewind-step needs --retrain-schedule weight-rewind (the retrain schedule is 'rewind')",
  ),
  (
    'prune_lenet',
    ['--std-of', 'kept'],
    "--std-of needs --criterion quality (the criterion is 'sparsity', which selects by count)",
  ),
  (
    'prune_lenet',
    ['--rounds', '0', '--density', 'fc1=0.1'],
    '--density needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
  ),
  (
    'prune_lenet',
    ['--rounds', '0', '--criterion', 'random'],
    '--criterion needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
  ),
  (
    'prune_lenet',
    ['--alternate'],
    '--alternate needs a model with both CONV and FC layers (lenet300 has only FC layers)',
  ),
  (
    'prune_lenet',
    ['--auto-sensitivity', '1', '--validation-size', '100', '--density', 'fc1=0.1'],
    "--density needs no --auto-sensitivity (the sensitivity curves choose every layer's density)",
  ),
  (
    'prune_lenet',
    ['--regularization', 'none', '--regularization-strength', '1e-3'],
    "--regularization-strength needs --regularization l2 or l1 (the regularization is 'none')",
  ),
  (
    'prune_lenet',
    ['--retrain-epochs', '0', '--retrain-schedule', 'fine-tune'],
    '--retrain-schedule needs --retrain-epochs >= 1 (with 0 retraining epochs nothing is retrained)',
  ),
  (
    'prune_lenet',
    ['--from-dense', 'no-such-run', '--std-of', 'kept'],
    "--std-of needs --criterion quality (the criterion is 'sparsity', which selects by count)",
  ),
  (
    'prune_vgg',
    ['--model', 'vgg16', '--retrain-schedule', 'rewind', '--retrain-lr-scale', '0.05'],
    "--retrain-lr-scale needs --retrain-schedule fine-tune (the retrain schedule is 'rewind')",
  ),
  (
    'prune_vgg',
    ['--rounds', '0', '--no-alternate'],
    '--no-alternate needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
  ),
  (
    'prune_vgg',
    ['--rounds', '0', '--dropout', 'none'],
    '--dropout needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
  ),
  (
    'prune_vgg',
    ['--rounds', '0', '--retrain-epochs', '2'],
    '--retrain-epochs needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
  ),
  (
    'prune_vgg',
    ['--dataset', 'synthetic', '--input-workers', '4'],
    "--input-workers needs --dataset cifar10 (the dataset is 'synthetic', which is not read through grain)",
  ),
  (
    'prune_vgg',
    ['--dataset', 'synthetic', '--no-augment'],
    "--no-augment needs --dataset cifar10 (the dataset is 'synthetic', which is not augmented)",
  ),
  (
    'prune_vgg',
    ['--dataset', 'synthetic', '--data-dir', 'tfds'],
    "--data-dir needs --dataset cifar10 (the dataset is 'synthetic', made in memory)",
  ),
  (
    'prune_lenet',
    ['--structure', 'channels', '--structured-sparsity', '0.5', '--structured-grad-batches', '2'],
    "--structured-grad-batches needs --structured-criterion taylor (the structured criterion is 'l1', which does not score from gradients)",
  ),
  (
    'prune_structured',
    ['--structure', 'unstructured', '--density', 'fc=0.1'],
    f'recipe {SCRIPTS / "configs" / "structured" / "resnet20.py"} sets --structured-sparsity needs '
    "--structure channels (the structure is 'unstructured', which prunes single weights)",
  ),
  (
    'prune_lenet',
    ['--nm', '2:4', '--density', 'fc1=0.5'],
    "--density needs no --nm (nm '2:4' keeps N of every M in each pruned layer)",
  ),
  (
    'prune_lenet',
    ['--nm-dense', 'fc3'],
    "--nm-dense needs an N:M pattern (nm, such as '2:4') (without nm every layer prunes by its density)",
  ),
  (
    'prune_lenet',
    ['--rounds', '0', '--nm', '2:4'],
    '--nm needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
  ),
  (
    'prune_vgg',
    ['--model', 'vgg16', '--raw-data', 'archive.tar.gz'],
    "--raw-data needs a model that takes mnist or cifar10 (the dataset is 'imagenet2012', which is not prepared from raw files)",
  ),
]


@pytest.mark.parametrize(('script', 'argv', 'message'), IDLE)
def test_an_option_that_would_do_nothing_is_a_usage_error(script, argv, message, tmp_path, capsys):
  workdir = tmp_path / 'run'
  assert _fails(script, ['--workdir', str(workdir), *argv], capsys) == message
  assert not workdir.exists()


MISTAKES = [
  (['--seed', '-1'], 'seed is -1; expected an integer >= 0'),
  (['--density', 'fc9=0.1'], "density is given for ['fc9'], which lenet300 does not have"),
  (['--density', 'fc1:0.1'], "argument --density: 'fc1:0.1' is not LAYER=VALUE"),
  (['--criterion', 'nonsense'], "argument --criterion: invalid choice: 'nonsense'"),
  (['--config', 'no/such/recipe.py'], 'recipe no/such/recipe.py does not exist'),
  (
    ['--config', str(SCRIPTS / 'configs' / 'lenet5.py'), '--model', 'lenet300'],
    '--model lenet300 contradicts --config',
  ),
  (['--compiler-options', 'no_such_option=1'], "No such compile option: 'no_such_option'"),
  (['--resume'], 'nothing to resume'),
  (['--from-dense', 'no/such/run'], 'no/such/run holds no completed dense phase'),
  (['--dense-checkpoint', 'no/such/ckpt'], 'dense_checkpoint no/such/ckpt does not exist'),
  (['--num-processes', '2'], 'num_processes=2 and process_id=None need a coordinator_address'),
  (
    [
      *['--structure', 'channels', '--structured-sparsity', '0.5'],
      *['--structured-criterion', 'taylor', '--structured-grad-batches', '0'],
    ],
    'structured_grad_batches is 0; expected an integer >= 1',
  ),
  (['--structure', 'channels'], "structure='channels' with 6 rounds needs structured_sparsity"),
  (
    ['--nm', '2:4', '--nm-dense', 'fc1,,fc2'],
    "argument --nm-dense: 'fc1,,fc2' is not LAYER,LAYER,...",
  ),
  (['--nm', '1:3'], "layer 'fc1' has 784 inputs (axis -2 of its kernel, shape (784, 300)), not a"),
]


@pytest.mark.parametrize(('argv', 'message'), MISTAKES)
def test_a_mistake_is_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
  workdir = tmp_path / 'run'
  assert message in _fails('prune_lenet', ['--workdir', str(workdir), *argv], capsys)
  assert not workdir.exists()


def test_missing_data_is_one_line_and_a_failed_start_leaves_nothing(
  tmp_path, capsys, mnist_data_dir
):
  workdir, empty = tmp_path / 'run', tmp_path / 'empty'
  empty.mkdir()
  argv = ['--workdir', str(workdir), *TINY, '--rounds', '0']
  message = _fails('prune_lenet', [*argv, '--data-dir', str(tmp_path / 'tfds'), '--raw-data', str(empty)], capsys)  # fmt: skip
  assert f'MNIST raw files in {empty} are missing or corrupt' in message
  assert not workdir.exists()
  # The corrected command then starts, and finishes, without --resume.
  load_script('prune_lenet').main([*argv, '--data-dir', str(mnist_data_dir)])
  assert (workdir / 'report.json').exists()


def test_workdir_conflicts_are_one_line_and_change_nothing(tmp_path, capsys, mnist_data_dir):
  workdir = tmp_path / 'run'
  argv = ['--workdir', str(workdir), '--data-dir', str(mnist_data_dir), *TINY, '--rounds', '0']
  load_script('prune_lenet').main(argv)
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob('*')}
  assert 'already holds a run' in _fails('prune_lenet', argv, capsys)
  changed = _fails('prune_lenet', [*argv, '--resume', '--learning-rate', '0.02'], capsys)
  assert "differing fields: ['learning_rate']" in changed
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob('*')} == before
  config = json.loads((workdir / 'config.json').read_text())
  assert config['learning_rate'] == 0.1  # the recipe's, untouched
