"""Tests for masked_optimizer: pruned weights stay exactly dead under any optax optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pruning
from pruning import get_mask, masked_optimizer, replace_mask, set_frozen

SHAPES = {'fc1': (6, 5), 'fc2': (5, 3)}

OPTIMIZERS = {
  'sgd': lambda: optax.sgd(0.05),
  'momentum': lambda: optax.sgd(0.05, momentum=0.9),
  'nesterov': lambda: optax.sgd(0.05, momentum=0.9, nesterov=True),
  'adam': lambda: optax.adam(1e-2),
  'adamw': lambda: optax.adamw(1e-2, weight_decay=0.1),
  'rmsprop': lambda: optax.rmsprop(1e-2, momentum=0.5),
  'lamb': lambda: optax.lamb(1e-2, weight_decay=0.1),
  'sgd_weight_decay': lambda: optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05)),
  'clip_chain': lambda: optax.chain(optax.clip_by_global_norm(0.1), optax.adam(1e-2)),
  'inject_hyperparams': lambda: optax.inject_hyperparams(optax.adam)(learning_rate=1e-2),
}
# Optimizers whose state holds per-weight statistics (moments, traces).
STATEFUL = set(OPTIMIZERS) - {'sgd', 'sgd_weight_decay'}


def make_params(seed: int = 0) -> dict:
  keys = jax.random.split(jax.random.key(seed), 4)
  return {
    name: {
      'kernel': jax.random.normal(keys[2 * i], shape),
      'bias': 0.1 * jax.random.normal(keys[2 * i + 1], shape[-1:]),
    }
    for i, (name, shape) in enumerate(SHAPES.items())
  }


def make_mask(seed: int = 1) -> dict:
  rng = np.random.default_rng(seed)
  return {
    name: {'kernel': jnp.asarray(rng.random(shape) < 0.5), 'bias': None}
    for name, shape in SHAPES.items()
  }


def loss_fn(params, x, y):
  hidden = jnp.tanh(x @ params['fc1']['kernel'] + params['fc1']['bias'])
  out = hidden @ params['fc2']['kernel'] + params['fc2']['bias']
  return jnp.mean((out - y) ** 2)


def make_batch(seed: int = 2):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (16, 6)), jax.random.normal(ky, (16, 3))


class Step:
  """A jitted train step that counts how often it is traced."""

  def __init__(self, tx):
    self.traces = 0

    def step(params, state, x, y):
      self.traces += 1
      loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss

    self.jitted = jax.jit(step)

  def __call__(self, *args):
    return self.jitted(*args)


def kernel_statistics(state, shape):
  """Every float array in an optimizer state with a kernel's shape (moments, traces)."""
  return [
    np.asarray(leaf)
    for leaf in jax.tree.leaves(state)
    if np.shape(leaf) == shape and jnp.issubdtype(leaf.dtype, jnp.floating)
  ]


