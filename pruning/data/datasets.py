"""Datasets as the pipeline sees them: training epochs and evaluation passes by name.

:data:`DATASETS` maps a dataset name to a function that opens it for a run
and returns an :class:`Input`. An ``Input`` yields, for this process only
(its shard of every global batch, see :mod:`pruning.experiment.parallel`;
a device-resident input yields the global batch itself, as ``jax.Array`` s
sharded over the mesh):

* ``train_epoch(epoch)``: one epoch of ``(images float32[B, H, W, C],
  labels int32[B])`` training batches, in an order fixed by the run's seed
  and ``epoch``, so a resumed run sees what an uninterrupted one would;
* ``evaluation(split)``: ``(images, labels, valid bool[B])`` batches covering
  ``split`` (``'test'`` or ``'validation'``) exactly once, the last batch
  padded and marked invalid, so every batch has one shape (one compile).

``'mnist'`` holds the whole dataset in memory (:func:`array_input`, plain
numpy; see :func:`pruning.data.sampling.array_batches` for why).
``'cifar10'`` is decoded once and held on the accelerator, where it is
batched and augmented (:func:`open_resident`, :mod:`pruning.data.resident`):
its batches are already global arrays sharded over the run's mesh.
``'imagenet2012'`` reads tfds array_record sources through the grain input
pipeline of :mod:`pruning.data` (augmentation, worker processes, one shard
per host; :class:`SourceInput`; :func:`open_image_dataset` opens CIFAR-10
this way too, with the same batches). ``'synthetic'`` yields one random batch
again and again, for throughput and smoke runs (:class:`SyntheticInput`).

Both kinds of real data take their examples the same way, from
:mod:`pruning.data.sampling`: the validation split and the subsets
(:func:`~pruning.data.sampling.carve`), the order of each epoch, the
examples of each batch and each host's share of it, and the padding of the
last evaluation batch. They differ only where the data do: in-memory MNIST
keeps its first ``train_subset`` examples, image datasets (stored sorted by
class) a seeded random sample; the grain pipeline augments and normalises,
MNIST is scaled to ``[0, 1]`` and, if asked (``augment``), shifted by up to
two pixels (:class:`ArrayInput`).

Metric names follow the pipeline: ``'test'`` is the split results are
reported on (CIFAR-10's test set, ImageNet's official validation set);
``'validation'`` is carved out of the training split to choose
hyperparameters on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from pruning.data import augment, grain_batches, mnist, resident, sampling
from pruning.data.images import ImageSource, dataset_info, image_source

TrainBatch = tuple[np.ndarray, np.ndarray]
EvalBatch = tuple[np.ndarray, np.ndarray, np.ndarray]


class Input(Protocol):
  """One process's view of a dataset for one run."""

  splits: tuple[str, ...]  # evaluation splits: 'test', and 'validation' if one was carved
  provenance: str  # where the examples come from (the prepared dataset, its raw files)

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
  train_subset: int | None = None  # train on N examples only (which: sampling.carve)
  test_subset: int | None = None  # evaluate on N test examples only
  augment: bool | None = None  # None: the dataset's default
  image_shape: tuple[int, int, int] | None = None  # what the model takes
  num_classes: int | None = None  # what the model predicts
  data_dir: str | None = None  # where prepared datasets live
  raw_dir: str | None = None  # raw files: MNIST's IDX folder, or the CIFAR-10 archive
  workers: int = 0  # input worker processes, where the dataset has a pipeline
  shard_index: int = 0  # this process
  shard_count: int = 1  # processes
  mesh: Mesh | None = None  # the run's data mesh (device-resident inputs); None: all devices

  def __post_init__(self):
    if self.shard_count <= 0 or not 0 <= self.shard_index < self.shard_count:
      raise ValueError(
        f'shard_index must be in [0, shard_count), got shard_index={self.shard_index}, '
        f'shard_count={self.shard_count}'
      )
    # Every input splits each global batch evenly among the processes.
    sampling.shard_batch_size(self.batch_size, self.shard_count)
    sampling.shard_batch_size(self.eval_batch_size, self.shard_count, what='eval_batch_size')

  def shard(self) -> dict[str, int]:
    """This process's place among those sharing each batch, as keyword arguments."""
    return {'shard_index': self.shard_index, 'shard_count': self.shard_count}


