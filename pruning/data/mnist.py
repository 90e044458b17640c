"""MNIST from the four official IDX files, prepared once as a tfds array_record dataset.

:class:`MnistIdx` is a tensorflow-datasets builder that reads the official
gzipped IDX files (LeCun et al. 1998), verifies each file's size and md5, and
writes the ``train`` (60000) and ``test`` (10000) splits in the files' own
order as array_record into a ``data_dir``. :func:`mnist_source` reads a split
back as a random-access ``tfds`` data source and :func:`load_mnist` as numpy
arrays. Neither needs TensorFlow: array_record is tfds's TensorFlow-free file
format, and the image is stored as a raw ``uint8`` tensor because tfds's
``Image`` feature calls ``tf.image.encode_png`` to encode numpy arrays.

The raw files come, in order of preference, from ``raw_dir``, the directory
named by ``$PRUNING_MNIST_DIR``, or a download from ``url`` into
``<data_dir>/downloads/mnist_idx/``. The library knows no checkout's copy:
the scripts pass theirs as the default of ``--raw-dir``.

The arrays are batched like every dataset held in memory, by
:func:`pruning.data.sampling.array_batches` (``batches`` here is that
function, under the name the notebooks use).
"""

from __future__ import annotations

import collections
import gzip
import os
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from pruning.data import sampling
from pruning.data.raw_files import (
  DataFilesError,
  RawFile,
  default_data_dir,
  download_verified,
  file_problem,
  preparing,
)

DEFAULT_URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
"""The CVDF mirror of yann.lecun.com/exdb/mnist that tfds's own ``mnist`` uses."""

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


RAW_FILES = (
  RawFile('train-images-idx3-ubyte.gz', 9_912_422, 'f68b3c2dcbeaaa9fbdd348bbdeb94873'),
  RawFile('train-labels-idx1-ubyte.gz', 28_881, 'd53e105ee54ea40749a09fcbcd1e9432'),
  RawFile('t10k-images-idx3-ubyte.gz', 1_648_877, '9fb629c4189551a2d022fa330f9573f3'),
  RawFile('t10k-labels-idx1-ubyte.gz', 4_542, 'ec29112dd5afa0611ce80d1b7f02629c'),
)
"""The four official files, with the sizes and md5 sums of the published copies."""

# split -> (images file, labels file, number of examples)
_SPLITS = {
  'train': (RAW_FILES[0], RAW_FILES[1], 60_000),
  'test': (RAW_FILES[2], RAW_FILES[3], 10_000),
}


class MnistFilesError(DataFilesError):
  """The raw MNIST files are missing, corrupt, or not the official ones."""


def _expected_files_text(where: str) -> str:
  rows = '\n'.join(f'  {f.name:<28} {f.size:>9,} bytes  md5 {f.md5}' for f in RAW_FILES)
  return (
    f'Expected the four official MNIST files:\n{rows}\n'
    f'Put them in {where}, point $PRUNING_MNIST_DIR or raw_dir= at a directory '
    f'holding them, or download them from {DEFAULT_URL} '
    '(the CVDF mirror of http://yann.lecun.com/exdb/mnist/).'
  )


def check_raw_files(raw_dir: str | os.PathLike[str]) -> dict[str, Path]:
  """Paths of the four official files in ``raw_dir``, after checking size and md5.

  Args:
    raw_dir: directory holding the four gzipped IDX files under their
      published names.

  Returns:
    ``{file name: path}`` for the four files of :data:`RAW_FILES`.

  Raises:
    MnistFilesError: if any file is missing or its size or md5 differs from
      the published one; the message names each such file, the directory
      searched and the expected files with their md5.

  Examples:
    >>> check_raw_files('/nonexistent')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruning.data.mnist.MnistFilesError: MNIST raw files in /nonexistent are missing or corrupt:
      train-images-idx3-ubyte.gz: missing
    ...
  """
  raw_dir = Path(raw_dir)
  paths = {spec.name: raw_dir / spec.name for spec in RAW_FILES}
  problems = [
    f'  {spec.name}: {problem}'
    for spec in RAW_FILES
    if (problem := file_problem(paths[spec.name], spec)) is not None
  ]
  if problems:
    raise MnistFilesError(
      f'MNIST raw files in {raw_dir} are missing or corrupt:\n'
      + '\n'.join(problems)
      + '\n'
      + _expected_files_text(str(raw_dir))
    )
  return paths


