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


def test_tiny_run_writes_reports(tmp_path, mnist_data_dir):
  script = load_script()
  workdir = tmp_path / 'run'
  out = script.main(
    [
      '--workdir',
      str(workdir),
      '--data-dir',
      str(mnist_data_dir),
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


def test_from_dense_prunes_the_given_dense_network(tmp_path, capsys, mnist_data_dir):
  script = load_script()
  tiny = ['--data-dir', str(mnist_data_dir), '--no-progress', '--train-subset', '512']
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


def test_the_report_names_the_commit_that_trained(tmp_path, monkeypatch, mnist_data_dir):
  # A run of hours can end after new commits: its report names the checkout it started from.
  from pruning.experiment import pipeline, report

  script = load_script()
  checkout = {'commit': 'abc1234'}
  monkeypatch.setattr(report, 'git_commit', lambda *args, **kwargs: checkout['commit'])
  run_prepared = pipeline.run_prepared

  def commit_while_training(*args, **kwargs):
    result = run_prepared(*args, **kwargs)
    checkout['commit'] = 'def5678'
    return result

  monkeypatch.setattr(pipeline, 'run_prepared', commit_while_training)
  workdir = tmp_path / 'run'
  script.main(
    [
      *('--workdir', str(workdir), '--data-dir', str(mnist_data_dir), '--no-progress'),
      *('--dense-epochs', '1', '--rounds', '0', '--train-subset', '256'),
    ]
  )
  assert json.loads((workdir / 'report.json').read_text())['header']['commit'] == 'abc1234'
  # So does each invocation's start record in metrics.jsonl (a resumed run has several).
  start = json.loads((workdir / 'metrics.jsonl').read_text().splitlines()[0])
  assert (start['event'], start['commit']) == ('start', 'abc1234')
  # ... and the data it read, from the prepared dataset.
  assert start['data'].startswith('tfds mnist_idx/') and 'official IDX files' in start['data']
