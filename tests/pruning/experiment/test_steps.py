"""The compiled steps: train step vs a hand-written SGD step; bfloat16 precision; top-k errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models import create_model
from pruning import criteria, masks, optimizer
from pruning.experiment import parallel, steps

# (name, fan_in, fan_out) of the reference MLP's layers.
LAYERS = (('fc1', 5, 8), ('fc2', 8, 8), ('fc3', 8, 4))
BATCH = 8
# One rate per step, neither constant nor monotone: a step that ignored the
# schedule, or read it at the wrong count, takes a different step.
LEARNING_RATES = (0.1, 0.3, 0.05)
MOMENTUM = 0.9
# Large enough that the penalty's gradient is a sizeable part of every update
# (0.1 * |w| or 0.1 against loss gradients of order 0.1-1).
STRENGTH = 0.1
# bfloat16 keeps 8 significant bits: a rounding is off by at most 2**-9 of the
# value, neighbouring values are 2**-8 apart. The bfloat16 forward and backward
# passes round activations, cotangents and gradients, so each gradient entry is
# off by about one such spacing of the gradients' own scale. Params, momentum
# and the update arithmetic stay float32, so the error scales with the updates,
# not with the weights: a leaf is compared with atol = 2**-6 (four spacings) of
# its largest reference trace entry (trace) or of its largest movement since the
# start (params). Measured against this reference run op by op (un-jitted): at
# most 0.7 * 2**-8 of that scale; jitted on CPU, XLA happens to round exactly as
# the step does, which other fusions and backends need not. An rtol on the
# weights themselves (|w| ~ 0.5) would exceed a whole update (lr * trace ~ 0.03)
# and could not see a wrong one; each mistake the test lists is 35 or more
# tolerances away.
BFLOAT16_ATOL = 2**-6
# float32: the same arithmetic in a different order agrees to a few ulps.
FLOAT32_TOLERANCE = {'rtol': 1e-5, 'atol': 1e-6}
# The mean cross-entropy is computed in float32 from bfloat16 logits, each off
# by about one spacing (2**-8) of the logits' scale (~1); the loss moves by at
# most twice the largest logit error. Measured (op-by-op reference): at most 4.5e-4 relative.
LOSS_RTOL = {jnp.float32: 1e-5, jnp.bfloat16: 2**-7}


class MLP(nnx.Module):
  """Three ``nnx.Linear`` layers with ReLU; float32 params, ``dtype`` computation."""

  def __init__(self, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
    for name, fan_in, fan_out in LAYERS:
      # Non-zero biases: the reference must add them, not only train them.
      layer = nnx.Linear(
        fan_in, fan_out, dtype=dtype, bias_init=nnx.initializers.normal(0.5), rngs=rngs
      )
      setattr(self, name, layer)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(self.fc1(x))
    x = jax.nn.relu(self.fc2(x))
    return self.fc3(x)


def _kept(shape: tuple[int, int]) -> np.ndarray:
  """A known mask: every third connection, along diagonals, is pruned."""
  rows, cols = np.indices(shape)
  return (rows + 2 * cols) % 3 != 0


def _schedule(count: jax.Array) -> jax.Array:
  return jnp.asarray(LEARNING_RATES)[count]


def _reference_loss(params, kept, images, labels, strength, dtype, penalty):
  """``(cross-entropy + strength * penalty, cross-entropy)`` of the MLP, written out."""
  x = images
  for i, (name, _, _) in enumerate(LAYERS):
    # Mixed precision: float32 params cast to the computation dtype.
    w, b = params[name]['kernel'].astype(dtype), params[name]['bias'].astype(dtype)
    x = x.astype(dtype) @ w + b
    if i < len(LAYERS) - 1:
      x = jnp.maximum(x, 0)
  logits = x.astype(jnp.float32)
  log_probs = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
  cross_entropy = -jnp.mean(log_probs[jnp.arange(labels.shape[0]), labels])
  term = {'l2': lambda w: w**2 / 2, 'l1': jnp.abs, 'none': jnp.zeros_like}[penalty]
  total = sum(
    jnp.sum(jnp.where(kept[name], term(params[name]['kernel']), 0.0)) for name, _, _ in LAYERS
  )
  return cross_entropy + strength * total, cross_entropy


_reference_grad = jax.jit(
  jax.grad(_reference_loss, has_aux=True), static_argnames=('dtype', 'penalty')
)


def _reference_run(
  params,
  kept,
  images,
  labels,
  dtype,
  penalty,
  *,
  strength=STRENGTH,
  learning_rates=LEARNING_RATES,
  momentum=MOMENTUM,
):
  """``[(params, trace, loss)]`` after each SGD-with-momentum step, as numpy.

  optax.sgd's convention: ``trace = g + momentum * trace; param -= lr * trace``.
  The gradients of pruned weights are zeroed before the trace and pruned
  weights are held at 0.0. ``loss`` is the cross-entropy at the params the
  step started from.
  """
  trace = jax.tree.map(np.zeros_like, params)
  history = []
  for lr in learning_rates:
    grads, loss = _reference_grad(
      params, kept, images, labels, strength, dtype=dtype, penalty=penalty
    )
    grads = jax.tree.map(np.asarray, grads)
    new_params, new_trace = {}, {}
    for name, _, _ in LAYERS:
      keep = kept[name]
      t_kernel = np.where(keep, grads[name]['kernel'], 0.0) + momentum * trace[name]['kernel']
      t_bias = grads[name]['bias'] + momentum * trace[name]['bias']
      new_trace[name] = {'kernel': t_kernel, 'bias': t_bias}
      new_params[name] = {
        'kernel': np.where(keep, params[name]['kernel'] - lr * t_kernel, 0.0),
        'bias': params[name]['bias'] - lr * t_bias,
      }
    params, trace = new_params, new_trace
    history.append((params, trace, float(loss)))
  return history


def _nested(tree) -> dict[str, dict[str, np.ndarray]]:
  """``{'fc1': {'kernel': array}}`` host copies of a params-shaped nnx State."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = jax.tree_util.keystr(path, simple=True, separator='/').removesuffix('/value')
    layer, kind = name.split('/')
    out.setdefault(layer, {})[kind] = np.array(leaf)
  return out