def download_raw_files(
  download_dir: str | os.PathLike[str], url: str = DEFAULT_URL, *, timeout: float = 60.0
) -> dict[str, Path]:
  """Downloads the four official files into ``download_dir`` unless already there.

  Each file is written under a temporary name and renamed to its published
  name only after its size and md5 verify, so ``download_dir`` never holds a
  partial or corrupt file under an official name.

  Args:
    download_dir: directory to download into (created if needed).
    url: base URL of a mirror; each file is fetched from ``url + name``.
    timeout: seconds to wait on the connection for each file.

  Returns:
    ``{file name: path}`` for the four verified files.

  Raises:
    MnistFilesError: if a file cannot be downloaded, or fails verification
      (it is then deleted).
  """
  download_dir = Path(download_dir)
  download_dir.mkdir(parents=True, exist_ok=True)
  base = url if url.endswith('/') else url + '/'
  for spec in RAW_FILES:
    target = download_dir / spec.name
    if target.exists() and file_problem(target, spec) is not None:
      target.unlink()
    if not target.exists():
      download_verified(
        urllib.parse.urljoin(base, spec.name),
        target,
        spec,
        timeout=timeout,
        error=MnistFilesError,
        hint=_expected_files_text(str(download_dir)),
      )
  return check_raw_files(download_dir)


def read_idx(path: str | os.PathLike[str], shape: Sequence[int | None]) -> np.ndarray:
  """Reads an unsigned-byte IDX file (optionally gzipped) into a ``uint8`` array.

  Args:
    path: the ``.gz`` or plain IDX file.
    shape: the expected dimensions, ``None`` for any size; their number fixes
      the expected magic number (``0x0801`` for vectors, ``0x0803`` for
      stacks of images).

  Returns:
    The ``uint8`` array of the header's dimensions.

  Raises:
    ValueError: if the magic number, the dimensions or the amount of data do
      not match; the message names the file.

  Examples:
    >>> import gzip, struct, tempfile
    >>> path = tempfile.mkdtemp() + '/labels-idx1-ubyte.gz'
    >>> with gzip.open(path, 'wb') as f:
    ...   _ = f.write(struct.pack('>II', 0x0801, 3) + bytes([7, 2, 1]))
    >>> read_idx(path, shape=(None,))
    array([7, 2, 1], dtype=uint8)
    >>> read_idx(path, shape=(None, 28, 28))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: .../labels-idx1-ubyte.gz: magic number 0x00000801, expected 0x00000803 ...
  """
  path = Path(path)
  opener = gzip.open if path.suffix == '.gz' else open
  with opener(path, 'rb') as f:
    data = f.read()
  magic = 0x0800 + len(shape)  # two zero bytes, type 0x08 (unsigned byte), ndim
  found = int.from_bytes(data[:4], 'big') if len(data) >= 4 else None
  if found != magic:
    found_text = 'none (file too short)' if found is None else f'0x{found:08x}'
    raise ValueError(
      f'{path}: magic number {found_text}, expected 0x{magic:08x} '
      f'(unsigned-byte IDX with {len(shape)} dimensions); not an MNIST IDX file of this kind'
    )
  header = 4 + 4 * len(shape)
  dims = tuple(int.from_bytes(data[i : i + 4], 'big') for i in range(4, header, 4))
  if len(data) < header or any(w is not None and d != w for d, w in zip(dims, shape, strict=True)):
    raise ValueError(f'{path}: dimensions {dims}, expected {tuple(shape)}')
  count = int(np.prod(dims))
  if len(data) - header != count:
    raise ValueError(
      f'{path}: {len(data) - header:,} bytes of data after the header, expected {count:,} '
      f'for dimensions {dims}'
    )
  return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _env_raw_dir() -> Path | None:
  """``$PRUNING_MNIST_DIR``, if set."""
  env = os.environ.get('PRUNING_MNIST_DIR')
  return Path(env).expanduser() if env else None


