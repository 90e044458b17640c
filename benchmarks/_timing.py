"""Timing helpers shared by the benchmarks that time train steps and forward passes.

Every call is blocked until its result is ready, so a time is that of the
computation, not of its dispatch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


def sgd_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Callable[..., Any]:
  """``step(params, opt_state, x, y) -> (params, opt_state, loss)``: one jitted step of
  ``tx`` on the mean cross-entropy of a model without other state (params and
  optimizer state donated)."""

  def step(params, opt_state, x, y):
    def loss_fn(params):
      logits = nnx.merge(graphdef, params)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def forward_call(
  model: nnx.Module, x: Any, compiler_options: dict[str, str] | None = None
) -> Callable[[], Any]:
  """A call of ``model``'s jitted forward pass on ``x`` (the model as it is: put it in
  evaluation mode first), compiled with ``compiler_options`` at its first call."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(
    lambda state, x: nnx.merge(graphdef, state)(x), compiler_options=compiler_options or None
  )
  return lambda: forward(state, x)


def time_steps(step: Callable[..., Any], carry: Any, x: Any, y: Any, count: int):
  """Runs ``count`` steps from ``carry = (params, opt_state)``; returns the new carry and
  each step's seconds."""
  times = []
  params, opt_state = carry
  for _ in range(count):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x, y)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  return (params, opt_state), times


def time_calls(call: Callable[[], Any], count: int) -> list[float]:
  """Seconds of each of ``count`` calls of ``call()``."""
  times = []
  for _ in range(count):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return times


def cross_entropy_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
  """``step(params, rest, opt_state, x, y) -> (params, rest, opt_state, loss)``: one
  unjitted step of ``tx`` on the mean cross-entropy of ``nnx.merge(graphdef, params,
  rest)``, its other state (batch statistics) updated as the model updates it; the
  pipeline's step (:func:`pruning.experiment.steps.train_step`) without masks or
  regulariser."""

  def step(params, rest, opt_state, x, y):
    def loss_fn(params):
      model = nnx.merge(graphdef, params, rest, copy=True)
      logits = model(x).astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, nnx.state(model, nnx.Not(nnx.Param))

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss

  return step


def model_train_step(
  model: nnx.Module, compiler_options: dict[str, str] | None = None
) -> tuple[Callable[..., Any], Any]:
  """``(step, carry)``: :func:`cross_entropy_step` of SGD with momentum on ``model`` in
  training mode, jitted, as ``step(carry, x, y) -> (carry, loss)``, from copies of the
  model's parameters and other state (the carry is donated; the model itself is left
  in evaluation mode)."""
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  model.eval()
  tx = optax.sgd(0.01, momentum=0.9)
  inner = cross_entropy_step(graphdef, tx)

  def step(carry, x, y):
    *carry, loss = inner(*carry, x, y)
    return tuple(carry), loss

  params, rest = jax.tree.map(jnp.copy, (params, rest))  # donated: not the model's own
  jitted = jax.jit(step, donate_argnums=0, compiler_options=compiler_options or None)
  return jitted, (params, rest, tx.init(params))


def median_times(
  models: Mapping[Hashable, nnx.Module],
  image_shape: Sequence[int],
  num_classes: int,
  batches: Sequence[int],
  train_batch: int | None,
  repeats: int,
  blocks: int = 5,
  seed: int = 0,
  compiler_options: dict[str, str] | None = None,
) -> dict[Hashable, dict[str, float]]:
  """Median seconds per call of each model: ``{name: {'forward@<batch>': s, ...,
  'train@<train_batch>': s}}`` (no train step when ``train_batch`` is ``None``).

  The forward passes run in evaluation mode (put the models there first), the
  train step is :func:`model_train_step`; random inputs (the time of a dense
  computation depends on the shapes, not the values). Each kind of call is
  compiled and warmed up, then timed in ``blocks`` alternating blocks of the
  models, so that a slow moment of the machine falls on all of them.
  """
  rng = np.random.default_rng(seed)
  calls: dict[str, dict[Hashable, Callable[[], Any]]] = {}
  for batch in batches:
    x = jnp.asarray(rng.standard_normal((batch, *image_shape)), jnp.float32)
    calls[f'forward@{batch}'] = {
      name: forward_call(model, x, compiler_options) for name, model in models.items()
    }
  if train_batch is not None:
    x = jnp.asarray(rng.standard_normal((train_batch, *image_shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, num_classes, train_batch), jnp.int32)
    calls[f'train@{train_batch}'] = {}
    for name, model in models.items():
      step, carry = model_train_step(model, compiler_options)
      box = {'carry': carry}

      def train(step=step, box=box):
        box['carry'], loss = step(box['carry'], x, y)
        return loss

      calls[f'train@{train_batch}'][name] = train
  times = {key: {name: [] for name in models} for key in calls}
  for key, variants in calls.items():
    for call in variants.values():
      time_calls(call, 3)  # compile and warm up
    per_block = max(1, repeats // blocks)
    for _ in range(blocks):
      for name, call in variants.items():
        times[key][name].extend(time_calls(call, per_block))
  return {name: {key: statistics.median(times[key][name]) for key in calls} for name in models}
