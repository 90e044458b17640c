"""LeNet models for MNIST and their per-layer cost accounting."""

from models.lenet import CONV_IMPLS, LayerCost, LeNet5, LeNet300100, layer_costs

__all__ = ['CONV_IMPLS', 'LayerCost', 'LeNet5', 'LeNet300100', 'layer_costs']
