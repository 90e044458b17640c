"""A structured round's plan against units chosen here by hand from LeNet-5's groups."""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest
from flax import nnx

from models import create_model
from pruning import _tree
from pruning.experiment import structured_rounds


def _flat(state) -> dict[str, np.ndarray]:
  """``{'conv1/kernel': array}`` of an nnx State of params."""
  return {name: np.asarray(_tree.unbox(leaf)) for name, leaf in _tree.named_leaves(state)}


@pytest.fixture(scope='module')
def lenet5():
  model = create_model('lenet5', nnx.Rngs(0))
  groups = structured_rounds.unit_groups(model, (28, 28, 1))
  return nnx.state(model, nnx.Param), groups


def _config(criterion, sparsity=0.5):
  return types.SimpleNamespace(
    structured_criterion=criterion,
    structured_scope='per-group',
    structured_sparsity=sparsity,
    round_to=1,
    rounds=1,
    seed=0,
  )


def _random_like(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda v: rng.normal(size=np.shape(v)).astype(np.float32), params)


def test_taylor_sums_each_batch_score_of_every_member(lenet5):
  params, groups = lenet5
  grads = [_random_like(params, seed) for seed in (1, 2, 3)]
  mask = structured_rounds.initial_mask(params, groups)
  plan, sparsity = structured_rounds.round_plan(params, mask, groups, _config('taylor'), 1, grads)
  assert sparsity == 0.5
  w = _flat(params)
  # conv1's 20 filters: a filter u is conv1's kernel[..., u] and bias[u], and conv2's
  # inputs kernel[:, :, u, :]; each batch scores |sum of w * g over them|.
  score = np.zeros(20)
  for g in map(_flat, grads):
    score += np.abs(
      (w['conv1/kernel'] * g['conv1/kernel']).sum(axis=(0, 1, 2))
      + w['conv1/bias'] * g['conv1/bias']
      + (w['conv2/kernel'] * g['conv2/kernel']).sum(axis=(0, 1, 3))
    )
  assert plan['conv1/kernel:3'] == tuple(sorted(np.argsort(score)[10:]))
  # Scoring the mean gradient instead would choose other filters.
  mean = {k: sum(_flat(g)[k] for g in grads) / 3 for k in w}
  one = np.abs(
    (w['conv1/kernel'] * mean['conv1/kernel']).sum(axis=(0, 1, 2))
    + w['conv1/bias'] * mean['conv1/bias']
    + (w['conv2/kernel'] * mean['conv2/kernel']).sum(axis=(0, 1, 3))
  )
  assert tuple(sorted(np.argsort(one)[10:])) != plan['conv1/kernel:3']


def test_a_gradient_criterion_without_gradients_is_refused(lenet5):
  params, groups = lenet5
  mask = structured_rounds.initial_mask(params, groups)
  with pytest.raises(ValueError, match="criterion 'taylor' scores from gradients: pass grads"):
    structured_rounds.round_plan(params, mask, groups, _config('taylor'), 1)
