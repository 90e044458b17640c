"""VGG-16 in flax nnx: the ImageNet network of the paper's Table 5 and its CIFAR-10 adaptation.

:class:`VGG16` is configuration "D" of Simonyan & Zisserman 2015: thirteen 3x3
convolutions (stride 1, "same" padding) in five blocks of 64, 128, 256, 512
and 512 channels, each block closed by a 2x2 max-pool, then ``fc6`` and ``fc7``
(4096 units, ReLU, dropout 0.5) and ``fc8``. For 224x224 RGB images and 1000
classes it has 138,357,544 parameters (138,344,128 weights and 13,416 biases),
the 138M of Han et al. 2015, Table 5.

:class:`VGG16CIFAR` is the usual 32x32 adaptation: the same thirteen
convolutions, whose five pools leave a 1x1 map, and a small classifier of
512-unit ``fc6``/``fc7`` (with the same dropout, so §3.2 applies) and a 10-way
``fc8``. Both take a ``width`` multiplier for the channel counts (reduced-width
runs on a CPU) and optional batch normalisation after every convolution.

Layers are named as in the paper's Table 5 (``conv1_1`` ... ``conv5_3``,
``fc6``, ``fc7``, ``fc8``), so reports read like it; the dropout after ``fc6``
is ``dropout6`` and the one after ``fc7`` is ``dropout7``.

Convolution kernels use He initialisation (variance ``2 / fan_in``, suited to
ReLU; a 13-layer network without batch norm does not train from
``1 / fan_in``), the classifier's are uniform in ``±1/sqrt(fan_in)`` (He there
killed ``fc6`` within 20 steps: :mod:`models.init`), biases start at zero. The 2x2 max-pools are :func:`models.max_pool`: the
values and gradient of ``nnx.max_pool`` with a backward that XLA fuses. On the
2-core CPU a width-1/8 VGG-16-CIFAR train step at batch 128 took 48 ms with
it against 64 ms with ``nnx.max_pool`` (56.6 against 69.7 ms with batch norm;
medians of 15 steps). ``dtype`` is the computation dtype (``jnp.bfloat16`` for
mixed precision on accelerators); parameters are always stored in float32.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from models.init import BIAS_INIT, CLASSIFIER_KERNEL_INIT, CONV_KERNEL_INIT
from models.lenet import max_pool

# Output channels of the thirteen convolutions, by block.
BLOCKS: tuple[tuple[int, ...], ...] = (
  (64, 64),
  (128, 128),
  (256, 256, 256),
  (512,) * 3,
  (512,) * 3,
)


def scaled_width(channels: int, width: float) -> int:
  """``channels`` times the width multiplier, rounded, at least 1.

  Examples:
    >>> scaled_width(512, 0.125), scaled_width(64, 0.01)
    (64, 1)
  """
  return max(1, round(channels * width))


def _check_width(width: float) -> None:
  if not (isinstance(width, int | float) and 0 < width <= 16):
    raise ValueError(f'width is {width!r}; expected a multiplier in (0, 16]')


class VGG16(nnx.Module):
  """VGG-16 (configuration D): 13 convolutions, fc6, fc7 and fc8.

  Args:
    rngs: random streams for initialisation and dropout.
    num_classes: outputs of ``fc8``.
    image_size: side of the square input; a multiple of 32 (five 2x2 pools).
    in_channels: channels of the input images.
    width: multiplier of every convolution's channel count.
    hidden: units of ``fc6`` and ``fc7``.
    batch_norm: batch normalisation (``bn1_1`` ...) after every convolution,
      before its ReLU.
    dropout_rate: rate of ``dropout6`` and ``dropout7`` during dense training.
    dtype: computation dtype; parameters are float32 whatever it is.

  Raises:
    ValueError: an ``image_size`` that is not a positive multiple of 32, or a
      ``width`` outside (0, 16].

  Examples:
    >>> model = nnx.eval_shape(lambda: VGG16(nnx.Rngs(0)))
    >>> model.fc6.kernel.shape, model.conv5_3.kernel.shape
    ((25088, 4096), (3, 3, 512, 512))

  References:
    Simonyan & Zisserman 2015 (configuration D); Han et al. 2015, Table 5.
  """

  def __init__(
    self,
    rngs: nnx.Rngs,
    *,
    num_classes: int = 1000,
    image_size: int = 224,
    in_channels: int = 3,
    width: float = 1.0,
    hidden: int = 4096,
    batch_norm: bool = False,
    dropout_rate: float = 0.5,
    dtype: Any = None,
  ):
    if not (isinstance(image_size, int) and image_size > 0 and image_size % 32 == 0):
      raise ValueError(f'image_size is {image_size!r}; VGG-16 needs a positive multiple of 32')
    _check_width(width)
    self.batch_norm = batch_norm
    # Names of each block's convolutions; a max-pool closes every block.
    blocks = []
    channels = in_channels
    for block, outs in enumerate(BLOCKS, start=1):
      names = []
      for index, out in enumerate(outs, start=1):
        name = f'conv{block}_{index}'
        out = scaled_width(out, width)
        conv = nnx.Conv(
          channels,
          out,
          kernel_size=(3, 3),
          padding='SAME',
          kernel_init=CONV_KERNEL_INIT,
          bias_init=BIAS_INIT,
          dtype=dtype,
          rngs=rngs,
        )
        setattr(self, name, conv)
        if batch_norm:
          setattr(self, f'bn{block}_{index}', nnx.BatchNorm(out, dtype=dtype, rngs=rngs))
        names.append(name)
        channels = out
      blocks.append(tuple(names))
    self.blocks = tuple(blocks)
    side = image_size // 32

    def dense(in_features: int, out_features: int) -> nnx.Linear:
      return nnx.Linear(
        in_features,
        out_features,
        kernel_init=CLASSIFIER_KERNEL_INIT,
        bias_init=BIAS_INIT,
        dtype=dtype,
        rngs=rngs,
      )

    self.fc6 = dense(side * side * channels, hidden)
    self.dropout6 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc7 = dense(hidden, hidden)
    self.dropout7 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc8 = dense(hidden, num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits ``(B, num_classes)`` for NHWC images ``(B, image_size, image_size, C)``."""
    for names in self.blocks:
      for name in names:
        x = getattr(self, name)(x)
        if self.batch_norm:
          x = getattr(self, name.replace('conv', 'bn'))(x)
        x = nnx.relu(x)
      x = max_pool(x, (2, 2))
    x = x.reshape(x.shape[0], -1)
    x = self.dropout6(nnx.relu(self.fc6(x)))
    x = self.dropout7(nnx.relu(self.fc7(x)))
    return self.fc8(x)


