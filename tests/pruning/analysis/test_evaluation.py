"""Tests for pruning.analysis.evaluation: top-1 error on a fixed dataset as a function of params."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import classification_error


def reference_error(logits, labels):
  return 100.0 * float(np.mean(np.argmax(logits, axis=-1) != labels))


@pytest.mark.parametrize('batch_size', [1, 7, 30, 64])
def test_matches_numpy_with_a_padded_last_batch(batch_size):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(30, 6), dtype=np.uint8)
  labels = rng.integers(0, 3, size=30)
  w = rng.normal(size=(6, 3)).astype(np.float32)
  error = classification_error(
    lambda p, x: x @ p['w'], images, labels, batch_size=batch_size, preprocess=lambda x: x / 255
  )
  expected = reference_error((images / 255).astype(np.float32) @ w, labels)
  assert error({'w': jnp.asarray(w)}) == pytest.approx(expected)
  # The padding is never counted, even where it would be classified wrongly.
  assert error({'w': jnp.zeros((6, 3))}) == pytest.approx(100 * np.mean(labels != 0))


def test_nnx_model_in_eval_mode_compiles_once(small_cnn, compile_counter):
  images = np.random.default_rng(1).normal(size=(20, 2, 2, 1)).astype(np.float32)
  labels = np.arange(20) % 5
  error = classification_error(small_cnn, images, labels, batch_size=6)
  params = nnx.state(small_cnn, nnx.Param)
  small_cnn.eval()
  assert error(params) == pytest.approx(reference_error(np.asarray(small_cnn(images)), labels))
  zeroed = nnx.state(small_cnn, nnx.Param)
  zeroed['fc']['kernel'].set_value(np.zeros((12, 5), np.float32))
  zeroed['fc']['bias'].set_value(np.zeros(5, np.float32))
  before = compile_counter.count
  # All logits tie at zero: argmax is class 0 everywhere.
  assert error(zeroed) == pytest.approx(100 * np.mean(labels != 0))
  assert compile_counter.count == before


@pytest.mark.parametrize(
  ('images', 'labels', 'batch_size', 'message'),
  [
    (np.zeros((3, 2)), np.zeros(2, int), 10, '3 images and 2 labels'),
    (np.zeros((0, 2)), np.zeros(0, int), 10, '0 images and 0 labels'),
    (np.zeros((3, 2)), np.zeros(3, int), 0, 'batch_size is 0'),
  ],
)
def test_bad_input(images, labels, batch_size, message):
  with pytest.raises(ValueError, match=message):
    classification_error(lambda p, x: x, images, labels, batch_size=batch_size)
