"""VGG-16 on CIFAR-10 (32x32 inputs, 10 classes): Table 5's densities, an ordinary CIFAR recipe.

Batch norm after every convolution, as the published CIFAR-10 VGG-16 results
train it; dropout 0.5 before fc7 and fc8 as in the paper, so §3.2's
adjustment applies. The dense recipe is a conventional one, not tuned here;
the classifier's initialisation (``models.init``) and the short warm-up are
what make it train (``benchmarks/vgg_vs_torch.py``). Every value not set here
is the field's default in ``pruning.experiment.config.PruneConfig``.
"""

from vgg16 import TABLE5_DENSITY  # a recipe may import its siblings (config.load_recipe)

from models import CPU_COMPILER_OPTIONS, MODELS


def get_config() -> dict:
  return {
    'model': 'vgg16_cifar',
    'dataset': 'cifar10',
    # An ordinary CIFAR-10 SGD recipe: batch 128, lr 0.05 with cosine decay,
    # momentum 0.9, L2 5e-4, 30 epochs.
    'batch_norm': True,
    'batch_size': 128,
    'learning_rate': 0.05,
    # A linear warm-up over the first 200 steps (about half an epoch): a safeguard for
    # the classifier's ReLUs against the first large steps (models.init has the cure).
    'warmup_steps': 200,
    'momentum': 0.9,
    'regularization': 'l2',
    'regularization_strength': 5e-4,
    'dense_epochs': 30,
    # FC and CONV pruned in alternate rounds (§3.3), dropout adjusted (§3.2).
    'rounds': 4,
    'retrain_epochs': 4,
    'retrain_schedule': 'rewind',
    'alternate': True,
    'criterion': 'sparsity',
    'density': TABLE5_DENSITY,
    'dropout': MODELS['vgg16_cifar'].dropout,
    # XLA's own CPU convolutions, as for LeNet-5: a width-1/8 step at batch 128 took
    # 43 ms against 48 ms with YNNPACK (2-core CPU). Only affects CPU compiles.
    'compiler_options': CPU_COMPILER_OPTIONS,
  }