def assert_pruned_dead(params, state, mask, *, stateful: bool):
  for name in SHAPES:
    pruned = ~np.asarray(mask[name]['kernel'])
    kernel = np.asarray(params[name]['kernel'])
    assert (kernel[pruned] == 0.0).all(), f'{name}/kernel: pruned weights are not exactly 0.0'
    stats = kernel_statistics(state.inner_state, SHAPES[name])
    if stateful:
      assert stats, f'{name}/kernel: no per-weight optimizer statistics found'
    for stat in stats:
      assert (stat[pruned] == 0.0).all(), f'{name}/kernel: optimizer moments of pruned weights'


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_pruned_weights_stay_exactly_zero(name):
  params, mask = make_params(), make_mask()
  x, y = make_batch()
  tx = masked_optimizer(OPTIMIZERS[name](), mask)
  state = jax.jit(tx.init)(params)
  step = Step(tx)
  start = params
  for i in range(40):
    params, state, loss = step(params, state, x, y)
    assert np.isfinite(loss)
    if i in (0, 39):  # from the first step on, with no extra call
      assert_pruned_dead(params, state, mask, stateful=name in STATEFUL)
  for layer in SHAPES:
    kept = np.asarray(mask[layer]['kernel'])
    moved = np.asarray(params[layer]['kernel'] != start[layer]['kernel'])
    assert moved[kept].all(), f'{layer}/kernel: some kept weights never moved'
    assert (params[layer]['bias'] != start[layer]['bias']).all(), f'{layer}/bias did not train'
  assert step.traces == 1


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_replace_mask_after_dense_training(name):
  params = make_params()
  x, y = make_batch()
  tx = masked_optimizer(OPTIMIZERS[name]())
  state = tx.init(params)
  step = Step(tx)
  for _ in range(10):
    params, state, _ = step(params, state, x, y)
  before = state
  mask = make_mask()
  state = replace_mask(state, mask)
  # Survivors keep their optimizer state; the pruned ones lose it.
  for layer, shape in SHAPES.items():
    kept = np.asarray(mask[layer]['kernel'])
    old = kernel_statistics(before.inner_state, shape)
    new = kernel_statistics(state.inner_state, shape)
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
      np.testing.assert_array_equal(b[kept], a[kept], err_msg=f'{layer}/kernel survivor state')
      assert (b[~kept] == 0).all(), f'{layer}/kernel: stale moments of pruned weights'
  for _ in range(20):
    params, state, _ = step(params, state, x, y)
    assert_pruned_dead(params, state, mask, stateful=name in STATEFUL)
  assert step.traces == 1, 'replacing the mask recompiled the train step'
  assert step.jitted._cache_size() == 1


def test_mask_replaced_every_round_never_recompiles():
  params, (x, y) = make_params(), make_batch()
  tx = masked_optimizer(optax.adam(1e-2))
  state, step = tx.init(params), Step(tx)
  mask = None
  for sparsity in (0.3, 0.5, 0.7, 0.9):
    mask = pruning.sparsity_mask(params, sparsity, mask=mask)
    state = replace_mask(state, mask)
    for _ in range(5):
      params, state, _ = step(params, state, x, y)
    stats = pruning.mask_stats(mask)
    zeros = sum(int((np.asarray(params[n]['kernel']) == 0).sum()) for n in SHAPES)
    assert zeros == stats.overall.total - stats.overall.kept
  assert step.traces == 1


def test_inject_hyperparams_around_masked_optimizer():
  params, mask, (x, y) = make_params(), make_mask(), make_batch()
  tx = optax.inject_hyperparams(lambda learning_rate: masked_optimizer(optax.adam(learning_rate)))(
    learning_rate=1e-2
  )
  state, step = tx.init(params), Step(tx)
  state = replace_mask(state, mask)
  for _ in range(10):
    params, state, _ = step(params, state, x, y)
  for layer in SHAPES:
    pruned = ~np.asarray(mask[layer]['kernel'])
    assert (np.asarray(params[layer]['kernel'])[pruned] == 0.0).all()
  assert step.traces == 1


def test_composes_as_last_element_of_outer_chain():
  params, mask, (x, y) = make_params(), make_mask(), make_batch()
  tx = optax.chain(optax.clip_by_global_norm(1.0), masked_optimizer(optax.sgd(0.1), mask))
  state, step = tx.init(params), Step(tx)
  for _ in range(5):
    params, state, _ = step(params, state, x, y)
  for layer in SHAPES:
    pruned = ~np.asarray(mask[layer]['kernel'])
    assert (np.asarray(params[layer]['kernel'])[pruned] == 0.0).all()
  np.testing.assert_array_equal(get_mask(state)['fc1']['kernel'], mask['fc1']['kernel'])


def test_extra_args_reach_inner_transformation():
  seen = []

  def update(updates, state, params=None, *, value):
    seen.append(value)
    return updates, state

  inner = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
  params = make_params()
  tx = masked_optimizer(inner, make_mask())
  tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params, value=3.0)
  assert seen == [3.0]


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16])
def test_low_precision_params_land_on_zero(dtype):
  params = jax.tree.map(lambda a: a.astype(dtype), make_params())
  mask, (x, y) = make_mask(), make_batch()
  tx = masked_optimizer(optax.sgd(0.05, momentum=0.9), mask)
  state, step = tx.init(params), Step(tx)
  for _ in range(5):
    params, state, _ = step(params, state, x.astype(dtype), y.astype(dtype))
  for layer in SHAPES:
    kernel = params[layer]['kernel']
    assert kernel.dtype == dtype
    assert (np.asarray(kernel, np.float32)[~np.asarray(mask[layer]['kernel'])] == 0.0).all()


