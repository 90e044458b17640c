"""Which examples a run reads, in which order, in which batch, on which host.

One implementation of each, for every dataset: MNIST held in memory
(:class:`~pruning.data.datasets.ArrayInput`, batches from
:func:`array_batches`) and the image datasets read through grain
(:mod:`pruning.data.grain_batches`) take their examples from the same index
arithmetic:

* :func:`validation_indices` carves a seeded validation subset out of a
  training split, so hyperparameters are chosen without the test split;
* :func:`subset_indices` keeps ``size`` examples of a split, the first ones or
  a seeded random sample; :func:`carve` applies both to a run's splits;
* :func:`epoch_order` is the permutation an epoch visits the examples in, a
  function of ``(seed, epoch)`` only, so a resumed run sees what an
  uninterrupted one would have seen;
* :func:`batch_positions` says which positions of the epoch's order a host
  reads for a global batch, and which of them are padding.

Everything here works on integer positions; reading and decoding the
examples stays with the input that holds them.

Sharding for multi-host data parallelism: with ``shard_count`` hosts, each
reads ``batch_size`` examples (its share) of every global batch of
``batch_size * shard_count``; global batch ``k`` holds the epoch's positions
``k * batch_size * shard_count ...`` and host ``i`` the ``i``-th run of
``batch_size`` of them, so the hosts' batches concatenated in shard order are
the single-host batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


def validation_indices(count: int, size: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits ``range(count)`` into training and a seeded validation subset of ``size``.

  The subset is the first ``size`` entries of
  ``np.random.default_rng(seed).permutation(count)``; both parts are returned
  sorted, so each keeps the split's stored order.

  Args:
    count: number of examples in the training split.
    size: number of validation examples, ``0 < size < count``.
    seed: the same seed gives the same subset.

  Returns:
    ``(train, validation)`` ``int64`` position arrays of ``count - size`` and
    ``size`` entries.

  Raises:
    ValueError: if ``size`` is out of range.

  Examples:
    >>> train, val = validation_indices(10, 3, seed=0)
    >>> val.tolist(), len(train), sorted([*train, *val]) == list(range(10))
    ([2, 4, 6], 7, True)
  """
  if not 0 < size < count:
    raise ValueError(f'validation size must be in (0, {count}), got {size}')
  order = np.random.default_rng(seed).permutation(count)
  return np.sort(order[size:]), np.sort(order[:size])


def subset_indices(count: int, size: int, *, seed: int | None) -> np.ndarray:
  """Positions of ``size`` of ``count`` examples, in stored order.

  Args:
    count: examples in the split.
    size: examples to keep; all of them if ``size >= count``.
    seed: ``None`` keeps the first ``size`` examples; an integer keeps a
      random ``size`` of them, the first ``size`` entries of
      ``np.random.default_rng(seed).permutation(count)`` (for splits stored
      sorted by class, where the first examples would be one class).

  Returns:
    Sorted ``int64`` positions.

  Examples:
    >>> subset_indices(10, 3, seed=None).tolist(), subset_indices(10, 3, seed=0).tolist()
    ([0, 1, 2], [2, 4, 6])
    >>> subset_indices(3, 5, seed=0).tolist()
    [0, 1, 2]
  """
  if seed is None or size >= count:
    return np.arange(min(size, count), dtype=np.int64)
  return np.sort(np.random.default_rng(seed).permutation(count)[:size])


class Splits(NamedTuple):
  """A run's examples, as positions in the dataset's own splits (sorted)."""

  train: np.ndarray  # int64 (n_train,): positions in the training split
  validation: np.ndarray | None  # int64 (validation_size,) in the training split, or None
  test: np.ndarray  # int64 (n_test,): positions in the evaluation split