class VGG16CIFAR(VGG16):
  """VGG-16 for 32x32 CIFAR-10: the 13 convolutions and a 512-512-10 classifier.

  Args:
    rngs: random streams for initialisation and dropout.
    num_classes: outputs of ``fc8``.
    width: multiplier of every channel count, the classifier's 512 included
      (``0.125`` gives an 8-64 channel network for CPU runs).
    batch_norm: batch normalisation after every convolution.
    dropout_rate: rate of ``dropout6`` and ``dropout7`` during dense training.
    dtype: computation dtype; parameters are float32.

  Examples:
    >>> model = nnx.eval_shape(lambda: VGG16CIFAR(nnx.Rngs(0), width=0.25))
    >>> model.conv1_1.kernel.shape, model.fc6.kernel.shape, model.fc8.kernel.shape
    ((3, 3, 3, 16), (128, 128), (128, 10))
  """

  def __init__(
    self,
    rngs: nnx.Rngs,
    *,
    num_classes: int = 10,
    width: float = 1.0,
    batch_norm: bool = False,
    dropout_rate: float = 0.5,
    dtype: Any = None,
  ):
    _check_width(width)
    super().__init__(
      rngs,
      num_classes=num_classes,
      image_size=32,
      width=width,
      hidden=scaled_width(512, width),
      batch_norm=batch_norm,
      dropout_rate=dropout_rate,
      dtype=dtype,
    )
