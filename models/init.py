"""Initialisers of the ImageNet-style networks (VGG-16, AlexNet, the CIFAR ResNets): He for convolutions, 1/sqrt(fan_in) for the classifier; 0.02 for the ViT.

Convolutions start from He initialisation (normal, variance ``2 / fan_in``):
thirteen ReLU convolutions without batch norm do not train from a smaller
scale. The classifier (``fc6``-``fc8`` of VGG-16, ``fc1``-``fc3`` of AlexNet)
starts like torch's ``nn.Linear`` default, uniform in ``±1/sqrt(fan_in)``
(variance ``1 / (3 fan_in)``): He-initialised, with dropout 0.5 and a
learning rate of 0.05, 97-99 % of VGG-16-CIFAR's ``fc6`` units were dead
after 20 steps (float32, bf16 and a torch twin alike) and the loss sat at
ln 10 for hundreds of steps; from this scale the first loss is near ln 10 and
falls from the start (``benchmarks/vgg_vs_torch.py`` and
``tests/models/test_vgg_alexnet.py`` measure it). Biases start at zero.
The CIFAR ResNets (:mod:`models.resnet`) use the same two: He et al. 2016
initialise their convolutions so (§3.4), and ``fc`` follows global pooling.

The ViT's (:mod:`models.vit`) linear layers and position embedding start
from ``VIT_KERNEL_INIT``: a normal of standard deviation 0.02, cut at +-2
absolute (+-100 standard deviations), which is exactly timm's
``trunc_normal_(std=.02)`` of ``VisionTransformer.init_weights`` (DeiT,
Touvron et al. 2021); jax's ``truncated_normal`` takes its bounds in standard
deviations and would otherwise cut at +-2 of them.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> w = CLASSIFIER_KERNEL_INIT(jax.random.key(0), (400, 10), jnp.float32)
  >>> bool(jnp.abs(w).max() <= 1 / 400**0.5)
  True
"""

from __future__ import annotations

from flax import nnx

CONV_KERNEL_INIT = nnx.initializers.he_normal()
CLASSIFIER_KERNEL_INIT = nnx.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
BIAS_INIT = nnx.initializers.zeros_init()
VIT_KERNEL_INIT = nnx.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)
