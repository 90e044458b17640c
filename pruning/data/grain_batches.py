"""Batches for training and evaluation: grain pipelines over an :class:`ImageSource`.

Each batch is one element of a ``grain.MapDataset`` over batch numbers: a
worker reads the batch's records with one batched array_record read,
decodes and augments them (:mod:`pruning.data.augment`, vectorised over the
batch for fixed-size images) and normalises them. ``worker_count > 0`` runs
that in as many grain worker processes (``mp_prefetch``), which hand whole
batches back in order; ``worker_count=0`` runs it in-process, with one
prefetch thread.

Which examples make each batch is :mod:`pruning.data.sampling`'s, the same
for every dataset; this module reads, decodes, augments and normalises them.

Determinism and resumption. Everything a batch holds is a function of
``(seed, epoch, batch number)``: epoch ``e`` visits the examples in
:func:`~pruning.data.sampling.epoch_order` of stream ``0``
(``np.random.default_rng([0, seed, e]).permutation(n)``), and global batch
``k`` draws its augmentation from ``np.random.default_rng([1, seed, e, k])``.
So a run resumed at epoch ``e`` (or mid-epoch with
:meth:`Batches.iter_from`) sees exactly the batches an uninterrupted run
would have seen, whatever the number of workers.

Sharding for multi-host data parallelism. With ``shard_count`` hosts, each
calls the same function with its ``shard_index`` and its own ``batch_size``
(the per-host share); the global batch ``k`` is the concatenation of the
hosts' batches ``k`` in shard order, and equals batch ``k`` of a
single-host call with ``batch_size * shard_count`` (same examples, same
augmentation; :func:`~pruning.data.sampling.batch_positions`). Every shard
yields the same number of batches.

Evaluation covers the split exactly once: batches are taken in order, the
last one is padded with zero images, and a ``valid`` mask marks the real
examples, so an evaluation step compiles once (sum metrics over ``valid``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from absl import flags

from pruning.data import augment, sampling
from pruning.data.images import AUGMENTATIONS, ImageSource


@dataclasses.dataclass(frozen=True)
class _BatchReader:
  """Batch number -> arrays; pickled into grain worker processes."""

  source: ImageSource
  batch_size: int  # per shard
  shard_index: int
  shard_count: int
  image_size: int
  augmentation: str  # one of AUGMENTATIONS; 'none' for evaluation
  seed: int | None  # None: examples in source order (evaluation)
  epoch: int
  normalize: bool

  @functools.cached_property
  def _order(self) -> np.ndarray | None:
    if self.seed is None:
      return None
    return sampling.epoch_order(
      len(self.source), seed=self.seed, epoch=self.epoch, stream=(sampling.ORDER_STREAM,)
    )

  def __getstate__(self) -> dict[str, Any]:
    # The permutation is recomputed in each worker rather than pickled.
    state = dict(self.__dict__)
    state.pop('_order', None)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)

  def __call__(self, batch: int) -> tuple[np.ndarray, ...]:
    global_size = self.batch_size * self.shard_count
    positions, valid = sampling.batch_positions(
      batch,
      batch_size=self.batch_size,
      count=len(self.source),
      shard_index=self.shard_index,
      shard_count=self.shard_count,
    )
    if self._order is not None:
      positions = self._order[positions]
    records = self.source.read(positions)
    labels = np.zeros(self.batch_size, np.int32)
    labels[: len(records)] = [int(r['label']) for r in records]
    uniforms = self._uniforms(batch, global_size)
    images = self._images([r['image'] for r in records], uniforms)
    info = self.source.info
    if self.normalize:
      images = augment.normalize(images, np.array(info.mean), np.array(info.std))
      images[len(records) :] = 0  # padding stays exactly zero
    if self.seed is None:
      return images, labels, valid
    return images, labels

  def _uniforms(self, batch: int, global_size: int) -> np.ndarray | None:
    """This shard's rows of the global batch's augmentation randoms."""
    if self.augmentation == 'none':
      return None
    width = {
      'crop_flip': augment.PAD_CROP_FLIP_UNIFORMS,
      'random_resized_crop': augment.RESIZED_CROP_UNIFORMS,
    }[self.augmentation]
    return sampling.augment_uniforms(
      seed=self.seed,
      epoch=self.epoch,
      batch=batch,
      rows=global_size,
      width=width,
      shard_index=self.shard_index,
      shard_count=self.shard_count,
    )

  def _images(self, images: list[Any], uniforms: np.ndarray | None) -> np.ndarray:
    info = self.source.info
    channels = info.image_shape[-1]
    out = np.zeros((self.batch_size, self.image_size, self.image_size, channels), np.uint8)
    if not images:
      return out
    if info.fixed_size:
      stacked = np.stack(images)
      if self.augmentation == 'crop_flip':
        stacked = augment.pad_crop_flip(stacked, uniforms[: len(images)])
      out[: len(images)] = stacked
      return out
    for i, image in enumerate(images):
      if self.augmentation == 'random_resized_crop':
        u = uniforms[i]
        out[i] = augment.crop_resize(
          image,
          functools.partial(_resized_crop_box, uniforms=u),
          self.image_size,
          flip=bool(u[-1] < 0.5),
        )
      else:
        out[i] = augment.crop_resize(image, augment.center_crop_box, self.image_size)
    return out


def _resized_crop_box(width: int, height: int, *, uniforms: np.ndarray) -> tuple[int, ...]:
  return augment.random_resized_crop_box(width, height, uniforms)


class Batches:
  """One epoch of batches: iterate it (grain pipeline, in order), ``len()``, or index it.

  ``batches[k]`` computes batch ``k`` in this process (for tests and
  debugging); iteration runs the grain pipeline with the configured worker
  processes.
  """

  def __init__(self, reader: _BatchReader, num_batches: int, worker_count: int):
    self._reader = reader
    self._num_batches = num_batches
    self._worker_count = worker_count

  def __len__(self) -> int:
    return self._num_batches

  def __getitem__(self, batch: int) -> tuple[np.ndarray, ...]:
    if not 0 <= batch < self._num_batches:
      raise IndexError(f'batch {batch} outside [0, {self._num_batches})')
    return self._reader(batch)

  def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
    return self.iter_from(0)

  def iter_from(self, start: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Batches ``start, start + 1, ...`` of the epoch, to resume mid-epoch."""
    if not 0 <= start <= self._num_batches:
      raise IndexError(f'start {start} outside [0, {self._num_batches}]')
    dataset = grain.MapDataset.range(start, self._num_batches).map(self._reader)
    if self._worker_count == 0:
      iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
      )
    else:
      _parse_absl_flags()
      # Workers compute whole batches; thread prefetch inside them would only
      # hold more batches in memory.
      iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
      ).mp_prefetch(
        grain.MultiprocessingOptions(num_workers=self._worker_count, per_worker_buffer_size=2)
      )
    return _closing(iter_dataset)

  def __repr__(self) -> str:
    r = self._reader
    kind = 'eval' if r.seed is None else f'train seed={r.seed} epoch={r.epoch}'
    return (
      f'Batches({kind}, {self._num_batches} x {r.batch_size}, shard {r.shard_index}/'
      f'{r.shard_count}, {r.augmentation}, workers={self._worker_count})'
    )


