"""VGG-16, VGG-16-CIFAR and AlexNet: parameter counts of the paper's models, costs, options.

Counts come from abstract initialisation (``nnx.eval_shape``): no test
allocates VGG-16's 138M parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import (
  MODELS,
  VGG16,
  VGG16CIFAR,
  AlexNet,
  create_model,
  local_response_norm,
  model_costs,
  model_options,
)

# (weights, biases) of the four networks of Han et al. 2015, Table 1; the
# totals are the published parameter counts (LeNet-300-100 266,610; LeNet-5
# 431,080; Caffe's bvlc_alexnet 60,965,224; VGG-16 138,357,544).
PAPER_COUNTS = {
  'lenet300': (266_200, 410),
  'lenet5': (430_500, 580),
  'alexnet': (60_954_656, 10_568),
  'vgg16': (138_344_128, 13_416),
}
PAPER_TOTALS = {'lenet300': 266_610, 'lenet5': 431_080, 'alexnet': 60_965_224, 'vgg16': 138_357_544}

# Han et al. 2015, Table 4 (AlexNet): weights and FLOP per layer, as printed.
ALEXNET_TABLE4 = {
  'conv1': ('35K', '211M'),
  'conv2': ('307K', '448M'),
  'conv3': ('885K', '299M'),
  'conv4': ('663K', '224M'),
  'conv5': ('442K', '150M'),
  'fc1': ('38M', '75M'),
  'fc2': ('17M', '34M'),
  'fc3': ('4M', '8M'),
}

VGG16_LAYERS = [
  *(f'conv{b}_{i}' for b, n in enumerate((2, 2, 3, 3, 3), start=1) for i in range(1, n + 1)),
  'fc6',
  'fc7',
  'fc8',
]


def _abstract_params(name, **options) -> dict[str, jax.ShapeDtypeStruct]:
  model = nnx.eval_shape(lambda: create_model(name, nnx.Rngs(0), **options))
  params = nnx.state(model, nnx.Param)
  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): variable.get_value()
    for path, variable in jax.tree.leaves_with_path(
      params, is_leaf=lambda node: isinstance(node, nnx.Variable)
    )
  }


def _printed_as(count: int, printed: str) -> bool:
  """Whether the paper's ``35K``/``38M``-style figure is ``count`` rounded or truncated.

  The paper does both: conv3's 884,736 weights print as 885K, conv4's 663,552
  as 663K.
  """
  scale = {'K': 1e3, 'M': 1e6, 'B': 1e9}[printed[-1]]
  return abs(count / scale - float(printed[:-1])) < 1


@pytest.mark.parametrize('name', sorted(PAPER_COUNTS))
def test_parameter_counts_of_the_paper_models(name):
  params = _abstract_params(name)
  weights = sum(int(np.prod(p.shape)) for path, p in params.items() if path.endswith('kernel'))
  biases = sum(int(np.prod(p.shape)) for path, p in params.items() if path.endswith('bias'))
  assert (weights, biases) == PAPER_COUNTS[name]
  assert weights + biases == PAPER_TOTALS[name]
  costs = model_costs(name)
  assert sum(c.weights for c in costs.values()) == weights
  assert sum(c.biases for c in costs.values()) == biases


def test_alexnet_matches_table4_per_layer():
  costs = model_costs('alexnet')
  assert list(costs) == list(ALEXNET_TABLE4)
  for name, (weights, flops) in ALEXNET_TABLE4.items():
    assert _printed_as(costs[name].weights, weights), (name, costs[name].weights, weights)
    assert _printed_as(costs[name].flops, flops), (name, costs[name].flops, flops)
  total = sum(c.flops for c in costs.values())
  assert round(total / 1e8) == 14  # 1.45B, printed 1.5B in the paper
  assert costs['conv2'].weights == 5 * 5 * 48 * 256  # two groups of 48 input channels


def test_vgg16_layers_read_like_table5_and_count_exactly():
  costs = model_costs('vgg16')
  assert list(costs) == VGG16_LAYERS
  assert costs['conv1_1'].weights == 3 * 3 * 3 * 64
  assert costs['conv1_1'].macs == 224 * 224 * 3 * 3 * 3 * 64
  assert costs['fc6'].weights == 7 * 7 * 512 * 4096
  assert sum(c.flops for c in costs.values()) == 30_940_528_640  # 15.5 G multiply-adds


def test_vgg16_cifar_counts_width_and_batch_norm():
  costs = model_costs('vgg16_cifar')
  assert list(costs) == VGG16_LAYERS
  assert sum(c.weights for c in costs.values()) == 14_710_464 + 2 * 512 * 512 + 512 * 10
  narrow = _abstract_params('vgg16_cifar', width=0.125, batch_norm=True)
  assert narrow['conv1_1/kernel'].shape == (3, 3, 3, 8)
  assert narrow['conv5_3/kernel'].shape == (3, 3, 64, 64)
  assert narrow['fc6/kernel'].shape == (64, 64)
  assert narrow['fc8/kernel'].shape == (64, 10)
  assert narrow['bn3_2/scale'].shape == (32,)
  assert not any(path.startswith('bn') for path in _abstract_params('vgg16_cifar'))


@pytest.mark.parametrize(
  ('name', 'options', 'shape'),
  [
    ('vgg16', {'width': 1 / 16}, (2, 224, 224, 3)),
    ('vgg16_cifar', {'batch_norm': True}, (2, 32, 32, 3)),
    ('alexnet', {}, (2, 227, 227, 3)),
  ],
)
def test_forward_shapes(name, options, shape):
  model = nnx.eval_shape(lambda: create_model(name, nnx.Rngs(0), **options))
  assert MODELS[name].image_shape == shape[1:]
  logits = nnx.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct(shape, jnp.float32))
  assert logits.shape == (2, 1000 if name != 'vgg16_cifar' else 10)


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_params():
  model = nnx.eval_shape(lambda: VGG16CIFAR(nnx.Rngs(0), width=0.125, dtype=jnp.bfloat16))
  logits = nnx.eval_shape(
    lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  )
  assert logits.dtype == jnp.bfloat16
  assert {
    p.get_value().dtype
    for p in jax.tree.leaves(
      nnx.state(model, nnx.Param), is_leaf=lambda n: isinstance(n, nnx.Variable)
    )
  } == {jnp.dtype(jnp.float32)}


def test_local_response_norm_matches_caffe_formula():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 3, 7)).astype(np.float32)
  size, alpha, beta, k = 5, 1e-1, 0.75, 2.0
  padded = np.pad(np.square(x.astype(np.float64)), ((0, 0), (0, 0), (0, 0), (2, 2)))
  window = sum(padded[..., i : i + 7] for i in range(size))
  expected = x / (k + alpha / size * window) ** beta
  np.testing.assert_allclose(
    local_response_norm(jnp.asarray(x), size, alpha, beta, k), expected, rtol=1e-5
  )


def test_alexnet_convolutions_2_4_5_have_two_groups():
  model = nnx.eval_shape(lambda: AlexNet(nnx.Rngs(0)))
  groups = {
    name: getattr(model, name).feature_group_count
    for name in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')
  }
  assert groups == {'conv1': 1, 'conv2': 2, 'conv3': 1, 'conv4': 2, 'conv5': 2}
  assert model.conv4.kernel.shape == (3, 3, 192, 384)


@pytest.mark.parametrize(
  ('build', 'message'),
  [
    (lambda: VGG16(nnx.Rngs(0), image_size=100), 'image_size is 100'),
    (lambda: VGG16CIFAR(nnx.Rngs(0), width=0), 'width is 0'),
    (lambda: model_options('alexnet', width=0.5), "model 'alexnet' takes no option width"),
    (lambda: model_options('vgg16', dtype='float16'), "dtype is 'float16'"),
    (lambda: create_model('vgg19', nnx.Rngs(0)), "model is 'vgg19'"),
  ],
)
def test_errors_name_the_bad_value(build, message):
  with pytest.raises(ValueError, match=message):
    build()


@pytest.mark.parametrize(
  'build',
  [
    lambda: VGG16(nnx.Rngs(0), image_size=32, width=0.125, hidden=64),
    lambda: VGG16CIFAR(nnx.Rngs(0), width=0.25, batch_norm=True),
    lambda: AlexNet(nnx.Rngs(0)),
  ],
  ids=['vgg16', 'vgg16_cifar', 'alexnet'],
)
def test_convolutions_start_he_and_the_classifier_like_torch_linear(build):
  # He-initialised, the classifier died within 20 steps (models.init).
  model = build()
  checked = 0
  for path, module in nnx.iter_modules(model):
    if not isinstance(module, nnx.Conv | nnx.Linear):
      continue
    kernel = np.asarray(module.kernel.get_value())
    assert not np.asarray(module.bias.get_value()).any(), path
    fan_in = kernel.size // kernel.shape[-1]
    if kernel.size < 1000:  # too few draws for a 5 % check of the spread
      continue
    if isinstance(module, nnx.Linear):
      bound = 1 / np.sqrt(fan_in)
      assert np.abs(kernel).max() <= np.float32(bound), path
      assert np.std(kernel) == pytest.approx(bound / np.sqrt(3), rel=0.05), path
    else:
      assert np.std(kernel) == pytest.approx(np.sqrt(2 / fan_in), rel=0.05), path
    checked += 1
  assert checked >= 6
