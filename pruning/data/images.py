"""Image classification datasets behind one interface: MNIST, CIFAR-10, ImageNet.

* :func:`dataset_info` gives what a model and an input pipeline need to know
  about a dataset (image shape, classes, normalisation, default
  augmentation, split names and sizes).
* :func:`image_source` returns an :class:`ImageSource`: random access to
  ``{'image': uint8 (H, W, C), 'label': int}`` examples of a split, backed by
  the dataset's tfds array_record data source and preparing the offline
  dataset on first use (MNIST and CIFAR-10; ImageNet is prepared by the user,
  see :mod:`pruning.data.imagenet`).
* :func:`validation_split` carves a seeded validation subset out of any
  source by index (:func:`pruning.data.sampling.validation_indices`, the
  rule every dataset's runs use), for choosing hyperparameters without
  touching the test split.

Batches come from :mod:`pruning.data.grain_batches`.

Example::

  info = dataset_info('cifar10')
  train = image_source('cifar10', 'train')
  train, validation = validation_split(train, 5000, seed=0)
  test = image_source('cifar10', info.eval_split)
  print(train.provenance)  # which archive the pixels came from
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pruning.data import augment, cifar10, imagenet, mnist
from pruning.data.sampling import validation_indices


@dataclasses.dataclass(frozen=True)
class ImageDatasetInfo:
  """What a model and an input pipeline need to know about an image dataset."""

  name: str  # 'mnist', 'cifar10' or 'imagenet2012'
  image_shape: tuple[int, int, int]  # model input (H, W, C) by default
  num_classes: int
  mean: tuple[float, ...]  # per channel, of pixel / 255, over the training split
  std: tuple[float, ...]
  augmentation: str  # default training augmentation: 'none', 'crop_flip', 'random_resized_crop'
  fixed_size: bool  # every stored image already has image_shape
  splits: dict[str, int]  # split name -> number of examples
  eval_split: str  # the held-out split results are reported on


_DATASETS = {
  'mnist': ImageDatasetInfo(
    name='mnist',
    image_shape=(28, 28, 1),
    num_classes=10,
    mean=(0.1307,),
    std=(0.3081,),
    augmentation='none',
    fixed_size=True,
    splits={'train': 60_000, 'test': 10_000},
    eval_split='test',
  ),
  'cifar10': ImageDatasetInfo(
    name='cifar10',
    image_shape=(32, 32, 3),
    num_classes=10,
    # Per-channel mean and standard deviation of the official training split.
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    augmentation='crop_flip',
    fixed_size=True,
    splits={'train': 50_000, 'test': 10_000},
    eval_split='test',
  ),
  'imagenet2012': ImageDatasetInfo(
    name='imagenet2012',
    image_shape=(224, 224, 3),
    num_classes=1000,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    augmentation='random_resized_crop',
    fixed_size=False,
    splits={'train': 1_281_167, 'validation': 50_000},
    eval_split='validation',
  ),
}

AUGMENTATIONS = ('none', 'crop_flip', 'random_resized_crop')
"""Training augmentations: none; 4-pixel pad + random crop + flip (fixed-size
images); random-resized crop + flip (variable-size images)."""


def dataset_info(name: str) -> ImageDatasetInfo:
  """Shape, classes, normalisation, default augmentation and splits of a dataset.

  Args:
    name: ``'mnist'``, ``'cifar10'`` (or ``'cifar10/jpeg'``,
      ``'cifar10/official'``) or ``'imagenet2012'``.

  Raises:
    ValueError: for an unknown name; the message lists the known ones.

  Examples:
    >>> info = dataset_info('cifar10')
    >>> info.image_shape, info.num_classes, info.augmentation, info.eval_split
    ((32, 32, 3), 10, 'crop_flip', 'test')
    >>> dataset_info('imagenet2012').image_shape
    (224, 224, 3)
  """
  base = name.split('/')[0]
  if base not in _DATASETS or (base != 'cifar10' and '/' in name):
    raise ValueError(
      f'unknown dataset {name!r}; expected one of mnist, cifar10, cifar10/jpeg, '
      'cifar10/official, imagenet2012'
    )
  return _DATASETS[base]


class ImageSource(Sequence):
  """Random access to ``{'image': uint8 (H, W, C), 'label': int}`` examples of a split.

  Wraps a random-access record source (a tfds data source, or any sequence
  of dicts with ``'image'`` and ``'label'``); ``'image'`` may be a ``uint8``
  array or encoded image bytes (ImageNet's JPEGs), which indexing decodes
  to RGB. The input pipeline reads undecoded records through :meth:`read`
  so it can decode at the size it needs. Pickles cheaply (for grain worker
  processes) when the records do.

  Attributes:
    records: the underlying source.
    info: the dataset's :class:`ImageDatasetInfo`.
    indices: the examples of ``records`` this source exposes, in order, or
      ``None`` for all (validation splits are views).
    provenance: where the examples came from (tfds name, config, version,
      source archive), for results files.
  """

  def __init__(
    self,
    records: Sequence[dict[str, Any]],
    info: ImageDatasetInfo,
    *,
    indices: np.ndarray | None = None,
    provenance: str = '',
  ):
    self.records = records
    self.info = info
    self.indices = None if indices is None else np.asarray(indices, np.int64)
    self.provenance = provenance

  def __len__(self) -> int:
    return len(self.records) if self.indices is None else len(self.indices)

  def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
    (record,) = self.read([index])
    return {'image': augment.decode_rgb(record['image']), 'label': int(record['label'])}

  def read(self, positions: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
    """The undecoded records at ``positions`` (batched reads where supported).

    Raises:
      IndexError: for a position outside ``[0, len(self))``.
    """
    positions = np.asarray(positions, np.int64)
    if positions.size and not (0 <= positions.min() and positions.max() < len(self)):
      raise IndexError(f'positions {positions.min()}..{positions.max()} outside [0, {len(self)})')
    keys = positions if self.indices is None else self.indices[positions]
    keys = keys.tolist()
    if hasattr(self.records, '__getitems__'):
      return list(self.records.__getitems__(keys))
    return [self.records[key] for key in keys]

  def subset(self, positions: Sequence[int] | np.ndarray) -> ImageSource:
    """A view of the examples at ``positions`` of this source, in that order."""
    positions = np.asarray(positions, np.int64)
    keys = positions if self.indices is None else self.indices[positions]
    return ImageSource(self.records, self.info, indices=keys, provenance=self.provenance)

  def __repr__(self) -> str:
    return (
      f'ImageSource({self.info.name}, {len(self)} examples, {self.provenance or "no provenance"})'
    )


def _tfds_provenance(source: Any) -> str:
  info = source.dataset_info
  metadata = dict(info.metadata or {})
  text = f'tfds {info.full_name}'
  if 'source_file' in metadata:
    text += f' from {metadata["source_file"]} (md5 {metadata["source_md5"]})'
  description = info.description.strip().splitlines()[0] if info.description else ''
  return f'{text}: {description}' if description else text


def image_source(
  name: str,
  split: str,
  *,
  data_dir: str | os.PathLike[str] | None = None,
  raw_path: str | os.PathLike[str] | None = None,
) -> ImageSource:
  """The examples of a dataset split, preparing the offline dataset if needed.

  Args:
    name: ``'mnist'``; ``'cifar10'`` (the project's JPEG copy when present,
      else the official archive, see
      :func:`pruning.data.cifar10.resolve_config`), ``'cifar10/jpeg'`` or
      ``'cifar10/official'``; ``'imagenet2012'``.
    split: a split of the dataset (``dataset_info(name).splits``: ``'train'``
      and ``'test'``, or ImageNet's ``'train'`` and ``'validation'``), or a
      tfds split expression over one (``'train[:1000]'``).
    data_dir: where prepared datasets live; ``None`` for
      ``$PRUNING_DATA_DIR`` or ``~/tensorflow_datasets``.
    raw_path: the raw data to prepare from: MNIST's directory of IDX files,
      or a CIFAR-10 tarball (its kind picks the config). Not used for
      ImageNet, which the user prepares with ``tfds build``.

  Returns:
    An :class:`ImageSource` with ``provenance`` naming the prepared dataset.

  Raises:
    ValueError: for an unknown dataset or split.
    DataFilesError: if the raw files are missing or corrupt, or ImageNet is
      not prepared in ``data_dir``.
  """
  info = dataset_info(name)
  base_split = split.split('[')[0]
  if base_split not in info.splits:
    hint = ' (carve a validation set out of train with validation_split)' if 'val' in split else ''
    raise ValueError(
      f'{info.name} has no split {split!r}; expected one of {sorted(info.splits)}{hint}'
    )
  if info.name == 'mnist':
    records = mnist.mnist_source(split, data_dir=data_dir, raw_dir=raw_path)
  elif info.name == 'cifar10':
    config = name.split('/')[1] if '/' in name else None
    records = cifar10.cifar10_source(split, config=config, data_dir=data_dir, raw_path=raw_path)
  else:
    if raw_path is not None:
      raise ValueError(
        'raw_path is not used for imagenet2012: prepare it once with `tfds build imagenet2012` '
        '(see pruning.data.imagenet) and pass data_dir'
      )
    records = imagenet.imagenet_source(split, data_dir=data_dir)
  return ImageSource(records, info, provenance=_tfds_provenance(records))


def validation_split(
  source: ImageSource, size: int, *, seed: int
) -> tuple[ImageSource, ImageSource]:
  """Splits a source into training and a seeded validation subset of ``size`` examples.

  Index-based: both parts are views of ``source`` (nothing is copied), each
  in the source's order. The validation examples are the first ``size`` of
  ``np.random.default_rng(seed).permutation(len(source))``
  (:func:`pruning.data.sampling.validation_indices`, as for every run's
  validation split).

  Args:
    source: an :class:`ImageSource` (or a view of one).
    size: number of validation examples, ``0 < size < len(source)``.
    seed: the same seed gives the same subset.

  Returns:
    ``(train, validation)`` sources of ``len(source) - size`` and ``size``
    examples.

  Raises:
    ValueError: if ``size`` is out of range.

  Examples:
    >>> records = [{'image': np.zeros((1, 1, 1), np.uint8), 'label': i} for i in range(10)]
    >>> source = ImageSource(records, dataset_info('mnist'))
    >>> train, val = validation_split(source, 3, seed=0)
    >>> len(train), [val[i]['label'] for i in range(3)]
    (7, [2, 4, 6])
  """
  train, validation = validation_indices(len(source), size, seed=seed)
  return source.subset(train), source.subset(validation)
