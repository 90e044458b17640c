"""Tests for pruning.criteria against straightforward numpy/Python references.

The references below use Python loops and ``sorted`` on ``(magnitude, index)``
pairs, so they spell out the documented tie-breaking (earlier row-major flat
index pruned first; for the global criterion, layers in params flattening
order, i.e. sorted dict keys) independently of the implementation.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import criteria as criteria_module
from pruning import global_sparsity_mask, prunable_mask, quality_mask, random_mask, sparsity_mask
from pruning.criteria import CRITERIA, get_criterion, register_criterion

LAYERS = ['conv/kernel', 'fc1/kernel', 'fc2/kernel']
SPARSITIES = [0.0, 0.1, 0.25, 0.5, 0.7, 0.95, 1.0]
SEEDS = [0, 1, 2]


def _params(seed, ties=False):
  """Three kernels (72, 80 and 10 weights), biases and a norm scale.

  Keys are inserted out of order: jax flattens dicts in sorted key order,
  which is the order the global criterion must use. With ``ties`` the weights
  are rounded to one decimal, so many magnitudes are exactly equal (within
  and across layers, and between w and -w).
  """
  rng = np.random.default_rng(seed)

  def w(*shape):
    x = rng.normal(size=shape).astype(np.float32)
    return jnp.asarray(np.round(x, 1) if ties else x)

  return {
    'fc2': {'kernel': w(2, 5), 'bias': w(5)},
    'conv': {'kernel': w(3, 3, 2, 4), 'bias': w(4)},
    'fc1': {'kernel': w(10, 8), 'bias': w(8)},
    'norm': {'scale': w(8)},
  }


def _kernels(params):
  return {name: np.asarray(params[name.split('/')[0]]['kernel']) for name in LAYERS}


def _mask_from(keeps):
  """A mask pytree for ``_params`` from ``{leaf path: keep array}``."""
  return {
    'fc2': {'kernel': jnp.asarray(keeps['fc2/kernel']), 'bias': None},
    'conv': {'kernel': jnp.asarray(keeps['conv/kernel']), 'bias': None},
    'fc1': {'kernel': jnp.asarray(keeps['fc1/kernel']), 'bias': None},
    'norm': {'scale': None},
  }


def _ref_sparsity_keep(w, sparsity, prev=None):
  """Prune round(s * n) of the layer, already-pruned first, then smallest, earliest."""
  magnitudes = [abs(float(v)) for v in np.asarray(w, np.float64).ravel()]
  n = len(magnitudes)
  keep = [True] * n if prev is None else [bool(v) for v in np.asarray(prev).ravel()]
  to_prune = round(sparsity * n) - keep.count(False)
  candidates = sorted((magnitudes[i], i) for i in range(n) if keep[i])
  for _, i in candidates[: max(to_prune, 0)]:
    keep[i] = False
  return np.array(keep, dtype=bool).reshape(np.shape(w))


def _ref_global_keep(weights, sparsity, prev=None):
  """One ranking over the layers concatenated in sorted-path order."""
  names = sorted(weights)
  magnitudes, keep, owner = [], [], []
  for name in names:
    flat = np.asarray(weights[name], np.float64).ravel()
    magnitudes += [abs(float(v)) for v in flat]
    keep += (
      [True] * flat.size if prev is None else [bool(v) for v in np.asarray(prev[name]).ravel()]
    )
    owner += [name] * flat.size
  to_prune = round(sparsity * len(magnitudes)) - keep.count(False)
  candidates = sorted((magnitudes[i], i) for i in range(len(keep)) if keep[i])
  for _, i in candidates[: max(to_prune, 0)]:
    keep[i] = False
  out = {}
  for name in names:
    idx = [i for i, o in enumerate(owner) if o == name]
    out[name] = np.array([keep[i] for i in idx], dtype=bool).reshape(np.shape(weights[name]))
  return out


def _ref_quality_keep(w, quality, prev=None, std_of='all'):
  """Keep |w| >= quality * population std (of all weights or of the kept ones)."""
  x = [float(v) for v in np.asarray(w, np.float64).ravel()]
  keep = [True] * len(x) if prev is None else [bool(v) for v in np.asarray(prev).ravel()]
  sample = x if std_of == 'all' else [v for v, k in zip(x, keep, strict=True) if k]
  mean = math.fsum(sample) / len(sample)
  std = math.sqrt(math.fsum((v - mean) ** 2 for v in sample) / len(sample))
  threshold = quality * std
  out = [k and abs(v) >= threshold for v, k in zip(x, keep, strict=True)]
  return np.array(out, dtype=bool).reshape(np.shape(w))


def _assert_bool_arrays_like(mask, params):
  """Every prunable mask leaf is a jax bool array with its weight's shape."""
  for name, w in _kernels(params).items():
    leaf = mask[name.split('/')[0]]['kernel']
    assert isinstance(leaf, jax.Array), f'{name}: {type(leaf)}'
    assert leaf.dtype == jnp.bool_, f'{name}: {leaf.dtype}'
    assert leaf.shape == w.shape, f'{name}: {leaf.shape} != {w.shape}'


def _count_pruned(mask):
  return {name: int(np.size(m) - np.count_nonzero(m)) for name, m in _leaf_dict(mask).items()}


def _leaf_dict(mask):
  return {name: np.asarray(mask[name.split('/')[0]]['kernel']) for name in LAYERS}


def test_reference_data_has_ties():
  """Guards the tie tests: rounded weights repeat magnitudes within and across layers."""
  kernels = _kernels(_params(0, ties=True))
  fc1 = np.abs(kernels['fc1/kernel']).ravel()
  assert np.unique(fc1).size < fc1.size // 2
  pooled = np.abs(np.concatenate([k.ravel() for k in kernels.values()]))
  assert np.unique(pooled).size < pooled.size // 3


