"""Tests for the dataset interface: info, sources, validation split, and the ImageNet code path.

ImageNet itself is not available to tests. ``fake_imagenet`` writes a tiny
``imagenet2012`` dataset with tfds's own ``imagenet2012`` builder class (same
name, version and features: JPEG ``Image``, 1000-class label, file name),
only its examples replaced, so a user's prepared ImageNet is read through
exactly the code tested here.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder

from pruning.data import imagenet
from pruning.data.grain_batches import eval_batches, train_batches
from pruning.data.images import (
  ImageSource,
  dataset_info,
  image_source,
  validation_split,
)
from pruning.data.sampling import validation_indices

# (height, width, mode) of the fake photos: landscape, portrait, tiny, grayscale.
_SHAPES = [(300, 400, 'RGB'), (500, 333, 'RGB'), (40, 60, 'RGB'), (250, 250, 'L')]


def _photo(index: int) -> tuple[bytes, np.ndarray]:
  height, width, mode = _SHAPES[index % len(_SHAPES)]
  y, x = np.mgrid[0:height, 0:width]
  pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 17 * index)], -1)
  pixels = pixels.astype(np.uint8)
  image = PIL.Image.fromarray(pixels).convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format='JPEG', quality=90)
  return buffer.getvalue(), np.asarray(image.convert('RGB'))


class _FakeImagenet(imagenet2012_dataset_builder.Builder, skip_registration=True):
  """tfds's imagenet2012 builder with a dozen generated photos instead of the tarballs."""

  name = 'imagenet2012'
  MANUAL_DOWNLOAD_INSTRUCTIONS = None
  # Read the real builder's metadata files (README, citation), not this file's.
  code_path = epath.Path(imagenet2012_dataset_builder.__file__)
  pkg_dir_path = code_path.parent

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._examples(0, 8), 'validation': self._examples(100, 5)}

  def _examples(self, first: int, count: int):
    for index in range(first, first + count):
      data, _ = _photo(index)
      name = f'n{index:08d}_{index}.JPEG'
      yield name, {'image': data, 'label': (index * 37) % 1000, 'file_name': name}


