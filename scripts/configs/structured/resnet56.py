"""ResNet-56 on CIFAR-10, channels removed: the ResNet-20 structured recipe on the deeper network.

Dense training is ``scripts/configs/resnet56.py``. As for ResNet-20, only
the blocks' inner groups are pruned (option-A shortcuts fix the stream);
55 % of their units removed cuts the MACs 2.25x, near DepGraph's 2.11x
(93.53 -> 93.77 %) and beyond Li et al. 2017's 1.38x. Not yet chosen on a
validation split: no run has used these values.
"""

from _base import dense_recipe


def get_config() -> dict:
  return {
    **dense_recipe('resnet56'),
    'structure': 'channels',
    'structured_criterion': 'l1',
    'structured_scope': 'per-group',
    'structured_sparsity': 0.55,  # 2.25x fewer MACs
    'rounds': 3,
    'retrain_epochs': 20,
    'retrain_schedule': 'rewind',
  }
