"""A small Vision Transformer for CIFAR-10, built on ``nnx.MultiHeadAttention``.

The ViT of Dosovitskiy et al. 2021 (§3.1, Eq. 1-4), sized for 32x32 images:
4x4 patches (an 8x8 grid of 64 tokens) embedded by a stride-4 convolution
(``patch_embed``), a learned class token prepended (65 tokens), a learned
position embedding added, ``depth`` pre-LN encoder blocks, a final
LayerNorm (``norm``) and a 10-way ``head`` on the class token. A block is
``x + attention(norm1(x))`` then ``x + fc2(gelu(fc1(norm2(x))))``.

The default, :func:`vit_cifar`, has width 192, 6 blocks of 6 heads (head
dimension 32) and an MLP of 384 (ratio 2): 1,806,538 parameters and
125,341,824 multiply-accumulates per image, of which the attention's
``q k^T`` and ``softmax(.) v`` products are 9,734,400 (6 blocks x 2 x
65 x 65 x 192). Width 192 is DeiT-Tiny's (Touvron et al. 2021); half its
depth and an MLP ratio of 2 (not 4) bring it to about 1.8M parameters, a size
that trains on CIFAR-10 from scratch. A width that is a multiple of 32 and an
MLP of 384 keep every dimension a multiple of 8 for structured pruning.

Heads are explicit kernel axes, as ``nnx.MultiHeadAttention`` stores them:
``query``, ``key`` and ``value`` kernels are ``(192, 6, 32)``, ``out``'s is
``(6, 32, 192)``. They are 3-D, so :data:`pruning.KERNEL_PATTERN` selects
them and :func:`pruning.rounds.layer_groups` counts them with the ``'conv'``
layers (kernels of more than 2 dims).

Linear layers (the attention projections too) start from a normal of
standard deviation 0.02, as timm's ``VisionTransformer`` initialises them
(``trunc_normal_(std=.02)``, whose cut at +-2 is absolute, 100 standard
deviations); so does the position embedding. The patch embedding starts
like torch's ``nn.Conv2d`` (uniform in +-1/sqrt(fan_in)), as timm leaves it;
the class token and every bias start at zero (the original ViT's class
token). LayerNorms use epsilon 1e-6, as both do. There is no dropout.
``dtype`` is the computation dtype; parameters are always float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.init import BIAS_INIT, CLASSIFIER_KERNEL_INIT, VIT_KERNEL_INIT


def _layer_norm(features: int, rngs: nnx.Rngs, dtype: Any) -> nnx.LayerNorm:
  return nnx.LayerNorm(features, epsilon=1e-6, dtype=dtype, rngs=rngs)


def _dense(in_features: int, out_features: int, rngs: nnx.Rngs, dtype: Any) -> nnx.Linear:
  return nnx.Linear(
    in_features,
    out_features,
    kernel_init=VIT_KERNEL_INIT,
    bias_init=BIAS_INIT,
    dtype=dtype,
    rngs=rngs,
  )


class EncoderBlock(nnx.Module):
  """A pre-LN transformer encoder block (Dosovitskiy et al. 2021, Eq. 2-3).

  Args:
    dim: width of the token embeddings.
    num_heads: attention heads; ``dim`` must be a multiple.
    mlp_dim: hidden units of the MLP (``fc1``).
    rngs: random streams for initialisation.
    dtype: computation dtype.
  """

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, *, rngs: nnx.Rngs, dtype: Any = None):
    self.norm1 = _layer_norm(dim, rngs, dtype)
    self.attention = nnx.MultiHeadAttention(
      num_heads,
      dim,
      kernel_init=VIT_KERNEL_INIT,
      bias_init=BIAS_INIT,
      dtype=dtype,
      decode=False,
      rngs=rngs,
    )
    self.norm2 = _layer_norm(dim, rngs, dtype)
    self.fc1 = _dense(dim, mlp_dim, rngs, dtype)
    self.fc2 = _dense(mlp_dim, dim, rngs, dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attention(self.norm1(x))
    return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x))))


class ViTCIFAR(nnx.Module):
  """A Vision Transformer for 32x32 images: patch embedding, class token, pre-LN blocks.

  Args:
    rngs: random streams for initialisation.
    num_classes: outputs of ``head``.
    image_size: side of the square input.
    patch_size: side of a square patch; must divide ``image_size``.
    dim: width of the token embeddings.
    depth: encoder blocks.
    num_heads: attention heads per block; must divide ``dim``.
    mlp_dim: hidden units of each block's MLP.
    dtype: computation dtype; parameters are float32 whatever it is.

  Raises:
    ValueError: a patch size that does not divide the image, or a head count
      that does not divide the width.

  Examples:
    >>> model = nnx.eval_shape(lambda: ViTCIFAR(nnx.Rngs(0), depth=2))
    >>> model.blocks[1].attention.query.kernel.shape, model.pos_embedding.shape
    ((192, 6, 32), (1, 65, 192))

  References:
    Dosovitskiy et al. 2021, §3.1 (Eq. 1-4).
  """

  def __init__(
    self,
    rngs: nnx.Rngs,
    *,
    num_classes: int = 10,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 192,
    depth: int = 6,
    num_heads: int = 6,
    mlp_dim: int = 384,
    dtype: Any = None,
  ):
    if image_size % patch_size:
      raise ValueError(f'patch_size {patch_size} does not divide image_size {image_size}')
    if dim % num_heads:
      raise ValueError(f'num_heads {num_heads} does not divide dim {dim}')
    self.dtype = dtype
    tokens = (image_size // patch_size) ** 2 + 1
    self.patch_embed = nnx.Conv(
      3,
      dim,
      kernel_size=(patch_size, patch_size),
      strides=patch_size,
      padding='VALID',
      kernel_init=CLASSIFIER_KERNEL_INIT,
      bias_init=BIAS_INIT,
      dtype=dtype,
      rngs=rngs,
    )
    self.cls_token = nnx.Param(jnp.zeros((1, 1, dim), jnp.float32))
    self.pos_embedding = nnx.Param(VIT_KERNEL_INIT(rngs.params(), (1, tokens, dim), jnp.float32))
    self.blocks = nnx.List(
      [EncoderBlock(dim, num_heads, mlp_dim, rngs=rngs, dtype=dtype) for _ in range(depth)]
    )
    self.norm = _layer_norm(dim, rngs, dtype)
    self.head = _dense(dim, num_classes, rngs, dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits ``(B, num_classes)`` for NHWC images ``(B, image_size, image_size, 3)``."""
    x = self.patch_embed(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embedding[...].astype(x.dtype)
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x)[:, 0])


def vit_cifar(rngs: nnx.Rngs, **options: Any) -> ViTCIFAR:
  """The default CIFAR-10 ViT: patch 4, width 192, 6 blocks of 6 heads, MLP 384.

  Examples:
    >>> model = nnx.eval_shape(lambda: vit_cifar(nnx.Rngs(0)))
    >>> sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    1806538
  """
  return ViTCIFAR(rngs, **options)