# sparsity_mask


@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('seed', SEEDS)
def test_sparsity_mask_matches_reference(seed, ties, assert_trees_equal):
  params = _params(seed, ties)
  kernels = _kernels(params)
  for s in SPARSITIES:
    mask = sparsity_mask(params, s)
    expected = _mask_from({name: _ref_sparsity_keep(w, s) for name, w in kernels.items()})
    assert_trees_equal(mask, expected)
    for name, w in kernels.items():
      assert _count_pruned(mask)[name] == round(s * w.size), (name, s)


@pytest.mark.parametrize('seed', SEEDS)
def test_sparsity_mask_with_previous_mask_matches_reference(seed, assert_trees_equal):
  params = _params(seed, ties=True)
  kernels = _kernels(params)
  prev = {name: _ref_sparsity_keep(w, 0.3) for name, w in kernels.items()}
  for s in [0.3, 0.5, 0.9]:
    mask = sparsity_mask(params, s, mask=_mask_from(prev))
    expected = {name: _ref_sparsity_keep(w, s, prev[name]) for name, w in kernels.items()}
    assert_trees_equal(mask, _mask_from(expected))


def test_sparsity_mask_half_counts_round_half_to_even():
  # n = 10: 0.25 * 10 = 2.5 -> 2 pruned; n = 6: 0.25 * 6 = 1.5 -> 2 pruned.
  params = {
    'a': {'kernel': jnp.arange(1.0, 11.0).reshape(2, 5)},
    'b': {'kernel': jnp.arange(1.0, 7.0).reshape(3, 2)},
  }
  mask = sparsity_mask(params, 0.25)
  np.testing.assert_array_equal(mask['a']['kernel'], [[False, False, True, True, True], [True] * 5])
  np.testing.assert_array_equal(mask['b']['kernel'], [[False, False], [True, True], [True, True]])
  assert int(mask['a']['kernel'].sum()) == 8
  assert int(mask['b']['kernel'].sum()) == 4


def test_sparsity_mask_ties_prune_earlier_row_major_index_first():
  params = {'fc': {'kernel': jnp.array([[0.5, -0.2, 0.2], [-0.2, 0.5, 0.1]])}}
  np.testing.assert_array_equal(
    sparsity_mask(params, 2 / 6)['fc']['kernel'], [[True, False, True], [True, True, False]]
  )
  np.testing.assert_array_equal(
    sparsity_mask(params, 3 / 6)['fc']['kernel'], [[True, False, False], [True, True, False]]
  )
  np.testing.assert_array_equal(
    sparsity_mask(params, 5 / 6)['fc']['kernel'], [[False, False, False], [False, True, False]]
  )


def test_sparsity_mask_docstring_example():
  params = {'fc': {'kernel': jnp.array([[0.3, -0.1], [0.2, 0.4]])}}
  np.testing.assert_array_equal(
    sparsity_mask(params, 0.5)['fc']['kernel'], [[True, False], [False, True]]
  )


def test_sparsity_mask_pruned_stays_pruned_even_if_large():
  params = _params(3)
  kernels = _kernels(params)
  prev = {name: _ref_sparsity_keep(w, 0.4) for name, w in kernels.items()}
  # Training would keep a pruned weight at zero; here it grows huge to show the mask wins.
  big = dict(params)
  big['fc1'] = {
    **params['fc1'],
    'kernel': jnp.where(prev['fc1/kernel'], params['fc1']['kernel'], 1e6),
  }
  mask = sparsity_mask(big, 0.5, mask=_mask_from(prev))
  fc1 = np.asarray(mask['fc1']['kernel'])
  assert not fc1[~prev['fc1/kernel']].any()
  # The target counts the already-pruned weights: exactly round(0.5 * n) pruned in all.
  assert _count_pruned(mask) == {'conv/kernel': 36, 'fc1/kernel': 40, 'fc2/kernel': 5}
  for name in LAYERS:
    assert not np.asarray(_leaf_dict(mask)[name])[~prev[name]].any(), name
  # Without the mask the decision rests on the weights alone: the huge weights survive.
  fresh = np.asarray(sparsity_mask(big, 0.5)['fc1']['kernel'])
  assert fresh[~prev['fc1/kernel']].all()
  assert int((~fresh).sum()) == 40


def test_sparsity_mask_previous_mask_pruning_more_is_returned_unchanged(assert_trees_equal):
  params = _params(4)
  prev = _mask_from({name: _ref_sparsity_keep(w, 0.8) for name, w in _kernels(params).items()})
  assert_trees_equal(sparsity_mask(params, 0.3, mask=prev), prev)
  assert_trees_equal(sparsity_mask(params, 0.0, mask=prev), prev)


def test_sparsity_mask_without_mask_equals_dense_mask(assert_trees_equal):
  params = _params(5, ties=True)
  assert_trees_equal(
    sparsity_mask(params, 0.6), sparsity_mask(params, 0.6, mask=prunable_mask(params))
  )


