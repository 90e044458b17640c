"""Export a pruning run as a compact sparse model file, with a size and latency report.

Takes a workdir written by ``scripts/prune_lenet.py``, removes dead neurons
(Han et al. 2015, §3.5), stores the kept weights with relative indices (§5)
and checks on the MNIST test set that the file's model predicts exactly what
the masked model predicts before writing it. Beside the file it writes
``<name>.report.md`` and ``<name>.report.json``: neurons removed per layer,
bytes per layer by component, compression against dense float32, test
predictions, and latency dense vs sparse at batch 1 and 64.

Examples:
  python scripts/export_sparse.py runs/lenet300-seed0
  python scripts/export_sparse.py runs/lenet300-seed0 --out lenet300.jpsparse --fc-index-bits auto
  python scripts/export_sparse.py runs/lenet5 --round 3 --value-dtype float16 --max-mismatches 5
"""

from __future__ import annotations

import argparse
import os
import pathlib

from pruning.experiment import cli, export
from pruning.experiment.run_dir import RunDir
from pruning.sparse import file_format

# The checkout's offline MNIST files: the default of --raw-data (the library knows no checkout).
BUNDLED_MNIST = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'datasets' / 'mnist'


def _index_bits(text: str) -> int | str:
  if text == 'auto':
    return text
  try:
    return int(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"{text!r} is not a bit width or 'auto'") from e


def parse_args(argv=None) -> argparse.Namespace:
  return _parser().parse_args(argv)


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
  parser.add_argument('--data-dir', default=None, help='where the prepared tfds dataset is kept')
  parser.add_argument(
    '--raw-data',
    default=None
    if os.environ.get('PRUNING_MNIST_DIR') or not BUNDLED_MNIST.is_dir()
    else str(BUNDLED_MNIST),
    help='folder with the four MNIST IDX .gz files (read if --data-dir has no prepared MNIST); '
    f"by default $PRUNING_MNIST_DIR if set, else the checkout's bundled copy {BUNDLED_MNIST} if "
    'present, else a download',
  )
  return parser


def main(argv=None) -> dict:
  parser = _parser()
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out or RunDir(args.workdir).sparse_model)
  command = cli.command_line(argv, 'export_sparse.py')
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
      raw_dir=args.raw_data,
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
