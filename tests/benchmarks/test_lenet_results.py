"""The results script runs seeds and schedules in pieces and aggregates every finished run.

Schedules of a seed start from one dense network; every provenance line comes from the runs.
"""

import importlib.util
import json
import pathlib

import pytest

from pruning.experiment import pipeline
from pruning.experiment.config import from_recipe

RECIPES = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'configs'

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
  monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports benchmarks/_common.py
  spec = importlib.util.spec_from_file_location('lenet_results', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  shipped = module._common.shipped_config
  monkeypatch.setattr(
    module._common,
    'shipped_config',
    lambda model, **overrides: shipped(model, **{**TINY, **overrides}),
  )
  return module


def test_runs_in_pieces_and_aggregates(mnist_data_dir, results, tmp_path):
  runs, output = tmp_path / 'runs', tmp_path / 'RESULTS.md'
  data_dir = str(mnist_data_dir)
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
  # One dense run per seed, made once: the fine-tune run of seed 0 reused rewind's.
  assert sorted(p.name for p in runs.glob('lenet300-dense-*')) == [
    'lenet300-dense-seed0',
    'lenet300-dense-seed1',
  ]
  assert saved['dense_run'] == str(runs / 'lenet300-dense-seed0')
  assert text.count('| **total** | 266,200 | 532,400 |') == 2
  assert 'Targets: paper (≥ 12x at ≤ 1.64 %)' in text
  assert f'`{saved["commit"]}`' in text


def test_verdict_compares_exact_means_and_shows_them(results):
  def runs(*errors):
    return [{'error': e, 'compression': 25.2, 'wall_s': 30.0} for e in errors]

  # 0.77, 0.84, 0.79 average to 0.80 (in floating point 0.8000000000000002): met.
  met = results._verdict('lenet5', runs(0.77, 0.84, 0.79))
  assert met.startswith('paper (≥ 12x at ≤ 0.80 %): met (mean 0.800 % at 25.20x)')
  # 0.8033 shows as "0.80" at two decimals; the verdict quotes it so the miss is visible.
  missed = results._verdict('lenet5', runs(0.77, 0.84, 0.80))
  assert 'paper (≥ 12x at ≤ 0.80 %): missed: mean error 0.803 % is 0.003 points over' in missed
  assert 'aim (≥ 25x at ≤ 0.80 %): missed: mean error 0.803 %' in missed
  few = [{'error': 1.5, 'compression': 19.99, 'wall_s': 30.0}]
  assert 'aim (≥ 20x at ≤ 1.60 %): missed: mean compression 19.99x < 20x' in results._verdict(
    'lenet300', few
  )


def test_tuning_runs_are_listed_and_averaged_per_configuration(mnist_data_dir, results, tmp_path):
  tuning = tmp_path / 'tune'
  data_dir = str(mnist_data_dir)
  for name, seed, overrides in [
    ('a-s0', 0, {}),
    ('a-s1', 1, {}),
    ('b-s0', 0, {'density': {'fc1': 0.5, 'fc2': 0.5, 'fc3': 0.5}}),
  ]:
    config = results._common.shipped_config('lenet300', seed=seed, validation_size=100, **overrides)
    pipeline.train_and_evaluate(config, tuning / name, data_dir=data_dir, progress=False)
  runs = results._tuning_runs(tuning)
  assert [run['name'] for run in runs] == ['tune/a-s0', 'tune/a-s1', 'tune/b-s0']
  final = json.loads(json.dumps(results.dataclasses.asdict(from_recipe(RECIPES / 'lenet300.py'))))
  final = {**final, **TINY}
  lines = results._tuning_tables('lenet300', runs, final)
  text = '\n'.join(lines)
  # One row per run, then one per configuration with the mean over its seeds.
  chosen = [r['final'] for r in runs if r['config']['density'] == final['density']]
  assert '| **(chosen)** | 0, 1 | ' in text
  assert f'| {sum(chosen) / 2:.3f} |' in text
  assert "| density={'fc1': 0.5, 'fc2': 0.5, 'fc3': 0.5} | 0 | 2." in text
  assert text.count('| tune/') == 3


def test_changed_settings_of_a_dense_only_run_leave_out_pruning(results):
  chosen = {'seed': 0, 'rounds': 6, 'learning_rate': 0.1, 'density': {'fc1': 0.05}}
  pruned = {**chosen, 'seed': 1, 'density': {'fc1': 0.5}}
  assert results._changed(pruned, chosen) == "density={'fc1': 0.5}"
  dense = {**pruned, 'rounds': 0}
  assert results._changed(dense, chosen) == 'rounds=0'
  assert (
    results._changed({**dense, 'learning_rate': 0.05}, chosen) == 'rounds=0, learning_rate=0.05'
  )
  assert results._changed({**chosen, 'seed': 2}, chosen) == '**(chosen)**'


def test_schedules_of_a_seed_start_from_one_dense_network(
  mnist_data_dir, results, tmp_path, monkeypatch
):
  machine = 'Imaginary CPU 9000, 3 cores visible, jax 0.0 on abacus (1 device(s))'
  monkeypatch.setattr(results.report, 'machine_description', lambda: machine)
  runs, output = tmp_path / 'runs', tmp_path / 'RESULTS.md'
  results.main(
    [
      *('--models', 'lenet300', '--seeds', '0', '--schedules', 'rewind', 'fine-tune'),
      *('--runs', str(runs), '--data-dir', str(mnist_data_dir), '--output', str(output)),
    ]
  )
  dense_dir = runs / 'lenet300-dense-seed0'
  dense = results._dense_records(dense_dir)
  assert [r['event'] for r in dense][-1] == 'round_end'
  assert json.loads((dense_dir / 'config.json').read_text())['rounds'] == 0
  after = {}
  for schedule in ('rewind', 'fine-tune'):
    workdir = runs / f'lenet300-{schedule}-seed0'
    # The very records of the dense run (times included): trained once, not again per schedule.
    assert results._dense_records(workdir) == dense, schedule
    summary = json.loads((workdir / 'summary.json').read_text())
    assert summary['dense_run'] == str(dense_dir)
    assert summary['dense_error'] == dense[-1]['test_error']
    assert summary['machine'] == machine
    header = json.loads((workdir / 'report.json').read_text())['header']
    assert header['dense network from'] == str(dense_dir)
    after[schedule] = [r for r in results._common.records(workdir) if r['round'] == 1]
  # ... and then retrained differently: fine-tune restarts at a tenth of rewind's rate.
  first = [next(r for r in after[s] if r['event'] == 'epoch') for s in ('rewind', 'fine-tune')]
  assert first[1]['learning_rate'] < first[0]['learning_rate']

  text = output.read_text()
  assert 'every retraining schedule of that seed started from it' in text
  assert '| 0 | `lenet300-dense-seed0` |' in text
  assert f'- machine(s): {machine} (3 run(s))' in text


def _fake_summary(results, **changes):
  """A summary.json as run_one writes it, for a run that never happened."""
  config = results.dataclasses.asdict(from_recipe(RECIPES / 'lenet300.py'))
  layers = [
    {'layer': 'fc1', 'weights': 235_200, 'flops': 470_400, 'kept': 10_349, 'flops_kept': 20_698},
    {'layer': 'fc2', 'weights': 30_000, 'flops': 60_000, 'kept': 2_640, 'flops_kept': 5_280},
    {'layer': 'fc3', 'weights': 1_000, 'flops': 2_000, 'kept': 280, 'flops_kept': 560},
  ]
  summary = {
    'model': 'lenet300',
    'schedule': 'rewind',
    'seed': 0,
    'dense_error': 1.5,
    'error': 1.6,
    'compression': 20.1,
    'weights_kept_pct': 4.98,
    'flops_kept_pct': 4.98,
    'layers': layers,
    'wall_s': 12.0,
    'resumed': False,
    'command': 'python lenet_results.py',
    'commit': 'f00ba47-dirty',
    'uncommitted': ['pruning/made_up.py'],
    'machine': 'unknown',
    'config': config,
  }
  for key, value in changes.items():
    if key in config:
      config[key] = value
    else:
      summary[key] = value
  return summary


def test_provenance_lines_are_read_from_the_runs(results, tmp_path):
  runs, output = tmp_path / 'runs', tmp_path / 'RESULTS.md'
  machine = 'Made-up Vector Engine, 7 cores visible, jax 9.9 on quill (1 device(s))'
  summary = _fake_summary(
    results, machine=machine, train_subset=256, test_subset=200, dense_epochs=17
  )
  (runs / 'lenet300-rewind-seed0').mkdir(parents=True)
  (runs / 'lenet300-rewind-seed0' / 'summary.json').write_text(json.dumps(summary))
  common = ['--write-only', '--runs', str(runs), '--output', str(output)]
  results.main(common)
  text = output.read_text()
  assert f'- machine(s): {machine} (1 run(s))' in text
  assert '`f00ba47-dirty` (uncommitted changes to: pruning/made_up.py)' in text
  assert (
    "- data, from the runs' configs: mnist: trained on 256 training images (train_subset), "
    'errors on 200 of its test images (test_subset)'
  ) in text
  assert 'Recipe (from that configuration): 17 dense epochs,' in text
  # (Table rows may hold 60,000 legitimately: fc2's FLOP.)
  prose = '\n'.join(line for line in text.splitlines() if not line.startswith('|'))
  for typed in ('VM', '2-core', '60000', '60,000', '10000', '10,000', 'team'):
    assert typed not in prose, typed
  # A run that trained its own dense network (no dense_run) is named, not passed off as shared.
  assert 'These runs trained their own dense network' in text

  # The data line follows the config: a validation split, whatever its size.
  summary = _fake_summary(results, validation_size=1234, train_subset=None)
  (runs / 'lenet300-rewind-seed0' / 'summary.json').write_text(json.dumps(summary))
  results.main(common)
  assert (
    'mnist: trained on 58,766 training images (1,234 of its 60,000 held out for validation)'
    in (output.read_text())
  )


def test_earlier_sections_are_kept_verbatim_and_marked(results, tmp_path):
  runs, output, earlier = tmp_path / 'runs', tmp_path / 'RESULTS.md', tmp_path / 'earlier.md'
  summary = _fake_summary(results, dense_run=str(runs / 'lenet300-dense-seed0'))
  (runs / 'lenet300-rewind-seed0').mkdir(parents=True)
  (runs / 'lenet300-rewind-seed0' / 'summary.json').write_text(json.dumps(summary))
  old = '## LeNet-5, retraining: rewind\n\n- seed 0: `python x.py` (commit `abc1234`)\n'
  earlier.write_text(old)
  results.main(
    ['--write-only', '--runs', str(runs), '--output', str(output), '--earlier', str(earlier)]
  )
  text = output.read_text()
  assert text.index('## Earlier sections (kept verbatim, not regenerated)') < text.index(old)
  assert f'Everything below is `{earlier}` verbatim' in text
  assert 'Their commits, as listed in them: `abc1234`.' in text
