"""End-to-end tests of the prune-retrain pipeline on small subsets of real MNIST."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from pruning import criteria
from pruning.data.raw_files import DataFilesError
from pruning.experiment import config as config_module
from pruning.experiment import export, parallel, pipeline, report
from pruning.experiment.config import from_recipe
from pruning.experiment.run_dir import RunDir

RECIPES = pathlib.Path(__file__).resolve().parents[3] / 'scripts' / 'configs'

TINY = {
  'dense_epochs': 1,
  'rounds': 2,
  'retrain_epochs': 1,
  'train_subset': 512,
  'test_subset': 500,
  'eval_batch_size': 250,
}


@pytest.fixture(scope='module')
def data_dir(mnist_data_dir):
  return str(mnist_data_dir)


def run(workdir, data_dir, **overrides):
  config = from_recipe(RECIPES / 'lenet300.py', **{**TINY, **overrides})
  return pipeline.train_and_evaluate(config, workdir, data_dir=data_dir, progress=False)


def kernel_zeros(params) -> int:
  named = jax.tree_util.tree_leaves_with_path(params)
  return sum(
    int((np.asarray(leaf) == 0).sum())
    for path, leaf in named
    if 'kernel' in jax.tree_util.keystr(path, simple=True, separator='/')
  )


def killed_in_round_2(config, workdir, data_dir) -> None:
  """Runs ``config`` in ``workdir`` until a simulated kill during its round 2."""

  def interrupt(round_index, epoch):
    if round_index == 2:
      raise KeyboardInterrupt('simulated kill during round 2')

  with pytest.raises(KeyboardInterrupt):
    pipeline.train_and_evaluate(
      config, workdir, data_dir=data_dir, progress=False, on_epoch_end=interrupt
    )


def test_checkpoint_holds_exactly_the_reported_zeros(tmp_path, data_dir):
  result = run(tmp_path, data_dir)
  last = result['records'][-1]
  assert last['event'] == 'round_end' and last['round'] == 2
  pruned = last['total'] - last['kept']
  assert pruned > 0
  with ocp.CheckpointManager((tmp_path / 'checkpoints').absolute()) as manager:
    assert manager.all_steps() == [0, 1, 2]
    restored = manager.restore(2, args=ocp.args.StandardRestore())
  assert kernel_zeros(restored['params']) == pruned
  assert restored['round'] == 2
  assert result['mask_stats'].overall.kept == last['kept']
  rounds = [r['round'] for r in result['records'] if r['event'] == 'round_end']
  assert rounds == [0, 1, 2]
  for line in (tmp_path / 'metrics.jsonl').read_text().splitlines():
    assert np.isfinite(json.loads(line).get('test_error', 0.0))


def test_resume_after_an_interrupted_round_reaches_the_same_masks(tmp_path, data_dir):
  reference = run(tmp_path / 'reference', data_dir)
  config = from_recipe(RECIPES / 'lenet300.py', **TINY)
  workdir = tmp_path / 'interrupted'
  killed_in_round_2(config, workdir, data_dir)
  resumed = pipeline.train_and_evaluate(
    config, workdir, data_dir=data_dir, progress=False, resume=True
  )
  for name, leaf in jax.tree_util.tree_leaves_with_path(reference['mask']):
    other = resumed['mask']
    for key in name:
      other = other[key.key]
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(other), err_msg=str(name))

  def strip(records):
    return [
      {k: v for k, v in r.items() if k not in ('time', 'wall_time_s')}
      for r in records
      if r['event'] != 'start'
    ]

  assert strip(resumed['records']) == strip(reference['records'])
  # Each invocation marks its start: the first at round 0, the resume where it went on.
  starts = [r for r in resumed['records'] if r['event'] == 'start']
  assert [r['resumed'] for r in starts] == [False, True]
  assert (starts[0]['round'], starts[0]['epoch']) == (0, 0)
  assert starts[1]['round'] == 2
  assert [r['event'] for r in reference['records']].count('start') == 1
  assert reference['records'][0]['event'] == 'start'


def test_existing_workdir_needs_resume_and_the_same_config(tmp_path, data_dir):
  run(tmp_path, data_dir, rounds=0)
  with pytest.raises(FileExistsError, match='pass resume=True'):
    run(tmp_path, data_dir, rounds=0)
  config = from_recipe(RECIPES / 'lenet300.py', **{**TINY, 'rounds': 0, 'seed': 5})
  with pytest.raises(ValueError, match=r"differing fields: \['seed'\]"):
    pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, resume=True, progress=False)


def test_report_totals_are_the_sums_of_the_rows(tmp_path, data_dir):
  result = run(tmp_path, data_dir, rounds=1)
  rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
  paths = report.write_report(tmp_path, rows, result['records'], {'model': 'lenet300'})
  payload = json.loads(paths['json'].read_text())
  for column in ('weights', 'kept', 'flops', 'flops_kept'):
    assert payload['total'][column] == sum(layer[column] for layer in payload['layers'])
  assert payload['total']['weights'] == 266_200
  assert payload['total']['kept'] == result['mask_stats'].overall.kept
  assert [layer['layer'] for layer in payload['layers']] == ['fc1', 'fc2', 'fc3']
  assert paths['plot'].stat().st_size > 0
  assert '| **total** | 266,200 | 532,400 |' in paths['markdown'].read_text()


def test_alternating_rounds_prune_one_group_and_freeze_the_other(tmp_path, data_dir):
  config = from_recipe(
    RECIPES / 'lenet5.py', **{**TINY, 'train_subset': 256, 'test_subset': 250, 'alternate': True}
  )
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  pruned = [r for r in result['records'] if r['event'] == 'pruned']
  assert [r['group'] for r in pruned] == ['fc', 'conv']
  layers = result['mask_stats'].layers
  for name, density in config.density.items():
    assert layers[f'{name}/kernel'].kept == layers[f'{name}/kernel'].total - round(
      (1 - density) * layers[f'{name}/kernel'].total
    ), name


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'model': 'lenet7'}, "model is 'lenet7'"),
    ({'regularization': 'l3'}, "regularization is 'l3'"),
    ({'criterion': 'quality'}, 'needs per-layer quality values'),
    ({'batch_size': 0}, 'batch_size is 0'),
    ({'density': {}}, 'with 6 rounds it needs per-layer density values'),
    ({'seed': -1}, 'seed is -1; expected an integer >= 0'),
    ({'warmup_steps': -5}, 'warmup_steps is -5; expected an integer >= 0'),
    ({'train_subset': 0}, 'train_subset is 0; expected an integer >= 1'),
    ({'compiler_options': {'no_such_option': '1'}}, "No such compile option: 'no_such_option'"),
    ({'density': {'fc1': 1.5}}, r"density for 'fc1' is 1.5; expected a kept fraction in \(0, 1\]"),
    ({'density': {'fc1': 0.0}}, r"density for 'fc1' is 0.0"),
    ({'density': {'fc9': 0.1}}, r"density is given for \['fc9'\], which lenet300 does not have"),
    (
      {'model': 'lenet5', 'criterion': 'quality', 'quality': {'conv3': 1.0}},
      r"quality is given for \['conv3'\], which lenet5 does not have; "
      r"its prunable layers: \['conv1', 'conv2', 'fc1', 'fc2'\]",
    ),
    ({'criterion': 'quality', 'quality': {'fc1': -1.0}}, r"quality for 'fc1' is -1.0"),
  ],
)
def test_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    pipeline.PruneConfig(**{'density': {'fc1': 0.5}, **overrides})


def _kept(result):
  return {name: s.kept for name, s in result['mask_stats'].layers.items()}


def test_auto_sensitivity_targets_come_from_validation_curves_and_survive_a_resume(
  tmp_path, data_dir
):
  config = from_recipe(
    RECIPES / 'lenet300.py', **{**TINY, 'validation_size': 500, 'auto_sensitivity': 2.0}
  )
  killed_in_round_2(config, tmp_path, data_dir)
  # The targets were measured on the dense network: a resume cannot measure them again.
  saved_path = tmp_path / 'sensitivity.json'
  saved_path.rename(tmp_path / 'aside.json')
  with pytest.raises(FileNotFoundError, match=r'sensitivity\.json is missing'):
    pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False, resume=True)
  (tmp_path / 'aside.json').rename(saved_path)
  # The resumed run reads the targets back instead of measuring the pruned network.
  result = pipeline.train_and_evaluate(
    config, tmp_path, data_dir=data_dir, progress=False, resume=True
  )
  saved = json.loads((tmp_path / 'sensitivity.json').read_text())
  assert saved['budget'] == 2.0
  assert saved['curves']['metric_name'] == 'validation error (%)'
  chosen = {t['layer']: t for t in saved['thresholds']['layers']}
  assert set(chosen) == {'fc1/kernel', 'fc2/kernel', 'fc3/kernel'}
  for name, t in chosen.items():
    assert t['degradation'] <= 2.0, name
    layer = result['mask_stats'].layers[name]
    # The last round reaches exactly the chosen sparsity, as with hand-set densities.
    assert layer.total - layer.kept == round(t['target'] * layer.total), name
  events = [r for r in result['records'] if r['event'] == 'sensitivity']
  assert [e['round'] for e in events] == [1]
  assert events[0]['density'] == {name.split('/')[0]: 1 - t['target'] for name, t in chosen.items()}
  assert (tmp_path / 'sensitivity.csv').exists() and (tmp_path / 'sensitivity.png').exists()


def test_random_and_magnitude_runs_share_one_dense_network(tmp_path, data_dir):
  dense = run(tmp_path / 'dense', data_dir, rounds=0)
  results = {}
  for criterion in ('sparsity', 'random'):
    config = from_recipe(RECIPES / 'lenet300.py', **{**TINY, 'rounds': 1, 'criterion': criterion})
    workdir = tmp_path / criterion
    pipeline.start_from_dense(tmp_path / 'dense', workdir, config)
    results[criterion] = pipeline.train_and_evaluate(
      config, workdir, data_dir=data_dir, progress=False, resume=True
    )
    dense_records = [r for r in results[criterion]['records'] if r['round'] == 0]
    assert dense_records == dense['records']
    assert [r['round'] for r in results[criterion]['records'] if r['event'] == 'round_end'] == [
      0,
      1,
    ]
  # Same exact counts per layer, different connections.
  assert _kept(results['random']) == _kept(results['sparsity'])
  for layer in ('fc1', 'fc2', 'fc3'):
    random_mask = np.asarray(results['random']['mask'][layer]['kernel'])
    magnitude_mask = np.asarray(results['sparsity']['mask'][layer]['kernel'])
    assert not np.array_equal(random_mask, magnitude_mask), layer
  with pytest.raises(FileExistsError, match='already holds a run'):
    pipeline.start_from_dense(tmp_path / 'dense', tmp_path / 'random', config)
  other = from_recipe(RECIPES / 'lenet300.py', **{**TINY, 'seed': 3, 'learning_rate': 0.02})
  with pytest.raises(ValueError, match=r"differing fields: \['learning_rate', 'seed'\]"):
    pipeline.start_from_dense(tmp_path / 'dense', tmp_path / 'other', other)
  with pytest.raises(FileNotFoundError, match='no completed dense phase'):
    pipeline.start_from_dense(tmp_path / 'nothing', tmp_path / 'other', config)


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'auto_sensitivity': 1.0}, r'needs a validation split \(validation_size > 0\)'),
    ({'auto_sensitivity': -0.5, 'validation_size': 100}, 'auto_sensitivity is -0.5'),
    (
      {'auto_sensitivity': 1.0, 'validation_size': 100, 'criterion': 'random'},
      "auto_sensitivity needs a criterion that does not draw at random; 'random' does",
    ),
    ({'criterion': 'magnitude'}, "criterion is 'magnitude'"),
    ({'criterion': 'random', 'density': {'fc9': 0.1}}, r"density is given for \['fc9'\]"),
  ],
)
def test_sensitivity_and_random_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    pipeline.PruneConfig(**{'density': {'fc1': 0.5}, **overrides})


# --- the schedule, read back from the run ---------------------------------------------------------


def _pruned_records(result):
  return [r for r in result['records'] if r['event'] == 'pruned']


def _kernels(path, round_index):
  """``{layer: kernel}`` of the round's checkpoint, as numpy."""
  with ocp.CheckpointManager(path.absolute()) as manager:
    restored = manager.restore(round_index, args=ocp.args.StandardRestore())
  return {
    layer: np.asarray(
      values['kernel']['value'] if isinstance(values['kernel'], dict) else values['kernel']
    )
    for layer, values in restored['params'].items()
  }