def test_sparsity_mask_per_layer_mapping(assert_trees_equal):
  params = _params(6)
  kernels = _kernels(params)
  by_layer = sparsity_mask(params, {'fc1': 0.25, 'fc2/kernel': 0.5})
  by_leaf = sparsity_mask(params, {'fc1/kernel': 0.25, 'fc2': 0.5})
  assert_trees_equal(by_layer, by_leaf)
  expected = {
    'conv/kernel': np.ones((3, 3, 2, 4), bool),
    'fc1/kernel': _ref_sparsity_keep(kernels['fc1/kernel'], 0.25),
    'fc2/kernel': _ref_sparsity_keep(kernels['fc2/kernel'], 0.5),
  }
  assert_trees_equal(by_layer, _mask_from(expected))
  # With a mask, layers the mapping leaves out come back unchanged.
  prev = {name: _ref_sparsity_keep(w, 0.2) for name, w in kernels.items()}
  mask = sparsity_mask(params, {'fc2': 0.6}, mask=_mask_from(prev))
  expected = {
    **prev,
    'fc2/kernel': _ref_sparsity_keep(kernels['fc2/kernel'], 0.6, prev['fc2/kernel']),
  }
  assert_trees_equal(mask, _mask_from(expected))


def test_sparsity_mask_pattern_restricts_layers_with_mask(assert_trees_equal):
  params = _params(7)
  kernels = _kernels(params)
  prev = {name: _ref_sparsity_keep(w, 0.5) for name, w in kernels.items()}
  mask = sparsity_mask(params, 0.8, mask=_mask_from(prev), pattern='fc2')
  expected = {
    **prev,
    'fc2/kernel': _ref_sparsity_keep(kernels['fc2/kernel'], 0.8, prev['fc2/kernel']),
  }
  assert_trees_equal(mask, _mask_from(expected))


def test_sparsity_mask_pattern_restricts_layers_without_mask(assert_trees_equal):
  # The other prunable layers stay dense (all True, not dropped to None), and a
  # pattern that also matches fc2's bias prunes only the kernel.
  params = _params(8)
  kernels = _kernels(params)
  expected = {
    'conv/kernel': np.ones((3, 3, 2, 4), bool),
    'fc1/kernel': np.ones((10, 8), bool),
    'fc2/kernel': _ref_sparsity_keep(kernels['fc2/kernel'], 0.5),
  }
  assert_trees_equal(sparsity_mask(params, 0.5, pattern='fc2'), _mask_from(expected))
  assert_trees_equal(sparsity_mask(params, 0.5, pattern=r'^fc2/kernel$'), _mask_from(expected))


def test_sparsity_mask_on_nnx_state(small_cnn, assert_trees_equal):
  state = nnx.state(small_cnn, nnx.Param)
  mask = sparsity_mask(state, 0.5)
  assert isinstance(mask, nnx.State)
  conv, fc = mask['conv']['kernel'], mask['fc']['kernel']
  for leaf, shape in [(conv, (3, 3, 1, 3)), (fc, (12, 5))]:
    assert isinstance(leaf, jax.Array)
    assert leaf.dtype == jnp.bool_
    assert leaf.shape == shape
  # 27 * 0.5 = 13.5 -> 14 pruned (half to even); 60 * 0.5 = 30.
  assert int(conv.sum()) == 13
  assert int(fc.sum()) == 30
  assert mask['fc']['bias'] is None and mask['bn']['scale'] is None
  np.testing.assert_array_equal(fc, _ref_sparsity_keep(small_cnn.fc.kernel.get_value(), 0.5))
  pure = {
    'bn': {'bias': small_cnn.bn.bias.get_value(), 'scale': small_cnn.bn.scale.get_value()},
    'conv': {'bias': small_cnn.conv.bias.get_value(), 'kernel': small_cnn.conv.kernel.get_value()},
    'fc': {'bias': small_cnn.fc.bias.get_value(), 'kernel': small_cnn.fc.kernel.get_value()},
  }
  assert_trees_equal(mask, sparsity_mask(pure, 0.5))
  assert_trees_equal(sparsity_mask(state, 0.7, mask=mask), sparsity_mask(pure, 0.7, mask=mask))


def test_sparsity_mask_returns_jax_bool_arrays():
  params = _params(0)
  _assert_bool_arrays_like(sparsity_mask(params, 0.5), params)
  _assert_bool_arrays_like(quality_mask(params, 1.0), params)
  _assert_bool_arrays_like(global_sparsity_mask(params, 0.5), params)


# global_sparsity_mask


@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('seed', SEEDS)
def test_global_sparsity_mask_matches_reference(seed, ties, assert_trees_equal):
  params = _params(seed, ties)
  kernels = _kernels(params)
  total = sum(w.size for w in kernels.values())
  for s in SPARSITIES:
    mask = global_sparsity_mask(params, s)
    assert_trees_equal(mask, _mask_from(_ref_global_keep(kernels, s)))
    assert sum(_count_pruned(mask).values()) == round(s * total), s


@pytest.mark.parametrize('seed', SEEDS)
def test_global_sparsity_mask_with_previous_mask_matches_reference(seed, assert_trees_equal):
  params = _params(seed, ties=True)
  kernels = _kernels(params)
  prev = {name: _ref_sparsity_keep(w, 0.35) for name, w in kernels.items()}
  for s in [0.3, 0.5, 0.9]:
    mask = global_sparsity_mask(params, s, mask=_mask_from(prev))
    assert_trees_equal(mask, _mask_from(_ref_global_keep(kernels, s, prev)))


def test_global_sparsity_mask_ties_follow_sorted_layer_order():
  # 'b' is inserted first, but flattening order is sorted keys: 'a' ranks first.
  params = {'b': {'kernel': jnp.array([[1.0, -1.0]])}, 'a': {'kernel': jnp.array([[-1.0, 1.0]])}}
  mask = global_sparsity_mask(params, 0.5)
  np.testing.assert_array_equal(mask['a']['kernel'], [[False, False]])
  np.testing.assert_array_equal(mask['b']['kernel'], [[True, True]])
  mask = global_sparsity_mask(params, 0.75)
  np.testing.assert_array_equal(mask['a']['kernel'], [[False, False]])
  np.testing.assert_array_equal(mask['b']['kernel'], [[False, True]])


