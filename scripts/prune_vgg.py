"""Prune VGG-16 or AlexNet: train dense (or load it), then iterative prune + retrain rounds.

Han et al. 2015 on VGG-16 (Table 5) and AlexNet (Table 4), on ImageNet or
CIFAR-10, on one CPU, one accelerator or many devices and hosts. FC and CONV
layers are pruned in alternate rounds, the other group frozen (§3.3); the
dropout of fc6/fc7 follows the connections left (§3.2); each round retrains
the survivors. Writes into --workdir: config.json, metrics.jsonl (a line per
epoch, prune and round), checkpoints/ (orbax, one per round; --resume
continues a killed run), report.md / report.json (per layer: weights, FLOP,
weights % kept, FLOP % kept, in the paper's format, plus totals) and
error_vs_kept.png. With epoch checkpoints (the default) a run killed in the
middle of a round resumes after its last complete epoch.

Examples:
  # A reduced-width VGG-16 on CIFAR-10 on a CPU (the data are prepared once
  # from ../shared/datasets/cifar10-jpeg.tar.gz):
  python scripts/prune_vgg.py --model vgg16_cifar --width 0.125 --batch-norm
  # Continue it after a kill:
  python scripts/prune_vgg.py --model vgg16_cifar --width 0.125 --batch-norm --resume
  # VGG-16 on ImageNet prepared by tfds in --data-dir, bf16 on accelerators,
  # starting from a trained dense network:
  python scripts/prune_vgg.py --model vgg16 --data-dir ~/tensorflow_datasets \\
      --dtype bfloat16 --dense-checkpoint runs/vgg16-dense
  # Two hosts (run on each, with its own --process-id):
  python scripts/prune_vgg.py --model vgg16 --coordinator-address host0:1234 \\
      --num-processes 2 --process-id 0
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shlex
import sys
import textwrap

import jax

from pruning.experiment import config as run_config
from pruning.experiment import parallel, pipeline, report

# The checkout's offline CIFAR-10 copy: the default of --raw-path (the library knows no checkout).
BUNDLED_CIFAR10 = (
  pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'datasets' / 'cifar10-jpeg.tar.gz'
)
RAW_PATH_DEFAULT = (
  None
  if os.environ.get('PRUNING_CIFAR10_PATH') or not BUNDLED_CIFAR10.is_file()
  else str(BUNDLED_CIFAR10)
)

VGG_MODELS = ('vgg16', 'vgg16_cifar', 'alexnet')


def _layer_values(text: str) -> dict[str, float]:
  try:
    return run_config.layer_values(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from e


def _defaults_text() -> str:
  """The defaults that depend on --model, for --help."""
  lines = ['defaults per --model (any option above overrides them):']
  for model in VGG_MODELS:
    d = {**dataclasses.asdict(run_config.PruneConfig()), **run_config.MODEL_DEFAULTS[model]}
    densities = ', '.join(f'{k} {v:g}' for k, v in d['density'].items())
    lines.append(
      f'  {model}: {d["dataset"]}, batch {d["batch_size"]}, lr {d["learning_rate"]:g}, '
      f'{d["dense_epochs"]} dense epochs, {d["rounds"]} rounds x {d["retrain_epochs"]} '
      f'epochs ({d["retrain_schedule"]}'
      + (f' at {d["retrain_lr_scale"]:g} x lr' if d['retrain_schedule'] == 'fine-tune' else '')
      + f'), {"alternating" if d["alternate"] else "joint"} FC/CONV rounds; density: {densities}'
    )
  return '\n'.join(textwrap.fill(line, 100, subsequent_indent='    ') for line in lines)


def parse_args(argv=None) -> argparse.Namespace:
  return _parser().parse_args(argv)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0],
    epilog=__doc__.split('\n\n', 1)[1] + '\n' + _defaults_text(),
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  run = parser.add_argument_group('run')
  run.add_argument('--model', choices=VGG_MODELS, default='vgg16_cifar')
  run.add_argument(
    '--dataset',
    choices=['cifar10', 'imagenet2012', 'synthetic'],
    default=None,
    help="default: the model's own (cifar10 for vgg16_cifar, imagenet2012 otherwise); "
    'synthetic: random images, for throughput and smoke runs',
  )
  run.add_argument(
    '--workdir', default=None, help='output folder (default: runs/<model>-seed<seed>)'
  )
  run.add_argument('--data-dir', default=None, help='where prepared tfds datasets are kept')
  run.add_argument(
    '--raw-path',
    default=RAW_PATH_DEFAULT,
    help='the CIFAR-10 tarball to prepare the dataset from (default: $PRUNING_CIFAR10_PATH if '
    f"set, else the checkout's bundled copy {BUNDLED_CIFAR10} if present, else the official "
    'download); ImageNet must be prepared with tfds in --data-dir beforehand (see README)',
  )
  run.add_argument('--seed', type=int, default=0, help='initialisation and data order')
  run.add_argument('--resume', action='store_true', help='continue the run in --workdir')
  run.add_argument(
    '--no-epoch-checkpoints',
    action='store_true',
    help='checkpoint only after each round, not also after every epoch (a killed run then '
    'resumes from its last complete round)',
  )
  run.add_argument('--no-progress', action='store_true', help='no progress bars')
  run.add_argument(
    '--input-workers',
    type=int,
    default=0,
    help='grain worker processes for the input pipeline (cifar10, imagenet2012)',
  )

  model = parser.add_argument_group('model')
  model.add_argument('--width', type=float, default=None, help='VGG channel multiplier, e.g. 0.125')
  model.add_argument(
    '--batch-norm', action='store_true', default=None, help='batch norm after every VGG conv'
  )
  model.add_argument(
    '--dropout-rate',
    type=float,
    default=None,
    help='dense-training dropout D_o of fc6/fc7 (AlexNet fc1/fc2); default 0.5',
  )
  model.add_argument(
    '--dtype',
    choices=['float32', 'bfloat16'],
    default=None,
    help='bfloat16: mixed precision for accelerators (float32 params and optimizer state, '
    'bfloat16 compute; pruned weights stay exactly 0)',
  )

  dense = parser.add_argument_group('dense training (round 0)')
  dense.add_argument(
    '--dense-checkpoint',
    default=None,
    help='start from this dense network (a run directory, e.g. an earlier run of this script, '
    'or an orbax checkpoint with params) and skip dense training',
  )
  dense.add_argument('--dense-epochs', type=int, default=None)
  dense.add_argument('--batch-size', type=int, default=None, help='global, over all devices')
  dense.add_argument('--eval-batch-size', type=int, default=None)
  dense.add_argument('--learning-rate', type=float, default=None)
  dense.add_argument('--momentum', type=float, default=None)
  dense.add_argument('--regularization', choices=['l2', 'l1', 'none'], default=None)
  dense.add_argument('--regularization-strength', type=float, default=None)
  dense.add_argument(
    '--no-augment', dest='augment', action='store_false', default=None, help='no augmentation'
  )
  dense.add_argument(
    '--validation-size',
    type=int,
    default=None,
    help='training examples held out to choose hyperparameters on (never the test set)',
  )
  dense.add_argument('--train-subset', type=int, default=None, help='first N training examples')
  dense.add_argument('--test-subset', type=int, default=None, help='first N test examples')

  prune = parser.add_argument_group('pruning and retraining')
  prune.add_argument('--rounds', type=int, default=None, help='prune + retrain rounds')
  prune.add_argument('--retrain-epochs', type=int, default=None, help='per round')
  prune.add_argument(
    '--retrain-schedule',
    choices=['rewind', 'fine-tune'],
    default=None,
    help="'rewind': restart the dense cosine schedule each round; 'fine-tune': restart at "
    "--retrain-lr-scale x the initial rate (the paper's 1/100 for AlexNet, §4)",
  )
  prune.add_argument(
    '--retrain-lr-scale',
    type=float,
    default=None,
    help='with --retrain-schedule fine-tune: the retraining peak rate as a fraction of '
    '--learning-rate',
  )
  prune.add_argument(
    '--criterion',
    choices=['sparsity', 'quality', 'random'],
    default=None,
    help="'sparsity': prune each layer to --density; 'quality': Han's |w| < quality x std; "
    "'random': the counts of 'sparsity' at random (a baseline)",
  )
  prune.add_argument(
    '--auto-sensitivity',
    type=float,
    default=None,
    metavar='BUDGET',
    help="choose each layer's final density (or quality) from sensitivity curves measured on "
    'the validation split after dense training: the largest swept sparsity whose validation '
    'error stays within BUDGET percentage points of the dense error (needs --validation-size); '
    'replaces --density/--quality',
  )
  prune.add_argument(
    '--density',
    type=_layer_values,
    default=None,
    help='final kept fraction per layer, e.g. conv1_1=0.58,fc6=0.04 (default: the paper, '
    'Tables 4/5); reached geometrically over the rounds',
  )
  prune.add_argument(
    '--quality',
    type=_layer_values,
    default=None,
    help='final quality per layer for --criterion quality, e.g. conv1_1=0.5,fc6=2.0',
  )
  prune.add_argument('--std-of', choices=['all', 'kept'], default=None)
  prune.add_argument(
    '--no-alternate',
    dest='alternate',
    action='store_false',
    default=None,
    help='prune FC and CONV layers together instead of in alternate rounds (§3.3)',
  )
  prune.add_argument(
    '--no-dropout-adjustment',
    action='store_true',
    help='keep the dense dropout rate instead of D_r = D_o sqrt(C_r / C_o) (§3.2)',
  )

  hosts = parser.add_argument_group(
    'several hosts',
    'Start the same command on every host with its own --process-id; each host reads its '
    'own shard of every batch, and every device of every host joins one data-parallel mesh.',
  )
  hosts.add_argument(
    '--coordinator-address', default=None, help="host:port of process 0, or 'auto'"
  )
  hosts.add_argument('--num-processes', type=int, default=None)
  hosts.add_argument('--process-id', type=int, default=None)
  return parser


# The flags whose names are not ``--`` and their field's with dashes.
_FLAGS = {
  'alternate': '--no-alternate',
  'augment': '--no-augment',
  'dropout': '--no-dropout-adjustment',
  'raw_dir': '--raw-path',
}


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
  given = set(overrides)
  if args.data_dir is not None:
    given.add('data_dir')
  if args.raw_path not in (None, RAW_PATH_DEFAULT):
    given.add('raw_dir')
  if args.input_workers:
    given.add('input_workers')
  if args.dense_checkpoint and args.dense_epochs is None:
    overrides['dense_epochs'] = 0
  if args.no_dropout_adjustment:
    overrides['dropout'] = {}
    given.add('dropout')
  try:
    config = run_config.default_config(args.model, **overrides)
    run_config.check_options(config, given)
  except run_config.IdleOptionError as error:
    raise ValueError(error.command_line(_FLAGS)) from None
  return config


def main(argv=None) -> dict:
  args = parse_args(argv)
  try:
    parallel.initialize(args.coordinator_address, args.num_processes, args.process_id)
    config = build_config(args)
  except ValueError as error:
    _parser().error(str(error))
  workdir = pathlib.Path(args.workdir or f'runs/{args.model}-seed{args.seed}')
  result = pipeline.train_and_evaluate(
    config,
    workdir,
    resume=args.resume,
    data_dir=args.data_dir,
    raw_dir=args.raw_path,
    progress=not args.no_progress,
    input_workers=args.input_workers,
    checkpoint_epochs=not args.no_epoch_checkpoints,
  )
  rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
  command = (
    shlex.join([os.path.basename(sys.executable), *sys.argv])
    if argv is None
    else shlex.join(['prune_vgg.py', *argv])
  )
  header = {
    'model': config.model,
    'dataset': config.dataset,
    'command': command,
    'commit': report.git_commit(),
    'seed': config.seed,
    'width': config.width,
    'batch norm': config.batch_norm,
    'dtype': config.dtype,
    'retrain schedule': config.retrain_schedule,
    'machine': report.machine_description(),
  }
  paths = {}
  if jax.process_index() == 0:
    paths = report.write_and_print(
      workdir, rows, result['records'], header, auto_sensitivity=config.auto_sensitivity
    )
  return {
    'workdir': str(workdir),
    'final': result['records'][-1],
    'paths': {k: str(v) for k, v in paths.items()},
  }


if __name__ == '__main__':
  main()