def carve(
  train_count: int,
  test_count: int,
  *,
  seed: int,
  validation_size: int = 0,
  train_subset: int | None = None,
  test_subset: int | None = None,
  random_subsets: bool = False,
) -> Splits:
  """A run's training, validation and test examples out of a dataset's two splits.

  The validation examples are carved out of the training split first
  (:func:`validation_indices`, seeded by ``seed``); ``train_subset`` is then
  taken of what is left, and ``test_subset`` of the test split
  (:func:`subset_indices`). ``0`` or ``None`` leaves a part out.

  Args:
    train_count: examples in the dataset's training split.
    test_count: examples in its evaluation split.
    seed: the run's seed.
    validation_size: training examples held out for validation.
    train_subset: keep only this many training examples.
    test_subset: keep only this many test examples.
    random_subsets: ``False``: the subsets are the first examples (MNIST,
      stored in the official, unsorted order); ``True``: seeded random
      samples, the training one seeded by ``seed`` and the test one by 0 (the
      same test examples whatever the run's seed), for datasets stored sorted
      by class (the CIFAR-10 JPEG copy).

  Returns:
    :class:`Splits` of sorted positions.

  Raises:
    ValueError: if ``validation_size`` is not below ``train_count``.

  Examples:
    >>> splits = carve(10, 4, seed=0, validation_size=3, train_subset=5, test_subset=2)
    >>> splits.train.tolist(), splits.validation.tolist(), splits.test.tolist()
    ([0, 1, 3, 5, 7], [2, 4, 6], [0, 1])
    >>> carve(10, 4, seed=0, train_subset=3, random_subsets=True).train.tolist()
    [2, 4, 6]
  """
  train = np.arange(train_count, dtype=np.int64)
  validation = None
  if validation_size:
    train, validation = validation_indices(train_count, validation_size, seed=seed)
  if train_subset:
    train = train[subset_indices(len(train), train_subset, seed=seed if random_subsets else None)]
  test = np.arange(test_count, dtype=np.int64)
  if test_subset:
    test = test[subset_indices(test_count, test_subset, seed=0 if random_subsets else None)]
  return Splits(train, validation, test)


def epoch_order(count: int, *, seed: int, epoch: int, stream: tuple[int, ...] = ()) -> np.ndarray:
  """The order in which epoch ``epoch`` visits ``count`` examples.

  ``np.random.default_rng([*stream, seed, epoch]).permutation(count)``: a
  function of ``(seed, epoch)`` alone, so a run resumed at any epoch reads
  what an uninterrupted run would have read.

  Args:
    count: examples in the split.
    seed: the run's seed.
    epoch: the epoch number.
    stream: a prefix that keeps this permutation's random numbers apart from
      others drawn from the same seed. The grain pipeline draws its order
      from stream ``(0,)`` and its augmentation from ``(1,)``; in-memory
      arrays use no prefix (their order predates the grain pipeline and is
      kept, so recorded runs replay exactly).

  Returns:
    An ``int64`` permutation of ``range(count)``.

  Examples:
    >>> epoch_order(6, seed=1, epoch=2).tolist()
    [4, 5, 1, 0, 3, 2]
    >>> epoch_order(6, seed=1, epoch=2, stream=(0,)).tolist()
    [5, 1, 4, 0, 3, 2]
  """
  return np.random.default_rng([*stream, seed, epoch]).permutation(count)


ORDER_STREAM = 0
"""The :func:`epoch_order` stream of the image datasets (CIFAR-10, ImageNet)."""
AUGMENT_STREAM = 1
"""The stream of their augmentation's random numbers (:func:`augment_uniforms`)."""


def augment_uniforms(
  *,
  seed: int,
  epoch: int,
  batch: int,
  rows: int,
  width: int,
  shard_index: int = 0,
  shard_count: int = 1,
) -> np.ndarray:
  """The uniform numbers in ``[0, 1)`` that augment global batch ``batch`` of ``epoch``.

  A function of ``(seed, epoch, batch)`` alone: the global batch of ``rows``
  examples gets ``(rows, width)`` numbers, and host ``shard_index`` of
  ``shard_count`` takes its own ``rows // shard_count`` consecutive rows of
  them (its examples' rows, :func:`batch_positions`), so every input path
  (the grain pipeline, the in-memory and the device-resident arrays)
  augments an example the same way on any number of hosts.

  Examples:
    >>> a = augment_uniforms(seed=0, epoch=1, batch=2, rows=4, width=3)
    >>> a.shape, bool((augment_uniforms(seed=0, epoch=1, batch=2, rows=4, width=3) == a).all())
    ((4, 3), True)
    >>> second = augment_uniforms(seed=0, epoch=1, batch=2, rows=4, width=3, shard_index=1,
    ...                           shard_count=2)
    >>> bool((second == a[2:]).all())
    True
  """
  size = shard_batch_size(rows, shard_count, what='rows')
  numbers = np.random.default_rng([AUGMENT_STREAM, seed, epoch, batch]).random((rows, width))
  return numbers[shard_index * size : (shard_index + 1) * size]


def num_batches(count: int, global_batch: int, *, drop_remainder: bool) -> int:
  """Global batches in an epoch of ``count`` examples.

  Examples:
    >>> num_batches(10, 4, drop_remainder=True), num_batches(10, 4, drop_remainder=False)
    (2, 3)
  """
  return count // global_batch if drop_remainder else -(-count // global_batch)


