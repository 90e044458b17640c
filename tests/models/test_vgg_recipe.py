"""The shipped VGG-16-CIFAR recipe does not kill its classifier in its first steps.

He-initialised, ``fc6``-``fc8`` started with a loss of 5-6.4 instead of
ln 10, and within 20 steps of the recipe's lr 0.05 (no warm-up, dropout 0.5)
nearly every ``fc6`` unit was dead for good (:mod:`models.init`;
``benchmarks/results/vgg_vs_torch.md`` at width 1/4). This test trains the
recipe as the pipeline sets it up (``pipeline.prepare``: model, masked SGD,
rate schedule, CIFAR-10 input with its augmentation) for the first epoch of
a small training subset, through the pipeline's own epoch loop, at width 1/8
with batch norm and without the recipe's warm-up (at the full rate from the
first step, where the He-initialised classifier died), and counts the ``fc6`` units that are positive for at
least one example of the next batch.

Measured at width 1/8 with batch norm, batch 128, seeds 0, 1, 2: after 25
steps 81-88 % of the 64 units live with the shipped initialisation, 6-9 %
with He-initialised ``fc6``-``fc8`` (first loss 2.36-2.39 against 5.2-6.4).
The bound sits between, with a factor of 2 to the first and 4 to the second.
Without batch norm the two overlap more (56-72 % against 11-41 % after 20-30
steps), so the test keeps it on, as the CPU runs and the benchmark do.
"""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from pruning.experiment import parallel, pipeline
from pruning.experiment.config import from_recipe
from pruning.experiment.run_state import RunState

RECIPE = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'configs' / 'vgg16_cifar.py'
STEPS = 25
LIVE_AT_LEAST = 0.4  # of fc6's units after STEPS steps: 0.81-0.88 measured, 0.06-0.09 if He
FIRST_LOSS_BELOW = 3.0  # ln 10 = 2.30: 2.36-2.39 measured, 5.2-6.4 if He


def _forward(compiled, params, rest, images):
  """Logits and relu(fc6) of the model in training mode, on a copy (its state is dropped)."""
  model = nnx.merge(compiled.graphdef, params, rest, copy=True)
  seen = []
  model.dropout6 = lambda x: seen.append(x) or x  # dropout6 takes relu(fc6(...))
  return model(images), seen[0]


def test_the_recipe_keeps_fc6_alive_through_its_first_steps(cifar10_data_dir, tmp_path):
  # The recipe's warm-up (200 steps) is switched off: the classifier died at the full
  # rate from the first step, and the initialisation alone must keep it alive there.
  config = from_recipe(
    RECIPE, width=1 / 8, batch_norm=True, warmup_steps=0, train_subset=128 * STEPS
  )
  assert config.learning_rate == 0.05  # the case that died
  prepared = pipeline.prepare(config, tmp_path, data_dir=str(cifar10_data_dir), progress=False)
  run, compiled = prepared.run, prepared.compiled
  assert run.steps_per_epoch == STEPS
  forward = jax.jit(lambda params, rest, images: _forward(compiled, params, rest, images))
  images, labels = next(iter(run.data.train_epoch(0)))
  logits, _ = forward(compiled.params, compiled.rest, images)
  first_loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())
  assert first_loss < FIRST_LOSS_BELOW, f'first loss {first_loss:.2f}, ln 10 = {math.log(10):.2f}'

  opt_state = parallel.replicate(run.tx.init(compiled.params), run.mesh)
  state = RunState(compiled.params, compiled.rest, opt_state, round=0, epoch=0, step=0)
  state, loss = pipeline._train_epoch(run, compiled.train, state, range(config.dense_epochs))
  assert state.step == STEPS and np.isfinite(loss)

  images, _ = next(iter(run.data.train_epoch(1)))
  _, hidden = forward(state.params, state.rest, images)
  live = float(jnp.mean(jnp.any(hidden > 0, axis=0)))
  assert live > LIVE_AT_LEAST, (
    f'after {STEPS} steps only {live:.1%} of fc6 units are positive for any of a batch '
    f'(bound {LIVE_AT_LEAST:.0%}): the classifier died'
  )
