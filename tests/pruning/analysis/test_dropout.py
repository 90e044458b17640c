"""Tests for pruning.analysis.dropout: D_r = D_o * sqrt(C_ir / C_io) (Han et al. 2015, §3.2)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import adjusted_dropout_rate
from pruning.analysis import dropout


def _keep(total, kept, shape=None):
  flat = np.zeros(total, bool)
  flat[np.random.default_rng(total + kept).permutation(total)[:kept]] = True
  return flat.reshape(shape or (total,))


@pytest.mark.parametrize(
  ('rate', 'total', 'kept', 'expected'),
  [
    (0.5, 4, 1, 0.25),
    (0.5, 16, 9, 0.375),
    (0.5, 100, 25, 0.25),
    (0.8, 300 * 100, 8 * 300, 0.8 * math.sqrt(0.08)),
    (0.3, 7, 3, 0.3 * math.sqrt(3 / 7)),
    (0.5, 5, 0, 0.0),
    (0.0, 9, 4, 0.0),
  ],
)
def test_adjusted_rate_formula(rate, total, kept, expected):
  mask = _keep(total, kept)
  assert int(mask.sum()) == kept
  assert adjusted_dropout_rate(rate, mask) == pytest.approx(expected, rel=1e-12, abs=0.0)


def test_adjusted_rate_from_2d_jax_mask_and_one_leaf_pytree():
  mask = jnp.asarray(_keep(784 * 300, 784 * 300 // 4, (784, 300)))
  assert adjusted_dropout_rate(0.5, mask) == pytest.approx(0.25)
  tree = {'fc1': {'kernel': mask, 'bias': None}}
  assert adjusted_dropout_rate(0.5, tree) == pytest.approx(0.25)


def test_dense_mask_returns_the_original_rate():
  for rate in (0.0, 0.2, 0.5, 0.9):
    assert adjusted_dropout_rate(rate, np.ones((3, 4), bool)) == rate


def test_adjusted_rate_shrinks_with_the_mask():
  rates = [adjusted_dropout_rate(0.5, _keep(64, kept)) for kept in (64, 32, 16, 4, 1)]
  assert rates == sorted(rates, reverse=True)
  assert len(set(rates)) == len(rates)


@pytest.mark.parametrize('rate', [1.0, -0.1, 1.5, float('nan')])
def test_rate_outside_unit_interval(rate):
  with pytest.raises(ValueError, match=rf'original_rate is {rate!r}; expected a value in \[0, 1\)'):
    adjusted_dropout_rate(rate, np.ones(4, bool))


def test_non_bool_mask():
  with pytest.raises(ValueError, match='mask has dtype int64; expected bool'):
    adjusted_dropout_rate(0.5, np.ones(4, np.int64))
  with pytest.raises(ValueError, match='mask has dtype float32; expected bool'):
    adjusted_dropout_rate(0.5, jnp.ones((2, 2), jnp.float32))


def test_empty_mask():
  with pytest.raises(ValueError, match='mask is empty'):
    adjusted_dropout_rate(0.5, np.ones((0, 3), bool))


def test_several_arrays_or_none():
  two = {'fc1': {'kernel': np.ones((2, 2), bool)}, 'fc2': {'kernel': np.ones((2, 2), bool)}}
  with pytest.raises(ValueError, match=r'one boolean array \(a single layer\); got 2 arrays'):
    adjusted_dropout_rate(0.5, two)
  with pytest.raises(ValueError, match='got 0 arrays'):
    adjusted_dropout_rate(0.5, {'fc1': {'kernel': None, 'bias': None}})


class _DropoutNet(nnx.Module):
  def __init__(self, rngs):
    self.fc6 = nnx.Linear(4, 4, rngs=rngs)
    self.drop6 = nnx.Dropout(0.5, rngs=rngs)
    self.fc7 = nnx.Linear(4, 2, rngs=rngs)


def test_adjust_dropout_rates_sets_each_module_from_its_layer():
  net = _DropoutNet(nnx.Rngs(0))
  keep = np.zeros((4, 4), dtype=bool)
  keep[0, :] = True  # 4 of 16 connections kept
  mask = {
    'fc6': {'kernel': jnp.asarray(keep), 'bias': None},
    'fc7': {'kernel': jnp.ones((4, 2), dtype=bool), 'bias': None},
  }
  original = dropout.dropout_rates(net)
  assert original == {'drop6': 0.5}
  rates = dropout.adjust_dropout_rates(net, {'drop6': 'fc6'}, original, mask)
  assert rates == {'drop6': 0.25}
  assert net.drop6.rate == 0.25


def test_adjust_dropout_rates_errors_name_the_path():
  net = _DropoutNet(nnx.Rngs(0))
  mask = {
    'fc6': {'kernel': jnp.ones((4, 4), bool), 'bias': None},
    'fc7': {'kernel': None, 'bias': None},
  }
  with pytest.raises(
    ValueError, match=r"'drop7' names no nnx.Dropout module; dropout modules: \['drop6'\]"
  ):
    dropout.adjust_dropout_rates(net, {'drop7': 'fc6'}, {'drop7': 0.5}, mask)
  with pytest.raises(ValueError, match="follows layer 'fc7', which has no mask"):
    dropout.adjust_dropout_rates(net, {'drop6': 'fc7'}, {'drop6': 0.5}, mask)
