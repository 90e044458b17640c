"""AlexNet on ImageNet (Han et al. 2015, Tables 1 and 4): the paper's pruning, an ordinary SGD recipe.

Not validated here (no ImageNet run has been made with it). Every value not
set here is the field's default in ``pruning.experiment.config.PruneConfig``.
"""

from models import MODELS


def get_config() -> dict:
  return {
    'model': 'alexnet',
    'dataset': 'imagenet2012',
    # The usual ImageNet SGD recipe (Krizhevsky et al. 2012: momentum 0.9, L2 5e-4,
    # ~90 epochs), batch 256 and lr 0.01 with cosine decay here.
    'batch_size': 256,
    'eval_batch_size': 500,
    'learning_rate': 0.01,
    # A linear warm-up over the first 1000 steps (a fifth of an epoch): a safeguard for
    # the classifier's ReLUs against the first large steps (models.init has the cure).
    'warmup_steps': 1000,
    'momentum': 0.9,
    'regularization': 'l2',
    'regularization_strength': 5e-4,
    'dense_epochs': 90,
    # Retrained at 1/100 of the initial rate (§4), FC and CONV in alternate rounds
    # (§3.3), dropout adjusted (§3.2); 6 rounds x 4 epochs is this toolkit's choice.
    'rounds': 6,
    'retrain_epochs': 4,
    'retrain_schedule': 'fine-tune',
    'retrain_lr_scale': 0.01,
    'alternate': True,
    'criterion': 'sparsity',
    # Han et al. 2015, Table 4: weights kept per layer.
    'density': {
      'conv1': 0.84,
      'conv2': 0.38,
      'conv3': 0.35,
      'conv4': 0.37,
      'conv5': 0.37,
      'fc1': 0.09,
      'fc2': 0.09,
      'fc3': 0.25,
    },
    'dropout': MODELS['alexnet'].dropout,
  }