@pytest.fixture(scope='module')
def fake_imagenet(tmp_path_factory) -> Path:
  data_dir = tmp_path_factory.mktemp('tfds-imagenet')
  _FakeImagenet(data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


# Dataset info and sources.


def test_dataset_info():
  assert dataset_info('mnist').image_shape == (28, 28, 1)
  cifar = dataset_info('cifar10/official')
  assert cifar == dataset_info('cifar10')
  assert (cifar.num_classes, cifar.splits) == (10, {'train': 50_000, 'test': 10_000})
  imagenet_info = dataset_info('imagenet2012')
  assert imagenet_info.num_classes == 1000 and imagenet_info.eval_split == 'validation'
  assert imagenet_info.augmentation == 'random_resized_crop' and not imagenet_info.fixed_size


@pytest.mark.parametrize('name', ['cifar100', 'mnist/jpeg', 'imagenet'])
def test_dataset_info_rejects_unknown_names(name):
  with pytest.raises(ValueError, match=f"unknown dataset '{name}'; expected one of mnist"):
    dataset_info(name)


def test_image_source_rejects_unknown_split(tmp_path):
  with pytest.raises(ValueError, match=r"cifar10 has no split 'validation'.*validation_split"):
    image_source('cifar10', 'validation', data_dir=tmp_path)
  with pytest.raises(ValueError, match=r"imagenet2012 has no split 'test'"):
    image_source('imagenet2012', 'test', data_dir=tmp_path)


def test_mnist_through_the_common_interface(mnist_data_dir):
  source = image_source('mnist', 'test[:8]', data_dir=mnist_data_dir)
  assert len(source) == 8 and source[0]['label'] == 7
  assert 'mnist_idx/1.0.0' in source.provenance
  ((x, y, valid),) = eval_batches(source, batch_size=8)
  assert x.shape == (8, 28, 28, 1) and valid.all() and y[:3].tolist() == [7, 2, 1]


def test_image_source_read_and_index():
  records = [{'image': np.full((28, 28, 1), i, np.uint8), 'label': i} for i in range(5)]
  source = ImageSource(records, dataset_info('mnist'))
  assert [r['label'] for r in source.read([4, 0])] == [4, 0]
  assert source[3]['image'].shape == (28, 28, 1)
  with pytest.raises(IndexError, match=r'positions 0..5 outside \[0, 5\)'):
    source.read([0, 5])


# Validation split.


def test_validation_split_is_seeded_disjoint_and_complete():
  records = [{'image': np.zeros((28, 28, 1), np.uint8), 'label': i} for i in range(100)]
  source = ImageSource(records, dataset_info('mnist'), provenance='p')
  train, val = validation_split(source, 10, seed=0)
  train_labels = [r['label'] for r in train.read(range(len(train)))]
  val_labels = [r['label'] for r in val.read(range(len(val)))]
  assert len(train_labels) == 90 and len(val_labels) == 10
  assert sorted(train_labels + val_labels) == list(range(100))
  assert train_labels == sorted(train_labels) and val.provenance == 'p'
  # The rule every run's validation split follows (MNIST's in memory too).
  assert val_labels == validation_indices(100, 10, seed=0)[1].tolist()
  assert [r['label'] for r in validation_split(source, 10, seed=0)[1].read(range(10))] == val_labels
  assert [r['label'] for r in validation_split(source, 10, seed=1)[1].read(range(10))] != val_labels
  # A view of a view: the validation set of the training part.
  _, inner = validation_split(train, 5, seed=0)
  inner_labels = [r['label'] for r in inner.read(range(5))]
  assert set(inner_labels) <= set(train_labels)


@pytest.mark.parametrize('size', [0, 100, -1])
def test_validation_split_rejects_bad_size(size):
  with pytest.raises(ValueError, match=f'validation size must be in \\(0, 100\\), got {size}'):
    validation_indices(100, size, seed=0)


# The ImageNet code path on a fake prepared imagenet2012.


def test_fake_imagenet_has_the_real_feature_spec(fake_imagenet, tmp_path):
  written = tfds.features.FeatureConnector.from_config(
    os.fspath(fake_imagenet / 'imagenet2012' / '5.1.0')
  )
  real = tfds.builder('imagenet2012', data_dir=tmp_path).info.features
  assert sorted(real.keys()) == sorted(imagenet.FEATURES)
  assert real['label'].num_classes == 1000
  assert repr(written) == repr(real)


def test_imagenet_source_decodes_jpegs(fake_imagenet):
  source = image_source('imagenet2012', 'validation', data_dir=fake_imagenet)
  assert len(source) == 5 and 'imagenet2012/5.1.0' in source.provenance
  raw = source.read([0])[0]
  assert isinstance(raw['image'], bytes)  # left encoded for the pipeline
  index = int(raw['file_name'].decode().split('_')[1].split('.')[0])
  example = source[0]
  _, expected = _photo(index)
  assert example['image'].shape == expected.shape and example['image'].dtype == np.uint8
  assert np.abs(example['image'].astype(int) - expected).mean() < 3  # JPEG round trip
  assert example['label'] == (index * 37) % 1000


def test_imagenet_eval_batches_centre_crop(fake_imagenet):
  source = image_source('imagenet2012', 'validation', data_dir=fake_imagenet)
  batches = eval_batches(source, batch_size=4, image_size=64, normalize=False)
  assert len(batches) == 2
  seen = []
  for x, y, valid in batches:
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.uint8
    seen.extend(y[valid].tolist())
  assert sorted(seen) == sorted((i * 37) % 1000 for i in range(100, 105))
  # The centre crop of a horizontal gradient keeps the middle 87.5 % of the shorter side.
  x, y, _ = batches[0]
  raw = source.read([0])[0]
  index = int(raw['file_name'].decode().split('_')[1].split('.')[0])
  _, photo = _photo(index)
  expected = PIL.Image.fromarray(photo).resize(
    (64, 64), PIL.Image.Resampling.BILINEAR, box=_centre_box(photo)
  )
  assert np.abs(x[0].astype(int) - np.asarray(expected)).mean() < 4


def _centre_box(photo: np.ndarray) -> tuple[float, ...]:
  height, width = photo.shape[:2]
  side = 0.875 * min(height, width)
  return ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)


def test_imagenet_train_batches_default_size_and_determinism(fake_imagenet):
  source = image_source('imagenet2012', 'train', data_dir=fake_imagenet)
  batches = train_batches(source, batch_size=4, seed=0, epoch=0)
  assert len(batches) == 2
  x, y = batches[0]
  assert x.shape == (4, 224, 224, 3) and x.dtype == np.float32
  x2, y2 = train_batches(source, batch_size=4, seed=0, epoch=0)[0]
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  x3, y3 = train_batches(source, batch_size=4, seed=0, epoch=1)[0]
  assert not np.array_equal(x, x3) or not np.array_equal(y, y3)
  centre, _ = train_batches(source, batch_size=4, seed=0, epoch=0, augment=False)[0]
  assert centre.shape == (4, 224, 224, 3) and not np.array_equal(centre, x)


def test_imagenet_not_prepared(tmp_path):
  with pytest.raises(imagenet.ImagenetNotPreparedError) as error:
    image_source('imagenet2012', 'train', data_dir=tmp_path)
  message = str(error.value)
  assert f'No prepared imagenet2012 in {tmp_path}' in message
  assert f'{tmp_path}/downloads/manual' in message
  assert f'tfds build imagenet2012 --data_dir={tmp_path} --file_format=array_record' in message


def test_imagenet_in_another_file_format(tmp_path):
  version = tmp_path / 'imagenet2012' / '5.1.0'
  version.mkdir(parents=True)
  (version / 'dataset_info.json').write_text('{}')
  (version / 'imagenet2012-train.tfrecord-00000-of-01024').write_text('')
  with pytest.raises(imagenet.ImagenetNotPreparedError, match='tfds convert_format'):
    image_source('imagenet2012', 'train', data_dir=tmp_path)


def test_imagenet_takes_no_raw_path(tmp_path):
  with pytest.raises(ValueError, match='raw_path is not used for imagenet2012'):
    image_source('imagenet2012', 'train', data_dir=tmp_path, raw_path=tmp_path)