@pytest.mark.parametrize('criterion', ['sparsity', 'random'])
def test_each_round_prunes_to_the_geometric_target(tmp_path, data_dir, criterion):
  final = {'fc1': 0.05, 'fc2': 0.1, 'fc3': 0.4}
  rounds = 3
  result = run(tmp_path, data_dir, rounds=rounds, criterion=criterion, density=final)
  pruned = _pruned_records(result)
  assert [r['round'] for r in pruned] == [1, 2, 3]
  for record in pruned:
    r = record['round']
    # Round r of R keeps final ** (r / R) of each layer (Han et al. 2015, §3.4).
    expected = {layer: d ** (r / rounds) for layer, d in final.items()}
    assert record['density'] == pytest.approx(expected, rel=1e-12)
    kernels = _kernels(tmp_path / 'checkpoints', r)
    for layer, density in expected.items():
      total = record['layers'][layer]['total']
      kept = total - round((1 - density) * total)
      assert record['layers'][layer]['kept'] == kept, (r, layer)
      # The checkpoint after the round's retraining holds exactly that many nonzeros.
      assert int(np.count_nonzero(kernels[layer])) == kept, (r, layer)
    assert record['kept'] == sum(layer['kept'] for layer in record['layers'].values())


def test_quality_criterion_prunes_each_round_at_the_linear_quality(tmp_path, data_dir):
  final = {'fc1': 1.2, 'fc2': 0.9, 'fc3': 0.6}
  rounds = 2
  result = run(tmp_path, data_dir, rounds=rounds, criterion='quality', quality=final)
  pruned = _pruned_records(result)
  assert [r['round'] for r in pruned] == [1, 2]
  for record in pruned:
    r = record['round']
    # The quality rises linearly to its final value; the threshold is quality x std
    # of all the layer's weights, zeros included (Han et al. 2015, §4).
    quality = {layer: q * r / rounds for layer, q in final.items()}
    assert record['quality'] == pytest.approx(quality, rel=1e-12)
    before = _kernels(tmp_path / 'checkpoints', r - 1)
    after = _kernels(tmp_path / 'checkpoints', r)
    for layer, q in quality.items():
      w = before[layer].astype(np.float64)
      keep = (np.abs(w) >= q * w.std()) & (w != 0)
      assert record['layers'][layer]['kept'] == int(keep.sum()), (r, layer)
      np.testing.assert_array_equal(after[layer] != 0, keep, err_msg=f'round {r} {layer}')
  assert result['mask_stats'].overall.kept < pruned[0]['kept'] < pruned[0]['total']


