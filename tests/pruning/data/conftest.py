"""Fixtures shared by the data tests: a local HTTP server and a tensorflow check.

The prepared datasets (``mnist_data_dir``, ``cifar10_data_dir``) are in
``tests/conftest.py``, for every test that needs real images, and so are the
offline copies (``shared_mnist``, ``shared_cifar10``): without one, the tests
that need it skip, or fail on CI.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, format: str, *args: object) -> None:
    del format, args  # keep the test output clean


@pytest.fixture
def serve() -> Iterator:
  """``serve(directory) -> url`` of a 127.0.0.1 HTTP server, shut down after the test."""
  servers = []

  def start(directory: Path) -> str:
    handler = functools.partial(_QuietHandler, directory=os.fspath(directory))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return f'http://127.0.0.1:{server.server_address[1]}/'

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


@pytest.fixture
def assert_no_tensorflow():
  """``check(code)``: ``code`` must run in a fresh interpreter without importing tensorflow."""

  def check(code: str) -> None:
    listing = """
      import sys
      loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow')
      print('tensorflow modules:', loaded)
    """
    script = textwrap.dedent(code) + textwrap.dedent(listing)
    result = subprocess.run(
      [sys.executable, '-c', script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'tensorflow modules: []' in result.stdout

  return check
