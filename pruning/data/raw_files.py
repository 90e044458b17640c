"""Raw dataset files: where they live, size + md5 checks and verified downloads.

The offline tfds builders (:mod:`pruning.data.mnist`, :mod:`pruning.data.cifar10`)
share these pieces:

* :class:`RawFile` names a published file with the size and md5 that make it
  the published one; :func:`file_problem` says why a path is not that file.
* :func:`download_verified` fetches a file under a temporary name and renames
  it to its published name only once its size and md5 verify, so a download
  directory never holds a partial or corrupt file under an official name.
* :func:`default_data_dir` is where prepared datasets live.

Where the raw files themselves are is the caller's to say (a ``raw_dir`` or
``raw_path`` argument, or the environment variable each dataset documents);
the library knows no checkout's layout. Scripts pass their checkout's
bundled copies as the default of their raw-data flag.

Preparing a tfds dataset is atomic already: tfds writes into an
``incomplete.*`` directory and renames it into place only once every split is
written, so a failure leaves nothing that a later call would reuse. Two
processes that find the same dataset missing at once would both prepare it,
and the second rename would fail; :func:`preparing` makes them take turns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import tqdm

from pruning import _io

_CHUNK = 1 << 20


class RawFile(NamedTuple):
  """One published file and the checks that make it the published one."""

  name: str  # file name, as published
  size: int  # bytes
  md5: str  # hex digest


class DataFilesError(FileNotFoundError):
  """Raw dataset files are missing, corrupt, or not the published ones."""


def md5_of(path: str | os.PathLike[str]) -> str:
  """Hex md5 digest of a file, read in 1 MiB chunks.

  Examples:
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + '/abc.txt'
    >>> _ = open(path, 'wb').write(b'abc')
    >>> md5_of(path)
    '900150983cd24fb0d6963f7d28e17f72'
  """
  digest = hashlib.md5(usedforsecurity=False)
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def file_problem(path: str | os.PathLike[str], spec: RawFile) -> str | None:
  """Why ``path`` is not the published ``spec`` file, or ``None`` if it is.

  The size is checked first, so a wrong file costs no md5 pass.

  Examples:
    >>> import tempfile
    >>> path = tempfile.mkdtemp() + '/abc.txt'
    >>> _ = open(path, 'wb').write(b'abc')
    >>> file_problem(path, RawFile('abc.txt', 3, '900150983cd24fb0d6963f7d28e17f72')) is None
    True
    >>> file_problem(path, RawFile('abc.txt', 4, '0' * 32))
    '3 bytes, expected 4 (md5 should be 00000000000000000000000000000000)'
    >>> file_problem(path + '.absent', RawFile('abc.txt', 3, '0' * 32))
    'missing'
  """
  path = Path(path)
  if not path.is_file():
    return 'missing'
  size = path.stat().st_size
  if size != spec.size:
    return f'{size:,} bytes, expected {spec.size:,} (md5 should be {spec.md5})'
  md5 = md5_of(path)
  if md5 != spec.md5:
    return f'md5 {md5}, expected {spec.md5}'
  return None


def download_verified(
  url: str,
  target: str | os.PathLike[str],
  spec: RawFile,
  *,
  timeout: float = 60.0,
  error: type[DataFilesError] = DataFilesError,
  hint: str = '',
) -> Path:
  """Downloads ``url`` to ``target``, which appears only once size and md5 verify.

  Shows a tqdm progress bar while downloading.

  Args:
    url: where to fetch the file from.
    target: final path of the file; its directory must exist.
    spec: the published file's size and md5.
    timeout: seconds to wait on the connection.
    error: exception class to raise (a dataset's own subclass of
      :class:`DataFilesError`).
    hint: text appended to every error message (what is expected and where
      else to get it).

  Returns:
    ``target`` as a :class:`~pathlib.Path`.

  Raises:
    DataFilesError: (of class ``error``) if the download fails or the file
      does not verify; nothing is left at ``target`` or under a temporary name.
  """
  target = Path(target)
  # A temporary name in the same directory makes the final rename atomic, so an
  # interrupted or corrupt download never sits under the official name.
  fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f'.{spec.name}.', suffix='.tmp')
  tmp = Path(tmp_name)
  suffix = f'\n{hint}' if hint else ''
  try:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
      with (
        os.fdopen(fd, 'wb') as out,
        urllib.request.urlopen(url, timeout=timeout) as response,
        tqdm.tqdm(
          total=spec.size, unit='B', unit_scale=True, desc=f'Downloading {spec.name}', leave=False
        ) as progress,
      ):
        while chunk := response.read(_CHUNK):
          digest.update(chunk)
          size += len(chunk)
          out.write(chunk)
          progress.update(len(chunk))
    except (urllib.error.URLError, TimeoutError) as cause:
      raise error(f'Could not download {spec.name} from {url}: {cause}{suffix}') from cause
    if size != spec.size or digest.hexdigest() != spec.md5:
      raise error(
        f'Downloaded {spec.name} from {url} does not verify: {size:,} bytes, '
        f'md5 {digest.hexdigest()}; expected {spec.size:,} bytes, md5 {spec.md5}. '
        f'The file was deleted.{suffix}'
      )
    os.replace(tmp, target)
  finally:
    tmp.unlink(missing_ok=True)
  return target


def default_data_dir() -> Path:
  """Where prepared datasets live: ``$PRUNING_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return Path(os.environ.get('PRUNING_DATA_DIR') or '~/tensorflow_datasets').expanduser()


@contextlib.contextmanager
def preparing(data_dir: str | os.PathLike[str], name: str) -> Iterator[None]:
  """Holds an exclusive lock on preparing dataset ``name`` in ``data_dir``.

  Opening a tfds dataset prepares it when it is missing; two processes that
  open one at the same time (two runs started together, test workers, a
  notebook beside a script) would both prepare it and one would fail to move
  its copy into place. Inside this block the process is the only one of
  those opening ``name`` there: a second waits, then finds it prepared. The
  lock is ``fcntl.flock`` on ``data_dir/.<name>.lock``, released when the
  block ends or the process dies.

  Examples:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as data_dir:
    ...   with preparing(data_dir, 'cifar10_tarball/jpeg'):
    ...     sorted(p.name for p in Path(data_dir).iterdir())
    ['.cifar10_tarball-jpeg.lock']
  """
  directory = Path(data_dir)
  directory.mkdir(parents=True, exist_ok=True)
  with _io.exclusive_lock(directory / f'.{name.replace("/", "-")}.lock'):
    yield
