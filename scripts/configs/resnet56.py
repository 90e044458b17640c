"""ResNet-56 on CIFAR-10 (He et al. 2016, §4.2): dense training only, ResNet-20's recipe.

The paper trains every CIFAR ResNet the same way (ResNet-110 alone with a
warm-up at lr 0.01, which ResNet-56 does not need), so this is
``resnet20.py``'s recipe, departures included (a cosine decay instead of
the steps at 32k and 48k iterations; L2 on the kernels only), with the
model changed.
"""

from resnet20 import get_config as resnet20_config  # a recipe may import its siblings


def get_config() -> dict:
  return {**resnet20_config(), 'model': 'resnet56'}
