"""The shared tree helpers' own contracts: what counts as a real number, which value an
error names first, and how trees are aligned."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from pruning import _tree


@pytest.mark.parametrize(
  'value',
  [0.5, 1, np.float64(0.5), np.float32(0.5), np.int8(1), np.array(0.5), jnp.array(0.5)],
  ids=['float', 'int', 'float64', 'float32', 'int8', 'numpy 0-d', 'jax 0-d'],
)
def test_real_numbers_are_python_numbers_numpy_scalars_and_0d_arrays(value):
  assert _tree.real_number(value, 'x') == float(value)


@pytest.mark.parametrize(
  'value',
  [True, np.bool_(True), '0.5', None, np.array([0.5]), jnp.array([0.5]), np.array('0.5')],
  ids=['bool', 'numpy bool', 'str', 'None', 'numpy 1-d', 'jax 1-d', 'numpy str'],
)
def test_what_is_not_a_real_number_is_named(value):
  with pytest.raises(ValueError, match=r'^x is .*; expected a finite real number$'):
    _tree.real_number(value, 'x')


def test_the_first_non_finite_weight_is_named():
  weights = np.zeros((2, 3))
  weights[0, 2] = np.inf
  weights[1, 0] = np.nan
  with pytest.raises(
    ValueError,
    match=r"weights of 'fc' hold 2 non-finite value\(s\) \(first: inf at index \(0, 2\)\)",
  ):
    _tree.check_all_finite('fc', weights)


def test_align_takes_what_by_keyword_only():
  tree = {'a': 1, 'b': 2}
  assert _tree.align(tree, {'a': 0, 'b': 0}, what='mask') == [1, 2]
  with pytest.raises(TypeError):
    _tree.align(tree, tree, 'mask')
  with pytest.raises(ValueError, match=r"missing leaves \['c'\] \(in params, not in mask\)"):
    _tree.align(tree, {'a': 0, 'b': 0, 'c': 0}, what='mask')


def test_real_number_takes_the_bounds_by_keyword_only():
  assert _tree.real_number(0.5, 'x', minimum=0.0, maximum=1.0) == 0.5
  with pytest.raises(TypeError):
    _tree.real_number(0.5, 'x', 0.0)


def test_align_names_each_leaf_once_missing_or_unexpected():
  tree = {'a': 1, 'b': 2}
  head = r'^mask does not mirror the structure of params: '
  with pytest.raises(
    ValueError, match=head + r"missing leaves \['c'\] \(in params, not in mask\)$"
  ):
    _tree.align(tree, {'a': 0, 'b': 0, 'c': 0}, what='mask')
  with pytest.raises(
    ValueError, match=head + r"unexpected leaves \['b'\] \(in mask, not in params\)$"
  ):
    _tree.align(tree, {'a': 0}, what='mask')
  with pytest.raises(
    ValueError,
    match=head + r"missing leaves \['c'\] \(in params, not in mask\); "
    r"unexpected leaves \['b'\] \(in mask, not in params\)$",
  ):
    _tree.align(tree, {'a': 0, 'c': 0}, what='mask')
