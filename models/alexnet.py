"""AlexNet as Caffe's ``bvlc_alexnet``: the network of the paper's Table 4.

The Caffe variant of Krizhevsky et al. 2012 that Han et al. 2015 pruned, for
227x227 RGB crops:

==========  =====================================  ===========  =========
layer       configuration                          output       weights
==========  =====================================  ===========  =========
``conv1``   96 @ 11x11, stride 4; ReLU, LRN, pool  27x27x96        34,848
``conv2``   256 @ 5x5, pad 2, 2 groups; ReLU,      13x13x256      307,200
            LRN, pool
``conv3``   384 @ 3x3, pad 1; ReLU                 13x13x384      884,736
``conv4``   384 @ 3x3, pad 1, 2 groups; ReLU       13x13x384      663,552
``conv5``   256 @ 3x3, pad 1, 2 groups; ReLU,      6x6x256        442,368
            pool
``fc1``     9216 -> 4096; ReLU, dropout 0.5        4096        37,748,736
``fc2``     4096 -> 4096; ReLU, dropout 0.5        4096        16,777,216
``fc3``     4096 -> 1000                           1000         4,096,000
==========  =====================================  ===========  =========

Pools are 3x3 with stride 2 (overlapping); LRN is Caffe's across-channel local
response normalisation (5 channels, alpha 1e-4, beta 0.75, k 1). The grouped
convolutions are the two-GPU split of the original; they are why ``conv2``,
``conv4`` and ``conv5`` have half the weights a full convolution would. In
all: 60,954,656 weights and 10,568 biases, 60,965,224 parameters, the 61M of
the paper. The fully connected layers are named ``fc1``-``fc3`` as in Table 4
(Caffe's ``fc6``-``fc8``); the dropouts after ``fc1`` and ``fc2`` are
``dropout1`` and ``dropout2``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.init import BIAS_INIT, CLASSIFIER_KERNEL_INIT, CONV_KERNEL_INIT


def local_response_norm(
  x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
) -> jax.Array:
  """Caffe's across-channel LRN: ``x / (k + alpha / size * sum of x^2 over size channels)^beta``.

  The sum runs over a window of ``size`` channels centred on each channel
  (zero-padded at the ends), in float32 whatever the input dtype.

  Examples:
    >>> x = jnp.ones((1, 1, 1, 3))
    >>> local_response_norm(x, size=3, alpha=3.0, beta=1.0)[0, 0, 0].tolist()
    [0.3333333432674408, 0.25, 0.3333333432674408]
  """
  squares = jnp.square(x.astype(jnp.float32))
  half = size // 2
  window_sum = jax.lax.reduce_window(
    squares,
    0.0,
    jax.lax.add,
    window_dimensions=(1, 1, 1, size),
    window_strides=(1, 1, 1, 1),
    padding=((0, 0), (0, 0), (0, 0), (half, size - 1 - half)),
  )
  scale = (k + (alpha / size) * window_sum) ** beta
  return (x.astype(jnp.float32) / scale).astype(x.dtype)


class AlexNet(nnx.Module):
  """Caffe's AlexNet (``bvlc_alexnet``) in flax nnx.

  Args:
    rngs: random streams for initialisation and dropout.
    num_classes: outputs of ``fc3``.
    lrn: local response normalisation after ``conv1`` and ``conv2``, as in
      Caffe.
    dropout_rate: rate of ``dropout1`` and ``dropout2`` during dense training.
    dtype: computation dtype; parameters are float32 whatever it is.

  Examples:
    >>> model = nnx.eval_shape(lambda: AlexNet(nnx.Rngs(0)))
    >>> model.conv2.kernel.shape, model.fc1.kernel.shape
    ((5, 5, 48, 256), (9216, 4096))

  References:
    Krizhevsky et al. 2012; Han et al. 2015, Table 4.
  """

  def __init__(
    self,
    rngs: nnx.Rngs,
    *,
    num_classes: int = 1000,
    lrn: bool = True,
    dropout_rate: float = 0.5,
    dtype: Any = None,
  ):
    self.lrn = lrn

    def conv(in_features, out_features, size, *, stride=1, padding=0, groups=1) -> nnx.Conv:
      return nnx.Conv(
        in_features,
        out_features,
        kernel_size=(size, size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        feature_group_count=groups,
        kernel_init=CONV_KERNEL_INIT,
        bias_init=BIAS_INIT,
        dtype=dtype,
        rngs=rngs,
      )

    def dense(in_features: int, out_features: int) -> nnx.Linear:
      return nnx.Linear(
        in_features,
        out_features,
        kernel_init=CLASSIFIER_KERNEL_INIT,
        bias_init=BIAS_INIT,
        dtype=dtype,
        rngs=rngs,
      )

    self.conv1 = conv(3, 96, 11, stride=4)
    self.conv2 = conv(96, 256, 5, padding=2, groups=2)
    self.conv3 = conv(256, 384, 3, padding=1)
    self.conv4 = conv(384, 384, 3, padding=1, groups=2)
    self.conv5 = conv(384, 256, 3, padding=1, groups=2)
    self.fc1 = dense(6 * 6 * 256, 4096)
    self.dropout1 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc2 = dense(4096, 4096)
    self.dropout2 = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc3 = dense(4096, num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Logits ``(B, num_classes)`` for NHWC images ``(B, 227, 227, 3)``."""

    def pool(x: jax.Array) -> jax.Array:
      return nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2))

    def norm(x: jax.Array) -> jax.Array:
      return local_response_norm(x) if self.lrn else x

    x = pool(norm(nnx.relu(self.conv1(x))))
    x = pool(norm(nnx.relu(self.conv2(x))))
    x = nnx.relu(self.conv3(x))
    x = nnx.relu(self.conv4(x))
    x = pool(nnx.relu(self.conv5(x)))
    x = x.reshape(x.shape[0], -1)
    x = self.dropout1(nnx.relu(self.fc1(x)))
    x = self.dropout2(nnx.relu(self.fc2(x)))
    return self.fc3(x)
