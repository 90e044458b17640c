"""The results script runs seeds and schedules in pieces and aggregates every finished run."""

import importlib.util
import json
import pathlib

import pytest

from pruning import pipeline

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'lenet_results.py'
TINY = {
  'dense_epochs': 1,
  'rounds': 1,
  'retrain_epochs': 1,
  'train_subset': 256,
  'test_subset': 200,
  'eval_batch_size': 200,
}


@pytest.fixture
def results(monkeypatch):
  spec = importlib.util.spec_from_file_location('lenet_results', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  default_config = pipeline.default_config
  monkeypatch.setattr(
    module.pipeline,
    'default_config',
    lambda model, **overrides: default_config(model, **{**TINY, **overrides}),
  )
  return module


def test_runs_in_pieces_and_aggregates(results, tmp_path):
  runs, output = tmp_path / 'runs', tmp_path / 'RESULTS.md'
  data_dir = str(tmp_path / 'tfds')
  common = ['--runs', str(runs), '--data-dir', data_dir, '--output', str(output)]
  results.main(['--models', 'lenet300', '--seeds', '0', *common])
  results.main(['--models', 'lenet300', '--seeds', '0', '1', '--schedules', 'fine-tune', *common])
  # Seed 0 with rewinding is finished: asking for it again must not rerun it.
  summary = runs / 'lenet300-rewind-seed0' / 'summary.json'
  before = summary.stat().st_mtime_ns
  results.main(['--models', 'lenet300', '--seeds', '0', *common])
  assert summary.stat().st_mtime_ns == before

  text = output.read_text()
  saved = json.loads(summary.read_text())
  assert saved['command'].startswith('python lenet_results.py --models lenet300 --seeds 0')
  assert sum(layer['kept'] for layer in saved['layers']) == round(
    saved['weights_kept_pct'] * 266_200 / 100
  )
  assert '| LeNet-300-100 | rewind | 0 |' in text
  assert '| LeNet-300-100 | fine-tune | 0, 1 |' in text
  assert text.count('| **total** | 266,200 | 532,400 |') == 2
  assert 'Targets: paper (≥ 12x at ≤ 1.64 %)' in text
  assert f'`{saved["commit"]}`' in text
