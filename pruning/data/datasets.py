"""Datasets as the pipeline sees them: training epochs and evaluation passes by name.

:data:`DATASETS` maps a dataset name to a function that opens it for a run
and returns an :class:`Input`. An ``Input`` yields, for this process only
(its shard of every global batch, see :mod:`pruning.experiment.parallel`):

* ``train_epoch(epoch)``: one epoch of ``(images float32[B, H, W, C],
  labels int32[B])`` training batches, in an order fixed by the run's seed
  and ``epoch``, so a resumed run sees what an uninterrupted one would;
* ``evaluation(split)``: ``(images, labels, valid bool[B])`` batches covering
  ``split`` (``'test'`` or ``'validation'``) exactly once, the last batch
  padded and marked invalid, so every batch has one shape (one compile).

``'mnist'`` holds the whole dataset in memory (:func:`array_input`, plain
numpy; see :mod:`pruning.data.mnist` for why). ``'cifar10'`` and
``'imagenet2012'`` read tfds array_record sources through the grain input
pipeline of :mod:`pruning.data` (augmentation, worker processes, one shard
per host; :class:`SourceInput`). ``'synthetic'`` yields one random batch
again and again, for throughput and smoke runs (:class:`SyntheticInput`).

Metric names follow the pipeline: ``'test'`` is the split results are
reported on (CIFAR-10's test set, ImageNet's official validation set);
``'validation'`` is carved out of the training split to choose
hyperparameters on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np

from pruning import data as image_data
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
  raw_dir: str | None = None  # raw files: MNIST's IDX folder, or the CIFAR-10 archive
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


@dataclasses.dataclass(frozen=True)
class SourceInput:
  """A tfds image dataset read through the grain input pipeline of :mod:`pruning.data`.

  Every process reads its own shard of each global batch
  (``options.shard_index`` of ``options.shard_count``).
  """

  train: image_data.ImageSource
  evaluation_sources: Mapping[str, image_data.ImageSource]
  options: InputOptions
  image_size: int | None  # side of the model's input; None: the dataset's own

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.evaluation_sources)

  def steps_per_epoch(self) -> int:
    return len(self.train) // self.options.batch_size

  def _shared(self) -> dict:
    return {
      'image_size': self.image_size,
      'worker_count': self.options.workers,
      'shard_index': self.options.shard_index,
      'shard_count': self.options.shard_count,
    }

  def train_epoch(self, epoch: int) -> Iterator[TrainBatch]:
    return iter(
      image_data.train_batches(
        self.train,
        batch_size=self.options.batch_size // self.options.shard_count,
        seed=self.options.seed,
        epoch=epoch,
        augment=True if self.options.augment is None else self.options.augment,
        **self._shared(),
      )
    )

  def evaluation(self, split: str) -> Iterator[EvalBatch]:
    if split not in self.evaluation_sources:
      raise ValueError(f'split is {split!r}; this run evaluates on {list(self.evaluation_sources)}')
    return iter(
      image_data.eval_batches(
        self.evaluation_sources[split],
        batch_size=self.options.eval_batch_size // self.options.shard_count,
        **self._shared(),
      )
    )


def _random_subset(source: image_data.ImageSource, size: int, *, seed: int):
  """A seeded random ``size`` examples of ``source``, in their stored order.

  Random, not the first ``size``: tfds image datasets may be stored sorted by
  class (the CIFAR-10 JPEG copy is).
  """
  if size >= len(source):
    return source
  chosen = np.random.default_rng(seed).permutation(len(source))[:size]
  return source.subset(np.sort(chosen))


def open_image_dataset(name: str, options: InputOptions) -> SourceInput:
  """``name``'s training split and report split as a :class:`SourceInput`.

  The validation examples are carved out of the training split with
  :func:`pruning.data.validation_split` (seeded by ``options.seed``) before
  ``train_subset`` is taken. ``train_subset`` and ``test_subset`` are
  seeded random samples (the test one the same for every seed).
  """
  info = image_data.dataset_info(name)
  where = {'data_dir': options.data_dir}
  if info.name != 'imagenet2012':
    where['raw_path'] = options.raw_dir
  train = image_data.image_source(name, 'train', **where)
  test = image_data.image_source(name, info.eval_split, **where)
  evaluation = {}
  if options.validation_size:
    train, evaluation['validation'] = image_data.validation_split(
      train, options.validation_size, seed=options.seed
    )
  if options.train_subset:
    train = _random_subset(train, options.train_subset, seed=options.seed)
  if options.test_subset:
    # The same test examples whatever the run's seed.
    test = _random_subset(test, options.test_subset, seed=0)
  evaluation['test'] = test
  image_size = None
  if not info.fixed_size and options.image_shape is not None:
    image_size = options.image_shape[0]
  return SourceInput(train, evaluation, options, image_size)


@dataclasses.dataclass(frozen=True)
class SyntheticInput:
  """Random batches of the model's input shape (:func:`pruning.data.synthetic_batches`).

  An epoch is ``train_subset`` examples (default 50 batches); the test split
  ``test_subset`` examples (default one evaluation batch) and the validation
  split ``validation_size``. Each split repeats one random batch, so the
  input costs nothing and errors are those of a network that cannot learn:
  for throughput runs and smoke tests of a configuration.
  """

  options: InputOptions

  @property
  def splits(self) -> tuple[str, ...]:
    return ('validation', 'test') if self.options.validation_size else ('test',)

  def steps_per_epoch(self) -> int:
    examples = self.options.train_subset or 50 * self.options.batch_size
    return examples // self.options.batch_size

  def _batches(self, batch_size: int, seed: int, steps: int):
    if self.options.image_shape is None or self.options.num_classes is None:
      raise ValueError('synthetic data needs the model image_shape and num_classes')
    return image_data.synthetic_batches(
      batch_size=batch_size // self.options.shard_count,
      image_shape=self.options.image_shape,
      num_classes=self.options.num_classes,
      # Each process draws its own share of the global batch.
      seed=self.options.seed * 1_000 + seed * 100 + self.options.shard_index,
      steps=steps,
    )

  def train_epoch(self, epoch: int) -> Iterator[TrainBatch]:
    return iter(self._batches(self.options.batch_size, 0, self.steps_per_epoch()))

  def evaluation(self, split: str) -> Iterator[EvalBatch]:
    if split not in self.splits:
      raise ValueError(f'split is {split!r}; this run evaluates on {list(self.splits)}')
    size = self.options.eval_batch_size
    if split == 'test':
      count = self.options.test_subset or size
    else:
      count = self.options.validation_size
    steps = math.ceil(count / size)
    for step, (images, labels) in enumerate(self._batches(size, 1 + (split == 'test'), steps)):
      valid = np.arange(step * size, (step + 1) * size) < count
      yield images, labels, _shard(valid, self.options)


def open_synthetic(options: InputOptions) -> SyntheticInput:
  """Synthetic batches shaped for the run's model."""
  return SyntheticInput(options)


DATASETS: dict[str, Callable[[InputOptions], Input]] = {
  'mnist': open_mnist,
  'cifar10': lambda options: open_image_dataset('cifar10', options),
  'imagenet2012': lambda options: open_image_dataset('imagenet2012', options),
  'synthetic': open_synthetic,
}
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
