"""Tests for the inputs a run opens: options, in-memory arrays, shards, evaluation padding."""

from __future__ import annotations

import numpy as np
import pytest

from pruning.data import datasets, images, sampling


def _index_coded(count: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel ``i % 256`` and label ``i``: a batch names its examples."""
  return (np.arange(count) % 256).astype(np.uint8).reshape(count, 1, 1, 1), np.arange(count)


def _options(**overrides) -> datasets.InputOptions:
  return datasets.InputOptions(**{'batch_size': 8, 'eval_batch_size': 6, 'seed': 0, **overrides})


@pytest.mark.parametrize(
  ('overrides', 'match'),
  [
    ({'shard_count': 3}, 'batch_size 8 is not divisible by the 3 hosts'),
    ({'eval_batch_size': 5, 'shard_count': 2}, 'eval_batch_size 5 is not divisible by the 2'),
    ({'shard_index': 2, 'shard_count': 2}, r'shard_index must be in \[0, shard_count\)'),
  ],
)
def test_options_reject_batches_the_hosts_cannot_share(overrides, match):
  with pytest.raises(ValueError, match=match):
    _options(**overrides)


def test_array_input_shards_make_the_single_host_batches():
  train, test = _index_coded(50), _index_coded(17)
  options = {'validation_size': 9, 'train_subset': 33}
  single = datasets.array_input(train, test, _options(**options))
  shards = [
    datasets.array_input(train, test, _options(**options, shard_index=i, shard_count=2))
    for i in range(2)
  ]
  assert single.splits == ('validation', 'test')
  assert single.steps_per_epoch() == shards[1].steps_per_epoch() == 4
  for epoch in (0, 1):
    whole = list(single.train_epoch(epoch))
    parts = [list(shard.train_epoch(epoch)) for shard in shards]
    for k, (x, y) in enumerate(whole):
      np.testing.assert_array_equal(np.concatenate([p[k][1] for p in parts]), y)
      np.testing.assert_array_equal(np.concatenate([p[k][0] for p in parts]), x)
  for split in single.splits:
    whole = list(single.evaluation(split))
    parts = [list(shard.evaluation(split)) for shard in shards]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for k, batch in enumerate(whole):
      for i in range(3):
        np.testing.assert_array_equal(np.concatenate([p[k][i] for p in parts]), batch[i])


def _shift_of(original: np.ndarray, shifted: np.ndarray) -> tuple[int, int] | None:
  """The ``(rows, columns)`` ``shifted`` is ``original`` moved by (zeros come in), if any."""
  height, width = original.shape[:2]
  padded = np.pad(original, ((2, 2), (2, 2), (0, 0)))
  for row in range(5):
    for col in range(5):
      if (padded[row : row + height, col : col + width] == shifted).all():
        return 2 - row, 2 - col
  return None


def test_augmented_array_input_shifts_each_training_image_and_never_evaluation():
  rng = np.random.default_rng(0)
  train = rng.integers(1, 256, (400, 6, 6, 1), dtype=np.uint8), np.arange(400)
  test = rng.integers(1, 256, (10, 6, 6, 1), dtype=np.uint8), np.arange(10)
  plain = datasets.array_input(train, test, _options(validation_size=8))
  shifted = datasets.array_input(train, test, _options(validation_size=8, augment=True))
  shards = [
    datasets.array_input(
      train, test, _options(validation_size=8, augment=True, shard_index=i, shard_count=2)
    )
    for i in range(2)
  ]
  epochs = []
  for epoch in (0, 1):
    pairs = list(zip(plain.train_epoch(epoch), shifted.train_epoch(epoch), strict=True))
    assert len(pairs) == 49
    shifts = []
    for (x, y), (x_aug, y_aug) in pairs:
      np.testing.assert_array_equal(y_aug, y)
      assert x_aug.dtype == np.float32 and x_aug.shape == x.shape
      shifts += [_shift_of(a, b) for a, b in zip(x, x_aug, strict=True)]
    assert None not in shifts
    # Every shift of up to 2 pixels each way occurs; none is larger.
    assert set(shifts) == {(r, c) for r in range(-2, 3) for c in range(-2, 3)}
    epochs.append(shifts)
    # The same batches on a second pass (a resumed run) and from the two processes together.
    again = list(shifted.train_epoch(epoch))
    parts = [list(shard.train_epoch(epoch)) for shard in shards]
    for k, (x_aug, y_aug) in enumerate(b for _, b in pairs):
      np.testing.assert_array_equal(again[k][0], x_aug)
      np.testing.assert_array_equal(np.concatenate([p[k][0] for p in parts]), x_aug)
      np.testing.assert_array_equal(np.concatenate([p[k][1] for p in parts]), y_aug)
  assert epochs[0] != epochs[1]
  for split in plain.splits:
    for a, b in zip(plain.evaluation(split), shifted.evaluation(split), strict=True):
      for part_a, part_b in zip(a, b, strict=True):
        np.testing.assert_array_equal(part_a, part_b)


def test_array_input_evaluation_is_padded_and_marked():
  data = datasets.array_input(_index_coded(20), _index_coded(10), _options(eval_batch_size=4))
  batches = list(data.evaluation('test'))
  assert [valid.tolist() for _, _, valid in batches][-1] == [True, True, False, False]
  x, y, _ = batches[-1]
  assert x.shape == (4, 1, 1, 1) and y.tolist() == [8, 9, 0, 0] and not x[2:].any()
  seen = np.concatenate([y[valid] for _, y, valid in batches])
  np.testing.assert_array_equal(seen, np.arange(10))


def test_array_input_takes_the_first_examples_after_validation():
  train, test = _index_coded(100), _index_coded(30)
  data = datasets.array_input(
    train, test, _options(validation_size=10, train_subset=20, test_subset=5)
  )
  left, validation = sampling.validation_indices(100, 10, seed=0)
  np.testing.assert_array_equal(data.evaluation_data['validation'][1], validation)
  np.testing.assert_array_equal(data.train[1], left[:20])
  np.testing.assert_array_equal(data.evaluation_data['test'][1], np.arange(5))


def test_arrays_and_sources_carve_the_same_validation_examples():
  # MNIST in memory and an image source: one rule for the validation split.
  records = [{'image': np.zeros((28, 28, 1), np.uint8), 'label': i} for i in range(100)]
  source = images.ImageSource(records, images.dataset_info('mnist'))
  _, validation = images.validation_split(source, 10, seed=4)
  labels = [r['label'] for r in validation.read(range(10))]
  data = datasets.array_input(
    _index_coded(100), _index_coded(5), _options(seed=4, validation_size=10)
  )
  assert data.evaluation_data['validation'][1].tolist() == labels


def test_array_input_rejects_mismatched_arrays():
  images_, labels = _index_coded(10)
  with pytest.raises(ValueError, match='test: 10 images but 9 labels'):
    datasets.array_input((images_, labels), (images_, labels[:9]), _options())


def test_unknown_split_names_the_splits():
  data = datasets.array_input(_index_coded(20), _index_coded(10), _options())
  with pytest.raises(ValueError, match=r"split is 'validation'; this run evaluates on \['test'\]"):
    next(data.evaluation('validation'))
