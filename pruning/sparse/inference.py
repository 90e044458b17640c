"""Run a pruned model's FC layers from their sparse weights on CPU.

:func:`sparsify` swaps every ``nnx.Linear`` of a model for a
:class:`SparseLinear` that keeps only the kept weights, as compressed sparse
rows (one row per output unit), and multiplies with them directly. The rest
of the model (convolutions, pooling) runs as before, so the model's own code
still runs unchanged, eagerly or under ``jax.jit``/``nnx.jit``.

Backends, chosen by measurement (``benchmarks/sparse_inference.py``; figures
in ``benchmarks/RESULTS.md``, shared 2-core CPU):

* ``'scipy'``: ``scipy.sparse`` CSR times the input, on the host. On a VGG-16
  fc6-sized layer (25088 x 4096, 4 % kept) at batch 1 it is several times
  faster than XLA's dense matrix-vector product: it reads 4 % of the weights
  plus their indices instead of all of them. Eager calls use it directly;
  under ``jit`` it runs through ``jax.pure_callback``, a host round trip per
  layer.
* ``'bcsr'``: ``jax.experimental.sparse.BCSR``, compiled by XLA. Much slower
  than dense at batch 1-4, the fastest variant measured at batch 16-64.
* ``'auto'`` (default): ``'scipy'`` up to :data:`AUTO_SCIPY_MAX_BATCH` rows,
  ``'bcsr'`` above; the crossover was measured between batch 4 and 16.

For a model as small as LeNet-300-100, no sparse variant beats the jitted
dense model at batch 1: the whole forward pass takes tens of microseconds,
mostly call overhead, and the sparse kernels add their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from flax import nnx
from jax.experimental import sparse as jsparse

from pruning.sparse import relative_index as rel
from pruning.sparse.layer_chain import path_string, set_module

BACKENDS = ('auto', 'scipy', 'bcsr')
"""``'auto'`` uses ``'scipy'`` up to :data:`AUTO_SCIPY_MAX_BATCH` rows, ``'bcsr'`` above."""

AUTO_SCIPY_MAX_BATCH = 8
"""Largest batch for which ``'auto'`` picks ``'scipy'`` (see the module docstring)."""


class SparseWeight(nnx.Variable):
  """Arrays of a compressed sparse row matrix (values, column indices, row pointers)."""


class _HostMatrix:
  """A scipy matrix held as static module data, compared and hashed by identity."""

  def __init__(self, matrix: scipy.sparse.csr_array):
    self.matrix = matrix

  def __hash__(self) -> int:
    return id(self)

  def __eq__(self, other: object) -> bool:
    return self is other

  def __call__(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, self.matrix.dtype)
    return np.ascontiguousarray((self.matrix @ x.T).T)


def to_scipy(csr: rel.RelativeCSR, dtype: Any = np.float32) -> scipy.sparse.csr_array:
  """The matrix of ``csr`` as a scipy CSR array of ``dtype``, fillers dropped.

  Examples:
    >>> import numpy as np
    >>> from pruning.sparse import relative_index
    >>> row = np.array([[0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5]], np.float32)
    >>> matrix = to_scipy(relative_index.encode(row, 2))
    >>> matrix.nnz, matrix.toarray().tolist() == row.tolist()
    (2, True)
  """
  keep = ~csr.is_filler
  columns = rel.absolute_columns(csr)[keep]
  rows = rel.row_indices(csr)[keep]
  pointers = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=csr.shape[0]))])
  return scipy.sparse.csr_array(
    (csr.values[keep].astype(dtype), columns.astype(np.int32), pointers.astype(np.int32)),
    shape=csr.shape,
  )


class SparseLinear(nnx.Module):
  """``y = x @ W + b`` with ``W`` held as compressed sparse rows of ``W^T``.

  Args:
    matrix: ``W^T``, shape ``(out_features, in_features)``, one row per unit.
    bias: ``(out_features,)`` or ``None``.
    backend: one of :data:`BACKENDS` (see the module docstring).

  Examples:
    >>> import numpy as np, scipy.sparse, jax.numpy as jnp
    >>> kernel = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], np.float32)
    >>> layer = SparseLinear(scipy.sparse.csr_array(kernel.T), np.array([0.5, 0.5], np.float32))
    >>> layer(jnp.ones((1, 3))).tolist()
    [[1.5, 2.5]]
  """

  def __init__(self, matrix: scipy.sparse.csr_array, bias: np.ndarray | None, *, backend='auto'):
    if backend not in BACKENDS:
      raise ValueError(f'backend is {backend!r}; expected one of {BACKENDS}')
    matrix = scipy.sparse.csr_array(matrix, dtype=np.float32)
    self.out_features, self.in_features = (int(n) for n in matrix.shape)
    self.backend = backend
    self.nonzeros = int(matrix.nnz)
    self.bias = None if bias is None else nnx.Param(jnp.asarray(bias, jnp.float32))
    if backend in ('auto', 'scipy'):
      self.host = _HostMatrix(matrix)
    if backend in ('auto', 'bcsr'):
      self.values = SparseWeight(jnp.asarray(matrix.data))
      self.columns = SparseWeight(jnp.asarray(matrix.indices, jnp.int32))
      self.row_pointers = SparseWeight(jnp.asarray(matrix.indptr, jnp.int32))

  def backend_for(self, batch: int) -> str:
    """The backend a call with ``batch`` rows uses."""
    if self.backend != 'auto':
      return self.backend
    return 'scipy' if batch <= AUTO_SCIPY_MAX_BATCH else 'bcsr'

  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer along the last axis of ``x``."""
    batch_shape = x.shape[:-1]
    rows = int(np.prod(batch_shape))
    backend = self.backend_for(rows)
    if backend == 'scipy' and not isinstance(x, jax.core.Tracer):
      # Eager call: stay on the host, one scipy product and one numpy add.
      y = self.host(np.asarray(x).reshape(rows, self.in_features))
      if self.bias is not None:
        y += np.asarray(self.bias[...])
      return jnp.asarray(y.reshape(*batch_shape, self.out_features))
    x = jnp.reshape(x, (rows, self.in_features)).astype(jnp.float32)
    if backend == 'scipy':
      shape = jax.ShapeDtypeStruct((rows, self.out_features), jnp.float32)
      y = jax.pure_callback(self.host, shape, x, vmap_method='sequential')
    else:
      matrix = jsparse.BCSR(
        (self.values[...], self.columns[...], self.row_pointers[...]),
        shape=(self.out_features, self.in_features),
      )
      y = (matrix @ x.T).T
    if self.bias is not None:
      y = y + self.bias[...]
    return jnp.reshape(y, (*batch_shape, self.out_features))


