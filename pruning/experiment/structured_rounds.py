"""The rounds of a structured run (``structure='channels'``): which units each round keeps.

The pipeline (:mod:`pruning.experiment.pipeline`) traces the model's
dependency groups once (:func:`unit_groups`), trains with
:func:`pruning.masked_optimizer` holding a mask over every parameter that is
a member of a prunable group (:func:`initial_mask`: all ``True``, so the
masks of later rounds, which also cover biases and norm scales, have the
same leaves and :func:`pruning.replace_mask` takes them as data), and at each
round asks :func:`round_plan` for the units to keep. The plan covers every
prunable group, so every round's mask (:func:`pruning.structured.structured_mask`)
has the same structure; a group the criterion does not score (``bn_scale``
on a group without batch norm) stays as it is.

Units removed stay removed: before selection the scores of the units an
earlier round removed are set below every other (they are zero in every
member, so a magnitude criterion scores them 0 anyway; a random one would
not), and the kept units are intersected with the previous round's.

At the end, :func:`remove` cuts the removed units out of the trained model
(:func:`pruning.structured.remove_units`, which checks that the smaller
model's outputs equal the masked model's) and gives its plan record and
costs.

References: Han et al. 2015, §3.4 (iterative pruning, a target reached over
rounds); Fang et al. 2023, "DepGraph", §3 (groups of coupled parameters);
Li et al. 2017, "Pruning Filters for Efficient ConvNets", §3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from models import LayerCost, layer_costs
from pruning import _tree, structured
from pruning.experiment.config import STRUCTURED_SCOPES
from pruning.structured.criteria import unit_slices

PyTree = Any
Plan = dict[str, tuple[int, ...]]


def unit_groups(
  abstract: nnx.Module, image_shape: Sequence[int]
) -> tuple[list[structured.DependencyGroup], dict[str, str]]:
  """The model's dependency groups, traced once on an abstract batch of one image, and
  those kept whole.

  A group whose units removal cannot cut out
  (:func:`pruning.structured.unremovable_groups`: an option-A ResNet's residual
  stream, ...) is kept whole: it is returned as not prunable, with the reason, so
  a run prunes only what it can make smaller and never fails at its end.

  Returns:
    ``(groups, {name of a group kept whole: why})``.
  """
  example = jax.ShapeDtypeStruct((1, *image_shape), np.float32)
  groups = structured.dependency_groups(abstract, example)
  kept_whole = structured.unremovable_groups(abstract, groups)
  names = structured.group_names(groups)
  groups = [
    group._replace(reason=f'kept whole: {kept_whole[name]}') if name in kept_whole else group
    for name, group in zip(names, groups, strict=True)
  ]
  return groups, kept_whole


def _arrays(tree: PyTree) -> dict[str, Any]:
  """``{path: leaf}`` of the leaves that are not ``None`` (a mask's unpruned leaves are)."""
  return {name: _tree.unbox(leaf) for name, leaf in _tree.named_leaves(tree) if leaf is not None}


def _plannable(
  params: PyTree, groups: Sequence[structured.DependencyGroup]
) -> dict[str, structured.DependencyGroup]:
  """The prunable groups with at least one parameter member, by name."""
  names = set(_arrays(params))
  return {
    name: group
    for name, group in zip(structured.group_names(groups), groups, strict=True)
    if group.prunable and any(member.path in names for member in group.members)
  }


def full_plan(params: PyTree, groups: Sequence[structured.DependencyGroup]) -> Plan:
  """Every unit of every prunable group kept: the plan of the dense network."""
  return {name: tuple(range(g.size)) for name, g in _plannable(params, groups).items()}


def initial_mask(params: PyTree, groups: Sequence[structured.DependencyGroup]) -> PyTree:
  """All ``True`` over every parameter that is a member of a prunable group, ``None`` elsewhere.

  ``params`` may be abstract (``nnx.state`` of an ``nnx.eval_shape`` model).
  """
  return structured.structured_mask(params, groups, full_plan(params, groups))


def kept_units(mask: PyTree, groups: Sequence[structured.DependencyGroup]) -> Plan:
  """The units ``mask`` keeps in each prunable group (read off its first masked member)."""
  named = _arrays(mask)
  plan = {}
  for name, group in _plannable(named, groups).items():
    slices = unit_slices(named, group)
    # A kept unit keeps some entries of every member (a group never loses every unit,
    # so some of its inputs survive too); a removed one keeps none.
    rows = slices[0].weights
    plan[name] = tuple(int(u) for u in np.flatnonzero(rows.any(axis=1)))
  return plan


def round_sparsity(final: float, round_index: int, rounds: int) -> float:
  """The fraction of units removed after round ``round_index`` of ``rounds``.

  Geometric, as Han's densities: the kept fraction ``(1 - final)`` is reached
  by the same factor each round.

  Examples:
    >>> round(round_sparsity(0.75, 1, 2), 6), round_sparsity(0.75, 2, 2)
    (0.5, 0.75)
  """
  return 1.0 - (1.0 - final) ** (round_index / rounds)


def round_plan(
  params: PyTree,
  mask: PyTree,
  groups: Sequence[structured.DependencyGroup],
  config: Any,
  round_index: int,
  grads: Sequence[PyTree] = (),
) -> tuple[Plan, float]:
  """The units each prunable group keeps after round ``round_index``, and the round's sparsity.

  Args:
    params: the trained params, on the host (``nnx.State`` or a dict).
    mask: the current mask, on the host (its removed units stay removed).
    groups: the model's dependency groups.
    config: the run's :class:`~pruning.experiment.config.PruneConfig`
      (``structured_criterion``, ``structured_scope``, ``structured_sparsity``,
      ``round_to``, ``rounds``, ``seed``).
    round_index: 1..``config.rounds``.
    grads: for a criterion that scores from gradients (``'taylor'``), the
      loss gradients of some batches, each like ``params``: every batch
      scores the units on its own and the scores are summed.

  Returns:
    ``({group name: sorted kept units}, sparsity)``, over every prunable group.

  Raises:
    ValueError: a criterion that scores from gradients and no ``grads``.
  """
  sparsity = round_sparsity(config.structured_sparsity, round_index, config.rounds)
  previous = kept_units(mask, groups)
  criterion = config.structured_criterion
  if structured.STRUCTURED_CRITERIA[criterion].needs_grads:
    if not grads:
      raise ValueError(f'criterion {criterion!r} scores from gradients: pass grads')
    per_batch = [structured.group_scores(params, groups, criterion, grads=g) for g in grads]
    scores = {name: sum(batch[name] for batch in per_batch) for name in per_batch[0]}
  else:
    scores = structured.group_scores(params, groups, criterion, key=(config.seed, round_index))
  for name, score in scores.items():
    removed = np.setdiff1d(np.arange(score.size), previous[name])
    if removed.size:
      score[removed] = np.nextafter(min(float(score.min()), 0.0), -np.inf)
  selected = structured.select_units(
    groups,
    scores,
    sparsity,
    scope=STRUCTURED_SCOPES[config.structured_scope],
    round_to=config.round_to,
    params=params,
  )
  plan = {
    name: tuple(sorted(set(kept) & set(selected.get(name, kept))))
    for name, kept in previous.items()
  }
  return plan, sparsity


class Removed(NamedTuple):
  """The smaller dense model of a structured run, and what it costs."""

  model: nnx.Module  # the smaller model (pruning.structured.remove_units)
  record: dict[str, Any]  # its plan (pruning.structured.plan_record)
  costs: dict[str, LayerCost]  # its per-layer costs (models.layer_costs)


def remove(
  model: nnx.Module,
  groups: Sequence[structured.DependencyGroup],
  mask: PyTree,
  images: Any,
  image_shape: Sequence[int],
  *,
  model_name: str,
  options: Mapping[str, Any],
) -> Removed:
  """Cuts the units ``mask`` removes out of the trained, masked ``model``.

  Raises:
    ValueError: the smaller model's outputs on ``images`` differ from the
      masked model's, or a group cannot be removed
      (:func:`pruning.structured.remove_units`).
  """
  plan = kept_units(mask, groups)
  smaller = structured.remove_units(model, groups, plan, images)
  record = structured.plan_record(model, groups, plan, model_name=model_name, options=options)
  return Removed(smaller, record, layer_costs(smaller, image_shape))


def cost_summary(
  dense: Mapping[str, LayerCost], smaller: Mapping[str, LayerCost], model: nnx.Module
) -> dict[str, Any]:
  """Parameters and MACs (per example) of the smaller model against the dense one's.

  ``params`` counts every ``nnx.Param`` entry of ``model`` (the smaller one);
  ``weights`` and ``macs`` sum :func:`models.layer_costs`' layers.
  """
  params = sum(int(np.size(v)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  totals = {
    key: (sum(c.weights + c.biases for c in costs.values()), sum(c.macs for c in costs.values()))
    for key, costs in (('dense', dense), ('pruned', smaller))
  }
  (dense_weights, dense_macs), (weights, macs) = totals['dense'], totals['pruned']
  return {
    'pruned_params': params,
    'pruned_layer_params': weights,
    'dense_layer_params': dense_weights,
    'params_ratio': dense_weights / weights,
    'pruned_macs': macs,
    'dense_macs': dense_macs,
    'macs_ratio': dense_macs / macs,
  }
