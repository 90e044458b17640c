"""The paper's networks in flax nnx (LeNets, AlexNet, VGG-16), CIFAR ResNets and a ViT, and their per-layer costs."""

from models.alexnet import AlexNet, local_response_norm
from models.lenet import (
  CONV_IMPLS,
  CPU_COMPILER_OPTIONS,
  LayerCost,
  LeNet5,
  LeNet300100,
  layer_costs,
  max_pool,
)
from models.registry import MODELS, ModelSpec, create_model, model_costs, model_options
from models.resnet import BasicBlock, CIFARResNet, resnet20, resnet56
from models.vgg import VGG16, VGG16CIFAR, scaled_width
from models.vit import EncoderBlock, ViTCIFAR, vit_cifar

__all__ = [
  'CONV_IMPLS',
  'CPU_COMPILER_OPTIONS',
  'MODELS',
  'VGG16',
  'VGG16CIFAR',
  'AlexNet',
  'BasicBlock',
  'CIFARResNet',
  'EncoderBlock',
  'LayerCost',
  'LeNet5',
  'LeNet300100',
  'ModelSpec',
  'ViTCIFAR',
  'create_model',
  'layer_costs',
  'local_response_norm',
  'max_pool',
  'model_costs',
  'model_options',
  'resnet20',
  'resnet56',
  'scaled_width',
  'vit_cifar',
]
