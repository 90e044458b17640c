"""Structured runs of the pipeline (structure='channels'): whole units pruned over the rounds,
held at zero while retraining, then cut out into a smaller dense model saved with its plan."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from models import create_model
from pruning.experiment import config as config_module
from pruning.experiment import export, pipeline
from pruning.experiment.config import IdleOptionError, from_recipe
from pruning.structured import load_plan, load_pruned

RECIPES = pathlib.Path(__file__).resolve().parents[3] / 'scripts' / 'configs'

TINY = {
  'dense_epochs': 1,
  'rounds': 2,
  'retrain_epochs': 1,
  'train_subset': 256,
  'test_subset': 250,
  'eval_batch_size': 250,
}
CHANNELS = {'structure': 'channels', 'structured_sparsity': 0.5}
# LeNet-5's prunable groups: conv1's 20 filters, conv2's 50, fc1's 500 units (fc2's 10
# outputs are the model's). Round r of 2 removes round((1 - 0.5 ** (r / 2)) * size):
# 0.2929 of them after round 1 (6, 15, 146), half after round 2.
SIZES = {'conv1/kernel:3': 20, 'conv2/kernel:3': 50, 'fc1/kernel:1': 500}
KEPT = {1: {'conv1/kernel:3': 14, 'conv2/kernel:3': 35, 'fc1/kernel:1': 354},
        2: {'conv1/kernel:3': 10, 'conv2/kernel:3': 25, 'fc1/kernel:1': 250}}  # fmt: skip


@pytest.fixture(scope='module')
def structured_run(tmp_path_factory, mnist_data_dir):
  workdir = tmp_path_factory.mktemp('structured')
  config = from_recipe(RECIPES / 'lenet5.py', **TINY, **CHANNELS)
  result = pipeline.train_and_evaluate(
    config, workdir, data_dir=str(mnist_data_dir), progress=False
  )
  return config, workdir, result, str(mnist_data_dir)


def _params(workdir, round_index):
  """``{'conv1/kernel': array, ...}`` of the checkpoint of a round."""
  with ocp.CheckpointManager((workdir / 'checkpoints').absolute()) as manager:
    restored = manager.restore(round_index, args=ocp.args.StandardRestore())
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(restored['params']):
    name = jax.tree_util.keystr(path, simple=True, separator='/').removesuffix('/value')
    out[name] = np.asarray(leaf)
  return out


def _zero_units(params):
  """Per layer, the output units whose every member is exactly zero where it is produced."""
  return {
    layer: {u for u in range(params[f'{layer}/bias'].size)
            if not np.any(params[f'{layer}/kernel'][..., u]) and params[f'{layer}/bias'][u] == 0}
    for layer in ('conv1', 'conv2', 'fc1')
  }  # fmt: skip


def test_each_round_removes_whole_units_to_the_geometric_target(structured_run):
  _, workdir, result, _ = structured_run
  pruned = [r for r in result['records'] if r['event'] == 'pruned']
  assert [r['round'] for r in pruned] == [1, 2]
  for record in pruned:
    r = record['round']
    assert record['structured_sparsity'] == pytest.approx(1 - 0.5 ** (r / 2), rel=1e-12)
    assert record['groups'] == {
      name: {'kept': KEPT[r][name], 'total': size} for name, size in SIZES.items()
    }
  assert _zero_units(_params(workdir, 0)) == {'conv1': set(), 'conv2': set(), 'fc1': set()}
  removed = {}
  for r in (1, 2):
    params = _params(workdir, r)
    zero = _zero_units(params)
    layers = {'conv1': 'conv1/kernel:3', 'conv2': 'conv2/kernel:3', 'fc1': 'fc1/kernel:1'}
    assert {layer: SIZES[g] - len(zero[layer]) for layer, g in layers.items()} == {
      layer: KEPT[r][g] for layer, g in layers.items()
    }
    # The next layer's inputs from a removed unit are zero too: the unit is absent.
    assert not np.any(params['conv2/kernel'][:, :, sorted(zero['conv1']), :])
    assert not np.any(params['fc2/kernel'][sorted(zero['fc1']), :])
    flat = params['fc1/kernel'].reshape(4, 4, 50, 500)  # fc1 reads conv2's 4x4x50 flattened
    assert not np.any(flat[:, :, sorted(zero['conv2']), :])
    removed[r] = zero
  # Masks only shrink: a unit removed in round 1 stays removed.
  for layer in removed[1]:
    assert removed[1][layer] <= removed[2][layer], layer
  # The run's mask is the checkpoint's: every masked entry of the last round is zero.
  kernel = np.asarray(result['mask']['conv2']['kernel'])
  assert np.array_equal(kernel, _params(workdir, 2)['conv2/kernel'] != 0)


def test_the_plan_reloads_into_a_smaller_model_equal_to_the_masked_one(structured_run):
  config, workdir, result, data_dir = structured_run
  record = load_plan(workdir / 'pruned')
  assert {name: g['width'] for name, g in record['groups'].items()} == KEPT[2]
  smaller = load_pruned(workdir / 'pruned', create_model('lenet5', nnx.Rngs(1)))
  assert smaller.conv1.kernel.shape == (5, 5, 1, 10)
  assert smaller.conv2.kernel.shape == (5, 5, 10, 25)
  assert smaller.fc1.kernel.shape == (4 * 4 * 25, 250)
  assert smaller.fc2.kernel.shape == (250, 10)
  masked = create_model('lenet5', nnx.Rngs(2))
  nnx.update(masked, result['params'])
  images = pipeline.load_data(config, data_dir=data_dir)['test'][0][:64]
  want = np.asarray(masked(images))
  np.testing.assert_allclose(
    np.asarray(smaller(images)), want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max())
  )
  # The last record: the smaller model's size and MACs against the dense one's, by hand.
  last = result['records'][-1]
  assert last['event'] == 'round_end' and last['round'] == 2
  assert last['widths'] == KEPT[2]
  dense_macs = 24 * 24 * 25 * 20 + 8 * 8 * 25 * 20 * 50 + 800 * 500 + 500 * 10
  macs = 24 * 24 * 25 * 10 + 8 * 8 * 25 * 10 * 25 + 400 * 250 + 250 * 10
  assert (last['dense_macs'], last['pruned_macs']) == (dense_macs, macs)
  assert last['pruned_params'] == (250 + 10) + (6250 + 25) + (100_000 + 250) + (2500 + 10)
  assert last['pruned_layer_params'] == last['pruned_params']
  assert last['dense_layer_params'] == 520 + 25_050 + 400_500 + 5010
  assert last['macs_ratio'] == pytest.approx(dense_macs / macs)


def test_a_resumed_finished_run_does_not_remove_again(structured_run):
  config, workdir, result, data_dir = structured_run
  written = (workdir / 'pruned' / 'params.npz').stat().st_mtime_ns
  again = pipeline.train_and_evaluate(
    config, workdir, data_dir=data_dir, progress=False, resume=True
  )
  assert again['records'] == result['records']
  assert (workdir / 'pruned' / 'params.npz').stat().st_mtime_ns == written


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'structure': 'filters'}, "structure is 'filters'; expected 'unstructured' or 'channels'"),
    ({'structure': 'channels'}, "structure='channels' with 2 rounds needs structured_sparsity"),
    ({**CHANNELS, 'structured_sparsity': 1.0}, r'structured_sparsity is 1.0; expected .* \[0, 1\)'),
    ({**CHANNELS, 'structured_criterion': 'taylor', 'structured_grad_batches': 0},
     'structured_grad_batches is 0; expected an integer >= 1'),
    ({**CHANNELS, 'structured_criterion': 'l3'}, "structured_criterion is 'l3'; expected one of"),
    ({**CHANNELS, 'structured_scope': 'per_group'}, "structured_scope is 'per_group'; expected"),
    ({**CHANNELS, 'round_to': 0}, 'round_to is 0; expected an integer >= 1'),
    ({**CHANNELS, 'auto_sensitivity': 1.0, 'validation_size': 100},
     "auto_sensitivity is 1.0; structure='channels' does not take it"),
  ],
)  # fmt: skip
def test_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    from_recipe(RECIPES / 'lenet5.py', **{**TINY, **overrides})


def test_options_of_the_other_structure_are_idle():
  # Set in code, a structured option on an unstructured run is refused.
  with pytest.raises(
    IdleOptionError,
    match=r"structured_sparsity needs structure='channels' \(the structure is 'unstructured'",
  ):
    from_recipe(RECIPES / 'lenet5.py', **TINY, structured_sparsity=0.5)
  with pytest.raises(IdleOptionError, match="round_to needs structure='channels'"):
    from_recipe(RECIPES / 'lenet5.py', **TINY, round_to=8)
  with pytest.raises(
    IdleOptionError,
    match=r"structured_grad_batches needs structured_criterion='taylor' \(the structured "
    r"criterion is 'l1', which does not score from gradients\)",
  ):
    from_recipe(RECIPES / 'lenet5.py', **TINY, **CHANNELS, structured_grad_batches=2)
  # A structured run needs no density (the recipe's is left alone), but refuses one given.
  config = from_recipe(RECIPES / 'lenet5.py', **TINY, **CHANNELS, density={})
  for option in ('density', 'criterion', 'alternate'):
    with pytest.raises(IdleOptionError, match=rf"{option} needs structure='unstructured'"):
      config_module.check_options(config, {option})
  config_module.check_options(config, {'structured_scope', 'round_to', 'structured_criterion'})
  dense = dataclasses.replace(config, rounds=0)
  with pytest.raises(IdleOptionError, match='structured_sparsity needs rounds >= 1'):
    config_module.check_options(dense, {'structured_sparsity'})


def test_a_run_killed_in_round_2_resumes_to_the_same_units(structured_run, tmp_path):
  config, _, reference, data_dir = structured_run

  def interrupt(round_index, epoch):
    if round_index == 2:
      raise KeyboardInterrupt('simulated kill during round 2')

  options = {'data_dir': data_dir, 'progress': False}
  with pytest.raises(KeyboardInterrupt):
    pipeline.train_and_evaluate(config, tmp_path, on_epoch_end=interrupt, **options)
  assert not (tmp_path / 'pruned').exists()
  resumed = pipeline.train_and_evaluate(config, tmp_path, resume=True, **options)
  for (path, leaf), (_, other) in zip(
    jax.tree_util.tree_leaves_with_path(reference['mask']),
    jax.tree_util.tree_leaves_with_path(resumed['mask']),
    strict=True,
  ):
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(other), err_msg=str(path))
  assert load_plan(tmp_path / 'pruned') == load_plan(structured_run[1] / 'pruned')

  def strip(records):
    drop = ('time', 'wall_time_s')
    return [{k: v for k, v in r.items() if k not in drop} for r in records if r['event'] != 'start']

  assert strip(resumed['records']) == strip(reference['records'])


def test_the_model_cut_at_the_end_takes_its_dropout_key_to_the_host():
  # VGG's dropout keeps a PRNG key in the model's other state; numpy cannot hold one.
  key = jax.random.key(3)
  host = pipeline._on_host(key)
  assert jax.dtypes.issubdtype(host.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(host), jax.random.key_data(key))
  assert isinstance(pipeline._on_host(jax.numpy.ones(2)), np.ndarray)


def test_one_compiled_step_serves_a_structured_run(tmp_path, mnist_data_dir, caplog):
  # Each round's structured mask has the leaves of the first (every member of every group):
  # it is data, and dense training and both rounds run the step compiled first.
  config = from_recipe(RECIPES / 'lenet5.py', **TINY, **CHANNELS)
  with jax.log_compiles(True), caplog.at_level('WARNING'):
    pipeline.train_and_evaluate(config, tmp_path, data_dir=str(mnist_data_dir), progress=False)
  steps = [r for r in caplog.records if r.getMessage().startswith('Compiling jit(step)')]
  assert len(steps) == 1, [r.getMessage()[:120] for r in steps]


def test_taylor_scores_units_from_the_gradients_of_training_batches(
  structured_run, tmp_path, mnist_data_dir
):
  l1_config, _, l1, _ = structured_run
  config = dataclasses.replace(l1_config, structured_criterion='taylor', structured_grad_batches=2)
  result = pipeline.train_and_evaluate(
    config, tmp_path, data_dir=str(mnist_data_dir), progress=False
  )
  pruned = [r for r in result['records'] if r['event'] == 'pruned']
  for record in pruned:  # the same counts as any criterion
    r = record['round']
    assert record['groups'] == {
      name: {'kept': KEPT[r][name], 'total': size} for name, size in SIZES.items()
    }

  # The same dense network (same seed and data), other units: the gradients decided.
  def dense_end(records):
    (end,) = [r for r in records if r['round'] == 0 and r['event'] == 'round_end']
    return {k: v for k, v in end.items() if k not in ('time', 'wall_time_s')}

  assert dense_end(result['records']) == dense_end(l1['records'])
  assert load_plan(tmp_path / 'pruned') != load_plan(structured_run[1] / 'pruned')
  assert _zero_units(_params(tmp_path, 2)) == {
    layer: set(range(size))
    - set(load_plan(tmp_path / 'pruned')['groups'][f'{layer}/kernel:{axis}']['kept'])
    for layer, size, axis in (('conv1', 20, 3), ('conv2', 50, 3), ('fc1', 500, 1))
  }


def test_han_pruning_on_top_of_the_smaller_model_and_its_sparse_export(structured_run, tmp_path):
  # Both kinds: the structured run's pruned/ folder is the dense network of an
  # unstructured run, which prunes the smaller model's single weights; the export
  # rebuilds the smaller widths from the file alone.

  _, structured_dir, structured_result, data_dir = structured_run
  density = {'conv1': 0.8, 'conv2': 0.5, 'fc1': 0.2, 'fc2': 0.5}
  config = from_recipe(
    RECIPES / 'lenet5.py',
    **{**TINY, 'rounds': 1, 'dense_epochs': 0},
    dense_checkpoint=str(structured_dir / 'pruned'),
    density=density,
  )
  workdir = tmp_path / 'both'
  result = pipeline.train_and_evaluate(config, workdir, data_dir=data_dir, progress=False)
  # Round 0 is the structured run's last network, unchanged: the same test error.
  (start,) = [r for r in result['records'] if r['round'] == 0 and r['event'] == 'round_end']
  last = structured_result['records'][-1]
  assert (last['round'], last['event']) == (2, 'round_end')
  assert start['test_error'] == last['test_error']
  assert start['total'] == 250 + 6250 + 100_000 + 2500  # the smaller model's kernels
  (pruned,) = [r for r in result['records'] if r['event'] == 'pruned']
  sizes = {'conv1': 250, 'conv2': 6250, 'fc1': 100_000, 'fc2': 2500}
  assert pruned['layers'] == {
    name: {'kept': size - round((1 - density[name]) * size), 'total': size}
    for name, size in sizes.items()
  }
  out = tmp_path / 'both.jpsparse'
  payload = export.export_run(workdir, out, data_dir=data_dir, latency_repeats=0)
  checks = [v for v in payload['verification'].values() if isinstance(v, dict)]
  assert checks and all(v['prediction_mismatches'] == 0 for v in checks)
  model, _ = export.load_exported(out)
  assert model.conv2.kernel.shape[-1] <= 25 and model.fc1.kernel.shape[0] <= 400
  # A plan of another model, or structured pruning on top, is refused before anything is written.
  for overrides, message in (
    ({'structure': 'channels', 'structured_sparsity': 0.5}, 'not supported'),
    ({'model': 'lenet300', 'density': {'fc1': 0.5}}, "holds a smaller 'lenet5'"),
  ):
    other = dataclasses.replace(config, **overrides)
    with pytest.raises(ValueError, match=message):
      pipeline.train_and_evaluate(other, tmp_path / 'refused', data_dir=data_dir, progress=False)
    assert not (tmp_path / 'refused').exists()


def test_an_option_a_resnet_run_keeps_its_stream_whole_and_ends_smaller(tmp_path):
  # Option A's zero-padded shortcuts fix the residual stream: the run prunes only the
  # blocks' inner groups, says so in its records, and its final removal succeeds.
  config = from_recipe(
    RECIPES / 'resnet20.py',
    dataset='synthetic',
    validation_size=0,
    train_subset=64,
    test_subset=32,
    batch_size=32,
    eval_batch_size=32,
    dense_epochs=1,
    rounds=1,
    retrain_epochs=1,
    **CHANNELS,
  )
  result = pipeline.train_and_evaluate(config, tmp_path, progress=False)
  (pruned,) = [r for r in result['records'] if r['event'] == 'pruned']
  assert pruned['kept_whole'] == [
    'conv1/kernel:3',
    'stage2/0/conv2/kernel:3@16',
    'stage3/0/conv2/kernel:3@32',
  ]
  assert sorted(pruned['groups']) == sorted(
    f'stage{s}/{b}/conv1/kernel:3' for s in (1, 2, 3) for b in (0, 1, 2)
  )
  widths = load_plan(tmp_path / 'pruned')['groups']
  assert widths['stage3/2/conv1/kernel:3']['width'] == 32
  assert result['records'][-1]['macs_ratio'] == pytest.approx(1.978, abs=1e-3)