def sparsify(
  model: nnx.Module,
  sparse: Mapping[str, rel.RelativeCSR] | None = None,
  *,
  backend: str = 'auto',
) -> nnx.Module:
  """A copy of ``model`` whose Linear layers multiply with sparse weights.

  Args:
    model: an nnx model, typically the smaller model after
      :func:`~pruning.remove_dead_neurons` or :func:`~pruning.load_resized`.
    sparse: leaf path (``'fc1/kernel'``) -> stored matrix, as
      :func:`~pruning.load_sparse` returns in ``SparseCheckpoint.sparse``;
      those Linear layers run from it. Without it, every Linear layer runs
      from the nonzero entries of its kernel.
    backend: one of :data:`BACKENDS`.

  Returns:
    The new model; ``model`` is unchanged. Conv layers stay dense.

  Raises:
    ValueError: if a stored matrix's shape differs from its layer's kernel.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from models import LeNet300100
    >>> model = LeNet300100(nnx.Rngs(0))
    >>> fast = sparsify(model)
    >>> type(fast.fc1).__name__, bool(jnp.allclose(fast(jnp.ones((2, 784))), model(jnp.ones((2, 784))), atol=1e-5))
    ('SparseLinear', True)
  """
  copy = nnx.merge(*nnx.split(model))
  for keys, module in list(nnx.iter_modules(copy)):
    if not isinstance(module, nnx.Linear):
      continue
    path = path_string(keys)
    kernel = np.asarray(module.kernel[...])
    stored = None if sparse is None else sparse.get(f'{path}/kernel')
    if sparse is not None and stored is None:
      continue
    if stored is None:
      matrix = scipy.sparse.csr_array(kernel.T)
    else:
      if stored.shape != kernel.T.shape:
        raise ValueError(
          f'stored matrix for {path!r} has shape {stored.shape}; the layer needs {kernel.T.shape}'
        )
      matrix = to_scipy(stored, kernel.dtype)
    bias = None if module.bias is None else np.asarray(module.bias[...])
    set_module(copy, keys, SparseLinear(matrix, bias, backend=backend))
  return copy
