"""Shared test fixtures.

Tests run with ``--import-mode=importlib`` and cannot import each other, so
shared helpers are fixtures here.

Tests of several JAX processes start them with ``run_processes``, which
kills them all when one fails or the time is up and shows every one's output.

What some tests need beyond the project's dependencies comes from fixtures
here too: the offline datasets (``shared_mnist``, ``shared_cifar10``, and
``mnist_data_dir``, ``cifar10_data_dir`` prepared from them) and torch
(``torch``). Without one, its tests skip; on CI (``CI=true``) they fail
instead, naming what is missing, so that a CI run cannot pass while testing
nothing of the data or of the torch comparisons.

The library knows no checkout's data location: a test that reads data gets
it from these fixtures and passes it on (``raw_dir=shared_mnist``,
``raw_path=shared_cifar10``), or reads a dataset they prepared.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import jax
import numpy as np
import pytest
from flax import nnx

from pruning.data import cifar10, mnist

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / 'shared' / 'datasets'
"""The checkout's offline dataset copies, ``../shared/datasets`` beside the repository root."""

# For tests/pruning/data/test_missing_data.py, which runs the fixtures below in a fresh pytest.
pytest_plugins = ['pytester']

TORCH_INSTALL = 'pip install torch==2.13.0'
"""How to install torch, a benchmark-only dependency (the CPU wheel)."""


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
  """``(path, leaf)`` pairs; ``None`` and nnx Variables count as leaves."""
  pairs, _ = jax.tree_util.tree_flatten_with_path(
    tree, is_leaf=lambda x: x is None or isinstance(x, nnx.Variable)
  )
  return [(jax.tree_util.keystr(p, simple=True, separator='/'), leaf) for p, leaf in pairs]


def _unbox(x: Any) -> Any:
  return x.get_value() if isinstance(x, nnx.Variable) else x


