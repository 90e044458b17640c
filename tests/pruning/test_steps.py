"""The compiled steps: bfloat16 mixed precision keeps masks exact; top-k error counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from models import create_model
from pruning import criteria, masks, optimizer, parallel, steps


def test_bfloat16_step_keeps_float32_params_and_exact_zeros():
  mesh = parallel.data_mesh(jax.devices()[:1])
  model = create_model('vgg16_cifar', nnx.Rngs(0), width=1 / 16, dtype=jnp.bfloat16)
  tx = optimizer.masked_optimizer(optax.sgd(0.05, momentum=0.9))
  compiled = steps.compile_steps(model, tx, steps.penalty('l2', 5e-4), mesh)
  params, rest = compiled.params, compiled.rest
  mask = criteria.sparsity_mask(params, 0.9)
  opt_state = optimizer.replace_mask(tx.init(params), mask)
  params, opt_state = parallel.replicate((masks.apply_mask(params, mask), opt_state), mesh)
  rng = np.random.default_rng(0)
  batch = parallel.global_batch(
    mesh,
    rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
    rng.integers(0, 10, 8).astype(np.int32),
  )
  before = jax.tree.map(np.asarray, params)
  for _ in range(2):
    params, rest, opt_state, metrics = compiled.train(params, rest, opt_state, *batch)
  assert np.isfinite(float(metrics['loss']))
  kernels = 0
  for (path, leaf), old in zip(
    jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(before), strict=True
  ):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    assert leaf.dtype == jnp.float32, name
    keep = mask
    for key in name.removesuffix('/value').split('/'):
      keep = keep[key]
    if keep is None:
      continue
    kernels += 1
    keep = np.asarray(keep)
    value = np.asarray(leaf)
    assert np.all(value[~keep] == 0.0), name  # exactly zero, not a bfloat16 rounding of it
    assert not np.array_equal(value[keep], old[keep]), name  # survivors trained
  assert kernels == 16


def test_error_counts_top1_top5_over_valid_examples_only():
  class Fixed(nnx.Module):
    """Logits are the input itself: the test chooses every ranking."""

    def __init__(self):
      self.scale = nnx.Param(jnp.ones(()))

    def __call__(self, x):
      return x * self.scale

  mesh = parallel.data_mesh(jax.devices()[:1])
  graphdef, params, rest = nnx.split(Fixed(), nnx.Param, ...)
  count = steps.error_count_step(graphdef, mesh, top_k=(1, 5))
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(12, 20)).astype(np.float32)
  labels = rng.integers(0, 20, 12).astype(np.int32)
  valid = np.arange(12) < 9
  errors = count(params, rest, *parallel.global_batch(mesh, logits, labels, valid))
  ranks = (logits > logits[np.arange(12), labels][:, None]).sum(axis=1)
  assert int(errors[1]) == int(((ranks >= 1) & valid).sum())
  assert int(errors[5]) == int(((ranks >= 5) & valid).sum())
  assert int(errors[5]) < int(errors[1])
