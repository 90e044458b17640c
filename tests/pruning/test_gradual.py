"""Tests for gradual_pruning: the cubic schedule, the device mask equal to the host's, no recompile."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from pruning import (
  CRITERIA,
  get_mask,
  global_sparsity_mask,
  nm_mask,
  nm_validity,
  register_criterion,
  replace_mask,
  set_frozen,
  sparsity_mask,
)
from pruning.gradual import GradualSchedule, GradualState, _count_at, gradual_pruning

SHAPES = {'fc1': (8, 12), 'fc2': (12, 4)}


def make_params(seed: int = 0) -> dict:
  keys = jax.random.split(jax.random.key(seed), 4)
  return {
    name: {
      'kernel': jax.random.normal(keys[2 * i], shape),
      'bias': 0.1 * jax.random.normal(keys[2 * i + 1], shape[-1:]),
    }
    for i, (name, shape) in enumerate(SHAPES.items())
  }


def loss_fn(params, x, y):
  hidden = jnp.tanh(x @ params['fc1']['kernel'] + params['fc1']['bias'])
  out = hidden @ params['fc2']['kernel'] + params['fc2']['bias']
  return jnp.mean((out - y) ** 2)


def make_batch(seed: int = 2):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (16, 8)), jax.random.normal(ky, (16, 4))


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


def cubic(t, t0, n, dt, s_i, s_f):
  """Zhu & Gupta's eq. 1, written out independently of the library."""
  t = min(max(t, t0), t0 + n * dt)
  return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3


def kernels(mask: dict) -> dict:
  return {name: np.asarray(mask[name]['kernel']) for name in SHAPES}


def assert_masks_equal(got: dict, expected: dict) -> None:
  for name in SHAPES:
    g, e = np.asarray(got[name]['kernel']), np.asarray(expected[name]['kernel'])
    assert (g == e).all(), f'{name}/kernel: masks differ at {np.argwhere(g != e).tolist()}'
    assert got[name]['bias'] is None and expected[name]['bias'] is None, name


# --- the schedule -----------------------------------------------------------


@pytest.mark.parametrize(
  ('t0', 'n', 'dt', 's_i', 's_f'), [(0, 4, 1, 0.0, 0.9), (10, 5, 3, 0.2, 0.75), (3, 1, 7, 0.5, 0.5)]
)
def test_sparsity_follows_the_cubic_formula(t0, n, dt, s_i, s_f):
  schedule = GradualSchedule(t0=t0, n=n, delta_t=dt, initial_sparsity=s_i, final_sparsity=s_f)
  steps = range(t0 + n * dt + 5)
  host = [schedule.sparsity_at(t) for t in steps]
  assert host == [pytest.approx(cubic(t, t0, n, dt, s_i, s_f), abs=1e-15) for t in steps]
  device = jax.jit(jax.vmap(schedule.sparsity_at))(jnp.arange(len(steps)))
  np.testing.assert_allclose(device, host, rtol=1e-6, atol=1e-7)
  flags = jax.jit(jax.vmap(schedule.is_update_step))(jnp.arange(len(steps)))
  updates = [t for t in steps if flags[t]]
  assert updates == [t0 + k * dt for k in range(n + 1)] == schedule.update_steps()


def test_schedule_accepts_numpy_and_jax_scalars():
  schedule = GradualSchedule(
    t0=np.int64(2),
    n=jnp.int32(3),
    delta_t=np.uint8(2),
    initial_sparsity=np.float32(0.25),
    final_sparsity=jnp.float32(0.5),
  )
  assert (schedule.t0, schedule.n, schedule.delta_t) == (2, 3, 2)
  assert type(schedule.t0) is int and type(schedule.final_sparsity) is float
  assert schedule.sparsity_at(100) == 0.5