def _assert_trees_equal(actual: Any, expected: Any) -> None:
  """Same leaf paths (``None`` leaves included), shapes, dtypes and exact values.

  Containers may differ (a plain dict against an nnx ``State``) as long as the
  leaf paths agree. Every failure names the leaf's ``'a/b/kernel'`` path.
  """
  got = dict(_named_leaves(actual))
  want = dict(_named_leaves(expected))
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  assert not missing and not extra, f'leaf paths differ: missing {missing}, unexpected {extra}'
  for name, w in want.items():
    g = got[name]
    if w is None or g is None:
      assert g is None and w is None, f'leaf {name!r}: got {g!r}, expected {w!r}'
      continue
    g, w = np.asarray(_unbox(g)), np.asarray(_unbox(w))
    assert g.shape == w.shape, f'leaf {name!r}: shape {g.shape}, expected {w.shape}'
    assert g.dtype == w.dtype, f'leaf {name!r}: dtype {g.dtype}, expected {w.dtype}'
    if not np.array_equal(g, w, equal_nan=g.dtype.kind == 'f'):
      differ = np.argwhere(g != w)
      first = tuple(int(i) for i in differ[0]) if differ.size else ()
      raise AssertionError(
        f'leaf {name!r}: {len(differ)} of {g.size} entries differ; first at {first}: '
        f'got {g[first]!r}, expected {w[first]!r}'
      )


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache for the session.

  Several tests run the whole pipeline on the same tiny model, and every run
  builds new jitted functions; with the cache, XLA compiles each identical
  program once (a tiny VGG-16's train step: ~5 s) instead of once per run.
  """
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('jax_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  yield
  jax.config.update('jax_compilation_cache_dir', None)


@pytest.fixture
def assert_trees_equal():
  """``assert_trees_equal(actual, expected)``; a failure names the leaf's path."""
  return _assert_trees_equal


class SmallCNN(nnx.Module):
  """Conv -> BatchNorm -> Linear: kernels, biases and a norm scale to tell apart."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 3, kernel_size=(3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(3, rngs=rngs)
    self.fc = nnx.Linear(12, 5, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.bn(self.conv(x))
    return self.fc(x.reshape(x.shape[0], -1))


@pytest.fixture
def small_cnn() -> SmallCNN:
  """A fresh small nnx model: conv kernel (3, 3, 1, 3), fc kernel (12, 5)."""
  return SmallCNN(nnx.Rngs(0))


class CompileCounter:
  """Counts XLA compilations while it is registered (``count`` so far).

  A program served from the session's persistent compilation cache (see
  :func:`compilation_cache`) counts too: it was a compile request all the
  same, and a test of "no recompilation" must see it.
  """

  EVENT = '/jax/core/compile/backend_compile_duration'
  CACHE_HIT = '/jax/compilation_cache/cache_hits'

  def __init__(self):
    self.count = 0

  def __call__(self, event: str, duration: float, **kwargs: Any) -> None:
    if event == self.EVENT:
      self.count += 1

  def on_event(self, event: str, **kwargs: Any) -> None:
    if event == self.CACHE_HIT:
      self.count += 1


@pytest.fixture
def compile_counter():
  """A :class:`CompileCounter` listening for the duration of the test."""
  counter = CompileCounter()
  jax.monitoring.register_event_duration_secs_listener(counter)
  jax.monitoring.register_event_listener(counter.on_event)
  yield counter
  jax.monitoring.unregister_event_listener(counter.on_event)
  jax.monitoring.unregister_event_duration_listener(counter)


def _missing(what: str) -> NoReturn:
  """Skips the test for want of ``what``; on CI (``CI=true``) fails it instead.

  On a developer's machine a missing dataset or benchmark-only package is a
  reason to skip; on CI, which is set up to have everything, a skip would
  pass a run that never ran the test.
  """
  if os.environ.get('CI') == 'true':
    pytest.fail(f'{what} (CI=true: this test must run on CI, not skip)', pytrace=False)
  pytest.skip(what)


@pytest.fixture(scope='session')
def shared_datasets() -> Path:
  """The offline dataset copies, ``../shared/datasets`` beside the repository root.

  A test of the skip-or-fail behaviour overrides it with a missing directory.
  """
  return SHARED_DATASETS


@pytest.fixture(scope='session')
def shared_mnist(shared_datasets: Path) -> Path:
  """The directory of the four official MNIST IDX files, or a skip (a failure on CI)."""
  path = shared_datasets / 'mnist'
  if not path.is_dir():
    _missing(f'no offline MNIST copy at {path}')
  return path


@pytest.fixture(scope='session')
def shared_cifar10(shared_datasets: Path) -> Path:
  """The CIFAR-10 JPEG tarball, or a skip (a failure on CI)."""
  path = shared_datasets / cifar10.ARCHIVES['jpeg'].name
  if not path.is_file():
    _missing(f'no offline CIFAR-10 copy at {path}')
  return path


@pytest.fixture(scope='session')
def torch() -> ModuleType:
  """PyTorch, for side-by-side checks, or a skip (a failure on CI).

  A benchmark-only dependency: the toolkit never imports it, and setup.cfg
  does not list it; ``.ci/run`` installs it.
  """
  try:
    return importlib.import_module('torch')
  except ImportError as error:
    problem = str(error)
  # Outside the except block, so that the report is the message alone.
  _missing(f'torch is not installed ({problem}); install it with `{TORCH_INSTALL}`')


@pytest.fixture(scope='session')
def mnist_data_dir(tmp_path_factory: pytest.TempPathFactory, shared_mnist: Path) -> Path:
  """A tfds data_dir holding ``mnist_idx`` prepared from the real files (``shared_mnist``).

  Use it as ``load_mnist(split, data_dir=mnist_data_dir)`` or as a run's
  ``data_dir``: prepared, it needs no raw files. Preparing takes a few seconds,
  once per session; skipped (failed on CI) where ``../shared/datasets`` has no
  copy.
  """
  path = tmp_path_factory.mktemp('tfds-mnist')
  mnist.mnist_source('test', data_dir=path, raw_dir=shared_mnist, url=None)
  return path


@pytest.fixture(scope='session')
def cifar10_data_dir(tmp_path_factory: pytest.TempPathFactory, shared_cifar10: Path) -> Path:
  """A tfds data_dir holding ``cifar10_tarball/jpeg`` prepared from the real tarball.

  Use it as ``image_source('cifar10', split, data_dir=cifar10_data_dir)``.
  Preparing the 60000 JPEGs takes about 20 s on 2 CPU cores, so it happens
  once per session; skipped (failed on CI) where ``../shared/datasets`` has
  no copy.
  """
  path = tmp_path_factory.mktemp('tfds-cifar10')
  cifar10.cifar10_source('test', config='jpeg', data_dir=path, raw_path=shared_cifar10, url=None)
  return path


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture
def free_port():
  """``free_port()``: a TCP port of 127.0.0.1 free now (the OS's choice), for a JAX coordinator."""
  return _free_port


class ProcessesFailed(AssertionError):
  """A process of ``run_processes`` failed or timed out; the message holds every one's output."""


def _run_processes(
  commands: Sequence[Sequence[str]],
  logs: Path,
  *,
  timeout: float,
  envs: Sequence[Mapping[str, str]],
) -> list[str]:
  """Runs ``commands`` at once and waits until every one exits 0; returns their stdouts.

  Command ``i`` runs with the environment ``envs[i]``, in its own session (process group), its stdout and stderr going
  to files under ``logs`` (no pipe can fill up and block it). When one exits
  with an error, or ``timeout`` seconds pass, those still running are killed
  with their groups: the processes of one JAX job wait for each other in
  collectives, so one failure would otherwise hang the others.

  Raises:
    ProcessesFailed: naming each process's command and exit status (-9:
      killed) with the end of its stderr and stdout.
  """
  logs.mkdir(parents=True, exist_ok=True)
  running = []
  timed_out = False
  try:
    for index, command in enumerate(commands):
      with (logs / f'{index}.out').open('w') as out, (logs / f'{index}.err').open('w') as err:
        running.append(
          subprocess.Popen(
            command, stdout=out, stderr=err, env=dict(envs[index]), start_new_session=True
          )
        )
    deadline = time.monotonic() + timeout
    while True:
      codes = [p.poll() for p in running]
      if all(code == 0 for code in codes) or any(code not in (None, 0) for code in codes):
        break
      if time.monotonic() > deadline:
        timed_out = True
        break
      time.sleep(0.1)
  finally:
    for process in running:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
  codes = [p.returncode for p in running]
  if any(codes):
    parts = [f'exit statuses {codes}' + (f' (killed after {timeout:.0f} s)' if timed_out else '')]
    for index, command in enumerate(commands):
      parts.append(f'--- process {index}, exit status {codes[index]}: {" ".join(command)}')
      for stream in ('err', 'out'):
        text = (logs / f'{index}.{stream}').read_text(errors='replace')
        parts.append(f'std{stream} (its last 6000 characters):\n{text[-6000:]}')
    raise ProcessesFailed('\n'.join(parts))
  return [(logs / f'{index}.out').read_text() for index in range(len(commands))]


@pytest.fixture
def run_processes(tmp_path: Path):
  """``run_processes(commands, timeout=..., env_updates=()) -> stdouts``: at once, all killed on a failure.

  Every command gets this process's environment with the repository root
  first on ``PYTHONPATH`` (the children import this checkout) and
  ``JAX_PLATFORMS=cpu``, updated with ``env_updates[i]`` for command ``i``
  where given. The outputs are kept under ``tmp_path / 'processes' / <call>``.
  """
  root = str(Path(__file__).resolve().parents[1])
  path = os.environ.get('PYTHONPATH')
  base = {
    **os.environ,
    'PYTHONPATH': root if not path else f'{root}{os.pathsep}{path}',
    'JAX_PLATFORMS': 'cpu',
  }
  calls = []

  def run(
    commands: Sequence[Sequence[str]],
    *,
    timeout: float,
    env_updates: Sequence[Mapping[str, str]] = (),
  ) -> list[str]:
    updates = [*env_updates, *[{}] * (len(commands) - len(env_updates))]
    calls.append(commands)
    logs = tmp_path / 'processes' / str(len(calls))
    envs = [{**base, **update} for update in updates]
    return _run_processes(commands, logs, timeout=timeout, envs=envs)

  return run
