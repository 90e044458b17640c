"""Input pipeline throughput: images/s of training and evaluation batches.

For CIFAR-10 (the prepared ``cifar10_tarball`` dataset; prepared first if
needed, from ``--raw-path``: by default the checkout's bundled JPEG copy
``../shared/datasets/cifar10-jpeg.tar.gz``) it times an epoch's worth of ``train_batches`` (crop + flip +
normalise) and ``eval_batches`` with each worker count, and the same batches
made on the device by the resident input the pipeline uses for CIFAR-10
(:mod:`pruning.data.resident`; each batch waited for), and prints a Markdown
table of images/s. The first batch of each pipeline is timed separately
(worker start-up; for the resident input, decoding and copying the splits to
the device), the rate is over the following ones.

With ``--imagenet-like`` it also times the variable-size (ImageNet) path on
in-memory JPEGs of 500x375 pixels (ImageNet's typical size): random-resized
crop to 224 + flip, and resize + centre crop to 224, per worker count. The
photos are synthetic (smooth gradients plus noise, JPEG quality 90), so the
decode cost is indicative, not ImageNet's exact figure.

Usage:
  python benchmarks/input_throughput.py [--data-dir DIR] [--raw-path TARBALL] [--workers 0 2]
      [--batches 100] [--batch-size 256] [--imagenet-like]
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import _common
import jax
import numpy as np
import PIL.Image

from pruning.data import dataset_info, eval_batches, image_source, resident, train_batches
from pruning.data.images import ImageSource
from pruning.experiment import cli, report


def _rate(batches, count: int) -> tuple[float, float, int]:
  """(first-batch seconds, images/s over the next ``count`` batches, images)."""
  start = time.perf_counter()
  iterator = iter(batches)
  first = next(iterator)
  first_s = time.perf_counter() - start
  images = 0
  start = time.perf_counter()
  for _, batch in zip(range(count), iterator, strict=False):
    jax.block_until_ready(batch)  # device batches are dispatched asynchronously
    images += len(batch[1])
  elapsed = time.perf_counter() - start
  if hasattr(iterator, 'close'):
    iterator.close()
  del first
  return first_s, images / elapsed, images


def _imagenet_like_source(count: int, seed: int = 0) -> ImageSource:
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:375, 0:500]
  records = []
  for i in range(count):
    base = np.stack([x * 0.5 + i, y * 0.6, (x + y) * 0.3], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format='JPEG', quality=90)
    records.append({'image': buffer.getvalue(), 'label': i % 1000})
  return ImageSource(records, dataset_info('imagenet2012'), provenance='synthetic JPEGs')


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', default=None, help='tfds data_dir (default: the usual)')
  parser.add_argument(
    '--raw-path',
    default=cli.raw_copy('cifar10', _common.DATASETS),
    help='CIFAR-10 tarball to prepare from (default: $PRUNING_CIFAR10_PATH if set, else the '
    f"checkout's copy in {_common.DATASETS} if present, else the official download)",
  )
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
  parser.add_argument('--batches', type=int, default=100, help='timed batches per pipeline')
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--imagenet-like', action='store_true')
  args = parser.parse_args(argv)

  where = {'data_dir': args.data_dir, 'raw_path': args.raw_path}
  source = image_source('cifar10', 'train', **where)
  test = image_source('cifar10', 'test', **where)
  print(f'command: python benchmarks/input_throughput.py {" ".join(sys.argv[1:])}'.rstrip())
  print(f'commit {report.git_commit()}; {report.machine_description()}')
  print(f'data: {source.provenance}')
  print(f'batch {args.batch_size}, {args.batches} timed batches per row\n')
  print('| dataset | batches | output | workers | first batch (s) | images/s |')
  print('|---|---|---|---:|---:|---:|')
  b = args.batch_size
  for workers in args.workers:
    rows = [
      ('train (crop+flip)', 'float32', train_batches(source, batch_size=b, seed=0, epoch=0, worker_count=workers)),
      ('train (crop+flip)', 'uint8', train_batches(source, batch_size=b, seed=0, epoch=0, worker_count=workers, normalize=False)),
      ('eval', 'float32', eval_batches(test, batch_size=b, worker_count=workers)),
    ]  # fmt: skip
    for kind, output, batches in rows:
      first, rate, _ = _rate(batches, min(args.batches, len(batches) - 1))
      print(f'| CIFAR-10 | {kind} | {output} | {workers} | {first:.2f} | {rate:,.0f} |')

  def on_device(kind: str):
    # A fresh input per row: its first batch includes decoding and placing the splits.
    data = resident.resident_input(
      source,
      {'test': test},
      mesh=jax.make_mesh((1,), ('data',), devices=jax.devices()[:1]),
      batch_size=b,
      eval_batch_size=b,
      seed=0,
      augment=True,
    )
    return data.train_epoch(0) if kind == 'train' else data.evaluation('test')

  resident._DECODED.clear()  # the first row decodes, as a run's first epoch does
  device = jax.devices()[0].platform
  for kind, label, count in (
    ('train', 'train (crop+flip)', len(source)),
    ('eval', 'eval', len(test)),
  ):
    start = time.perf_counter()
    batches = on_device(kind)  # decodes (first row) and copies the splits to the device
    setup = time.perf_counter() - start
    first, rate, _ = _rate(batches, min(args.batches, count // b - 1))
    print(
      f'| CIFAR-10 | {label} | float32 on {device} | resident | {setup + first:.2f} | {rate:,.0f} |'
    )
  if args.imagenet_like:
    fake = _imagenet_like_source(4 * b)
    for workers in args.workers:
      rows = [
        ('train (random-resized crop+flip)', train_batches(fake, batch_size=b // 4, seed=0, epoch=0, worker_count=workers)),
        ('eval (resize+centre crop)', eval_batches(fake, batch_size=b // 4, worker_count=workers)),
      ]  # fmt: skip
      for kind, batches in rows:
        first, rate, _ = _rate(batches, len(batches) - 1)
        print(
          f'| ImageNet-like 500x375 JPEG | {kind} | float32 | {workers} | {first:.2f} | {rate:,.0f} |'
        )


if __name__ == '__main__':
  main()
