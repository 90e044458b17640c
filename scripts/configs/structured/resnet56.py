"""ResNet-56 on CIFAR-10, channels removed: the ResNet-20 structured recipe on the deeper network.

Dense training is ``scripts/configs/resnet56.py``. As for ResNet-20, only
the blocks' inner groups are pruned (option-A shortcuts fix the stream), and
the same inner widths are kept: 60 % of the units removed, rounded to
multiples of 8 (8/16/24 of 16/32/64), cuts the MACs 2.17x
(``benchmarks/structured_latency.py --models resnet56 --fractions 0.6
--round-to 8`` counts them), near DepGraph's 2.11x (93.53 -> 93.77 %) and
beyond Li et al. 2017's 1.38x. Carried over
from ResNet-20's choice by shape (the stages have the same widths), not
chosen on ResNet-56's own validation split: no run has used these values.
"""

from _base import dense_recipe


def get_config() -> dict:
  return {
    **dense_recipe('resnet56'),
    'structure': 'channels',
    'structured_criterion': 'l1',
    'structured_scope': 'per-group',
    'structured_sparsity': 0.6,  # inner widths 8/16/24: 2.17x fewer MACs
    'round_to': 8,
    'rounds': 3,
    'retrain_epochs': 20,
    'retrain_schedule': 'rewind',
  }