def test_global_sparsity_mask_half_counts_round_half_to_even():
  params = {
    'a': {'kernel': jnp.arange(1.0, 11.0).reshape(2, 5)},
    'b': {'kernel': jnp.arange(0.5, 3.5, 0.5).reshape(3, 2)},
  }
  # Magnitudes in ranking order: 0.5 (b), 1.0 (a), 1.0 (b), 1.5 (b), 2.0 (a), ...;
  # the tie at 1.0 goes to 'a', the first layer in flattening order.
  # N = 16: 16 * 0.15625 = 2.5 -> 2 pruned; 16 * 0.21875 = 3.5 -> 4 pruned.
  a_first_pruned = [[False, True, True, True, True], [True] * 5]
  mask = global_sparsity_mask(params, 0.15625)
  assert _pruned_total(mask) == 2
  np.testing.assert_array_equal(mask['a']['kernel'], a_first_pruned)
  np.testing.assert_array_equal(mask['b']['kernel'], [[False, True], [True, True], [True, True]])
  mask = global_sparsity_mask(params, 0.21875)
  assert _pruned_total(mask) == 4
  np.testing.assert_array_equal(mask['a']['kernel'], a_first_pruned)
  np.testing.assert_array_equal(mask['b']['kernel'], [[False, False], [False, True], [True, True]])


def _pruned_total(mask):
  return sum(int(np.size(m) - np.count_nonzero(m)) for m in jax.tree.leaves(mask))


def test_global_sparsity_mask_docstring_example():
  params = {'a': {'kernel': jnp.array([[0.1, 0.2]])}, 'b': {'kernel': jnp.array([[3.0, 4.0]])}}
  new = global_sparsity_mask(params, 0.5)
  assert new['a']['kernel'].tolist() == [[False, False]]
  assert new['b']['kernel'].tolist() == [[True, True]]


def test_global_sparsity_mask_pruned_stays_pruned_and_counts():
  params = _params(9)
  kernels = _kernels(params)
  prev = {name: _ref_sparsity_keep(w, 0.5) for name, w in kernels.items()}
  big = {
    **params,
    'fc2': {**params['fc2'], 'kernel': jnp.where(prev['fc2/kernel'], params['fc2']['kernel'], 1e6)},
  }
  mask = global_sparsity_mask(big, 0.6, mask=_mask_from(prev))
  assert _pruned_total(mask) == round(0.6 * 162)
  for name in LAYERS:
    assert not _leaf_dict(mask)[name][~prev[name]].any(), name
  assert _leaf_dict(global_sparsity_mask(big, 0.6))['fc2/kernel'][~prev['fc2/kernel']].all()


def test_global_sparsity_mask_previous_mask_pruning_more_is_returned_unchanged(assert_trees_equal):
  params = _params(10)
  prev = _mask_from({name: _ref_sparsity_keep(w, 0.7) for name, w in _kernels(params).items()})
  assert_trees_equal(global_sparsity_mask(params, 0.5, mask=prev), prev)


def test_global_sparsity_mask_pattern_pools_only_selected_layers(assert_trees_equal):
  params = _params(11, ties=True)
  kernels = _kernels(params)
  fcs = {name: kernels[name] for name in ['fc1/kernel', 'fc2/kernel']}
  expected = {'conv/kernel': np.ones((3, 3, 2, 4), bool), **_ref_global_keep(fcs, 0.5)}
  mask = global_sparsity_mask(params, 0.5, pattern='^fc')
  assert_trees_equal(mask, _mask_from(expected))
  assert _pruned_total(mask) == 45
  prev = {name: _ref_sparsity_keep(w, 0.3) for name, w in kernels.items()}
  mask = global_sparsity_mask(params, 0.5, mask=_mask_from(prev), pattern='^fc')
  expected = {'conv/kernel': prev['conv/kernel'], **_ref_global_keep(fcs, 0.5, prev)}
  assert_trees_equal(mask, _mask_from(expected))


def test_global_sparsity_mask_on_nnx_state(small_cnn):
  mask = global_sparsity_mask(nnx.state(small_cnn, nnx.Param), 0.5)
  assert isinstance(mask, nnx.State)
  assert mask['conv']['kernel'].shape == (3, 3, 1, 3) and mask['conv']['kernel'].dtype == jnp.bool_
  assert _pruned_total(mask) == round(0.5 * 87)
  expected = _ref_global_keep(
    {
      'conv/kernel': small_cnn.conv.kernel.get_value(),
      'fc/kernel': small_cnn.fc.kernel.get_value(),
    },
    0.5,
  )
  np.testing.assert_array_equal(mask['conv']['kernel'], expected['conv/kernel'])
  np.testing.assert_array_equal(mask['fc']['kernel'], expected['fc/kernel'])


# quality_mask


@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('seed', SEEDS)
def test_quality_mask_matches_reference(seed, ties, assert_trees_equal):
  params = _params(seed, ties)
  kernels = _kernels(params)
  for q in [0.0, 0.25, 0.5, 1.0, 1.7, 5.0]:
    expected = {name: _ref_quality_keep(w, q) for name, w in kernels.items()}
    assert_trees_equal(quality_mask(params, q), _mask_from(expected))
    assert_trees_equal(quality_mask(params, q, std_of='kept'), _mask_from(expected))


