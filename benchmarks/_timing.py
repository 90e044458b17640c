"""Timing helpers shared by the benchmarks that time train steps and forward passes.

Every call is blocked until its result is ready, so a time is that of the
computation, not of its dispatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
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
