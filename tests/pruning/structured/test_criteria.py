"""Structured criteria, scopes, plans and their masks, against numpy references written here."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pruning
from pruning.structured import (
  STRUCTURED_CRITERIA,
  dependency_groups,
  group_names,
  group_scores,
  register_structured_criterion,
  select_units,
  structured_mask,
  structured_plan,
)
from pruning.structured.criteria import rounded_width


class ConvNet(nnx.Module):
  """conv(3->4) - BN - relu - conv(4->6) - relu - flatten - fc(6*4*4 -> 2)."""

  def __init__(self, rngs):
    self.conv1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.conv2 = nnx.Conv(4, 6, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(6 * 4 * 4, 2, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv1(x)))
    x = nnx.relu(self.conv2(x))
    return self.fc(x.reshape(x.shape[0], -1))


def _randomised(model, seed):
  """Gives every parameter (BN scales and offsets too) standard normal values."""
  rng = np.random.default_rng(seed)
  params = nnx.state(model, nnx.Param)
  nnx.update(
    model,
    jax.tree.map(
      lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32),
      params,
      is_leaf=lambda x: isinstance(x, nnx.Variable),
    ),
  )
  return model


@pytest.fixture(scope='module')
def convnet():
  model = _randomised(ConvNet(nnx.Rngs(0)), 1)
  groups = dependency_groups(model, jnp.zeros((2, 4, 4, 3)))
  return model, groups


def _named(tree):
  """``{'conv1/kernel': numpy array}`` of a State or mask (``None`` leaves left out)."""
  leaves = jax.tree_util.tree_flatten_with_path(
    tree, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )[0]
  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): np.asarray(
      leaf[...] if isinstance(leaf, nnx.Variable) else leaf
    )
    for path, leaf in leaves
  }


def _mlp(*widths):
  rngs = nnx.Rngs(0)
  layers = []
  for a, b in itertools.pairwise(widths):
    layers += [nnx.Linear(a, b, rngs=rngs), nnx.relu]
  return nnx.Sequential(*layers[:-1])


def _numpy(model):
  p = nnx.state(model, nnx.Param)
  return {
    'k1': np.asarray(p['conv1']['kernel'][...], np.float64),
    'b1': np.asarray(p['conv1']['bias'][...], np.float64),
    's': np.asarray(p['bn']['scale'][...], np.float64),
    'beta': np.asarray(p['bn']['bias'][...], np.float64),
    'k2': np.asarray(p['conv2']['kernel'][...], np.float64),
    'b2': np.asarray(p['conv2']['bias'][...], np.float64),
    'fc': np.asarray(p['fc']['kernel'][...], np.float64),
  }


def test_group_names_are_the_producing_kernels(convnet):
  _, groups = convnet
  names = [n for n, g in zip(group_names(groups), groups, strict=True) if g.prunable]
  assert names == ['conv1/kernel:3', 'conv2/kernel:3']


def test_l1_l2_bn_scale_taylor_against_numpy(convnet):
  model, groups = convnet
  w = _numpy(model)
  # conv2's 6 channels reach the classifier's rows p * 6 + c (channels-last flatten).
  fc = w['fc'].reshape(16, 6, 2)
  l1 = group_scores(model, groups, 'l1')
  np.testing.assert_allclose(
    l1['conv1/kernel:3'],
    np.abs(w['k1']).sum((0, 1, 2))
    + np.abs(w['b1'])
    + np.abs(w['s'])
    + np.abs(w['beta'])
    + np.abs(w['k2']).sum((0, 1, 3)),
  )
  np.testing.assert_allclose(
    l1['conv2/kernel:3'],
    np.abs(w['k2']).sum((0, 1, 2)) + np.abs(w['b2']) + np.abs(fc).sum((0, 2)),
  )
  l2 = group_scores(model, groups, 'l2')
  np.testing.assert_allclose(
    l2['conv2/kernel:3'],
    np.sqrt(np.square(w['k2']).sum((0, 1, 2)) + np.square(w['b2']) + np.square(fc).sum((0, 2))),
  )
  bn = group_scores(model, groups, 'bn_scale')
  assert list(bn) == ['conv1/kernel:3']  # conv2 has no batch norm: not scored, kept whole
  np.testing.assert_allclose(bn['conv1/kernel:3'], np.abs(w['s']))

  grads = _randomised(ConvNet(nnx.Rngs(0)), 2)
  g = _numpy(grads)
  taylor = group_scores(model, groups, 'taylor', grads=nnx.state(grads, nnx.Param))
  np.testing.assert_allclose(
    taylor['conv1/kernel:3'],
    np.abs(
      (w['k1'] * g['k1']).sum((0, 1, 2))
      + w['b1'] * g['b1']
      + w['s'] * g['s']
      + w['beta'] * g['beta']
      + (w['k2'] * g['k2']).sum((0, 1, 3))
    ),
  )
  gfc = g['fc'].reshape(16, 6, 2)
  np.testing.assert_allclose(
    taylor['conv2/kernel:3'],
    np.abs((w['k2'] * g['k2']).sum((0, 1, 2)) + w['b2'] * g['b2'] + (fc * gfc).sum((0, 2))),
  )


def test_random_is_seeded_per_key(convnet):
  model, groups = convnet
  first = group_scores(model, groups, 'random', key=0)
  assert {k: v.shape for k, v in first.items()} == {'conv1/kernel:3': (4,), 'conv2/kernel:3': (6,)}
  again = group_scores(model, groups, 'random', key=0)
  other = group_scores(model, groups, 'random', key=jax.random.key(1))
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first[name], other[name])


def test_missing_grads_key_unknown_criterion_and_bad_scores(convnet):
  model, groups = convnet
  with pytest.raises(ValueError, match='pass grads='):
    group_scores(model, groups, 'taylor')
  with pytest.raises(ValueError, match='pass key='):
    group_scores(model, groups, 'random')
  with pytest.raises(ValueError, match=r"'nope'.*'bn_scale'"):
    group_scores(model, groups, 'nope')
  register_structured_criterion('wrong_shape', lambda slices, rng: np.ones(3))
  try:
    with pytest.raises(ValueError, match=r"group 'conv1/kernel:3' with shape \(3,\)"):
      group_scores(model, groups, 'wrong_shape')
    with pytest.raises(ValueError, match='already registered'):
      register_structured_criterion('wrong_shape', lambda slices, rng: None)
  finally:
    del STRUCTURED_CRITERIA['wrong_shape']


# Linear(4, 8) - Linear(8, 4) - Linear(4, 8) - Linear(8, 4) - Linear(4, 2): hidden groups
# a (8), b (4), c (8), d (4); a and c are isomorphic (kernels (4, 8) out, (8, 4) in), b and d not.
A, B, C, D = (f'layers/{i}/kernel:1' for i in (0, 2, 4, 6))


@pytest.fixture(scope='module')
def chain():
  model = _mlp(4, 8, 4, 8, 4, 2)
  groups = dependency_groups(model, jnp.zeros((1, 4)))
  return model, groups


def _chain_scores():
  return {
    A: np.arange(8.0) + 1,
    B: np.array([4.0, 40.0, 1.0, 2.0]),
    C: np.arange(8.0) + 5,
    D: np.array([3.0, 3.0, 3.0, 3.0]),
  }


def test_per_group_prunes_the_same_fraction_of_each(chain):
  _, groups = chain
  plan = select_units(groups, _chain_scores(), 0.5)
  assert plan == {A: (4, 5, 6, 7), B: (0, 1), C: (4, 5, 6, 7), D: (2, 3)}  # ties: lower index first
  plan = select_units(groups, _chain_scores(), 0.3)  # round(0.3 * 8) = 2, round(0.3 * 4) = 1
  assert [len(plan[n]) for n in (A, B, C, D)] == [6, 3, 6, 3]
  assert all(len(kept) == 1 for kept in select_units(groups, _chain_scores(), 1.0).values())


def _pooled_reference(scores, sparsity):
  """Numpy reference of one pooled ranking: the kept units per group."""
  names = list(scores)
  pooled = np.concatenate([scores[n] for n in names])
  order = np.argsort(pooled, kind='stable')
  pruned = set(order[: round(sparsity * pooled.size)].tolist())
  kept, start = {}, 0
  for n in names:
    kept[n] = tuple(u for u in range(scores[n].size) if start + u not in pruned)
    start += scores[n].size
  return kept


def test_global_ranks_mean_normalised_scores(chain):
  _, groups = chain
  scores = _chain_scores()
  plan = select_units(groups, scores, 0.5, scope='global')
  assert plan == _pooled_reference({n: s / s.mean() for n, s in scores.items()}, 0.5)
  assert sum(len(k) for k in plan.values()) == 24 - 12
  # Raw, D's small 3s would all go (and D keep one unit, the minimum); divided by
  # its mean they are 1.0 each, and D loses only the first (ties: lower index first).
  assert plan[D] == (1, 2, 3)
  assert _pooled_reference(scores, 0.5)[D] == ()


def test_isomorphic_ranks_within_classes_of_like_groups(chain):
  model, groups = chain
  scores = _chain_scores()
  plan = select_units(groups, scores, 0.5, scope='isomorphic', params=nnx.state(model, nnx.Param))
  pooled = _pooled_reference({A: scores[A], C: scores[C]}, 0.5)
  assert pooled == {A: (6, 7), C: (2, 3, 4, 5, 6, 7)}
  assert plan == {**pooled, B: (0, 1), D: (2, 3)}


def test_a_group_keeps_at_least_one_unit(chain):
  _, groups = chain
  scores = {**_chain_scores(), B: np.array([1e-9, 1e-9, 1e-9, 2e-9])}
  plan = select_units(groups, scores, 0.9, scope='isomorphic')
  assert plan[B] == (3,)


def test_round_to():
  assert [rounded_width(k, 64, 8) for k in (1, 4, 5, 11, 12, 60, 63, 64)] == [
    8, 8, 8, 8, 16, 64, 64, 64
  ]  # fmt: skip
  assert rounded_width(200, 256, 128) == 256 and rounded_width(100, 256, 128) == 128
  assert rounded_width(5, 6, 8) == 6 and rounded_width(7, 7, 1) == 7
  model = _mlp(4, 32, 2)
  groups = dependency_groups(model, jnp.zeros((1, 4)))
  scores = {'layers/0/kernel:1': np.arange(32.0)[::-1].copy()}
  for sparsity, round_to, width in [(0.6, 8, 16), (0.6, 1, 13), (0.95, 8, 8), (0.6, 128, 32)]:
    plan = select_units(groups, scores, sparsity, round_to=round_to)
    assert plan['layers/0/kernel:1'] == tuple(range(width)), (sparsity, round_to)
  for bad in (0, -8, 2.0, True):
    with pytest.raises(ValueError, match='round_to'):
      select_units(groups, scores, 0.5, round_to=bad)


def test_selection_errors_name_the_group(chain):
  _, groups = chain
  with pytest.raises(ValueError, match=r"'nowhere:1', which names no group"):
    select_units(groups, {'nowhere:1': np.ones(3)}, 0.5)
  with pytest.raises(ValueError, match=r"group 'layers/8/kernel:1' is pinned"):
    select_units(groups, {'layers/8/kernel:1': np.ones(2)}, 0.5)
  with pytest.raises(ValueError, match=r"scope is 'layer'"):
    select_units(groups, _chain_scores(), 0.5, scope='layer')
  with pytest.raises(ValueError, match='sparsity'):
    select_units(groups, _chain_scores(), 1.5)
  with pytest.raises(ValueError, match=f"keeps units \\[9\\] of group '{B}'"):
    structured_mask({}, groups, {B: (9,)})


def test_mask_zeroes_whole_channels_in_every_member(convnet):
  model, groups = convnet
  params = nnx.state(model, nnx.Param)
  mask = structured_mask(params, groups, {'conv1/kernel:3': (0, 3), 'conv2/kernel:3': (1, 2, 5)})
  named = _named(mask)
  assert named['conv1/kernel'].shape == (3, 3, 3, 4)
  np.testing.assert_array_equal(named['conv1/kernel'].all((0, 1, 2)), [True, False, False, True])
  assert not named['conv1/kernel'][..., 1].any()
  np.testing.assert_array_equal(named['bn/scale'], [True, False, False, True])
  np.testing.assert_array_equal(named['bn/bias'], [True, False, False, True])
  kept_in = named['conv2/kernel'].any((0, 1, 3))
  np.testing.assert_array_equal(kept_in, [True, False, False, True])
  np.testing.assert_array_equal(named['conv2/kernel'].any((0, 1, 2)), [0, 1, 1, 0, 0, 1])
  assert named['conv2/kernel'].sum() == 9 * 2 * 3
  np.testing.assert_array_equal(
    named['fc/kernel'].reshape(16, 6, 2).all((0, 2)), [0, 1, 1, 0, 0, 1]
  )
  assert not named['fc/kernel'].reshape(16, 6, 2)[:, [0, 3, 4]].any()
  assert 'fc/bias' not in named  # not a member of a pruned group: None


def test_masked_optimizer_keeps_pruned_channels_at_exactly_zero(convnet):
  _, groups = convnet
  model = _randomised(ConvNet(nnx.Rngs(0)), 3)
  plan = structured_plan(model, groups, 0.5, criterion='l2')
  assert {k: len(v) for k, v in plan.items()} == {'conv1/kernel:3': 2, 'conv2/kernel:3': 3}
  params = nnx.state(model, nnx.Param)
  mask = structured_mask(params, groups, plan)
  nnx.update(model, pruning.apply_mask(params, mask))
  optimizer = nnx.Optimizer(
    model, pruning.masked_optimizer(optax.adamw(0.05, weight_decay=0.1), mask), wrt=nnx.Param
  )

  @nnx.jit
  def step(model, optimizer, x, y):
    def loss(model):
      return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((8, 4, 4, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 2, 8))
  before = _named(nnx.state(model, nnx.Param))
  for _ in range(3):
    step(model, optimizer, x, y)
  after, keeps = _named(nnx.state(model, nnx.Param)), _named(mask)
  assert sorted(keeps) == [
    'bn/bias', 'bn/scale', 'conv1/bias', 'conv1/kernel', 'conv2/bias', 'conv2/kernel', 'fc/kernel'
  ]  # fmt: skip
  for name, keep in keeps.items():
    assert np.all(after[name][~keep] == 0.0) and (~keep).any(), name
    assert np.all(after[name][keep] != before[name][keep]), name  # the survivors trained
  # The pruned channels are dead in the forward pass too: BN's output there is exactly 0.
  kept = np.asarray(plan['conv1/kernel:3'])
  hidden = nnx.relu(model.bn(model.conv1(x)))
  assert not np.asarray(hidden)[..., np.setdiff1d(np.arange(4), kept)].any()