@pytest.mark.parametrize('std_of', ['all', 'kept'])
@pytest.mark.parametrize('seed', SEEDS)
def test_quality_mask_with_previous_mask_matches_reference(seed, std_of, assert_trees_equal):
  params = _params(seed)
  kernels = _kernels(params)
  prev = {name: _ref_quality_keep(w, 0.5) for name, w in kernels.items()}
  for q in [0.5, 1.0, 1.5]:
    mask = quality_mask(params, q, std_of=std_of, mask=_mask_from(prev))
    expected = {name: _ref_quality_keep(w, q, prev[name], std_of) for name, w in kernels.items()}
    assert_trees_equal(mask, _mask_from(expected))


def test_quality_mask_docstring_example():
  params = {'fc': {'kernel': jnp.array([[0.1, -2.0], [1.0, -0.05]])}}
  assert quality_mask(params, 0.5)['fc']['kernel'].tolist() == [[False, True], [True, False]]


def test_quality_mask_std_of_all_and_kept_differ():
  # Six zeros already pruned. std of all ten = sqrt(2) ~ 1.414, of the kept
  # [1, 2, 3, 4] = sqrt(1.25) ~ 1.118; with quality 1.5 the thresholds are
  # ~2.12 and ~1.68, so the weight 2.0 is pruned only under 'all'.
  params = {'fc': {'kernel': jnp.array([[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]])}}
  prev = {'fc': {'kernel': jnp.array([[False] * 5, [False, True, True, True, True]])}}
  all_ = quality_mask(params, 1.5, std_of='all', mask=prev)['fc']['kernel']
  kept = quality_mask(params, 1.5, std_of='kept', mask=prev)['fc']['kernel']
  np.testing.assert_array_equal(all_, [[False] * 5, [False, False, False, True, True]])
  np.testing.assert_array_equal(kept, [[False] * 5, [False, False, True, True, True]])


def test_quality_mask_zero_quality_keeps_everything():
  params = {'fc': {'kernel': jnp.array([[0.0, 1.0], [-3.0, 0.0]])}}
  assert bool(quality_mask(params, 0.0)['fc']['kernel'].all())


def test_quality_mask_pruned_stays_pruned_even_if_large():
  params = _params(12)
  kernels = _kernels(params)
  prev = {name: _ref_quality_keep(w, 1.0) for name, w in kernels.items()}
  big = {
    **params,
    'fc1': {**params['fc1'], 'kernel': jnp.where(prev['fc1/kernel'], params['fc1']['kernel'], 1e6)},
  }
  mask = quality_mask(big, 0.1, mask=_mask_from(prev))
  for name in LAYERS:
    got = _leaf_dict(mask)[name]
    assert not got[~prev[name]].any(), name
    assert not (got & ~prev[name]).any(), name
  assert _leaf_dict(quality_mask(big, 0.1))['fc1/kernel'][~prev['fc1/kernel']].all()


def test_quality_mask_per_layer_mapping(assert_trees_equal):
  params = _params(13)
  kernels = _kernels(params)
  by_layer = quality_mask(params, {'fc1': 1.0})
  by_leaf = quality_mask(params, {'fc1/kernel': 1.0})
  assert_trees_equal(by_layer, by_leaf)
  expected = {
    'conv/kernel': np.ones((3, 3, 2, 4), bool),
    'fc1/kernel': _ref_quality_keep(kernels['fc1/kernel'], 1.0),
    'fc2/kernel': np.ones((2, 5), bool),
  }
  assert_trees_equal(by_layer, _mask_from(expected))
  prev = {name: _ref_quality_keep(w, 0.3) for name, w in kernels.items()}
  mask = quality_mask(params, {'conv': 0.8, 'fc2/kernel': 1.2}, mask=_mask_from(prev))
  expected = {
    'conv/kernel': _ref_quality_keep(kernels['conv/kernel'], 0.8, prev['conv/kernel']),
    'fc1/kernel': prev['fc1/kernel'],
    'fc2/kernel': _ref_quality_keep(kernels['fc2/kernel'], 1.2, prev['fc2/kernel']),
  }
  assert_trees_equal(mask, _mask_from(expected))


def test_quality_mask_pattern_restricts_layers(assert_trees_equal):
  params = _params(14)
  kernels = _kernels(params)
  prev = {name: _ref_quality_keep(w, 0.5) for name, w in kernels.items()}
  mask = quality_mask(params, 1.0, mask=_mask_from(prev), pattern='fc2')
  expected = {
    **prev,
    'fc2/kernel': _ref_quality_keep(kernels['fc2/kernel'], 1.0, prev['fc2/kernel']),
  }
  assert_trees_equal(mask, _mask_from(expected))
  mask = quality_mask(params, 1.0, pattern='conv')
  expected = {
    'conv/kernel': _ref_quality_keep(kernels['conv/kernel'], 1.0),
    'fc1/kernel': np.ones((10, 8), bool),
    'fc2/kernel': np.ones((2, 5), bool),
  }
  assert_trees_equal(mask, _mask_from(expected))


def test_quality_mask_on_nnx_state(small_cnn):
  mask = quality_mask(nnx.state(small_cnn, nnx.Param), 1.0)
  assert isinstance(mask, nnx.State)
  assert mask['bn']['scale'] is None and mask['conv']['bias'] is None
  for leaf, w in [
    (mask['conv']['kernel'], small_cnn.conv.kernel),
    (mask['fc']['kernel'], small_cnn.fc.kernel),
  ]:
    assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.bool_
    np.testing.assert_array_equal(leaf, _ref_quality_keep(w.get_value(), 1.0))


# Error paths: every message names the offending layer.

ALL_CRITERIA = [
  pytest.param(lambda p, **kw: sparsity_mask(p, 0.5, **kw), id='sparsity'),
  pytest.param(lambda p, **kw: global_sparsity_mask(p, 0.5, **kw), id='global'),
  pytest.param(lambda p, **kw: quality_mask(p, 1.0, **kw), id='quality'),
]


