"""ResNet-20 on CIFAR-10 (He et al. 2016, §4.2): dense training only, the paper's recipe.

Rounds 0: the dense network, the starting point of structured pruning
(issue 14). Every value not set here is the field's default in
``pruning.experiment.config.PruneConfig``. Two departures from the paper,
both forced by the toolkit:

* the learning rate follows one cosine decay over the 182 epochs, not the
  paper's division by 10 at 32k and 48k iterations: the pipeline's schedule
  (``pruning.schedule.learning_rate_schedule``) has no step decay;
* the L2 penalty acts on the kernels (the prunable leaves), not on the batch
  norms' scales and offsets or ``fc``'s bias, as torch's ``weight_decay``
  does.

The augmentation is the CIFAR-10 default (4-pixel padding, random 32x32
crops, horizontal flips), the paper's. No ``compiler_options``: unlike
LeNet-5's and VGG's, ResNet-20's CPU step is no faster on XLA's own
convolutions than on YNNPACK's (batch 128 on the shared 2-core CPU: 710 ms
against 701 ms, medians of 8 interleaved steps), so a dense run takes about
4 minutes an epoch there, 12 hours for the 182.
"""


def get_config() -> dict:
  return {
    'model': 'resnet20',
    'dataset': 'cifar10',
    # §4.2: mini-batch 128, lr 0.1, momentum 0.9, weight decay 1e-4.
    'batch_size': 128,
    'learning_rate': 0.1,
    'momentum': 0.9,
    'regularization': 'l2',
    'regularization_strength': 1e-4,
    # §4.2: 64k iterations, "determined on a 45k/5k train/val split": 64000 x 128 /
    # 45000 = 182 epochs, with the same 5k held out for choices here.
    'validation_size': 5000,
    'dense_epochs': 182,
    'rounds': 0,
  }
