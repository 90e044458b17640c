"""The models the pruning pipeline knows by name, with what it needs to know about each.

:data:`MODELS` maps a name (``'lenet300'``, ``'lenet5'``, ``'vgg16'``,
``'vgg16_cifar'``, ``'alexnet'``, ``'resnet20'``, ``'resnet56'``,
``'vit_cifar'``) to a :class:`ModelSpec`: how to build the
network, the image shape it takes, the datasets it fits, which options it
accepts and which dropout layers follow which prunable layers (for the
paper's §3.2 dropout adjustment). :func:`create_model` builds one with its
options checked, :func:`model_costs` counts its per-layer weights and FLOP
without allocating it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
from flax import nnx

from models.alexnet import AlexNet
from models.lenet import LayerCost, LeNet5, LeNet300100, layer_costs
from models.resnet import resnet20, resnet56
from models.vgg import VGG16, VGG16CIFAR
from models.vit import vit_cifar

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class ModelSpec(NamedTuple):
  """What the pipeline needs to know about one model."""

  build: Callable[..., nnx.Module]  # (rngs, **options) -> model
  image_shape: tuple[int, int, int]  # (height, width, channels) of one input
  num_classes: int  # outputs
  datasets: tuple[str, ...]  # datasets whose images and classes it fits
  options: tuple[str, ...]  # keyword options `build` accepts beyond rngs
  dropout: Mapping[str, str]  # dropout module -> layer whose connections set its rate (§3.2)


MODELS: dict[str, ModelSpec] = {
  'lenet300': ModelSpec(LeNet300100, (28, 28, 1), 10, ('mnist',), (), {}),
  'lenet5': ModelSpec(LeNet5, (28, 28, 1), 10, ('mnist',), (), {}),
  # The dropout after fc6 acts on fc6's output neurons, whose connections are
  # fc6's kernel: C_i of the paper's layer i (§3.2).
  'vgg16': ModelSpec(
    VGG16,
    (224, 224, 3),
    1000,
    ('imagenet2012',),
    ('width', 'batch_norm', 'dropout_rate', 'dtype'),
    {'dropout6': 'fc6', 'dropout7': 'fc7'},
  ),
  'vgg16_cifar': ModelSpec(
    VGG16CIFAR,
    (32, 32, 3),
    10,
    ('cifar10',),
    ('width', 'batch_norm', 'dropout_rate', 'dtype'),
    {'dropout6': 'fc6', 'dropout7': 'fc7'},
  ),
  'alexnet': ModelSpec(
    AlexNet,
    (227, 227, 3),
    1000,
    ('imagenet2012',),
    ('dropout_rate', 'dtype'),
    {'dropout1': 'fc1', 'dropout2': 'fc2'},
  ),
  # He et al. 2016, §4.2: option A shortcuts, no dropout.
  'resnet20': ModelSpec(resnet20, (32, 32, 3), 10, ('cifar10',), ('dtype',), {}),
  'resnet56': ModelSpec(resnet56, (32, 32, 3), 10, ('cifar10',), ('dtype',), {}),
  # Patch 4, width 192, 6 blocks of 6 heads, MLP 384; no dropout (models.vit).
  'vit_cifar': ModelSpec(vit_cifar, (32, 32, 3), 10, ('cifar10',), ('dtype',), {}),
}


def model_options(
  name: str,
  *,
  width: float = 1.0,
  batch_norm: bool = False,
  dropout_rate: float | None = None,
  dtype: str = 'float32',
) -> dict[str, Any]:
  """The keyword options for ``MODELS[name].build``, checked against what it accepts.

  Options at their defaults are left out, so a model that does not take them
  is built exactly as before. ``dropout_rate=None`` keeps the model's own
  (0.5 for fc6/fc7 of VGG-16 and fc1/fc2 of AlexNet).

  Raises:
    ValueError: an unknown model, an unknown dtype, a dropout rate outside
      [0, 1), or an option the model does not take (naming both).

  Examples:
    >>> model_options('vgg16_cifar', width=0.25)
    {'width': 0.25}
    >>> model_options('lenet5', batch_norm=True)
    Traceback (most recent call last):
    ...
    ValueError: model 'lenet5' takes no option batch_norm (given True); it takes: none
  """
  spec = get_spec(name)
  if dtype not in DTYPES:
    raise ValueError(f'dtype is {dtype!r}; expected one of {sorted(DTYPES)}')
  if dropout_rate is not None and not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f'dropout_rate is {dropout_rate!r}; expected a rate in [0, 1)')
  given = {
    'width': (width, 1.0),
    'batch_norm': (batch_norm, False),
    'dropout_rate': (dropout_rate, None),
    'dtype': (DTYPES[dtype], jnp.float32),
  }
  options = {}
  for option, (value, default) in given.items():
    if value == default:
      continue
    if option not in spec.options:
      shown = dtype if option == 'dtype' else value
      raise ValueError(
        f'model {name!r} takes no option {option} (given {shown!r}); '
        f'it takes: {", ".join(spec.options) or "none"}'
      )
    options[option] = value
  return options


def get_spec(name: str) -> ModelSpec:
  """``MODELS[name]``, or a ``ValueError`` naming the known models."""
  if name not in MODELS:
    raise ValueError(f'model is {name!r}; expected one of {sorted(MODELS)}')
  return MODELS[name]


def create_model(name: str, rngs: nnx.Rngs, **options: Any) -> nnx.Module:
  """Builds model ``name`` with ``options`` (see :func:`model_options`).

  Examples:
    >>> model = create_model('vgg16_cifar', nnx.Rngs(0), width=0.125)
    >>> model.conv1_1.kernel.shape
    (3, 3, 3, 8)
  """
  return get_spec(name).build(rngs, **options)


def model_costs(name: str, **options: Any) -> dict[str, LayerCost]:
  """Per-layer weights, biases and multiply-accumulates, counted without allocating.

  Examples:
    >>> costs = model_costs('alexnet')
    >>> costs['conv1'].weights, costs['conv1'].flops
    (34848, 210830400)
  """
  spec = get_spec(name)
  abstract = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0), **options))
  return layer_costs(abstract, spec.image_shape)