def batch_positions(
  batch: int, *, batch_size: int, count: int, shard_index: int = 0, shard_count: int = 1
) -> tuple[np.ndarray, np.ndarray]:
  """This host's positions in global batch ``batch``, and which rows are real.

  Global batch ``k`` holds the epoch's positions ``k * batch_size *
  shard_count`` onwards; host ``shard_index`` reads its ``batch_size`` of them
  (see the module docstring). Positions past ``count`` are padding: a batch
  keeps its shape so that a step compiles once, and ``valid`` marks the rows
  that hold examples.

  Args:
    batch: the global batch number.
    batch_size: examples per batch on this host.
    count: examples in the epoch.
    shard_index: this host, in ``[0, shard_count)``.
    shard_count: hosts sharing each global batch.

  Returns:
    ``(positions, valid)``: the ``int64`` positions of this host's real rows
    (``valid.sum()`` of them, in order) and a ``bool (batch_size,)`` mask.

  Examples:
    >>> positions, valid = batch_positions(1, batch_size=2, count=7, shard_index=1, shard_count=2)
    >>> positions.tolist(), valid.tolist()
    ([6], [True, False])
  """
  start = (batch * shard_count + shard_index) * batch_size
  positions = np.arange(start, start + batch_size, dtype=np.int64)
  valid = positions < count
  return positions[valid], valid


def shard_batch_size(batch_size: int, shard_count: int, *, what: str = 'batch_size') -> int:
  """Each host's share of a global batch of ``batch_size``.

  Raises:
    ValueError: if ``shard_count`` hosts cannot share ``batch_size`` evenly
      (naming ``what``).

  Examples:
    >>> shard_batch_size(8, 2)
    4
    >>> shard_batch_size(9, 2, what='eval_batch_size')
    Traceback (most recent call last):
    ...
    ValueError: eval_batch_size 9 is not divisible by the 2 hosts (shard_count) that share it
  """
  if batch_size <= 0:
    raise ValueError(f'{what} must be positive, got {batch_size}')
  if batch_size % shard_count:
    raise ValueError(
      f'{what} {batch_size} is not divisible by the {shard_count} hosts (shard_count) that share it'
    )
  return batch_size // shard_count


def array_batches(
  images: np.ndarray,
  labels: np.ndarray,
  batch_size: int,
  *,
  seed: int,
  epoch: int,
  shuffle: bool = True,
  drop_remainder: bool = True,
  shard_index: int = 0,
  shard_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of ``(images, labels)`` batches of in-memory arrays, in an order fixed by ``(seed, epoch)``.

  Plain numpy: a dataset that fits in memory (MNIST's 47 MB of ``uint8``) is
  fastest read with a permutation and fancy indexing; grain's worker
  processes and per-record transforms would only add overhead.

  Args:
    images: ``uint8`` images ``(N, ...)``.
    labels: integer labels ``(N,)``.
    batch_size: examples per global batch (all hosts together).
    seed: non-negative seed of the run.
    epoch: non-negative epoch number; each epoch gets its own
      :func:`epoch_order` (no stream prefix).
    shuffle: visit the examples in :func:`epoch_order`; if ``False``, in
      their stored order.
    drop_remainder: drop the last ``N % batch_size`` examples so that every
      batch has the same shape (one compiled step); if ``False``, the last
      batch is smaller.
    shard_index: this host, in ``[0, shard_count)``.
    shard_count: hosts sharing each batch; each yields its
      ``batch_size // shard_count`` rows (:func:`batch_positions`).

  Yields:
    ``(images, labels)``: ``float32`` in ``[0, 1]`` of shape
    ``(B, *images.shape[1:])`` and ``int32`` of shape ``(B,)``.

  Raises:
    ValueError: if ``batch_size`` is not positive or not divisible by
      ``shard_count``, or ``images`` and ``labels`` differ in length.

  Examples:
    >>> images = np.array([0, 51, 102, 153, 255], np.uint8).reshape(5, 1, 1, 1)
    >>> labels = np.arange(5)
    >>> [y.tolist() for _, y in array_batches(images, labels, 2, seed=0, epoch=0, shuffle=False)]
    [[0, 1], [2, 3]]
    >>> x, y = next(array_batches(images, labels, 5, seed=0, epoch=0))
    >>> x.dtype, float(x.max()), sorted(y.tolist())
    (dtype('float32'), 1.0, [0, 1, 2, 3, 4])
  """
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}')
  if len(images) != len(labels):
    raise ValueError(f'{len(images)} images but {len(labels)} labels')
  size = shard_batch_size(batch_size, shard_count)
  count = len(images)
  order = epoch_order(count, seed=seed, epoch=epoch) if shuffle else None
  for batch in range(num_batches(count, batch_size, drop_remainder=drop_remainder)):
    positions, _ = batch_positions(
      batch, batch_size=size, count=count, shard_index=shard_index, shard_count=shard_count
    )
    index = positions if order is None else order[positions]
    yield images[index].astype(np.float32) / np.float32(255), labels[index].astype(np.int32)
