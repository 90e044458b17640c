"""Prune a LeNet on MNIST: train dense, then iterative prune + retrain rounds.

Reproduces Table 1 of Han et al. 2015 for LeNet-300-100 and LeNet-5. Writes
into ``--workdir``: ``config.json``, ``metrics.jsonl`` (one line per epoch,
prune and round), ``checkpoints/`` (orbax, one per round), ``report.md`` /
``report.json`` (per-layer weights and FLOP kept, in the paper's format) and
``error_vs_kept.png``.

Examples:
  python scripts/prune_lenet.py                      # LeNet-300-100, defaults
  python scripts/prune_lenet.py --model lenet5 --workdir runs/lenet5 --seed 1
  python scripts/prune_lenet.py --workdir runs/lenet300 --resume
  python scripts/prune_lenet.py --model lenet5 --validation-size 5000 --auto-sensitivity 1.0
  python scripts/prune_lenet.py --workdir runs/dense --rounds 0   # then prune it two ways:
  python scripts/prune_lenet.py --from-dense runs/dense --workdir runs/a --density fc1=0.05,...
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import sys

from pruning.experiment import config as run_config
from pruning.experiment import pipeline, report

# The checkout's offline MNIST files: the default of --raw-dir (the library knows no checkout).
BUNDLED_MNIST = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'datasets' / 'mnist'


def _layer_values(text: str) -> dict[str, float]:
  """``'fc1=0.035,fc2=0.07'`` -> ``{'fc1': 0.035, 'fc2': 0.07}``."""
  try:
    return run_config.layer_values(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from e


def parse_args(argv=None) -> argparse.Namespace:
  return _parser().parse_args(argv)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  parser.add_argument('--model', choices=['lenet300', 'lenet5'], default='lenet300')
  parser.add_argument(
    '--workdir', default=None, help='output folder (default: runs/<model>-seed<seed>)'
  )
  parser.add_argument('--data-dir', default=None, help='where the prepared tfds dataset is kept')
  parser.add_argument(
    '--raw-dir',
    default=None
    if os.environ.get('PRUNING_MNIST_DIR') or not BUNDLED_MNIST.is_dir()
    else str(BUNDLED_MNIST),
    help='folder with the four MNIST IDX .gz files; by default $PRUNING_MNIST_DIR if set, else '
    f"the checkout's bundled copy {BUNDLED_MNIST} if present, else a download",
  )
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--resume', action='store_true', help='continue the run in --workdir')
  parser.add_argument(
    '--from-dense',
    default=None,
    metavar='RUN',
    help='skip dense training: start from the dense network (round 0) of the run in RUN, '
    'whose settings must match on everything but pruning and retraining; several pruning '
    'settings then share (and are compared on) one dense network',
  )
  schedule = parser.add_argument_group('schedule (defaults depend on --model)')
  for flag, kind in [
    ('--batch-size', int),
    ('--learning-rate', float),
    ('--momentum', float),
    ('--dense-epochs', int),
    ('--rounds', int),
    ('--retrain-epochs', int),
    ('--retrain-lr-scale', float),
    ('--regularization-strength', float),
    ('--validation-size', int),
    ('--train-subset', int),
  ]:
    schedule.add_argument(flag, type=kind, default=None)
  schedule.add_argument(
    '--retrain-schedule',
    choices=['rewind', 'fine-tune'],
    default=None,
    help="'rewind': restart the cosine schedule each round; "
    "'fine-tune': restart at --retrain-lr-scale x (the paper's 1/10)",
  )
  schedule.add_argument('--regularization', choices=['l2', 'l1', 'none'], default=None)
  schedule.add_argument(
    '--criterion',
    choices=['sparsity', 'quality', 'random'],
    default=None,
    help="'random' prunes the same per-layer counts as 'sparsity', at random (a baseline)",
  )
  schedule.add_argument(
    '--auto-sensitivity',
    type=float,
    default=None,
    metavar='BUDGET',
    help="choose each layer's final density (or quality) from sensitivity curves on the "
    'validation split: the largest swept sparsity whose validation error stays within BUDGET '
    'percentage points of the dense error (needs --validation-size); replaces --density/--quality',
  )
  schedule.add_argument(
    '--density',
    type=_layer_values,
    default=None,
    help='final kept fraction per layer, e.g. fc1=0.035,fc2=0.07,fc3=0.25',
  )
  schedule.add_argument(
    '--quality',
    type=_layer_values,
    default=None,
    help='final quality per layer for --criterion quality, e.g. fc1=2.0,fc2=1.5',
  )
  schedule.add_argument('--std-of', choices=['all', 'kept'], default=None)
  schedule.add_argument(
    '--alternate',
    action='store_true',
    default=None,
    help='prune/retrain FC and CONV layers in alternate rounds (paper §3.3; lenet5)',
  )
  parser.add_argument('--no-progress', action='store_true', help='no progress bars')
  return parser


def build_config(args: argparse.Namespace) -> run_config.PruneConfig:
  """The run's configuration: the model's defaults with the given options applied.

  Raises:
    ValueError: a bad value, or an option given that would do nothing (naming its
      flag and the mode it needs: ``--quality needs --criterion quality ...``).
  """
  fields = run_config.PruneConfig.__dataclass_fields__
  overrides = {
    key: value
    for key, value in vars(args).items()
    if value is not None and key in fields and key != 'model'
  }
  given = {*overrides, *(key for key in ('data_dir', 'raw_dir') if getattr(args, key) is not None)}
  try:
    config = run_config.default_config(args.model, **overrides)
    run_config.check_options(config, given)
  except run_config.IdleOptionError as error:
    raise ValueError(error.command_line()) from None
  return config


def main(argv=None) -> dict:
  args = parse_args(argv)
  try:
    config = build_config(args)
  except ValueError as error:
    _parser().error(str(error))
  workdir = pathlib.Path(args.workdir or f'runs/{args.model}-seed{args.seed}')
  resume = args.resume
  # With --resume, a workdir already seeded from the dense run continues as it is.
  if args.from_dense and not (resume and (workdir / 'checkpoints').exists()):
    try:
      pipeline.start_from_dense(args.from_dense, workdir, config)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
      _parser().error(f'--from-dense: {error}')
    resume = True
  result = pipeline.train_and_evaluate(
    config,
    workdir,
    resume=resume,
    data_dir=args.data_dir,
    raw_dir=args.raw_dir,
    progress=not args.no_progress,
  )
  rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
  header = {
    'model': args.model,
    'command': shlex.join([os.path.basename(sys.executable), *sys.argv])
    if argv is None
    else shlex.join(['prune_lenet.py', *argv]),
    'commit': report.git_commit(),
    'seed': config.seed,
    'retrain schedule': config.retrain_schedule,
    'machine': report.machine_description(),
  }
  if args.from_dense:
    header['dense network from'] = args.from_dense
  paths = report.write_and_print(
    workdir, rows, result['records'], header, auto_sensitivity=config.auto_sensitivity
  )
  final = result['records'][-1]
  return {'workdir': str(workdir), 'final': final, 'paths': {k: str(v) for k, v in paths.items()}}


if __name__ == '__main__':
  main()
