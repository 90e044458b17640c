"""Export a pruning run as a compact sparse model file, with a size and latency report.

Takes a workdir written by ``scripts/prune_lenet.py`` or ``scripts/prune_vgg.py``
(any model of the registry), removes dead neurons (Han et al. 2015, §3.5;
through batch norm for VGG-16), stores the kept weights with relative
indices (§5) and checks on the model's test set (MNIST, CIFAR-10, or
ImageNet's validation split prepared in --data-dir) that the file's model
predicts exactly what the masked model predicts before writing it. Beside
the file it writes ``<name>.report.md`` and ``<name>.report.json``: neurons
removed per layer, bytes per layer by component, compression against dense
float32 with float32 and float16 values, test predictions, and latency dense
vs sparse at batch 1 and 64 of the whole model and of each FC layer.

Examples:
  python scripts/export_sparse.py runs/lenet300-seed0
  python scripts/export_sparse.py runs/lenet300-seed0 --out lenet300.jpsparse --fc-index-bits auto
  python scripts/export_sparse.py runs/lenet5 --round 3 --value-dtype float16 --max-mismatches 5
  python scripts/export_sparse.py runs/vgg16-cifar --test-subset 1000 --latency-repeats 20
  python scripts/export_sparse.py runs/vgg16 --data-dir ~/tensorflow_datasets --batch-size 50
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

from pruning.experiment import cli, export
from pruning.experiment.run_dir import RunDir
from pruning.sparse import file_format

# The checkout's offline copies: the default of --raw-data (the library knows no checkout).
SHARED_DATASETS = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'datasets'
BUNDLED_MNIST = SHARED_DATASETS / cli.RAW_COPIES['mnist'][0]
BUNDLED_CIFAR10 = SHARED_DATASETS / cli.RAW_COPIES['cifar10'][0]


def _index_bits(text: str) -> int | str:
  if text == 'auto':
    return text
  try:
    return int(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"{text!r} is not a bit width or 'auto'") from e


def _positive(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive integer')
  return value


def parse_args(argv=None) -> argparse.Namespace:
  return _parser().parse_args(argv)


def default_raw_data(workdir: str | os.PathLike) -> str | None:
  """The checkout's raw copy of the dataset a run's export is verified on, if any.

  ``None`` (the library's own default) when the dataset's variable
  (``$PRUNING_MNIST_DIR``, ``$PRUNING_CIFAR10_PATH``) is set, the copy is
  absent, the dataset has none (ImageNet), or the workdir is not a run (the
  export then says what is wrong).
  """
  try:
    model = json.loads(RunDir(workdir).config.read_text())['model']
    dataset = export.evaluation_dataset(model)
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return cli.raw_copy(dataset, SHARED_DATASETS)


def _parser() -> cli.Parser:
  parser = cli.Parser(
    prog='export_sparse.py',
    description=__doc__.split('\n\n')[0],
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument('workdir', help='workdir of a pruning run (config.json, checkpoints/)')
  parser.add_argument('--out', default=None, help='file to write (default: WORKDIR/model.jpsparse)')
  parser.add_argument('--round', type=int, default=None, help='round to export (default: last)')
  parser.add_argument('--fc-index-bits', type=_index_bits, default=5, help="bits or 'auto'")
  parser.add_argument('--conv-index-bits', type=_index_bits, default=8, help="bits or 'auto'")
  parser.add_argument('--value-dtype', choices=file_format.VALUE_DTYPES, default='float32')
  parser.add_argument(
    '--max-mismatches',
    type=int,
    default=0,
    help='test images on which the export may predict differently (reduced precision only)',
  )
  parser.add_argument(
    '--latency-repeats', type=int, default=100, help='timed calls per latency figure (0: skip)'
  )
  parser.add_argument(
    '--test-subset',
    type=_positive,
    default=None,
    help="verify on this many test images only, chosen as a run's test_subset (default: all)",
  )
  parser.add_argument(
    '--batch-size',
    type=_positive,
    default=None,
    help="evaluation batch (default: the run's eval_batch_size)",
  )
  parser.add_argument(
    '--data-dir',
    default=None,
    help='where the prepared tfds datasets are kept (ImageNet must be prepared there: '
    'see pruning/data/imagenet.py)',
  )
  parser.add_argument(
    '--raw-data',
    default=None,
    help='raw files of the test set, read if --data-dir has not prepared it yet: the folder of '
    'the four MNIST IDX .gz files, or a CIFAR-10 tarball (not for ImageNet). By default the '
    f"checkout's bundled copy ({BUNDLED_MNIST}, {BUNDLED_CIFAR10}) if present and "
    '$PRUNING_MNIST_DIR / $PRUNING_CIFAR10_PATH is not set, else the library reads the '
    'variable or downloads',
  )
  return parser


def main(argv=None) -> dict:
  parser = _parser()
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or RunDir(args.workdir).sparse_model)
  command = cli.command_line(argv, 'export_sparse.py')
  raw_data = args.raw_data if args.raw_data is not None else default_raw_data(args.workdir)
  # A run that is not there or cannot be exported, missing data, an export that does not
  # verify (nothing is written then): one line and exit status 2.
  try:
    payload = export.export_run(
      args.workdir,
      out,
      round_index=args.round,
      fc_index_bits=args.fc_index_bits,
      conv_index_bits=args.conv_index_bits,
      value_dtype=args.value_dtype,
      data_dir=args.data_dir,
      raw_dir=raw_data,
      test_subset=args.test_subset,
      batch_size=args.batch_size,
      max_mismatches=args.max_mismatches,
      latency_repeats=args.latency_repeats,
      command=command,
    )
  except (ValueError, OSError, export.VerificationError) as error:
    parser.error(cli.one_line(error))
  storage = payload['storage']
  print((out.parent / f'{out.stem}.report.md').read_text())
  print(
    f'wrote {out}: {storage["file_bytes"]:,} bytes, {storage["compression"]:.1f}x smaller than '
    f'the dense float32 params ({storage["dense_float32_bytes"]:,} bytes)'
  )
  return payload


if __name__ == '__main__':
  main()
