"""The small CIFAR-10 ViT (``models.vit``): dense training only, an AdamW recipe.

Rounds 0: the dense network, the starting point of structured pruning
(issue 14; ``configs/structured/vit_cifar.py``). Vision transformers train
with AdamW, not SGD: DeiT's (Touvron et al. 2021) decoupled weight decay of
0.05 over the kernels and embeddings (``optimizer='adamw'``;
``pruning.experiment.steps.base_optimizer`` leaves biases and norm scales
undecayed) and no L2 penalty in the loss, a 5-epoch linear warm-up, then one
cosine decay. The peak rate 1e-3 at batch 128 and the 200 epochs are what
CIFAR-10 ViTs trained from scratch commonly use. The augmentation is the
CIFAR-10 default (4-pixel padding, random crops, flips); DeiT's stronger
RandAugment, mixup and label smoothing are not in the toolkit, so the
network should end some points short of the 90 % they reach. Not yet chosen
on a validation split: no run has used these values. A training step at
batch 128 took 752 ms on the shared 2-core CPU
(``benchmarks/results/structured_latency.md``), about 4.4 minutes an epoch
and 15 hours for the 200, so these runs wait for a GPU session.
"""


def get_config() -> dict:
  return {
    'model': 'vit_cifar',
    'dataset': 'cifar10',
    'batch_size': 128,
    'optimizer': 'adamw',
    'learning_rate': 1e-3,
    'weight_decay': 0.05,
    'regularization': 'none',
    # 5 epochs of 45,000 images at batch 128: 5 x 352 steps.
    'warmup_steps': 1760,
    'validation_size': 5000,
    'dense_epochs': 200,
    'rounds': 0,
  }