def _train(tx, penalty, kept, images, labels, count, dtype=jnp.float32):
  """The MLP's initial params and ``[(params, opt_state, loss)]``, host copies, after each
  of ``count`` ``compile_steps().train`` steps with ``tx`` (a ``masked_optimizer``) holding
  ``kept``."""
  mesh = parallel.data_mesh(jax.devices()[:1])
  compiled = steps.compile_steps(MLP(nnx.Rngs(0), dtype), tx, penalty, mesh)
  params, rest = compiled.params, compiled.rest
  initial = _nested(params)  # copied now: the step donates the params
  mask = {name: {'kernel': jnp.asarray(kept[name]), 'bias': None} for name, _, _ in LAYERS}
  opt_state = parallel.replicate(optimizer.replace_mask(tx.init(params), mask), mesh)
  batch = parallel.global_batch(mesh, images, labels)
  history = []
  for _ in range(count):
    params, rest, opt_state, metrics = compiled.train(params, rest, opt_state, *batch)
    # Host copies: the next step donates params and opt_state.
    history.append((_nested(params), jax.device_get(opt_state), np.asarray(metrics['loss'])))
  return initial, history


def _run_train_step(dtype, penalty, kept, images, labels):
  """The initial params and ``[(params, trace, loss)]`` after each ``compile_steps().train``."""
  tx = optimizer.masked_optimizer(optax.sgd(_schedule, momentum=MOMENTUM))
  penalty_fn = steps.penalty(penalty, STRENGTH)
  initial, history = _train(tx, penalty_fn, kept, images, labels, len(LEARNING_RATES), dtype)
  return initial, [
    (params, _nested(optax.tree_utils.tree_get(opt_state, 'trace')), loss)
    for params, opt_state, loss in history
  ]


def _excess(actual, expected, rtol, atol) -> float:
  """How many tolerances apart: ``<= 1`` passes ``assert_allclose(rtol=, atol=)``."""
  return float(np.max(np.abs(actual - expected) / (atol + rtol * np.abs(expected))))


def _distances(history, reference, initial, kept, dtype) -> dict[str, float]:
  """``{'step 1 trace fc2/kernel': tolerances apart}`` over kept weights, biases and traces."""
  out = {}
  for step, ((params, trace, _), (want_params, want_trace, _)) in enumerate(
    zip(history, reference, strict=True)
  ):
    for name, _, _ in LAYERS:
      for leaf in ('kernel', 'bias'):
        kept_entries = kept[name] if leaf == 'kernel' else slice(None)
        moved = np.abs(want_params[name][leaf] - initial[name][leaf])[kept_entries].max()
        for what, got, want, scale in (
          ('params', params, want_params, moved),
          ('trace', trace, want_trace, np.abs(want_trace[name][leaf]).max()),
        ):
          tol = FLOAT32_TOLERANCE
          if dtype == jnp.bfloat16:
            tol = {'rtol': 0.0, 'atol': BFLOAT16_ATOL * scale}
          out[f'step {step} {what} {name}/{leaf}'] = _excess(
            got[name][leaf][kept_entries], want[name][leaf][kept_entries], **tol
          )
  return out