def _parse_absl_flags() -> None:
  """Lets grain's worker processes start in programs that do not use ``absl.app``.

  grain 0.2.18 reads an absl flag when it starts workers in a process that
  imported JAX, which fails unless absl flags were parsed
  (https://github.com/google/grain/issues/1355, fixed upstream by
  google/grain#1362). Marking them parsed keeps every flag at its default;
  programs that parse their own flags are unaffected.
  """
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _closing(dataset: grain.IterDataset) -> Iterator[tuple[np.ndarray, ...]]:
  """Yields from a grain dataset and shuts its worker processes down when done.

  The grain iterator (and its workers) starts on the first ``next``, not
  when the epoch's iterator is created.
  """
  iterator = iter(dataset)
  try:
    yield from iterator
  finally:
    iterator.close()


def _check_common(
  source: ImageSource,
  batch_size: int,
  image_size: int | None,
  worker_count: int,
  shard_index: int,
  shard_count: int,
) -> int:
  if not isinstance(source, ImageSource):
    raise TypeError(
      f'source must be an ImageSource (from image_source or ImageSource(records, info)), '
      f'got {type(source).__name__}'
    )
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  if worker_count < 0:
    raise ValueError(f'worker_count must be >= 0, got {worker_count}')
  if shard_count <= 0 or not 0 <= shard_index < shard_count:
    raise ValueError(
      f'shard_index must be in [0, shard_count), got shard_index={shard_index}, '
      f'shard_count={shard_count}'
    )
  info = source.info
  native = info.image_shape[0]
  if image_size is None:
    return native
  if info.fixed_size and image_size != native:
    raise ValueError(
      f'{info.name} images are {info.image_shape[:2]}; image_size={image_size} would need '
      'resizing, which this pipeline only does for variable-size datasets (imagenet2012)'
    )
  if image_size <= 0:
    raise ValueError(f'image_size must be positive, got {image_size}')
  return image_size


