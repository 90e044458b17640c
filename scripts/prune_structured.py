"""Structured pruning of a CIFAR-10 network: train dense, remove whole channels over rounds, save the smaller model.

The dependency groups are traced from the model's jaxpr
(pruning.structured.dependency_groups): each unit (a filter with its bias,
batch-norm entries and the next layer's inputs) is held at zero by the mask
through rounds of prune and retrain, and at the end cut out into a smaller
dense model, saved with its plan in --workdir/pruned/ (plan.json,
params.npz; it reloads without pickle). The last round_end record of
metrics.jsonl compares its parameters and MACs with the dense model's.
Groups that removal cannot shrink (an option-A ResNet's residual stream) are
kept whole. Each model's recipe is configs/structured/<model>.py beside this
script (its dense recipe in configs/, channels removed); every flag
overrides it (the flags of pruning.experiment.cli, shared with
prune_lenet.py and prune_vgg.py). --dense-checkpoint <run>/pruned in
prune_vgg.py then prunes the smaller model's single weights too.
"""

from __future__ import annotations

import argparse
import pathlib

from pruning.experiment import cli
from pruning.experiment import config as run_config

HERE = pathlib.Path(__file__).resolve().parent
# The checkout's offline datasets: the default of --raw-data (the library knows no checkout).
DATASETS = HERE.parent.parent / 'shared' / 'datasets'

SCRIPT = cli.Script(
  name='prune_structured.py',
  description=__doc__.split('\n\n')[0],
  examples="""examples:
  # ResNet-20: He et al.'s dense recipe, then 60 % of each block's inner
  # filters removed by L1 norm over 3 rounds, widths rounded to multiples
  # of 8 (8/16/24; 2.15x fewer MACs):
  python scripts/prune_structured.py --model resnet20 --workdir runs/resnet20-channels
  # Network slimming on a reduced-width VGG-16 (batch-norm scales, global):
  python scripts/prune_structured.py --model vgg16_cifar --width 0.25
  # First-order Taylor scores from 8 training batches, widths multiples of 8:
  python scripts/prune_structured.py --model resnet56 --structured-criterion taylor --round-to 8
  # The ViT (AdamW): 60 % of heads and MLP units, Taylor scores, isomorphic scope:
  python scripts/prune_structured.py --model vit_cifar --workdir runs/vit-heads
  # Continue a killed run:
  python scripts/prune_structured.py --model resnet20 --workdir runs/resnet20-channels --resume""",
  models=('resnet20', 'resnet56', 'vgg16_cifar', 'vit_cifar'),
  default_model='resnet20',
  recipes=HERE / 'configs' / 'structured',
  raw_data_default=cli.raw_copy('cifar10', DATASETS),
  epoch_checkpoints_default=True,
)


def parse_args(argv=None) -> argparse.Namespace:
  return SCRIPT.parser().parse_args(argv)


def build_config(args: argparse.Namespace) -> run_config.PruneConfig:
  """The run's configuration: the recipe of ``--model`` (or ``--config``), flags applied."""
  return SCRIPT.config(args)


def main(argv=None) -> dict:
  return cli.main(SCRIPT, argv)


if __name__ == '__main__':
  main()