@pytest.mark.parametrize(
  ('change', 'message'),
  [
    ({'t0': -1}, 't0 is -1; expected an integer >= 0'),
    ({'n': 0}, 'n is 0; expected an integer >= 1'),
    ({'delta_t': 0}, 'delta_t is 0; expected an integer >= 1'),
    ({'delta_t': 2.0}, 'delta_t is 2.0; expected an integer'),
    ({'n': True}, 'n is True; expected an integer'),
    ({'final_sparsity': True}, 'final_sparsity is True'),
    ({'final_sparsity': 1.5}, r'final_sparsity is 1.5; expected a value in \[0, 1\]'),
    ({'initial_sparsity': -0.1}, 'initial_sparsity is -0.1'),
    ({'initial_sparsity': float('nan')}, 'initial_sparsity is nan'),
    ({'initial_sparsity': 0.9}, 'initial_sparsity 0.9 is above final_sparsity 0.8'),
    ({'n': 2**30, 'delta_t': 2}, r't0 \+ n \* delta_t = 2147483648, is beyond 2\*\*31 - 1'),
  ],
)
def test_schedule_rejects_bad_values(change, message):
  args = {'t0': 0, 'n': 4, 'delta_t': 1, 'initial_sparsity': 0.0, 'final_sparsity': 0.8}
  with pytest.raises(ValueError, match=message):
    GradualSchedule(**{**args, **change})


# --- training with it ---------------------------------------------------------


@pytest.mark.parametrize(
  'inner',
  [lambda: optax.sgd(0.05, momentum=0.9), lambda: optax.adamw(1e-2, weight_decay=0.1)],
  ids=['momentum', 'adamw'],
)
def test_counts_zeros_shrinking_masks_and_a_single_compile(inner):
  schedule = GradualSchedule(t0=2, n=4, delta_t=3, initial_sparsity=0.1, final_sparsity=0.8)
  tx = gradual_pruning(inner(), schedule)
  params = make_params()
  state = tx.init(params)
  step = Step(tx)
  x, y = make_batch()
  previous = kernels(get_mask(state))
  changes = 0
  for t in range(schedule.end + 4):
    params, state, _ = step(params, state, x, y)
    mask = kernels(get_mask(state))
    # The mask holds the sparsity of the last update at or before t.
    last = max((u for u in (2, 5, 8, 11, 14) if u <= t), default=None)
    s = 0.0 if last is None else cubic(last, 2, 4, 3, 0.1, 0.8)
    for name, shape in SHAPES.items():
      size = shape[0] * shape[1]
      assert int((~mask[name]).sum()) == round(s * size), (t, name)
      assert (np.asarray(params[name]['kernel'])[~mask[name]] == 0.0).all(), (t, name)
      assert not (mask[name] & ~previous[name]).any(), f'{name}: a pruned weight came back at {t}'
      for stat in jax.tree.leaves(state.masked.inner_state):
        if np.shape(stat) == shape:
          assert (np.asarray(stat)[~mask[name]] == 0.0).all(), f'{name}: moments of pruned'
    changes += any((mask[n] != previous[n]).any() for n in SHAPES)
    previous = mask
  assert int(state.count) == schedule.end + 4
  assert changes >= 4
  assert step.traces == 1, 'a mask update recompiled the train step'


def one_update(params, sparsity, *, scope='per-layer', mask=None, **kwargs):
  """The mask gradual_pruning computes at one scheduled update, params left as they are."""
  schedule = GradualSchedule(
    t0=0, n=1, delta_t=1, initial_sparsity=sparsity, final_sparsity=sparsity
  )
  tx = gradual_pruning(optax.sgd(0.0), schedule, scope=scope, mask=mask, **kwargs)
  grads = jax.tree.map(jnp.zeros_like, params)
  _, state = jax.jit(tx.update)(grads, tx.init(params), params)
  return get_mask(state)


