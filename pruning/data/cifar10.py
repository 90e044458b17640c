"""CIFAR-10 from a tarball, prepared once as a tfds array_record dataset.

:class:`Cifar10Tarball` is a tensorflow-datasets builder (registered as
``cifar10_tarball``) with one config per source archive; the config is part
of the prepared dataset's name and path, so every result can say which
pixels it was computed on:

* ``jpeg``: the project's offline copy ``cifar10-jpeg.tar.gz``, all 60000
  images re-encoded as JPEG (quality 75) in the layout
  ``cifar10_jpeg/{train,test}/{class}/*.jpg``. Real CIFAR-10 images, but not
  byte-exact: accuracies on it compare with each other, not with published
  CIFAR-10 figures.
* ``official``: the official binary release ``cifar-10-binary.tar.gz`` from
  the Toronto site (the archive tfds's own ``cifar10`` reads), byte-exact.

Either archive is read directly with :mod:`tarfile` (nothing is extracted to
disk), checked against :data:`ARCHIVES` (size and md5) first, and written as
``train`` (50000) and ``test`` (10000) splits of ``{'image': uint8 (32, 32,
3), 'label': int64, 'id': text}`` (read back as ``bytes``). Labels follow the standard CIFAR-10 class
order :data:`CLASS_NAMES`. Example order is deterministic: for ``jpeg`` the
member names sorted as strings (so class by class, files in name order), for
``official`` the order of the records in ``data_batch_1.bin`` ...
``data_batch_5.bin`` and ``test_batch.bin``. ``id`` names each example's
origin (``'train/cat/0042.jpg'`` or ``'data_batch_3.bin:17'``).

Neither writing nor reading needs TensorFlow: JPEGs are decoded with Pillow
and images are stored as raw ``uint8`` tensors (tfds's ``Image`` feature calls
TensorFlow to encode arrays).
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from etils import epath

from pruning.data.raw_files import (
  DataFilesError,
  RawFile,
  default_data_dir,
  download_verified,
  file_problem,
  preparing,
)

CLASS_NAMES = (
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
)
"""The standard CIFAR-10 class order: label ``i`` is ``CLASS_NAMES[i]``."""

IMAGE_SHAPE = (32, 32, 3)

ARCHIVES = {
  'jpeg': RawFile('cifar10-jpeg.tar.gz', 19_759_747, '58366874cd137be4c40a24e0279d7d0b'),
  'official': RawFile('cifar-10-binary.tar.gz', 170_052_171, 'c32a1d4ab5d03f1284b67883e8d87530'),
}
"""Config name -> the archive it reads. ``jpeg``: size and md5 of the project's
copy (computed here). ``official``: size as in tfds's checksum table, md5 as
published on https://www.cs.toronto.edu/~kriz/cifar.html."""

OFFICIAL_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'

_DESCRIPTIONS = {
  'jpeg': 'CIFAR-10 re-encoded as JPEG (quality 75); real images, not byte-exact.',
  'official': 'The official CIFAR-10 binary release, byte-exact.',
}
_JPEG_MEMBER = re.compile(r'cifar10_jpeg/(train|test)/([^/]+)/([^/]+\.jpg)')
_BINARY_FILES = {
  'train': tuple(f'data_batch_{i}.bin' for i in range(1, 6)),
  'test': ('test_batch.bin',),
}
_RECORD_BYTES = 1 + int(np.prod(IMAGE_SHAPE))


class Cifar10FilesError(DataFilesError):
  """The CIFAR-10 tarball is missing, corrupt, or not one of :data:`ARCHIVES`."""


def expected_archives_text(archives: Mapping[str, RawFile] = ARCHIVES) -> str:
  """What a CIFAR-10 tarball must be and where it is looked for, for error messages."""
  rows = '\n'.join(
    f'  {spec.name:<24} {spec.size:>11,} bytes  md5 {spec.md5}  (config {config!r})'
    for config, spec in archives.items()
  )
  return (
    f'Expected one of these CIFAR-10 tarballs:\n{rows}\n'
    f'Pass raw_path=, point $PRUNING_CIFAR10_PATH at one, '
    f'or let the official one download from {OFFICIAL_URL}.'
  )


