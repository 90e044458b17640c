"""Functional network pruning for JAX/Flax (Han et al. 2015).

Masks are pytrees that mirror the params (:mod:`pruning.masks`); magnitude
criteria turn trained weights into masks (:mod:`pruning.criteria`);
:func:`masked_optimizer` keeps pruned weights exactly zero while retraining
(:mod:`pruning.optimizer`). Sensitivity curves (:mod:`pruning.sensitivity`)
show how much each layer can lose, and :mod:`pruning.thresholds` turns them
into per-layer targets.
"""

from pruning.criteria import global_sparsity_mask, quality_mask, random_mask, sparsity_mask
from pruning.distributions import plot_weight_distributions, weight_histograms
from pruning.dropout import adjusted_dropout_rate
from pruning.evaluation import classification_error
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
from pruning.optimizer import (
  MaskedState,
  get_mask,
  masked_optimizer,
  replace_mask,
  set_frozen,
)
from pruning.regularization import l1_penalty, l2_penalty
from pruning.sensitivity import LayerCurve, SensitivityResult, sensitivity_analysis
from pruning.thresholds import LayerThreshold, Thresholds, choose_thresholds

__all__ = [
  'KERNEL_PATTERN',
  'LayerCurve',
  'LayerStats',
  'LayerThreshold',
  'MaskStats',
  'MaskedState',
  'SensitivityResult',
  'Thresholds',
  'adjusted_dropout_rate',
  'apply_mask',
  'check_mask',
  'choose_thresholds',
  'classification_error',
  'get_mask',
  'global_sparsity_mask',
  'intersect_masks',
  'l1_penalty',
  'l2_penalty',
  'mask_stats',
  'masked_optimizer',
  'plot_weight_distributions',
  'prunable_mask',
  'quality_mask',
  'random_mask',
  'replace_mask',
  'sensitivity_analysis',
  'set_frozen',
  'sparsity_mask',
  'weight_histograms',
]