def train_batches(
  source: ImageSource,
  *,
  batch_size: int,
  seed: int,
  epoch: int,
  augment: bool | str = True,
  image_size: int | None = None,
  worker_count: int = 0,
  shard_index: int = 0,
  shard_count: int = 1,
  normalize: bool = True,
) -> Batches:
  """One training epoch: shuffled, augmented, normalised, remainder dropped.

  Args:
    source: the training examples (:func:`~pruning.data.images.image_source`
      or a :func:`~pruning.data.images.validation_split` part).
    batch_size: examples per batch on this shard (host); the global batch is
      ``batch_size * shard_count``.
    seed: seed of the run.
    epoch: epoch number; each epoch has its own order and augmentation.
    augment: ``True`` for the dataset's default augmentation
      (``source.info.augmentation``), ``False`` for none (variable-size
      images are then centre-cropped), or a name from
      :data:`~pruning.data.images.AUGMENTATIONS`.
    image_size: output side; ``None`` for the dataset's (32 for CIFAR-10, 224
      for ImageNet). Only variable-size datasets accept another size.
    worker_count: grain worker processes; 0 computes batches in this process.
    shard_index: this host's shard, in ``[0, shard_count)``.
    shard_count: number of hosts sharing each global batch.
    normalize: yield ``float32`` ``(x / 255 - mean) / std``; ``False`` yields
      the ``uint8`` pixels (4x less to copy to the device; normalise there
      with ``source.info.mean`` / ``std``).

  Returns:
    :class:`Batches` of ``(images float32 (B, H, W, C), labels int32 (B,))``
    with ``len() == len(source) // (batch_size * shard_count)``.

  Raises:
    ValueError: for a bad size, shard, worker count or augmentation name, or
      a split smaller than one global batch.

  Examples:
    >>> from pruning.data.images import ImageSource, dataset_info
    >>> records = [{'image': np.full((32, 32, 3), i, np.uint8), 'label': i} for i in range(10)]
    >>> source = ImageSource(records, dataset_info('cifar10'))
    >>> batches = train_batches(source, batch_size=4, seed=0, epoch=0)
    >>> len(batches), [labels.tolist() for _, labels in batches]
    (2, [[4, 6, 2, 7], [3, 5, 9, 0]])
    >>> images, _ = batches[0]
    >>> images.shape, images.dtype
    ((4, 32, 32, 3), dtype('float32'))
  """
  image_size = _check_common(source, batch_size, image_size, worker_count, shard_index, shard_count)
  info = source.info
  if augment is True:
    augmentation = info.augmentation
  elif augment is False:
    augmentation = 'none'
  else:
    augmentation = augment
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f'unknown augmentation {augmentation!r}; expected one of {AUGMENTATIONS}')
  needs_fixed = augmentation == 'crop_flip'
  if augmentation != 'none' and needs_fixed != info.fixed_size:
    raise ValueError(
      f'augmentation {augmentation!r} is for {"fixed" if needs_fixed else "variable"}-size '
      f'images; {info.name} uses {info.augmentation!r}'
    )
  num_batches = sampling.num_batches(len(source), batch_size * shard_count, drop_remainder=True)
  if num_batches == 0:
    raise ValueError(
      f'{len(source)} examples make no full global batch of {batch_size} x {shard_count} shards'
    )
  reader = _BatchReader(
    source=source,
    batch_size=batch_size,
    shard_index=shard_index,
    shard_count=shard_count,
    image_size=image_size,
    augmentation=augmentation,
    seed=seed,
    epoch=epoch,
    normalize=normalize,
  )
  return Batches(reader, num_batches, worker_count)


