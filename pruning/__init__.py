"""Functional network pruning for JAX/Flax (Han et al. 2015).

Masks are pytrees that mirror the params (:mod:`pruning.masks`); magnitude
criteria turn trained weights into masks (:mod:`pruning.criteria`);
:func:`masked_optimizer` keeps pruned weights exactly zero while retraining
(:mod:`pruning.optimizer`).
"""

from pruning.criteria import global_sparsity_mask, quality_mask, random_mask, sparsity_mask
from pruning.dropout import adjusted_dropout_rate
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

__all__ = [
  'KERNEL_PATTERN',
  'LayerStats',
  'MaskStats',
  'MaskedState',
  'adjusted_dropout_rate',
  'apply_mask',
  'check_mask',
  'get_mask',
  'global_sparsity_mask',
  'intersect_masks',
  'l1_penalty',
  'l2_penalty',
  'mask_stats',
  'masked_optimizer',
  'prunable_mask',
  'quality_mask',
  'random_mask',
  'replace_mask',
  'set_frozen',
  'sparsity_mask',
]
