"""Functional network pruning for JAX/Flax (Han et al. 2015).

Masks are pytrees that mirror the params (:mod:`pruning.masks`); magnitude
criteria turn trained weights into masks (:mod:`pruning.criteria`);
:func:`masked_optimizer` keeps pruned weights exactly zero while retraining
(:mod:`pruning.optimizer`). Sensitivity curves (:mod:`pruning.sensitivity`)
show how much each layer can lose, and :mod:`pruning.thresholds` turns them
into per-layer targets. After pruning, :func:`remove_dead_neurons` makes the
model physically smaller (:mod:`pruning.surgery`), :func:`save_sparse` stores
it compactly (:mod:`pruning.sparse_format`) and :func:`sparsify` runs its FC
layers from the sparse weights (:mod:`pruning.sparse_inference`).
"""

from pruning.byte_accounting import FileBytes, LeafBytes
from pruning.criteria import global_sparsity_mask, quality_mask, random_mask, sparsity_mask
from pruning.distributions import plot_weight_distributions, weight_histograms
from pruning.dropout import adjusted_dropout_rate
from pruning.evaluation import classification_error
from pruning.layer_chain import ChainLayer, LayerChain
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
from pruning.relative_index import RelativeCSR
from pruning.resize import load_resized
from pruning.sensitivity import LayerCurve, SensitivityResult, sensitivity_analysis
from pruning.sparse_format import (
  CorruptFileError,
  SparseCheckpoint,
  decode_sparse,
  encode_sparse,
  load_sparse,
  save_sparse,
)
from pruning.sparse_inference import SparseLinear, sparsify
from pruning.surgery import NeuronCounts, Surgery, remove_dead_neurons
from pruning.thresholds import LayerThreshold, Thresholds, choose_thresholds

__all__ = [
  'KERNEL_PATTERN',
  'ChainLayer',
  'CorruptFileError',
  'FileBytes',
  'LayerChain',
  'LayerCurve',
  'LayerStats',
  'LayerThreshold',
  'LeafBytes',
  'MaskStats',
  'MaskedState',
  'NeuronCounts',
  'RelativeCSR',
  'SensitivityResult',
  'SparseCheckpoint',
  'SparseLinear',
  'Surgery',
  'Thresholds',
  'adjusted_dropout_rate',
  'apply_mask',
  'check_mask',
  'choose_thresholds',
  'classification_error',
  'decode_sparse',
  'encode_sparse',
  'get_mask',
  'global_sparsity_mask',
  'intersect_masks',
  'l1_penalty',
  'l2_penalty',
  'load_resized',
  'load_sparse',
  'mask_stats',
  'masked_optimizer',
  'plot_weight_distributions',
  'prunable_mask',
  'quality_mask',
  'random_mask',
  'remove_dead_neurons',
  'replace_mask',
  'save_sparse',
  'sensitivity_analysis',
  'set_frozen',
  'sparsify',
  'sparsity_mask',
  'weight_histograms',
]
