"""The experiment scripts behind the paper's figures: level densities, pieces, aggregation."""

import importlib.util
import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks'
TINY = {
  'dense_epochs': 1,
  'retrain_epochs': 1,
  'train_subset': 256,
  'test_subset': 200,
  'eval_batch_size': 200,
}


def load(name, monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))
  spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_level_densities_keep_the_fraction_and_the_proportions(monkeypatch):
  common = load('_common', monkeypatch)
  sizes = {'fc1': 235_200, 'fc2': 30_000, 'fc3': 1_000}
  reference = {'fc1': 0.035, 'fc2': 0.07, 'fc3': 0.25}
  for kept in (0.5, 0.2, 0.05, 0.0125):
    density = common.level_densities(kept, reference, sizes)
    total = sum(sizes[k] * d for k, d in density.items())
    assert total == pytest.approx(kept * sum(sizes.values()), rel=1e-9), kept
    assert all(0 < d <= 1 for d in density.values())
    if density['fc3'] < 1:
      assert density['fc2'] / density['fc1'] == pytest.approx(2.0)
      assert density['fc3'] / density['fc1'] == pytest.approx(0.25 / 0.035)
  assert common.level_densities(0.5, reference, sizes)['fc3'] == 1.0
  with pytest.raises(ValueError, match='kept fraction is 0'):
    common.level_densities(0, reference, sizes)


def test_magnitude_vs_random_runs_in_pieces_and_reports(mnist_data_dir, monkeypatch, tmp_path):
  script = load('magnitude_vs_random', monkeypatch)
  shipped = script._common.shipped_config
  monkeypatch.setattr(
    script._common,
    'shipped_config',
    lambda model, **overrides: shipped(model, **{**TINY, 'rounds': 1, **overrides}),
  )
  monkeypatch.setattr(script, 'COMPRESSION', (5, 40))
  runs, out = tmp_path / 'runs', tmp_path / 'results'
  common = ['--runs', str(runs), '--output-dir', str(out), '--data-dir', str(mnist_data_dir)]
  script.main(['--seeds', '0', *common])
  provenance = json.loads((runs / 'seed0' / 'random-40x' / 'provenance.json').read_text())
  assert provenance[0]['command'].startswith('python benchmarks/magnitude_vs_random.py --seeds 0')
  # A second invocation finds every run of seed 0 finished and only reports.
  script.main(['--report-only', *common])
  payload = json.loads((out / 'magnitude_vs_random.json').read_text())
  assert payload['seeds'] == [0]
  assert sorted(payload['summary']) == ['magnitude-40x', 'magnitude-5x', 'random-40x', 'random-5x']
  assert len(json.loads((runs / 'seed0' / 'random-40x' / 'provenance.json').read_text())) == 1
  by_run = {(r['criterion'], r['level']): r for r in payload['runs']}
  assert by_run['magnitude', 40]['compression'] == pytest.approx(
    by_run['random', 40]['compression']
  )
  assert by_run['magnitude', 40]['compression'] == pytest.approx(40, rel=0.01)
  text = (out / 'magnitude_vs_random.md').read_text()
  assert '- 40x: magnitude pruning has the lower test error on' in text
  assert (out / 'magnitude_vs_random.png').stat().st_size < 150_000
  assert len((out / 'magnitude_vs_random.csv').read_text().splitlines()) == 1 + 4


@pytest.mark.parametrize(
  ('dataset', 'variable'), [('mnist', 'PRUNING_MNIST_DIR'), ('cifar10', 'PRUNING_CIFAR10_PATH')]
)
def test_raw_dir_defaults_like_the_scripts_variable_first(dataset, variable, monkeypatch, tmp_path):
  import argparse

  common = load('_common', monkeypatch)
  name = {'mnist': 'mnist', 'cifar10': 'cifar10-jpeg.tar.gz'}[dataset]
  (tmp_path / name).touch()
  monkeypatch.setattr(common, 'DATASETS', tmp_path)

  def default():
    parser = argparse.ArgumentParser()
    common.add_data_arguments(parser, dataset)
    return parser.parse_args([]).raw_dir

  monkeypatch.delenv(variable, raising=False)
  assert default() == str(tmp_path / name)
  monkeypatch.setenv(variable, '/elsewhere')
  assert default() is None  # the library then reads the variable, as the scripts do
