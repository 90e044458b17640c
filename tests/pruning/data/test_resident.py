"""The device-resident input: the grain pipeline's batches, bit for bit, made on the device."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from pruning.data import datasets, resident
from pruning.data.grain_batches import eval_batches, train_batches
from pruning.data.images import ImageSource, dataset_info
from pruning.experiment import parallel


class _Records(list):
  """In-memory records that, like a tfds data source, name their split."""

  split = 'train'


def _source(count: int = 50, *, provenance: str | None = None, name: str = 'cifar10'):
  """Example ``i`` has label ``i % 10`` and random pixels."""
  info = dataset_info(name)
  rng = np.random.default_rng(count)
  images = rng.integers(0, 256, (count, *info.image_shape), dtype=np.uint8)
  records = _Records({'image': images[i], 'label': i % 10} for i in range(count))
  return ImageSource(records, info, provenance=provenance)


def _mesh():
  return parallel.data_mesh(jax.devices()[:1])


def _input(train, evaluation, *, batch_size=8, eval_batch_size=6, seed=3, augment=True):
  return resident.resident_input(
    train,
    evaluation,
    mesh=_mesh(),
    batch_size=batch_size,
    eval_batch_size=eval_batch_size,
    seed=seed,
    augment=augment,
  )


@pytest.mark.parametrize('augment', [True, False])
def test_train_batches_are_the_grain_pipelines_bit_for_bit(augment):
  source = _source(50)
  data = _input(source, {}, augment=augment)
  assert data.steps_per_epoch() == 6  # 50 // 8, the remainder dropped
  for epoch in (0, 1, 4):
    expected = list(
      train_batches(source, batch_size=8, seed=3, epoch=epoch, augment=augment, image_size=32)
    )
    got = [tuple(np.asarray(a) for a in batch) for batch in data.train_epoch(epoch)]
    assert len(got) == len(expected) == 6
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
      assert x.dtype == ex.dtype == np.float32 and y.dtype == ey.dtype == np.int32
      np.testing.assert_array_equal(x, ex)
      np.testing.assert_array_equal(y, ey)


def test_epochs_and_seeds_give_different_batches():
  source = _source(50)
  first = np.asarray(next(_input(source, {}).train_epoch(0))[0])
  assert not np.array_equal(first, np.asarray(next(_input(source, {}).train_epoch(1))[0]))
  assert not np.array_equal(first, np.asarray(next(_input(source, {}, seed=4).train_epoch(0))[0]))
  np.testing.assert_array_equal(first, np.asarray(next(_input(source, {}).train_epoch(0))[0]))


def test_evaluation_batches_are_the_grain_pipelines_with_padding_zeroed():
  test = _source(20)
  data = _input(_source(50), {'test': test, 'validation': _source(7)})
  assert data.splits == ('test', 'validation')
  for split, source in (('test', test), ('validation', _source(7))):
    expected = list(eval_batches(source, batch_size=6, image_size=32))
    got = [tuple(np.asarray(a) for a in batch) for batch in data.evaluation(split)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
      for a, b in zip(g, e, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
  *_, (x, y, valid) = data.evaluation('test')  # 20 = 6 + 6 + 6 + 2
  assert np.asarray(valid).tolist() == [True, True] + [False] * 4
  assert not np.asarray(x)[2:].any() and not np.asarray(y)[2:].any()


def test_batches_are_global_arrays_sharded_over_the_mesh():
  data = _input(_source(50), {'test': _source(20)})
  x, y = next(data.train_epoch(0))
  spec = jax.sharding.PartitionSpec('data')
  assert x.shape == (8, 32, 32, 3) and x.sharding.spec == spec and y.sharding.spec == spec
  # parallel.global_batch passes them through untouched.
  assert all(a is b for a, b in zip(parallel.global_batch(_mesh(), x, y), (x, y), strict=True))
  x, y, valid = next(data.evaluation('test'))
  assert valid.sharding.spec == spec


def test_open_input_holds_cifar10_on_the_device_and_open_image_dataset_reads_it_by_grain(
  cifar10_data_dir, shared_cifar10
):
  options = datasets.InputOptions(
    batch_size=32,
    eval_batch_size=40,
    seed=2,
    validation_size=100,
    train_subset=96,
    test_subset=80,
    data_dir=str(cifar10_data_dir),
    raw_dir=str(shared_cifar10),
  )
  device = datasets.open_input('cifar10', options)
  grain = datasets.open_image_dataset('cifar10', options)
  assert isinstance(device, resident.ResidentInput)
  assert device.splits == grain.splits == ('validation', 'test')
  assert device.steps_per_epoch() == grain.steps_per_epoch() == 3
  for got, expected in zip(device.train_epoch(1), grain.train_epoch(1), strict=True):
    for a, b in zip(got, expected, strict=True):
      np.testing.assert_array_equal(np.asarray(a), b)
  for split in grain.splits:
    for got, expected in zip(device.evaluation(split), grain.evaluation(split), strict=True):
      for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_decoded_split_is_read_once_per_split_and_subsets_index_it(monkeypatch):
  source = _source(30, provenance='tfds test/1.0.0')
  reads = []
  read_all = resident._read_all
  monkeypatch.setattr(resident, '_read_all', lambda s: reads.append(s) or read_all(s))
  monkeypatch.setattr(resident, '_DECODED', type(resident._DECODED)())
  images, labels = resident.decoded_split(source)
  assert images.shape == (30, 32, 32, 3) and labels.tolist() == [i % 10 for i in range(30)]
  assert not images.flags.writeable
  sub_images, sub_labels = resident.decoded_split(source.subset([4, 2, 29]))
  assert len(reads) == 1  # the subset came from the kept split
  np.testing.assert_array_equal(sub_images, images[[4, 2, 29]])
  assert sub_labels.tolist() == [4, 2, 9]
  other = _source(30, provenance='tfds test/1.0.0')
  other.records.split = 'test'  # another split of the same dataset is read on its own
  resident.decoded_split(other)
  assert len(reads) == 2
  resident.decoded_split(_source(30))  # no provenance: never kept
  resident.decoded_split(_source(30))
  assert len(reads) == 4


def test_errors_name_what_does_not_fit():
  with pytest.raises(ValueError, match='imagenet2012 has images of varying size'):
    _input(_source(4, name='imagenet2012'), {})
  mnist = _source(4, name='mnist')
  with pytest.raises(ValueError, match="mnist augments by 'none'"):
    _input(mnist, {})
  odd = _source(3)
  odd.records[1] = {'image': np.zeros((30, 32, 3), np.uint8), 'label': 1}
  with pytest.raises(ValueError, match=r'cifar10 example 1 has shape \(30, 32, 3\)'):
    _input(odd, {})
  with pytest.raises(ValueError, match=r"split is 'validation'; this run evaluates on \['test'\]"):
    next(_input(_source(10), {'test': _source(5)}).evaluation('validation'))
  mesh_2d = jax.make_mesh((1, 1), ('data', 'model'))
  with pytest.raises(ValueError, match=r"mesh has axes \('data', 'model'\)"):
    resident.resident_input(
      _source(10), {}, mesh=mesh_2d, batch_size=2, eval_batch_size=2, seed=0, augment=True
    )


def test_without_augmentation_the_crop_is_the_centre():
  source = _source(16)
  data = _input(source, {}, augment=False)
  x, y = (np.asarray(a) for a in next(data.train_epoch(0)))
  order = np.random.default_rng([0, 3, 0]).permutation(16)[:8]  # ORDER_STREAM, seed, epoch
  plain = dataclasses.replace(data, augment=False)
  assert np.array_equal(np.asarray(next(plain.train_epoch(0))[0]), x)
  info = source.info
  expected = (np.stack([source.records[i]['image'] for i in order]) / 255 - info.mean) / info.std
  np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
  assert y.tolist() == [i % 10 for i in order]
