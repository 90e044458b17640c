"""Data parallelism on any number of devices and hosts with XLA SPMD.

One 1-D mesh with the axis ``'data'`` spans every device of every process.
Batches are sharded along it (``P('data')``): each device holds its slice of
the global batch. Params, masks, optimizer state and the model's other state
(batch-norm statistics, dropout RNG) are replicated (``P()``). The train step
is one ``jax.jit`` with these shardings on its inputs and outputs; XLA's SPMD
partitioner turns the replicated gradient into an all-reduce across the mesh,
and batch-norm statistics into a mean over the global batch, so a step on
``n`` devices computes what a step on one device computes, up to float
summation order. Masks are data in the optimizer state, so they are
replicated like the rest and a new mask does not recompile the step.

Sharding the params and optimizer state as well (``P('data')`` on a weight
axis, ZeRO/FSDP style) would save memory only: the step is dominated by the
convolutions, and all-reduce moves the same bytes as the reduce-scatter plus
all-gather that sharded params need. VGG-16's 138M float32 params, momentum and
boolean mask take about 1.2 GB per device, well within one accelerator, so
everything but the batch stays replicated.

Several hosts: call :func:`initialize` first on every host (the scripts'
``--coordinator-address``, ``--num-processes`` and ``--process-id`` flags),
then each host reads only its own shard of the data (``shard_index =
jax.process_index()``, ``shard_count = jax.process_count()``) and
:func:`global_batch` assembles the hosts' pieces into one global array with
``jax.make_array_from_process_local_data``.

What the processes share besides the mesh: the run directory and the data
directory, on a filesystem every host sees. Every process checks what is
there; then process 0 alone writes the run's own files, between two
barriers (:func:`barrier`), so that no process checks after another has
written. A dataset prepared on first use is prepared by process 0 first
(:func:`process_zero_first`). Values each process computes on its own host
and then replicates (a new mask) must agree: :func:`check_replicated`
compares them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pruning import _tree

DATA_AXIS = 'data'

T = TypeVar('T')


def data_mesh(devices: Any = None) -> Mesh:
  """A 1-D ``('data',)`` mesh over ``devices`` (default: every device of every process).

  The axis is ``Auto``: sharding propagates through the model without
  annotations inside it.

  Examples:
    >>> data_mesh(jax.devices()[:1]).shape
    OrderedDict([('data', 1)])
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), (AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array: params, masks, optimizer state."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Split along the leading (batch) axis across the ``'data'`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array leaf of ``tree`` replicated on ``mesh``.

  Leaves already replicated on the mesh are returned as they are, so calling
  this before every step costs nothing; a leaf made on the host between rounds
  (a new mask, a frozen flag) is placed once. Every process must pass the
  same values (they do: pruning decisions are computed identically on each).

  Examples:
    >>> import jax.numpy as jnp
    >>> mesh = data_mesh(jax.devices()[:1])
    >>> replicate({'w': jnp.ones(2)}, mesh)['w'].sharding.spec
    P()
  """
  sharding = replicated(mesh)

  def place(leaf: Any) -> Any:
    if not isinstance(leaf, jax.Array | np.ndarray | np.generic):
      return leaf
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
      return leaf
    if jax.process_count() == 1:
      return jax.device_put(leaf, sharding)
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      data = place(jax.random.key_data(leaf))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    # A global array from host data: every process supplies the same values.
    host = fetch(leaf) if isinstance(leaf, jax.Array) else np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(place, tree)


def fetch(x: Any) -> np.ndarray:
  """A host (numpy) copy of a replicated array, on one host or many.

  On several hosts a global array is not addressable as a whole, but each
  host holds a complete replica: the local one is read.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.sharding.is_fully_replicated:
      raise ValueError(f'fetch needs a replicated array; got sharding {x.sharding}')
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


def local_batch_size(batch_size: int, mesh: Mesh, *, what: str = 'batch_size') -> int:
  """This process's share of a global batch, checking that it splits evenly.

  Raises:
    ValueError: ``batch_size`` is not a multiple of the number of devices
      (each device gets an equal slice), naming both.

  Examples:
    >>> local_batch_size(128, data_mesh(jax.devices()[:1]))
    128
  """
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(
      f'{what} is {batch_size}; it must be a multiple of the {devices} devices of the '
      f'data mesh so that every device gets the same number of examples'
    )
  return batch_size // jax.process_count()


def global_batch(mesh: Mesh, *local: np.ndarray | jax.Array) -> tuple[jax.Array, ...]:
  """Assembles every process's local batch slices into global arrays sharded ``P('data')``.

  Each process passes its own examples (``batch_size / process_count`` of
  them); the global arrays have the full batch along axis 0. A ``jax.Array``
  that is already a global batch sharded that way (a device-resident input's,
  :mod:`pruning.data.resident`) is passed through as it is.

  Examples:
    >>> mesh = data_mesh(jax.devices()[:1])
    >>> images, labels = global_batch(mesh, np.zeros((4, 2, 2, 1)), np.zeros(4, np.int32))
    >>> images.shape, labels.sharding.spec
    ((4, 2, 2, 1), P('data',))
  """
  sharding = batch_sharded(mesh)
  return tuple(
    x
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim)
    else jax.make_array_from_process_local_data(sharding, x)
    for x in local
  )


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Joins a multi-host job (``jax.distributed.initialize``); one host: does nothing.

  Call it on every host before any other JAX call, with the same
  ``coordinator_address`` (``host:port`` of process 0) and ``num_processes``
  and each host's own ``process_id``. On managed clusters (Cloud TPU, SLURM,
  Open MPI) JAX detects all three: pass ``coordinator_address='auto'``.

  Raises:
    ValueError: an incomplete or inconsistent set of arguments, naming it.
  """
  if coordinator_address is None:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError(
        f'num_processes={num_processes} and process_id={process_id} need a '
        'coordinator_address (host:port of process 0)'
      )
    return
  if coordinator_address == 'auto':
    jax.distributed.initialize()
    return
  if num_processes is None or process_id is None:
    raise ValueError(
      f'coordinator_address {coordinator_address!r} needs num_processes and process_id too '
      f'(got num_processes={num_processes}, process_id={process_id})'
    )
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id is {process_id}; expected 0..{num_processes - 1}')
  jax.distributed.initialize(coordinator_address, num_processes, process_id)


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier ``name``; one process: returns at once.

  Examples:
    >>> barrier('checked')  # one process: nothing to wait for
  """
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def process_zero_first(fn: Callable[[], T], what: str) -> T:
  """``fn()`` on process 0, then on every other process: for a first call that writes shared files.

  Opening a dataset prepares it in the data directory the first time, and
  tfds prepares into a temporary folder that it renames: two processes
  preparing one shared folder at once both do the work, and the second
  rename fails. Here process 0 calls ``fn`` first, the others only once it
  has succeeded, and they find the files made. One process: just ``fn()``.

  Args:
    fn: the call, the same on every process.
    what: what it does, for the error on the other processes.

  Returns:
    ``fn()``'s result on this process.

  Raises:
    RuntimeError: on the other processes, when ``fn`` raised on process 0
      (which raises its own error), so that none of them waits forever.

  Examples:
    >>> process_zero_first(lambda: 3, 'counting')
    3
  """
  if jax.process_count() == 1:
    return fn()
  first = jax.process_index() == 0
  failure = None
  if first:
    try:
      result = fn()
    except Exception as error:  # raised below, once the others know
      failure = error
  succeeded = multihost_utils.broadcast_one_to_all(np.int32(failure is None))
  if failure is not None:
    raise failure
  if not int(succeeded):
    raise RuntimeError(f'{what} failed on process 0; its error is in its output')
  return result if first else fn()


