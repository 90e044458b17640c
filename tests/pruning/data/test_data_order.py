"""Every run reads its data in the order recorded before the data paths were unified.

``data_order.json`` holds sha256 digests of the batches (pixels and labels,
with their shapes and dtypes) and of the validation and subset indices that
the code gave before MNIST and the image datasets shared one implementation
of shuffling, batching, sharding, validation split and subsets. A run resumed
or repeated with the same seed must see exactly those batches, so any change
to the data order fails here, naming the part (dataset, options, epoch or
split) whose batches differ.

The digests are computed through the API the pipeline calls
(:func:`pruning.data.datasets.open_input`, :func:`~pruning.data.datasets.array_input`)
and the legacy array batcher :func:`pruning.data.mnist.batches`, on the real
MNIST and CIFAR-10 (JPEG copy) and on index-coded arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pruning.data import datasets, mnist

RECORDED = Path(__file__).with_name('data_order.json')

# Options of the runs whose order is pinned: (name, dataset, InputOptions keywords, epochs).
MNIST_RUNS = {
  'mnist/full': ({'batch_size': 100, 'eval_batch_size': 1000, 'seed': 0}, (0, 1, 2)),
  'mnist/carved': (
    {
      'batch_size': 64,
      'eval_batch_size': 300,
      'seed': 3,
      'validation_size': 5_000,
      'train_subset': 2_000,
      'test_subset': 500,
    },
    (0, 1, 4),
  ),
}
CIFAR10_RUNS = {
  'cifar10/carved': (
    {
      'batch_size': 32,
      'eval_batch_size': 50,
      'seed': 1,
      'validation_size': 500,
      'train_subset': 256,
      'test_subset': 120,
    },
    (0, 1, 2),
  ),
}
SYNTHETIC_RUN = {
  'batch_size': 8,
  'eval_batch_size': 6,
  'seed': 2,
  'validation_size': 10,
  'train_subset': 32,
  'test_subset': 9,
  'image_shape': (4, 4, 3),
  'num_classes': 10,
}
SHARDS = (1, 2)  # processes sharing each global batch
# The first validation examples of a 60000-example training split, seed 0, as recorded.
RECORDED_MNIST_VALIDATION_HEAD = [9, 24, 49, 60, 65, 66]


def _digest(batches: Iterable[tuple[np.ndarray, ...]]) -> str:
  """sha256 over every array of every batch, with its shape and dtype."""
  digest = hashlib.sha256()
  for batch in batches:
    for array in batch:
      array = np.ascontiguousarray(array)
      digest.update(f'{array.shape}{array.dtype.str}'.encode())
      digest.update(array.tobytes())
  return digest.hexdigest()


def _input_digests(name: str, open_data, options: dict, epochs: tuple[int, ...]) -> dict:
  """Digests of every shard's batches; ``open_data(InputOptions) -> Input``."""
  out = {}
  for shard_count in SHARDS:
    for shard_index in range(shard_count):
      data = open_data(
        datasets.InputOptions(**options, shard_index=shard_index, shard_count=shard_count)
      )
      where = f'{name}/shard{shard_index}of{shard_count}'
      out[f'{where}/steps_per_epoch'] = data.steps_per_epoch()
      out[f'{where}/splits'] = list(data.splits)
      for epoch in epochs:
        out[f'{where}/train/epoch{epoch}'] = _digest(data.train_epoch(epoch))
      for split in data.splits:
        out[f'{where}/{split}'] = _digest(data.evaluation(split))
  return out


def _index_coded(count: int) -> tuple[np.ndarray, np.ndarray]:
  """Images whose pixel is ``i % 256`` and labels ``i``: batches name their examples."""
  return (np.arange(count) % 256).astype(np.uint8).reshape(count, 1, 1, 1), np.arange(count)


def array_digests() -> dict:
  """Digests that need no dataset: the array batcher, array_input's carving, synthetic."""
  out = {}
  images, labels = _index_coded(1_000)
  for shuffle in (True, False):
    for drop_remainder in (True, False):
      key = f'batches/shuffle={shuffle}/drop_remainder={drop_remainder}'
      out[key] = _digest(
        mnist.batches(
          images, labels, 96, seed=5, epoch=2, shuffle=shuffle, drop_remainder=drop_remainder
        )
      )
  train, test = _index_coded(60_000), _index_coded(10_000)
  for seed in (0, 1):
    data = datasets.array_input(
      train,
      test,
      datasets.InputOptions(
        batch_size=128,
        eval_batch_size=1_000,
        seed=seed,
        validation_size=5_000,
        train_subset=20_000,
        test_subset=3_000,
      ),
    )
    for split, (_, split_labels) in {'train': data.train, **data.evaluation_data}.items():
      out[f'array_input/seed{seed}/{split}/indices'] = _digest([split_labels])
  out.update(_input_digests('synthetic', _opener('synthetic'), SYNTHETIC_RUN, (0, 1)))
  return out


def _opener(dataset: str):
  return lambda options: datasets.open_input(dataset, options)


