"""Datasets as the pipeline sees them: training epochs and evaluation passes by name.

:data:`DATASETS` maps a dataset name to a function that opens it for a run
and returns an :class:`Input`. An ``Input`` yields, for this process only
(its shard of every global batch, see :mod:`pruning.parallel`):

* ``train_epoch(epoch)``: one epoch of ``(images float32[B, H, W, C],
  labels int32[B])`` training batches, in an order fixed by the run's seed
  and ``epoch``, so a resumed run sees what an uninterrupted one would;
* ``evaluation(split)``: ``(images, labels, valid bool[B])`` batches covering
  ``split`` (``'test'`` or ``'validation'``) exactly once, the last batch
  padded and marked invalid, so every batch has one shape (one compile).

``'mnist'`` holds the whole dataset in memory (:func:`array_input`, plain
numpy; see :mod:`pruning.data.mnist` for why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np

from pruning.data import mnist

TrainBatch = tuple[np.ndarray, np.ndarray]
EvalBatch = tuple[np.ndarray, np.ndarray, np.ndarray]


class Input(Protocol):
  """One process's view of a dataset for one run."""

  splits: tuple[str, ...]  # evaluation splits: 'test', and 'validation' if one was carved

  def steps_per_epoch(self) -> int:
    """Training batches per epoch (each a global batch of ``batch_size``)."""
    ...

  def train_epoch(self, epoch: int) -> Iterator[TrainBatch]:
    """This process's share of every training batch of ``epoch``."""
    ...

  def evaluation(self, split: str) -> Iterator[EvalBatch]:
    """This process's share of every evaluation batch of ``split``."""
    ...


@dataclasses.dataclass(frozen=True)
class InputOptions:
  """How a run reads its data: the config's fields plus where and which shard."""

  batch_size: int  # global training batch
  eval_batch_size: int  # global evaluation batch
  seed: int  # data order (and the validation subset)
  validation_size: int = 0  # training examples held out for validation
  train_subset: int | None = None  # use only the first N training examples
  test_subset: int | None = None  # evaluate on only the first N test examples
  augment: bool | None = None  # None: the dataset's default
  image_shape: tuple[int, int, int] | None = None  # what the model takes
  num_classes: int | None = None  # what the model predicts
  data_dir: str | None = None  # where prepared datasets live
  raw_dir: str | None = None  # where raw files are (MNIST IDX files, the CIFAR-10 archive)
  workers: int = 0  # input worker processes, where the dataset has a pipeline
  shard_index: int = 0  # this process
  shard_count: int = 1  # processes


def _shard(array: np.ndarray, options: InputOptions) -> np.ndarray:
  """This process's contiguous slice of a global batch."""
  size = len(array) // options.shard_count
  return array[options.shard_index * size : (options.shard_index + 1) * size]


@dataclasses.dataclass(frozen=True)
class ArrayInput:
  """A dataset held in memory as ``uint8`` images, scaled to ``[0, 1]``.

  Training batches come from :func:`pruning.data.mnist.batches` (a
  permutation per ``(seed, epoch)``, the remainder dropped); every process
  computes the same global batch and keeps its slice.
  """

  train: tuple[np.ndarray, np.ndarray]
  evaluation_data: Mapping[str, tuple[np.ndarray, np.ndarray]]
  options: InputOptions

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.evaluation_data)

  def steps_per_epoch(self) -> int:
    return len(self.train[0]) // self.options.batch_size

  def train_epoch(self, epoch: int) -> Iterator[TrainBatch]:
    images, labels = self.train
    for x, y in mnist.batches(
      images, labels, self.options.batch_size, seed=self.options.seed, epoch=epoch
    ):
      yield _shard(x, self.options), _shard(y, self.options)

  def evaluation(self, split: str) -> Iterator[EvalBatch]:
    if split not in self.evaluation_data:
      raise ValueError(f'split is {split!r}; this run evaluates on {list(self.evaluation_data)}')
    images, labels = self.evaluation_data[split]
    size = self.options.eval_batch_size
    for x, y in mnist.batches(
      images, labels, size, seed=0, epoch=0, shuffle=False, drop_remainder=False
    ):
      valid = np.ones(size, dtype=bool)
      if len(x) < size:
        pad = size - len(x)
        valid[len(x) :] = False
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros(pad, y.dtype)])
      yield _shard(x, self.options), _shard(y, self.options), _shard(valid, self.options)


def array_input(
  train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], options: InputOptions
) -> ArrayInput:
  """An :class:`ArrayInput` with the validation split and subsets of ``options`` applied.

  The validation examples are carved out of ``train`` with
  :func:`pruning.data.mnist.validation_split` (seeded by ``options.seed``)
  before ``train_subset`` is taken.

  Examples:
    >>> images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    >>> labels = np.arange(10) % 2
    >>> data = array_input((images, labels), (images[:3], labels[:3]),
    ...                    InputOptions(batch_size=4, eval_batch_size=2, seed=0, validation_size=2))
    >>> data.splits, data.steps_per_epoch()
    (('validation', 'test'), 2)
    >>> [valid.tolist() for _, _, valid in data.evaluation('test')]
    [[True, True], [True, False]]
  """
  evaluation = {}
  if options.validation_size:
    train_x, train_y, val_x, val_y = mnist.validation_split(
      *train, options.validation_size, seed=options.seed
    )
    train = (train_x, train_y)
    evaluation['validation'] = (val_x, val_y)
  if options.train_subset:
    train = (train[0][: options.train_subset], train[1][: options.train_subset])
  if options.test_subset:
    test = (test[0][: options.test_subset], test[1][: options.test_subset])
  evaluation['test'] = test
  return ArrayInput(train, evaluation, options)


def open_mnist(options: InputOptions) -> ArrayInput:
  """MNIST's official splits (prepared on first use in ``options.data_dir``)."""
  train = mnist.load_mnist('train', data_dir=options.data_dir, raw_dir=options.raw_dir)
  test = mnist.load_mnist('test', data_dir=options.data_dir, raw_dir=options.raw_dir)
  return array_input(train, test, options)


DATASETS: dict[str, Callable[[InputOptions], Input]] = {'mnist': open_mnist}
"""Dataset name -> function opening it for a run."""


def open_input(name: str, options: InputOptions) -> Input:
  """Opens dataset ``name`` for a run, checking that it can fill a training batch.

  Raises:
    ValueError: an unknown dataset (naming the known ones), or fewer training
      examples than one batch.
  """
  if name not in DATASETS:
    raise ValueError(f'dataset is {name!r}; expected one of {sorted(DATASETS)}')
  data = DATASETS[name](options)
  if data.steps_per_epoch() == 0:
    raise ValueError(
      f'the training split of {name!r} cannot fill one batch of {options.batch_size}'
    )
  return data