@pytest.mark.parametrize(
  ('schedule', 'scale', 'warmup'),
  [('rewind', None, 0), ('fine-tune', 0.1, 0), ('fine-tune', 0.25, 0), ('rewind', None, 6)],
)
def test_learning_rate_in_the_metrics_follows_the_schedule(
  tmp_path, data_dir, schedule, scale, warmup
):
  peak, dense_epochs, rounds, retrain_epochs = 0.08, 2, 2, 2
  overrides = {
    'learning_rate': peak,
    'warmup_steps': warmup,
    'dense_epochs': dense_epochs,
    'rounds': rounds,
    'retrain_epochs': retrain_epochs,
    'retrain_schedule': schedule,
  }
  if scale is not None:
    overrides['retrain_lr_scale'] = scale
  result = run(tmp_path, data_dir, **overrides)
  steps_per_epoch = TINY['train_subset'] // 128
  epochs = [r for r in result['records'] if r['event'] == 'epoch']
  assert len(epochs) == dense_epochs + rounds * retrain_epochs
  dense_steps = dense_epochs * steps_per_epoch
  round_steps = retrain_epochs * steps_per_epoch
  for record in epochs:
    last = record['step'] - 1  # the epoch's last step: the rate it logs
    if last < dense_steps:
      top, k, n = peak, last, dense_steps
      if last < warmup:  # the linear warm-up of the dense phase only
        top *= (last + 1) / warmup
    else:
      top = peak if schedule == 'rewind' else peak * scale
      k, n = (last - dense_steps) % round_steps, round_steps
    expected = top * 0.5 * (1 + math.cos(math.pi * k / n))
    # The rate is computed in float64 and stored in float32.
    assert record['learning_rate'] == pytest.approx(expected, rel=1e-7, abs=1e-12), record
  if warmup:
    assert epochs[0]['step'] - 1 < warmup  # the first epoch's rate is a warmed-up one
  assert [r['step'] for r in epochs] == [
    steps_per_epoch * (i + 1) for i in range(dense_epochs + rounds * retrain_epochs)
  ]


def test_a_short_run_on_real_mnist_learns(tmp_path, data_dir):
  # The whole training set, one dense epoch, one round pruned to 20x with one epoch of
  # retraining. A broken step (wrong gradient sign, no update, a mask that prunes
  # everything) stays near 90 % error; this recipe reached 3.4-3.5 % dense and
  # 3.8-3.9 % pruned on seeds 0 and 1.
  result = run(
    tmp_path,
    data_dir,
    train_subset=None,
    test_subset=None,
    eval_batch_size=1000,
    rounds=1,
  )
  ends = {r['round']: r for r in result['records'] if r['event'] == 'round_end'}
  assert ends[0]['test_error'] < 5.0, ends[0]
  assert ends[1]['test_error'] < 5.0, ends[1]
  assert ends[1]['compression'] > 19.0
  losses = [r['train_loss'] for r in result['records'] if r['event'] == 'epoch']
  assert losses[0] < 0.5, losses


