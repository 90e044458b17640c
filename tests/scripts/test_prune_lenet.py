"""The command-line front end runs a tiny prune end to end and writes its reports."""

import importlib.util
import json
import pathlib
import re

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'prune_lenet.py'


def load_script():
  spec = importlib.util.spec_from_file_location('prune_lenet', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_tiny_run_writes_reports(tmp_path):
  script = load_script()
  workdir = tmp_path / 'run'
  out = script.main(
    [
      '--workdir',
      str(workdir),
      '--data-dir',
      str(tmp_path / 'tfds'),
      '--no-progress',
      '--dense-epochs',
      '1',
      '--rounds',
      '1',
      '--retrain-epochs',
      '1',
      '--train-subset',
      '512',
      '--density',
      'fc1=0.1,fc2=0.2,fc3=0.5',
    ]
  )
  assert {p.name for p in workdir.iterdir()} >= {
    'config.json',
    'metrics.jsonl',
    'report.md',
    'report.json',
    'error_vs_kept.png',
    'checkpoints',
  }
  payload = json.loads((workdir / 'report.json').read_text())
  assert [layer['weights_kept_pct'] for layer in payload['layers']] == pytest.approx(
    [10, 20, 50], abs=0.01
  )
  assert payload['header']['command'].startswith('prune_lenet.py --workdir')
  assert payload['header']['commit'] != ''
  assert out['final']['round'] == 1


def test_bad_density_is_a_clear_error(capsys):
  script = load_script()
  with pytest.raises(SystemExit):
    script.parse_args(['--density', 'fc1:0.1'])
  assert "'fc1:0.1' is not LAYER=VALUE" in capsys.readouterr().err


def test_unknown_layer_is_a_usage_error_before_training(capsys, tmp_path):
  script = load_script()
  with pytest.raises(SystemExit):
    script.main(['--workdir', str(tmp_path / 'run'), '--density', 'fc9=0.1'])
  assert "density is given for ['fc9'], which lenet300 does not have" in capsys.readouterr().err
  assert not (tmp_path / 'run').exists()


def test_auto_sensitivity_and_random_criterion_options():
  script = load_script()
  args = script.parse_args(['--auto-sensitivity', '0.5', '--validation-size', '100'])
  assert (args.auto_sensitivity, args.validation_size) == (0.5, 100)
  assert script.parse_args(['--criterion', 'random']).criterion == 'random'


def test_from_dense_prunes_the_given_dense_network(tmp_path, capsys):
  script = load_script()
  tiny = ['--data-dir', str(tmp_path / 'tfds'), '--no-progress', '--train-subset', '512']
  tiny += ['--dense-epochs', '1']
  # No retraining options for the dense run: with --rounds 0 they would do nothing (an error).
  script.main(['--workdir', str(tmp_path / 'dense'), '--rounds', '0', *tiny])
  tiny += ['--retrain-epochs', '1']
  dense_records = (tmp_path / 'dense' / 'metrics.jsonl').read_text().splitlines()

  pruned = tmp_path / 'pruned'
  args = ['--workdir', str(pruned), '--from-dense', str(tmp_path / 'dense'), *tiny]
  out = script.main([*args, '--rounds', '1', '--density', 'fc1=0.1,fc2=0.2,fc3=0.5'])
  records = (pruned / 'metrics.jsonl').read_text().splitlines()
  assert records[: len(dense_records)] == dense_records  # round 0 is the dense run's, untouched
  assert out['final']['round'] == 1
  assert {r['round'] for r in map(json.loads, records[len(dense_records) :])} == {1}
  header = json.loads((pruned / 'report.json').read_text())['header']
  assert header['dense network from'] == str(tmp_path / 'dense')
  # --resume of the finished run continues it without seeding it again.
  assert script.main([*args, '--rounds', '1', '--density', 'fc1=0.1,fc2=0.2,fc3=0.5', '--resume'])

  # A dense setting that differs from the dense run's is a usage error naming it.
  with pytest.raises(SystemExit):
    script.main(
      [
        '--workdir',
        str(tmp_path / 'other'),
        '--from-dense',
        str(tmp_path / 'dense'),
        *tiny,
        '--learning-rate',
        '0.02',
      ]
    )
  assert "differing fields: ['learning_rate']" in capsys.readouterr().err


# flag -> (argv, where its value lands: 'config.<field>' or 'args.<name>', the value). Each value
# differs from the default, so a flag that stopped acting fails.
OPTIONS = {
  '--model': (['--model', 'lenet5'], 'config.model', 'lenet5'),
  '--workdir': (['--workdir', 'runs/x'], 'args.workdir', 'runs/x'),
  '--data-dir': (['--data-dir', 'tfds'], 'args.data_dir', 'tfds'),
  '--raw-dir': (['--raw-dir', 'raw'], 'args.raw_dir', 'raw'),
  '--seed': (['--seed', '3'], 'config.seed', 3),
  '--resume': (['--resume'], 'args.resume', True),
  '--from-dense': (['--from-dense', 'runs/dense'], 'args.from_dense', 'runs/dense'),
  '--batch-size': (['--batch-size', '64'], 'config.batch_size', 64),
  '--learning-rate': (['--learning-rate', '0.02'], 'config.learning_rate', 0.02),
  '--momentum': (['--momentum', '0.8'], 'config.momentum', 0.8),
  '--dense-epochs': (['--dense-epochs', '3'], 'config.dense_epochs', 3),
  '--rounds': (['--rounds', '2'], 'config.rounds', 2),
  '--retrain-epochs': (['--retrain-epochs', '2'], 'config.retrain_epochs', 2),
  '--retrain-lr-scale': (
    ['--retrain-schedule', 'fine-tune', '--retrain-lr-scale', '0.5'],
    'config.retrain_lr_scale',
    0.5,
  ),
  '--regularization-strength': (
    ['--regularization-strength', '1e-4'],
    'config.regularization_strength',
    1e-4,
  ),
  '--validation-size': (['--validation-size', '100'], 'config.validation_size', 100),
  '--train-subset': (['--train-subset', '256'], 'config.train_subset', 256),
  '--retrain-schedule': (
    ['--retrain-schedule', 'fine-tune'],
    'config.retrain_schedule',
    'fine-tune',
  ),
  '--regularization': (['--regularization', 'l1'], 'config.regularization', 'l1'),
  '--criterion': (['--criterion', 'random'], 'config.criterion', 'random'),
  '--auto-sensitivity': (
    ['--auto-sensitivity', '0.5', '--validation-size', '100'],
    'config.auto_sensitivity',
    0.5,
  ),
  '--density': (['--density', 'fc1=0.1,fc2=0.2'], 'config.density', {'fc1': 0.1, 'fc2': 0.2}),
  '--quality': (
    ['--criterion', 'quality', '--quality', 'fc1=1.5'],
    'config.quality',
    {'fc1': 1.5},
  ),
  '--std-of': (
    ['--criterion', 'quality', '--quality', 'fc1=1.5', '--std-of', 'kept'],
    'config.std_of',
    'kept',
  ),
  '--alternate': (['--model', 'lenet5', '--alternate'], 'config.alternate', True),
  '--no-progress': (['--no-progress'], 'args.no_progress', True),
}


def _value(script, argv, where):
  args = script.parse_args(argv)
  owner, name = where.split('.')
  return getattr(script.build_config(args) if owner == 'config' else args, name)


def test_help_lists_exactly_the_options_tested_below(capsys):
  with pytest.raises(SystemExit):
    load_script().parse_args(['--help'])
  flags = set(re.findall(r'(?<![\w-])--[a-z][a-z0-9-]*', capsys.readouterr().out))
  assert flags - {'--help'} == set(OPTIONS)


@pytest.mark.parametrize('flag', sorted(OPTIONS))
def test_every_option_takes_effect(flag):
  script = load_script()
  argv, where, value = OPTIONS[flag]
  assert _value(script, argv, where) == value
  assert _value(script, [], where) != value


@pytest.mark.parametrize(
  ('argv', 'message'),
  [
    (
      ['--quality', 'fc1=1.5'],
      "--quality needs --criterion quality (the criterion is 'sparsity', which selects by count)",
    ),
    (
      ['--criterion', 'random', '--quality', 'fc1=1.5'],
      "--quality needs --criterion quality (the criterion is 'random', which selects by count)",
    ),
    (
      ['--criterion', 'quality', '--quality', 'fc1=1.5', '--density', 'fc1=0.1'],
      "--density needs --criterion sparsity or random (the criterion is 'quality', which selects by threshold)",
    ),
    (
      ['--retrain-lr-scale', '0.5'],
      "--retrain-lr-scale needs --retrain-schedule fine-tune (the retrain schedule is 'rewind')",
    ),
    (
      ['--std-of', 'kept'],
      "--std-of needs --criterion quality (the criterion is 'sparsity', which selects by count)",
    ),
    (
      ['--rounds', '0', '--density', 'fc1=0.1'],
      '--density needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
    ),
    (
      ['--rounds', '0', '--criterion', 'random'],
      '--criterion needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
    ),
    (
      ['--alternate'],
      '--alternate needs a model with both CONV and FC layers (lenet300 has only FC layers)',
    ),
    (
      ['--auto-sensitivity', '1', '--validation-size', '100', '--density', 'fc1=0.1'],
      "--density needs no --auto-sensitivity (the sensitivity curves choose every layer's density)",
    ),
    (
      ['--regularization', 'none', '--regularization-strength', '1e-3'],
      "--regularization-strength needs --regularization l2 or l1 (the regularization is 'none')",
    ),
    (
      ['--retrain-epochs', '0', '--retrain-schedule', 'fine-tune'],
      '--retrain-schedule needs --retrain-epochs >= 1 '
      '(with 0 retraining epochs nothing is retrained)',
    ),
    # Checked before the dense run is copied in.
    (
      ['--from-dense', 'no-such-run', '--std-of', 'kept'],
      "--std-of needs --criterion quality (the criterion is 'sparsity', which selects by count)",
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
