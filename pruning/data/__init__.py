"""Input data: offline tfds datasets (MNIST, CIFAR-10, ImageNet) and their batches.

:mod:`pruning.data.images` gives every dataset one interface
(:func:`image_source`, :func:`dataset_info`, :func:`validation_split`).
:mod:`pruning.data.sampling` says which examples a run reads and in which
batch, for every dataset: the validation split and subsets (:func:`carve`),
each epoch's order, each host's share of a batch; on top of it
:mod:`pruning.data.grain_batches` reads image sources (:func:`train_batches`,
:func:`eval_batches`, :func:`synthetic_batches`) and :func:`array_batches`
batches arrays held in memory (MNIST, :func:`load_mnist`).
:mod:`pruning.data.datasets` opens a dataset for a run by name.

Raw files are read from the ``raw_dir``/``raw_path`` given, or the
environment variable each dataset documents (``$PRUNING_MNIST_DIR``,
``$PRUNING_CIFAR10_PATH``), else downloaded; prepared datasets live in
``data_dir`` (default ``$PRUNING_DATA_DIR`` or ``~/tensorflow_datasets``).
"""

from pruning.data.cifar10 import CLASS_NAMES, Cifar10FilesError, Cifar10Tarball, cifar10_source
from pruning.data.grain_batches import (
  Batches,
  SyntheticBatches,
  eval_batches,
  synthetic_batches,
  train_batches,
)
from pruning.data.imagenet import ImagenetNotPreparedError, imagenet_source
from pruning.data.images import (
  AUGMENTATIONS,
  ImageDatasetInfo,
  ImageSource,
  dataset_info,
  image_source,
  validation_split,
)
from pruning.data.mnist import (
  DEFAULT_URL,
  RAW_FILES,
  MnistFilesError,
  MnistIdx,
  check_raw_files,
  download_raw_files,
  load_mnist,
  mnist_source,
  read_idx,
)
from pruning.data.raw_files import DataFilesError, RawFile, default_data_dir
from pruning.data.sampling import array_batches, carve, epoch_order, validation_indices

__all__ = [
  'AUGMENTATIONS',
  'CLASS_NAMES',
  'DEFAULT_URL',
  'RAW_FILES',
  'Batches',
  'Cifar10FilesError',
  'Cifar10Tarball',
  'DataFilesError',
  'ImageDatasetInfo',
  'ImageSource',
  'ImagenetNotPreparedError',
  'MnistFilesError',
  'MnistIdx',
  'RawFile',
  'SyntheticBatches',
  'array_batches',
  'carve',
  'check_raw_files',
  'cifar10_source',
  'dataset_info',
  'default_data_dir',
  'download_raw_files',
  'epoch_order',
  'eval_batches',
  'image_source',
  'imagenet_source',
  'load_mnist',
  'mnist_source',
  'read_idx',
  'synthetic_batches',
  'train_batches',
  'validation_indices',
  'validation_split',
]