def test_frozen_layers_do_not_move_and_switching_does_not_recompile():
  params, mask, (x, y) = make_params(), make_mask(), make_batch()
  tx = masked_optimizer(optax.sgd(0.05, momentum=0.9), mask)
  state, step = tx.init(params), Step(tx)
  params, state, _ = step(params, state, x, y)  # land pruned weights first
  state = set_frozen(state, r'^fc1/')
  frozen = params['fc1']
  for _ in range(5):
    params, state, _ = step(params, state, x, y)
  for leaf in ('kernel', 'bias'):
    np.testing.assert_array_equal(params['fc1'][leaf], frozen[leaf], err_msg=f'fc1/{leaf} moved')
  assert (params['fc2']['bias'] != 0).all()
  state = set_frozen(state, r'^fc2/')
  trained = params['fc2']
  for _ in range(5):
    params, state, _ = step(params, state, x, y)
  np.testing.assert_array_equal(params['fc2']['kernel'], trained['kernel'], err_msg='fc2 moved')
  assert (params['fc1']['kernel'] != frozen['kernel'])[np.asarray(mask['fc1']['kernel'])].all()
  state = set_frozen(state, None)
  params, state, _ = step(params, state, x, y)
  assert (params['fc2']['bias'] != trained['bias']).all()
  assert step.traces == 1


def test_new_mask_lands_on_zero_in_a_frozen_layer():
  params, (x, y) = make_params(), make_batch()
  tx = masked_optimizer(optax.sgd(0.05))
  state, step = tx.init(params), Step(tx)
  state = set_frozen(state, r'^fc1/')
  mask = make_mask()
  state = replace_mask(state, mask)
  params, state, _ = step(params, state, x, y)
  kernel = np.asarray(params['fc1']['kernel'])
  kept = np.asarray(mask['fc1']['kernel'])
  assert (kernel[~kept] == 0).all()
  np.testing.assert_array_equal(kernel[kept], np.asarray(make_params()['fc1']['kernel'])[kept])


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(6, 5, rngs=rngs)
    self.fc2 = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jnp.tanh(self.fc1(x)))


def test_nnx_optimizer_with_replaced_mask_and_no_recompile():
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(
    model, masked_optimizer(optax.adamw(1e-2, weight_decay=0.1)), wrt=nnx.Param
  )
  x, y = make_batch()
  traces = []

  @nnx.jit
  def step(model, optimizer, x, y):
    traces.append(1)
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  for _ in range(3):
    step(model, optimizer, x, y)
  mask = pruning.sparsity_mask(nnx.state(model, nnx.Param), 0.75)
  optimizer.opt_state = replace_mask(optimizer.opt_state, mask)
  for _ in range(5):
    step(model, optimizer, x, y)
  state = nnx.state(model, nnx.Param)
  for name in ('fc1', 'fc2'):
    kept = np.asarray(mask[name]['kernel'])
    kernel = np.asarray(state[name]['kernel'][...])
    assert int((kernel == 0).sum()) == kept.size - kept.sum(), name
    assert (kernel[kept] != 0).all()
  mu = np.asarray(optimizer.opt_state.inner_state[0].mu['fc1']['kernel'][...])
  assert (mu[~np.asarray(mask['fc1']['kernel'])] == 0).all()
  optimizer.opt_state = set_frozen(optimizer.opt_state, 'fc2')
  step(model, optimizer, x, y)
  assert len(traces) == 1


# Error paths: every message names the offending leaf.


def test_update_without_params_raises():
  params = make_params()
  tx = masked_optimizer(optax.sgd(0.1))
  with pytest.raises(ValueError, match='needs the current params'):
    tx.update(params, tx.init(params))


def test_init_with_mask_missing_a_leaf():
  mask = make_mask()
  del mask['fc2']
  with pytest.raises(ValueError, match=r"missing leaves \['fc2/bias', 'fc2/kernel'\]"):
    masked_optimizer(optax.sgd(0.1), mask).init(make_params())


