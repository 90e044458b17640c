"""Prune a LeNet on MNIST: train dense, then iterative prune + retrain rounds.

Reproduces Table 1 of Han et al. 2015 for LeNet-300-100 and LeNet-5. Writes
into ``--workdir``: ``config.json``, ``metrics.jsonl`` (one line per epoch,
prune and round), ``checkpoints/`` (orbax, one per round), ``report.md`` /
``report.json`` (per-layer weights and FLOP kept, in the paper's format) and
``error_vs_kept.png``. Each model's recipe is ``configs/<model>.py`` beside
this script; every flag overrides it (the flags are those of
``pruning.experiment.cli``, shared with ``prune_vgg.py``).
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
  name='prune_lenet.py',
  description=__doc__.split('\n\n')[0],
  examples="""examples:
  python scripts/prune_lenet.py                      # LeNet-300-100, its recipe
  python scripts/prune_lenet.py --model lenet5 --workdir runs/lenet5 --seed 1
  python scripts/prune_lenet.py --workdir runs/lenet300 --resume
  python scripts/prune_lenet.py --model lenet5 --validation-size 5000 --auto-sensitivity 1.0
  python scripts/prune_lenet.py --workdir runs/dense --rounds 0   # then prune it two ways:
  python scripts/prune_lenet.py --from-dense runs/dense --workdir runs/a --density fc1=0.05,...""",
  models=('lenet300', 'lenet5'),
  default_model='lenet300',
  recipes=HERE / 'configs',
  raw_data_default=cli.raw_copy('mnist', DATASETS),
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
