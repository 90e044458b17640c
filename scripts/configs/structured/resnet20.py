"""ResNet-20 on CIFAR-10, channels removed: He et al. 2016's dense recipe, then Li et al. 2017's L1 filters.

Dense training is ``scripts/configs/resnet20.py`` (182 epochs, 45k/5k
split). The option-A shortcuts fix the residual stream's width, so only each
block's inner group (its first convolution's filters and the second's
inputs) is pruned, as Li et al. 2017 prune ResNets (§4.3). Removing 55 % of
those units cuts the MACs 2.23x (``benchmarks/structured_latency.py`` counts
them); Li et al. fine-tune for 40 epochs at a rate of 0.01 after one prune,
here three rounds of 20 epochs with the dense cosine schedule restarted
(``rewind``). Not yet chosen on a validation split: no run has used these
values; the issue-14 evidence runs are to settle them.
"""

from _base import dense_recipe


def get_config() -> dict:
  return {
    **dense_recipe('resnet20'),
    'structure': 'channels',
    'structured_criterion': 'l1',  # Li et al. 2017: filters of least L1 norm
    'structured_scope': 'per-group',
    'structured_sparsity': 0.55,  # 2.23x fewer MACs
    'rounds': 3,
    'retrain_epochs': 20,
    'retrain_schedule': 'rewind',
  }
