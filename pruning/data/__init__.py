"""Input data: offline tfds datasets (MNIST, CIFAR-10, ImageNet) and grain input pipelines.

:mod:`pruning.data.images` gives every dataset one interface
(:func:`image_source`, :func:`dataset_info`, :func:`validation_split`);
:mod:`pruning.data.grain_batches` turns a source into batches
(:func:`train_batches`, :func:`eval_batches`, :func:`synthetic_batches`).
:mod:`pruning.data.mnist` keeps its own array loaders and numpy batching for
the LeNet experiments; its array-based ``validation_split`` lives there
(``pruning.data.mnist.validation_split``).
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
  batches,
  check_raw_files,
  download_raw_files,
  load_mnist,
  mnist_source,
  read_idx,
)
from pruning.data.raw_files import DataFilesError, RawFile, default_data_dir

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
  'batches',
  'check_raw_files',
  'cifar10_source',
  'dataset_info',
  'default_data_dir',
  'download_raw_files',
  'eval_batches',
  'image_source',
  'imagenet_source',
  'load_mnist',
  'mnist_source',
  'read_idx',
  'synthetic_batches',
  'train_batches',
  'validation_split',
]