@pytest.mark.parametrize('bad', [-0.1, 1.5, float('nan')])
def test_sparsity_outside_unit_interval_names_layer(bad):
  params = _params(0)
  with pytest.raises(
    ValueError, match=rf"sparsity for 'fc2/kernel' is {bad!r}; expected a value in \[0, 1\]"
  ):
    sparsity_mask(params, {'fc1': 0.5, 'fc2': bad})
  with pytest.raises(ValueError, match=r"sparsity for 'conv/kernel' is"):
    sparsity_mask(params, bad)
  with pytest.raises(ValueError, match=r"sparsity for 'the selected layers' is"):
    global_sparsity_mask(params, bad)


@pytest.mark.parametrize('bad', [-0.5, float('nan'), float('inf')])
def test_bad_quality_names_layer(bad):
  params = _params(0)
  with pytest.raises(
    ValueError, match=rf"quality for 'fc1/kernel' is {bad!r}; expected a finite number >= 0"
  ):
    quality_mask(params, {'fc1': bad})
  with pytest.raises(ValueError, match=r"quality for 'conv/kernel' is"):
    quality_mask(params, bad)


def test_quality_bad_std_of():
  with pytest.raises(ValueError, match=r"std_of is 'median'"):
    quality_mask(_params(0), 1.0, std_of='median')


@pytest.mark.parametrize('criterion', ALL_CRITERIA)
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_weights_name_the_leaf(criterion, bad):
  params = _params(0)
  params['fc1']['kernel'] = params['fc1']['kernel'].at[4, 6].set(bad)
  with pytest.raises(
    ValueError, match=r"weights of 'fc1/kernel' hold 1 non-finite value\(s\).*at index \(4, 6\)"
  ):
    criterion(params)


@pytest.mark.parametrize('criterion', ALL_CRITERIA)
def test_wrong_shape_mask_names_the_leaf(criterion):
  params = _params(0)
  mask = prunable_mask(params)
  mask['fc2']['kernel'] = jnp.ones((5, 2), bool)
  with pytest.raises(ValueError, match=r"'fc2/kernel' has shape \(5, 2\); expected \(2, 5\)"):
    criterion(params, mask=mask)


@pytest.mark.parametrize('criterion', ALL_CRITERIA)
def test_mask_missing_a_leaf_is_named(criterion):
  params = _params(0)
  mask = prunable_mask(params)
  del mask['fc1']
  with pytest.raises(ValueError, match=r"missing leaves \['fc1/bias', 'fc1/kernel'\]"):
    criterion(params, mask=mask)


@pytest.mark.parametrize('criterion', ALL_CRITERIA)
@pytest.mark.parametrize('pattern', ['bias', 'fc9', 'scale'])
@pytest.mark.parametrize('with_mask', [False, True])
def test_pattern_selecting_no_prunable_layer_lists_them(criterion, pattern, with_mask):
  params = _params(0)
  mask = prunable_mask(params) if with_mask else None
  with pytest.raises(
    ValueError,
    match=rf"pattern '{pattern}' selects no prunable layer; prunable layers: "
    r"\['conv/kernel', 'fc1/kernel', 'fc2/kernel'\]",
  ):
    criterion(params, mask=mask, pattern=pattern)


@pytest.mark.parametrize('criterion', [sparsity_mask, quality_mask])
def test_unknown_mapping_key_lists_selected_layers(criterion):
  params = _params(0)
  with pytest.raises(
    ValueError,
    match=r"given for 'fc9', which names no selected layer; "
    r"selected layers: \['conv/kernel', 'fc1/kernel', 'fc2/kernel'\]",
  ):
    criterion(params, {'fc1': 0.5, 'fc9': 0.5})
  # A layer the pattern leaves out is not a selected layer either.
  with pytest.raises(
    ValueError, match=r"given for 'conv'.*selected layers: \['fc1/kernel', 'fc2/kernel'\]"
  ):
    criterion(params, {'conv': 0.5}, pattern='^fc')


@pytest.mark.parametrize('criterion', [sparsity_mask, quality_mask])
def test_ambiguous_mapping_key_is_refused(criterion):
  params = {'blk': {'w1': jnp.ones((2, 2)), 'w2': jnp.ones((2, 2))}}
  mask = prunable_mask(params, r'w\d$')
  with pytest.raises(
    ValueError, match=r"given for 'blk', which names more than one selected layer"
  ):
    criterion(params, {'blk': 0.5}, mask=mask, pattern=r'w\d$')


# Optional cross-check with PyTorch's pruning utilities.


def test_counts_match_torch_prune(torch):
  from torch.nn.utils import prune

  params = _params(15)
  kernels = _kernels(params)
  for s in [0.1, 0.25, 0.5, 0.77]:
    mask = _leaf_dict(sparsity_mask(params, s))
    modules = {}
    for name, w in kernels.items():
      module = torch.nn.Module()
      module.weight = torch.nn.Parameter(torch.from_numpy(np.array(w)))
      prune.l1_unstructured(module, 'weight', amount=s)
      modules[name] = module
      assert int(module.weight_mask.sum()) == int(mask[name].sum()), (name, s)
      # No ties in these weights, so the masks agree entry for entry.
      np.testing.assert_array_equal(module.weight_mask.numpy().astype(bool), mask[name])
    global_mask = _leaf_dict(global_sparsity_mask(params, s))
    fresh = {}
    for name, w in kernels.items():
      module = torch.nn.Module()
      module.weight = torch.nn.Parameter(torch.from_numpy(np.array(w)))
      fresh[name] = module
    prune.global_unstructured(
      [(fresh[name], 'weight') for name in LAYERS], pruning_method=prune.L1Unstructured, amount=s
    )
    assert sum(int(m.weight_mask.sum()) for m in fresh.values()) == sum(
      int(m.sum()) for m in global_mask.values()
    )
    for name in LAYERS:
      np.testing.assert_array_equal(fresh[name].weight_mask.numpy().astype(bool), global_mask[name])


