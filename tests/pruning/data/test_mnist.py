"""Tests for the MNIST builder, loaders and batches on the real IDX files.

The dataset is prepared once per session from the offline copy of the
official files (``shared_mnist``, see tests/conftest.py); the tests that need
a preparation of their own (download, failure mid-way, no TensorFlow) each
pay one more, a few seconds on 2 CPU cores. Batching itself is
:mod:`pruning.data.sampling`'s (tests/pruning/data/test_sampling.py).
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from pruning.data import mnist, sampling

TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_HISTOGRAM = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope='session')
def data_dir(mnist_data_dir: Path) -> Path:
  """A tfds data_dir holding ``mnist_idx`` prepared from the real files (see conftest.py)."""
  return mnist_data_dir


@pytest.fixture(scope='session')
def train_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
  return mnist.load_mnist('train', data_dir=data_dir, url=None)


@pytest.fixture(scope='session')
def test_split(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
  return mnist.load_mnist('test', data_dir=data_dir, url=None)


@pytest.fixture
def raw_copy(tmp_path: Path, shared_mnist: Path) -> Path:
  """A writable copy of the four official files."""
  raw = tmp_path / 'raw'
  raw.mkdir()
  for spec in mnist.RAW_FILES:
    shutil.copyfile(shared_mnist / spec.name, raw / spec.name)
  return raw


@pytest.fixture
def no_raw_dir_in_environment(monkeypatch) -> None:
  """No ``$PRUNING_MNIST_DIR``: the library then has only ``raw_dir=`` or a download."""
  monkeypatch.delenv('PRUNING_MNIST_DIR', raising=False)


def _files_under(path: Path) -> list[str]:
  return sorted(os.fspath(p.relative_to(path)) for p in path.rglob('*') if p.is_file())


def _assert_nothing_prepared(data_dir: Path) -> None:
  """No version dir that tfds would reuse and no leftover incomplete dir."""
  builder_dir = data_dir / mnist.MnistIdx.name
  leftovers = sorted(p.name for p in builder_dir.iterdir()) if builder_dir.exists() else []
  assert leftovers == [], f'preparation left {leftovers} in {builder_dir}'


def _flip_byte(path: Path, offset: int) -> None:
  data = bytearray(path.read_bytes())
  data[offset] ^= 0xFF
  path.write_bytes(bytes(data))


def _write_idx(path: Path, magic: int, dims: tuple[int, ...], data: bytes) -> None:
  with gzip.open(path, 'wb') as f:
    f.write(struct.pack(f'>I{len(dims)}I', magic, *dims) + data)


# The prepared dataset.


def test_split_shapes_and_dtypes(train_split, test_split):
  for (images, labels), count in ((train_split, 60_000), (test_split, 10_000)):
    assert images.shape == (count, 28, 28, 1) and images.dtype == np.uint8
    assert labels.shape == (count,) and labels.dtype == np.int32


def test_label_histograms(train_split, test_split):
  assert np.bincount(test_split[1], minlength=10).tolist() == TEST_HISTOGRAM
  assert np.bincount(train_split[1], minlength=10).tolist() == TRAIN_HISTOGRAM


def test_official_order_and_pixels(train_split, test_split, shared_mnist):
  assert int(test_split[1][0]) == 7
  assert train_split[1][:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
  for (images, labels), prefix, count in (
    (train_split, 'train', 60_000),
    (test_split, 't10k', 10_000),
  ):
    raw_images = mnist.read_idx(shared_mnist / f'{prefix}-images-idx3-ubyte.gz', (count, 28, 28))
    raw_labels = mnist.read_idx(shared_mnist / f'{prefix}-labels-idx1-ubyte.gz', (count,))
    np.testing.assert_array_equal(images[..., 0], raw_images)
    np.testing.assert_array_equal(labels, raw_labels)


def test_prepared_dataset_is_reused_without_raw_files(data_dir, tmp_path):
  source = mnist.mnist_source('test', data_dir=data_dir, raw_dir=tmp_path / 'absent', url=None)
  assert len(source) == 10_000
  example = source[0]
  assert example['image'].shape == (28, 28, 1) and example['image'].dtype == np.uint8
  assert int(example['label']) == 7
  batch = source.__getitems__([0, 1, 2])
  assert [int(e['label']) for e in batch] == [7, 2, 1]


def test_split_expression(data_dir):
  source = mnist.mnist_source('train[:100]', data_dir=data_dir, url=None)
  assert len(source) == 100


def test_preparation_does_not_import_tensorflow(tmp_path, shared_mnist, assert_no_tensorflow):
  assert_no_tensorflow(f"""
    from pruning.data import mnist
    images, labels = mnist.load_mnist(
      'test', data_dir={os.fspath(tmp_path)!r}, raw_dir={os.fspath(shared_mnist)!r}, url=None)
    assert images.shape == (10000, 28, 28, 1), images.shape
  """)


# Raw file checks.


def test_missing_file_lists_expected_files(raw_copy, tmp_path):
  (raw_copy / 't10k-images-idx3-ubyte.gz').unlink()
  with pytest.raises(mnist.MnistFilesError) as error:
    mnist.mnist_source('test', data_dir=tmp_path / 'tfds', raw_dir=raw_copy)
  message = str(error.value)
  assert 't10k-images-idx3-ubyte.gz: missing' in message
  assert os.fspath(raw_copy) in message
  for spec in mnist.RAW_FILES:
    assert spec.name in message and spec.md5 in message
  assert mnist.DEFAULT_URL in message
  _assert_nothing_prepared(tmp_path / 'tfds')


def test_flipped_byte_names_file_and_md5(raw_copy, tmp_path):
  _flip_byte(raw_copy / 't10k-labels-idx1-ubyte.gz', 100)
  with pytest.raises(mnist.MnistFilesError) as error:
    mnist.mnist_source('test', data_dir=tmp_path / 'tfds', raw_dir=raw_copy)
  (line,) = [
    s for s in str(error.value).splitlines() if s.startswith('  t10k-labels-idx1-ubyte.gz:')
  ]
  assert 'expected ec29112dd5afa0611ce80d1b7f02629c' in line
  _assert_nothing_prepared(tmp_path / 'tfds')


def test_truncated_file_names_file_size_and_md5(raw_copy):
  path = raw_copy / 'train-labels-idx1-ubyte.gz'
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(mnist.MnistFilesError) as error:
    mnist.check_raw_files(raw_copy)
  (line,) = [
    s for s in str(error.value).splitlines() if s.startswith('  train-labels-idx1-ubyte.gz:')
  ]
  assert '1,000 bytes, expected 28,881' in line
  assert 'd53e105ee54ea40749a09fcbcd1e9432' in line


def test_check_raw_files_accepts_official_files(shared_mnist):
  paths = mnist.check_raw_files(shared_mnist)
  assert sorted(paths) == sorted(spec.name for spec in mnist.RAW_FILES)


@pytest.mark.usefixtures('no_raw_dir_in_environment')
def test_no_local_copy_and_no_download(tmp_path):
  with pytest.raises(mnist.MnistFilesError, match='downloading is off') as error:
    mnist.mnist_source('test', data_dir=tmp_path, url=None)
  message = str(error.value)
  assert 'neither raw_dir= nor $PRUNING_MNIST_DIR' in message
  assert 'f68b3c2dcbeaaa9fbdd348bbdeb94873' in message


def test_raw_dir_from_environment(raw_copy, tmp_path, monkeypatch):
  (raw_copy / 'train-images-idx3-ubyte.gz').unlink()
  monkeypatch.setenv('PRUNING_MNIST_DIR', os.fspath(raw_copy))
  with pytest.raises(mnist.MnistFilesError, match=f'in {raw_copy} are missing'):
    mnist.mnist_source('test', data_dir=tmp_path / 'tfds')


@pytest.mark.usefixtures('shared_mnist', 'no_raw_dir_in_environment')
def test_without_raw_dir_the_library_downloads_and_ignores_the_checkout_copy(tmp_path, monkeypatch):
  # The checkout's copy exists (shared_mnist), yet only the caller may point
  # at it: with no raw_dir and no $PRUNING_MNIST_DIR, preparing downloads.
  attempts = []

  def record_download(download_dir, url=mnist.DEFAULT_URL, **kwargs):
    attempts.append((Path(download_dir), url))
    raise mnist.MnistFilesError('download recorded, not made')

  monkeypatch.setattr(mnist, 'download_raw_files', record_download)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(mnist.MnistFilesError, match='download recorded'):
    mnist.mnist_source('test', data_dir=data_dir)
  assert attempts == [(data_dir / 'downloads' / 'mnist_idx', mnist.DEFAULT_URL)]
  _assert_nothing_prepared(data_dir)


def test_data_dir_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv('PRUNING_DATA_DIR', os.fspath(tmp_path))
  assert mnist.default_data_dir() == tmp_path
  monkeypatch.delenv('PRUNING_DATA_DIR')
  assert mnist.default_data_dir() == Path.home() / 'tensorflow_datasets'


@pytest.mark.parametrize(
  ('magic', 'dims', 'data', 'match'),
  [
    (0x0803, (2,), b'\0\0', r'magic number 0x00000803, expected 0x00000801'),
    (0x0801, (3,), b'\0\0', r'2 bytes of data after the header, expected 3'),
    (0x0801, (2,), b'\0\0', r'dimensions \(2,\), expected \(3,\)'),
  ],
)
def test_read_idx_rejects_wrong_header(tmp_path, magic, dims, data, match):
  path = tmp_path / 'bad-labels-idx1-ubyte.gz'
  _write_idx(path, magic, dims, data)
  with pytest.raises(ValueError, match=match) as error:
    mnist.read_idx(path, (3,))
  assert os.fspath(path) in str(error.value)


def test_read_idx_rejects_non_idx_file(tmp_path):
  path = tmp_path / 'short.gz'
  path.write_bytes(gzip.compress(b'\x01'))
  with pytest.raises(ValueError, match='file too short'):
    mnist.read_idx(path, (None, 28, 28))


# Download from a mirror.


@pytest.mark.usefixtures('no_raw_dir_in_environment')
def test_download_from_local_mirror(raw_copy, tmp_path, serve):
  url = serve(raw_copy)
  data_dir = tmp_path / 'tfds'
  images, labels = mnist.load_mnist('test', data_dir=data_dir, url=url)
  assert images.shape == (10_000, 28, 28, 1)
  assert np.bincount(labels, minlength=10).tolist() == TEST_HISTOGRAM
  downloads = data_dir / 'downloads' / 'mnist_idx'
  assert _files_under(downloads) == sorted(spec.name for spec in mnist.RAW_FILES)
  mnist.check_raw_files(downloads)


@pytest.mark.parametrize('corrupt', ['train-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'])
@pytest.mark.usefixtures('no_raw_dir_in_environment')
def test_corrupt_download_is_deleted(raw_copy, tmp_path, serve, corrupt):
  _flip_byte(raw_copy / corrupt, 50)
  url = serve(raw_copy)
  data_dir = tmp_path / 'tfds'
  spec = next(s for s in mnist.RAW_FILES if s.name == corrupt)
  with pytest.raises(mnist.MnistFilesError, match=f'Downloaded {corrupt} .* md5 {spec.md5}'):
    mnist.mnist_source('test', data_dir=data_dir, url=url)
  # Files verified before the corrupt one stay; the corrupt one and any
  # temporary file are gone.
  names = [s.name for s in mnist.RAW_FILES]
  verified = names[: names.index(corrupt)]
  assert _files_under(data_dir / 'downloads' / 'mnist_idx') == sorted(verified)
  _assert_nothing_prepared(data_dir)


def test_unreachable_file_names_url(raw_copy, tmp_path, serve):
  (raw_copy / 't10k-images-idx3-ubyte.gz').unlink()
  url = serve(raw_copy)
  downloads = tmp_path / 'downloads'
  with pytest.raises(mnist.MnistFilesError, match='404') as error:
    mnist.download_raw_files(downloads, url, timeout=30)
  assert f'from {url}t10k-images-idx3-ubyte.gz' in str(error.value)
  assert 't10k-images-idx3-ubyte.gz' not in _files_under(downloads)
  assert all(not name.startswith('.') for name in _files_under(downloads))


def test_download_replaces_corrupt_cached_file(raw_copy, tmp_path, serve):
  downloads = tmp_path / 'downloads'
  downloads.mkdir()
  shutil.copyfile(raw_copy / 't10k-labels-idx1-ubyte.gz', downloads / 't10k-labels-idx1-ubyte.gz')
  _flip_byte(downloads / 't10k-labels-idx1-ubyte.gz', 10)
  paths = mnist.download_raw_files(downloads, serve(raw_copy), timeout=30)
  assert sorted(paths) == sorted(spec.name for spec in mnist.RAW_FILES)
  mnist.check_raw_files(downloads)


# Failure mid-preparation.


def test_failure_mid_preparation_leaves_nothing_complete(tmp_path, monkeypatch, shared_mnist):
  generate = mnist.MnistIdx._generate_examples

  def fail_in_test_split(self, images_path, labels_path, count):
    # The train split is complete on disk by the time the test split fails.
    for i, example in enumerate(generate(self, images_path, labels_path, count)):
      if count == 10_000 and i == 5_000:
        written_train.extend(data_dir.rglob('mnist_idx-train.array_record*'))
        raise OSError('simulated failure mid-generation')
      yield example

  data_dir = tmp_path / 'tfds'
  written_train = []
  monkeypatch.setattr(mnist.MnistIdx, '_generate_examples', fail_in_test_split)
  with pytest.raises(OSError, match='simulated failure'):
    mnist.mnist_source('train', data_dir=data_dir, raw_dir=shared_mnist, url=None)
  assert written_train, 'the train split was not on disk when preparation failed'
  _assert_nothing_prepared(data_dir)
  monkeypatch.undo()

  assert len(mnist.mnist_source('train', data_dir=data_dir, raw_dir=shared_mnist)) == 60_000
  assert len(mnist.mnist_source('test', data_dir=data_dir, raw_dir=shared_mnist)) == 10_000


# Batches of the loaded arrays (pruning.data.sampling.array_batches, under the name
# mnist.batches that the quickstart notebook uses).


def test_batches_are_deterministic_per_seed_and_epoch(train_split):
  images, labels = train_split

  def first_batch(seed, epoch):
    return next(mnist.batches(images, labels, 128, seed=seed, epoch=epoch))

  x0, y0 = first_batch(0, 0)
  x1, y1 = first_batch(0, 0)
  np.testing.assert_array_equal(x0, x1)
  np.testing.assert_array_equal(y0, y1)
  assert not np.array_equal(y0, first_batch(0, 1)[1])
  assert not np.array_equal(y0, first_batch(1, 0)[1])
  assert x0.shape == (128, 28, 28, 1) and x0.dtype == np.float32
  assert y0.shape == (128,) and y0.dtype == np.int32
  assert 0.0 <= x0.min() and x0.max() <= 1.0 and x0.max() == 1.0


def test_batches_cover_epoch_once(test_split):
  images, labels = test_split
  seen = np.concatenate([y for _, y in mnist.batches(images, labels, 1000, seed=3, epoch=7)])
  assert np.bincount(seen, minlength=10).tolist() == TEST_HISTOGRAM
  permutation = np.random.default_rng((3, 7)).permutation(10_000)
  np.testing.assert_array_equal(seen, labels[permutation])
  assert mnist.batches is sampling.array_batches


def test_decoded_splits_are_kept_read_only_and_decoded_again_when_the_files_change(
  test_split, data_dir, tmp_path
):
  images, labels = mnist.load_mnist('test', data_dir=data_dir, url=None)
  assert images is test_split[0] and labels is test_split[1]  # not decoded a second time
  with pytest.raises(ValueError, match='read-only'):
    images[0, 0, 0, 0] = 1
  # The same dataset prepared elsewhere is other files: decoded, with equal contents.
  copy = tmp_path / 'copy'
  shutil.copytree(data_dir, copy)
  again = mnist.load_mnist('test', data_dir=copy, url=None)
  assert again[0] is not images
  np.testing.assert_array_equal(again[0], images)
  # A file of the prepared dataset rewritten (its time changes) is read again.
  record = next(path for path in sorted(copy.rglob('*')) if 'test' in path.name)
  os.utime(record, ns=(record.stat().st_atime_ns, record.stat().st_mtime_ns + 10**9))
  assert mnist.load_mnist('test', data_dir=copy, url=None)[0] is not again[0]
