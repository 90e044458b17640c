"""Sparse FC layers compute what the dense (masked) layers compute, on every backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
from flax import nnx

import pruning
from models import LeNet5, LeNet300100
from pruning.sparse import inference
from pruning.sparse import relative_index as rel


def sparse_kernel(shape, density, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=shape) * (rng.random(shape) < density)).astype(np.float32)


@pytest.mark.parametrize('backend', pruning.sparse.inference.BACKENDS)
@pytest.mark.parametrize('batch_shape', [(1,), (5,), (16,), (2, 3)])
def test_sparse_linear_matches_dense(backend, batch_shape):
  kernel = sparse_kernel((40, 7), 0.2)
  bias = np.arange(7, dtype=np.float32)
  layer = pruning.SparseLinear(scipy.sparse.csr_array(kernel.T), bias, backend=backend)
  x = np.random.default_rng(1).normal(size=(*batch_shape, 40)).astype(np.float32)
  expected = x @ kernel + bias
  np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-5)
  graphdef, state = nnx.split(layer)
  jitted = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
  np.testing.assert_allclose(np.asarray(jitted(state, x)), expected, rtol=1e-5, atol=1e-5)
  assert layer.nonzeros == np.count_nonzero(kernel)


def test_auto_backend_switches_at_the_measured_batch():
  layer = pruning.SparseLinear(scipy.sparse.csr_array(np.eye(3, dtype=np.float32)), None)
  limit = inference.AUTO_SCIPY_MAX_BATCH
  assert layer.backend_for(1) == layer.backend_for(limit) == 'scipy'
  assert layer.backend_for(limit + 1) == 'bcsr'


def test_to_scipy_drops_fillers():
  row = np.zeros((2, 100), np.float32)
  row[0, [3, 90]] = [1.0, -2.0]
  row[1, 99] = 4.0
  csr = rel.encode(row, 3)
  assert csr.fillers > 0
  matrix = inference.to_scipy(csr)
  assert matrix.nnz == 3
  np.testing.assert_array_equal(matrix.toarray(), row)


@pytest.mark.parametrize(
  ('model_cls', 'input_shape', 'sparsity'),
  [(LeNet300100, (28, 28, 1), 0.97), (LeNet5, (28, 28, 1), 0.9)],
)
def test_exported_model_runs_from_the_file(tmp_path, model_cls, input_shape, sparsity):
  model = model_cls(nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  mask = pruning.sparsity_mask(params, sparsity)
  nnx.update(model, pruning.apply_mask(params, mask))
  smaller = pruning.remove_dead_neurons(model, mask, input_shape=input_shape)
  path = tmp_path / 'model.jpsparse'
  pruning.save_sparse(path, nnx.state(smaller.model, nnx.Param), smaller.mask)
  checkpoint = pruning.load_sparse(path)
  loaded = pruning.load_resized(model_cls(nnx.Rngs(1)), checkpoint.params)
  x = jnp.asarray(np.random.default_rng(0).random((3, *input_shape), np.float32))
  expected = np.asarray(model(x))
  np.testing.assert_allclose(np.asarray(loaded(x)), expected, rtol=1e-5, atol=1e-5)
  for backend in ('scipy', 'bcsr'):
    fast = pruning.sparsify(loaded, checkpoint.sparse, backend=backend)
    linear = [m for _, m in nnx.iter_modules(fast) if isinstance(m, pruning.SparseLinear)]
    assert len(linear) == sum(1 for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Linear))
    assert not any(isinstance(m, nnx.Linear) for _, m in nnx.iter_modules(fast))
    np.testing.assert_allclose(np.asarray(fast(x)), expected, rtol=1e-5, atol=1e-5)
  assert isinstance(loaded.fc1, nnx.Linear), 'sparsify must not modify its input'


def test_sparsify_errors():
  model = LeNet300100(nnx.Rngs(0))
  wrong = rel.encode(np.ones((3, 3), np.float32), 5)
  with pytest.raises(
    ValueError, match=r"stored matrix for 'fc2' has shape \(3, 3\); the layer needs \(100, 300\)"
  ):
    pruning.sparsify(model, {'fc2/kernel': wrong})
  with pytest.raises(ValueError, match="backend is 'cuda'"):
    pruning.SparseLinear(scipy.sparse.csr_array(np.eye(2, dtype=np.float32)), None, backend='cuda')
