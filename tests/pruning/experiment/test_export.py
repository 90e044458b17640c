"""Export's evaluation data for the ImageNet models, and what a missing dataset says.

ImageNet is not available to tests: the reader registered for it is run on
a stand-in source of a few JPEGs (``export.image_source`` replaced), and the
missing-data error on an empty data directory. The CIFAR-10 and MNIST
exports run end to end in tests/scripts/test_export_sparse.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import PIL.Image
import pytest

from models import MODELS
from pruning.data import sampling
from pruning.data.grain_batches import eval_batches
from pruning.data.imagenet import ImagenetNotPreparedError
from pruning.data.images import ImageSource, dataset_info
from pruning.experiment import export


def _jpeg(height: int, width: int, seed: int) -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  PIL.Image.fromarray(pixels).save(buffer, format='JPEG')
  return buffer.getvalue()


@pytest.fixture
def standin_imagenet(monkeypatch):
  """Five JPEGs of various sizes as ImageNet's validation split; the calls made for it."""
  records = [{'image': _jpeg(240 + 20 * i, 300 - 10 * i, i), 'label': 100 * i} for i in range(5)]
  calls = []

  def image_source(name, split, *, data_dir=None, raw_path=None):
    calls.append((name, split, data_dir, raw_path))
    return ImageSource(records, dataset_info(name), provenance='stand-in imagenet2012')

  monkeypatch.setattr(export, 'image_source', image_source)
  return records, calls


@pytest.mark.parametrize('model', ['vgg16', 'alexnet'])
def test_imagenet_models_are_verified_on_the_validation_split_as_the_pipeline_evaluates(
  standin_imagenet, model
):
  records, calls = standin_imagenet
  assert export.evaluation_dataset(model) == 'imagenet2012'
  shape = MODELS[model].image_shape
  split = export.EVALUATION_DATA['imagenet2012']('/data', None, shape, None)
  assert calls == [('imagenet2012', 'validation', '/data', None)]
  assert (split.dataset, split.split, split.size) == ('imagenet2012', 'validation', 5)
  batches = list(split.batches(2))
  assert [valid.tolist() for _, _, valid in batches] == [[True, True], [True, True], [True, False]]
  assert [y.tolist() for _, y, _ in batches] == [[0, 100], [200, 300], [400, 0]]
  # Resized and centre-cropped to the model's side (224, or AlexNet's 227), then
  # normalised per channel: exactly the pipeline's evaluation batches.
  source = ImageSource(records, dataset_info('imagenet2012'))
  expected = list(eval_batches(source, batch_size=2, image_size=shape[0]))
  for (x, _, _), (want, _, _) in zip(batches, expected, strict=True):
    assert x.shape == (2, *shape) and x.dtype == np.float32
    np.testing.assert_array_equal(x, want)
  assert batches[0][0].min() < 0  # normalised, not pixels


def test_an_imagenet_subset_is_the_runs_test_subset(standin_imagenet):
  records, _ = standin_imagenet
  split = export.EVALUATION_DATA['imagenet2012'](None, None, (224, 224, 3), 3)
  labels = np.concatenate([y[valid] for _, y, valid in split.batches(4)])
  chosen = sampling.carve(10, len(records), seed=7, test_subset=3, random_subsets=True).test
  assert split.size == 3 and labels.tolist() == [records[i]['label'] for i in chosen]


def test_a_missing_imagenet_names_the_model_the_split_and_how_to_prepare_it(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'model': 'alexnet'}))
  data_dir = tmp_path / 'tfds'
  with pytest.raises(ImagenetNotPreparedError) as error:
    export.export_run(tmp_path, tmp_path / 'a.jpsparse', data_dir=str(data_dir), latency_repeats=0)
  message = str(error.value)
  assert message.startswith(
    "model 'alexnet' is verified on the imagenet2012 validation split, which is not available: "
    f'No prepared imagenet2012 in {data_dir}.'
  )
  assert f'tfds build imagenet2012 --data_dir={data_dir} --file_format=array_record' in message
  assert not (tmp_path / 'a.jpsparse').exists()
