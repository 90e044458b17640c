"""LeNet-5 (Caffe variant) on MNIST (Han et al. 2015, Tables 1 and 3).

Every value not set here is the field's default in
``pruning.experiment.config.PruneConfig``.
"""

from models import CPU_COMPILER_OPTIONS


def get_config() -> dict:
  return {
    'model': 'lenet5',
    'dataset': 'mnist',
    # Chosen on a 5000-image validation split (benchmarks/lenet_results_notes.md):
    # lr 0.05 beat 0.02 dense; 30 epochs of cosine decay.
    'learning_rate': 0.05,
    'batch_size': 128,
    'momentum': 0.9,
    'regularization': 'l2',
    'regularization_strength': 5e-4,
    'dense_epochs': 30,
    # 8 retraining epochs per round beat 4 after every round (same validation runs).
    'rounds': 5,
    'retrain_epochs': 8,
    'retrain_schedule': 'rewind',
    # Table 3's densities for conv1, conv2 and fc2; fc1 kept 4 %: of 7.6 %, 4 % and
    # 2.5 % (12.1x, 20.4x, 28.5x; one seed), 4 % tied the lowest validation error.
    'criterion': 'sparsity',
    'density': {'conv1': 0.66, 'conv2': 0.15, 'fc1': 0.04, 'fc2': 0.2},
    # XLA's own CPU convolutions, not YNNPACK's: 14.3 ms against 45.3 ms a step on
    # 2 cores (models/lenet.py, benchmarks/RESULTS.md). Only affects CPU compiles.
    'compiler_options': CPU_COMPILER_OPTIONS,
  }
