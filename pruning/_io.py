"""Private file helpers: results are written whole or not at all."""

from __future__ import annotations

import os
import pathlib
import tempfile


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
  """Writes ``text`` to a temporary file beside ``path``, then renames it over ``path``.

  A reader (or a killed run) never sees a half-written file, and a good file
  is only ever replaced by a complete one.
  """
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    pathlib.Path(tmp).unlink(missing_ok=True)
