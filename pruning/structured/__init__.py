"""Structured pruning: which parameter axes must be pruned together.

* :mod:`~pruning.structured.groups`: :func:`dependency_groups`, the groups of
  coupled axes of a flax nnx model, and :func:`format_groups`;
* :mod:`~pruning.structured.jaxpr_walk`: the union-find over the axes of a
  jaxpr and the walk through it, call site by call site;
* :mod:`~pruning.structured.primitive_rules`: one rule per primitive;
* :mod:`~pruning.structured.criteria`: structured criteria (registered in
  :data:`STRUCTURED_CRITERIA`), scopes, plans and their element masks;
* :mod:`~pruning.structured.removal`: the smaller dense model of a plan,
  the plan file and its loader.
"""

from pruning.structured.criteria import (
  STRUCTURED_CRITERIA,
  StructuredCriterion,
  UnitSlices,
  group_names,
  group_scores,
  register_structured_criterion,
  select_units,
  structured_mask,
  structured_plan,
)
from pruning.structured.groups import DependencyGroup, GroupMember, dependency_groups, format_groups
from pruning.structured.jaxpr_walk import UnsupportedPrimitiveError
from pruning.structured.primitive_rules import RULES
from pruning.structured.removal import (
  holds_plan,
  load_plan,
  load_pruned,
  plan_record,
  remove_units,
  save_pruned,
  unremovable_groups,
)

__all__ = [
  'RULES',
  'STRUCTURED_CRITERIA',
  'DependencyGroup',
  'GroupMember',
  'StructuredCriterion',
  'UnitSlices',
  'UnsupportedPrimitiveError',
  'dependency_groups',
  'format_groups',
  'group_names',
  'group_scores',
  'holds_plan',
  'load_plan',
  'load_pruned',
  'plan_record',
  'register_structured_criterion',
  'remove_units',
  'save_pruned',
  'select_units',
  'structured_mask',
  'structured_plan',
  'unremovable_groups',
]