def test_the_dense_phase_does_not_depend_on_the_retraining_settings(tmp_path, data_dir):
  # AFTER_DENSE_FIELDS promises that configs differing only in them train the same
  # dense network. It did not hold while the schedule was traced into the step:
  # XLA compiled each run's program differently and the rounding differed.
  dense = {}
  for name, overrides in {
    'rewind': {'rounds': 1},
    'fine-tune': {'rounds': 1, 'retrain_schedule': 'fine-tune', 'retrain_lr_scale': 0.25},
    'dense only': {'rounds': 0},
  }.items():
    # The whole training set: one dense epoch of 469 steps showed the old difference
    # (512 images did not).
    result = run(tmp_path / name, data_dir, train_subset=None, **overrides)
    dense[name] = [
      {k: v for k, v in r.items() if k not in ('time', 'wall_time_s')}
      for r in result['records']
      if r['round'] == 0
    ]
  assert dense['fine-tune'] == dense['rewind']
  assert dense['dense only'] == dense['rewind']


def test_one_compiled_step_serves_the_whole_run(tmp_path, data_dir, caplog):
  # New masks and new learning rates are data: dense training and every round run
  # the program compiled for the first step.
  with jax.log_compiles(True), caplog.at_level('WARNING'):
    run(tmp_path, data_dir, dense_epochs=2, retrain_epochs=2)
  steps = [r for r in caplog.records if r.getMessage().startswith('Compiling jit(step)')]
  assert len(steps) == 1, [r.getMessage()[:120] for r in steps]


# --- the loop's structure -------------------------------------------------------------------------


def test_the_mask_is_fetched_from_the_devices_at_most_once_per_round(
  tmp_path, data_dir, monkeypatch
):
  # The loop keeps the mask on the host: it fetches the optimizer state's mask once
  # when the run starts and each round's new mask once, and the params once per prune.
  fetched = []
  fetch = parallel.fetch

  def counting_fetch(x):
    fetched.append((np.dtype(x.dtype), np.shape(x)))
    return fetch(x)

  monkeypatch.setattr(parallel, 'fetch', counting_fetch)
  rounds = 3
  result = run(tmp_path, data_dir, rounds=rounds)
  mask_leaves = len(jax.tree.leaves(result['mask']))
  assert mask_leaves == 3
  mask_fetches = sum(dtype == np.bool_ for dtype, _ in fetched)
  assert mask_fetches <= (rounds + 1) * mask_leaves, fetched
  assert fetched.count((np.dtype(np.float32), (784, 300))) == rounds  # fc1's kernel
  # The host mask is the one the optimizer applies.
  for name, leaf in jax.tree_util.tree_leaves_with_path(result['mask']):
    kernel = result['params']
    for key in name:
      kernel = kernel[key.key]
    assert isinstance(leaf, np.ndarray), name
    np.testing.assert_array_equal(np.asarray(jax.tree.leaves(kernel)[0]) != 0, leaf, str(name))


@pytest.fixture
def renamed_layout(monkeypatch):
  """Every file and folder of RunDir renamed: a module spelling a name itself is caught."""
  names = {}
  for attribute, value in vars(RunDir).items():
    if isinstance(value, property):
      name = f'renamed-{value.fget(RunDir("")).name}'
      names[attribute] = name
      monkeypatch.setattr(RunDir, attribute, property(lambda self, n=name: self.path / n))
  return names


def _entries(workdir):
  return {p.name for p in workdir.iterdir() if not p.name.startswith('.')}


def test_every_module_reads_and_writes_a_run_directory_through_run_dir(
  tmp_path, data_dir, renamed_layout
):
  names = renamed_layout
  config = from_recipe(
    RECIPES / 'lenet300.py',
    **{**TINY, 'retrain_epochs': 2, 'train_subset': 256, 'test_subset': 250},
    validation_size=250,
    auto_sensitivity=2.0,
  )
  workdir = tmp_path / 'run'
  seen = {}

  def interrupt(round_index, epoch):
    if (round_index, epoch) == (2, 0):
      seen['killed'] = _entries(workdir)
      raise KeyboardInterrupt('simulated kill after the first epoch of round 2')

  options = {'data_dir': data_dir, 'progress': False, 'checkpoint_epochs': True}
  with pytest.raises(KeyboardInterrupt):
    pipeline.train_and_evaluate(config, workdir, on_epoch_end=interrupt, **options)
  files = (
    'config',
    'metrics',
    'checkpoints',
    'rewind_point',
    'sensitivity_json',
    'sensitivity_csv',
  )
  run_files = {names[f] for f in (*files, 'sensitivity_png')}
  assert seen['killed'] == run_files | {names['epoch_checkpoint']}
  result = pipeline.train_and_evaluate(config, workdir, resume=True, **options)
  assert result['records'][-1]['round'] == 2
  rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
  paths = report.write_and_print(
    workdir, rows, result['records'], {'model': 'lenet300'}, auto_sensitivity=2.0
  )
  reports = {names['report_md'], names['report_json'], names['error_vs_kept']}
  assert _entries(workdir) == run_files | reports
  assert {p.name for p in paths.values()} == reports | {names['sensitivity_json']}
  assert export.restore_run(workdir).round == 2
  pipeline.start_from_dense(workdir, tmp_path / 'seeded', config)
  assert _entries(tmp_path / 'seeded') == {
    names['metrics'],
    names['checkpoints'],
    names['rewind_point'],
  }


