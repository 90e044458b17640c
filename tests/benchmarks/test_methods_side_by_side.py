"""The methods side by side: equal epoch budgets, scaled densities, shared dense runs, resuming."""

import dataclasses
import importlib.util
import json
import pathlib

import pytest

from pruning.experiment.config import AFTER_DENSE_FIELDS

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'methods_side_by_side.py'
KEYS = {
  'model',
  'method',
  'target_compression',
  'compression',
  'seed',
  'validation_error',
  'test_error',
  'epochs',
  'wall_time_s',
  'command',
  'commit',
}


@pytest.fixture
def script(monkeypatch):
  monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports benchmarks/_common.py
  spec = importlib.util.spec_from_file_location('methods_side_by_side', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize(
  ('model', 'sizes'),
  [
    ('lenet300', {'fc1': 235_200, 'fc2': 30_000, 'fc3': 1_000}),
    ('lenet5', {'conv1': 500, 'conv2': 25_000, 'fc1': 400_000, 'fc2': 5_000}),
  ],
)
def test_densities_keep_one_over_the_compression_of_the_real_layers(script, model, sizes):
  assert script.layer_sizes(model) == sizes
  total = sum(sizes.values())
  reference = script._common.shipped_config(model).density
  for compression in (2, 10, 20, 40, 50, 70, 100):
    density = script.densities(model, compression)
    assert sum(density[k] * n for k, n in sizes.items()) == pytest.approx(
      total / compression, rel=1e-12
    ), compression
    # Kept counts as the pruning makes them (round(sparsity * n) pruned per layer):
    # one rounding per layer away from total / compression.
    kept = sum(n - round((1 - density[k]) * n) for k, n in sizes.items())
    assert abs(kept - total / compression) <= len(sizes) / 2, compression
    capped = [k for k, d in density.items() if d == 1.0]
    free = [k for k in sizes if k not in capped]
    scale = density[free[0]] / reference[free[0]]
    for layer in free:
      assert density[layer] == pytest.approx(scale * reference[layer], rel=1e-12), layer
    assert all(scale * reference[layer] >= 1.0 for layer in capped), capped
  # LeNet-5 at 2x: conv1 (0.66 in the recipe) would pass 1.0, so it is capped.
  assert script.densities('lenet5', 2)['conv1'] == 1.0


def test_every_method_trains_the_same_epochs_with_its_own_fields(script):
  plan = script.budget('lenet300')
  assert (plan, plan.total) == (script.Budget(30, 6, 8), 78)
  data = {'validation_size': 5000, 'train_subset': None, 'test_subset': None}
  gradual = script.Gradual('per-layer', 3, 40, 50)
  configs = {
    method: script.method_config(
      'lenet300', method, 40, 1, plan, data, rewind_step=7, gradual=gradual
    )
    for method in script.METHODS
  }
  assert {m: script.total_epochs(c) for m, c in configs.items()} == dict.fromkeys(
    script.METHODS, 78
  )
  fields = ('rounds', 'retrain_epochs', 'retrain_schedule', 'criterion', 'pruning_schedule')
  got = {m: tuple(getattr(c, f) for f in fields) for m, c in configs.items()}
  assert got == {
    'han-fine-tune': (6, 8, 'fine-tune', 'sparsity', 'iterative'),
    'han-rewind': (6, 8, 'rewind', 'sparsity', 'iterative'),
    'one-shot': (1, 48, 'fine-tune', 'sparsity', 'iterative'),
    'weight-rewind': (6, 8, 'weight-rewind', 'sparsity', 'iterative'),
    'gradual': (0, 8, 'rewind', 'sparsity', 'gradual'),
    'random': (6, 8, 'rewind', 'random', 'iterative'),
  }
  assert configs['han-fine-tune'].retrain_lr_scale == 0.1
  assert configs['weight-rewind'].rewind_step == 7
  density = script.densities('lenet300', 40)
  for method, config in configs.items():
    assert (config.seed, config.validation_size) == (1, 5000), method
    if method != 'gradual':
      assert (config.dense_epochs, dict(config.density)) == (30, density), method
  g = configs['gradual']
  assert (g.dense_epochs, g.gradual_sparsity, g.gradual_scope) == (78, 1 - 1 / 40, 'per-layer')
  assert (g.gradual_start_epoch, g.gradual_end_epoch, g.gradual_frequency) == (3, 40, 50)
  # The shared dense run trains what every iterative method's round 0 would.
  dense = dataclasses.asdict(script.dense_config('lenet300', 1, plan, data, 7))
  assert dense['rounds'] == 0
  for method, config in configs.items():
    if method != 'gradual':
      pruned = dataclasses.asdict(config)
      differ = [k for k in dense if k not in AFTER_DENSE_FIELDS and dense[k] != pruned[k]]
      assert differ == [], method
  # A smaller budget splits the same way; gradual's defaults fit inside it.
  tiny = script.budget('lenet300', total_epochs=3, rounds=2, dense_epochs=1)
  assert tiny == script.Budget(1, 2, 1)
  one_shot = script.method_config('lenet300', 'one-shot', 20, 0, tiny, data)
  assert (one_shot.rounds, one_shot.retrain_epochs) == (1, 2)
  gradual = script.method_config('lenet300', 'gradual', 20, 0, tiny, data)
  assert (gradual.dense_epochs, gradual.gradual_start_epoch, gradual.gradual_end) == (3, 0, 1)
  with pytest.raises(ValueError, match='do not split into 4 rounds'):
    script.budget('lenet300', total_epochs=40, rounds=4)


def test_augment_shifts_every_run_of_the_study_and_titles_its_tables(script):
  plan = script.budget('lenet5')
  data = {'validation_size': 5000, 'train_subset': None, 'test_subset': None, 'augment': True}
  configs = [script.dense_config('lenet5', 0, plan, data, None)]
  configs += [script.method_config('lenet5', m, 50, 0, plan, data) for m in script.METHODS]
  assert all(config.augment is True for config in configs)
  plain = {**data, 'augment': None}
  assert script.method_config('lenet5', 'gradual', 50, 0, plan, plain).augment is None
  # Shifted and plain runs of one budget are separate tables, never one mean.
  entry = {
    'model': 'lenet5',
    'method': 'gradual',
    'target_compression': 50.0,
    'compression': 50.0,
    'seed': 0,
    'validation_error': 1.0,
    'test_error': 0.9,
    'epochs': 70,
    'wall_time_s': 1.0,
  }
  entries = [{**entry, 'augment': False}, {**entry, 'augment': True, 'test_error': 0.7}]
  header = {
    'machines': {'m': 2},
    'jax': {'0': 2},
    'commits': ['c'],
    'data': 'mnist',
    'written_by': {'command': 'python', 'commit': 'c'},
  }
  text = script.markdown(entries, header)
  assert '## LeNet-5, 70 epochs per run\n' in text
  assert '## LeNet-5, 70 epochs per run, training images shifted by up to 2 pixels\n' in text
  assert text.count('| gradual | 0.90 ± 0.00 (n=1) |') == 1
  assert text.count('| gradual | 0.70 ± 0.00 (n=1) |') == 1
  # A tie on the validation error is said, not hidden behind the method listed first.
  rival = {**entry, 'augment': False, 'method': 'han-rewind', 'test_error': 0.95}
  text = script.markdown([rival, entries[0]], header)
  assert '; tied on validation with `gradual`)' in text


def test_data_line_says_when_training_images_were_shifted(script):
  plan = script.budget('lenet5')
  data = {'validation_size': 5000, 'train_subset': None, 'test_subset': None}
  shifted = script.dense_config('lenet5', 0, plan, {**data, 'augment': True}, None)
  plain = script.dense_config('lenet5', 0, plan, {**data, 'augment': None}, None)
  describe = script._common.data_description
  held_out = 'trained on 55,000 training images (5,000 of its 60,000 held out for validation)'
  assert (
    describe([dataclasses.asdict(plain)]) == f'mnist: {held_out}, errors on its 10,000 test images'
  )
  assert describe([dataclasses.asdict(shifted)]) == (
    f'mnist: {held_out}, each shifted at random by up to 2 pixels, errors on its 10,000 test images'
  )
  cifar = {'dataset': 'cifar10', **data}
  assert 'randomly cropped (4-pixel padding) and flipped' in describe([cifar])
  assert 'not augmented' in describe([{**cifar, 'augment': False}])


@pytest.mark.parametrize(
  ('argv', 'message'),
  [
    (['--methods', 'han-rewind', 'lottery'], "invalid choice: 'lottery'"),
    (['--models', 'vgg16'], "invalid choice: 'vgg16'"),
    (['--compressions', '20', '1'], 'compression 1 is not above 1'),
    (['--compressions', '0.5'], 'compression 0.5 is not above 1'),
    (['--total-epochs', '40', '--rounds', '4'], 'do not split into 4 rounds'),
    (['--total-epochs', '10'], 'leave -20 after 30 dense epochs'),
    (['--seeds', '0', '0'], 'expected distinct integers'),
    (['--gradual-start-epoch', '80'], 'gradual pruning runs from epoch 80 to epoch 81'),
  ],
)
def test_bad_input_is_one_line_and_writes_nothing(script, tmp_path, capsys, argv, message):
  runs, out = tmp_path / 'runs', tmp_path / 'out'
  with pytest.raises(SystemExit) as exit_info:
    script.main([*argv, '--runs', str(runs), '--output-dir', str(out)])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert error.count('\n') == 1 and error.startswith('methods_side_by_side.py: error: '), error
  assert message in error
  assert not runs.exists() and not out.exists()


def test_missing_data_is_one_line_and_writes_no_run(script, tmp_path, capsys):
  runs, out = tmp_path / 'runs', tmp_path / 'out'
  argv = ['--methods', 'gradual', '--compressions', '20', '--seeds', '0']
  argv += ['--raw-dir', str(tmp_path / 'no-mnist'), '--data-dir', str(tmp_path / 'tfds')]
  with pytest.raises(SystemExit) as exit_info:
    script.main([*argv, '--runs', str(runs), '--output-dir', str(out)])
  assert exit_info.value.code == 2
  error = capsys.readouterr().err.splitlines()[-1]
  assert error.startswith(
    f'methods_side_by_side.py: error: {runs}/lenet300/seed0/gradual-20x-78ep: '
  )
  assert not (runs / 'lenet300' / 'seed0' / 'gradual-20x-78ep' / 'config.json').exists()
  assert not out.exists()


def test_runs_resume_skip_and_write_the_results(mnist_data_dir, script, tmp_path, monkeypatch):
  runs, out = tmp_path / 'runs', tmp_path / 'out'
  argv = [
    *('--models', 'lenet300', '--methods', 'han-rewind', 'gradual', '--compressions', '20'),
    *('--seeds', '0', '--total-epochs', '3', '--rounds', '2', '--dense-epochs', '1'),
    *('--train-subset', '512', '--test-subset', '500', '--validation-size', '1000'),
    *('--runs', str(runs), '--output-dir', str(out), '--data-dir', str(mnist_data_dir)),
  ]
  # The first invocation is killed during han-rewind's first round...
  run_prepared = script.pipeline.run_prepared

  class Killed(Exception):
    pass

  def killed_in_round_one(prepared, **kwargs):
    def on_epoch_end(round_index, epoch):
      if round_index == 1:
        raise Killed

    return run_prepared(prepared, on_epoch_end=on_epoch_end, **kwargs)

  monkeypatch.setattr(script.pipeline, 'run_prepared', killed_in_round_one)
  with pytest.raises(Killed):
    script.main(argv)
  monkeypatch.setattr(script.pipeline, 'run_prepared', run_prepared)
  # ... the next resumes it (the dense run, finished, is not run again) and runs gradual.
  script.main(argv)
  seed = runs / 'lenet300' / 'seed0'
  dense, pruned = seed / 'dense-1ep', seed / 'han-rewind-20x-3ep'
  assert len(json.loads((dense / 'provenance.json').read_text())) == 1
  assert len(json.loads((pruned / 'provenance.json').read_text())) == 2
  # The pruned run holds the shared dense run's very records (trained once, then seeded).
  dense_records = script._common.records(dense)
  assert script._common.records(pruned)[: len(dense_records)] == dense_records

  payload = json.loads((out / 'methods_side_by_side.json').read_text())
  entries = {entry['method']: entry for entry in payload['runs']}
  assert sorted(entries) == ['gradual', 'han-rewind']
  for method, entry in entries.items():
    assert KEYS <= set(entry), method
    assert (entry['model'], entry['target_compression'], entry['seed']) == ('lenet300', 20, 0)
    assert entry['epochs'] == 3 and entry['augment'] is False, method
    assert entry['compression'] == pytest.approx(20, rel=1e-3), method
    assert 0 <= entry['validation_error'] <= 100 and 0 <= entry['test_error'] <= 100
    assert entry['wall_time_s'] > 0
    assert entry['command'].startswith('python benchmarks/methods_side_by_side.py --models')
    assert entry['commit'] == script._common.report.git_commit()
  assert entries['han-rewind']['dense_run'] == 'lenet300/seed0/dense-1ep'
  assert entries['gradual']['dense_run'] is None
  # The wall time of a seeded run spans the dense run's records and its own.
  assert entries['han-rewind']['wall_time_s'] > script._common.wall_time(dense_records)
  header = payload['provenance']
  machine = script._common.report.machine_description()
  assert entries['han-rewind']['machines'] == [machine]
  assert header['machines'] == {machine: 2} and header['carried_over'] == 0
  assert header['jax'] == {script._common.jax.__version__: 2}
  assert 'trained on 512 training images (train_subset)' in header['data']

  text = (out / 'methods_side_by_side.md').read_text()
  assert '## LeNet-300-100, 3 epochs per run' in text
  assert '| han-rewind | ' in text and '| gradual | ' in text
  assert '- 20x: `' in text
  assert '| han-rewind | 1 | 3 | ' in text
  wall = entries['han-rewind']['wall_time_s']
  assert f'| {wall:.0f} ± 0 | 0: {wall:.0f} |' in text  # the seed's mean beside the mean
  assert (out / 'methods_side_by_side.png').read_bytes()[:4] == b'\x89PNG'

  # Asked again, every run is finished: none trains, the results are rewritten the same.
  before = {p: p.stat().st_mtime_ns for p in seed.glob('*/metrics.jsonl')}
  script.main(argv)
  assert {p: p.stat().st_mtime_ns for p in seed.glob('*/metrics.jsonl')} == before
  assert json.loads((out / 'methods_side_by_side.json').read_text())['runs'] == payload['runs']
  # A finished run made with other settings is refused, not mixed in.
  for other in (['--validation-size', '2000'], ['--augment']):
    with pytest.raises(SystemExit) as exit_info:
      script.main([*argv, *other])
    assert exit_info.value.code == 2

  # A run made on another machine stays in the results when its directory is not here (an
  # entry written before runs recorded their own machine takes it from that file's header);
  # a run found here replaces its earlier entry.
  foreign = {**entries['gradual'], 'seed': 1, 'workdir': 'lenet300/seed1/gradual-20x-3ep'}
  foreign = {k: v for k, v in foreign.items() if k not in ('machines', 'jax', 'data')}
  stale = {**entries['han-rewind'], 'test_error': 99.0}
  elsewhere = {**header, 'machines': {'another machine': 9}, 'jax': {'0.0.1': 9}}
  earlier = {'provenance': elsewhere, 'runs': [{**foreign, 'test_error': 0.5}, stale]}
  (out / 'methods_side_by_side.json').write_text(json.dumps(earlier))
  script.main([*argv, '--report-only'])
  merged = json.loads((out / 'methods_side_by_side.json').read_text())
  by_workdir = {entry['workdir']: entry for entry in merged['runs']}
  assert len(merged['runs']) == 3
  carried = by_workdir['lenet300/seed1/gradual-20x-3ep']
  assert carried['carried_over'] is True and carried['test_error'] == 0.5
  assert carried['machines'] == ['another machine'] and carried['jax'] == ['0.0.1']
  assert carried['data'] == header['data']
  assert by_workdir['lenet300/seed0/han-rewind-20x-3ep'] == entries['han-rewind']
  assert merged['provenance']['machines'] == {machine: 2, 'another machine': 1}
  assert merged['provenance']['carried_over'] == 1
  text = (out / 'methods_side_by_side.md').read_text()
  assert '- 1 of the 3 runs were taken from the earlier results file' in text
  assert '| gradual | ' in text and '(n=2)' in text
  wall = entries['gradual']['wall_time_s']  # the carried seed-1 run copied seed 0's
  assert f'| 0: {wall:.0f}, 1: {wall:.0f} |' in text