@functools.cache
def _batch() -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  images = rng.normal(size=(BATCH, LAYERS[0][1])).astype(np.float32)
  return images, rng.integers(0, LAYERS[-1][2], BATCH).astype(np.int32)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16], ids=['float32', 'bfloat16'])
@pytest.mark.parametrize('penalty', ['l2', 'l1', 'none'])
def test_train_step_matches_hand_written_sgd_momentum_step(penalty, dtype):
  kept = {name: _kept((fan_in, fan_out)) for name, fan_in, fan_out in LAYERS}
  images, labels = _batch()
  initial, history = _run_train_step(dtype, penalty, kept, images, labels)
  # The pruned weights start non-zero: the first step must land them on 0.0.
  for name, _, _ in LAYERS:
    assert np.all(initial[name]['kernel'][~kept[name]] != 0.0), name
  reference = _reference_run(initial, kept, images, labels, dtype, penalty)

  for step, (params, trace, loss) in enumerate(history):
    assert loss.shape == () and loss.dtype == np.float32, f'step {step}: loss {loss!r}'
    for name, _, _ in LAYERS:
      for kind in ('kernel', 'bias'):
        assert params[name][kind].dtype == np.float32, f'step {step}: {name}/{kind}'
        assert trace[name][kind].dtype == np.float32, f'step {step}: trace {name}/{kind}'
      pruned = ~kept[name]
      # Exactly zero: no gradient, momentum or bfloat16 rounding reaches them.
      assert np.all(params[name]['kernel'][pruned] == 0.0), f'step {step}: {name}/kernel'
      assert np.all(trace[name]['kernel'][pruned] == 0.0), f'step {step}: trace {name}/kernel'
  distances = _distances(history, reference, initial, kept, dtype)
  outside = {where: d for where, d in distances.items() if d > 1}
  assert not outside, f'tolerances apart from the reference: {outside}'
  np.testing.assert_allclose(
    [loss for _, _, loss in history],
    [loss for _, _, loss in reference],
    rtol=LOSS_RTOL[dtype],
    err_msg="metrics['loss'] after each step",
  )

  # The tolerances above cannot pass a wrong update: each of these mistakes
  # moves the reference itself far outside them.
  wrong = {
    'constant learning rate': {'learning_rates': (LEARNING_RATES[0],) * len(LEARNING_RATES)},
    'no momentum': {'momentum': 0.0},
  }
  if penalty != 'none':
    wrong['no penalty'] = {'strength': 0.0}
    wrong['penalty doubled (l2: w**2 for w**2/2)'] = {'strength': 2 * STRENGTH}
  for mistake, kwargs in wrong.items():
    mistaken = _reference_run(initial, kept, images, labels, dtype, penalty, **kwargs)
    apart = max(_distances(mistaken, reference, initial, kept, dtype).values())
    assert apart > 10, f'{mistake}: only {apart:.1f} tolerances from the reference'


