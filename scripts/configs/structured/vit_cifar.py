"""The small CIFAR-10 ViT, heads and MLP units removed: isomorphic Taylor scores.

Dense training is ``scripts/configs/vit_cifar.py`` (AdamW). The residual
stream is kept whole (the class token and the position embedding cannot be
resized), so each block's head group (query, key and value kernels' head
axis, ``out``'s) and its MLP hidden group are pruned. The groups of one kind
are alike in every block, so their units are ranked together
(``isomorphic``, Fang et al. 2024's scope for transformers) by first-order
Taylor scores (``taylor``, as DepGraph prunes ViTs). Nearly all of the
model's MACs are in these groups: 50 % of the units of every group cut them
1.99x (``benchmarks/results/structured_latency.md``), and 60 % chosen
isomorphically cut them 2.1x in a one-round smoke run on synthetic data
(how many fall in heads, which also carry the attention products, and how
many in MLPs varies with the scores). Not yet chosen on a validation
split: no run has used these values.
"""

from _base import dense_recipe


def get_config() -> dict:
  return {
    **dense_recipe('vit_cifar'),
    'structure': 'channels',
    'structured_criterion': 'taylor',
    'structured_scope': 'isomorphic',
    'structured_sparsity': 0.6,
    'rounds': 3,
    'retrain_epochs': 20,
    'retrain_schedule': 'rewind',
  }
