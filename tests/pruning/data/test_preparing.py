"""Preparing a dataset is one process's job at a time (raw_files.preparing)."""

from __future__ import annotations

import fcntl
import threading

import numpy as np
import pytest

from pruning.data import cifar10, mnist, raw_files


def _locked(path) -> bool:
  """Whether another holder has the lock file at ``path``."""
  with open(path, 'a') as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@pytest.mark.parametrize(
  ('open_source', 'name'),
  [
    (lambda d: mnist.mnist_source('test', data_dir=d, url=None), 'mnist_idx'),
    (
      lambda d: cifar10.cifar10_source('test', config='jpeg', data_dir=d, url=None),
      'cifar10_tarball/jpeg',
    ),
  ],
)
def test_tfds_opens_the_dataset_under_the_lock(tmp_path, monkeypatch, open_source, name):
  lock = tmp_path / f'.{name.replace("/", "-")}.lock'
  seen = []

  def data_source(opened, **kwargs):
    seen.append((opened, _locked(lock)))
    return 'source'

  monkeypatch.setattr('tensorflow_datasets.data_source', data_source)
  assert open_source(tmp_path) == 'source'
  assert seen == [(name, True)]
  assert not _locked(lock)  # released after


def test_a_second_opener_waits_for_the_first(tmp_path):
  done = threading.Event()

  def wait():
    with raw_files.preparing(tmp_path, 'mnist_idx'):
      done.set()

  with raw_files.preparing(tmp_path, 'mnist_idx'):
    other = threading.Thread(target=wait)
    other.start()
    assert not done.wait(0.5)
  other.join(10)
  assert done.is_set()


def test_the_lock_is_released_when_preparing_fails(tmp_path):
  with pytest.raises(RuntimeError), raw_files.preparing(tmp_path, 'x'):
    raise RuntimeError('prepare failed')
  assert not _locked(tmp_path / '.x.lock')


def test_two_threads_preparing_mnist_together_both_read_it(tmp_path, shared_mnist):
  results, errors = {}, []

  def read(i):
    try:
      source = mnist.mnist_source('test', data_dir=tmp_path, raw_dir=shared_mnist, url=None)
      results[i] = (len(source), int(source[0]['label']), np.asarray(source[9999]['image']).sum())
    except Exception as error:
      errors.append(error)

  threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(120)
  assert not errors, errors
  assert results[0] == results[1] and results[0][:2] == (10000, 7)
