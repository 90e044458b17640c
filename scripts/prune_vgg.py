"""Prune VGG-16, AlexNet or a CIFAR ResNet: train dense (or load it), then iterative prune + retrain rounds.

Han et al. 2015 on VGG-16 (Table 5) and AlexNet (Table 4), on ImageNet or
CIFAR-10, on one CPU, one accelerator or many devices and hosts. FC and CONV
layers are pruned in alternate rounds, the other group frozen (§3.3); the
dropout of fc6/fc7 follows the connections left (§3.2); each round retrains
the survivors. ResNet-20 and ResNet-56 (He et al. 2016) train dense on
CIFAR-10 with their recipes (rounds 0; ``--rounds`` and ``--density`` prune
them like the others). Writes into --workdir: config.json, metrics.jsonl (a line per
epoch, prune and round), checkpoints/ (orbax, one per round; --resume
continues a killed run), report.md / report.json (per layer: weights, FLOP,
weights % kept, FLOP % kept, in the paper's format, plus totals) and
error_vs_kept.png. With epoch checkpoints (the default) a run killed in the
middle of a round resumes after its last complete epoch. Each model's recipe
is configs/<model>.py beside this script; every flag overrides it (the flags
are those of pruning.experiment.cli, shared with prune_lenet.py).
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
  name='prune_vgg.py',
  description=__doc__.split('\n\n')[0],
  examples="""examples:
  # A reduced-width VGG-16 on CIFAR-10 on a CPU (the data are prepared once
  # from ../shared/datasets/cifar10-jpeg.tar.gz):
  python scripts/prune_vgg.py --model vgg16_cifar --width 0.125 --batch-norm
  # Continue it after a kill:
  python scripts/prune_vgg.py --model vgg16_cifar --width 0.125 --batch-norm --resume
  # ResNet-20 trained dense with He et al. 2016's recipe (configs/resnet20.py):
  python scripts/prune_vgg.py --model resnet20
  # VGG-16 on ImageNet prepared by tfds in --data-dir, bf16 on accelerators,
  # starting from a trained dense network:
  python scripts/prune_vgg.py --model vgg16 --data-dir ~/tensorflow_datasets \\
      --dtype bfloat16 --dense-checkpoint runs/vgg16-dense
  # Two hosts (run on each, with its own --process-id):
  python scripts/prune_vgg.py --model vgg16 --coordinator-address host0:1234 \\
      --num-processes 2 --process-id 0""",
  models=('vgg16', 'vgg16_cifar', 'alexnet', 'resnet20', 'resnet56'),
  default_model='vgg16_cifar',
  recipes=HERE / 'configs',
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