def _check_split(split: str, splits: tuple[str, ...]) -> None:
  if split not in splits:
    raise ValueError(f'split is {split!r}; this run evaluates on {list(splits)}')


# The provenance of arrays handed in directly: nothing says where they came from.
CALLER_ARRAYS = 'arrays given by the caller'


SHIFT = 2
"""The largest shift, in pixels along each axis, of an in-memory dataset's augmentation."""


@dataclasses.dataclass(frozen=True)
class ArrayInput:
  """A dataset held in memory as ``uint8`` images, scaled to ``[0, 1]``.

  Batches come from :func:`pruning.data.sampling.array_batches`: training
  in :func:`~pruning.data.sampling.epoch_order` (the remainder dropped),
  evaluation in stored order with the last batch padded; each process reads
  only its share of every global batch. With ``options.augment`` (off unless
  asked for) each training image is shifted at random by up to
  :data:`SHIFT` pixels along each axis, the border filled with zeros
  (:func:`~pruning.data.augment.pad_crop`; no flips: a mirrored digit is
  another symbol); evaluation is never augmented.
  """

  train: tuple[np.ndarray, np.ndarray]
  evaluation_data: Mapping[str, tuple[np.ndarray, np.ndarray]]
  options: InputOptions
  provenance: str = CALLER_ARRAYS

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.evaluation_data)

  def steps_per_epoch(self) -> int:
    return sampling.num_batches(len(self.train[0]), self.options.batch_size, drop_remainder=True)

  def train_epoch(self, epoch: int) -> Iterator[TrainBatch]:
    batches = sampling.array_batches(
      *self.train,
      self.options.batch_size,
      seed=self.options.seed,
      epoch=epoch,
      **self.options.shard(),
    )
    return self._shifted(batches, epoch) if self.options.augment else batches

  def _shifted(self, batches: Iterator[TrainBatch], epoch: int) -> Iterator[TrainBatch]:
    """``batches`` with each image shifted at random by up to :data:`SHIFT` pixels each way.

    The shifts of global batch ``k`` are :func:`~pruning.data.augment.pad_crop`
    of :func:`~pruning.data.sampling.augment_uniforms` ``(seed, epoch, k)``;
    each process takes its rows, so they depend on neither the process count
    nor a resume.
    """
    for batch, (images, labels) in enumerate(batches):
      uniforms = sampling.augment_uniforms(
        seed=self.options.seed,
        epoch=epoch,
        batch=batch,
        rows=self.options.batch_size,
        width=augment.PAD_CROP_UNIFORMS,
        **self.options.shard(),
      )
      yield augment.pad_crop(images, uniforms, padding=SHIFT), labels

  def evaluation(self, split: str) -> Iterator[EvalBatch]:
    _check_split(split, self.splits)
    size = sampling.shard_batch_size(self.options.eval_batch_size, self.options.shard_count)
    for x, y in sampling.array_batches(
      *self.evaluation_data[split],
      self.options.eval_batch_size,
      seed=0,
      epoch=0,
      shuffle=False,
      drop_remainder=False,
      **self.options.shard(),
    ):
      # Real rows come first; padding rows are zero images with label 0.
      valid = np.arange(size) < len(x)
      yield _padded(x, size), _padded(y, size), valid


def _padded(array: np.ndarray, size: int) -> np.ndarray:
  """``array`` with zero rows appended up to ``size`` rows."""
  if len(array) == size:
    return array
  out = np.zeros((size, *array.shape[1:]), array.dtype)
  out[: len(array)] = array
  return out