def tied_params(seed: int, levels: int) -> dict:
  """Weights rounded to a few values (of both signs, and -0.0): ties everywhere."""
  rng = np.random.default_rng(seed)
  params = {}
  for name, shape in SHAPES.items():
    values = rng.integers(-levels, levels + 1, size=shape) / 4.0
    values[rng.random(shape) < 0.1] = -0.0
    params[name] = {'kernel': jnp.asarray(values, jnp.float32), 'bias': jnp.zeros(shape[-1])}
  return params


def random_mask_tree(seed: int, density: float) -> dict:
  rng = np.random.default_rng(seed)
  return {
    name: {'kernel': jnp.asarray(rng.random(shape) < density), 'bias': None}
    for name, shape in SHAPES.items()
  }


@pytest.mark.parametrize('levels', [1, 3, 1000])
@pytest.mark.parametrize('prior', [None, 0.9, 0.3])
@pytest.mark.parametrize('scope', ['per-layer', 'global'])
def test_device_mask_equals_the_host_criterion(levels, prior, scope):
  # Each update's device mask against the host's on the same weights and prior
  # mask; sparsities 0.125, 0.49, 0.74, 0.89, 0.97, 0.996, 1.0.
  schedule = GradualSchedule(t0=0, n=6, delta_t=1, initial_sparsity=0.125, final_sparsity=1.0)
  params = tied_params(levels, levels)
  mask = None if prior is None else random_mask_tree(levels + 7, prior)
  tx = gradual_pruning(optax.sgd(0.0), schedule, scope=scope, mask=mask)
  host_fn = sparsity_mask if scope == 'per-layer' else global_sparsity_mask
  state, update = tx.init(params), jax.jit(tx.update)
  grads = jax.tree.map(jnp.zeros_like, params)
  for t in schedule.update_steps():
    before = get_mask(state) if t or mask is not None else None
    expected = host_fn(params, schedule.sparsity_at(t), mask=before)
    updates, state = update(grads, state, params)
    assert_masks_equal(get_mask(state), expected)
    params = optax.apply_updates(params, updates)


@pytest.mark.parametrize('scope', ['per-layer', 'global'])
def test_a_signed_score_matches_the_same_criterion_on_the_host(scope):
  # Negative scores and both zeros: the keys must order them as floats do,
  # -0.0 tied with 0.0 (broken by position, as the host's stable sort does).
  register_criterion('signed_for_test', lambda w, rng: w)
  try:
    params = tied_params(3, 3)
    host_fn = sparsity_mask if scope == 'per-layer' else global_sparsity_mask
    for sparsity in (0.3, 0.55):
      device = one_update(params, sparsity, scope=scope, score=lambda w: w)
      assert_masks_equal(device, host_fn(params, sparsity, criterion='signed_for_test'))
  finally:
    del CRITERIA['signed_for_test']


def test_global_scope_prunes_the_smaller_layer_more():
  params = make_params()
  params['fc2']['kernel'] = 10.0 * params['fc2']['kernel']
  mask = one_update(params, 0.5, scope='global')
  pruned = {name: int((~kernels(mask)[name]).sum()) for name in SHAPES}
  assert sum(pruned.values()) == round(0.5 * (96 + 48))
  assert pruned['fc1'] > 48 and pruned['fc2'] < 24
  assert_masks_equal(mask, global_sparsity_mask(params, 0.5))


def test_regrowth_only_when_allowed():
  # Scoring by -|w| keeps the smallest: the weights pruned first are landed on
  # 0.0, the best score, so the next update wants them back.
  schedule = GradualSchedule(t0=0, n=1, delta_t=1, initial_sparsity=0.25, final_sparsity=0.5)
  params = make_params()
  for regrowth in (False, True):
    tx = gradual_pruning(
      optax.sgd(0.0), schedule, score=lambda w: -jnp.abs(w), allow_regrowth=regrowth
    )
    state, p, grads = tx.init(params), params, jax.tree.map(jnp.zeros_like, params)
    first = None
    for _ in range(2):
      updates, state = jax.jit(tx.update)(grads, state, p)
      p = optax.apply_updates(p, updates)
      first = kernels(get_mask(state)) if first is None else first
    second = kernels(get_mask(state))
    regrown = sum(int((second[n] & ~first[n]).sum()) for n in SHAPES)
    assert (regrown > 0) == regrowth, f'allow_regrowth={regrowth}: {regrown} weights regrown'
    for name, shape in SHAPES.items():
      assert int((~second[name]).sum()) == round(0.5 * shape[0] * shape[1]), name


