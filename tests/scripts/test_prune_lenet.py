"""The command-line front end runs a tiny prune end to end and writes its reports."""

import importlib.util
import json
import pathlib

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
