"""Tests for the crops, flips, resizing and normalisation of :mod:`pruning.data.augment`."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest

from pruning.data import augment


def _images(batch: int = 6, size: int = 8, channels: int = 3) -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.integers(1, 256, (batch, size, size, channels), dtype=np.uint8)


def test_pad_crop_flip_matches_explicit_crops():
  images = _images()
  uniforms = np.random.default_rng(1).random((6, 3))
  out = augment.pad_crop_flip(images, uniforms, padding=2)
  assert out.shape == images.shape and out.dtype == images.dtype
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i, (u_row, u_col, u_flip) in enumerate(uniforms):
    row, col = int(u_row * 5), int(u_col * 5)
    expected = padded[i, row : row + 8, col : col + 8]
    if u_flip < 0.5:
      expected = expected[:, ::-1]
    np.testing.assert_array_equal(out[i], expected)


def _crops_found(images: np.ndarray, out: np.ndarray, padding: int) -> np.ndarray:
  """``(B, 3)`` row offset, column offset and flip (0/1) of the crop each output image is.

  Every crop of the zero-padded input, unflipped and flipped, is compared
  with each output image; an image that matches none or several is ``-1``.
  """
  batch, height, width, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  found = np.full((batch, 3), -1)
  matches = np.zeros(batch, int)
  for row in range(2 * padding + 1):
    for col in range(2 * padding + 1):
      crop = padded[:, row : row + height, col : col + width]
      for flip, candidate in enumerate((crop, crop[:, :, ::-1])):
        same = (candidate == out).all(axis=(1, 2, 3))
        found[same] = (row, col, flip)
        matches += same
  found[matches != 1] = -1
  return found


def test_pad_crop_flip_reaches_every_offset_and_both_flips():
  images = _images(batch=2000, size=12, channels=1)
  uniforms = np.random.default_rng(2).random((2000, 3))
  out = augment.pad_crop_flip(images, uniforms, padding=4)
  # Read off the output alone: which crop of the padded image, flipped or not.
  found = _crops_found(images, out, padding=4)
  assert (found >= 0).all(), f'{(found < 0).any(axis=1).sum()} images are no single crop'
  rows, cols, flipped = found[:, 0], found[:, 1], found[:, 2] == 1
  # Offsets 0..8 equally likely, each side flipped half the time.
  for offsets in (rows, cols):
    frequencies = np.bincount(offsets, minlength=9) / len(out)
    np.testing.assert_allclose(frequencies, np.full(9, 1 / 9), atol=0.03)
  assert 0.45 < flipped.mean() < 0.55, flipped.mean()
  # And per image: flipped exactly where its flip number is below 0.5.
  np.testing.assert_array_equal(flipped, uniforms[:, 2] < 0.5)


def test_flip_is_a_flip():
  images = _images()
  centre = np.tile([0.5, 0.5, 0.0], (6, 1))
  no_flip = np.tile([0.5, 0.5, 0.99], (6, 1))
  np.testing.assert_array_equal(augment.pad_crop_flip(images, centre), images[:, :, ::-1])
  np.testing.assert_array_equal(augment.pad_crop_flip(images, no_flip), images)


def test_pad_crop_flip_rejects_wrong_uniforms():
  with pytest.raises(ValueError, match=r'uniforms of shape \(6, 2\), expected \(6, 3\)'):
    augment.pad_crop_flip(_images(), np.zeros((6, 2)))


def test_pad_crop_reaches_every_shift_and_never_flips():
  images = _images(batch=2000, size=12, channels=1)
  uniforms = np.random.default_rng(4).random((2000, augment.PAD_CROP_UNIFORMS))
  out = augment.pad_crop(images, uniforms, padding=2)
  assert out.shape == images.shape and out.dtype == images.dtype
  found = _crops_found(images, out, padding=2)
  assert (found >= 0).all(), f'{(found < 0).any(axis=1).sum()} images are no single crop'
  assert (found[:, 2] == 0).all()
  # The crop pad_crop_flip makes of the same row and column numbers.
  np.testing.assert_array_equal(found[:, :2], np.minimum((uniforms * 5).astype(int), 4))
  for offsets in (found[:, 0], found[:, 1]):
    frequencies = np.bincount(offsets, minlength=5) / len(out)
    np.testing.assert_allclose(frequencies, np.full(5, 1 / 5), atol=0.03)


def test_pad_crop_rejects_wrong_uniforms():
  with pytest.raises(ValueError, match=r'uniforms of shape \(6, 3\), expected \(6, 2\)'):
    augment.pad_crop(_images(), np.zeros((6, 3)), padding=2)


def test_random_resized_crop_box_ranges():
  rng = np.random.default_rng(3)
  for _ in range(500):
    width, height = (int(v) for v in rng.integers(20, 600, 2))
    u = rng.random(augment.RESIZED_CROP_UNIFORMS)
    left, top, right, bottom = augment.random_resized_crop_box(width, height, u)
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    crop_w, crop_h = right - left, bottom - top
    if (crop_w, crop_h) != (width, height) and crop_w < width and crop_h < height:
      # A box from an attempt: area and aspect within range (up to rounding).
      assert 0.08 * width * height * 0.8 <= crop_w * crop_h <= width * height
      assert 3 / 4 * 0.8 <= crop_w / crop_h <= 4 / 3 * 1.25


def test_random_resized_crop_box_first_fit_is_used():
  u = np.full(augment.RESIZED_CROP_UNIFORMS, 0.5)
  u[0], u[1] = 1.0, 0.5  # attempt 0: the whole area, square -> too wide for 100x50
  u[2], u[3] = 0.0, 0.5  # attempt 1: 8 % of the area, square
  u[-3], u[-2] = 0.0, 0.999  # left edge, bottom edge
  assert augment.random_resized_crop_box(100, 50, u) == (0, 30, 20, 50)


def test_center_crop_equals_resize_then_crop():
  rng = np.random.default_rng(4)
  # A smooth image, so that one resample and two resamples agree closely.
  y, x = np.mgrid[0:300, 0:400]
  image = np.stack([x * 0.6, y * 0.8, (x + y) * 0.35], axis=-1).astype(np.uint8)
  image = np.clip(image + rng.integers(0, 2, image.shape), 0, 255).astype(np.uint8)
  out = augment.crop_resize(image, augment.center_crop_box, 224)
  resized = PIL.Image.fromarray(image).resize((341, 256), PIL.Image.Resampling.BILINEAR)
  left, top = (341 - 224) // 2, (256 - 224) // 2
  two_step = np.asarray(resized)[top : top + 224, left : left + 224]
  assert out.shape == (224, 224, 3)
  assert np.abs(out.astype(int) - two_step).mean() < 1.5


def test_jpeg_draft_decoding_matches_full_decoding():
  y, x = np.mgrid[0:768, 0:1024]
  image = np.stack([x / 4, y / 3, (x + y) / 7], axis=-1).astype(np.uint8)
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format='JPEG', quality=95)
  data = buffer.getvalue()

  def box(width, height):
    return (100, 50, 900, 650)

  drafted = augment.crop_resize(data, box, 64)
  full = augment.crop_resize(augment.decode_rgb(data), box, 64)
  assert drafted.shape == full.shape == (64, 64, 3)
  assert np.abs(drafted.astype(int) - full).mean() < 2.0
  flipped = augment.crop_resize(data, box, 64, flip=True)
  np.testing.assert_array_equal(flipped, drafted[:, ::-1])


def test_decode_rgb_converts_grayscale_and_cmyk():
  for mode, value in (('L', 9), ('CMYK', (0, 0, 0, 0))):
    buffer = io.BytesIO()
    PIL.Image.new(mode, (5, 4), value).save(buffer, format='JPEG')
    pixels = augment.decode_rgb(buffer.getvalue())
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8


def test_normalize_per_channel():
  images = np.array([0, 51, 255], np.uint8).reshape(1, 1, 1, 3)
  mean, std = np.array([0.0, 0.2, 0.5]), np.array([1.0, 0.1, 0.25])
  out = augment.normalize(images, mean, std)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 2.0], atol=1e-6)