def test_a_criterion_registered_in_one_place_runs_through_the_pipeline_and_its_analysis(
  tmp_path, data_dir, monkeypatch
):
  # Registered here and nowhere else: rounds, the sensitivity sweep, the thresholds read off
  # it and the config all find it by name (the command line: tests/scripts/test_command_line.py).
  monkeypatch.setattr(criteria, 'CRITERIA', dict(criteria.CRITERIA))
  criteria.register_criterion('squared', lambda weights, rng: weights**2)
  options = {**TINY, 'rounds': 1, 'validation_size': 500}
  dense = tmp_path / 'dense'
  pipeline.train_and_evaluate(
    from_recipe(RECIPES / 'lenet300.py', **{**options, 'rounds': 0}),
    dense,
    data_dir=data_dir,
    progress=False,
  )
  runs = {}
  for name in ('sparsity', 'squared'):
    config = from_recipe(RECIPES / 'lenet300.py', **options, criterion=name, auto_sensitivity=2.0)
    runs[name] = pipeline.train_and_evaluate(
      config, tmp_path / name, dense_from=dense, data_dir=data_dir, progress=False
    )
  # w**2 ranks a layer's weights as |w| does: the same curves, thresholds and masks.
  chosen = {
    name: json.loads((tmp_path / name / 'sensitivity.json').read_text())['thresholds']
    for name in runs
  }
  assert chosen['squared'].pop('criterion') == 'squared'
  assert chosen['sparsity'].pop('criterion') == 'sparsity'
  assert chosen['squared'] == chosen['sparsity']
  for path, kept in jax.tree_util.tree_leaves_with_path(runs['sparsity']['mask']):
    other = dict(jax.tree_util.tree_leaves_with_path(runs['squared']['mask']))[path]
    np.testing.assert_array_equal(np.asarray(other), np.asarray(kept))
  assert runs['squared']['records'][-1]['kept'] < runs['squared']['records'][-1]['total']


def test_dense_from_seeds_the_run_and_resume_continues_it(tmp_path, data_dir):
  dense, pruned = tmp_path / 'dense', tmp_path / 'pruned'
  config = from_recipe(RECIPES / 'lenet300.py', **{**TINY, 'rounds': 1})
  pipeline.train_and_evaluate(
    dataclasses.replace(config, rounds=0), dense, data_dir=data_dir, progress=False
  )
  result = pipeline.train_and_evaluate(
    config, pruned, dense_from=dense, data_dir=data_dir, progress=False
  )
  dense_records = (dense / 'metrics.jsonl').read_text().splitlines()
  assert (pruned / 'metrics.jsonl').read_text().splitlines()[: len(dense_records)] == dense_records
  assert [r['round'] for r in result['records'] if r['event'] == 'round_end'] == [0, 1]
  # Seeded once: with resume the seeded workdir continues as it is; without, it is taken.
  again = pipeline.train_and_evaluate(
    config, pruned, dense_from=dense, resume=True, data_dir=data_dir, progress=False
  )
  assert again['records'] == result['records']
  with pytest.raises(FileExistsError, match='already holds a run'):
    pipeline.train_and_evaluate(config, pruned, dense_from=dense, data_dir=data_dir)


def test_resume_of_nothing_is_an_error_naming_the_workdir(tmp_path, data_dir):
  config = from_recipe(RECIPES / 'lenet300.py', **TINY)
  for workdir in (tmp_path / 'missing', tmp_path):
    with pytest.raises(FileNotFoundError, match=f'{workdir}.*nothing to resume'):
      pipeline.train_and_evaluate(config, workdir, resume=True, data_dir=data_dir)
  assert not (tmp_path / 'missing').exists() and not any(tmp_path.iterdir())


