"""Shared test fixtures.

Tests run with ``--import-mode=importlib`` and cannot import each other, so
shared helpers are fixtures here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from flax import nnx

from pruning.data import cifar10

# Resolved at import: tests monkeypatch cifar10.SHARED_DATASETS.
_SHARED_CIFAR10 = cifar10.SHARED_DATASETS / cifar10.ARCHIVES['jpeg'].name


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
  """Counts XLA backend compilations while it is registered (``count`` so far)."""

  EVENT = '/jax/core/compile/backend_compile_duration'

  def __init__(self):
    self.count = 0

  def __call__(self, event: str, duration: float, **kwargs: Any) -> None:
    if event == self.EVENT:
      self.count += 1


@pytest.fixture
def compile_counter():
  """A :class:`CompileCounter` listening for the duration of the test."""
  counter = CompileCounter()
  jax.monitoring.register_event_duration_secs_listener(counter)
  yield counter
  jax.monitoring.unregister_event_duration_listener(counter)


@pytest.fixture(scope='session')
def cifar10_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """A tfds data_dir holding ``cifar10_tarball/jpeg`` prepared from the real tarball.

  Use it as ``image_source('cifar10', split, data_dir=cifar10_data_dir)``.
  Preparing the 60000 JPEGs takes about 20 s on 2 CPU cores, so it happens
  once per session; skipped where ``../shared/datasets`` has no copy.
  """
  tarball = _SHARED_CIFAR10
  if not tarball.is_file():
    pytest.skip(f'no offline CIFAR-10 copy at {tarball}')
  path = tmp_path_factory.mktemp('tfds-cifar10')
  cifar10.cifar10_source('test', config='jpeg', data_dir=path, raw_path=tarball, url=None)
  return path
