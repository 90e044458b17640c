"""Tests for pruning.regularization: masked L1 and L2 penalties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import l1_penalty, l2_penalty, prunable_mask

FC1 = np.array([[1.0, -2.0, 0.5], [-0.25, 3.0, -4.0]], np.float32)
FC1_KEEP = np.array([[True, False, True], [True, True, False]])
FC2 = np.array([[0.75], [-1.5], [2.0]], np.float32)
FC2_KEEP = np.array([[False], [True], [True]])


def _params(fc1=FC1, fc2=FC2):
  return {
    'fc1': {'kernel': jnp.asarray(fc1), 'bias': jnp.array([10.0, -20.0, 30.0])},
    'fc2': {'kernel': jnp.asarray(fc2), 'bias': jnp.array([-7.0])},
    'norm': {'scale': jnp.array([5.0, 5.0, 5.0])},
  }


def _mask():
  return {
    'fc1': {'kernel': jnp.asarray(FC1_KEEP), 'bias': None},
    'fc2': {'kernel': jnp.asarray(FC2_KEEP), 'bias': None},
    'norm': {'scale': None},
  }


# Kept entries: fc1 1.0, 0.5, -0.25, 3.0; fc2 -1.5, 2.0.
L1 = 1.0 + 0.5 + 0.25 + 3.0 + 1.5 + 2.0
L2 = 0.5 * (1.0 + 0.25 + 0.0625 + 9.0 + 2.25 + 4.0)


def test_penalties_match_hand_computed_values():
  assert float(l1_penalty(_params(), _mask())) == L1
  assert float(l2_penalty(_params(), _mask())) == L2


def test_penalties_match_numpy():
  rng = np.random.default_rng(0)
  fc1 = rng.normal(size=(2, 3)).astype(np.float32)
  fc2 = rng.normal(size=(3, 1)).astype(np.float32)
  params = _params(fc1, fc2)
  l1 = np.abs(fc1[FC1_KEEP]).sum() + np.abs(fc2[FC2_KEEP]).sum()
  l2 = 0.5 * ((fc1[FC1_KEEP] ** 2).sum() + (fc2[FC2_KEEP] ** 2).sum())
  np.testing.assert_allclose(float(l1_penalty(params, _mask())), l1, rtol=1e-6)
  np.testing.assert_allclose(float(l2_penalty(params, _mask())), l2, rtol=1e-6)


def test_dense_mask_penalises_every_kernel_weight_and_no_bias():
  mask = prunable_mask(_params())
  assert float(l1_penalty(_params(), mask)) == np.abs(FC1).sum() + np.abs(FC2).sum()
  assert float(l2_penalty(_params(), mask)) == 0.5 * ((FC1**2).sum() + (FC2**2).sum())


def test_pruned_weights_contribute_nothing():
  huge = _params(np.where(FC1_KEEP, FC1, 1e6), np.where(FC2_KEEP, FC2, -1e6))
  assert float(l1_penalty(huge, _mask())) == L1
  assert float(l2_penalty(huge, _mask())) == L2


def test_biases_and_scales_are_not_penalised():
  params = _params()
  params['fc1']['bias'] = jnp.array([1e3, 2e3, 3e3])
  params['norm']['scale'] = jnp.array([-9.0, 9.0, 9.0])
  assert float(l1_penalty(params, _mask())) == L1
  assert float(l2_penalty(params, _mask())) == L2


def test_everything_pruned_gives_zero():
  mask = jax.tree.map(jnp.zeros_like, _mask())
  assert float(l1_penalty(_params(), mask)) == 0.0
  assert float(l2_penalty(_params(), mask)) == 0.0


@pytest.mark.parametrize(
  ('penalty', 'expected'),
  [(l1_penalty, np.sign), (l2_penalty, lambda w: w)],
  ids=['l1', 'l2'],
)
def test_gradient_is_zero_at_pruned_and_exact_at_kept(penalty, expected):
  grads = jax.grad(penalty)(_params(), _mask())
  for name, w, keep in [('fc1', FC1, FC1_KEEP), ('fc2', FC2, FC2_KEEP)]:
    g = np.asarray(grads[name]['kernel'])
    assert np.all(g[~keep] == 0.0), name
    np.testing.assert_array_equal(g[keep], expected(w)[keep], err_msg=name)
    np.testing.assert_array_equal(
      grads[name]['bias'], np.zeros_like(grads[name]['bias']), err_msg=name
    )
  np.testing.assert_array_equal(grads['norm']['scale'], np.zeros(3))


def test_gradient_at_pruned_zero_weights_is_zero():
  # Pruned weights sit at exactly 0 while retraining, where |w| has no derivative.
  zeroed = _params(np.where(FC1_KEEP, FC1, 0.0), np.where(FC2_KEEP, FC2, 0.0))
  for penalty in (l1_penalty, l2_penalty):
    grads = jax.grad(penalty)(zeroed, _mask())
    assert np.all(np.asarray(grads['fc1']['kernel'])[~FC1_KEEP] == 0.0)
    assert np.all(np.isfinite(np.asarray(grads['fc1']['kernel'])))


@pytest.mark.parametrize('penalty', [l1_penalty, l2_penalty])
def test_penalties_under_jit(penalty):
  jitted = jax.jit(penalty)
  assert float(jitted(_params(), _mask())) == float(penalty(_params(), _mask()))
  # A new mask is new data for the same compiled function.
  other = jax.tree.map(jnp.logical_not, _mask())
  assert float(jitted(_params(), other)) == float(penalty(_params(), other))
  grads = jax.jit(jax.grad(penalty))(_params(), _mask())
  assert np.all(np.asarray(grads['fc1']['kernel'])[~FC1_KEEP] == 0.0)


def test_penalty_on_nnx_state(small_cnn):
  state = nnx.state(small_cnn, nnx.Param)
  mask = prunable_mask(state)
  conv = np.asarray(small_cnn.conv.kernel.get_value())
  fc = np.asarray(small_cnn.fc.kernel.get_value())
  np.testing.assert_allclose(
    float(l1_penalty(state, mask)), np.abs(conv).sum() + np.abs(fc).sum(), rtol=1e-6
  )
  np.testing.assert_allclose(
    float(l2_penalty(state, mask)), 0.5 * ((conv**2).sum() + (fc**2).sum()), rtol=1e-6
  )


@pytest.mark.parametrize('penalty', [l1_penalty, l2_penalty])
def test_bad_mask_names_the_leaf(penalty):
  mask = _mask()
  mask['fc2']['kernel'] = jnp.ones((1, 3), bool)
  with pytest.raises(ValueError, match=r"'fc2/kernel' has shape \(1, 3\); expected \(3, 1\)"):
    penalty(_params(), mask)
  mask = _mask()
  mask['fc1']['kernel'] = jnp.ones((2, 3), jnp.float32)
  with pytest.raises(ValueError, match=r"'fc1/kernel' has dtype float32; expected bool"):
    penalty(_params(), mask)
  mask = _mask()
  del mask['norm']
  with pytest.raises(ValueError, match=r"missing leaves \['norm/scale'\]"):
    penalty(_params(), mask)
