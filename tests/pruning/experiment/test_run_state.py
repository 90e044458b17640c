"""Tests for pruning.experiment.run_state and its checkpoints: state -> disk -> state is exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from pruning import optimizer
from pruning.experiment import checkpoints, parallel
from pruning.experiment.run_state import RunState


class _Net(nnx.Module):
  """Kernels, biases, batch-norm statistics and a dropout RNG: every kind of leaf a run saves."""

  def __init__(self, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(6, 4, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.fc2 = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    return self.fc2(self.drop(self.bn(self.fc1(x))))


def _state(seed: int, round_index: int, epoch: int, step: int) -> RunState:
  """A replicated state with a pruned mask, momentum, a rate and trained batch-norm statistics."""
  mesh = parallel.data_mesh(jax.devices()[:1])
  model = _Net(nnx.Rngs(seed))
  model(jnp.ones((5, 6)) * (seed + 1))  # moves the batch-norm statistics and the RNG count
  _, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optimizer.masked_optimizer(
    optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)
  )
  opt_state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, seed + 0.25), params)
  _, opt_state = tx.update(grads, opt_state, params)
  mask = jax.tree.map(lambda m: m, optimizer.get_mask(opt_state))
  mask['fc1']['kernel'] = jnp.arange(24).reshape(6, 4) % (seed + 2) == 0
  opt_state = optimizer.replace_mask(opt_state, mask)
  state = RunState(params, rest, opt_state, round=round_index, epoch=epoch, step=step)
  return parallel.replicate(state, mesh)


def _host(leaf):
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf)


def _assert_states_equal(got: RunState, want: RunState, assert_trees_equal) -> None:
  assert (got.round, got.epoch, got.step) == (want.round, want.epoch, want.step)
  for field in ('params', 'rest', 'opt_state'):
    assert jax.tree.structure(getattr(got, field)) == jax.tree.structure(getattr(want, field))
    assert_trees_equal(
      jax.tree.map(_host, getattr(got, field)), jax.tree.map(_host, getattr(want, field))
    )


def test_a_round_checkpoint_restores_the_state_exactly(tmp_path, assert_trees_equal):
  state, like = _state(1, round_index=2, epoch=5, step=37), _state(0, 0, 0, 0)
  saved = checkpoints.RoundCheckpoints(tmp_path / 'checkpoints')
  saved.save(state)
  assert saved.latest_round() == 2
  restored = saved.restore(2, like, epoch=5)
  saved.close()
  _assert_states_equal(restored, state, assert_trees_equal)
  # What is on disk: the form existing runs, export.restore_run and the tests read.
  raw = ocp.StandardCheckpointer().restore((tmp_path / 'checkpoints' / '2' / 'default').absolute())
  assert sorted(raw) == ['opt_state', 'params', 'rest', 'round', 'step']
  assert (int(raw['round']), int(raw['step'])) == (2, 37)


def test_an_epoch_checkpoint_restores_the_state_and_its_epoch_exactly(tmp_path, assert_trees_equal):
  state, like = _state(1, round_index=1, epoch=4, step=20), _state(0, 0, 0, 0)
  in_round = checkpoints.EpochCheckpoint(tmp_path / 'epoch_checkpoint')
  assert in_round.latest_epoch() is None
  in_round.save(state)
  # Saved under the global index of the last epoch trained, as runs have always been.
  assert in_round.latest_epoch() == 3
  restored = in_round.restore(3, like)
  _assert_states_equal(restored, state, assert_trees_equal)
  in_round.clear()
  assert not (tmp_path / 'epoch_checkpoint').exists()


def test_the_checkpoint_tree_is_built_and_read_in_one_place():
  state = RunState(params={'w': 1.0}, rest={'n': 2}, opt_state=(3,), round=1, epoch=7, step=9)
  tree = state.checkpoint()
  assert tree == {'params': {'w': 1.0}, 'rest': {'n': 2}, 'opt_state': (3,), 'round': 1, 'step': 9}
  assert RunState.from_checkpoint(tree, epoch=7) == state
  mid = state.checkpoint(mid_round=True)
  assert mid == {**tree, 'epoch': 6}
  assert RunState.from_checkpoint(mid) == state
  with pytest.raises(ValueError, match='checkpoint of round 1 holds no epoch'):
    RunState.from_checkpoint(tree)
