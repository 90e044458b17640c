"""LeNet models for MNIST and their per-layer cost accounting."""

from models.lenet import (
  CONV_IMPLS,
  CPU_COMPILER_OPTIONS,
  LayerCost,
  LeNet5,
  LeNet300100,
  layer_costs,
  max_pool,
)

__all__ = [
  'CONV_IMPLS',
  'CPU_COMPILER_OPTIONS',
  'LayerCost',
  'LeNet5',
  'LeNet300100',
  'layer_costs',
  'max_pool',
]