def array_input(
  train: tuple[np.ndarray, np.ndarray],
  test: tuple[np.ndarray, np.ndarray],
  options: InputOptions,
  provenance: str = CALLER_ARRAYS,
) -> ArrayInput:
  """An :class:`ArrayInput` with the validation split and subsets of ``options`` applied.

  The examples are chosen by :func:`pruning.data.sampling.carve` (seeded by
  ``options.seed``): the validation examples are carved out of ``train``
  before ``train_subset`` is taken; ``train_subset`` and ``test_subset`` are
  the first examples of what is left (MNIST is stored in its official,
  unsorted order).

  Raises:
    ValueError: ``train`` or ``test`` has more images than labels or the
      reverse, or ``validation_size`` is not below the training examples.

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
  for name, (images, labels) in (('train', train), ('test', test)):
    if len(images) != len(labels):
      raise ValueError(f'{name}: {len(images)} images but {len(labels)} labels')
  splits = sampling.carve(
    len(train[0]),
    len(test[0]),
    seed=options.seed,
    validation_size=options.validation_size,
    train_subset=options.train_subset,
    test_subset=options.test_subset,
  )
  evaluation = {}
  if splits.validation is not None:
    evaluation['validation'] = _take(train, splits.validation)
  evaluation['test'] = _take(test, splits.test)
  return ArrayInput(_take(train, splits.train), evaluation, options, provenance)


def _take(arrays: tuple[np.ndarray, np.ndarray], positions: np.ndarray):
  return arrays[0][positions], arrays[1][positions]


def open_mnist(options: InputOptions) -> ArrayInput:
  """MNIST's official splits (prepared on first use in ``options.data_dir``)."""
  train = mnist.load_mnist('train', data_dir=options.data_dir, raw_dir=options.raw_dir)
  test = mnist.load_mnist('test', data_dir=options.data_dir, raw_dir=options.raw_dir)
  # Prepared by now, so naming the source reads only its metadata.
  source = image_source('mnist', 'train', data_dir=options.data_dir, raw_path=options.raw_dir)
  return array_input(train, test, options, source.provenance)


@dataclasses.dataclass(frozen=True)
class SourceInput:
  """A tfds image dataset read through the grain input pipeline of :mod:`pruning.data`.

  Every process reads its own shard of each global batch
  (``options.shard_index`` of ``options.shard_count``).
  """

  train: ImageSource
  evaluation_sources: Mapping[str, ImageSource]
  options: InputOptions
  image_size: int | None  # side of the model's input; None: the dataset's own

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.evaluation_sources)

  @property
  def provenance(self) -> str:
    return self.train.provenance

  def steps_per_epoch(self) -> int:
    return sampling.num_batches(len(self.train), self.options.batch_size, drop_remainder=True)

  def _pipeline_options(self) -> dict:
    return {
      'image_size': self.image_size,
      'worker_count': self.options.workers,
      **self.options.shard(),
    }

  def train_epoch(self, epoch: int) -> Iterator[TrainBatch]:
    return iter(
      grain_batches.train_batches(
        self.train,
        batch_size=sampling.shard_batch_size(self.options.batch_size, self.options.shard_count),
        seed=self.options.seed,
        epoch=epoch,
        augment=True if self.options.augment is None else self.options.augment,
        **self._pipeline_options(),
      )
    )

  def evaluation(self, split: str) -> Iterator[EvalBatch]:
    _check_split(split, self.splits)
    return iter(
      grain_batches.eval_batches(
        self.evaluation_sources[split],
        batch_size=sampling.shard_batch_size(
          self.options.eval_batch_size, self.options.shard_count
        ),
        **self._pipeline_options(),
      )
    )


