"""Tests for pruning.nm against a loop-over-groups numpy/Python reference.

The reference walks every output unit (and kernel position) and every group
of M consecutive inputs along the kernel's input axis (axis 0 of a Dense
``(in, out)`` kernel, axis 2 of a Conv ``(kh, kw, in, out)`` kernel) and
sorts ``(magnitude, position in group)`` pairs with ``sorted``: the
documented tie rule (earlier in the group pruned first) spelled out
independently of the implementation's stable argsort and of the device
version's comparison counting.
"""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import NMValidity, nm_keep, nm_mask, nm_validity, prunable_mask
from pruning.nm import parse_nm

LAYERS = ['conv/kernel', 'conv1d/kernel', 'fc/kernel']
NM = [(2, 4), (1, 4), (0, 4), (3, 4), (3, 8), (1, 2)]
SEEDS = [0, 1]
jit_keep = jax.jit(nm_keep, static_argnums=(1, 2), static_argnames='axis')


def _params(seed, ties=False, dtype=np.float32):
  """A Conv (3, 3, 8, 5), a 1-D Conv (3, 8, 4) and a Dense (16, 6) kernel, biases, a norm scale.

  With ``ties`` the weights are rounded to one decimal, so magnitudes repeat
  within groups (w and -w included) and zeros appear.
  """
  rng = np.random.default_rng(seed)

  def w(*shape):
    x = rng.normal(size=shape)
    return jnp.asarray(np.round(x, 1) if ties else x, dtype=dtype)

  return {
    'fc': {'kernel': w(16, 6), 'bias': w(6)},
    'conv': {'kernel': w(3, 3, 8, 5), 'bias': w(5)},
    'conv1d': {'kernel': w(3, 8, 4), 'bias': w(4)},
    'norm': {'scale': w(8)},
  }


def _kernels(tree):
  return {name: np.asarray(tree[name.split('/')[0]]['kernel']) for name in LAYERS}


def _mask_from(keeps):
  """A mask pytree for ``_params`` from ``{leaf path: keep array}``."""
  return {
    'fc': {'kernel': jnp.asarray(keeps['fc/kernel']), 'bias': None},
    'conv': {'kernel': jnp.asarray(keeps['conv/kernel']), 'bias': None},
    'conv1d': {'kernel': jnp.asarray(keeps['conv1d/kernel']), 'bias': None},
    'norm': {'scale': None},
  }


def _ref_groups(shape, m):
  """Index tuples of every group: M consecutive inputs (axis -2) of one output, one position."""
  *lead, n_in, n_out = shape
  for pos in itertools.product(*(range(d) for d in lead)):
    for out in range(n_out):
      for start in range(0, n_in, m):
        yield [(*pos, i, out) for i in range(start, start + m)]


def _ref_nm_keep(w, n, m, prev=None):
  """Per group: the already pruned stay pruned, then the smallest, earlier first, up to M - N."""
  w = np.asarray(w, np.float64)
  keep = np.ones(w.shape, bool) if prev is None else np.array(prev, bool)
  for group in _ref_groups(w.shape, m):
    already = sum(not keep[idx] for idx in group)
    candidates = sorted((abs(float(w[idx])), k) for k, idx in enumerate(group) if keep[idx])
    for _, k in candidates[: max(m - n - already, 0)]:
      keep[group[k]] = False
  return keep


def _ref_kept_per_group(keep, m):
  return [sum(bool(keep[idx]) for idx in group) for group in _ref_groups(keep.shape, m)]


def _random_prev(seed, shapes, rate=0.4):
  """A prior mask pruning each weight with probability ``rate``, and inputs 0-7 of output 0.

  The forced block empties a group of every M <= 8: some groups lose more than M - N.
  """
  rng = np.random.default_rng(100 + seed)
  out = {}
  for name, shape in shapes.items():
    keep = rng.random(shape) >= rate
    keep[(0,) * (len(shape) - 2) + (slice(0, 8), 0)] = False
    out[name] = keep
  return out