def identify_archive(
  path: str | os.PathLike[str], archives: Mapping[str, RawFile] = ARCHIVES
) -> str:
  """The config whose archive ``path`` is, after checking its size and md5.

  Args:
    path: a CIFAR-10 tarball.
    archives: config name -> expected file (default :data:`ARCHIVES`).

  Returns:
    The config name (``'jpeg'`` or ``'official'``).

  Raises:
    Cifar10FilesError: if the file is missing or matches no archive; the
      message lists the expected ones.

  Examples:
    >>> identify_archive('/nonexistent.tar.gz')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruning.data.cifar10.Cifar10FilesError: /nonexistent.tar.gz: missing
    Expected one of these CIFAR-10 tarballs:
    ...
  """
  path = Path(path)
  if not path.is_file():
    raise Cifar10FilesError(f'{path}: missing\n{expected_archives_text(archives)}')
  size = path.stat().st_size
  for config, spec in archives.items():
    if spec.size == size:
      problem = file_problem(path, spec)
      if problem is None:
        return config
      raise Cifar10FilesError(
        f'{path}: {problem} (the size of {spec.name}, config {config!r})\n'
        + expected_archives_text(archives)
      )
  raise Cifar10FilesError(
    f'{path}: {size:,} bytes, the size of no known CIFAR-10 tarball\n'
    + expected_archives_text(archives)
  )


def _env_path() -> Path | None:
  env = os.environ.get('PRUNING_CIFAR10_PATH')
  return Path(env).expanduser() if env else None


def resolve_config(
  config: str | None = None,
  *,
  raw_path: str | os.PathLike[str] | None = None,
  data_dir: str | os.PathLike[str] | None = None,
  archives: Mapping[str, RawFile] = ARCHIVES,
) -> str:
  """Which archive (config) a CIFAR-10 request means.

  In order: the kind of ``raw_path`` or ``$PRUNING_CIFAR10_PATH`` (checked);
  ``config`` if given; a config already prepared in ``data_dir``
  (``official`` first); else ``official``, downloaded when prepared. A local
  copy of the JPEG archive is used only when it is passed (the scripts pass
  their checkout's as the default of their raw-data flag).

  Raises:
    Cifar10FilesError: if the given file is not a known archive, or is a
      different one than ``config`` names.
    ValueError: if ``config`` is not a known config.
  """
  if config is not None and config not in archives:
    raise ValueError(f'unknown CIFAR-10 config {config!r}; expected one of {sorted(archives)}')
  path = Path(raw_path) if raw_path is not None else _env_path()
  if path is not None:
    found = identify_archive(path, archives)
    if config is not None and found != config:
      raise Cifar10FilesError(
        f'{path} is the {found!r} archive ({archives[found].name}), but config {config!r} '
        f'reads {archives[config].name}'
      )
    return found
  if config is not None:
    return config
  root = (default_data_dir() if data_dir is None else Path(data_dir)) / Cifar10Tarball.name
  for prepared in ('official', 'jpeg'):
    if (root / prepared / str(Cifar10Tarball.VERSION) / 'dataset_info.json').is_file():
      return prepared
  return 'official'


