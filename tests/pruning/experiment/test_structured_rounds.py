"""A structured round's plan against units chosen here by hand from LeNet-5's groups."""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest
from flax import nnx

from models import create_model
from pruning import _tree, apply_mask, structured
from pruning.experiment import structured_rounds


def _flat(state) -> dict[str, np.ndarray]:
  """``{'conv1/kernel': array}`` of an nnx State of params."""
  return {name: np.asarray(_tree.unbox(leaf)) for name, leaf in _tree.named_leaves(state)}


@pytest.fixture(scope='module')
def lenet5():
  model = create_model('lenet5', nnx.Rngs(0))
  groups, kept_whole = structured_rounds.unit_groups(model, (28, 28, 1))
  assert kept_whole == {}
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


def test_an_option_a_resnet_keeps_its_residual_stream_whole_and_removes_the_rest():
  # Option A pads the shortcut with zero channels: the stream's width is fixed by the
  # code, so its three groups (16, 32, 64 channels) cannot shrink; the nine blocks'
  # inner groups can.
  model = create_model('resnet20', nnx.Rngs(0))
  abstract = nnx.eval_shape(lambda: create_model('resnet20', nnx.Rngs(0)))
  groups, kept_whole = structured_rounds.unit_groups(abstract, (32, 32, 3))
  assert sorted(kept_whole) == [
    'conv1/kernel:3',
    'stage2/0/conv2/kernel:3@16',
    'stage3/0/conv2/kernel:3@32',
  ]
  assert all('option-A ResNet shortcut' in why for why in kept_whole.values())
  names = structured.group_names(groups)
  prunable = [n for n, g in zip(names, groups, strict=True) if g.prunable]
  assert prunable == [f'stage{s}/{b}/conv1/kernel:3' for s in (1, 2, 3) for b in (0, 1, 2)]
  # Every prunable group halved, as the pipeline's last round would: removal succeeds.
  params = nnx.state(model, nnx.Param)
  plan = structured_rounds.full_plan(params, groups)
  plan |= structured.select_units(groups, structured.group_scores(params, groups, 'l1'), 0.5)
  model.eval()
  nnx.update(model, apply_mask(params, structured.structured_mask(params, groups, plan)))
  images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
  smaller = structured.remove_units(model, groups, plan, images)
  assert smaller.stage3[2].conv1.kernel.shape == (3, 3, 64, 32)
  assert smaller.conv1.kernel.shape == (3, 3, 3, 16)
