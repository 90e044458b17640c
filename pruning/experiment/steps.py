"""The compiled train and evaluation steps of the prune-retrain pipeline.

Both are functional over an ``nnx.split`` model, ``(graphdef, params,
rest)``: ``params`` are the ``nnx.Param`` leaves the optimizer trains;
``rest`` is everything else the forward pass reads or writes (batch-norm
statistics, dropout RNG state), threaded through the train step and
returned updated. Each is one ``jax.jit`` over a data-parallel mesh
(:mod:`pruning.experiment.parallel`): params, ``rest`` and the optimizer state
replicated, the batch sharded. The optimizer is a ``masked_optimizer``, so
the mask is data in its state and pruning never recompiles a step; only a
change of static model configuration (a new dropout rate, §3.2) does.

Mixed precision is the model's business (its ``dtype``: float32 params,
bfloat16 computation); the steps take the loss in float32 whatever the
logits' dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from pruning import optimizer, regularization
from pruning.experiment import parallel

PyTree = Any
Penalty = Callable[[PyTree, PyTree], jax.Array]


def penalty(kind: Literal['l2', 'l1', 'none'], strength: float) -> Penalty:
  """``(params, mask) -> strength * penalty`` over the kept weights (§3.1).

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[3.0, 4.0]])}}
    >>> float(penalty('l1', 0.5)(params, {'fc': {'kernel': jnp.array([[True, False]])}}))
    1.5
  """
  if kind == 'none':
    return lambda params, mask: jnp.zeros(())
  if kind not in ('l1', 'l2'):
    raise ValueError(f"regularization is {kind!r}; expected 'l2', 'l1' or 'none'")
  term = regularization.l2_penalty if kind == 'l2' else regularization.l1_penalty
  return lambda params, mask: strength * term(params, mask)


def base_optimizer(
  kind: Literal['sgd', 'adamw'],
  learning_rate: float,
  *,
  momentum: float = 0.9,
  weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  """The optimizer that ``masked_optimizer`` wraps, its rate a hyperparameter.

  ``optax.inject_hyperparams`` keeps ``learning_rate`` as data in the state
  (``state.hyperparams['learning_rate']``), so the pipeline sets each step's
  rate on the host and a compiled step never holds a schedule. ``'sgd'`` is
  SGD with ``momentum`` (``weight_decay`` must be 0: an SGD run regularises
  through its penalty); ``'adamw'`` is AdamW with ``weight_decay`` decoupled
  from the gradient and applied to params of two or more dimensions only
  (kernels, embeddings), not to biases and norm scales. A ViT's class token
  and position embedding have three dimensions, so they are decayed too
  (timm exempts those two by name; a shape rule cannot tell them apart).

  Examples:
    >>> import jax.numpy as jnp
    >>> tx = base_optimizer('adamw', 0.1, weight_decay=0.5)
    >>> params = {'kernel': jnp.ones((1, 1)), 'bias': jnp.ones(1)}
    >>> updates, _ = tx.update({'kernel': jnp.ones((1, 1)), 'bias': jnp.ones(1)},
    ...                        tx.init(params), params)
    >>> float(updates['kernel'][0, 0]), float(updates['bias'][0])  # -0.1 * (1 + 0.5), -0.1 * 1
    (-0.15..., -0.1...)
  """
  if kind == 'sgd':
    if weight_decay:
      raise ValueError(f"weight_decay is {weight_decay!r}; the 'sgd' optimizer takes none")
    return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate, momentum=momentum)
  if kind == 'adamw':
    # mask is static: inject_hyperparams would call any other callable as a schedule.
    return optax.inject_hyperparams(optax.adamw, static_args=('mask',))(
      learning_rate=learning_rate, weight_decay=weight_decay, mask=_decayed
    )
  raise ValueError(f"optimizer is {kind!r}; expected 'sgd' or 'adamw'")


def _decayed(params: PyTree) -> PyTree:
  """AdamW's decay mask: the params of two or more dimensions (kernels, embeddings)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def train_step(
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
  penalty: Penalty,
  mesh: Mesh,
  compiler_options: Mapping[str, str] | None = None,
) -> Callable[..., tuple[PyTree, PyTree, PyTree, dict[str, jax.Array]]]:
  """``step(params, rest, opt_state, images, labels) -> (params, rest, opt_state, metrics)``.

  One optimizer step on the mean cross-entropy plus ``penalty`` over the weights
  the mask keeps. ``params`` and ``opt_state`` are donated. ``metrics`` holds
  the mean cross-entropy ``'loss'`` (without the penalty).
  ``compiler_options`` go to XLA (``jax.jit(..., compiler_options=...)``).
  """

  def step(params, rest, opt_state, images, labels):
    def loss_fn(params):
      # Fresh Variables in this trace: batch norm and dropout update them in place.
      model = nnx.merge(graphdef, params, rest, copy=True)
      logits = model(images).astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      total = loss + penalty(params, optimizer.get_mask(opt_state))
      return total, (loss, nnx.state(model, nnx.Not(nnx.Param)))

    (_, (loss, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, {'loss': loss}

  state, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(
    step,
    in_shardings=(state, state, state, batch, batch),
    out_shardings=(state, state, state, state),
    donate_argnums=(0, 2),
    compiler_options=dict(compiler_options or {}) or None,
  )


def error_count_step(
  graphdef: nnx.GraphDef,
  mesh: Mesh,
  top_k: Sequence[int] = (1,),
  compiler_options: Mapping[str, str] | None = None,
) -> Callable[..., dict[int, jax.Array]]:
  """``count(params, rest, images, labels, valid) -> {k: errors}`` over the valid examples.

  An example is a top-``k`` error when its label is not among the ``k``
  highest logits; ``valid`` is ``False`` for the padding of a split's last
  batch. Top-1 uses ``argmax`` (ties go to the first class).
  """

  def count(params, rest, images, labels, valid):
    logits = nnx.merge(graphdef, params, rest)(images).astype(jnp.float32)
    errors = {}
    for k in top_k:
      if k == 1:
        wrong = jnp.argmax(logits, axis=-1) != labels
      else:
        _, top = jax.lax.top_k(logits, k)
        wrong = ~jnp.any(top == labels[:, None], axis=-1)
      errors[k] = jnp.sum(wrong & valid)
    return errors

  state, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(count, in_shardings=(state, state, batch, batch, batch), out_shardings=state)


def gradient_step(
  graphdef: nnx.GraphDef,
  mesh: Mesh,
  compiler_options: Mapping[str, str] | None = None,
) -> Callable[..., PyTree]:
  """``grads(params, rest, images, labels) -> grads`` of the mean cross-entropy.

  The gradients a criterion scores from (first-order Taylor, Molchanov et
  al. 2019): of the loss without the penalty, with the model of
  ``graphdef`` as it is (pass the evaluation-mode one: no dropout, running
  batch-norm averages, so the result depends only on the params and the
  batch). Nothing is updated.
  """

  def grads(params, rest, images, labels):
    def loss_fn(params):
      logits = nnx.merge(graphdef, params, rest, copy=True)(images).astype(jnp.float32)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return jax.grad(loss_fn)(params)

  state, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(
    grads,
    in_shardings=(state, state, batch, batch),
    out_shardings=state,
    compiler_options=dict(compiler_options or {}) or None,
  )


class Steps(NamedTuple):
  """A split model and its compiled steps, for its current static configuration."""

  graphdef: nnx.GraphDef  # the model in training mode (dropout on, batch statistics)
  params: PyTree  # nnx.Param leaves
  rest: PyTree  # every other nnx Variable (batch-norm statistics, RNG state)
  train: Callable[..., Any]  # see train_step
  count_errors: Callable[..., Any]  # see error_count_step; the model in evaluation mode
  gradients: Callable[..., Any]  # see gradient_step; the model in evaluation mode


def compile_steps(
  model: nnx.Module,
  tx: optax.GradientTransformation,
  penalty: Penalty,
  mesh: Mesh,
  top_k: Sequence[int] = (1,),
  compiler_options: Mapping[str, str] | None = None,
) -> Steps:
  """Splits ``model`` and builds its train step (training mode), error count and gradients
  (eval mode). Each compiles at its first call, so a run that never asks for gradients
  never compiles them.

  Evaluation runs the model with ``model.eval()`` (no dropout, running
  batch-norm averages); ``model`` is left in training mode.
  """
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  params, rest = parallel.replicate((params, rest), mesh)
  return Steps(
    graphdef,
    params,
    rest,
    train_step(graphdef, tx, penalty, mesh, compiler_options),
    error_count_step(eval_graphdef, mesh, top_k, compiler_options),
    gradient_step(eval_graphdef, mesh, compiler_options),
  )
