"""The CIFAR-10 residual networks of He et al. 2016 (§4.2): ResNet-20, ResNet-56 and the rest of the 6n+2 family.

A 3x3 convolution of 16 channels (``conv1``, ``bn1``), then three stages of
``n`` basic blocks each, with 16, 32 and 64 channels on maps of 32x32, 16x16
and 8x8 (the first block of stages 2 and 3 halves the map with a stride-2
first convolution), global average pooling and a 10-way ``fc``: ``6n + 2``
weighted layers. A basic block is ``conv1-bn1-relu-conv2-bn2``, plus its
shortcut, then a ReLU. Convolutions have no bias (the batch norm after each
has one).

Where a block changes the shape, the shortcut is either

* option A, the paper's CIFAR choice and the default: the identity,
  subsampled by the stride (every second row and column) and padded with
  zero channels after the existing ones, so it adds no parameter; or
* option B: a 1x1 stride-2 convolution and a batch norm (``shortcut``,
  ``shortcut_bn``), the projection of the paper's ImageNet networks.

With option A, ResNet-20 has 269,722 parameters (268,336 convolution
weights, 1,376 batch-norm scales and offsets, ``fc``'s 650) and 40,551,040
multiply-accumulates per 32x32 image; ResNet-56 853,018 and 125,485,696
(the paper's Table 6 gives 0.27M and 0.85M). Option B adds 2,752 parameters
and 262,144 multiply-accumulates (two 1x1 convolutions and their batch
norms).

Layers are named ``conv1``, ``stage{1,2,3}/{block}/conv{1,2}``, ... and
``fc``, as the torch reproductions of the paper name them; their costs are
:func:`models.layer_costs`. Convolutions start from He initialisation, as
the paper's §3.4 says (:mod:`models.init`), ``fc`` like torch's
``nn.Linear``. Batch norm uses torch's momentum 0.1 (flax's
``momentum=0.9``) and epsilon 1e-5, as the torch reproductions train it.
``dtype`` is the computation dtype; parameters are always float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.init import BIAS_INIT, CLASSIFIER_KERNEL_INIT, CONV_KERNEL_INIT

STAGE_CHANNELS = (16, 32, 64)
SHORTCUTS = ('A', 'B')


def _conv(in_features: int, out_features: int, rngs: nnx.Rngs, dtype: Any, **kwargs) -> nnx.Conv:
  return nnx.Conv(
    in_features,
    out_features,
    kernel_size=kwargs.pop('kernel_size', (3, 3)),
    padding=kwargs.pop('padding', ((1, 1), (1, 1))),
    use_bias=False,
    kernel_init=CONV_KERNEL_INIT,
    dtype=dtype,
    rngs=rngs,
    **kwargs,
  )


def _batch_norm(features: int, rngs: nnx.Rngs, dtype: Any) -> nnx.BatchNorm:
  # torch's BatchNorm2d defaults, which the CIFAR reproductions train with.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with batch norm and a shortcut (He et al. 2016, Fig. 2).

  Args:
    in_features: channels of the input.
    out_features: channels of the output.
    stride: stride of ``conv1`` (and of the shortcut): 2 halves the map.
    shortcut: ``'A'`` (zero-padded identity) or ``'B'`` (1x1 projection) where
      the shape changes; the identity otherwise.
    rngs: random streams for initialisation.
    dtype: computation dtype.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    stride: int,
    shortcut: str,
    rngs: nnx.Rngs,
    dtype: Any = None,
  ):
    self.stride = stride
    self.pad_channels = 0
    self.conv1 = _conv(in_features, out_features, rngs, dtype, strides=stride)
    self.bn1 = _batch_norm(out_features, rngs, dtype)
    self.conv2 = _conv(out_features, out_features, rngs, dtype)
    self.bn2 = _batch_norm(out_features, rngs, dtype)
    self.projection = stride != 1 or in_features != out_features
    if self.projection and shortcut == 'B':
      self.shortcut = _conv(
        in_features, out_features, rngs, dtype, kernel_size=(1, 1), padding='VALID', strides=stride
      )
      self.shortcut_bn = _batch_norm(out_features, rngs, dtype)
    elif self.projection:
      self.pad_channels = out_features - in_features
    self.shortcut_kind = shortcut

  def _identity(self, x: jax.Array) -> jax.Array:
    """Option A: subsampled by the stride, zero channels appended (no parameters)."""
    if self.stride != 1:
      x = x[:, :: self.stride, :: self.stride, :]
    if self.pad_channels:
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.pad_channels)))
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.projection and self.shortcut_kind == 'B':
      x = self.shortcut_bn(self.shortcut(x))
    else:
      x = self._identity(x)
    return nnx.relu(y + x.astype(y.dtype))


class CIFARResNet(nnx.Module):
  """He et al.'s CIFAR-10 ResNet of depth ``6n + 2``.

  Args:
    rngs: random streams for initialisation.
    depth: ``6n + 2``: 20, 32, 44, 56, 110, ...
    num_classes: outputs of ``fc``.
    shortcut: ``'A'`` (the paper's CIFAR networks, no parameters) or ``'B'``
      (1x1 convolution and batch norm) where a block changes the shape.
    dtype: computation dtype; parameters are float32 whatever it is.

  Raises:
    ValueError: a depth that is not ``6n + 2`` with ``n >= 1``, or a
      shortcut other than ``'A'`` and ``'B'``.

  Examples:
    >>> model = nnx.eval_shape(lambda: CIFARResNet(nnx.Rngs(0), depth=20))
    >>> len(model.stage2), model.stage2[0].conv1.kernel.shape, model.fc.kernel.shape
    (3, (3, 3, 16, 32), (64, 10))

  References:
    He et al. 2016, §4.2 and Table 6 (ResNet-20, -32, -44, -56, -110 on CIFAR-10).
  """

  def __init__(
    self,
    rngs: nnx.Rngs,
    *,
    depth: int = 20,
    num_classes: int = 10,
    shortcut: str = 'A',
    dtype: Any = None,
  ):
    if not (isinstance(depth, int) and depth >= 8 and (depth - 2) % 6 == 0):
      raise ValueError(
        f'depth is {depth!r}; a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, ...)'
      )
    if shortcut not in SHORTCUTS:
      raise ValueError(f'shortcut is {shortcut!r}; expected one of {SHORTCUTS}')
    blocks = (depth - 2) // 6
    self.conv1 = _conv(3, STAGE_CHANNELS[0], rngs, dtype)
    self.bn1 = _batch_norm(STAGE_CHANNELS[0], rngs, dtype)
    channels = STAGE_CHANNELS[0]
    for stage, out in enumerate(STAGE_CHANNELS, start=1):
      stage_blocks = []
      for block in range(blocks):
        stride = 2 if stage > 1 and block == 0 else 1
        stage_blocks.append(
          BasicBlock(channels, out, stride=stride, shortcut=shortcut, rngs=rngs, dtype=dtype)
        )
        channels = out
      setattr(self, f'stage{stage}', nnx.List(stage_blocks))
    self.fc = nnx.Linear(
      channels,
      num_classes,
      kernel_init=CLASSIFIER_KERNEL_INIT,
      bias_init=BIAS_INIT,
      dtype=dtype,
      rngs=rngs,
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits ``(B, num_classes)`` for NHWC images ``(B, 32, 32, 3)``."""
    x = nnx.relu(self.bn1(self.conv1(x)))
    for stage in (self.stage1, self.stage2, self.stage3):
      for block in stage:
        x = block(x)
    x = x.mean(axis=(1, 2))
    return self.fc(x)


def resnet20(rngs: nnx.Rngs, **options: Any) -> CIFARResNet:
  """ResNet-20 (n = 3): 269,722 parameters with option A.

  Examples:
    >>> model = nnx.eval_shape(lambda: resnet20(nnx.Rngs(0)))
    >>> sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    269722
  """
  return CIFARResNet(rngs, depth=20, **options)


def resnet56(rngs: nnx.Rngs, **options: Any) -> CIFARResNet:
  """ResNet-56 (n = 9): 853,018 parameters with option A.

  Examples:
    >>> model = nnx.eval_shape(lambda: resnet56(nnx.Rngs(0)))
    >>> sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    853018
  """
  return CIFARResNet(rngs, depth=56, **options)