def test_a_start_that_fails_on_its_data_writes_nothing(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  config = from_recipe(RECIPES / 'lenet300.py', **TINY)
  workdir = tmp_path / 'run'
  with pytest.raises(DataFilesError, match='missing or corrupt'):
    pipeline.train_and_evaluate(
      config, workdir, data_dir=str(tmp_path / 'tfds'), raw_dir=str(empty), progress=False
    )
  assert not workdir.exists()


def _restored(path, step=None):
  with ocp.CheckpointManager(path.absolute()) as manager:
    step = manager.latest_step() if step is None else step
    return step, manager.restore(step, args=ocp.args.StandardRestore())


def _leaves(tree):
  return {
    jax.tree_util.keystr(path, simple=True, separator='/').removesuffix('/value'): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_weight_rewinding_prunes_trained_weights_and_rewinds_the_survivors(tmp_path, data_dir):
  density = {'fc1': 0.3, 'fc2': 0.5, 'fc3': 0.8}
  config = from_recipe(
    RECIPES / 'lenet300.py',
    **{**TINY, 'dense_epochs': 2, 'rounds': 1, 'retrain_epochs': 0},
    density=density,
    retrain_schedule='weight-rewind',
    rewind_step=2,
  )
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  step, point = _restored(tmp_path / 'rewind_point')
  assert step == 2 and int(point['step']) == 2 and int(point['round']) == 0
  _, dense = _restored(tmp_path / 'checkpoints', 0)
  _, pruned = _restored(tmp_path / 'checkpoints', 1)
  (record,) = _pruned_records(result)
  assert record['rewound_to_step'] == 2
  for layer, d in density.items():
    trained = np.asarray(_leaves(dense['params'])[f'{layer}/kernel'])
    early = np.asarray(_leaves(point['params'])[f'{layer}/kernel'])
    kernel = np.asarray(_leaves(pruned['params'])[f'{layer}/kernel'])
    kept = np.asarray(result['mask'][layer]['kernel'])
    # The mask is chosen on the trained weights (their largest magnitudes) ...
    chosen = criteria.sparsity_mask({layer: {'kernel': trained}}, {layer: 1 - d})
    expected = np.asarray(chosen[layer]['kernel'])
    np.testing.assert_array_equal(kept, expected, err_msg=layer)
    # ... and the survivors go back to their values after 2 dense steps.
    np.testing.assert_array_equal(kernel, np.where(kept, early, 0.0), err_msg=layer)
    assert not np.array_equal(early, trained), layer
  # So does the momentum: the rewind point's, with the pruned entries zeroed.
  point_state, pruned_state = _leaves(point['opt_state']), _leaves(pruned['opt_state'])
  traces = [name for name in point_state if 'trace' in name and name.endswith('fc1/kernel')]
  assert len(traces) == 1
  kept = np.asarray(result['mask']['fc1']['kernel'])
  np.testing.assert_array_equal(
    pruned_state[traces[0]], np.where(kept, point_state[traces[0]], 0.0)
  )


@pytest.mark.parametrize('rewind_step', [0, None])
def test_the_rewind_point_is_the_initialisation_or_the_step_asked_for(
  tmp_path, data_dir, rewind_step
):
  # rewind_step 0 is the initialisation; None is one epoch, the end of a 1-epoch dense phase.
  result = run(tmp_path, data_dir, rounds=0, rewind_step=rewind_step)
  step, point = _restored(tmp_path / 'rewind_point')
  if rewind_step == 0:
    assert step == 0
    model = pipeline.MODELS['lenet300'].build(nnx.Rngs(0))
    expected = _leaves(nnx.state(model, nnx.Param))
  else:
    steps_per_epoch = TINY['train_subset'] // 128
    assert step == steps_per_epoch and result['records'][-1]['round'] == 0
    expected = _leaves(_restored(tmp_path / 'checkpoints', 0)[1]['params'])
  got = _leaves(point['params'])
  assert got.keys() == expected.keys()
  for name in got:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_weight_rewinding_from_a_shared_dense_run(tmp_path, data_dir):
  dense = tmp_path / 'dense'
  run(dense, data_dir, rounds=0)
  config = from_recipe(
    RECIPES / 'lenet300.py', **{**TINY, 'rounds': 1}, retrain_schedule='weight-rewind'
  )
  result = pipeline.train_and_evaluate(
    config, tmp_path / 'rewound', dense_from=dense, data_dir=data_dir, progress=False
  )
  assert _pruned_records(result)[0]['rewound_to_step'] == TINY['train_subset'] // 128
  assert (tmp_path / 'rewound' / 'rewind_point').is_dir()
  other = dataclasses.replace(config, rewind_step=1)
  with pytest.raises(
    ValueError, match=r'saved its rewind point after step 4, not 1; use rewind_step=4'
  ):
    pipeline.train_and_evaluate(other, tmp_path / 'other', dense_from=dense, data_dir=data_dir)
  beyond = dataclasses.replace(config, rewind_step=5)
  with pytest.raises(ValueError, match=r'rewind_step is 5, beyond the 4 steps of dense training'):
    pipeline.train_and_evaluate(beyond, tmp_path / 'other', dense_from=dense, data_dir=data_dir)
  shutil.rmtree(dense / 'rewind_point')
  with pytest.raises(FileNotFoundError, match='rewind_point is missing'):
    pipeline.train_and_evaluate(config, tmp_path / 'other', dense_from=dense, data_dir=data_dir)
  assert not (tmp_path / 'other').exists()


def test_rewind_step_errors():
  with pytest.raises(ValueError, match=r'rewind_step is -1; expected an integer >= 0, or None'):
    from_recipe(RECIPES / 'lenet300.py', rewind_step=-1)
  config = from_recipe(RECIPES / 'lenet300.py', rewind_step=3)
  with pytest.raises(
    config_module.IdleOptionError,
    match=r"rewind_step needs retrain_schedule='weight-rewind' \(the retrain schedule is 'rewind'\)",
  ):
    config_module.check_options(config, {'rewind_step'})
  # A dense run saves the rewind point for the runs it will seed.
  config_module.check_options(dataclasses.replace(config, rounds=0), {'rewind_step'})


GRADUAL = {
  **TINY,
  'rounds': 0,
  'dense_epochs': 3,
  'pruning_schedule': 'gradual',
  'gradual_sparsity': 0.9,
  'gradual_start_epoch': 0,
  'gradual_end_epoch': 2,
  'gradual_frequency': 2,
}


def test_gradual_pruning_follows_the_cubic_schedule_inside_round_0(tmp_path, data_dir):
  config = from_recipe(RECIPES / 'lenet300.py', **GRADUAL)
  steps_per_epoch = TINY['train_subset'] // 128
  schedule = config.gradual_schedule(steps_per_epoch)
  # Updates at steps 0, 2, 4, 6, 8 (the first step of epoch 2), from 0 to 90 %.
  assert schedule.update_steps() == [0, 2, 4, 6, 8]
  killed = {}

  def interrupt(round_index, epoch):
    if epoch == 1 and not killed:
      killed['at'] = epoch
      raise KeyboardInterrupt('simulated kill after epoch 1')

  options = {'data_dir': data_dir, 'progress': False, 'checkpoint_epochs': True}
  with pytest.raises(KeyboardInterrupt):
    pipeline.train_and_evaluate(config, tmp_path / 'killed', on_epoch_end=interrupt, **options)
  resumed = pipeline.train_and_evaluate(config, tmp_path / 'killed', resume=True, **options)
  result = pipeline.train_and_evaluate(config, tmp_path / 'whole', **options)
  epochs = [r for r in result['records'] if r['event'] == 'epoch']
  total = epochs[0]['total']
  assert total == 266_200
  # The last update of each epoch sets its kept count: steps 2, 6 and 8.
  for record, last_update in zip(epochs, (2, 6, 8), strict=True):
    pruned = round(schedule.sparsity_at(last_update) * total)
    assert record['kept'] == total - pruned, record['epoch']
  assert epochs[-1]['kept'] == total - round(0.9 * total) == 26_620
  last = result['records'][-1]
  assert last['event'] == 'round_end' and last['kept'] == 26_620
  assert kernel_zeros(_restored(tmp_path / 'whole' / 'checkpoints', 0)[1]['params']) == 239_580
  # Global scope: the layers end at different sparsities.
  kept = {layer: int(np.asarray(m['kernel']).sum()) for layer, m in result['mask'].items()}
  assert len(set(kept.values())) == 3 and sum(kept.values()) == 26_620
  # A run killed after epoch 1 and resumed reaches the same network.
  for layer in kept:
    np.testing.assert_array_equal(
      resumed['mask'][layer]['kernel'], result['mask'][layer]['kernel'], err_msg=layer
    )
  assert [r['kept'] for r in resumed['records'] if r['event'] == 'epoch'] == [
    r['kept'] for r in epochs
  ]


def test_gradual_per_layer_prunes_every_layer_alike(tmp_path, data_dir):
  config = from_recipe(RECIPES / 'lenet300.py', **GRADUAL, gradual_scope='per-layer')
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  for layer, total in (('fc1', 235_200), ('fc2', 30_000), ('fc3', 1_000)):
    kept = int(np.asarray(result['mask'][layer]['kernel']).sum())
    assert kept == total - round(0.9 * total), layer


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'gradual_sparsity': None}, r"pruning_schedule='gradual' needs gradual_sparsity"),
    ({'rounds': 2}, r'prunes while round 0 trains; rounds is 2, expected 0'),
    ({'gradual_sparsity': 1.0}, r'gradual_sparsity is 1.0; expected a sparsity in \[0, 1\)'),
    ({'gradual_initial_sparsity': 0.95}, r'gradual_initial_sparsity 0.95 is above'),
    ({'gradual_end_epoch': 4}, r'from epoch 0 to epoch 4; expected gradual_start_epoch <'),
    ({'gradual_start_epoch': 2}, r'from epoch 2 to epoch 2'),
    ({'gradual_frequency': 0}, r'gradual_frequency is 0; expected an integer >= 1'),
    ({'gradual_scope': 'layer'}, r"gradual_scope is 'layer'"),
    ({'pruning_schedule': 'oneshot'}, r"pruning_schedule is 'oneshot'"),
  ],
)
def test_gradual_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    from_recipe(RECIPES / 'lenet300.py', **{**GRADUAL, **overrides})


