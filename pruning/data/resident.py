"""Small image datasets held on the accelerator: decoded once, batched and augmented there.

CIFAR-10's 60,000 images are 184 MB as ``uint8``. Read through the grain
pipeline (:mod:`pruning.data.grain_batches`) every epoch decodes, crops and
normalises them on the host, and a GPU then waits for the host (about 16 s
per epoch of VGG-16-CIFAR on an H200, most of it host work). Here each split
is decoded once per process (:func:`decoded_split`, kept for the next run in
the same process), copied to the devices once, and every batch is gathered,
cropped, flipped and normalised by one compiled function on the devices.
Only the batch's example numbers and crop choices (a few hundred integers)
travel from the host per step.

The batches are the grain pipeline's, example for example and pixel for
pixel: the same epoch order (:func:`pruning.data.sampling.epoch_order`,
stream :data:`~pruning.data.sampling.ORDER_STREAM`), the same examples per
batch (:func:`~pruning.data.sampling.batch_positions`), the same crops and
flips of the same random numbers (:func:`~pruning.data.sampling.augment_uniforms`,
:func:`~pruning.data.augment.crop_flip_choices`) and the same normalisation
(:func:`~pruning.data.augment.normalize`), so a run is deterministic in
``(seed, epoch)`` and resumes anywhere. Tests compare the two paths.

Batches come out as global ``jax.Array`` s sharded over the run's data mesh
(``P('data')``): each device gathers its own rows from its replica of the
dataset, and no process assembles anything. Every process holds the whole
dataset on each of its devices (replicated), so this is for datasets that
fit in accelerator memory many times over; ImageNet stays on grain.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pruning.data import augment, sampling
from pruning.data.images import ImageDatasetInfo, ImageSource

_READ_CHUNK = 4096  # records per batched read (array_record fetches many at once)


def decoded_split(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
  """All of ``source``'s examples as arrays: ``uint8 (N, H, W, C)`` images and ``int32 (N,)`` labels.

  The whole underlying split is read once per process and kept, read-only,
  keyed by the source's provenance (the prepared dataset and its raw file's
  checksum) and split; a subset (``source.subset``) is then a fancy index
  into it. A source that names no provenance or split is read every time.

  Raises:
    ValueError: the images are not all of the dataset's fixed shape.
  """
  split = getattr(source.records, 'split', None)  # tfds data sources know theirs
  key = (source.provenance, str(split), len(source.records))
  cached = bool(source.provenance) and split is not None
  if cached and key in _DECODED:
    _DECODED.move_to_end(key)
    images, labels = _DECODED[key]
  else:
    images, labels = _read_all(source)
    if cached:
      _DECODED[key] = images, labels
      while len(_DECODED) > _DECODED_KEPT:
        _DECODED.popitem(last=False)
  if source.indices is None:
    return images, labels
  return images[source.indices], labels[source.indices]


# Reading CIFAR-10's 50,000 training records through tfds takes about 4 s on 2 cores;
# a process that opens several runs (a notebook, a results script, the tests) reads
# each split once. Two splits of CIFAR-10 take 184 MB.
_DECODED: collections.OrderedDict[Any, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
_DECODED_KEPT = 4


def _read_all(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
  whole = ImageSource(source.records, source.info, provenance=source.provenance)
  count = len(whole)
  shape = source.info.image_shape
  images = np.empty((count, *shape), np.uint8)
  labels = np.empty((count,), np.int32)
  for start in range(0, count, _READ_CHUNK):
    stop = min(start + _READ_CHUNK, count)
    for i, record in enumerate(whole.read(np.arange(start, stop)), start):
      image = augment.decode_rgb(record['image'])
      if image.shape != shape:
        raise ValueError(
          f'{source.info.name} example {i} has shape {image.shape}; the device-resident '
          f'input needs every image at the dataset shape {shape}'
        )
      images[i] = image
      labels[i] = int(record['label'])
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


@dataclasses.dataclass(frozen=True)
class ResidentInput:
  """A fixed-size image dataset on the devices of ``mesh``, batched there.

  The :class:`pruning.data.datasets.Input` of ``'cifar10'``: ``train_epoch``
  and ``evaluation`` yield global arrays sharded ``P('data')`` over ``mesh``
  (``float32`` normalised images, ``int32`` labels, and for evaluation a
  ``bool`` mask of the real rows; padding rows are zero images with label 0).
  """

  train: tuple[jax.Array, jax.Array]  # uint8 (N, H, W, C), int32 (N,); replicated
  evaluation_data: Mapping[str, tuple[jax.Array, jax.Array]]
  info: ImageDatasetInfo
  mesh: Mesh
  batch_size: int  # global
  eval_batch_size: int  # global
  seed: int
  augment: bool
  padding: int = 4  # of the crop: pixels of zeros on each side
  provenance: str = ''  # the training source's: where the examples come from

  @property
  def splits(self) -> tuple[str, ...]:
    return tuple(self.evaluation_data)

  def steps_per_epoch(self) -> int:
    return sampling.num_batches(len(self.train[1]), self.batch_size, drop_remainder=True)

  def train_epoch(self, epoch: int) -> Iterator[tuple[jax.Array, jax.Array]]:
    count = len(self.train[1])
    order = sampling.epoch_order(
      count, seed=self.seed, epoch=epoch, stream=(sampling.ORDER_STREAM,)
    )
    for batch in range(self.steps_per_epoch()):
      positions, _ = sampling.batch_positions(batch, batch_size=self.batch_size, count=count)
      if self.augment:
        uniforms = sampling.augment_uniforms(
          seed=self.seed,
          epoch=epoch,
          batch=batch,
          rows=self.batch_size,
          width=augment.PAD_CROP_FLIP_UNIFORMS,
        )
        offsets, flip = augment.crop_flip_choices(uniforms, self.batch_size, padding=self.padding)
      else:  # the centre: no shift, and no flip
        offsets = np.full((self.batch_size, 2), self.padding, np.int64)
        flip = np.zeros(self.batch_size, bool)
      yield self._train_batch(
        *self.train,
        self._replicated(order[positions].astype(np.int32)),
        self._replicated(offsets.astype(np.int32)),
        self._replicated(flip),
      )

  def evaluation(self, split: str) -> Iterator[tuple[jax.Array, jax.Array, jax.Array]]:
    if split not in self.splits:
      raise ValueError(f'split is {split!r}; this run evaluates on {list(self.splits)}')
    images, labels = self.evaluation_data[split]
    count = len(labels)
    for batch in range(sampling.num_batches(count, self.eval_batch_size, drop_remainder=False)):
      positions, valid = sampling.batch_positions(
        batch, batch_size=self.eval_batch_size, count=count
      )
      rows = np.zeros(self.eval_batch_size, np.int32)  # padding rows read example 0, then zeroed
      rows[: len(positions)] = positions
      yield self._eval_batch(images, labels, self._replicated(rows), self._replicated(valid))

  def _replicated(self, x: np.ndarray) -> jax.Array:
    # Every process computes the same numbers; each passes all of them.
    return jax.make_array_from_process_local_data(NamedSharding(self.mesh, PartitionSpec()), x)

  @functools.cached_property
  def _normalized_values(self) -> np.ndarray:
    """``float32 (256, C)``: :func:`augment.normalize` of every pixel value in every channel."""
    channels = self.info.image_shape[-1]
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
    return augment.normalize(values, np.array(self.info.mean), np.array(self.info.std))

  def _normalize(self, images: jax.Array) -> jax.Array:
    # A look-up of the host's own float32 results: bit for bit what the grain pipeline
    # gives (XLA may fuse x * scale - offset into one rounding where numpy makes two).
    table = jnp.asarray(self._normalized_values)
    return table[images.astype(jnp.int32), jnp.arange(table.shape[1])]

  @functools.cached_property
  def _batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec(*self.mesh.axis_names))

  @functools.cached_property
  def _train_batch(self):
    batch = self._batch_sharding
    height, width, channels = self.info.image_shape
    pad = self.padding

    def train_batch(images, labels, rows, offsets, flip):
      x = jnp.pad(images[rows], ((0, 0), (pad, pad), (pad, pad), (0, 0)))
      crop = jax.vmap(
        lambda image, at: jax.lax.dynamic_slice(image, (at[0], at[1], 0), (height, width, channels))
      )(x, offsets)
      crop = jnp.where(flip[:, None, None, None], crop[:, :, ::-1], crop)
      return self._normalize(crop), labels[rows]

    return jax.jit(train_batch, out_shardings=(batch, batch))

  @functools.cached_property
  def _eval_batch(self):
    batch = self._batch_sharding

    def eval_batch(images, labels, rows, valid):
      x = jnp.where(valid[:, None, None, None], self._normalize(images[rows]), 0.0)
      return x, jnp.where(valid, labels[rows], 0), valid

    return jax.jit(eval_batch, out_shardings=(batch, batch, batch))


def resident_input(
  train: ImageSource,
  evaluation: Mapping[str, ImageSource],
  *,
  mesh: Mesh,
  batch_size: int,
  eval_batch_size: int,
  seed: int,
  augment: bool,
) -> ResidentInput:
  """Decodes the sources (:func:`decoded_split`) and puts them on every device of ``mesh``.

  Args:
    train: the examples trained on (after the validation split and subset).
    evaluation: split name -> its examples.
    mesh: the run's 1-D ``('data',)`` mesh; batches are sharded over it.
    batch_size: global training batch.
    eval_batch_size: global evaluation batch.
    seed: the run's seed (epoch order and augmentation).
    augment: pad-crop-flip the training images (the dataset's augmentation
      must be ``'crop_flip'``).

  Raises:
    ValueError: the dataset's images are not of one fixed size, or a batch
      does not split evenly over the mesh's devices.
  """
  info = train.info
  if len(mesh.axis_names) != 1:
    raise ValueError(f'mesh has axes {mesh.axis_names}; the input shards batches over one')
  if not info.fixed_size:
    raise ValueError(f'{info.name} has images of varying size; the device-resident input needs one')
  if augment and info.augmentation != 'crop_flip':
    raise ValueError(
      f'{info.name} augments by {info.augmentation!r}; the device-resident input does crop_flip'
    )
  devices = mesh.devices.size
  for what, size in (('batch_size', batch_size), ('eval_batch_size', eval_batch_size)):
    if size % devices:
      raise ValueError(f'{what} is {size}; it must be a multiple of the {devices} mesh devices')
  replicated = NamedSharding(mesh, PartitionSpec())

  def place(source: ImageSource) -> tuple[jax.Array, jax.Array]:
    return tuple(
      jax.make_array_from_process_local_data(replicated, x) for x in decoded_split(source)
    )

  return ResidentInput(
    train=place(train),
    evaluation_data={split: place(source) for split, source in evaluation.items()},
    info=info,
    mesh=mesh,
    batch_size=batch_size,
    eval_batch_size=eval_batch_size,
    seed=seed,
    augment=augment,
    provenance=train.provenance,
  )