# random_mask


@pytest.mark.parametrize('seed', SEEDS)
def test_random_mask_prunes_exact_counts(seed):
  params = _params(seed)
  kernels = _kernels(params)
  for s in SPARSITIES:
    mask = random_mask(params, s, key=seed)
    _assert_bool_arrays_like(mask, params)
    for name, w in kernels.items():
      assert _count_pruned(mask)[name] == round(s * w.size), (name, s)
    assert mask['fc1']['bias'] is None and mask['norm']['scale'] is None


def test_random_mask_keeps_pruned_weights_pruned_and_counts_them():
  params = _params(1)
  kernels = _kernels(params)
  mask = None
  previous = {name: np.ones(w.shape, bool) for name, w in kernels.items()}
  for round_index, s in enumerate([0.2, 0.5, 0.5, 0.9], start=1):
    mask = random_mask(params, s, key=(7, round_index), mask=mask)
    for name, w in kernels.items():
      keep = _leaf_dict(mask)[name]
      assert not keep[~previous[name]].any(), (name, round_index)
      assert int((~keep).sum()) == round(s * w.size), (name, round_index)
      previous[name] = keep


def test_random_mask_depends_only_on_the_key_and_ignores_magnitudes(assert_trees_equal):
  params = _params(2)
  assert_trees_equal(random_mask(params, 0.5, key=3), random_mask(params, 0.5, key=3))
  assert_trees_equal(
    random_mask(params, 0.5, key=jax.random.key(3)), random_mask(params, 0.5, key=[0, 3])
  )
  # Same key, different weights: the same mask (only shapes are read).
  assert_trees_equal(random_mask(_params(9), 0.5, key=3), random_mask(params, 0.5, key=3))
  masks = [_leaf_dict(random_mask(params, 0.5, key=k))['fc1/kernel'] for k in range(5)]
  assert len({m.tobytes() for m in masks}) == 5
  # Two layers of the same shape get different draws from one key.
  twins = {'a': {'kernel': jnp.ones((20, 20))}, 'b': {'kernel': jnp.ones((20, 20))}}
  mask = random_mask(twins, 0.5, key=0)
  assert not np.array_equal(mask['a']['kernel'], mask['b']['kernel'])


def test_random_mask_is_not_magnitude_pruning():
  # Sorted weights: magnitude pruning at 50 % removes exactly the first half.
  params = {'fc': {'kernel': jnp.arange(1.0, 1001.0).reshape(40, 25)}}
  keep = np.asarray(random_mask(params, 0.5, key=0)['fc']['kernel']).ravel()
  assert 200 < int((~keep[:500]).sum()) < 300


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    (
      {'sparsity': 1.2, 'key': 0},
      r"sparsity for 'conv/kernel' is 1.2; expected a value in \[0, 1\]",
    ),
    ({'sparsity': {'fc9': 0.5}, 'key': 0}, "sparsity given for 'fc9'"),
    ({'sparsity': 0.5, 'key': -3}, 'key is -3; expected a non-negative int'),
    ({'sparsity': 0.5, 'key': 0.5}, 'key is 0.5'),
  ],
)
def test_random_mask_bad_input(kwargs, message):
  with pytest.raises(ValueError, match=message):
    random_mask(_params(0), **kwargs)


# --- the registry --------------------------------------------------------------


@pytest.fixture
def scratch_criteria():
  """Names registered by a test, taken out of the registry again afterwards."""
  names = []
  yield names
  for name in names:
    CRITERIA.pop(name, None)


def _keep_largest(weights, rng):
  del rng
  return np.abs(weights)


@pytest.mark.parametrize(
  ('name', 'message'),
  [('', "criterion name is ''"), (5, 'criterion name is 5'), (b'x', "criterion name is b'x'")],
)
def test_a_criterion_name_must_be_a_non_empty_string(name, message, scratch_criteria):
  scratch_criteria.append(name)
  with pytest.raises(ValueError, match=message):
    register_criterion(name, _keep_largest)
  assert name not in CRITERIA


def test_register_criterion_refuses_a_taken_name_a_bad_selection_and_a_non_function(
  scratch_criteria,
):
  with pytest.raises(ValueError, match="criterion 'sparsity' is already registered"):
    register_criterion('sparsity', _keep_largest)
  scratch_criteria.append('scratch')
  with pytest.raises(ValueError, match="selection is 'nm'; expected 'count' or 'threshold'"):
    register_criterion('scratch', _keep_largest, selection='nm')
  with pytest.raises(ValueError, match="score of criterion 'scratch' is 3"):
    register_criterion('scratch', 3)
  assert 'scratch' not in CRITERIA


def test_selection_and_random_are_keyword_only_and_name_and_score_by_keyword(scratch_criteria):
  scratch_criteria.append('scratch')
  with pytest.raises(TypeError):
    register_criterion('scratch', _keep_largest, 'threshold')
  criterion = register_criterion(name='scratch', score=_keep_largest, selection='threshold')
  assert criterion == CRITERIA['scratch']
  assert (criterion.selection, criterion.random) == ('threshold', False)