def open_image_dataset(name: str, options: InputOptions) -> SourceInput:
  """``name``'s training split and report split as a :class:`SourceInput`.

  The examples are chosen by :func:`pruning.data.sampling.carve` (seeded by
  ``options.seed``): the validation examples are carved out of the training
  split before ``train_subset`` is taken; ``train_subset`` and
  ``test_subset`` are seeded random samples (the test one the same for every
  seed), not the first examples, because tfds image datasets may be stored
  sorted by class (the CIFAR-10 JPEG copy is).
  """
  info = dataset_info(name)
  where = {'data_dir': options.data_dir}
  if info.name != 'imagenet2012':
    where['raw_path'] = options.raw_dir
  train = image_source(name, 'train', **where)
  test = image_source(name, info.eval_split, **where)
  splits = sampling.carve(
    len(train),
    len(test),
    seed=options.seed,
    validation_size=options.validation_size,
    train_subset=options.train_subset,
    test_subset=options.test_subset,
    random_subsets=True,
  )
  evaluation = {}
  if splits.validation is not None:
    evaluation['validation'] = train.subset(splits.validation)
  evaluation['test'] = test.subset(splits.test)
  train = train.subset(splits.train)
  image_size = None
  if not info.fixed_size and options.image_shape is not None:
    image_size = options.image_shape[0]
  return SourceInput(train, evaluation, options, image_size)


def open_resident(name: str, options: InputOptions) -> resident.ResidentInput:
  """``name``'s examples as :func:`open_image_dataset` chooses them, held on the devices.

  The same validation split, subsets, epoch order, crops and normalisation
  as the grain pipeline, batched on the accelerator
  (:mod:`pruning.data.resident`); batches are global arrays sharded over
  ``options.mesh`` (default: every device).
  """
  data = open_image_dataset(name, options)
  mesh = options.mesh
  if mesh is None:
    mesh = jax.make_mesh((jax.device_count(),), ('data',), (AxisType.Auto,))
  return resident.resident_input(
    data.train,
    data.evaluation_sources,
    mesh=mesh,
    batch_size=options.batch_size,
    eval_batch_size=options.eval_batch_size,
    seed=options.seed,
    augment=True if options.augment is None else options.augment,
  )


@dataclasses.dataclass(frozen=True)
class SyntheticInput:
  """Random batches of the model's input shape (:func:`pruning.data.grain_batches.synthetic_batches`).

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

  provenance = 'synthetic: random images and labels, no dataset'

  def steps_per_epoch(self) -> int:
    examples = self.options.train_subset or 50 * self.options.batch_size
    return examples // self.options.batch_size

  def _batches(self, batch_size: int, seed: int, steps: int):
    if self.options.image_shape is None or self.options.num_classes is None:
      raise ValueError('synthetic data needs the model image_shape and num_classes')
    return grain_batches.synthetic_batches(
      batch_size=sampling.shard_batch_size(batch_size, self.options.shard_count),
      image_shape=self.options.image_shape,
      num_classes=self.options.num_classes,
      # Each process draws its own share of the global batch.
      seed=self.options.seed * 1_000 + seed * 100 + self.options.shard_index,
      steps=steps,
    )

  def train_epoch(self, epoch: int) -> Iterator[TrainBatch]:
    return iter(self._batches(self.options.batch_size, 0, self.steps_per_epoch()))

  def evaluation(self, split: str) -> Iterator[EvalBatch]:
    _check_split(split, self.splits)
    size = self.options.eval_batch_size
    if split == 'test':
      count = self.options.test_subset or size
    else:
      count = self.options.validation_size
    steps = sampling.num_batches(count, size, drop_remainder=False)
    for step, (x, y) in enumerate(self._batches(size, 1 + (split == 'test'), steps)):
      _, valid = sampling.batch_positions(
        step,
        batch_size=sampling.shard_batch_size(size, self.options.shard_count),
        count=count,
        **self.options.shard(),
      )
      yield x, y, valid


def open_synthetic(options: InputOptions) -> SyntheticInput:
  """Synthetic batches shaped for the run's model."""
  return SyntheticInput(options)


DATASETS: dict[str, Callable[[InputOptions], Input]] = {
  'mnist': open_mnist,
  'cifar10': lambda options: open_resident('cifar10', options),
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
