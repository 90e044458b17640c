"""Tests for the CIFAR-10 tfds builder: the real JPEG tarball, checksums, the official format.

The real tarball is prepared once per session (``cifar10_data_dir`` in
``conftest.py``, about 20 s on 2 CPU cores). The official binary release is
not available offline, so its reader and the download path are tested on a
small fake archive in the same format, served from 127.0.0.1, with the
checksum table injected.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from pruning.data import cifar10, image_source
from pruning.data.images import dataset_info
from pruning.data.raw_files import RawFile, md5_of


def _labels_and_ids(source) -> tuple[np.ndarray, list[str]]:
  labels, ids = [], []
  for start in range(0, len(source), 5000):
    for record in source.__getitems__(range(start, min(start + 5000, len(source)))):
      labels.append(int(record['label']))
      ids.append(record['id'].decode())
  return np.array(labels), ids


def _assert_nothing_prepared(data_dir: Path) -> None:
  """No version directory that tfds would reuse and no leftover incomplete one."""
  builder_dir = data_dir / cifar10.Cifar10Tarball.name
  found = sorted(os.fspath(p.relative_to(builder_dir)) for p in builder_dir.rglob('*'))
  # tfds keeps its config registry (.config/metadata.json) and empty config dirs.
  leftovers = [p for p in found if p not in ('jpeg', 'official') and not p.startswith('.config')]
  assert leftovers == [], f'preparation left {leftovers} in {builder_dir}'


@pytest.fixture
def no_env_copy(monkeypatch) -> None:
  """No ``$PRUNING_CIFAR10_PATH``: the library then has only ``raw_path=`` or a download."""
  monkeypatch.delenv('PRUNING_CIFAR10_PATH', raising=False)


# The real JPEG tarball, prepared.


def test_counts_histograms_and_order(cifar10_data_dir):
  for split, count, per_class in (('train', 50_000, 5_000), ('test', 10_000, 1_000)):
    source = cifar10.cifar10_source(split, config='jpeg', data_dir=cifar10_data_dir, url=None)
    assert len(source) == count
    labels, ids = _labels_and_ids(source)
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    # Documented order: member names sorted, so class by class.
    assert ids == sorted(ids)
    assert ids[0] == f'{split}/airplane/0000.jpg'
    assert all(i.split('/')[1] == cifar10.CLASS_NAMES[y] for i, y in zip(ids, labels, strict=True))
    example = source[count - 1]
    assert example['image'].shape == (32, 32, 3) and example['image'].dtype == np.uint8
    assert int(example['label']) == 9


def test_pixels_are_the_decoded_jpegs(cifar10_data_dir, shared_cifar10):
  source = cifar10.cifar10_source('test', config='jpeg', data_dir=cifar10_data_dir, url=None)
  wanted = {'cifar10_jpeg/test/airplane/0000.jpg': 0, 'cifar10_jpeg/test/truck/0999.jpg': 9_999}
  wanted['cifar10_jpeg/test/cat/0123.jpg'] = 3 * 1_000 + 123
  with tarfile.open(shared_cifar10, 'r:gz') as archive:
    for member in archive:
      if member.name in wanted:
        data = archive.extractfile(member).read()
        expected = np.asarray(PIL.Image.open(io.BytesIO(data)).convert('RGB'))
        example = source[wanted.pop(member.name)]
        np.testing.assert_array_equal(example['image'], expected)
        assert example['id'].decode() == member.name.removeprefix('cifar10_jpeg/')
  assert not wanted


def test_metadata_and_provenance_name_the_archive(cifar10_data_dir, monkeypatch):
  monkeypatch.delenv('PRUNING_CIFAR10_PATH', raising=False)
  source = image_source('cifar10', 'test', data_dir=cifar10_data_dir)
  info = source.records.dataset_info
  assert info.full_name == 'cifar10_tarball/jpeg/1.0.0'
  assert dict(info.metadata) == {
    'source_file': 'cifar10-jpeg.tar.gz',
    'source_md5': cifar10.ARCHIVES['jpeg'].md5,
    'byte_exact': False,
  }
  assert 'cifar10_tarball/jpeg/1.0.0' in source.provenance
  assert 'not byte-exact' in source.provenance


def test_channel_statistics_match_dataset_info(cifar10_data_dir):
  # Catches a channel-order or scaling slip: the JPEG copy's statistics are
  # within 0.01 of the official training split's.
  source = cifar10.cifar10_source('train', config='jpeg', data_dir=cifar10_data_dir, url=None)
  index = np.random.default_rng(0).choice(len(source), 5_000, replace=False)
  pixels = np.stack([r['image'] for r in source.__getitems__(index.tolist())]) / 255
  info = dataset_info('cifar10')
  np.testing.assert_allclose(pixels.mean(axis=(0, 1, 2)), info.mean, atol=0.01)
  np.testing.assert_allclose(pixels.std(axis=(0, 1, 2)), info.std, atol=0.01)


def test_prepared_dataset_is_reused_without_tarball(cifar10_data_dir, no_env_copy):
  assert cifar10.resolve_config(data_dir=cifar10_data_dir) == 'jpeg'
  source = image_source('cifar10', 'test[:10]', data_dir=cifar10_data_dir)
  assert len(source) == 10


# Checksums and where the tarball is looked for.


@pytest.fixture
def tarball_copy(tmp_path, shared_cifar10) -> Path:
  path = tmp_path / 'cifar10-jpeg.tar.gz'
  shutil.copyfile(shared_cifar10, path)
  return path


def _flip_byte(path: Path, offset: int) -> None:
  data = bytearray(path.read_bytes())
  data[offset] ^= 0xFF
  path.write_bytes(bytes(data))


def test_flipped_byte_names_file_and_md5(tarball_copy, tmp_path):
  _flip_byte(tarball_copy, 1_000_000)
  with pytest.raises(cifar10.Cifar10FilesError) as error:
    image_source('cifar10', 'test', data_dir=tmp_path / 'tfds', raw_path=tarball_copy)
  message = str(error.value)
  assert f'{tarball_copy}: md5 ' in message
  assert f'expected {cifar10.ARCHIVES["jpeg"].md5}' in message
  for spec in cifar10.ARCHIVES.values():
    assert spec.name in message and spec.md5 in message and f'{spec.size:,}' in message
  _assert_nothing_prepared(tmp_path / 'tfds')


def test_truncated_file_is_no_known_archive(tarball_copy, tmp_path):
  tarball_copy.write_bytes(tarball_copy.read_bytes()[:5_000])
  with pytest.raises(cifar10.Cifar10FilesError, match='5,000 bytes, the size of no known') as error:
    image_source('cifar10', 'train', data_dir=tmp_path / 'tfds', raw_path=tarball_copy)
  assert cifar10.OFFICIAL_URL in str(error.value)
  _assert_nothing_prepared(tmp_path / 'tfds')


def test_missing_file_is_named(tmp_path):
  with pytest.raises(cifar10.Cifar10FilesError, match=f'{tmp_path}/absent.tar.gz: missing'):
    image_source('cifar10', 'train', data_dir=tmp_path, raw_path=tmp_path / 'absent.tar.gz')


def test_environment_variable_is_checked(tarball_copy, tmp_path, monkeypatch):
  _flip_byte(tarball_copy, 10)
  monkeypatch.setenv('PRUNING_CIFAR10_PATH', os.fspath(tarball_copy))
  with pytest.raises(cifar10.Cifar10FilesError, match=f'{tarball_copy}: md5'):
    image_source('cifar10', 'test', data_dir=tmp_path / 'tfds')


@pytest.mark.usefixtures('shared_cifar10', 'no_env_copy')
def test_the_library_ignores_the_checkout_copy(tmp_path):
  # The checkout's JPEG copy exists (shared_cifar10), yet only the caller may
  # point at it: without raw_path, nothing prepared means the official download.
  assert cifar10.resolve_config(data_dir=tmp_path) == 'official'
  with pytest.raises(
    cifar10.Cifar10FilesError, match="config 'jpeg' cannot be downloaded"
  ) as error:
    cifar10.cifar10_source('test', config='jpeg', data_dir=tmp_path / 'tfds', url=None)
  assert 'neither raw_path= nor $PRUNING_CIFAR10_PATH' in str(error.value)
  _assert_nothing_prepared(tmp_path / 'tfds')


def test_the_given_tarball_picks_its_config(shared_cifar10, tmp_path, no_env_copy):
  assert cifar10.resolve_config(data_dir=tmp_path, raw_path=shared_cifar10) == 'jpeg'
  assert cifar10.resolve_config('official', data_dir=tmp_path) == 'official'


def test_no_copy_anywhere_means_the_official_download(no_env_copy, tmp_path):
  assert cifar10.resolve_config(data_dir=tmp_path) == 'official'
  with pytest.raises(cifar10.Cifar10FilesError, match=r'downloading is off \(url=None\)'):
    cifar10.cifar10_source('test', data_dir=tmp_path, url=None)
  with pytest.raises(cifar10.Cifar10FilesError, match="config 'jpeg' cannot be downloaded"):
    cifar10.cifar10_source('test', config='jpeg', data_dir=tmp_path)


def test_config_must_match_the_given_file(tarball_copy, tmp_path):
  with pytest.raises(cifar10.Cifar10FilesError, match="is the 'jpeg' archive"):
    cifar10.cifar10_source('test', config='official', data_dir=tmp_path, raw_path=tarball_copy)
  with pytest.raises(ValueError, match="unknown CIFAR-10 config 'png'"):
    cifar10.resolve_config('png')


# The official binary format, downloaded from a local server.


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
  member = tarfile.TarInfo(name)
  member.size = len(data)
  archive.addfile(member, io.BytesIO(data))


def _binary_records(labels: list[int], seed: int) -> tuple[bytes, np.ndarray]:
  planes = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
  records = np.concatenate(
    [np.array(labels, np.uint8)[:, None], planes.reshape(len(labels), -1)], axis=1
  )
  return records.tobytes(), planes.transpose(0, 2, 3, 1)


def _fake_binary_tarball(path: Path, *, meta: bytes | None = None) -> dict[str, np.ndarray]:
  """A small tarball in the official binary layout; returns split -> images (HWC)."""
  images = {'train': [], 'test': []}
  with tarfile.open(path, 'w:gz') as archive:
    names = [*cifar10._BINARY_FILES['train'], *cifar10._BINARY_FILES['test']]
    for seed, name in enumerate(names):
      data, pixels = _binary_records([seed % 10, 9 - seed % 10, 3], seed)
      _add(archive, f'cifar-10-batches-bin/{name}', data)
      images['test' if name == 'test_batch.bin' else 'train'].append(pixels)
    text = '\n'.join(cifar10.CLASS_NAMES).encode() + b'\n\n' if meta is None else meta
    _add(archive, 'cifar-10-batches-bin/batches.meta.txt', text)
  return {split: np.concatenate(parts) for split, parts in images.items()}


def _archives_for(path: Path) -> dict[str, RawFile]:
  official = RawFile('cifar-10-binary.tar.gz', path.stat().st_size, md5_of(path))
  return {'jpeg': cifar10.ARCHIVES['jpeg'], 'official': official}


def test_official_format_downloaded_and_verified(tmp_path, serve, no_env_copy):
  served = tmp_path / 'served'
  served.mkdir()
  tarball = served / 'cifar-10-binary.tar.gz'
  expected = _fake_binary_tarball(tarball)
  archives = _archives_for(tarball)
  url = serve(served) + 'cifar-10-binary.tar.gz'
  data_dir = tmp_path / 'tfds'
  for split, count in (('train', 15), ('test', 3)):
    source = cifar10.cifar10_source(split, data_dir=data_dir, url=url, archives=archives)
    assert len(source) == count
    records = source.__getitems__(range(count))
    np.testing.assert_array_equal(np.stack([r['image'] for r in records]), expected[split])
  first = cifar10.cifar10_source('train', data_dir=data_dir, url=url, archives=archives)
  assert [int(r['label']) for r in first.__getitems__([0, 1, 2, 3])] == [0, 9, 3, 1]
  assert first[4]['id'] == b'data_batch_2.bin:1'
  assert first.dataset_info.full_name == 'cifar10_tarball/official/1.0.0'
  assert first.dataset_info.metadata['byte_exact'] is True
  downloaded = data_dir / 'downloads' / 'cifar10_tarball' / 'cifar-10-binary.tar.gz'
  assert md5_of(downloaded) == archives['official'].md5


def test_corrupt_download_is_deleted(tmp_path, serve, no_env_copy):
  served = tmp_path / 'served'
  served.mkdir()
  tarball = served / 'cifar-10-binary.tar.gz'
  _fake_binary_tarball(tarball)
  archives = _archives_for(tarball)
  _flip_byte(tarball, 100)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(cifar10.Cifar10FilesError, match='does not verify') as error:
    cifar10.cifar10_source(
      'test', data_dir=data_dir, url=serve(served) + tarball.name, archives=archives
    )
  assert archives['official'].md5 in str(error.value)
  downloads = data_dir / 'downloads' / 'cifar10_tarball'
  assert list(downloads.iterdir()) == []
  _assert_nothing_prepared(data_dir)


def test_damaged_earlier_download_is_fetched_again(tmp_path, serve, no_env_copy):
  served = tmp_path / 'served'
  served.mkdir()
  tarball = served / 'cifar-10-binary.tar.gz'
  _fake_binary_tarball(tarball)
  archives = _archives_for(tarball)
  cached = tmp_path / 'tfds' / 'downloads' / 'cifar10_tarball' / tarball.name
  cached.parent.mkdir(parents=True)
  cached.write_bytes(tarball.read_bytes()[:-10] + b'0123456789')
  source = cifar10.cifar10_source(
    'test', data_dir=tmp_path / 'tfds', url=serve(served) + tarball.name, archives=archives
  )
  assert len(source) == 3
  assert md5_of(cached) == archives['official'].md5


def test_unreachable_server_names_url(tmp_path, serve, no_env_copy):
  url = serve(tmp_path) + 'absent.tar.gz'
  with pytest.raises(cifar10.Cifar10FilesError, match=f'from {url}: HTTP Error 404'):
    cifar10.cifar10_source('test', data_dir=tmp_path / 'tfds', url=url)


def test_official_format_checks_class_names(tmp_path, no_env_copy):
  tarball = tmp_path / 'cifar-10-binary.tar.gz'
  _fake_binary_tarball(tarball, meta=b'cat\ndog\n')
  with pytest.raises(cifar10.Cifar10FilesError, match=r"batches.meta.txt lists \('cat', 'dog'\)"):
    cifar10.cifar10_source(
      'test', data_dir=tmp_path / 'tfds', raw_path=tarball, archives=_archives_for(tarball)
    )
  _assert_nothing_prepared(tmp_path / 'tfds')


# The JPEG layout, on small fake archives.


def _jpeg(value: int, mode: str = 'RGB') -> bytes:
  buffer = io.BytesIO()
  PIL.Image.new(mode, (32, 32), (value,) * len(mode)).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _fake_jpeg_tarball(path: Path, members: dict[str, bytes]) -> dict[str, RawFile]:
  with tarfile.open(path, 'w:gz') as archive:
    for name, data in members.items():
      _add(archive, f'cifar10_jpeg/{name}', data)
  jpeg = RawFile('cifar10-jpeg.tar.gz', path.stat().st_size, md5_of(path))
  return {'jpeg': jpeg, 'official': cifar10.ARCHIVES['official']}


def test_jpeg_layout_sorted_with_grayscale_as_rgb(tmp_path):
  tarball = tmp_path / 'cifar10-jpeg.tar.gz'
  archives = _fake_jpeg_tarball(
    tarball,
    {
      'train/truck/b.jpg': _jpeg(200),
      'train/airplane/z.jpg': _jpeg(10, 'L'),
      'train/airplane/a.jpg': _jpeg(50),
      'test/dog/0.jpg': _jpeg(100),
      'README.md': b'not an image',
    },
  )
  source = cifar10.cifar10_source(
    'train', data_dir=tmp_path / 'tfds', raw_path=tarball, archives=archives
  )
  records = source.__getitems__([0, 1, 2])
  assert [r['id'].decode() for r in records] == [
    'train/airplane/a.jpg',
    'train/airplane/z.jpg',
    'train/truck/b.jpg',
  ]
  assert [int(r['label']) for r in records] == [0, 0, 9]
  gray = records[1]['image']
  assert gray.shape == (32, 32, 3)
  assert (gray[..., 0] == gray[..., 1]).all() and abs(int(gray.mean()) - 10) <= 2


@pytest.mark.parametrize(
  ('members', 'match'),
  [
    ({'train/bicycle/0.jpg': b'x', 'test/cat/0.jpg': b'x'}, "class directory 'bicycle'"),
    ({'train/cat/0.jpg': b'x'}, r'no cifar10_jpeg/test/<class>/\*.jpg members'),
  ],
)
def test_jpeg_layout_errors(tmp_path, members, match):
  tarball = tmp_path / 'cifar10-jpeg.tar.gz'
  archives = _fake_jpeg_tarball(tarball, members)
  with pytest.raises(cifar10.Cifar10FilesError, match=match):
    cifar10.cifar10_source('train', data_dir=tmp_path / 'tfds', raw_path=tarball, archives=archives)
  _assert_nothing_prepared(tmp_path / 'tfds')


def test_undecodable_jpeg_mid_preparation_leaves_nothing(tmp_path):
  tarball = tmp_path / 'cifar10-jpeg.tar.gz'
  members = {f'train/cat/{i}.jpg': _jpeg(i) for i in range(5)}
  members['test/cat/0.jpg'] = _jpeg(1)
  members['test/cat/1.jpg'] = b'\xff\xd8 truncated'
  archives = _fake_jpeg_tarball(tarball, members)
  with pytest.raises(PIL.UnidentifiedImageError):
    cifar10.cifar10_source('train', data_dir=tmp_path / 'tfds', raw_path=tarball, archives=archives)
  _assert_nothing_prepared(tmp_path / 'tfds')


def test_preparation_and_batches_do_not_import_tensorflow(tmp_path, assert_no_tensorflow):
  tarball = tmp_path / 'cifar10-jpeg.tar.gz'
  members = {f'{split}/cat/{i}.jpg': _jpeg(i) for split in ('train', 'test') for i in range(4)}
  archives = _fake_jpeg_tarball(tarball, members)
  assert_no_tensorflow(f"""
    from pruning.data import cifar10, grain_batches, images
    from pruning.data.raw_files import RawFile
    archives = {{k: RawFile(*v) for k, v in {dict((k, tuple(v)) for k, v in archives.items())!r}.items()}}
    records = cifar10.cifar10_source(
      'train', data_dir={os.fspath(tmp_path / 'tfds')!r}, raw_path={os.fspath(tarball)!r},
      archives=archives)
    source = images.ImageSource(records, images.dataset_info('cifar10'))
    (x, y), = grain_batches.train_batches(source, batch_size=4, seed=0, epoch=0)
    assert x.shape == (4, 32, 32, 3), x.shape
  """)
