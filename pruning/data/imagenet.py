"""ImageNet (ILSVRC 2012) as prepared by tfds's own ``imagenet2012`` builder.

ImageNet cannot be downloaded automatically (its licence requires an
account), so the user prepares it once; afterwards it is read like every
other dataset here, through ``tfds.data_source`` and without TensorFlow.

Preparation (tensorflow-datasets 4.9.10; the builder itself reads the tar
files through ``tf.io.gfile``, so this one step needs TensorFlow)::

  pip install tensorflow            # CPU build is enough; only for `tfds build`
  mkdir -p $DATA_DIR/downloads/manual
  # From https://image-net.org/download-images (after registering):
  #   ILSVRC2012_img_train.tar  147,897,477,120 bytes
  #   ILSVRC2012_img_val.tar      6,744,924,160 bytes
  mv ILSVRC2012_img_train.tar ILSVRC2012_img_val.tar $DATA_DIR/downloads/manual/
  tfds build imagenet2012 --data_dir=$DATA_DIR --file_format=array_record

tfds checks both archives against its own checksums, writes ``train``
(1,281,167) and ``validation`` (50,000) splits of ``{'image': JPEG bytes,
'label': int, 'file_name': str}`` into ``$DATA_DIR/imagenet2012/5.1.0/``
(about 150 GB), and fixes the 22 CMYK images and the one PNG. A copy already
prepared as TFRecord converts in place with ``tfds convert_format
--dataset_version_dir=$DATA_DIR/imagenet2012/5.1.0 --out_file_format=array_record``.

:func:`imagenet_source` then reads a split with the JPEG left encoded
(``tfds.decode.SkipDecoding``): the input pipeline decodes it with Pillow in
its worker processes, at the reduced scale the crop needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from pruning.data.raw_files import DataFilesError, default_data_dir

NAME = 'imagenet2012'
FEATURES = ('image', 'label', 'file_name')
"""The features of tfds's ``imagenet2012`` (image: JPEG ``Image``, label: 1000-class ``ClassLabel``)."""


class ImagenetNotPreparedError(DataFilesError):
  """No ``imagenet2012`` array_record dataset in the data directory."""


def _prepared_versions(data_dir: Path) -> list[Path]:
  root = data_dir / NAME
  if not root.is_dir():
    return []
  return sorted(p.parent for p in root.glob('*/dataset_info.json'))


def preparation_steps(data_dir: str | os.PathLike[str]) -> str:
  """The commands that prepare ImageNet into ``data_dir``, for error messages."""
  return (
    f'Prepare ImageNet once (needs TensorFlow for this step only):\n'
    f'  pip install tensorflow\n'
    f'  mkdir -p {data_dir}/downloads/manual\n'
    f'  # put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
    f'(from https://image-net.org/download-images) there\n'
    f'  tfds build {NAME} --data_dir={data_dir} --file_format=array_record'
  )


def imagenet_source(split: str, *, data_dir: str | os.PathLike[str] | None = None) -> Any:
  """The tfds data source of a prepared ImageNet split, images left as JPEG bytes.

  Args:
    split: ``'train'`` or ``'validation'`` (or a tfds split expression).
    data_dir: where ``imagenet2012`` was prepared; ``None`` for
      :func:`~pruning.data.raw_files.default_data_dir`.

  Returns:
    A tfds ``ArrayRecordDataSource`` whose elements are ``{'image': JPEG
    bytes, 'label': int64, 'file_name': bytes}``.

  Raises:
    ImagenetNotPreparedError: if ``data_dir`` holds no prepared
      ``imagenet2012``, or only one not in array_record format; the message
      gives the preparation steps.

  Examples:
    >>> imagenet_source('validation', data_dir='/nonexistent')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pruning.data.imagenet.ImagenetNotPreparedError: No prepared imagenet2012 in /nonexistent.
    Prepare ImageNet once (needs TensorFlow for this step only):
    ...
  """
  data_dir = default_data_dir() if data_dir is None else Path(data_dir)
  versions = _prepared_versions(data_dir)
  if not versions:
    raise ImagenetNotPreparedError(
      f'No prepared {NAME} in {data_dir}.\n' + preparation_steps(data_dir)
    )
  if not any(versions[-1].glob(f'{NAME}-*.array_record*')):
    raise ImagenetNotPreparedError(
      f'{versions[-1]} holds {NAME} in another file format than array_record, which '
      'tfds.data_source needs. Convert it once with\n'
      f'  tfds convert_format --dataset_version_dir={versions[-1]} --out_file_format=array_record'
    )
  return tfds.data_source(
    NAME,
    split=split,
    data_dir=os.fspath(data_dir),
    download=False,
    decoders={'image': tfds.decode.SkipDecoding()},
  )
