"""Functional network pruning for JAX/Flax (Han et al. 2015).

The core, loaded by ``import pruning``, needs only jax, optax and numpy:
masks are pytrees that mirror the params (:mod:`pruning.masks`); criteria
score the weights and a shared selection turns scores into masks
(:mod:`pruning.criteria`), N:M structured masks among them
(:mod:`pruning.nm`); :func:`masked_optimizer` keeps pruned weights
exactly zero while retraining (:mod:`pruning.optimizer`), and
:func:`gradual_pruning` prunes inside the compiled step along Zhu & Gupta's
cubic schedule (:mod:`pruning.gradual`); schedules,
rounds and weight penalties (:mod:`pruning.schedule`,
:mod:`pruning.rounds`, :mod:`pruning.regularization`).

Four subpackages build on it, each loaded when first used:

* :mod:`pruning.analysis`: sensitivity curves and the per-layer targets read
  off them, weight distributions, the dropout adjustment, evaluation;
* :mod:`pruning.sparse`: real savings after pruning: dead-neuron removal,
  the compact file format, sparse inference;
* :mod:`pruning.structured`: structured pruning: the groups of coupled
  parameter axes (channels, heads, hidden units), traced from the jaxpr,
  their criteria and scopes, and the smaller dense model of a plan;
* :mod:`pruning.experiment` (with :mod:`pruning.data`): the prune-retrain
  runs of the scripts: configuration, train loop, checkpoints, reports.

The names of the first three are also reachable from here
(``pruning.sensitivity_analysis``, ``pruning.remove_dead_neurons``,
``pruning.dependency_groups``, ...), imported on first access.
"""

import importlib

from pruning.criteria import (
  CRITERIA,
  global_sparsity_mask,
  quality_mask,
  random_mask,
  register_criterion,
  sparsity_mask,
)
from pruning.gradual import GradualSchedule, GradualState, gradual_pruning
from pruning.masks import (
  KERNEL_PATTERN,
  LayerStats,
  MaskStats,
  apply_mask,
  check_mask,
  intersect_masks,
  mask_stats,
  prunable_mask,
)
from pruning.nm import NMValidity, nm_keep, nm_mask, nm_validity
from pruning.optimizer import MaskedState, get_mask, masked_optimizer, replace_mask, set_frozen
from pruning.regularization import l1_penalty, l2_penalty

# Names of the subpackages, imported when first asked for (PEP 562): a user of
# masked_optimizer does not pay for scipy, matplotlib or flax.
_LAZY = {
  'pruning.analysis': (
    'LayerCurve',
    'LayerThreshold',
    'SensitivityResult',
    'Thresholds',
    'adjusted_dropout_rate',
    'choose_thresholds',
    'classification_error',
    'plot_weight_distributions',
    'sensitivity_analysis',
    'weight_histograms',
  ),
  'pruning.sparse': (
    'ChainLayer',
    'CorruptFileError',
    'FileBytes',
    'LayerChain',
    'LeafBytes',
    'NeuronCounts',
    'RelativeCSR',
    'SparseCheckpoint',
    'SparseLinear',
    'Surgery',
    'decode_sparse',
    'encode_sparse',
    'load_resized',
    'load_sparse',
    'remove_dead_neurons',
    'save_sparse',
    'sparsify',
  ),
  'pruning.structured': (
    'DependencyGroup',
    'GroupMember',
    'STRUCTURED_CRITERIA',
    'UnsupportedPrimitiveError',
    'dependency_groups',
    'format_groups',
    'group_names',
    'group_scores',
    'load_pruned',
    'plan_record',
    'register_structured_criterion',
    'remove_units',
    'save_pruned',
    'select_units',
    'structured_mask',
    'structured_plan',
  ),
}
_HOME = {name: package for package, names in _LAZY.items() for name in names}


def __getattr__(name: str):
  if name in _HOME:
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
  return sorted(__all__)


__all__ = [
  'CRITERIA',
  'KERNEL_PATTERN',
  'GradualSchedule',
  'GradualState',
  'LayerStats',
  'MaskStats',
  'MaskedState',
  'NMValidity',
  'apply_mask',
  'check_mask',
  'get_mask',
  'global_sparsity_mask',
  'gradual_pruning',
  'intersect_masks',
  'l1_penalty',
  'l2_penalty',
  'mask_stats',
  'masked_optimizer',
  'nm_keep',
  'nm_mask',
  'nm_validity',
  'prunable_mask',
  'quality_mask',
  'random_mask',
  'register_criterion',
  'replace_mask',
  'set_frozen',
  'sparsity_mask',
]
__all__ += sorted(_HOME)
