"""Input data: MNIST from the official IDX files as a tfds array_record dataset."""

from pruning.data.mnist import (
  DEFAULT_URL,
  RAW_FILES,
  MnistFilesError,
  MnistIdx,
  RawFile,
  batches,
  check_raw_files,
  default_data_dir,
  download_raw_files,
  load_mnist,
  mnist_source,
  read_idx,
  validation_split,
)

__all__ = [
  'DEFAULT_URL',
  'RAW_FILES',
  'MnistFilesError',
  'MnistIdx',
  'RawFile',
  'batches',
  'check_raw_files',
  'default_data_dir',
  'download_raw_files',
  'load_mnist',
  'mnist_source',
  'read_idx',
  'validation_split',
]
