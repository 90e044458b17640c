"""ResNet-20 on CIFAR-10, channels removed: He et al. 2016's dense recipe, then Li et al. 2017's L1 filters.

Dense training is ``scripts/configs/resnet20.py`` (182 epochs, 45k/5k
split). The option-A shortcuts fix the residual stream's width, so only each
block's inner group (its first convolution's filters and the second's
inputs) is pruned, as Li et al. 2017 prune ResNets (§4.3). Removing 60 % of
those units with widths rounded to multiples of 8 leaves inner widths
8/16/24 of 16/32/64 and cuts the MACs 2.15x (``benchmarks/structured_latency.py``
counts them); Li et al. fine-tune for 40 epochs at a rate of 0.01 after one
prune, here three rounds of 20 epochs with the dense cosine schedule
restarted (``rewind``).

Chosen on the validation split at a short budget on 2 CPU cores (16 dense
epochs, 3 rounds of 3 or 5 retraining epochs; README, "Structured rounds in
the pipeline"): 60 % rounded to 8 with 5-epoch rounds held validation within
0.18 points of its dense network (16.26 -> 16.44 %) and ran 1.49x faster at
batch 64; 55 % unrounded (7/14/29, 2.23x fewer MACs) held it within 0.34
points but ran only 1.11x faster, because XLA's CPU convolutions are slow at
widths that are not multiples of 8. The full 182 + 3 x 20 epochs were not run.
"""

from _base import dense_recipe


def get_config() -> dict:
  return {
    **dense_recipe('resnet20'),
    'structure': 'channels',
    'structured_criterion': 'l1',  # Li et al. 2017: filters of least L1 norm
    'structured_scope': 'per-group',
    'structured_sparsity': 0.6,  # inner widths 8/16/24: 2.15x fewer MACs
    'round_to': 8,  # widths XLA runs fast on CPU (and GPU tensor cores)
    'rounds': 3,
    'retrain_epochs': 20,
    'retrain_schedule': 'rewind',
  }