def test_gradual_options_need_the_gradual_schedule():
  config = from_recipe(RECIPES / 'lenet300.py', gradual_frequency=5)
  with pytest.raises(
    config_module.IdleOptionError,
    match=r"gradual_frequency needs pruning_schedule='gradual' \(the pruning schedule is 'iterative'\)",
  ):
    config_module.check_options(config, {'gradual_frequency'})
  gradual = from_recipe(RECIPES / 'lenet300.py', **GRADUAL)
  config_module.check_options(gradual, {'gradual_frequency', 'gradual_sparsity', 'rounds'})


def test_gradual_two_four_ends_valid_in_every_layer(tmp_path, data_dir):
  config = from_recipe(
    RECIPES / 'lenet300.py',
    **{**GRADUAL, 'gradual_sparsity': 0.5},
    gradual_scope='per-layer',
    nm='2:4',
  )
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  epochs = [r for r in result['records'] if r['event'] == 'epoch']
  assert epochs[-1]['nm_valid_layers'] == ['fc1', 'fc2', 'fc3']
  assert epochs[-1]['kept'] == 266_200 // 2
  for layer in ('fc1', 'fc2', 'fc3'):
    groups = np.asarray(result['mask'][layer]['kernel']).reshape(
      -1, 4, np.shape(result['mask'][layer]['kernel'])[-1]
    )
    np.testing.assert_array_equal(groups.sum(axis=1), 2, err_msg=layer)


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'nm': '2:4'}, r"nm '2:4' needs gradual_scope='per-layer'"),
    (
      {'nm': '2:4', 'gradual_scope': 'per-layer'},
      r"nm '2:4' keeps 2 of every 4: gradual_sparsity must be 0.5, not 0.9",
    ),
    ({'nm': '4:2', 'gradual_scope': 'per-layer'}, r"nm is '4:2'; expected 1 <= N < M"),
    ({'nm': '2-4', 'gradual_scope': 'per-layer'}, r"nm is '2-4'; expected 'N:M'"),
  ],
)
def test_gradual_nm_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    from_recipe(RECIPES / 'lenet300.py', **{**GRADUAL, **overrides})


@pytest.mark.parametrize('schedule', ['gradual', 'iterative'])
def test_nm_that_does_not_fit_a_layer_writes_nothing(tmp_path, data_dir, schedule):
  if schedule == 'gradual':
    overrides = {**GRADUAL, 'gradual_sparsity': 2 / 3, 'gradual_scope': 'per-layer'}
  else:
    overrides = TINY
  config = from_recipe(RECIPES / 'lenet300.py', **overrides, nm='1:3')
  with pytest.raises(
    ValueError,
    match=r"layer 'fc1' has 784 inputs \(axis -2 of its kernel, shape \(784, 300\)\), not a "
    r'multiple of M=3; leave it dense \(nm_dense, --nm-dense fc1\)',
  ):
    pipeline.train_and_evaluate(config, tmp_path / 'run', data_dir=data_dir, progress=False)
  assert not (tmp_path / 'run').exists()


