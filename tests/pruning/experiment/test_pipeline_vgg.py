"""The pipeline on a tiny-width VGG-16-CIFAR: batch norm, dropout, alternating rounds, resume.

A handful of real CIFAR-10 images (the offline JPEG copy, prepared once per
session by the ``cifar10_data_dir`` fixture): these tests check the
mechanics (exact zeros, masks, §3.2 rates, checkpoints), not accuracy.
"""

from __future__ import annotations

import math
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pruning.data import datasets
from pruning.experiment import parallel, pipeline
from pruning.experiment.config import from_recipe

RECIPES = pathlib.Path(__file__).resolve().parents[3] / 'scripts' / 'configs'

TINY = {
  'width': 1 / 16,
  'batch_norm': True,
  'batch_size': 32,
  'eval_batch_size': 48,
  'dense_epochs': 1,
  'rounds': 2,
  'retrain_epochs': 1,
  'train_subset': 128,
  'test_subset': 40,
}


def _standin(shape, train=128, test=40, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (train + test, *shape), dtype=np.uint8)
  labels = rng.integers(0, 10, train + test).astype(np.int32)

  def open_standin(options):
    return datasets.array_input(
      (images[:train], labels[:train]), (images[train:], labels[train:]), options
    )

  return open_standin


@pytest.fixture
def standin_mnist(monkeypatch):
  monkeypatch.setitem(datasets.DATASETS, 'mnist', _standin((28, 28, 1)))


def _run(workdir, data_dir, **overrides):
  config = from_recipe(RECIPES / 'vgg16_cifar.py', **{**TINY, **overrides})
  return pipeline.train_and_evaluate(config, workdir, data_dir=data_dir, progress=False)


@pytest.fixture(scope='module')
def fetched():
  """``(dtype, shape)`` of every array the reference run fetched from the devices."""
  return []


@pytest.fixture(scope='module')
def reference(cifar10_data_dir, tmp_path_factory, fetched):
  workdir = tmp_path_factory.mktemp('reference')
  fetch = parallel.fetch

  def counting_fetch(x):
    fetched.append((np.dtype(x.dtype), np.shape(x)))
    return fetch(x)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(parallel, 'fetch', counting_fetch)
    return workdir, _run(workdir, cifar10_data_dir)


def _strip_times(records):
  # Times differ between runs, and so do the start records (a resumed run has two).
  return [
    {k: v for k, v in r.items() if k not in ('time', 'wall_time_s')}
    for r in records
    if r['event'] != 'start'
  ]


def _host(leaf):
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf)