def test_bfloat16_step_keeps_float32_params_and_exact_zeros():
  mesh = parallel.data_mesh(jax.devices()[:1])
  model = create_model('vgg16_cifar', nnx.Rngs(0), width=1 / 16, dtype=jnp.bfloat16)
  learning_rate = 0.05
  tx = optimizer.masked_optimizer(optax.sgd(learning_rate, momentum=0.9))
  compiled = steps.compile_steps(model, tx, steps.penalty('l2', 5e-4), mesh)
  params, rest = compiled.params, compiled.rest
  mask = criteria.sparsity_mask(params, 0.9)
  opt_state = optimizer.replace_mask(tx.init(params), mask)
  params, opt_state = parallel.replicate((masks.apply_mask(params, mask), opt_state), mesh)
  rng = np.random.default_rng(0)
  batch = parallel.global_batch(
    mesh,
    rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
    rng.integers(0, 10, 8).astype(np.int32),
  )
  before = jax.tree.map(np.array, params)
  for _ in range(2):
    last = jax.tree.map(np.array, params)  # copied: the step donates the params
    params, rest, opt_state, metrics = compiled.train(params, rest, opt_state, *batch)
  assert np.isfinite(float(metrics['loss']))
  # The dropout RNG state is threaded through: each step drew new dropout masks.
  counts = [int(count) for count in jax.tree.leaves(nnx.filter_state(rest, nnx.RngCount))]
  assert counts == [2, 2], counts
  trace = optax.tree_utils.tree_get(opt_state, 'trace')
  kernels = 0
  for (path, leaf), old, previous, momentum in zip(
    jax.tree_util.tree_leaves_with_path(params),
    jax.tree.leaves(before),
    jax.tree.leaves(last),
    jax.tree.leaves(trace),
    strict=True,
  ):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    assert leaf.dtype == jnp.float32, name
    assert momentum.dtype == jnp.float32, name
    value, momentum = np.asarray(leaf), np.asarray(momentum)
    # The update is applied to the float32 master weights in float32: a
    # detour through bfloat16 would be off by ~2**-9 of the weight, not ~1e-7.
    np.testing.assert_allclose(
      value, previous - np.float32(learning_rate) * momentum, rtol=1e-6, err_msg=name
    )
    keep = mask
    for key in name.removesuffix('/value').split('/'):
      keep = keep[key]
    if keep is None:
      continue
    kernels += 1
    keep = np.asarray(keep)
    assert np.all(value[~keep] == 0.0), name  # exactly zero, not a bfloat16 rounding of it
    assert np.all(momentum[~keep] == 0.0), name
    # Every survivor trained: the L2 term alone gives each a non-zero gradient.
    assert np.all(value[keep] != old[keep]), name
  assert kernels == 16


def test_error_counts_top1_top5_over_valid_examples_only():
  class Fixed(nnx.Module):
    """Logits are the input itself: the test chooses every ranking."""

    def __init__(self):
      self.scale = nnx.Param(jnp.ones(()))

    def __call__(self, x):
      return x * self.scale

  mesh = parallel.data_mesh(jax.devices()[:1])
  graphdef, params, rest = nnx.split(Fixed(), nnx.Param, ...)
  count = steps.error_count_step(graphdef, mesh, top_k=(1, 5))
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(12, 20)).astype(np.float32)
  labels = rng.integers(0, 20, 12).astype(np.int32)
  valid = np.arange(12) < 9
  errors = count(params, rest, *parallel.global_batch(mesh, logits, labels, valid))
  ranks = (logits > logits[np.arange(12), labels][:, None]).sum(axis=1)
  assert int(errors[1]) == int(((ranks >= 1) & valid).sum())
  assert int(errors[5]) == int(((ranks >= 5) & valid).sum())
  assert int(errors[5]) < int(errors[1])