def _group_counts(mask, layer, m):
  """Kept weights of each group of ``m`` consecutive inputs of ``layer``'s kernel."""
  kernel = np.asarray(mask[layer]['kernel'])
  return kernel.reshape(kernel.shape[0] // m, m, -1).sum(axis=1)


def test_iterative_nm_keeps_fewer_of_every_m_each_round(tmp_path, data_dir):
  # 2:4 over 2 rounds: 4 * 0.5 ** 0.5 = 2.83 -> 3 of 4, then 2 of 4; fc3 left dense.
  config = from_recipe(RECIPES / 'lenet300.py', **TINY, nm='2:4', nm_dense=('fc3',))
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  pruned = [r for r in result['records'] if r['event'] == 'pruned']
  assert [r['density'] for r in pruned] == [{'fc1': 0.75, 'fc2': 0.75}, {'fc1': 0.5, 'fc2': 0.5}]
  assert [r['kept'] for r in pruned] == [
    (784 * 300 + 300 * 100) * 3 // 4 + 100 * 10,
    (784 * 300 + 300 * 100) // 2 + 100 * 10,
  ]
  assert [r['nm_valid_layers'] for r in pruned] == [[], ['fc1', 'fc2']]
  for layer in ('fc1', 'fc2'):
    np.testing.assert_array_equal(_group_counts(result['mask'], layer, 4), 2, err_msg=layer)
  assert np.asarray(result['mask']['fc3']['kernel']).all()
  params = result['params']
  for layer in ('fc1', 'fc2'):  # pruned weights are exactly zero after retraining
    kernel = np.asarray(params[layer]['kernel'])
    assert not kernel[~np.asarray(result['mask'][layer]['kernel'])].any()


def test_one_round_of_nm_is_one_shot(tmp_path, data_dir):
  config = from_recipe(RECIPES / 'lenet300.py', **{**TINY, 'rounds': 1}, nm='1:4')
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  (pruned,) = [r for r in result['records'] if r['event'] == 'pruned']
  assert pruned['density'] == {'fc1': 0.25, 'fc2': 0.25, 'fc3': 0.25}
  assert pruned['nm_valid_layers'] == ['fc1', 'fc2', 'fc3']
  for layer in ('fc1', 'fc2', 'fc3'):
    np.testing.assert_array_equal(_group_counts(result['mask'], layer, 4), 1, err_msg=layer)


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'nm': '0:4'}, r"nm is '0:4'; expected 1 <= N < M"),
    (
      {'nm': '2:4', 'criterion': 'random'},
      r"criterion is 'random'; nm '2:4' does not take it \(each group keeps its N largest",
    ),
    (
      {'nm': '2:4', 'structure': 'channels', 'structured_sparsity': 0.5},
      r"structure is 'channels'; nm '2:4' does not take it",
    ),
    (
      {'nm': '2:4', 'nm_dense': ('fc9',)},
      r"nm_dense names \['fc9'\], which lenet300 does not have; its prunable layers: "
      r"\['fc1', 'fc2', 'fc3'\]",
    ),
    (
      {'nm_dense': ('fc3',)},
      r"nm_dense needs an N:M pattern \(nm, such as '2:4'\) \(without nm every layer",
    ),
  ],
)
def test_nm_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    from_recipe(RECIPES / 'lenet300.py', **{**TINY, **overrides})


def test_nm_with_a_density_given_is_refused():
  config = from_recipe(RECIPES / 'lenet300.py', **TINY, nm='2:4')
  with pytest.raises(
    config_module.IdleOptionError,
    match=r"density needs nm=None \(nm '2:4' keeps N of every M in each pruned layer\)",
  ):
    config_module.check_options(config, {'density', 'nm'})
  config_module.check_options(config, {'nm'})  # the recipe's density is left alone


def test_an_adamw_run_prunes_checkpoints_its_moments_and_resumes(tmp_path, data_dir):
  adamw = {'optimizer': 'adamw', 'weight_decay': 0.05, 'learning_rate': 1e-3}
  reference = run(tmp_path / 'reference', data_dir, **adamw)
  last = reference['records'][-1]
  with ocp.CheckpointManager((tmp_path / 'reference' / 'checkpoints').absolute()) as manager:
    restored = manager.restore(2, args=ocp.args.StandardRestore())
  # Adam's moments are saved: a resume continues them rather than starting them over.
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(restored)]
  assert any("'mu'" in p for p in paths) and any("'nu'" in p for p in paths), paths[:8]
  assert kernel_zeros(restored['params']) == last['total'] - last['kept'] > 0
  # The dense phase's cosine from 1e-3, not SGD's recipe rate of the lenet300 recipe.
  first = next(r for r in reference['records'] if r['event'] == 'epoch')
  steps = TINY['train_subset'] // 128
  assert first['learning_rate'] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / steps)))
  config = from_recipe(RECIPES / 'lenet300.py', **TINY, **adamw)
  killed_in_round_2(config, tmp_path / 'killed', data_dir)
  resumed = pipeline.train_and_evaluate(
    config, tmp_path / 'killed', data_dir=data_dir, progress=False, resume=True
  )
  ends = [r for r in resumed['records'] if r['event'] == 'round_end']
  assert [(r['kept'], r['test_error']) for r in ends] == [
    (r['kept'], r['test_error']) for r in reference['records'] if r['event'] == 'round_end'
  ]


def test_gradual_nm_counts_the_layers_it_leaves_dense_as_kept(tmp_path, data_dir):
  # fc1 left dense: its 235,200 weights are kept, as an iterative N:M run counts them.
  config = from_recipe(
    RECIPES / 'lenet300.py',
    **{**GRADUAL, 'gradual_sparsity': 0.5},
    gradual_scope='per-layer',
    nm='2:4',
    nm_dense=('fc1',),
  )
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  last = [r for r in result['records'] if r['event'] == 'epoch'][-1]
  assert (last['kept'], last['total']) == (235_200 + (30_000 + 1_000) // 2, 266_200)
  assert last['nm_valid_layers'] == ['fc2', 'fc3']
  assert np.asarray(result['mask']['fc1']['kernel']).all()
  # The loop's mask lives on the host, as the rounds' does.
  assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(result['mask']))
  end = result['records'][-1]
  assert (end['kept'], end['total']) == (last['kept'], last['total'])


def test_a_dense_run_saved_before_a_field_existed_still_seeds_runs(tmp_path, data_dir):
  # Its config.json lacks the fields added since (here the optimizer's): they count
  # as their defaults, as they do when such a run resumes.
  dense = tmp_path / 'dense'
  config = from_recipe(RECIPES / 'lenet300.py', **{**TINY, 'rounds': 1})
  pipeline.train_and_evaluate(
    dataclasses.replace(config, rounds=0), dense, data_dir=data_dir, progress=False
  )
  saved = json.loads((dense / 'config.json').read_text())
  del saved['optimizer'], saved['weight_decay']
  (dense / 'config.json').write_text(json.dumps(saved))
  result = pipeline.train_and_evaluate(
    config, tmp_path / 'pruned', dense_from=dense, data_dir=data_dir, progress=False
  )
  assert [r['round'] for r in result['records'] if r['event'] == 'round_end'] == [0, 1]
  # A field that does differ from the default is still refused, by name.
  with pytest.raises(ValueError, match=r"differing fields: \['optimizer'\]"):
    pipeline.train_and_evaluate(
      dataclasses.replace(config, optimizer='adamw'),
      tmp_path / 'adamw',
      dense_from=dense,
      data_dir=data_dir,
    )