@pytest.mark.parametrize(('prior', 's_i'), [(None, 0.0), (0.8, 0.0), (None, 0.25)])
@pytest.mark.parametrize('nm', ['2:4', (1, 2)])
def test_gradual_nm_matches_nm_mask_and_ends_valid(nm, prior, s_i):
  n, m = (2, 4) if nm == '2:4' else (1, 2)
  s_f = 1 - n / m
  schedule = GradualSchedule(t0=0, n=3, delta_t=2, initial_sparsity=s_i, final_sparsity=s_f)
  mask = None if prior is None else random_mask_tree(5, prior)
  tx = gradual_pruning(optax.sgd(0.05), schedule, nm=nm, mask=mask)
  params = make_params()
  state = tx.init(params)
  step = Step(tx)
  x, y = make_batch()
  for t in range(schedule.end + 2):
    before, prior = params, get_mask(state)
    params, state, _ = step(params, state, x, y)
    if schedule.is_update_step(t):
      keep = m - round(cubic(t, 0, 3, 2, s_i, s_f) * m)
      expected = prior if keep == m else nm_mask(before, keep, m, mask=prior)
      assert_masks_equal(get_mask(state), expected)
  assert all(v.valid for v in nm_validity(get_mask(state), n, m).values())
  assert step.traces == 1


def test_composes_in_a_chain_and_with_inject_hyperparams():
  schedule = GradualSchedule(t0=0, n=2, delta_t=1, initial_sparsity=0.0, final_sparsity=0.5)
  params = make_params()
  x, y = make_batch()
  expected = sparsity_mask(params, 0.5)  # sgd(0.0) leaves the weights as they are
  chains = {
    'outer chain': optax.chain(
      optax.clip_by_global_norm(1.0), gradual_pruning(optax.sgd(0.0), schedule)
    ),
    'inner chain': gradual_pruning(
      optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.0)), schedule
    ),
    'inject around': optax.inject_hyperparams(
      lambda learning_rate: gradual_pruning(optax.sgd(learning_rate), schedule)
    )(learning_rate=0.0),
    'inject inside': gradual_pruning(
      optax.inject_hyperparams(optax.sgd)(learning_rate=0.0), schedule
    ),
  }
  for label, tx in chains.items():
    state, p, step = tx.init(params), params, Step(tx)
    for _ in range(4):
      p, state, _ = step(p, state, x, y)
    assert_masks_equal(get_mask(state), expected)
    assert step.traces == 1, label


def test_replace_mask_and_set_frozen_reach_the_state():
  schedule = GradualSchedule(t0=5, n=1, delta_t=1, initial_sparsity=0.5, final_sparsity=0.5)
  tx = gradual_pruning(optax.sgd(0.05, momentum=0.9), schedule)
  params = make_params()
  state = tx.init(params)
  step = Step(tx)
  x, y = make_batch()
  params, state, _ = step(params, state, x, y)
  mask = random_mask_tree(3, 0.5)
  state = set_frozen(replace_mask(state, mask), r'^fc2')
  assert isinstance(state, GradualState) and int(state.count) == 1
  frozen = params['fc2']['kernel'] * kernels(mask)['fc2']
  params, state, _ = step(params, state, x, y)
  assert_masks_equal(get_mask(state), mask)
  np.testing.assert_array_equal(params['fc2']['kernel'], frozen)
  assert step.traces == 1


# --- errors --------------------------------------------------------------------

