"""Metrics of a model on a fixed dataset, as functions of its params.

A ``metric_fn(params) -> float`` is what :func:`pruning.sensitivity_analysis`
evaluates at every point of its sweep, so it must be cheap to call again and
again with new params of the same shapes: the data sits on the device in
fixed-size batches and the whole evaluation is one jitted function of the
params, compiled once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

PyTree = Any
MetricFn = Callable[[PyTree], float]


def classification_error(
  model: nnx.Module | Callable[[PyTree, jax.Array], jax.Array],
  images: np.ndarray,
  labels: np.ndarray,
  *,
  batch_size: int = 1000,
  preprocess: Callable[[jax.Array], jax.Array] | None = None,
  compiler_options: Mapping[str, Any] | None = None,
) -> MetricFn:
  """A ``metric_fn(params)``: top-1 error (%) of a classifier on a fixed dataset.

  The dataset is split into batches of ``batch_size`` once, the last one
  padded (the padding is not counted), and kept on the device; every call
  evaluates all of it in one jitted function of the params, which compiles
  once for all calls.

  Args:
    model: an nnx module (evaluated in eval mode: dropout off, batch norm on
      running averages; its non-``Param`` state is frozen at this call), or
      a pure ``logits_fn(params, images) -> logits``.
    images: ``(N, ...)`` inputs, any dtype.
    labels: ``(N,)`` integer labels.
    batch_size: examples per batch.
    preprocess: applied to each batch of ``images`` inside the jitted
      function (e.g. ``lambda x: x / 255`` for ``uint8`` images).
    compiler_options: XLA options for the jitted evaluation
      (``jax.jit(..., compiler_options=...)``), e.g.
      ``models.CPU_COMPILER_OPTIONS`` for LeNet-5 on a CPU.

  Returns:
    ``metric_fn(params) -> float``, the error in percent; for an nnx module,
    ``params`` is its ``nnx.state(model, nnx.Param)`` (or a masked copy).

  Raises:
    ValueError: empty data, images and labels of different lengths, or a
      batch size below 1.

  Examples:
    >>> import jax.numpy as jnp, numpy as np
    >>> logits_fn = lambda params, x: x @ params['w']
    >>> images = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> error = classification_error(logits_fn, images, np.array([0, 1, 1]), batch_size=2)
    >>> round(error({'w': jnp.eye(2)}), 2)
    33.33
  """
  if len(images) != len(labels) or len(images) == 0:
    raise ValueError(f'{len(images)} images and {len(labels)} labels; expected as many, and > 0')
  if batch_size < 1:
    raise ValueError(f'batch_size is {batch_size}; expected >= 1')
  if isinstance(model, nnx.Module):
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)

    def logits_fn(params: PyTree, x: jax.Array) -> jax.Array:
      copy = nnx.merge(graphdef, params, rest)
      copy.eval()
      return copy(x)

  else:
    logits_fn = model
  count = len(images)
  batches = -(-count // batch_size)
  pad = batches * batch_size - count
  padded = np.concatenate(
    [np.asarray(images), np.zeros((pad, *np.shape(images)[1:]), images.dtype)]
  )
  x = jnp.asarray(padded.reshape(batches, batch_size, *np.shape(images)[1:]))
  y = jnp.asarray(np.concatenate([labels, np.zeros(pad, labels.dtype)]).reshape(batches, -1))
  valid = jnp.asarray((np.arange(batches * batch_size) < count).reshape(batches, -1))

  @functools.partial(jax.jit, compiler_options=compiler_options)
  def errors(params: PyTree, x: jax.Array, y: jax.Array, valid: jax.Array) -> jax.Array:
    def batch_errors(batch):
      images, labels, keep = batch
      inputs = images if preprocess is None else preprocess(images)
      wrong = jnp.argmax(logits_fn(params, inputs), axis=-1) != labels
      return jnp.sum(wrong & keep)

    return jnp.sum(jax.lax.map(batch_errors, (x, y, valid)))

  def metric_fn(params: PyTree) -> float:
    return 100.0 * int(errors(params, x, y, valid)) / count

  return metric_fn