@pytest.mark.parametrize(
  ('name', 'selection', 'fitting'),
  [('quality', 'count', "['random', 'sparsity']"), ('sparsity', 'threshold', "['quality']")],
)
def test_a_criterion_of_the_other_selection_lists_the_fitting_ones(name, selection, fitting):
  message = f'criterion {name!r} selects by .*, not by {selection}; .*: {re.escape(fitting)}$'
  with pytest.raises(ValueError, match=message):
    get_criterion(name, selection)


def test_get_criterion_compares_selections_by_value():
  # A selection read from a file or a command line is an equal string, not the same object.
  selection = ''.join(['thre', 'shold'])
  assert selection is not CRITERIA['quality'].selection  # equal, not the same object
  assert get_criterion('quality', selection).name == 'quality'


@pytest.mark.parametrize('shape', [(72,), (1, 72), (3, 3, 2, 4, 1)])
def test_scores_of_another_shape_name_the_criterion_and_the_layer(shape, scratch_criteria):
  # (72,) sorts after the kernel's (3, 3, 2, 4) and (1, 72) before it: both are refused.
  scratch_criteria.append('flat')
  register_criterion('flat', lambda w, rng: np.abs(w).reshape(shape))
  message = rf"criterion 'flat' scored 'conv/kernel' with shape {re.escape(str(shape))}"
  with pytest.raises(ValueError, match=message):
    sparsity_mask(_params(0), 0.5, criterion='flat')


def test_an_empty_key_is_refused():
  with pytest.raises(ValueError, match=r'key is array\(\[\]'):
    random_mask(_params(0), 0.5, key=np.array([], dtype=np.int64))


def test_criterion_mask_compares_selections_by_value(scratch_criteria):
  # A selection built at run time is an equal string, not the interned literal: the
  # criterion still selects by threshold (quality_mask), not by count.
  scratch_criteria.append('magnitude_by_std')
  register_criterion('magnitude_by_std', _keep_largest, selection=''.join(['thres', 'hold']))
  params = {'fc': {'kernel': np.array([[0.3, -0.1], [0.2, 0.4]])}}
  built = criteria_module.criterion_mask(params, 'magnitude_by_std', 1.0)['fc']['kernel']
  literal = criteria_module.criterion_mask(params, 'quality', 1.0)['fc']['kernel']
  np.testing.assert_array_equal(np.asarray(built), np.asarray(literal))


@pytest.mark.parametrize('function', ['sparsity_mask', 'global_sparsity_mask', 'quality_mask'])
def test_mask_options_are_keyword_only(function):
  params = {'fc': {'kernel': np.array([[0.3, -0.1], [0.2, 0.4]])}}
  fn = getattr(criteria_module, function)
  with pytest.raises(TypeError):
    fn(params, 0.5, 'random')
  fn(params, 0.5)


def test_a_negative_key_is_refused_by_name():
  params = {'fc': {'kernel': np.zeros((4, 5))}}
  for key in (-1, [0, -1]):
    with pytest.raises(ValueError, match=r'key is .*; expected a non-negative int'):
      random_mask(params, 0.3, key=key)


def test_criterion_mask_options_are_keyword_only():
  params = {'fc': {'kernel': np.array([[0.3, -0.1], [0.2, 0.4]])}}
  with pytest.raises(TypeError):
    criteria_module.criterion_mask(params, 'random', 0.5, 0)
  criteria_module.criterion_mask(params, 'random', 0.5, key=0)


def test_std_of_compares_by_value():
  # 'all' read from a file is an equal string, not the interned literal.
  params = {'fc': {'kernel': np.array([[0.3, -0.1], [0.2, 4.0]])}}
  mask = {'fc': {'kernel': np.array([[True, True], [True, False]])}}
  built = quality_mask(params, 1.0, std_of=''.join(['a', 'll']), mask=mask)['fc']['kernel']
  literal = quality_mask(params, 1.0, std_of='all', mask=mask)['fc']['kernel']
  kept = quality_mask(params, 1.0, std_of='kept', mask=mask)['fc']['kernel']
  np.testing.assert_array_equal(np.asarray(built), np.asarray(literal))
  assert not np.array_equal(np.asarray(literal), np.asarray(kept))  # the two samples differ


def test_the_fitting_criteria_are_listed_for_a_selection_built_at_run_time():
  selection = ''.join(['co', 'unt'])
  with pytest.raises(ValueError, match=re.escape("by count: ['random', 'sparsity']")):
    get_criterion('quality', selection)


def test_an_unknown_criterion_name_is_named():
  with pytest.raises(ValueError, match=r"criterion is 'no_such'; expected one of \['quality'"):
    get_criterion('no_such')


def test_a_quality_mask_with_a_current_mask_is_boolean():
  params = {'fc': {'kernel': np.array([[0.3, -0.1], [0.2, 0.4]])}}
  mask = {'fc': {'kernel': np.array([[True, True], [True, False]])}}
  new = np.asarray(quality_mask(params, 0.6, mask=mask)['fc']['kernel'])  # |w| >= 0.112
  assert new.dtype == np.bool_
  np.testing.assert_array_equal(new, [[True, False], [True, False]])


def test_weights_already_pruned_stay_pruned_under_a_signed_score(scratch_criteria):
  # Scores may be negative: an already-pruned weight must rank before all of them,
  # or it would be kept again while a kept weight is pruned in its place.
  scratch_criteria.append('smallest_kept')
  register_criterion('smallest_kept', lambda w, rng: -np.abs(w))
  params = {'fc': {'kernel': np.array([[0.3, -0.1, 0.2, 0.4]])}}
  mask = {'fc': {'kernel': np.array([[True, True, True, False]])}}
  new = sparsity_mask(params, 0.5, criterion='smallest_kept', mask=mask)['fc']['kernel']
  np.testing.assert_array_equal(np.asarray(new), [[False, True, True, False]])
