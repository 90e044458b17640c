"""VGG-16 on CIFAR-10, channels removed by batch-norm scale: network slimming (Liu et al. 2017).

Dense training is ``scripts/configs/vgg16_cifar.py``. Network slimming
ranks every channel of the network together by its batch norm's |scale|
(``bn_scale``, ``global``) and removes 70 % of them in one prune, then
fine-tunes (93.66 -> 93.80 % with 88.5 % fewer parameters). Liu et al. also
train with an L1 penalty on the scales, which the toolkit's penalties (on
kernels) do not offer, so the scales are less sparse here. One round of 20
epochs retrains. Not yet chosen on a validation split: no run has used these
values.
"""

from _base import dense_recipe


def get_config() -> dict:
  return {
    **dense_recipe('vgg16_cifar'),
    'structure': 'channels',
    'structured_criterion': 'bn_scale',
    'structured_scope': 'global',
    'structured_sparsity': 0.7,
    'rounds': 1,
    'retrain_epochs': 20,
    'retrain_schedule': 'rewind',
  }