def test_init_with_mask_of_wrong_shape():
  mask = make_mask()
  mask['fc2']['kernel'] = jnp.ones((3, 5), dtype=bool)
  with pytest.raises(ValueError, match=r"'fc2/kernel' has shape \(3, 5\); expected \(5, 3\)"):
    masked_optimizer(optax.sgd(0.1), mask).init(make_params())


def test_init_with_non_boolean_mask():
  mask = make_mask()
  mask['fc1']['kernel'] = mask['fc1']['kernel'].astype(jnp.float32)
  with pytest.raises(ValueError, match="'fc1/kernel' has dtype float32; expected bool"):
    masked_optimizer(optax.sgd(0.1), mask).init(make_params())


def test_update_with_updates_that_do_not_fit_the_mask():
  params = make_params()
  tx = masked_optimizer(optax.sgd(0.1))
  state = tx.init(params)
  grads = {'fc1': params['fc1']}
  with pytest.raises(
    ValueError, match=r"unexpected leaves \['fc2/bias', 'fc2/kernel'\] \(in mask, not in updates"
  ):
    tx.update(grads, state, {'fc1': params['fc1']})


@pytest.mark.parametrize(
  ('change', 'message'),
  [
    (lambda m: m['fc1'].update(kernel=jnp.ones((5, 6), bool)), r"'fc1/kernel' has shape \(5, 6\)"),
    (lambda m: m['fc1'].update(kernel=jnp.ones((6, 5))), "'fc1/kernel' has dtype float32"),
    (lambda m: m['fc1'].update(kernel=None), "'fc1/kernel' is None but the optimizer prunes"),
    (lambda m: m['fc1'].update(bias=jnp.ones(5, bool)), "'fc1/bias' is an array"),
    (lambda m: m.update(fc3={'kernel': None}), r"unexpected leaves \['fc3/kernel'\]"),
  ],
)
def test_replace_mask_rejects_bad_masks(change, message):
  params = make_params()
  state = masked_optimizer(optax.sgd(0.1)).init(params)
  mask = make_mask()
  change(mask)
  with pytest.raises(ValueError, match=message):
    replace_mask(state, mask)


def test_replace_mask_needs_a_masked_state():
  state = optax.adam(1e-3).init(make_params())
  with pytest.raises(ValueError, match='holds 0 masked_optimizer states'):
    replace_mask(state, make_mask())


def test_set_frozen_pattern_matching_nothing():
  state = masked_optimizer(optax.sgd(0.1)).init(make_params())
  with pytest.raises(ValueError, match=r"'conv' matches no leaf; leaves: \['fc1/bias'"):
    set_frozen(state, 'conv')