class DropoutMLP(nnx.Module):
  """The MLP with a heavy dropout after fc1: the gradients must be taken without it."""

  def __init__(self, rngs: nnx.Rngs):
    self.mlp = MLP(rngs)
    self.dropout = nnx.Dropout(0.9, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.dropout(jax.nn.relu(self.mlp.fc1(x)))
    x = jax.nn.relu(self.mlp.fc2(x))
    return self.mlp.fc3(x)


def _flat(tree) -> dict[str, np.ndarray]:
  """``{'mlp/fc1/kernel': array}`` host copies of an nnx State."""
  return {
    jax.tree_util.keystr(path, simple=True, separator='/').removesuffix('/value'): np.asarray(v)
    for path, v in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_gradients_are_the_cross_entropy_gradients_of_the_evaluation_model():
  mesh = parallel.data_mesh(jax.devices()[:1])
  compiled = steps.compile_steps(
    DropoutMLP(nnx.Rngs(0)),
    optimizer.masked_optimizer(optax.sgd(0.1)),
    steps.penalty('l2', 1.0),
    mesh,
  )
  images, labels = _batch()
  batch = parallel.global_batch(mesh, images, labels)
  grads = _flat(compiled.gradients(compiled.params, compiled.rest, *batch))
  again = _flat(compiled.gradients(compiled.params, compiled.rest, *batch))
  params = _flat(compiled.params)

  def loss(params):  # the model without dropout, the loss without the penalty
    x = jnp.asarray(images)
    for i, (name, _, _) in enumerate(LAYERS):
      x = x @ params[f'mlp/{name}/kernel'] + params[f'mlp/{name}/bias']
      if i < len(LAYERS) - 1:
        x = jax.nn.relu(x)
    return optax.softmax_cross_entropy_with_integer_labels(x, jnp.asarray(labels)).mean()

  expected = jax.grad(loss)({name: jnp.asarray(v) for name, v in params.items()})
  assert set(grads) == set(expected)
  for name, value in expected.items():
    np.testing.assert_allclose(grads[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_array_equal(again[name], grads[name])  # no dropout draw


ADAMW_RATE = 0.01
WEIGHT_DECAY = 0.5  # large: a decay on the wrong leaves, or coupled to the gradient, shows


def _reference_adamw(params, kept, images, labels, *, decay_biases=False, decoupled=True, steps=3):
  """``[params]`` after each AdamW step, written out (optax's ``adamw`` convention).

  ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``, bias-corrected,
  ``p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p)`` with the decay on kernels
  only; pruned gradients zeroed and pruned weights held at 0.0. The keywords
  make the mistakes the test must tell apart: decaying biases, or Adam with
  an L2 gradient (``g + wd p``) in place of the decoupled decay.
  """
  b1, b2, eps = 0.9, 0.999, 1e-8
  m = jax.tree.map(np.zeros_like, params)
  v = jax.tree.map(np.zeros_like, params)
  history = []
  for t in range(1, steps + 1):
    grads, _ = _reference_grad(params, kept, images, labels, 0.0, dtype=jnp.float32, penalty='none')
    new = {}
    for name, _, _ in LAYERS:
      new[name] = {}
      for leaf in ('kernel', 'bias'):
        keep = kept[name] if leaf == 'kernel' else np.ones_like(params[name][leaf], bool)
        p = params[name][leaf]
        decay = WEIGHT_DECAY if (leaf == 'kernel' or decay_biases) else 0.0
        g = np.where(keep, np.asarray(grads[name][leaf]), 0.0)
        if not decoupled:
          g = g + np.where(keep, decay * p, 0.0)
        m[name][leaf] = b1 * m[name][leaf] + (1 - b1) * g
        v[name][leaf] = b2 * v[name][leaf] + (1 - b2) * g**2
        m_hat, v_hat = m[name][leaf] / (1 - b1**t), v[name][leaf] / (1 - b2**t)
        step = m_hat / (np.sqrt(v_hat) + eps) + (decay * p if decoupled else 0.0)
        new[name][leaf] = np.where(keep, p - ADAMW_RATE * step, 0.0)
    params = new
    history.append(params)
  return history


def test_adamw_train_step_matches_hand_written_adamw():
  kept = {name: _kept((fan_in, fan_out)) for name, fan_in, fan_out in LAYERS}
  images, labels = _batch()
  tx = optimizer.masked_optimizer(
    steps.base_optimizer('adamw', ADAMW_RATE, weight_decay=WEIGHT_DECAY)
  )
  initial, steps_taken = _train(tx, steps.penalty('none', 0.0), kept, images, labels, 3)
  history = [params for params, _, _ in steps_taken]
  reference = _reference_adamw(initial, kept, images, labels)

  def apart(got, want) -> float:
    return max(
      _excess(got[n][leaf], want[n][leaf], **FLOAT32_TOLERANCE)
      for n, _, _ in LAYERS
      for leaf in ('kernel', 'bias')
    )

  for step, (got, want) in enumerate(zip(history, reference, strict=True)):
    for name, _, _ in LAYERS:
      assert np.all(got[name]['kernel'][~kept[name]] == 0.0), f'step {step}: {name}/kernel'
    assert apart(got, want) <= 1, f'step {step}: {apart(got, want):.1f} tolerances apart'
  for mistake, kwargs in {
    'biases decayed': {'decay_biases': True},
    'L2 gradient instead of decoupled decay': {'decoupled': False},
  }.items():
    mistaken = _reference_adamw(initial, kept, images, labels, **kwargs)
    assert apart(mistaken[-1], reference[-1]) > 10, mistake


def test_base_optimizer_refuses_what_it_does_not_take():
  with pytest.raises(ValueError, match=r"weight_decay is 0\.1; the 'sgd' optimizer takes none"):
    steps.base_optimizer('sgd', 0.1, weight_decay=0.1)
  with pytest.raises(ValueError, match="optimizer is 'adam'; expected 'sgd' or 'adamw'"):
    steps.base_optimizer('adam', 0.1)
