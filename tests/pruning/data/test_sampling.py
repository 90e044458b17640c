"""Tests for the example arithmetic every dataset shares: carving, epoch order, batches, shards."""

from __future__ import annotations

import numpy as np
import pytest

from pruning.data import sampling

# Validation split and subsets.


def test_validation_indices_are_seeded_disjoint_complete_and_sorted():
  train, validation = sampling.validation_indices(60_000, 5_000, seed=0)
  assert len(train) == 55_000 and len(validation) == 5_000
  assert train.dtype == validation.dtype == np.int64
  np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.arange(60_000))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(validation) > 0)
  expected = np.sort(np.random.default_rng(0).permutation(60_000)[:5_000])
  np.testing.assert_array_equal(validation, expected)
  again = sampling.validation_indices(60_000, 5_000, seed=0)[1]
  other = sampling.validation_indices(60_000, 5_000, seed=1)[1]
  np.testing.assert_array_equal(again, validation)
  assert not np.array_equal(other, validation)


@pytest.mark.parametrize('size', [0, 10, -1])
def test_validation_indices_reject_bad_size(size):
  with pytest.raises(ValueError, match=f'validation size must be in \\(0, 10\\), got {size}'):
    sampling.validation_indices(10, size, seed=0)


def test_subset_indices_first_or_seeded_random():
  np.testing.assert_array_equal(sampling.subset_indices(100, 7, seed=None), np.arange(7))
  chosen = sampling.subset_indices(100, 7, seed=3)
  np.testing.assert_array_equal(chosen, np.sort(np.random.default_rng(3).permutation(100)[:7]))
  assert not np.array_equal(chosen, sampling.subset_indices(100, 7, seed=4))
  for seed in (None, 3):
    np.testing.assert_array_equal(sampling.subset_indices(5, 9, seed=seed), np.arange(5))


@pytest.mark.parametrize('random_subsets', [False, True])
def test_carve_takes_validation_before_the_training_subset(random_subsets):
  splits = sampling.carve(
    1_000,
    300,
    seed=2,
    validation_size=100,
    train_subset=50,
    test_subset=20,
    random_subsets=random_subsets,
  )
  left, validation = sampling.validation_indices(1_000, 100, seed=2)
  np.testing.assert_array_equal(splits.validation, validation)
  assert len(splits.train) == 50 and set(splits.train.tolist()) <= set(left.tolist())
  train_seed, test_seed = (2, 0) if random_subsets else (None, None)
  np.testing.assert_array_equal(
    splits.train, left[sampling.subset_indices(900, 50, seed=train_seed)]
  )
  np.testing.assert_array_equal(splits.test, sampling.subset_indices(300, 20, seed=test_seed))


def test_carve_without_options_keeps_everything():
  splits = sampling.carve(10, 4, seed=0, validation_size=0, train_subset=None, test_subset=0)
  np.testing.assert_array_equal(splits.train, np.arange(10))
  np.testing.assert_array_equal(splits.test, np.arange(4))
  assert splits.validation is None


def test_random_test_subset_is_the_same_for_every_seed():
  tests = [
    sampling.carve(10, 300, seed=s, test_subset=20, random_subsets=True).test for s in (0, 5)
  ]
  np.testing.assert_array_equal(*tests)


# Epoch order, batches and shards.


def test_epoch_order_is_a_function_of_stream_seed_and_epoch():
  order = sampling.epoch_order(50, seed=3, epoch=2)
  np.testing.assert_array_equal(order, np.random.default_rng((3, 2)).permutation(50))
  np.testing.assert_array_equal(order, sampling.epoch_order(50, seed=3, epoch=2))
  grain = sampling.epoch_order(50, seed=3, epoch=2, stream=(0,))
  np.testing.assert_array_equal(grain, np.random.default_rng([0, 3, 2]).permutation(50))
  others = [
    sampling.epoch_order(50, seed=3, epoch=3),
    sampling.epoch_order(50, seed=4, epoch=2),
    grain,
  ]
  assert all(not np.array_equal(order, other) for other in others)


@pytest.mark.parametrize('count', [64, 67])
def test_shards_of_a_global_batch_make_the_single_host_batch(count):
  for batch in range(3):
    single, single_valid = sampling.batch_positions(batch, batch_size=24, count=count)
    shards = [
      sampling.batch_positions(batch, batch_size=8, count=count, shard_index=i, shard_count=3)
      for i in range(3)
    ]
    np.testing.assert_array_equal(np.concatenate([p for p, _ in shards]), single)
    np.testing.assert_array_equal(np.concatenate([v for _, v in shards]), single_valid)
    assert all(len(v) == 8 for _, v in shards)