def test_functional_nnx_with_boxed_params():
  """nnx.split hands out Param-boxed states; gradients come back boxed too."""
  model = MLP(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  mask = pruning.sparsity_mask(params, 0.6)
  tx = masked_optimizer(optax.adam(1e-2), mask)
  state = tx.init(params)
  x, y = make_batch()

  @jax.jit
  def step(params, state):
    def loss(params):
      return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(5):
    params, state = step(params, state)
  for name in ('fc1', 'fc2'):
    kept = np.asarray(mask[name]['kernel'])
    kernel = np.asarray(params[name]['kernel'][...])
    assert isinstance(params[name]['kernel'], nnx.Param)
    assert int((kernel == 0).sum()) == kept.size - kept.sum(), name
    assert (kernel[kept] != 0).all()


def test_donating_the_state_leaves_the_callers_mask_alive():
  params, mask, (x, y) = make_params(), make_mask(), make_batch()
  tx = masked_optimizer(optax.sgd(0.1), mask)

  def step(params, state):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  donating = jax.jit(step, donate_argnums=(0, 1))
  params, state = donating(params, tx.init(params))
  state = replace_mask(state, mask)
  params, state = donating(params, state)
  # The caller's mask survives both donations and can seed the next round.
  assert pruning.mask_stats(mask).overall.total == 6 * 5 + 5 * 3
  tx.init(make_params())


def test_frozen_leaf_feeds_no_gradient_to_the_inner_state():
  # A frozen leaf's momentum must not build up while it is frozen: unfrozen
  # later, it would move by what it was never allowed to learn.
  params, mask, (x, y) = make_params(), make_mask(), make_batch()
  tx = masked_optimizer(optax.sgd(0.05, momentum=0.9), mask)
  state, step = set_frozen(tx.init(params), r'^fc1/'), Step(tx)
  for _ in range(3):
    params, state, _ = step(params, state, x, y)
  trace = state.inner_state[0].trace
  for leaf in ('kernel', 'bias'):
    assert not np.asarray(trace['fc1'][leaf]).any(), f'fc1/{leaf} gathered momentum while frozen'
  kept = np.asarray(mask['fc2']['kernel'])
  assert (np.asarray(trace['fc2']['kernel'])[kept] != 0).all()
  assert not np.asarray(trace['fc2']['kernel'])[~kept].any()


def test_arguments_by_keyword_and_pattern_keyword_only():
  params = make_params()
  tx = masked_optimizer(inner=optax.sgd(0.1), mask=make_mask())
  np.testing.assert_array_equal(
    get_mask(tx.init(params))['fc1']['kernel'], make_mask()['fc1']['kernel']
  )
  with pytest.raises(TypeError):
    masked_optimizer(optax.sgd(0.1), None, r'kernel')


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.uint8, jnp.bool_])
def test_rejects_non_float_prunable_leaves_at_init(dtype):
  params = {'fc': {'kernel': jnp.ones((2, 3), dtype), 'bias': jnp.zeros(3)}}
  with pytest.raises(ValueError, match=r"leaf 'fc/kernel' of dtype .*must be floating point"):
    masked_optimizer(optax.sgd(0.1)).init(params)


def test_non_float_leaves_that_are_never_pruned_are_accepted():
  # Only the prunable leaves must be floating point; an integer leaf the mask
  # leaves alone (a step counter, an embedding index) is fine, and so is bf16.
  params = {'fc': {'kernel': jnp.ones((2, 3), jnp.bfloat16)}, 'steps': jnp.zeros((), jnp.int32)}
  state = masked_optimizer(optax.sgd(0.1)).init(params)
  assert get_mask(state)['steps'] is None
  assert get_mask(state)['fc']['kernel'].shape == (2, 3)


def test_inner_state_zeroed_when_params_paths_sort_before_the_state_fields():
  # Only subtrees with exactly the params' paths are zeroed: an optimizer
  # state whose own field names ('count', 'hyperparams', ...) happen to sort
  # after the params' paths is walked into, never taken for params.
  params = {'a': {'kernel': jnp.ones((2, 3))}, 'b': {'bias': jnp.ones(3)}}
  mask = {
    'a': {'kernel': jnp.array([[True, False, True], [False, True, True]])},
    'b': {'bias': None},
  }
  inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
  tx = masked_optimizer(inner, mask)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, state = tx.update(grads, state, params)
  trace = state.inner_state.inner_state[0].trace
  np.testing.assert_array_equal(trace['a']['kernel'], np.where(mask['a']['kernel'], 1.0, 0.0))
  np.testing.assert_array_equal(trace['b']['bias'], np.ones(3))
  assert float(state.inner_state.hyperparams['learning_rate']) == pytest.approx(0.1)


def test_factored_statistics_of_another_shape_are_left_alone():
  # adafactor keeps per-row and per-column statistics under the params'
  # paths; their shapes differ from the mask's, so they must not be masked.
  params = {'w': {'kernel': jnp.ones((4, 6))}, 's': jnp.array(2.0)}
  mask = {'w': {'kernel': jnp.arange(24).reshape(4, 6) % 3 != 0}, 's': None}
  tx = masked_optimizer(optax.adafactor(1e-2, min_dim_size_to_factor=2), mask)
  state = tx.init(params)
  grads = {'w': {'kernel': jnp.full((4, 6), 0.5)}, 's': jnp.array(1.0)}
  updates, state = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  kernel = np.asarray(new['w']['kernel'])
  assert (kernel[~np.asarray(mask['w']['kernel'])] == 0).all()
  assert (kernel[np.asarray(mask['w']['kernel'])] != 1.0).all()
  assert float(new['s']) != 2.0