def mnist_digests(data_dir: Path, raw_dir: Path) -> dict:
  """The MNIST runs of :data:`MNIST_RUNS`, read as the pipeline reads them.

  ``open_input('mnist')`` is ``array_input`` over the two loaded splits; the
  splits are loaded once here (1.7 s each) and ``open_input`` itself is
  checked to give the same batches for one run.
  """
  where = {'data_dir': str(data_dir), 'raw_dir': str(raw_dir)}
  train = mnist.load_mnist('train', **where)
  test = mnist.load_mnist('test', **where)

  def opener(options: datasets.InputOptions) -> datasets.Input:
    return datasets.array_input(train, test, options)

  out = {}
  for name, (options, epochs) in MNIST_RUNS.items():
    out.update(_input_digests(name, opener, {**options, **where}, epochs))
  options, epochs = MNIST_RUNS['mnist/carved']
  data = datasets.open_input('mnist', datasets.InputOptions(**options, **where))
  out['mnist/carved/open_input/train/epoch0'] = _digest(data.train_epoch(0))
  return out


class _ResidentShare:
  """One process's rows of each global batch of the device-resident input (``open_input``).

  The resident input yields global batches; process ``shard_index`` of
  ``shard_count`` holds its contiguous block of each, which must be exactly
  what the grain pipeline gives that process.
  """

  def __init__(self, options: datasets.InputOptions):
    self.data = datasets.open_input('cifar10', options)
    self.splits = self.data.splits
    self.steps_per_epoch = self.data.steps_per_epoch
    self.options = options

  def _rows(self, batches, global_size: int):
    size = global_size // self.options.shard_count
    rows = slice(self.options.shard_index * size, (self.options.shard_index + 1) * size)
    for batch in batches:
      yield tuple(np.asarray(array)[rows] for array in batch)

  def train_epoch(self, epoch: int):
    return self._rows(self.data.train_epoch(epoch), self.options.batch_size)

  def evaluation(self, split: str):
    return self._rows(self.data.evaluation(split), self.options.eval_batch_size)


def cifar10_digests(data_dir: Path, raw_path: Path) -> dict:
  """The CIFAR-10 runs of :data:`CIFAR10_RUNS` and their source indices.

  Read through the grain pipeline (``open_image_dataset``) under the
  recorded names, and through the device-resident input the pipeline uses
  (``open_input``) under ``resident/...``: both must give the recorded batches.
  """
  out = {}
  for name, (options, epochs) in CIFAR10_RUNS.items():
    where = {'data_dir': str(data_dir), 'raw_dir': str(raw_path)}

    def grain(options: datasets.InputOptions) -> datasets.Input:
      return datasets.open_image_dataset('cifar10', options)

    out.update(_input_digests(name, grain, {**options, **where}, epochs))
    resident = _input_digests(name, _ResidentShare, {**options, **where}, epochs)
    out.update({f'resident/{key}': value for key, value in resident.items()})
    data = grain(datasets.InputOptions(**options, **where, shard_index=0, shard_count=1))
    sources = {'train': data.train, **data.evaluation_sources}
    for split, source in sources.items():
      out[f'{name}/{split}/indices'] = _digest([source.indices])
  return out


def _compare(got: dict, part: str) -> None:
  recorded = json.loads(RECORDED.read_text())
  expected = {key: value for key, value in recorded.items() if key.split('/')[0] in part.split()}
  assert expected, f'{RECORDED} records nothing for {part}'
  differ = sorted(key for key in expected if got.get(key) != expected[key])
  missing = sorted(set(expected) - set(got))
  assert not differ and not missing, (
    f'the data order changed: {len(differ)} of {len(expected)} recorded parts differ: {differ}'
  )


def test_array_batches_and_carving_keep_the_recorded_order():
  _compare(array_digests(), 'batches array_input synthetic')


def test_mnist_runs_keep_the_recorded_order(mnist_data_dir, shared_mnist):
  _compare(mnist_digests(mnist_data_dir, shared_mnist), 'mnist')


def test_cifar10_runs_keep_the_recorded_order(cifar10_data_dir, shared_cifar10):
  got = cifar10_digests(cifar10_data_dir, shared_cifar10)
  _compare(got, 'cifar10')
  # The device-resident input gives every process exactly the grain pipeline's batches.
  resident = {
    key.removeprefix('resident/'): value
    for key, value in got.items()
    if key.startswith('resident/') or key.endswith('/indices')  # indices: the carving's
  }
  _compare(resident, 'cifar10')


def test_validation_indices_are_the_recorded_ones():
  # Readable anchors beside the digests: the first validation examples of
  # MNIST-sized and CIFAR-sized training splits, and of array_input.
  train, test = _index_coded(60_000), _index_coded(10_000)
  options = datasets.InputOptions(batch_size=1, eval_batch_size=1, seed=0, validation_size=5_000)
  data = datasets.array_input(train, test, options)
  validation = data.evaluation_data['validation'][1]
  assert validation[:6].tolist() == RECORDED_MNIST_VALIDATION_HEAD
  assert len(validation) == 5_000 and np.all(np.diff(validation) > 0)
  assert len(data.train[1]) == 55_000
  assert not set(validation.tolist()) & set(data.train[1].tolist())


def test_the_record_covers_every_run():
  keys = json.loads(RECORDED.read_text())
  for name in [*MNIST_RUNS, *CIFAR10_RUNS, 'synthetic']:
    assert any(key.startswith(f'{name}/shard1of2/train') for key in keys), name