def test_reference_data_has_ties():
  """Guards the tie tests: rounded weights repeat magnitudes inside groups of 4."""
  fc = np.abs(_kernels(_params(0, ties=True))['fc/kernel'])
  groups = fc.reshape(4, 4, 6)
  repeats = sum(np.unique(groups[g, :, o]).size < 4 for g in range(4) for o in range(6))
  assert repeats >= 6


# nm_mask


@pytest.mark.parametrize(('n', 'm'), NM)
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('seed', SEEDS)
def test_nm_mask_matches_reference(seed, ties, n, m, assert_trees_equal):
  params = _params(seed, ties)
  mask = nm_mask(params, n, m)
  expected = {name: _ref_nm_keep(w, n, m) for name, w in _kernels(params).items()}
  assert_trees_equal(mask, _mask_from(expected))


@pytest.mark.parametrize(('n', 'm'), NM)
def test_every_group_keeps_exactly_n(n, m):
  keep = _kernels(nm_mask(_params(0, ties=True), n, m))
  # Groups spelled out per layout: rows of Dense (in, out), channels of HWIO and WIO.
  np.testing.assert_array_equal(keep['fc/kernel'].reshape(16 // m, m, 6).sum(axis=1), n)
  np.testing.assert_array_equal(keep['conv/kernel'].reshape(3, 3, 8 // m, m, 5).sum(axis=3), n)
  np.testing.assert_array_equal(keep['conv1d/kernel'].reshape(3, 8 // m, m, 4).sum(axis=2), n)


def test_groups_run_along_the_input_axis():
  # Per column (output unit) the two largest of each 4 rows (inputs) stay: here the
  # large weights sit in rows 0 and 1, which grouping along outputs would not keep.
  kernel = jnp.array([[9.0, 8.0, 7.0, 6.0], [5.0, 4.0, 3.0, 2.0], [0.1] * 4, [0.2] * 4])
  np.testing.assert_array_equal(
    nm_mask({'fc': {'kernel': kernel}}, 2, 4)['fc']['kernel'],
    [[True] * 4, [True] * 4, [False] * 4, [False] * 4],
  )


def test_ties_prune_the_weight_earlier_in_the_group_first():
  column = jnp.array([[0.1], [0.3], [-0.3], [0.3], [0.5], [-0.5], [0.5], [-0.5]])
  params = {'fc': {'kernel': column}}
  for (n, m), kept_rows in {
    (2, 4): [2, 3, 6, 7],  # 0.1 and the first 0.3; two of four equal 0.5s
    (1, 4): [3, 7],
    (3, 4): [1, 2, 3, 5, 6, 7],
    (3, 8): [5, 6, 7],  # one group: 0.1, the three 0.3s, then the first 0.5
  }.items():
    expected = np.isin(np.arange(8), kept_rows)[:, None]
    np.testing.assert_array_equal(nm_mask(params, n, m)['fc']['kernel'], expected, f'{n}:{m}')
    np.testing.assert_array_equal(jit_keep(column, n, m), expected, f'{n}:{m}')


def test_magnitudes_one_float32_step_apart_are_not_a_tie():
  # 1 + 2**-23 is the next float32 after 1: ranked in anything coarser than float32,
  # the two would tie and row 0, the earlier, would be pruned.
  column = jnp.array([[1.0 + 2**-23], [1.0], [3.0], [-3.0]], dtype=jnp.float32)
  expected = [[True], [False], [True], [True]]
  np.testing.assert_array_equal(nm_mask({'fc': {'kernel': column}}, 3, 4)['fc']['kernel'], expected)
  np.testing.assert_array_equal(jit_keep(column, 3, 4), expected)


@pytest.mark.parametrize(('n', 'm'), NM)
@pytest.mark.parametrize('seed', SEEDS)
def test_nm_mask_with_previous_mask_matches_reference(seed, n, m, assert_trees_equal):
  params = _params(seed, ties=True)
  kernels = _kernels(params)
  prev = _random_prev(seed, {name: w.shape for name, w in kernels.items()})
  mask = nm_mask(params, n, m, mask=_mask_from(prev))
  expected = {name: _ref_nm_keep(w, n, m, prev[name]) for name, w in kernels.items()}
  assert_trees_equal(mask, _mask_from(expected))
  for name, keep in _kernels(mask).items():
    assert not (keep & ~prev[name]).any(), f'{name}: a pruned weight came back'
    before = _ref_kept_per_group(prev[name], m)
    # A group that lost more than M - N before keeps only its survivors (fewer than N).
    assert _ref_kept_per_group(keep, m) == [min(n, k) for k in before], name
    assert any(k < n for k in before) or n == 0, f'{name}: the prior mask tests no short group'


def test_a_group_that_lost_more_than_m_minus_n_keeps_fewer_than_n():
  params = {'fc': {'kernel': jnp.array([[4.0, 4.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0]])}}
  prev = {'fc': {'kernel': jnp.array([[False, True], [False, True], [False, True], [True, True]])}}
  np.testing.assert_array_equal(
    nm_mask(params, 2, 4, mask=prev)['fc']['kernel'],
    [[False, True], [False, True], [False, False], [True, False]],
  )


def test_pruned_weights_stay_pruned_even_if_large():
  params = _params(0)
  first = nm_mask(params, 3, 4)
  grown = jax.tree.map(lambda w: w, params)
  grown['fc']['kernel'] = jnp.where(first['fc']['kernel'], params['fc']['kernel'], 1e6)
  second = nm_mask(grown, 2, 4, mask=first)
  np.testing.assert_array_equal(second['fc']['kernel'] & ~first['fc']['kernel'], False)
  np.testing.assert_array_equal(
    second['fc']['kernel'], _ref_nm_keep(params['fc']['kernel'], 2, 4, first['fc']['kernel'])
  )


@pytest.mark.parametrize(('n', 'm'), NM)
def test_nm_mask_is_idempotent(n, m, assert_trees_equal):
  params = _params(1, ties=True)
  mask = nm_mask(params, n, m)
  assert_trees_equal(nm_mask(params, n, m, mask=mask), mask)


def test_pattern_leaves_other_layers_with_their_current_mask(assert_trees_equal):
  params = _params(2)
  kernels = _kernels(params)
  dense = {name: np.ones(w.shape, bool) for name, w in kernels.items()}
  expected = {**dense, 'fc/kernel': _ref_nm_keep(kernels['fc/kernel'], 2, 4)}
  assert_trees_equal(nm_mask(params, 2, 4, pattern='^fc/'), _mask_from(expected))
  prev = _random_prev(2, {name: w.shape for name, w in kernels.items()})
  expected = {
    **prev,
    'conv/kernel': _ref_nm_keep(kernels['conv/kernel'], 1, 4, prev['conv/kernel']),
  }
  assert_trees_equal(
    nm_mask(params, 1, 4, mask=_mask_from(prev), pattern=r'^conv/'), _mask_from(expected)
  )


class _FlaxNet(nnx.Module):
  def __init__(self, rngs):
    self.stem = nnx.Conv(3, 8, kernel_size=(3, 3), rngs=rngs)  # 3 inputs: not 2:4-able
    self.conv = nnx.Conv(8, 4, kernel_size=(3, 3), rngs=rngs)
    self.fc = nnx.Linear(8, 4, rngs=rngs)


def _flax_state():
  """``_FlaxNet``'s Param state: flax's own kernel shapes, values from numpy.

  ``eval_shape`` skips the initialisers, which would compile for seconds.
  """
  state = nnx.state(nnx.eval_shape(lambda: _FlaxNet(nnx.Rngs(0))), nnx.Param)
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), state)


def test_nm_mask_on_nnx_state_groups_flax_input_axes():
  state = _flax_state()
  with pytest.raises(ValueError, match=r"'stem/kernel' of shape \(3, 3, 3, 8\) has 3 inputs"):
    nm_mask(state, 2, 4)
  mask = nm_mask(state, 2, 4, pattern='^(conv|fc)/')
  assert isinstance(mask, nnx.State)
  assert mask['fc']['bias'] is None
  np.testing.assert_array_equal(mask['stem']['kernel'], True)
  conv, fc = state['conv']['kernel'].get_value(), state['fc']['kernel'].get_value()
  assert conv.shape == (3, 3, 8, 4) and fc.shape == (8, 4)  # HWIO and (in, out)
  np.testing.assert_array_equal(mask['conv']['kernel'], _ref_nm_keep(conv, 2, 4))
  np.testing.assert_array_equal(mask['fc']['kernel'], _ref_nm_keep(fc, 2, 4))
  # y = x @ kernel: every output sees 2 of each 4 consecutive inputs.
  np.testing.assert_array_equal(np.asarray(mask['fc']['kernel']).reshape(2, 4, 4).sum(1), 2)


# nm_keep: the device version


@pytest.mark.parametrize(('n', 'm'), NM)
@pytest.mark.parametrize('prior', [False, True])
def test_nm_keep_jitted_equals_host(n, m, prior):
  for seed, ties in itertools.product(SEEDS, [False, True]):
    params = _params(seed, ties)
    kernels = _kernels(params)
    prev = _random_prev(seed, {name: w.shape for name, w in kernels.items()}) if prior else None
    host = _kernels(nm_mask(params, n, m, mask=None if prev is None else _mask_from(prev)))
    for name, w in kernels.items():
      already = None if prev is None else ~jnp.asarray(prev[name])
      device = jit_keep(jnp.asarray(w), n, m, already)
      assert device.dtype == jnp.bool_ and device.shape == w.shape, name
      np.testing.assert_array_equal(device, host[name], f'{name} seed {seed} ties {ties}')


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_nm_keep_in_low_precision_equals_host(dtype):
  # Low precision rounds many weights to equal values: ties the host must break alike.
  params = _params(3, dtype=dtype)
  kernels = _kernels(params)
  host = _kernels(nm_mask(params, 2, 4))
  for name, w in kernels.items():
    assert np.unique(np.abs(w)).size < w.size, name
    np.testing.assert_array_equal(jit_keep(jnp.asarray(w), 2, 4), host[name], name)
    np.testing.assert_array_equal(host[name], _ref_nm_keep(w, 2, 4), name)


def test_nm_keep_on_a_large_tied_kernel_equals_host():
  rng = np.random.default_rng(7)
  w = jnp.asarray(rng.integers(-3, 4, size=(256, 64)), dtype=jnp.float32)  # 7 values only
  already = jnp.asarray(rng.random((256, 64)) < 0.2)
  host = nm_mask({'kernel': w}, 2, 8, mask={'kernel': ~already})['kernel']
  np.testing.assert_array_equal(jit_keep(w, 2, 8, already), host)
  np.testing.assert_array_equal(jit_keep(w, 3, 8), nm_mask({'kernel': w}, 3, 8)['kernel'])


def test_nm_keep_axis_chooses_the_input_axis():
  w = _kernels(_params(4, ties=True))['fc/kernel']
  expected = jit_keep(w, 2, 4)
  np.testing.assert_array_equal(jit_keep(w, 2, 4, axis=0), expected)
  # A torch-style (out, in) weight: groups along axis 1.
  np.testing.assert_array_equal(jit_keep(w.T, 2, 4, axis=1), expected.T)
  np.testing.assert_array_equal(jit_keep(w.T, 2, 4, axis=-1), expected.T)
  conv = _kernels(_params(4))['conv/kernel']
  np.testing.assert_array_equal(jit_keep(conv, 1, 4, axis=2), jit_keep(conv, 1, 4))


def test_nm_keep_compiles_once_for_new_weights_and_masks(compile_counter):
  step = jax.jit(lambda w, pruned: nm_keep(w, 2, 4, pruned))
  w = _kernels(_params(5))['conv/kernel']
  step(w, jnp.zeros(w.shape, bool)).block_until_ready()
  first = compile_counter.count
  step(w * 2, jnp.asarray(_random_prev(5, {'w': w.shape})['w'])).block_until_ready()
  assert compile_counter.count == first


# nm_validity


@pytest.mark.parametrize(('n', 'm'), NM)
def test_nm_validity_of_an_nm_mask_is_all_valid(n, m):
  report = nm_validity(nm_mask(_params(0), n, m), n, m)
  assert list(report) == ['conv/kernel', 'conv1d/kernel', 'fc/kernel']
  assert report['fc/kernel'] == NMValidity(groups=16 // m * 6, valid_groups=16 // m * 6)
  assert report['conv/kernel'] == NMValidity(groups=9 * 8 // m * 5, valid_groups=9 * 8 // m * 5)
  assert all(r.valid and r.share == 1.0 for r in report.values())


@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize(('n', 'm'), [(2, 4), (3, 8), (1, 2)])
def test_nm_validity_counts_groups_like_the_reference(seed, n, m):
  prev = _random_prev(seed, {name: w.shape for name, w in _kernels(_params(0)).items()}, rate=0.5)
  report = nm_validity(_mask_from(prev), n, m)
  for name, keep in prev.items():
    kept = _ref_kept_per_group(keep, m)
    valid = sum(k <= n for k in kept)
    assert report[name] == (len(kept), valid), name
    assert 0 < valid < len(kept), f'{name}: a mixed mask must have valid and invalid groups'
    assert not report[name].valid
    assert report[name].share == valid / len(kept)


def test_nm_validity_of_a_dense_mask_and_a_pattern():
  params = _params(0)
  report = nm_validity(prunable_mask(params), 2, 4, pattern='^fc/')
  assert report == {'fc/kernel': NMValidity(groups=24, valid_groups=0)}
  assert report['fc/kernel'].share == 0.0 and not report['fc/kernel'].valid
  state = _flax_state()
  mask = nm_mask(state, 1, 4, pattern='^fc/')
  assert nm_validity(mask, 1, 4, pattern='^fc/')['fc/kernel'].valid


# errors


@pytest.mark.parametrize(
  ('n', 'm'),
  [(4, 4), (5, 4), (-1, 4), (0, 0), (2.0, 4), (2, 4.0), (True, 4), (2, '4'), (None, 4)],
)
def test_bad_n_m_are_rejected_everywhere(n, m):
  params = _params(0)
  match = rf'N:M is {n!r}:{m!r}; expected integers with 0 <= N < M'
  with pytest.raises(ValueError, match=match):
    nm_mask(params, n, m)
  with pytest.raises(ValueError, match=match):
    nm_keep(params['fc']['kernel'], n, m)
  with pytest.raises(ValueError, match=match):
    nm_validity(prunable_mask(params), n, m)


def test_numpy_integers_are_accepted():
  params = _params(0)
  assert nm_mask(params, np.int64(2), np.int32(4))['fc']['kernel'].sum() == 8 * 6


def test_nm_keep_needs_static_n_and_m():
  w = _kernels(_params(0))['fc/kernel']
  with pytest.raises(ValueError, match='pass n and m as static arguments'):
    jax.jit(nm_keep)(w, 2, 4)


@pytest.mark.parametrize(('n', 'm'), [(2, 4), (1, 3)])
def test_a_layer_whose_inputs_m_does_not_divide_is_named(n, m):
  params = _params(0)
  params['stem'] = {'kernel': jnp.ones((3, 3, 3, 8))}
  if m == 3:
    pattern, name, shape, inputs = '^fc/', 'fc/kernel', (16, 6), 16
  else:
    pattern, name, shape, inputs = 'kernel', 'stem/kernel', (3, 3, 3, 8), 3
  message = (
    rf"layer '{name}' of shape \({', '.join(map(str, shape))}\) has {inputs} inputs "
    rf'along axis {len(shape) - 2}, not a multiple of M={m}.*pattern='
  )
  with pytest.raises(ValueError, match=message):
    nm_mask(params, n, m, pattern=pattern)
  with pytest.raises(ValueError, match=rf"mask leaf '{name}' of shape .* not a multiple of M={m}"):
    nm_validity(prunable_mask(params), n, m, pattern=pattern)
  with pytest.raises(ValueError, match=rf'weights of shape .* not a multiple of M={m}'):
    nm_keep(params[name.split('/')[0]]['kernel'], n, m)


def test_a_pattern_that_selects_no_layer():
  params = _params(0)
  with pytest.raises(ValueError, match="pattern 'nothing' selects no prunable layer"):
    nm_mask(params, 2, 4, pattern='nothing')
  with pytest.raises(ValueError, match="pattern 'bias' selects no prunable layer"):
    nm_mask(params, 2, 4, pattern='bias')  # biases are never prunable
  with pytest.raises(ValueError, match="pattern 'nothing' selects no mask leaf"):
    nm_validity(prunable_mask(params), 2, 4, pattern='nothing')


def test_non_finite_weights_and_misfit_masks_are_named():
  params = _params(0)
  params['fc']['kernel'] = params['fc']['kernel'].at[5, 1].set(jnp.nan)
  with pytest.raises(ValueError, match=r"weights of 'fc/kernel' hold 1 non-finite value"):
    nm_mask(params, 2, 4)
  params = _params(0)
  bad = _mask_from({name: np.ones(w.shape, bool) for name, w in _kernels(params).items()})
  bad['fc']['kernel'] = jnp.ones((16, 5), bool)
  with pytest.raises(ValueError, match=r"mask leaf 'fc/kernel' has shape \(16, 5\)"):
    nm_mask(params, 2, 4, mask=bad)


def test_nm_keep_rejects_what_it_cannot_group():
  w = _kernels(_params(0))['fc/kernel']
  with pytest.raises(ValueError, match=r'already_pruned has shape \(16, 5\).*\(16, 6\)'):
    nm_keep(w, 2, 4, jnp.zeros((16, 5), bool))
  with pytest.raises(ValueError, match=r'already_pruned .* dtype float32; expected bool'):
    nm_keep(w, 2, 4, jnp.zeros((16, 6)))
  with pytest.raises(ValueError, match=r'weights of shape \(16,\) into N:M groups'):
    nm_keep(w[:, 0], 2, 4)
  with pytest.raises(ValueError, match='weights have dtype int32; expected a floating dtype'):
    nm_keep(jnp.ones((4, 2), jnp.int32), 2, 4)
  with pytest.raises(ValueError, match=r'axis 2 is out of range for weights of shape \(16, 6\)'):
    nm_keep(w, 2, 4, axis=2)


def test_nm_validity_rejects_non_bool_leaves():
  with pytest.raises(ValueError, match="mask leaf 'fc/kernel' has dtype float32; expected a bool"):
    nm_validity({'fc': {'kernel': jnp.ones((4, 2))}}, 2, 4)


@pytest.mark.parametrize('axis', [3, -3])
def test_nm_keep_refuses_an_axis_beyond_either_end(axis):
  # Axes 3 and -3 of a 2-D kernel would wrap to axis 1 if only one bound were checked.
  w = jnp.ones((8, 8))
  with pytest.raises(
    ValueError, match=rf'axis {axis} is out of range for weights of shape \(8, 8\)'
  ):
    nm_keep(w, 2, 4, axis=axis)


def test_nm_validity_refuses_a_leaf_of_strings():
  # A dtype that bool does not cast to safely ('<U1' is not > bool in numpy) is refused as well.
  with pytest.raises(ValueError, match="mask leaf 'fc/kernel' has dtype <U1; expected a bool"):
    nm_validity({'fc': {'kernel': np.full((4, 2), 'x')}}, 2, 4)


def test_nm_validity_lists_only_real_mask_leaves_when_the_pattern_misses():
  mask = {'fc': {'kernel': jnp.ones((4, 2), bool), 'bias': None}}
  with pytest.raises(ValueError, match=r"selects no mask leaf; mask leaves: \['fc/kernel'\]$"):
    nm_validity(mask, 2, 4, pattern='nothing')


def test_nm_keep_refuses_an_already_pruned_that_would_broadcast():
  # (4, 3) broadcasts against a (4, 1) kernel: only the shape check stops it.
  with pytest.raises(ValueError, match=r'already_pruned has shape \(4, 3\).*\(4, 1\)'):
    nm_keep(jnp.ones((4, 1)), 2, 4, jnp.zeros((4, 3), bool))


def test_a_layer_without_groups_counts_as_valid():
  # A kernel with no output unit has no group: nothing breaks the N:M pattern.
  report = nm_validity({'fc': {'kernel': jnp.ones((4, 0), bool)}}, 2, 4)['fc/kernel']
  assert report == (0, 0) and report.valid and report.share == 1.0


def test_a_layer_of_many_groups_all_valid_is_valid():
  # 300 groups, every one keeping 2 of 4: counts past CPython's small-int cache compare by value.
  mask = {'fc': {'kernel': jnp.tile(jnp.array([[True], [False], [True], [False]]), (1, 300))}}
  report = nm_validity(mask, 2, 4)['fc/kernel']
  assert report == (300, 300) and report.valid


def test_the_options_are_keyword_only():
  # axis, mask and pattern passed by position would be read as something else.
  w = jnp.ones((4, 2))
  with pytest.raises(TypeError):
    nm_keep(w, 2, 4, None, -2)
  with pytest.raises(TypeError):
    nm_mask({'fc': {'kernel': w}}, 2, 4, None)
  with pytest.raises(TypeError):
    nm_validity({'fc': {'kernel': w > 0}}, 2, 4, 'fc')


@pytest.mark.parametrize(
  ('nm', 'expected'),
  [('2:4', (2, 4)), (' 1 : 8 ', (1, 8)), ((3, 4), (3, 4)), ([np.int64(1), 2], (1, 2))],
)
def test_parse_nm_reads_text_and_pairs(nm, expected):
  pair = parse_nm(nm)
  assert pair == expected
  assert all(type(x) is int for x in pair)


@pytest.mark.parametrize(
  ('nm', 'message'),
  [
    ('2-4', r"nm is '2-4'; expected 'N:M' \(e.g. '2:4'\) or a pair \(N, M\)$"),
    ('2:4:8', r"nm is '2:4:8'; expected 'N:M'"),
    ('a:4', r"nm is 'a:4'; expected 'N:M'"),
    ('-1:4', r"nm is '-1:4'; expected 'N:M'"),
    (None, r"nm is None; expected 'N:M'"),
    ((2, 4, 8), r"nm is \(2, 4, 8\); expected 'N:M'"),
    ('2:2', r"^nm is '2:2'; expected 1 <= N < M$"),
    ('4:2', r"^nm is '4:2'; expected 1 <= N < M$"),
    ('0:4', r"^nm is '0:4'; expected 1 <= N < M$"),
    ((0, 4), r'^nm is \(0, 4\); expected 1 <= N < M$'),
    ((4, 4), r'N:M is 4:4; expected integers with 0 <= N < M'),
    ((2.0, 4), r'N:M is 2.0:4; expected integers'),
  ],
)
def test_parse_nm_refuses_what_is_not_n_of_m(nm, message):
  with pytest.raises(ValueError, match=message):
    parse_nm(nm)


@pytest.mark.parametrize('nm', [(2,), (), [4]])
def test_parse_nm_refuses_a_pair_of_fewer_than_two(nm):
  with pytest.raises(ValueError, match=rf"^nm is {re.escape(repr(nm))}; expected 'N:M'"):
    parse_nm(nm)


@pytest.mark.parametrize('nm', ['24', '4', ''])
def test_parse_nm_refuses_text_without_a_colon(nm):
  with pytest.raises(ValueError, match=rf"^nm is {re.escape(repr(nm))}; expected 'N:M'"):
    parse_nm(nm)