def test_scalar_leaf_never_pruned_keeps_its_state():
  params = {'fc': {'kernel': jnp.ones((2, 2))}, 'scale': jnp.array(3.0)}
  tx = masked_optimizer(
    optax.sgd(0.1, momentum=0.9), {'fc': {'kernel': jnp.eye(2, dtype=bool)}, 'scale': None}
  )
  state = tx.init(params)
  grads = {'fc': {'kernel': jnp.ones((2, 2))}, 'scale': jnp.array(1.0)}
  _, state = tx.update(grads, state, params)
  state = replace_mask(
    state, {'fc': {'kernel': jnp.array([[True, False], [False, False]])}, 'scale': None}
  )
  trace = state.inner_state[0].trace
  assert float(trace['scale']) == 1.0
  np.testing.assert_array_equal(trace['fc']['kernel'], [[1.0, 0.0], [0.0, 0.0]])


def test_nested_masked_optimizers_keep_both_masks_dead():
  params = {'fc': {'kernel': jnp.ones((2, 3))}}
  outer_mask = {'fc': {'kernel': jnp.array([[True, True, False], [True, True, True]])}}
  inner_mask = {'fc': {'kernel': jnp.array([[True, False, True], [True, True, True]])}}
  tx = masked_optimizer(masked_optimizer(optax.sgd(0.1, momentum=0.9), inner_mask), outer_mask)
  state = tx.init(params)
  updates, state = tx.update({'fc': {'kernel': jnp.ones((2, 3))}}, state, params)
  kernel = np.asarray(optax.apply_updates(params, updates)['fc']['kernel'])
  np.testing.assert_allclose(kernel, [[0.9, 0.0, 0.0], [0.9, 0.9, 0.9]])
  # The inner state's mask is params-shaped state too: the outer mask's zeros
  # reach it, so it holds the intersection.
  both = np.asarray(inner_mask['fc']['kernel']) & np.asarray(outer_mask['fc']['kernel'])
  np.testing.assert_array_equal(state.inner_state.mask['fc']['kernel'], both)
  # get_mask stops at the outermost masked_optimizer state.
  np.testing.assert_array_equal(get_mask(state)['fc']['kernel'], outer_mask['fc']['kernel'])


def test_two_masked_optimizers_side_by_side_are_ambiguous():
  params = make_params()
  state = optax.chain(masked_optimizer(optax.sgd(0.1)), masked_optimizer(optax.sgd(0.1))).init(
    params
  )
  for use in (get_mask, lambda s: replace_mask(s, make_mask()), lambda s: set_frozen(s, 'fc1')):
    with pytest.raises(ValueError, match='holds 2 masked_optimizer states; expected exactly one'):
      use(state)


def test_replace_mask_takes_a_numpy_mask():
  params = make_params()
  state = masked_optimizer(optax.sgd(0.1)).init(params)
  mask = jax.tree.map(
    lambda m: None if m is None else np.asarray(m), make_mask(), is_leaf=lambda m: m is None
  )
  state = replace_mask(state, mask)
  np.testing.assert_array_equal(get_mask(state)['fc2']['kernel'], mask['fc2']['kernel'])


@pytest.mark.parametrize('shape', [(7, 5), (6, 6), (6, 5, 1), (1, 6, 5), (30,)])
def test_replace_mask_rejects_any_other_shape(shape):
  state = masked_optimizer(optax.sgd(0.1)).init(make_params())
  mask = make_mask()
  mask['fc1']['kernel'] = jnp.ones(shape, bool)
  with pytest.raises(ValueError, match=rf"'fc1/kernel' has shape \({shape[0]},"):
    replace_mask(state, mask)


def test_replace_mask_rejects_a_python_number_as_a_mask_leaf():
  state = masked_optimizer(optax.sgd(0.1)).init(make_params())
  mask = make_mask()
  mask['fc1']['kernel'] = 1
  with pytest.raises(
    ValueError, match=r"mask leaf 'fc1/kernel' has dtype <class 'int'>; expected bool"
  ):
    replace_mask(state, mask)