class Cifar10Tarball(tfds.core.GeneratorBasedBuilder):
  """CIFAR-10 read from a tarball (registered in tfds as ``cifar10_tarball``).

  Configs ``jpeg`` and ``official`` read the archives of :data:`ARCHIVES`;
  see the module docstring for the example order and features.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
    '1.0.0': 'JPEG copy or official binary tarball, deterministic order, raw uint8 images.'
  }
  BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
    tfds.core.BuilderConfig(name=name, description=text) for name, text in _DESCRIPTIONS.items()
  ]
  # See MnistIdx: naming the file skips a lookup through `importlib_resources`,
  # which tensorflow-datasets 4.9.10 uses but does not install.
  code_path = epath.Path(__file__)

  def __init__(
    self,
    *,
    raw_path: str | os.PathLike[str] | None = None,
    url: str | None = OFFICIAL_URL,
    archives: Mapping[str, RawFile] | None = None,
    **kwargs: Any,
  ):
    """Builder over ``raw_path``, or ``$PRUNING_CIFAR10_PATH``, or a download from ``url``.

    Args:
      raw_path: the config's tarball; ``None`` for ``$PRUNING_CIFAR10_PATH``
        (if it is this config's archive), else (``official`` only) a
        download from ``url``.
      url: where to download the official archive; ``None`` never downloads.
      archives: config -> expected archive; default :data:`ARCHIVES` (tests
        inject their own).
      **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``config``,
        ``data_dir``, ``file_format``, ...).
    """
    self._raw_path = None if raw_path is None else Path(raw_path)
    self._url = url
    self._archives = dict(ARCHIVES if archives is None else archives)
    super().__init__(**kwargs)
    # tfds rebuilds a builder from `_original_state` when pickling it.
    self._original_state.update(raw_path=raw_path, url=url, archives=archives)

  @property
  def archive(self) -> RawFile:
    """The archive this builder's config reads."""
    return self._archives[self.builder_config.name]

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.archive
    return tfds.core.DatasetInfo(
      builder=self,
      description=_DESCRIPTIONS[self.builder_config.name],
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
          'label': tfds.features.ClassLabel(names=CLASS_NAMES),
          'id': tfds.features.Text(),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='https://www.cs.toronto.edu/~kriz/cifar.html',
      metadata=tfds.core.MetadataDict(
        source_file=spec.name,
        source_md5=spec.md5,
        byte_exact=self.builder_config.name == 'official',
      ),
      # Keep the deterministic order documented above: record i is example i.
      disable_shuffling=True,
    )

  def _local_archive(self) -> Path | None:
    """``raw_path``; else ``$PRUNING_CIFAR10_PATH`` if it is this config's archive (by size)."""
    if self._raw_path is not None:
      return self._raw_path
    env = _env_path()
    if env is not None and env.is_file() and env.stat().st_size == self.archive.size:
      return env
    return None

  def _archive_path(self, download_dir: Path) -> Path:
    config, spec = self.builder_config.name, self.archive
    hint = expected_archives_text(self._archives)
    local = self._local_archive()
    if local is not None:
      if (problem := file_problem(local, spec)) is not None:
        raise Cifar10FilesError(f'CIFAR-10 tarball {local}: {problem}\n{hint}')
      return local
    target = download_dir / self.name / spec.name
    if target.is_file():
      if file_problem(target, spec) is None:
        return target
      target.unlink()  # a damaged earlier download is fetched again
    if config != 'official' or self._url is None:
      why = (
        'downloading is off (url=None)'
        if config == 'official'
        else f'config {config!r} cannot be downloaded (only the official archive can)'
      )
      raise Cifar10FilesError(
        f'No CIFAR-10 {spec.name} given (neither raw_path= nor $PRUNING_CIFAR10_PATH) '
        f'or downloaded in {target.parent}, and {why}.\n{hint}'
      )
    target.parent.mkdir(parents=True, exist_ok=True)
    return download_verified(
      self._url, target, spec, timeout=120.0, error=Cifar10FilesError, hint=hint
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    path = self._archive_path(Path(dl_manager.download_dir))
    if self.builder_config.name == 'jpeg':
      splits = _read_jpeg_archive(path)
    else:
      splits = _read_binary_archive(path)
    return {split: self._generate_examples(examples) for split, examples in splits.items()}

  def _generate_examples(
    self, examples: Iterator[tuple[str, int, np.ndarray]]
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    for key, (name, label, image) in enumerate(examples):
      yield key, {'image': image, 'label': label, 'id': name}


def _read_jpeg_archive(path: Path) -> dict[str, Iterator[tuple[str, int, np.ndarray]]]:
  """``split -> (id, label, image)`` generators over the JPEG tarball, in sorted name order."""
  members: dict[str, list[tuple[str, int, bytes]]] = {'train': [], 'test': []}
  with tarfile.open(path, 'r:gz') as archive:
    # Sequential reads: random access into a gzip stream would decompress
    # from the start for every member.
    for member in archive:
      match = _JPEG_MEMBER.fullmatch(member.name)
      if not member.isfile() or match is None:
        continue
      split, class_name, _ = match.groups()
      if class_name not in CLASS_NAMES:
        raise Cifar10FilesError(
          f'{path}: member {member.name} is in class directory {class_name!r}, '
          f'not one of {CLASS_NAMES}'
        )
      data = archive.extractfile(member).read()
      name = member.name.removeprefix('cifar10_jpeg/')
      members[split].append((name, CLASS_NAMES.index(class_name), data))
  for split, found in members.items():
    if not found:
      raise Cifar10FilesError(
        f'{path}: no cifar10_jpeg/{split}/<class>/*.jpg members; expected the layout '
        'cifar10_jpeg/{train,test}/{' + ','.join(CLASS_NAMES) + '}/*.jpg'
      )
    found.sort()
  return {split: _decode_jpegs(path, found) for split, found in members.items()}


def _decode_jpegs(
  path: Path, members: list[tuple[str, int, bytes]]
) -> Iterator[tuple[str, int, np.ndarray]]:
  for name, label, data in members:
    with PIL.Image.open(io.BytesIO(data)) as image:
      pixels = np.asarray(image.convert('RGB'))
    if pixels.shape != IMAGE_SHAPE:
      raise Cifar10FilesError(f'{path}: {name} decodes to {pixels.shape}, expected {IMAGE_SHAPE}')
    yield name, label, pixels


def _read_binary_archive(path: Path) -> dict[str, Iterator[tuple[str, int, np.ndarray]]]:
  """``split -> (id, label, image)`` generators over the official binary tarball."""
  wanted = {name for names in _BINARY_FILES.values() for name in names} | {'batches.meta.txt'}
  contents: dict[str, bytes] = {}
  with tarfile.open(path, 'r:gz') as archive:
    for member in archive:
      name = member.name.removeprefix('cifar-10-batches-bin/')
      if member.isfile() and name in wanted and member.name != name:
        contents[name] = archive.extractfile(member).read()
  missing = sorted(wanted - set(contents))
  if missing:
    raise Cifar10FilesError(
      f'{path}: no cifar-10-batches-bin/{", ".join(missing)}; not the official binary release'
    )
  names = tuple(contents['batches.meta.txt'].decode().split())
  if names != CLASS_NAMES:
    raise Cifar10FilesError(f'{path}: batches.meta.txt lists {names}, expected {CLASS_NAMES}')
  for name in wanted - {'batches.meta.txt'}:
    if len(contents[name]) % _RECORD_BYTES:
      raise Cifar10FilesError(
        f'{path}: {name} holds {len(contents[name]):,} bytes, not a whole number of '
        f'{_RECORD_BYTES}-byte records'
      )
  return {
    split: _binary_records(path, [(name, contents[name]) for name in files])
    for split, files in _BINARY_FILES.items()
  }


def _binary_records(
  path: Path, files: list[tuple[str, bytes]]
) -> Iterator[tuple[str, int, np.ndarray]]:
  for name, data in files:
    records = np.frombuffer(data, np.uint8).reshape(-1, _RECORD_BYTES)
    if records[:, 0].max(initial=0) >= len(CLASS_NAMES):
      raise Cifar10FilesError(f'{path}: {name} has label {records[:, 0].max()}, expected 0..9')
    # Each record: label, then the red, green and blue 32x32 planes, row-major.
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    for i in range(len(records)):
      yield f'{name}:{i}', int(records[i, 0]), images[i]


def cifar10_source(
  split: str,
  *,
  config: str | None = None,
  data_dir: str | os.PathLike[str] | None = None,
  raw_path: str | os.PathLike[str] | None = None,
  url: str | None = OFFICIAL_URL,
  archives: Mapping[str, RawFile] | None = None,
) -> Any:
  """The random-access tfds data source of a CIFAR-10 split, preparing it on first use.

  Args:
    split: ``'train'`` or ``'test'`` (or a tfds split expression over them,
      e.g. ``'train[:1000]'``).
    config: ``'jpeg'`` or ``'official'``; ``None`` picks one as
      :func:`resolve_config` documents (the local JPEG copy when present).
    data_dir: where the prepared dataset lives; ``None`` for
      :func:`~pruning.data.raw_files.default_data_dir`.
    raw_path: the tarball to prepare from (its kind picks the config).
    url: where to download the official archive; ``None`` never downloads.
    archives: expected archives (default :data:`ARCHIVES`).

  Returns:
    A tfds ``ArrayRecordDataSource``: element ``i`` is ``{'image': uint8 (32,
    32, 3), 'label': int64, 'id': bytes}``; it has ``__getitems__`` for batched
    reads and ``dataset_info`` (config, version, metadata with the source
    file and md5).

  Raises:
    Cifar10FilesError: if preparation is needed and the tarball is missing,
      corrupt, or cannot be downloaded.

  Example:
    ``cifar10_source('test')[0]`` is ``{'image': <uint8 (32, 32, 3)>,
    'label': 0, 'id': b'test/airplane/0000.jpg'}`` with the JPEG copy. (Not
    a doctest: it would prepare the dataset in the default ``data_dir``.)
  """
  archives = dict(ARCHIVES if archives is None else archives)
  config = resolve_config(config, raw_path=raw_path, data_dir=data_dir, archives=archives)
  data_dir = default_data_dir() if data_dir is None else Path(data_dir)
  with preparing(data_dir, f'{Cifar10Tarball.name}/{config}'):
    return tfds.data_source(
      f'{Cifar10Tarball.name}/{config}',
      split=split,
      data_dir=os.fspath(data_dir),
      builder_kwargs={
        'raw_path': raw_path,
        'url': url,
        'archives': archives,
        'file_format': 'array_record',
      },
    )