def test_batch_positions_mark_the_padding():
  positions, valid = sampling.batch_positions(2, batch_size=4, count=10)
  assert positions.tolist() == [8, 9] and valid.tolist() == [True, True, False, False]
  positions, valid = sampling.batch_positions(
    1, batch_size=2, count=5, shard_index=1, shard_count=2
  )
  assert positions.tolist() == [] and valid.tolist() == [False, False]


def test_num_batches():
  assert sampling.num_batches(10, 3, drop_remainder=True) == 3
  assert sampling.num_batches(10, 3, drop_remainder=False) == 4
  assert sampling.num_batches(9, 3, drop_remainder=False) == 3


@pytest.mark.parametrize(
  ('batch_size', 'shards', 'match'),
  [
    (10, 3, 'batch_size 10 is not divisible by the 3 hosts'),
    (0, 1, 'batch_size must be positive, got 0'),
  ],
)
def test_shard_batch_size_rejects_uneven_shares(batch_size, shards, match):
  with pytest.raises(ValueError, match=match):
    sampling.shard_batch_size(batch_size, shards)


# Batches of in-memory arrays.


def _index_coded(count: int) -> tuple[np.ndarray, np.ndarray]:
  return (np.arange(count) % 256).astype(np.uint8).reshape(count, 1, 1, 1), np.arange(count)


def test_array_batches_cover_the_epoch_order_once():
  images, labels = _index_coded(1_000)
  got = list(sampling.array_batches(images, labels, 100, seed=3, epoch=7))
  assert len(got) == 10
  seen = np.concatenate([y for _, y in got])
  np.testing.assert_array_equal(seen, sampling.epoch_order(1_000, seed=3, epoch=7))
  x, y = got[0]
  assert x.dtype == np.float32 and y.dtype == np.int32
  np.testing.assert_array_equal(x, images[y].astype(np.float32) / 255)


def test_array_batches_unshuffled_keep_order():
  images, labels = _index_coded(10)
  x, y = next(sampling.array_batches(images, labels, 4, seed=0, epoch=0, shuffle=False))
  np.testing.assert_array_equal(y, labels[:4])
  np.testing.assert_array_equal(x, images[:4].astype(np.float32) / 255)


@pytest.mark.parametrize(('drop_remainder', 'sizes'), [(True, [3, 3, 3]), (False, [3, 3, 3, 1])])
def test_array_batches_drop_remainder(drop_remainder, sizes):
  images = np.zeros((10, 28, 28, 1), np.uint8)
  labels = np.arange(10)
  got = list(
    sampling.array_batches(images, labels, 3, seed=0, epoch=0, drop_remainder=drop_remainder)
  )
  assert [len(y) for _, y in got] == sizes
  assert [x.shape for x, _ in got] == [(n, 28, 28, 1) for n in sizes]
  if not drop_remainder:
    assert sorted(np.concatenate([y for _, y in got]).tolist()) == list(range(10))


def test_array_batches_shards_make_the_single_host_batches():
  images, labels = _index_coded(100)
  single = list(sampling.array_batches(images, labels, 16, seed=1, epoch=2))
  shards = [
    list(sampling.array_batches(images, labels, 16, seed=1, epoch=2, shard_index=i, shard_count=2))
    for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == len(single) == 6
  for k, (x, y) in enumerate(single):
    np.testing.assert_array_equal(np.concatenate([s[k][1] for s in shards]), y)
    np.testing.assert_array_equal(np.concatenate([s[k][0] for s in shards]), x)


def test_array_batches_reject_bad_arguments():
  images, labels = np.zeros((4, 28, 28, 1), np.uint8), np.zeros(3, np.int32)
  with pytest.raises(ValueError, match='4 images but 3 labels'):
    next(sampling.array_batches(images, labels, 2, seed=0, epoch=0))
  with pytest.raises(ValueError, match='batch_size must be positive, got 0'):
    next(sampling.array_batches(images, labels[:1].repeat(4), 0, seed=0, epoch=0))
  with pytest.raises(ValueError, match='batch_size 3 is not divisible by the 2 hosts'):
    next(sampling.array_batches(images[:3], labels, 3, seed=0, epoch=0, shard_count=2))