def check_replicated(tree: Any, what: str) -> None:
  """Checks that every process holds the same values of ``tree``, as a replicated tree must.

  A replicated global array is put together from what each process supplies
  (:func:`replicate`) and each process keeps its own copy; processes whose
  host computations disagree (a mask chosen from different numbers) would
  go on training on different values without an error. This compares a
  CRC-32 of each leaf's local copy across the processes. One process:
  returns at once.

  Args:
    tree: arrays (numpy, or replicated jax arrays); ``None`` leaves are skipped.
    what: what the tree is, for the error.

  Raises:
    RuntimeError: the processes differ, naming the leaves that do.

  Examples:
    >>> check_replicated({'w': np.ones(2)}, 'params')  # one process: nothing to compare
  """
  if jax.process_count() == 1:
    return
  named = [(name, leaf) for name, leaf in _tree.named_leaves(tree) if leaf is not None]
  if not named:  # the same tree structure on every process: all return here
    return
  digests = np.array([_digest(leaf) for _, leaf in named], np.uint32)
  gathered = np.asarray(multihost_utils.process_allgather(digests)).reshape(-1, len(named))
  differ = [
    name for (name, _), column in zip(named, gathered.T, strict=True) if len(set(column)) > 1
  ]
  if differ:
    raise RuntimeError(
      f'{what} differ between the {jax.process_count()} processes (they must be replicated): '
      f'{differ}'
    )


def _digest(leaf: Any) -> int:
  """CRC-32 of this process's copy of ``leaf``'s bytes (a PRNG key: of its key data)."""
  leaf = _tree.unbox(leaf)
  dtype = getattr(leaf, 'dtype', None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return zlib.crc32(np.ascontiguousarray(fetch(leaf)).tobytes())
