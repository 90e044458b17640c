"""Private file helpers: results are written whole or not at all; a lock file serialises work."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import uuid
from collections.abc import Iterator


def write_atomic(path: str | os.PathLike[str], text: str | bytes) -> None:
  """Writes ``text`` (or raw bytes) to a temporary file beside ``path``, then renames it.

  A reader (or a killed run) never sees a half-written file, and a good file
  is only ever replaced by a complete one: the data reach the disk before the
  rename.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.{uuid.uuid4().hex}.tmp')
  # os.open with 0o666 honours the umask (mkstemp would leave the file 0600).
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, 'wb' if isinstance(text, bytes) else 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    pathlib.Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
  """Holds ``fcntl.flock`` on ``path`` (created if missing) while the block runs.

  It is the lock ``flock(1)`` takes, so a block waits for a shell's
  ``flock path ...`` and the other way round; it is released when the block
  ends or the process dies.
  """
  with open(path, 'a') as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)
