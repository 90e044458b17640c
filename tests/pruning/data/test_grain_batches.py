"""Tests for the grain input pipeline: determinism, augmentation, sharding, evaluation padding."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pruning.data import augment, cifar10
from pruning.data.grain_batches import eval_batches, synthetic_batches, train_batches
from pruning.data.images import ImageSource, dataset_info


def _source(count: int = 50, name: str = 'cifar10') -> ImageSource:
  """Example ``i`` has label ``i`` and random pixels, so batches name their examples."""
  info = dataset_info(name)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (count, *info.image_shape), dtype=np.uint8)
  records = [{'image': images[i], 'label': i} for i in range(count)]
  return ImageSource(records, info)


def _normalized(source: ImageSource, images: np.ndarray) -> np.ndarray:
  return augment.normalize(images, np.array(source.info.mean), np.array(source.info.std))


# Training batches.


def test_train_batches_are_deterministic_by_seed_and_epoch():
  source = _source()

  def epoch(seed, number):
    return list(train_batches(source, batch_size=8, seed=seed, epoch=number))

  first, again = epoch(0, 0), epoch(0, 0)
  assert len(first) == 6
  for (x, y), (x2, y2) in zip(first, again, strict=True):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
  x, y = first[0]
  assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32
  assert y.shape == (8,) and y.dtype == np.int32
  assert not np.array_equal(y, epoch(0, 1)[0][1])
  assert not np.array_equal(y, epoch(1, 0)[0][1])


def test_different_epochs_augment_the_same_example_differently():
  source = _source(count=8)
  crops = []
  for number in range(4):
    ((x, y),) = train_batches(source, batch_size=8, seed=0, epoch=number)
    crops.append(x[np.argsort(y)])
  for a in range(4):
    for b in range(a + 1, 4):
      differ = [not np.array_equal(crops[a][i], crops[b][i]) for i in range(8)]
      assert sum(differ) >= 6  # 1 in 162 (offset pair, flip) draws repeats


def test_train_epoch_visits_each_example_at_most_once():
  source = _source(count=50)
  labels = np.concatenate([y for _, y in train_batches(source, batch_size=8, seed=3, epoch=2)])
  assert len(labels) == 48 and len(set(labels.tolist())) == 48
  order = np.random.default_rng([0, 3, 2]).permutation(50)
  np.testing.assert_array_equal(labels, order[:48])


def test_augmentation_follows_the_documented_draws():
  source = _source(count=20)
  raw = np.stack([r['image'] for r in source.records])
  batches = train_batches(source, batch_size=4, seed=5, epoch=1)
  for k in (0, 3):
    x, y = batches[k]
    uniforms = np.random.default_rng([1, 5, 1, k]).random((4, 3))
    expected = _normalized(source, augment.pad_crop_flip(raw[y], uniforms))
    np.testing.assert_array_equal(x, expected)


def test_no_augmentation_is_normalisation_only():
  source = _source(count=20)
  raw = np.stack([r['image'] for r in source.records])
  x, y = train_batches(source, batch_size=4, seed=0, epoch=0, augment=False)[2]
  np.testing.assert_array_equal(x, _normalized(source, raw[y]))
  u8, y8 = train_batches(source, batch_size=4, seed=0, epoch=0, augment=False, normalize=False)[2]
  assert u8.dtype == np.uint8
  np.testing.assert_array_equal(u8, raw[y8])


def test_resume_mid_epoch():
  source = _source()
  batches = train_batches(source, batch_size=8, seed=0, epoch=4)
  full = list(batches)
  resumed = list(batches.iter_from(4))
  assert len(resumed) == 2
  for (x, y), (x2, y2) in zip(full[4:], resumed, strict=True):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
  np.testing.assert_array_equal(batches[5][0], full[5][0])
  with pytest.raises(IndexError, match=r'batch 6 outside \[0, 6\)'):
    batches[6]


@pytest.mark.parametrize('count', [64, 67])
def test_two_shards_make_the_single_shard_global_batch(count):
  source = _source(count=count)
  single = train_batches(source, batch_size=8, seed=1, epoch=0)
  shards = [
    train_batches(source, batch_size=4, seed=1, epoch=0, shard_index=i, shard_count=2)
    for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == len(single) == count // 8
  for k in range(len(single)):
    x, y = single[k]
    np.testing.assert_array_equal(np.concatenate([s[k][1] for s in shards]), y)
    np.testing.assert_array_equal(np.concatenate([s[k][0] for s in shards]), x)


def test_worker_processes_give_the_same_batches():
  source = _source(count=40)
  in_process = list(train_batches(source, batch_size=8, seed=2, epoch=1))
  workers = list(train_batches(source, batch_size=8, seed=2, epoch=1, worker_count=2))
  assert len(workers) == 5
  for (x, y), (x2, y2) in zip(in_process, workers, strict=True):
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(x, x2)


# Evaluation batches.


@pytest.mark.parametrize(('count', 'shard_count'), [(10, 1), (23, 1), (23, 2), (24, 2)])
def test_eval_batches_cover_every_example_once(count, shard_count):
  source = _source(count=count, name='mnist')
  shards = [
    eval_batches(source, batch_size=4, shard_index=i, shard_count=shard_count)
    for i in range(shard_count)
  ]
  lengths = {len(s) for s in shards}
  assert lengths == {-(-count // (4 * shard_count))}
  seen = []
  for k in range(len(shards[0])):
    for shard in shards:
      x, y, valid = shard[k]
      assert x.shape == (4, 28, 28, 1) and valid.dtype == np.bool_
      seen.extend(y[valid].tolist())
      assert (x[~valid] == 0).all() and (y[~valid] == 0).all()
  assert seen == list(range(count))


def test_eval_batches_are_unaugmented_and_iterable():
  source = _source(count=10)
  raw = np.stack([r['image'] for r in source.records])
  batches = list(eval_batches(source, batch_size=4))
  assert [v.sum() for _, _, v in batches] == [4, 4, 2]
  x, y, _ = batches[2]
  np.testing.assert_array_equal(x[:2], _normalized(source, raw[8:10]))
  np.testing.assert_array_equal(y, [8, 9, 0, 0])


def test_eval_on_real_test_split(cifar10_data_dir):
  records = cifar10.cifar10_source('test', config='jpeg', data_dir=cifar10_data_dir, url=None)
  source = ImageSource(records, dataset_info('cifar10'))
  labels = []
  for _, y, valid in eval_batches(source, batch_size=768, worker_count=0):
    labels.append(y[valid])
  labels = np.concatenate(labels)
  assert len(labels) == 10_000
  assert np.bincount(labels, minlength=10).tolist() == [1_000] * 10


def test_real_source_in_worker_processes(cifar10_data_dir):
  records = cifar10.cifar10_source('train', config='jpeg', data_dir=cifar10_data_dir, url=None)
  source = ImageSource(records, dataset_info('cifar10')).subset(np.arange(0, 50_000, 390)[:128])
  batches = train_batches(source, batch_size=32, seed=0, epoch=0, worker_count=2)
  assert len(batches) == 4
  for k, (x, y) in enumerate(batches):
    x0, y0 = batches[k]
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(x, x0)


# Bad arguments.


@pytest.mark.parametrize(
  ('kwargs', 'match'),
  [
    ({'batch_size': 0}, 'batch_size must be positive, got 0'),
    ({'shard_index': 2, 'shard_count': 2}, 'shard_index must be in'),
    ({'worker_count': -1}, 'worker_count must be >= 0'),
    ({'image_size': 24}, r'cifar10 images are \(32, 32\); image_size=24'),
    ({'augment': 'mixup'}, "unknown augmentation 'mixup'"),
    ({'augment': 'random_resized_crop'}, "'random_resized_crop' is for variable-size images"),
    ({'batch_size': 64}, 'make no full global batch of 64 x 1'),
  ],
)
def test_train_batches_reject_bad_arguments(kwargs, match):
  arguments = {'batch_size': 4, 'seed': 0, 'epoch': 0, **kwargs}
  with pytest.raises(ValueError, match=match):
    train_batches(_source(count=50), **arguments)


def test_batches_need_an_image_source():
  with pytest.raises(TypeError, match='source must be an ImageSource'):
    eval_batches([{'image': np.zeros((32, 32, 3)), 'label': 0}], batch_size=1)


# Synthetic batches.


def test_synthetic_batches_reuse_one_batch():
  batches = synthetic_batches(
    batch_size=4, image_shape=(224, 224, 3), num_classes=1000, seed=0, steps=3
  )
  got = list(batches)
  assert len(batches) == len(got) == 3
  (x, y), (x2, y2) = got[0], got[2]
  assert x is x2 and y is y2
  assert x.shape == (4, 224, 224, 3) and x.dtype == np.float32
  assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 1000
  again = next(
    iter(
      synthetic_batches(batch_size=4, image_shape=(224, 224, 3), num_classes=1000, seed=0, steps=1)
    )
  )
  np.testing.assert_array_equal(again[0], x)


def test_synthetic_batches_on_device():
  mesh = jax.make_mesh((1,), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  batches = synthetic_batches(
    batch_size=8, image_shape=(32, 32, 3), num_classes=10, seed=0, steps=2, sharding=sharding
  )
  (x, y), (x2, _) = list(batches)
  assert isinstance(x, jax.Array) and x is x2
  assert x.sharding == sharding and y.sharding == sharding


def test_synthetic_batches_reject_bad_arguments():
  with pytest.raises(ValueError, match='num_classes=0'):
    synthetic_batches(batch_size=1, image_shape=(2, 2, 1), num_classes=0, seed=0, steps=1)
