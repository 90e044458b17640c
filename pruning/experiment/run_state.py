"""The state a pipeline run carries from step to step, and its form in a checkpoint.

:class:`RunState` is everything the train loop needs to continue: the params,
the model's other state, the optimizer state (which holds the mask) and where
the run is (round, epoch, step). A checkpoint is this state as a tree of
arrays: :meth:`RunState.checkpoint` builds it and :meth:`RunState.from_checkpoint`
reads it back, the one place each way, so a round checkpoint, an epoch
checkpoint and a resumed run agree on what a checkpoint holds
(:mod:`pruning.experiment.checkpoints` writes and restores them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

PyTree = Any


class RunState(NamedTuple):
  """A run's state between two train steps (Han et al. 2015, §3: train, prune, retrain).

  The arrays are replicated over the run's ``('data',)`` mesh. The mask is
  part of ``opt_state`` (``masked_optimizer``): the train loop keeps a host
  copy of it beside the state rather than fetching it from the devices.

  Examples:
    >>> state = RunState(params={'w': 1.0}, rest={}, opt_state=(), round=2, epoch=5, step=40)
    >>> sorted(state.checkpoint())
    ['opt_state', 'params', 'rest', 'round', 'step']
    >>> saved = state.checkpoint(mid_round=True)
    >>> saved['epoch'], RunState.from_checkpoint(saved) == state
    (4, True)
  """

  params: PyTree  # nnx.Param leaves, float32[*param.shape] (bfloat16 models compute in bf16)
  rest: PyTree  # the model's other nnx Variables: batch-norm float32[C] statistics, dropout RNG key
  # masked_optimizer state: mask bool[*param.shape] | None, momentum (or Adam's
  # moments) float32, rate float32[]
  opt_state: PyTree
  round: int  # the round these values belong to: 0 dense, 1..rounds prune + retrain
  epoch: int  # epochs trained so far over all rounds: the global index of the next epoch
  step: int  # train steps taken so far: where the learning-rate schedule is

  def checkpoint(self, *, mid_round: bool = False) -> dict[str, Any]:
    """The tree a checkpoint stores.

    A round's checkpoint holds no epoch: its round is complete, and the
    schedule says where that round ends. An epoch checkpoint (``mid_round``)
    holds ``'epoch'``, the global index of the last epoch trained, which is
    also its orbax step number.
    """
    tree = {
      'params': self.params,
      'rest': self.rest,
      'opt_state': self.opt_state,
      'round': self.round,
      'step': self.step,
    }
    if mid_round:
      tree['epoch'] = self.epoch - 1
    return tree

  @classmethod
  def from_checkpoint(cls, tree: Mapping[str, Any], *, epoch: int | None = None) -> RunState:
    """The state a checkpoint's tree holds.

    Args:
      tree: a restored checkpoint (:meth:`checkpoint`'s form).
      epoch: the epochs trained by the end of the checkpoint's round; needed
        for a round checkpoint, which does not store it.

    Raises:
      ValueError: a round checkpoint and no ``epoch``.
    """
    if 'epoch' in tree:
      epoch = int(tree['epoch']) + 1
    elif epoch is None:
      raise ValueError(
        f'checkpoint of round {int(tree["round"])} holds no epoch; pass the epochs '
        'trained by the end of its round'
      )
    return cls(
      params=tree['params'],
      rest=tree['rest'],
      opt_state=tree['opt_state'],
      round=int(tree['round']),
      epoch=epoch,
      step=int(tree['step']),
    )