SCHEDULE = GradualSchedule(t0=0, n=2, delta_t=1, initial_sparsity=0.0, final_sparsity=0.5)


def test_update_without_params_raises():
  tx = gradual_pruning(optax.sgd(0.1), SCHEDULE)
  params = make_params()
  with pytest.raises(ValueError, match=r'call tx.update\(grads, opt_state, params\)'):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    ({'schedule': 0.5}, 'schedule is 0.5; expected a GradualSchedule'),
    ({'scope': 'layer'}, "scope is 'layer'; expected 'per-layer' or 'global'"),
    ({'nm': '2/4'}, "nm is '2/4'; expected 'N:M'"),
    ({'nm': (4, 4)}, 'N:M is 4:4'),
    ({'nm': '2:4', 'scope': 'global'}, 'nm groups are per layer'),
    ({'nm': '1:4'}, r'final_sparsity 0.5 does not end at 1:4 sparsity 0.75'),
    ({'score': 'abs'}, "score is 'abs'; expected a function"),
  ],
)
def test_bad_arguments(kwargs, message):
  args = {'schedule': SCHEDULE, **kwargs}
  with pytest.raises(ValueError, match=message):
    gradual_pruning(optax.sgd(0.1), **args)


def test_score_of_the_wrong_shape_names_the_layer():
  tx = gradual_pruning(optax.sgd(0.1), SCHEDULE, score=lambda w: jnp.abs(w).sum(axis=0))
  params = make_params()
  with pytest.raises(ValueError, match=r"score gave 'fc1/kernel' scores of shape \(12,\)"):
    tx.update(params, tx.init(params), params)


def test_nm_layer_not_a_multiple_of_m_names_the_layer():
  tx = gradual_pruning(optax.sgd(0.1), SCHEDULE, nm=(2, 4))
  params = make_params()
  params['fc2']['kernel'] = jnp.ones((6, 4))  # 6 inputs: not a multiple of 4
  with pytest.raises(ValueError, match=r"layer 'fc2/kernel' of shape \(6, 4\) has 6 inputs"):
    tx.init(params)