class MnistIdx(tfds.core.GeneratorBasedBuilder):
  """MNIST read from the official IDX files (registered in tfds as ``mnist_idx``).

  Same examples, splits and order as the official files; the image is a raw
  ``uint8`` tensor rather than tfds ``mnist``'s PNG so that neither writing nor
  reading needs TensorFlow, and reading skips a PNG decode per example.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
    '1.0.0': 'Official IDX files, official order, raw uint8 images.'
  }
  # tfds infers `code_path` (where it looks for a checksums.tsv) through
  # `importlib_resources`, which tensorflow-datasets 4.9.10 uses but does not
  # install; naming the file here skips that lookup. No checksums.tsv is
  # needed: the raw files are checked against RAW_FILES instead.
  code_path = epath.Path(__file__)

  def __init__(
    self,
    *,
    raw_dir: str | os.PathLike[str] | None = None,
    url: str | None = DEFAULT_URL,
    **kwargs: Any,
  ):
    """Builder over ``raw_dir``, or ``$PRUNING_MNIST_DIR``, or a download from ``url``.

    Args:
      raw_dir: directory holding the four official files; ``None`` for
        ``$PRUNING_MNIST_DIR``, else a download from ``url``.
      url: mirror to download from when no local copy exists; ``None`` never
        downloads.
      **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``,
        ``file_format``, ...).
    """
    self._raw_dir = None if raw_dir is None else Path(raw_dir)
    self._url = url
    super().__init__(**kwargs)
    # tfds rebuilds a builder from `_original_state` when pickling it.
    self._original_state.update(raw_dir=raw_dir, url=url)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='The MNIST database of handwritten digits, from the official IDX files.',
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
          'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }
      ),
      supervised_keys=('image', 'label'),
      homepage='http://yann.lecun.com/exdb/mnist/',
      # Keep the official file order: example i of a split is record i.
      disable_shuffling=True,
    )

  def _raw_files(self, download_dir: Path) -> dict[str, Path]:
    raw_dir = self._raw_dir or _env_raw_dir()
    if raw_dir is not None:
      return check_raw_files(raw_dir)
    target = download_dir / self.name
    if self._url is None:
      raise MnistFilesError(
        'No MNIST files given (neither raw_dir= nor $PRUNING_MNIST_DIR) '
        'and downloading is off (url=None).\n' + _expected_files_text(str(target))
      )
    return download_raw_files(target, self._url)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    paths = self._raw_files(Path(dl_manager.download_dir))
    return {
      split: self._generate_examples(paths[images.name], paths[labels.name], count)
      for split, (images, labels, count) in _SPLITS.items()
    }

  def _generate_examples(
    self, images_path: Path, labels_path: Path, count: int
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    images = read_idx(images_path, shape=(count, *IMAGE_SHAPE[:2]))
    labels = read_idx(labels_path, shape=(count,))
    if labels.max() >= NUM_CLASSES:
      raise ValueError(f'{labels_path}: label {labels.max()} outside 0..{NUM_CLASSES - 1}')
    for i in range(count):
      yield i, {'image': images[i, :, :, None], 'label': int(labels[i])}


def mnist_source(
  split: str,
  *,
  data_dir: str | os.PathLike[str] | None = None,
  raw_dir: str | os.PathLike[str] | None = None,
  url: str | None = DEFAULT_URL,
) -> Sequence[dict[str, Any]]:
  """The random-access tfds data source of an MNIST split, preparing it on first use.

  Args:
    split: ``'train'`` or ``'test'`` (or any tfds split expression over them,
      e.g. ``'train[:1000]'``).
    data_dir: where the prepared dataset lives; ``None`` for
      :func:`default_data_dir`.
    raw_dir: directory of the four official files, used only when preparing;
      see :class:`MnistIdx` for the default.
    url: mirror to download from when no local copy exists; ``None`` never
      downloads.

  Returns:
    A sequence whose element ``i`` is ``{'image': uint8 (28, 28, 1),
    'label': int64}``, in the official file order; it supports
    ``__getitems__`` for batched reads.

  Raises:
    MnistFilesError: if preparation is needed and the raw files are missing
      or corrupt.

  Example:
    ``mnist_source('test')[0]`` is the first test digit, a 7:
    ``{'image': <uint8 (28, 28, 1)>, 'label': 7}``. (Not a doctest: it would
    prepare the dataset in the default ``data_dir``.)
  """
  data_dir = default_data_dir() if data_dir is None else Path(data_dir)
  with preparing(data_dir, MnistIdx.name):
    return tfds.data_source(
      MnistIdx.name,
      split=split,
      data_dir=os.fspath(data_dir),
      builder_kwargs={'raw_dir': raw_dir, 'url': url, 'file_format': 'array_record'},
    )


def load_mnist(
  split: str,
  *,
  data_dir: str | os.PathLike[str] | None = None,
  raw_dir: str | os.PathLike[str] | None = None,
  url: str | None = DEFAULT_URL,
) -> tuple[np.ndarray, np.ndarray]:
  """A whole MNIST split as numpy arrays, preparing the dataset on first use.

  Args:
    split: as for :func:`mnist_source`.
    data_dir: as for :func:`mnist_source`.
    raw_dir: as for :func:`mnist_source`.
    url: as for :func:`mnist_source`.

  Returns:
    ``(images, labels)``: ``uint8`` of shape ``(N, 28, 28, 1)`` and ``int32``
    of shape ``(N,)``, in the official file order.

  Raises:
    MnistFilesError: if preparation is needed and the raw files are missing
      or corrupt.

  Example:
    ``images, labels = load_mnist('test')`` gives ``images.shape == (10000,
    28, 28, 1)`` and ``labels[:3] == [7, 2, 1]``. Reading the 60000 training
    examples takes about 1.7 s on a 2-core CPU host, mostly tfds decoding
    each record's proto; the arrays are kept (read-only), so a second call on
    the same prepared files returns them at once. (Not a doctest: it would
    prepare the dataset in the default ``data_dir``.)
  """
  source = mnist_source(split, data_dir=data_dir, raw_dir=raw_dir, url=url)
  key = (split, _prepared_files(default_data_dir() if data_dir is None else Path(data_dir)))
  if key in _DECODED:
    _DECODED.move_to_end(key)
    return _DECODED[key]
  count = len(source)
  images = np.empty((count, *IMAGE_SHAPE), dtype=np.uint8)
  labels = np.empty((count,), dtype=np.int32)
  # Batched reads let array_record fetch many records per call instead of one.
  step = 4096
  for start in range(0, count, step):
    stop = min(start + step, count)
    for i, example in enumerate(source.__getitems__(range(start, stop)), start):
      images[i] = example['image']
      labels[i] = example['label']
  images.setflags(write=False)
  labels.setflags(write=False)
  _DECODED[key] = images, labels
  while len(_DECODED) > _DECODED_KEPT:
    _DECODED.popitem(last=False)
  return images, labels


# Decoding every record through tfds takes seconds (about 4 s for train and test on 2
# cores), and a process that runs several pipelines (a notebook, a results script, the
# tests) would pay it per run: the decoded splits are kept, read-only, keyed by the
# prepared files' names, sizes and modification times, so a dataset prepared again is
# decoded again. The last few are kept (one train and one test split take 55 MB).
_DECODED: collections.OrderedDict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = (
  collections.OrderedDict()
)
_DECODED_KEPT = 4


def _prepared_files(data_dir: Path) -> tuple[tuple[str, int, int], ...]:
  """``(path, size, mtime_ns)`` of every file of the prepared dataset under ``data_dir``."""
  root = data_dir / MnistIdx.name
  return tuple(
    (os.fspath(path), stat.st_size, stat.st_mtime_ns)
    for path in sorted(root.rglob('*'))
    if path.is_file() and (stat := path.stat())
  )


batches = sampling.array_batches
"""One epoch of batches of the arrays: :func:`pruning.data.sampling.array_batches`."""