def _named(tree):
  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): _host(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_tiny_vgg_prunes_fc_then_conv_with_exact_zeros_and_adjusted_dropout(reference):
  workdir, result = reference
  records = result['records']
  pruned = [r for r in records if r['event'] == 'pruned']
  assert [r['group'] for r in pruned] == ['fc', 'conv']
  layers = result['mask_stats'].layers
  for name, density in from_recipe(RECIPES / 'vgg16_cifar.py').density.items():
    total = layers[f'{name}/kernel'].total
    assert layers[f'{name}/kernel'].kept == total - round((1 - density) * total), name
  # §3.2: D_r = 0.5 sqrt(C_r / C_o) of the layer each dropout follows, set
  # when the FC layers are pruned and unchanged by the CONV round.
  fc6, fc7 = layers['fc6/kernel'], layers['fc7/kernel']
  expected = {'dropout6': 0.5 * math.sqrt(fc6.density), 'dropout7': 0.5 * math.sqrt(fc7.density)}
  for record in pruned:
    assert record['dropout_rates'] == pytest.approx(expected)

  with ocp.CheckpointManager((workdir / 'checkpoints').absolute()) as manager:
    assert manager.all_steps() == [0, 1, 2]
    restored = manager.restore(2, args=ocp.args.StandardRestore())
  kernels = {k: v for k, v in _named(restored['params']).items() if 'kernel' in k}
  stats = result['mask_stats'].overall
  assert sum(int((v == 0).sum()) for v in kernels.values()) == stats.total - stats.kept
  # Batch-norm statistics trained and were saved with the round.
  assert not np.allclose(_named(restored['rest'])['bn1_1/mean/value'], 0.0)
  assert [layer for layer in result['layer_costs']][-3:] == ['fc6', 'fc7', 'fc8']


def test_the_mask_is_fetched_once_per_round_with_dropout_and_alternation(reference, fetched):
  # Dropout re-derived from the mask (§3.2) and frozen groups (§3.3) read the loop's
  # host mask: one fetch when the run starts and one of each round's new mask.
  _, result = reference
  mask_leaves = len(jax.tree.leaves(result['mask']))
  assert mask_leaves == 16  # 13 conv and 3 fc kernels
  rounds = TINY['rounds']
  assert sum(dtype == np.bool_ for dtype, _ in fetched) <= (rounds + 1) * mask_leaves
  assert fetched.count((np.dtype(np.float32), (3, 3, 3, 4))) == rounds  # conv1_1's kernel


def test_resumed_vgg_run_matches_the_uninterrupted_one(reference, cifar10_data_dir, tmp_path):
  _, expected = reference

  def interrupt(round_index, epoch):
    if round_index == 2:
      raise KeyboardInterrupt('simulated kill during round 2')

  config = from_recipe(RECIPES / 'vgg16_cifar.py', **TINY)
  run = {'data_dir': cifar10_data_dir, 'progress': False}
  with pytest.raises(KeyboardInterrupt):
    pipeline.train_and_evaluate(config, tmp_path, on_epoch_end=interrupt, **run)
  resumed = pipeline.train_and_evaluate(config, tmp_path, resume=True, **run)
  assert _strip_times(resumed['records']) == _strip_times(expected['records'])
  got, want = _named(resumed['params']), _named(expected['params'])
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_run_killed_mid_round_resumes_after_its_last_epoch(cifar10_data_dir, tmp_path):
  overrides = {**TINY, 'rounds': 1, 'retrain_epochs': 2, 'alternate': False}
  config = from_recipe(RECIPES / 'vgg16_cifar.py', **overrides)
  run = {'data_dir': cifar10_data_dir, 'progress': False, 'checkpoint_epochs': True}
  expected = pipeline.train_and_evaluate(config, tmp_path / 'whole', **run)

  def interrupt(round_index, epoch):
    if (round_index, epoch) == (1, 0):
      raise KeyboardInterrupt('simulated kill after the first epoch of round 1')

  workdir = tmp_path / 'killed'
  with pytest.raises(KeyboardInterrupt):
    pipeline.train_and_evaluate(config, workdir, on_epoch_end=interrupt, **run)
  assert (workdir / 'epoch_checkpoint').is_dir()
  trained = []
  resumed = pipeline.train_and_evaluate(
    config, workdir, resume=True, on_epoch_end=lambda *epoch: trained.append(epoch), **run
  )
  assert trained == [(1, 1)]  # only the epoch the kill cut off
  assert _strip_times(resumed['records']) == _strip_times(expected['records'])
  got, want = _named(resumed['params']), _named(expected['params'])
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  assert not (workdir / 'epoch_checkpoint').exists()


def test_dense_checkpoint_replaces_dense_training(reference, cifar10_data_dir, tmp_path):
  workdir, expected = reference
  result = _run(
    tmp_path,
    cifar10_data_dir,
    dense_epochs=0,
    dense_checkpoint=str(workdir),
    rounds=1,
    alternate=False,
  )
  round0 = [r for r in result['records'] if r['round'] == 0]
  assert [r['event'] for r in round0] == ['start', 'round_end']
  assert round0[0]['data'].startswith('tfds cifar10_tarball/jpeg/')  # the archive read
  dense = next(r for r in expected['records'] if r['event'] == 'round_end')
  assert round0[1]['test_error'] == dense['test_error']
  assert [r['group'] for r in result['records'] if r['event'] == 'pruned'] == ['all']


def test_dense_checkpoint_of_another_model_names_the_param(reference, cifar10_data_dir, tmp_path):
  workdir, _ = reference
  with pytest.raises(ValueError, match=r"params the model lacks \['bn1_1/bias', 'bn1_1/scale'"):
    _run(
      tmp_path, cifar10_data_dir, batch_norm=False, dense_epochs=0, dense_checkpoint=str(workdir)
    )


def test_a_nan_loss_stops_the_run(standin_mnist, tmp_path):
  config = from_recipe(
    RECIPES / 'lenet300.py', learning_rate=1e30, batch_size=32, dense_epochs=1, rounds=0
  )
  with pytest.raises(FloatingPointError, match=r'training loss is (nan|inf) in round 0, epoch 0'):
    pipeline.train_and_evaluate(config, tmp_path, progress=False)


@pytest.mark.parametrize(
  ('model', 'overrides', 'message'),
  [
    ('vgg16_cifar', {'dataset': 'cifar100'}, "dataset is 'cifar100'"),
    ('lenet5', {'dataset': 'cifar10'}, "dataset 'cifar10' does not fit model 'lenet5'"),
    ('lenet300', {'width': 0.5}, "model 'lenet300' takes no option width"),
    ('vgg16_cifar', {'dtype': 'float16'}, "dtype is 'float16'"),
    ('vgg16_cifar', {'dense_epochs': 0}, 'dense_epochs is 0'),
    ('vgg16_cifar', {'model': 'vgg19'}, "model is 'vgg19'"),
    (
      'vgg16_cifar',
      {'density': {'fc9': 0.1}},
      r"density is given for \['fc9'\], which vgg16_cifar",
    ),
    ('vgg16_cifar', {'density': {'fc6': 1.5}}, r"density for 'fc6' is 1.5"),
    (
      'vgg16_cifar',
      {'criterion': 'quality', 'quality': {'conv1_1': -1.0}},
      "quality for 'conv1_1' is -1.0",
    ),
  ],
)
def test_config_errors_name_the_bad_value(model, overrides, message):
  with pytest.raises(ValueError, match=message):
    from_recipe(RECIPES / f'{model}.py', **overrides)


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'dropout': {'dropout8': 'fc8'}}, "dropout 'dropout8' is not an nnx.Dropout"),
    ({'rounds': 1}, 'alternate=True with rounds=1 would prune only the FC layers'),
  ],
)
def test_targets_that_do_not_fit_the_model_fail_before_any_work(overrides, message, tmp_path):
  config = from_recipe(RECIPES / 'vgg16_cifar.py', **{**TINY, **overrides})
  with pytest.raises(ValueError, match=message):
    pipeline.train_and_evaluate(config, tmp_path / 'run', progress=False)
  assert not (tmp_path / 'run').exists()