def eval_batches(
  source: ImageSource,
  *,
  batch_size: int,
  image_size: int | None = None,
  worker_count: int = 0,
  shard_index: int = 0,
  shard_count: int = 1,
  normalize: bool = True,
) -> Batches:
  """Every example of a split exactly once, in order, the last batch padded.

  Variable-size images are resized and centre-cropped
  (:func:`~pruning.data.augment.center_crop_box`); nothing is random.

  Args:
    source: the examples to evaluate on.
    batch_size: examples per batch on this shard.
    image_size: as for :func:`train_batches`.
    worker_count: as for :func:`train_batches`.
    shard_index: this host's shard; global batch ``k`` holds examples
      ``k * batch_size * shard_count ...`` in shard order.
    shard_count: number of hosts.
    normalize: as for :func:`train_batches`.

  Returns:
    :class:`Batches` of ``(images, labels int32 (B,), valid bool (B,))``,
    ``len() == ceil(len(source) / (batch_size * shard_count))`` on every
    shard; padded entries have zero images, label 0 and ``valid`` False.

  Examples:
    >>> from pruning.data.images import ImageSource, dataset_info
    >>> records = [{'image': np.zeros((28, 28, 1), np.uint8), 'label': i} for i in range(5)]
    >>> source = ImageSource(records, dataset_info('mnist'))
    >>> [(y.tolist(), v.tolist()) for _, y, v in eval_batches(source, batch_size=3)]
    [([0, 1, 2], [True, True, True]), ([3, 4, 0], [True, True, False])]
  """
  image_size = _check_common(source, batch_size, image_size, worker_count, shard_index, shard_count)
  global_size = batch_size * shard_count
  reader = _BatchReader(
    source=source,
    batch_size=batch_size,
    shard_index=shard_index,
    shard_count=shard_count,
    image_size=image_size,
    augmentation='none',
    seed=None,
    epoch=0,
    normalize=normalize,
  )
  num_batches = sampling.num_batches(len(source), global_size, drop_remainder=False)
  return Batches(reader, num_batches, worker_count)


class SyntheticBatches:
  """The same random batch ``steps`` times: input at no cost, for throughput runs."""

  def __init__(self, images: Any, labels: Any, steps: int):
    self._images = images
    self._labels = labels
    self._steps = steps

  def __len__(self) -> int:
    return self._steps

  def __iter__(self) -> Iterator[tuple[Any, Any]]:
    for _ in range(self._steps):
      yield self._images, self._labels


def synthetic_batches(
  *,
  batch_size: int,
  image_shape: tuple[int, ...],
  num_classes: int,
  seed: int,
  steps: int,
  sharding: Any = None,
) -> SyntheticBatches:
  """Random ``(images, labels)`` batches of the right shape, generated once and reused.

  Measures a model's training throughput without an input pipeline in the
  way: one batch of standard-normal ``float32`` images (what normalised
  images look like) and uniform labels is drawn from ``seed`` and yielded
  ``steps`` times. With ``sharding`` it is placed on the devices once
  (``jax.device_put``) and the same device arrays are yielded, so no
  host-to-device copy happens per step either; do not donate them to the
  step function.

  Args:
    batch_size: examples per batch.
    image_shape: ``(H, W, C)``, e.g. ``dataset_info(name).image_shape``.
    num_classes: labels are drawn from ``range(num_classes)``.
    seed: seed of the batch's contents.
    steps: number of batches to yield.
    sharding: a ``jax.sharding.Sharding`` for both arrays (e.g.
      ``NamedSharding(mesh, P('data'))``), or ``None`` for numpy arrays.

  Returns:
    :class:`SyntheticBatches` of ``(images float32 (B, *image_shape), labels
    int32 (B,))`` with ``len() == steps``.

  Raises:
    ValueError: for a non-positive size, class count or negative steps.

  Examples:
    >>> batches = synthetic_batches(
    ...   batch_size=2, image_shape=(32, 32, 3), num_classes=10, seed=0, steps=3)
    >>> [(x.shape, x.dtype, y.dtype) for x, y in batches][0], len(batches)
    (((2, 32, 32, 3), dtype('float32'), dtype('int32')), 3)
  """
  if batch_size <= 0 or num_classes <= 0 or steps < 0:
    raise ValueError(
      f'need batch_size > 0, num_classes > 0, steps >= 0; got batch_size={batch_size}, '
      f'num_classes={num_classes}, steps={steps}'
    )
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((batch_size, *image_shape), dtype=np.float32)
  labels = rng.integers(0, num_classes, batch_size).astype(np.int32)
  if sharding is not None:
    import jax  # only here: grain worker processes need no JAX

    images, labels = jax.device_put((images, labels), sharding)
  return SyntheticBatches(images, labels, steps)
