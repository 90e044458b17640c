"""VGG-16 on ImageNet (Han et al. 2015, Tables 1 and 5): the paper's pruning, an ordinary SGD recipe.

Not validated here (no ImageNet run has been made with it). Every value not
set here is the field's default in ``pruning.experiment.config.PruneConfig``.
"""

from models import MODELS

# Han et al. 2015, Table 5: per-layer weights kept by the pruned VGG-16.
TABLE5_DENSITY = {
  'conv1_1': 0.58,
  'conv1_2': 0.22,
  'conv2_1': 0.34,
  'conv2_2': 0.36,
  'conv3_1': 0.53,
  'conv3_2': 0.24,
  'conv3_3': 0.42,
  'conv4_1': 0.32,
  'conv4_2': 0.27,
  'conv4_3': 0.34,
  'conv5_1': 0.35,
  'conv5_2': 0.29,
  'conv5_3': 0.36,
  'fc6': 0.04,
  'fc7': 0.04,
  'fc8': 0.23,
}


def get_config() -> dict:
  return {
    'model': 'vgg16',
    'dataset': 'imagenet2012',
    # The usual ImageNet SGD recipe for VGG (Simonyan & Zisserman 2015: batch 256,
    # lr 0.01, momentum 0.9, L2 5e-4, 74 epochs), with cosine decay here.
    'batch_size': 256,
    'eval_batch_size': 500,
    'learning_rate': 0.01,
    # A linear warm-up over the first 1000 steps (a fifth of an epoch): a safeguard for
    # the classifier's ReLUs against the first large steps (models.init has the cure).
    'warmup_steps': 1000,
    'momentum': 0.9,
    'regularization': 'l2',
    'regularization_strength': 5e-4,
    'dense_epochs': 74,
    # Retrained at 1/100 of the initial rate (§4), FC and CONV pruned in alternate
    # rounds with the other group frozen (§3.3), dropout following the connections
    # left (§3.2); 6 rounds x 4 epochs is this toolkit's choice.
    'rounds': 6,
    'retrain_epochs': 4,
    'retrain_schedule': 'fine-tune',
    'retrain_lr_scale': 0.01,
    'alternate': True,
    'criterion': 'sparsity',
    'density': TABLE5_DENSITY,
    'dropout': MODELS['vgg16'].dropout,
  }