class MLP(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(8, 12, rngs=rngs)
    self.fc2 = nnx.Linear(12, 4, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jnp.tanh(self.fc1(x)))


def test_nnx_optimizer_and_boxed_params():
  schedule = GradualSchedule(t0=1, n=3, delta_t=2, initial_sparsity=0.2, final_sparsity=0.75)
  x, y = make_batch()
  model = MLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, gradual_pruning(optax.adam(1e-2), schedule), wrt=nnx.Param)
  traces = []

  @nnx.jit
  def step(model, optimizer):
    traces.append(1)
    grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)

  graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
  tx = gradual_pruning(optax.adam(1e-2), schedule)
  state = tx.init(params)

  @jax.jit
  def functional_step(params, state):
    grads = jax.grad(lambda p: jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2))(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(schedule.end + 2):
    step(model, optimizer)
    params, state = functional_step(params, state)
  for kernels_of, mask in (
    (nnx.state(model, nnx.Param), get_mask(optimizer.opt_state)),
    (params, get_mask(state)),
  ):
    for name, shape in SHAPES.items():
      kept = np.asarray(mask[name]['kernel'])
      kernel = np.asarray(kernels_of[name]['kernel'][...])
      assert int((~kept).sum()) == round(0.75 * shape[0] * shape[1]), name
      assert (kernel[~kept] == 0).all() and (kernel[kept] != 0).all(), name
  assert isinstance(params['fc1']['kernel'], nnx.Param)
  assert len(traces) == 1


@pytest.mark.parametrize(('n', 'delta_t'), [(6, 5), (5000, 1), (7 * 10**8, 3)])
def test_device_counts_are_the_host_counts_for_any_number_of_updates(n, delta_t):
  # Few updates: a table per update; many: the first update reaching each count.
  schedule = GradualSchedule(t0=7, n=n, delta_t=delta_t, initial_sparsity=0.1, final_sparsity=0.9)
  size = 331
  count_at, first, last = _count_at(schedule, size)
  ks = sorted({0, 1, 2, n // 3, n // 2, n - 1, n} | set(np.linspace(0, n, 50, dtype=np.int64)))
  device = jax.jit(jax.vmap(count_at))(jnp.asarray(ks, jnp.int32))
  host = [round(schedule.sparsity_at(7 + k * delta_t) * size) for k in ks]
  assert device.tolist() == host
  assert (first, last) == (round(0.1 * size), round(0.9 * size))


def test_a_schedule_of_a_billion_updates_builds_and_steps():
  schedule = GradualSchedule(t0=0, n=10**9, delta_t=1, initial_sparsity=0.5, final_sparsity=0.9)
  tx = gradual_pruning(optax.sgd(0.0), schedule, scope='global')
  params = make_params()
  _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  assert_masks_equal(get_mask(state), global_sparsity_mask(params, 0.5))


@pytest.mark.parametrize('n', [2, 3, 4, 12])
def test_the_count_constant_holds_the_fewer_of_the_updates_and_the_counts(n):
  # From a sparsity above 0 (first count 5 of 10, last 9): a table of the n + 1 updates
  # while they are at most the 4 counts reached after the first, else those 4.
  schedule = GradualSchedule(t0=0, n=n, delta_t=1, initial_sparsity=0.5, final_sparsity=0.9)
  count_at, first, last = _count_at(schedule, 10)
  assert (first, last) == (5, 9)
  consts = jax.make_jaxpr(count_at)(jnp.int32(0)).consts
  assert [np.size(c) for c in consts] == [min(n + 1, last - first)]
  host = [round(schedule.sparsity_at(k) * 10) for k in range(n + 1)]
  assert jax.vmap(count_at)(jnp.arange(n + 1, dtype=jnp.int32)).tolist() == host


def test_schedule_rejects_a_last_update_beyond_int32_however_its_bits_fall():
  # t0 and n * delta_t share no bit: their sum, not their bitwise or, is the last step.
  with pytest.raises(ValueError, match=r't0 \+ n \* delta_t = 2147483648, is beyond'):
    GradualSchedule(t0=2**30, n=1, delta_t=2**30, initial_sparsity=0.0, final_sparsity=0.5)


def test_gradual_nm_from_a_sparsity_above_zero_takes_each_count_in_turn():
  # 1:4 from s_i = 0.25: 1, 2, then 3 of every 4 pruned; each update's mask is nm_mask's.
  schedule = GradualSchedule(t0=0, n=3, delta_t=1, initial_sparsity=0.25, final_sparsity=0.75)
  tx = gradual_pruning(optax.sgd(0.05), schedule, nm=(1, 4))
  params, step = make_params(), Step(tx)
  state = tx.init(params)
  x, y = make_batch()
  pruned_per_group = []
  for t in range(schedule.end + 1):
    before, prior = params, get_mask(state)
    params, state, _ = step(params, state, x, y)
    keep = 4 - round(cubic(t, 0, 3, 1, 0.25, 0.75) * 4)
    pruned_per_group.append(4 - keep)
    assert_masks_equal(get_mask(state), nm_mask(before, keep, 4, mask=prior))
  assert pruned_per_group == [1, 2, 3, 3]


def test_an_eager_update_takes_a_score_computed_in_numpy():
  # Without jit the score may be any function of the weights giving an array of their shape.
  schedule = GradualSchedule(t0=0, n=1, delta_t=1, initial_sparsity=0.5, final_sparsity=0.75)
  tx = gradual_pruning(optax.sgd(0.0), schedule, score=lambda w: np.abs(np.asarray(w)))
  params = make_params()
  state = tx.init(params)
  grads = jax.tree.map(jnp.zeros_like, params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  assert_masks_equal(get_mask(state), sparsity_mask(params, 0.75))


def test_gradual_nm_refuses_a_final_sparsity_past_its_n_of_m():
  # s_f 0.5 prunes 2 of every 4: too many for 3:4 (1 of 4), as too few is for 1:4.
  with pytest.raises(ValueError, match=r'final_sparsity 0.5 does not end at 3:4 sparsity 0.25'):
    gradual_pruning(optax.sgd(0.1), SCHEDULE, nm='3:4')


def test_schedule_rejects_a_last_update_far_beyond_int32():
  # Not only 2**31 itself: any last step past 2**31 - 1 overflows the step counter.
  with pytest.raises(ValueError, match=r't0 \+ n \* delta_t = 1099511627776, is beyond'):
    GradualSchedule(t0=0, n=2**40, delta_t=1, initial_sparsity=0.0, final_sparsity=0.5)


def test_the_device_search_prunes_exactly_count_of_many_zero_keys():
  # Key 0 (a pruned weight's) held by more weights than count: the first count go, in order.
  from pruning.gradual import _prune_smallest

  keys = jnp.array([7, 0, 0, 3, 0], jnp.uint32)
  keep = jax.jit(_prune_smallest)(keys, jnp.int32(2))
  np.testing.assert_array_equal(keep, [True, False, False, True, True])


def test_the_count_constant_is_the_table_while_it_is_the_smaller():
  # 90 counts reached after the first (5 to 95 of 100) over n = 50 updates: the 51-entry table.
  schedule = GradualSchedule(t0=0, n=50, delta_t=1, initial_sparsity=0.05, final_sparsity=0.95)
  count_at, first, last = _count_at(schedule, 100)
  assert (first, last) == (5, 95)
  consts = jax.make_jaxpr(count_at)(jnp.int32(0)).consts
  assert [np.size(c) for c in consts] == [51]


def test_device_keys_order_adjacent_floats_strictly():
  # Neighbouring float32 values (one unit in the last place apart) get distinct, ordered keys.
  from pruning.gradual import _ordered_keys

  one = np.float32(1.0)
  scores = np.array(
    [-np.nextafter(one, np.float32(2)), -one, 0.0, one, np.nextafter(one, np.float32(2))],
    np.float32,
  )
  keys = np.asarray(_ordered_keys(jnp.asarray(scores))).astype(np.int64)
  assert (np.diff(keys) > 0).all()


def test_gradual_nm_refuses_the_global_scope_spelled_by_the_caller():
  # Compared by value: a scope read from a command line is not the interned literal.
  scope = ''.join(['glo', 'bal'])
  with pytest.raises(ValueError, match='nm groups are per layer'):
    gradual_pruning(optax.sgd(0.1), SCHEDULE, scope=scope, nm='2:4')


def test_schedule_refuses_an_integer_array_of_one_element():
  # An integer array is not a whole number unless it is 0-d, even with one element.
  with pytest.raises(ValueError, match=r'n is array\(\[4\]\); expected an integer >= 1'):
    GradualSchedule(t0=0, n=np.array([4]), delta_t=1, initial_sparsity=0.0, final_sparsity=0.5)


def test_a_global_scope_spelled_at_run_time_ranks_all_layers_together():
  # Compared by value, as a scope from a command line needs: not the interned literal.
  params = make_params()
  mask = one_update(params, 0.5, scope=''.join(['glo', 'bal']))
  assert_masks_equal(mask, global_sparsity_mask(params, 0.5))


def test_device_keys_span_uint32_from_the_two_largest_nans():
  # The NaN with every bit set gets key 0 (tied with pruned weights); its positive twin the top.
  from pruning.gradual import _ordered_keys

  nans = np.array([0xFFFFFFFF, 0x7FFFFFFF], np.uint32).view(np.float32)
  assert np.asarray(_ordered_keys(jnp.asarray(nans))).tolist() == [0, 0xFFFFFFFF]


def test_score_of_a_shape_that_sorts_before_the_weights_names_the_layer():
  # (8,) against fc1's (8, 12): any other shape is refused, not only one that sorts after.
  tx = gradual_pruning(optax.sgd(0.1), SCHEDULE, score=lambda w: jnp.abs(w).sum(axis=1))
  params = make_params()
  with pytest.raises(ValueError, match=r"score gave 'fc1/kernel' scores of shape \(8,\)"):
    tx.update(params, tx.init(params), params)


def test_an_initial_sparsity_above_one_is_refused_as_out_of_range():
  with pytest.raises(ValueError, match=r'initial_sparsity is 1.5; expected a value in \[0, 1\]'):
    GradualSchedule(t0=0, n=4, delta_t=1, initial_sparsity=1.5, final_sparsity=1.0)


def test_the_count_constant_is_the_search_when_the_counts_are_one_fewer_than_the_updates():
  # n = 5: six updates (a 6-entry table) reach five counts after the first (5 to 10 of 10).
  schedule = GradualSchedule(t0=0, n=5, delta_t=1, initial_sparsity=0.5, final_sparsity=1.0)
  count_at, first, last = _count_at(schedule, 10)
  assert (first, last) == (5, 10)
  consts = jax.make_jaxpr(count_at)(jnp.int32(0)).consts
  assert [np.size(c) for c in consts] == [5]
  host = [round(schedule.sparsity_at(k) * 10) for k in range(6)]
  assert jax.vmap(count_at)(jnp.arange(6, dtype=jnp.int32)).tolist() == host


def test_gradual_nm_takes_groups_larger_than_python_caches_small_integers():
  # 300:600 ends at s_f 0.5: the count check compares values (300 == 300), not int
  # objects. Built only: its 301 switch branches would take minutes to compile.
  schedule = GradualSchedule(t0=0, n=1, delta_t=1, initial_sparsity=0.0, final_sparsity=0.5)
  tx = gradual_pruning(optax.sgd(0.0), schedule, nm='300:600')
  assert callable(tx.init) and callable(tx.update)


def test_the_global_scope_splits_its_ranking_back_into_three_layers():
  # Three layers: the global keys are cut at every layer boundary, not only the first.
  shapes = {'fc1': (6, 5), 'fc2': (5, 4), 'fc3': (4, 3)}
  keys = jax.random.split(jax.random.key(5), len(shapes))
  params = {
    name: {'kernel': jax.random.normal(key, shape), 'bias': jnp.zeros(shape[-1])}
    for key, (name, shape) in zip(keys, shapes.items(), strict=True)
  }
  device, host = one_update(params, 0.6, scope='global'), global_sparsity_mask(params, 0.6)
  for name in shapes:
    np.testing.assert_array_equal(device[name]['kernel'], host[name]['kernel'], err_msg=name)


def test_a_schedule_cannot_be_changed_after_its_checks():
  # Frozen: n = 0 set afterwards would bypass __post_init__'s n >= 1.
  import dataclasses

  schedule = GradualSchedule(t0=0, n=4, delta_t=1, initial_sparsity=0.0, final_sparsity=0.5)
  with pytest.raises(dataclasses.FrozenInstanceError):
    schedule.n = 0
  assert hash(schedule) == hash(
    GradualSchedule(t0=0, n=4, delta_t=1, initial_sparsity=0.0, final_sparsity=0.5)
  )


def test_is_update_step_answers_with_a_jax_bool():
  # As documented: a bool, before, during and after the updates (also under jit).
  schedule = GradualSchedule(t0=2, n=3, delta_t=2, initial_sparsity=0.0, final_sparsity=0.5)
  for step in (0, 2, 3, 8, 9, 10):
    flag = schedule.is_update_step(step)
    assert flag.dtype == jnp.bool_ and jax.jit(schedule.is_update_step)(step).dtype == jnp.bool_
    assert bool(flag) == (step in (2, 4, 6, 8)), step
