"""Tests for pruning.masks: selection, application, validation and counts."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import (
  KERNEL_PATTERN,
  LayerStats,
  apply_mask,
  check_mask,
  intersect_masks,
  mask_stats,
  prunable_mask,
)


def _params():
  """Two dense layers, a conv, a norm scale and a 2-D leaf not named kernel."""
  return {
    'conv': {'kernel': jnp.ones((3, 3, 1, 2)), 'bias': jnp.zeros(2)},
    'fc1': {'kernel': jnp.arange(6.0).reshape(3, 2) - 2.5, 'bias': jnp.array([1.0, -1.0])},
    'fc2': {'kernel': jnp.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]]), 'bias': jnp.ones(3)},
    'norm': {'scale': jnp.ones(3), 'bias': jnp.zeros(3)},
    'not_kernel': jnp.ones((2, 2)),
  }


def _dense_mask():
  return {
    'conv': {'kernel': jnp.ones((3, 3, 1, 2), bool), 'bias': None},
    'fc1': {'kernel': jnp.ones((3, 2), bool), 'bias': None},
    'fc2': {'kernel': jnp.ones((2, 3), bool), 'bias': None},
    'norm': {'scale': None, 'bias': None},
    'not_kernel': None,
  }


# The comparison helper itself: a mismatch must name the leaf.


def test_assert_trees_equal_names_the_differing_leaf(assert_trees_equal):
  a = {'fc1': {'kernel': jnp.array([True, False])}, 'fc2': {'kernel': jnp.array([True])}}
  b = {'fc1': {'kernel': jnp.array([True, True])}, 'fc2': {'kernel': jnp.array([True])}}
  assert_trees_equal(a, a)
  with pytest.raises(AssertionError, match=r"'fc1/kernel'.*first at \(1,\)"):
    assert_trees_equal(a, b)
  with pytest.raises(AssertionError, match=r"missing \['fc2/kernel'\]"):
    assert_trees_equal({'fc1': a['fc1']}, a)
  with pytest.raises(AssertionError, match=r"'fc2/kernel': got None"):
    assert_trees_equal({**a, 'fc2': {'kernel': None}}, a)


# prunable_mask


def test_prunable_mask_default_selects_exactly_the_kernels(assert_trees_equal):
  assert_trees_equal(prunable_mask(_params()), _dense_mask())
  assert_trees_equal(prunable_mask(_params(), KERNEL_PATTERN), _dense_mask())


def test_prunable_mask_default_on_nested_dict_and_root_kernel(assert_trees_equal):
  params = {
    'kernel': jnp.ones((2, 2)),
    'block': {'inner': {'kernel': jnp.ones((4, 1)), 'bias': jnp.ones(1)}},
    'mykernel': jnp.ones((2, 2)),
  }
  expected = {
    'kernel': jnp.ones((2, 2), bool),
    'block': {'inner': {'kernel': jnp.ones((4, 1), bool), 'bias': None}},
    'mykernel': None,
  }
  assert_trees_equal(prunable_mask(params), expected)


def test_prunable_mask_on_nnx_state_selects_only_kernels(small_cnn, assert_trees_equal):
  state = nnx.state(small_cnn, nnx.Param)
  mask = prunable_mask(state)
  expected = {
    'bn': {'bias': None, 'scale': None},
    'conv': {'bias': None, 'kernel': jnp.ones((3, 3, 1, 3), bool)},
    'fc': {'bias': None, 'kernel': jnp.ones((12, 5), bool)},
  }
  assert_trees_equal(mask, expected)
  # The mask keeps the params' container, so it lines up with the state leaf for leaf.
  assert isinstance(mask, nnx.State)
  for leaf in jax.tree.leaves(mask):
    assert isinstance(leaf, jax.Array)


def test_prunable_mask_custom_pattern(assert_trees_equal):
  expected = {
    'conv': {'kernel': None, 'bias': None},
    'fc1': {'kernel': jnp.ones((3, 2), bool), 'bias': None},
    'fc2': {'kernel': None, 'bias': None},
    'norm': {'scale': None, 'bias': None},
    'not_kernel': jnp.ones((2, 2), bool),
  }
  assert_trees_equal(prunable_mask(_params(), r'^fc1/kernel$|^not_kernel$'), expected)
  params = {'w': jnp.ones((2, 3)), 'b': jnp.ones(3)}
  assert_trees_equal(prunable_mask(params, r'(^|/)w$'), {'w': jnp.ones((2, 3), bool), 'b': None})


def test_prunable_mask_pattern_selecting_nothing_names_pattern_and_leaves():
  with pytest.raises(
    ValueError, match=r"pattern 'fc9' selects no leaf.*'fc1/kernel'.*'norm/scale'"
  ):
    prunable_mask(_params(), 'fc9')


def test_prunable_mask_refuses_a_bias_and_names_it():
  with pytest.raises(ValueError, match=r"selects 'fc1/bias' of shape \(2,\)"):
    prunable_mask(_params(), r'^fc1/')


def test_prunable_mask_refuses_a_norm_scale_and_names_it():
  with pytest.raises(ValueError, match=r"selects 'norm/scale' of shape \(3,\)"):
    prunable_mask(_params(), r'scale$')


def test_prunable_mask_invalid_regex():
  with pytest.raises(ValueError, match=r"pattern '\(kernel' is not a valid regular expression"):
    prunable_mask(_params(), '(kernel')


# apply_mask


def test_apply_mask_zeros_exactly_the_pruned_weights():
  params = _params()
  mask = _dense_mask()
  mask['fc2']['kernel'] = jnp.array([[True, False, True], [False, False, True]])
  mask['fc1']['kernel'] = jnp.array([[False, True], [True, True], [True, False]])
  out = apply_mask(params, mask)
  np.testing.assert_array_equal(out['fc2']['kernel'], [[1.0, 0.0, 3.0], [0.0, 0.0, -6.0]])
  np.testing.assert_array_equal(out['fc1']['kernel'], [[0.0, -1.5], [-0.5, 0.5], [1.5, 0.0]])
  assert int(jnp.count_nonzero(out['fc2']['kernel'])) == 3
  assert out['fc2']['kernel'].dtype == jnp.float32


def test_apply_mask_leaves_unpruned_leaves_and_kept_weights_unchanged(assert_trees_equal):
  params = _params()
  out = apply_mask(params, _dense_mask())
  assert_trees_equal(out, params)
  mask = _dense_mask()
  mask['conv']['kernel'] = jnp.zeros((3, 3, 1, 2), bool)
  out = apply_mask(params, mask)
  assert_trees_equal(
    out, {**params, 'conv': {'kernel': jnp.zeros((3, 3, 1, 2)), 'bias': jnp.zeros(2)}}
  )


def test_apply_mask_keeps_dtype():
  params = {'kernel': jnp.array([[1.5, -2.5]], jnp.bfloat16)}
  out = apply_mask(params, {'kernel': jnp.array([[False, True]])})
  assert out['kernel'].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out['kernel'], np.float32), [[0.0, -2.5]])


def test_apply_mask_under_jit():
  params = _params()
  mask = _dense_mask()
  mask['fc2']['kernel'] = jnp.array([[False, True, True], [True, True, False]])
  out = jax.jit(apply_mask)(params, mask)
  np.testing.assert_array_equal(out['fc2']['kernel'], [[0.0, -2.0, 3.0], [-4.0, 5.0, 0.0]])


def test_apply_mask_keeps_nnx_param_boxes_and_updates_the_model(small_cnn):
  state = nnx.state(small_cnn, nnx.Param)
  mask = prunable_mask(state)
  fc_keep = np.ones((12, 5), bool)
  fc_keep[::2] = False
  mask['fc']['kernel'] = jnp.asarray(fc_keep)
  original_fc = np.asarray(small_cnn.fc.kernel.get_value())
  original_conv = np.asarray(small_cnn.conv.kernel.get_value())
  original_bias = np.asarray(small_cnn.fc.bias.get_value())

  out = apply_mask(state, mask)
  leaves = jax.tree.leaves(out, is_leaf=lambda x: isinstance(x, nnx.Variable))
  assert len(leaves) == 6
  assert all(isinstance(leaf, nnx.Param) for leaf in leaves)

  nnx.update(small_cnn, out)
  fc = np.asarray(small_cnn.fc.kernel.get_value())
  np.testing.assert_array_equal(fc, np.where(fc_keep, original_fc, 0.0))
  assert np.count_nonzero(fc[::2]) == 0
  np.testing.assert_array_equal(small_cnn.conv.kernel.get_value(), original_conv)
  np.testing.assert_array_equal(small_cnn.fc.bias.get_value(), original_bias)


# check_mask


def test_check_mask_returns_leaves_in_params_order():
  mask = _dense_mask()
  leaves = check_mask(mask, _params())
  names = ['conv/bias', 'conv/kernel', 'fc1/bias', 'fc1/kernel', 'fc2/bias', 'fc2/kernel']
  assert len(leaves) == len(names) + 3
  assert [leaf is None for leaf in leaves] == [
    True,
    False,
    True,
    False,
    True,
    False,
    True,
    True,
    True,
  ]
  assert leaves[3].shape == (3, 2)
  assert leaves[5].shape == (2, 3)


def test_check_mask_accepts_dict_mask_for_nnx_state(small_cnn):
  state = nnx.state(small_cnn, nnx.Param)
  mask = {
    'bn': {'bias': None, 'scale': None},
    'conv': {'bias': None, 'kernel': jnp.ones((3, 3, 1, 3), bool)},
    'fc': {'bias': None, 'kernel': jnp.zeros((12, 5), bool)},
  }
  check_mask(mask, state)
  out = apply_mask(state, mask)
  assert int(jnp.count_nonzero(out['fc']['kernel'].get_value())) == 0


def test_check_mask_missing_leaf_is_named():
  mask = _dense_mask()
  del mask['fc2']
  with pytest.raises(ValueError, match=r"missing leaves \['fc2/bias', 'fc2/kernel'\]"):
    check_mask(mask, _params())


def test_check_mask_extra_leaf_is_named():
  mask = {**_dense_mask(), 'fc3': {'kernel': jnp.ones((2, 2), bool)}}
  with pytest.raises(ValueError, match=r"unexpected leaves \['fc3/kernel'\]"):
    check_mask(mask, _params())


def test_check_mask_shape_mismatch_names_path_and_shapes():
  mask = _dense_mask()
  mask['fc1']['kernel'] = jnp.ones((2, 3), bool)
  with pytest.raises(ValueError, match=r"'fc1/kernel' has shape \(2, 3\); expected \(3, 2\)"):
    check_mask(mask, _params())


def test_check_mask_non_bool_dtype_names_path():
  mask = _dense_mask()
  mask['fc2']['kernel'] = jnp.ones((2, 3), jnp.float32)
  with pytest.raises(ValueError, match=r"'fc2/kernel' has dtype float32; expected bool"):
    check_mask(mask, _params())


@pytest.mark.parametrize(
  'leaf, shown',
  [
    (np.array([['1', '0', '1'], ['0', '1', '0']]), '<U1'),  # a mask read back as text
    (np.zeros((2, 3), 'datetime64[s]'), 'datetime64'),
    (True, 'None'),  # a Python bool is not an array
  ],
)
def test_check_mask_rejects_any_dtype_but_bool(leaf, shown):
  # Every dtype other than bool is refused, not only those bool casts to.
  mask = _dense_mask()
  mask['fc2']['kernel'] = leaf
  with pytest.raises(ValueError, match=rf"'fc2/kernel' has dtype {re.escape(shown)}"):
    check_mask(mask, _params())


def test_check_mask_takes_its_trees_by_keyword_too():
  mask = _dense_mask()
  mask['fc2']['kernel'] = jnp.ones((3, 2), bool)
  with pytest.raises(ValueError, match=r'to match the state leaf'):
    check_mask(mask=mask, params=_params(), params_name='state')
  with pytest.raises(TypeError):  # params_name only by keyword: a third tree is a mistake
    check_mask(mask, _params(), 'state')


def test_apply_mask_validates_the_mask():
  mask = _dense_mask()
  mask['conv']['kernel'] = jnp.ones((3, 3, 2, 1), bool)
  with pytest.raises(ValueError, match=r"'conv/kernel' has shape \(3, 3, 2, 1\)"):
    apply_mask(_params(), mask)


# intersect_masks


def test_intersect_masks_is_logical_and_with_none_as_all_true(assert_trees_equal):
  a = {'x': jnp.array([[True, True], [False, True]]), 'y': None, 'z': None}
  b = {'x': jnp.array([[True, False], [True, True]]), 'y': jnp.array([True, False]), 'z': None}
  c = {'x': jnp.array([[True, True], [True, False]]), 'y': None, 'z': None}
  expected = {
    'x': jnp.array([[True, False], [False, False]]),
    'y': jnp.array([True, False]),
    'z': None,
  }
  assert_trees_equal(intersect_masks(a, b, c), expected)
  assert_trees_equal(intersect_masks(a), a)


def test_intersect_masks_shape_mismatch_names_leaf():
  a = {'fc1': {'kernel': jnp.ones((2, 3), bool)}}
  b = {'fc1': {'kernel': jnp.ones((3, 2), bool)}}
  with pytest.raises(
    ValueError, match=r"'fc1/kernel' has different shapes across masks: \[\(2, 3\), \(3, 2\)\]"
  ):
    intersect_masks(a, b)


def test_intersect_masks_structure_mismatch_names_leaf():
  a = {'fc1': {'kernel': jnp.ones((2, 3), bool)}, 'fc2': {'kernel': None}}
  b = {'fc1': {'kernel': jnp.ones((2, 3), bool)}}
  with pytest.raises(ValueError, match=r"mask 1 does not mirror .*missing leaves \['fc2/kernel'\]"):
    intersect_masks(a, b)


def test_intersect_masks_needs_a_mask():
  with pytest.raises(ValueError, match='at least one mask'):
    intersect_masks()


# mask_stats


def _stats_mask():
  fc1 = np.zeros((10, 30), bool)
  fc1[:, :3] = True  # 30 of 300 kept
  conv = np.ones((2, 2, 1, 4), bool)
  conv[0, 0, 0, 0] = False  # 15 of 16 kept
  return {
    'fc1': {'kernel': jnp.asarray(fc1), 'bias': None},
    'conv': {'kernel': jnp.asarray(conv), 'bias': None},
    'out': {'kernel': jnp.array([[True, False, False, False, False]]), 'bias': None},
  }


def test_mask_stats_exact_counts():
  stats = mask_stats(_stats_mask())
  # Params flattening order: dict keys sorted; biases (None) are not counted.
  assert list(stats.layers) == ['conv/kernel', 'fc1/kernel', 'out/kernel']
  assert stats.layers['conv/kernel'] == LayerStats(total=16, kept=15)
  assert stats.layers['fc1/kernel'] == LayerStats(total=300, kept=30)
  assert stats.layers['out/kernel'] == LayerStats(total=5, kept=1)
  assert stats.overall == LayerStats(total=321, kept=46)
  assert all(type(v) is int for s in stats.layers.values() for v in s)


def test_mask_stats_density_sparsity_compression():
  stats = mask_stats(_stats_mask())
  fc1 = stats.layers['fc1/kernel']
  assert fc1.density == pytest.approx(0.1)
  assert fc1.sparsity == pytest.approx(0.9)
  assert fc1.compression == pytest.approx(10.0)
  assert stats.layers['out/kernel'].compression == 5.0
  assert stats.overall.density == pytest.approx(46 / 321)
  assert stats.overall.compression == pytest.approx(321 / 46)


def test_mask_stats_dense_mask():
  stats = mask_stats(prunable_mask(_params()))
  assert stats.overall == LayerStats(total=18 + 6 + 6, kept=30)
  assert stats.overall.compression == 1.0
  assert stats.overall.sparsity == 0.0


def test_mask_stats_nothing_kept_has_infinite_compression():
  stats = mask_stats({'fc': {'kernel': jnp.zeros((4, 3), bool), 'bias': None}})
  assert stats.overall == LayerStats(total=12, kept=0)
  assert stats.overall.density == 0.0
  assert stats.overall.compression == math.inf
  assert 'inf' in stats.to_markdown().splitlines()[-1]


def test_mask_stats_empty_layer_counts_as_fully_kept():
  stats = mask_stats({'fc': {'kernel': jnp.zeros((0, 3), bool)}})
  assert stats.overall == LayerStats(total=0, kept=0)
  assert stats.overall.density == 1.0
  assert stats.overall.sparsity == 0.0


@pytest.mark.parametrize('leaf', [np.array(['1', '0']), np.zeros(2, 'datetime64[s]')])
def test_mask_stats_rejects_any_dtype_but_bool(leaf):
  with pytest.raises(ValueError, match=r"'fc/kernel' has dtype .*; expected bool"):
    mask_stats({'fc': {'kernel': leaf}})


def test_mask_stats_on_nnx_mask(small_cnn):
  mask = prunable_mask(nnx.state(small_cnn, nnx.Param))
  mask['fc']['kernel'] = jnp.zeros((12, 5), bool).at[0].set(True)
  stats = mask_stats(mask)
  assert stats.layers == {
    'conv/kernel': LayerStats(total=27, kept=27),
    'fc/kernel': LayerStats(total=60, kept=5),
  }


def test_mask_stats_non_bool_names_leaf():
  with pytest.raises(ValueError, match=r"'fc2/kernel' has dtype int32; expected bool"):
    mask_stats(
      {'fc1': {'kernel': jnp.ones((2, 2), bool)}, 'fc2': {'kernel': jnp.ones((2, 2), jnp.int32)}}
    )


def test_to_markdown_has_a_row_per_layer_and_a_total():
  table = mask_stats(_stats_mask()).to_markdown()
  lines = table.splitlines()
  assert len(lines) == 2 + 3 + 1
  rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[2:]]
  assert [row[0] for row in rows] == ['conv/kernel', 'fc1/kernel', 'out/kernel', 'total']
  assert rows[1] == ['fc1/kernel', '300', '30', '10.00', '10.0x']
  assert rows[3][:4] == ['total', '321', '46', f'{100 * 46 / 321:.2f}']
