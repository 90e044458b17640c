"""Tests for models.lenet: shapes, parameter paths, costs, conv implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from models import CONV_IMPLS, LayerCost, LeNet5, LeNet300100, layer_costs
from models.lenet import _conv_as_patches_matmul, max_pool

# Han et al. 2015, Tables 2-3; FLOP = 2 x MACs per example.
EXPECTED_COSTS = {
  LeNet300100: {
    'fc1': LayerCost(weights=235_200, biases=300, macs=235_200),
    'fc2': LayerCost(weights=30_000, biases=100, macs=30_000),
    'fc3': LayerCost(weights=1_000, biases=10, macs=1_000),
  },
  LeNet5: {
    'conv1': LayerCost(weights=500, biases=20, macs=288_000),
    'conv2': LayerCost(weights=25_000, biases=50, macs=1_600_000),
    'fc1': LayerCost(weights=400_000, biases=500, macs=400_000),
    'fc2': LayerCost(weights=5_000, biases=10, macs=5_000),
  },
}
EXPECTED_TOTALS = {
  # (weights, biases, flops)
  LeNet300100: (266_200, 410, 532_400),
  LeNet5: (430_500, 580, 4_586_000),
}
EXPECTED_FLOPS = {
  LeNet300100: {'fc1': 470_400, 'fc2': 60_000, 'fc3': 2_000},
  LeNet5: {
    'conv1': 576_000,
    'conv2': 3_200_000,
    'fc1': 800_000,
    'fc2': 10_000,
  },
}
EXPECTED_PARAM_SHAPES = {
  LeNet300100: {
    'fc1/kernel': (784, 300),
    'fc1/bias': (300,),
    'fc2/kernel': (300, 100),
    'fc2/bias': (100,),
    'fc3/kernel': (100, 10),
    'fc3/bias': (10,),
  },
  LeNet5: {
    'conv1/kernel': (5, 5, 1, 20),
    'conv1/bias': (20,),
    'conv2/kernel': (5, 5, 20, 50),
    'conv2/bias': (50,),
    'fc1/kernel': (800, 500),
    'fc1/bias': (500,),
    'fc2/kernel': (500, 10),
    'fc2/bias': (10,),
  },
}
MODEL_CLASSES = [LeNet300100, LeNet5]


@pytest.fixture(scope='module')
def initialised():
  # Eager initialisation compiles every random op once (about a second per
  # model), so each model is built once for the whole module.
  return {cls: cls(rngs=nnx.Rngs(0)) for cls in MODEL_CLASSES}


def _abstract(model_cls, **kwargs) -> nnx.Module:
  return nnx.eval_shape(lambda: model_cls(rngs=nnx.Rngs(0), **kwargs))


def _named_params(model: nnx.Module) -> dict[str, jax.Array]:
  # Variables are pytree nodes in flax 0.12 (their leaf is under '.../value'),
  # so stop at them to get the 'fc1/kernel' paths that pruning matches on.
  params = nnx.state(model, nnx.Param)
  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): variable.get_value()
    for path, variable in jax.tree.leaves_with_path(
      params, is_leaf=lambda node: isinstance(node, nnx.Variable)
    )
  }


def _logits(model: nnx.Module, x: jax.Array) -> jax.Array:
  # Jitted, because op-by-op dispatch of the convolutions is slower than one
  # compile.
  graphdef, state = nnx.split(model)
  return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, x)


def _images(batch: int) -> np.ndarray:
  # numpy rather than jax.random: each new shape would cost a compile.
  return np.random.default_rng(0).random((batch, 28, 28, 1), np.float32)


def _assert_trees_close(actual, expected, **tolerances) -> None:
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for (path, a), b in zip(
    jax.tree.leaves_with_path(actual), jax.tree.leaves(expected), strict=True
  ):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    np.testing.assert_allclose(a, b, err_msg=name, **tolerances)


@pytest.mark.parametrize('shape', [(3, 28, 28, 1), (3, 784)])
def test_lenet300100_output_shape(shape):
  model = _abstract(LeNet300100)
  logits = nnx.eval_shape(lambda model, x: model(x), model, jnp.zeros(shape))
  assert logits.shape == (3, 10)


@pytest.mark.parametrize('conv_impl', CONV_IMPLS)
def test_lenet5_output_shape(conv_impl):
  model = _abstract(LeNet5, conv_impl=conv_impl)
  x = jnp.zeros((3, 28, 28, 1))
  logits = nnx.eval_shape(lambda model, x: model(x), model, x)
  assert logits.shape == (3, 10)


@pytest.mark.parametrize('model_cls', MODEL_CLASSES)
def test_param_paths_and_shapes(model_cls):
  params = _named_params(_abstract(model_cls))
  shapes = {name: leaf.shape for name, leaf in params.items()}
  assert shapes == EXPECTED_PARAM_SHAPES[model_cls]


@pytest.mark.parametrize('model_cls', MODEL_CLASSES)
def test_initialisation_is_fan_in_scaled_with_zero_biases(initialised, model_cls):
  params = _named_params(initialised[model_cls])
  for name, leaf in params.items():
    if name.endswith('/bias'):
      assert not np.any(leaf), name
    elif leaf.size >= 10_000:  # Enough samples for a 5% check on the std.
      fan_in = leaf.size // leaf.shape[-1]
      np.testing.assert_allclose(np.std(leaf), fan_in**-0.5, rtol=0.05, err_msg=name)


@pytest.mark.parametrize('model_cls', MODEL_CLASSES)
def test_layer_costs_per_layer(model_cls):
  costs = layer_costs(model_cls)
  # Items, not dicts, so that the forward-pass order is checked too.
  assert list(costs.items()) == list(EXPECTED_COSTS[model_cls].items())
  assert {name: cost.flops for name, cost in costs.items()} == (EXPECTED_FLOPS[model_cls])


@pytest.mark.parametrize('model_cls', MODEL_CLASSES)
def test_layer_costs_totals(model_cls):
  costs = layer_costs(model_cls).values()
  totals = (
    sum(cost.weights for cost in costs),
    sum(cost.biases for cost in costs),
    sum(cost.flops for cost in costs),
  )
  assert totals == EXPECTED_TOTALS[model_cls]


@pytest.mark.parametrize('model_cls', MODEL_CLASSES)
def test_layer_costs_weights_match_param_shapes(model_cls):
  shapes = EXPECTED_PARAM_SHAPES[model_cls]
  for name, cost in layer_costs(model_cls).items():
    assert cost.weights == np.prod(shapes[f'{name}/kernel']), name
    assert cost.biases == np.prod(shapes[f'{name}/bias']), name


def test_layer_costs_of_instance_matches_class_and_leaves_model_intact(
  initialised,
):
  model = initialised[LeNet5]
  x = _images(2)
  before = _logits(model, x)
  assert layer_costs(model) == layer_costs(LeNet5)
  assert isinstance(model.conv1, nnx.Conv)
  assert isinstance(model.fc1, nnx.Linear)
  np.testing.assert_array_equal(_logits(model, x), before)


def test_layer_costs_follow_input_shape():
  # A 32x32 input gives conv1 28x28 outputs and conv2 10x10 outputs.
  def lenet5_for_32x32() -> LeNet5:
    model = LeNet5(nnx.Rngs(0))
    model.fc1 = nnx.Linear(5 * 5 * 50, 500, rngs=nnx.Rngs(1))
    return model

  costs = layer_costs(nnx.eval_shape(lenet5_for_32x32), (32, 32, 1))
  assert costs['conv1'].macs == 28 * 28 * 500
  assert costs['conv2'].macs == 10 * 10 * 25_000


class _NestedNet(nnx.Module):
  """A grouped conv and an nnx.List of Linear layers, one without a bias."""

  def __init__(self, rngs: nnx.Rngs):
    self.stem = nnx.Conv(2, 4, (3, 3), padding='VALID', feature_group_count=2, rngs=rngs)
    self.head = nnx.List([nnx.Linear(4, 8, rngs=rngs), nnx.Linear(8, 3, use_bias=False, rngs=rngs)])

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.stem(x).mean(axis=(1, 2))
    for layer in self.head:
      x = layer(x)
    return x


def test_layer_costs_of_nested_grouped_and_biasless_layers():
  costs = layer_costs(_NestedNet, (6, 5, 2))
  assert costs == {
    # 4x3 output positions; each output channel sees 3*3 of its group's 1 input.
    'stem': LayerCost(weights=3 * 3 * 1 * 4, biases=4, macs=4 * 3 * 36),
    'head/0': LayerCost(weights=32, biases=8, macs=32),
    'head/1': LayerCost(weights=24, biases=0, macs=24),
  }


@pytest.fixture(scope='module')
def both_impls(initialised):
  """LeNet-5 with the same random parameters under each conv_impl."""

  _, state = nnx.split(initialised[LeNet5])
  # Non-zero biases, so that a dropped or misplaced bias cannot go unnoticed.
  rng = np.random.default_rng(1)
  state = jax.tree.map(
    lambda leaf: leaf + rng.normal(0, 0.1, leaf.shape).astype(np.float32),
    state,
  )
  # Build each variant abstractly and load the same state into it, as a
  # checkpoint restore would.
  return {
    impl: nnx.merge(nnx.graphdef(_abstract(LeNet5, conv_impl=impl)), state) for impl in CONV_IMPLS
  }


def test_conv_impls_give_same_outputs(both_impls):
  x = _images(8)
  _assert_trees_close(
    _logits(both_impls['patches'], x),
    _logits(both_impls['xla'], x),
    rtol=1e-4,
    atol=1e-4,
  )


def test_conv_impls_give_same_gradients(both_impls):
  x, y = _images(8), jnp.arange(8) % 10

  def grads(model: LeNet5):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
      logits = nnx.merge(graphdef, params)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return jax.jit(jax.grad(loss))(params)

  _assert_trees_close(
    grads(both_impls['patches']),
    grads(both_impls['xla']),
    rtol=1e-4,
    atol=1e-5,
  )


def _numpy_conv_valid(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  windows = np.lib.stride_tricks.sliding_window_view(
    x, kernel.shape[:2], axis=(1, 2)
  )  # (B, H', W', C, kh, kw)
  return np.einsum('bhwcij,ijco->bhwo', windows, kernel)


def _numpy_max_pool_2x2(x: np.ndarray) -> np.ndarray:
  batch, height, width, channels = x.shape
  blocks = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
  return blocks.max(axis=(2, 4))


@pytest.mark.parametrize('conv_impl', CONV_IMPLS)
def test_lenet5_matches_caffe_forward(both_impls, conv_impl):
  # Caffe's lenet_train_test.prototxt: no ReLU after the convolutions.
  p = {k: np.asarray(v, np.float64) for k, v in _named_params(both_impls[conv_impl]).items()}
  x = _images(4).astype(np.float64)
  h = _numpy_conv_valid(x, p['conv1/kernel']) + p['conv1/bias']
  h = _numpy_max_pool_2x2(h)
  h = _numpy_conv_valid(h, p['conv2/kernel']) + p['conv2/bias']
  h = _numpy_max_pool_2x2(h).reshape(len(x), -1)
  h = np.maximum(h @ p['fc1/kernel'] + p['fc1/bias'], 0)
  expected = h @ p['fc2/kernel'] + p['fc2/bias']
  np.testing.assert_allclose(
    _logits(both_impls[conv_impl], x.astype(np.float32)),
    expected,
    rtol=1e-4,
    atol=1e-4,
  )


def test_lenet300100_matches_reference_forward(initialised):
  model = initialised[LeNet300100]
  p = {k: np.asarray(v, np.float64) for k, v in _named_params(model).items()}
  x = _images(4)
  h = x.reshape(len(x), -1).astype(np.float64)
  h = np.maximum(h @ p['fc1/kernel'] + p['fc1/bias'], 0)
  h = np.maximum(h @ p['fc2/kernel'] + p['fc2/bias'], 0)
  expected = h @ p['fc3/kernel'] + p['fc3/bias']
  np.testing.assert_allclose(_logits(model, x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
  'kernel_shape, strides, padding, rhs_dilation',
  [
    ((3, 2, 4, 5), (1, 1), 'VALID', (1, 1)),
    ((3, 2, 4, 5), (2, 1), 'SAME', (1, 2)),
    ((1, 4, 3, 2), (1, 3), ((1, 2), (0, 1)), (2, 1)),
  ],
)
def test_patches_conv_matches_lax_conv(kernel_shape, strides, padding, rhs_dilation):
  # Non-square kernels and several input channels expose a kernel flattened in
  # a different order than the patch features.
  rng = np.random.default_rng(0)
  lhs = rng.normal(size=(2, 9, 10, kernel_shape[2])).astype(np.float32)
  rhs = rng.normal(size=kernel_shape).astype(np.float32)
  conv_kwargs = dict(
    window_strides=strides,
    padding=padding,
    rhs_dilation=rhs_dilation,
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  np.testing.assert_allclose(
    jax.jit(lambda lhs, rhs: _conv_as_patches_matmul(lhs, rhs, **conv_kwargs))(lhs, rhs),
    jax.lax.conv_general_dilated(lhs, rhs, **conv_kwargs),
    rtol=1e-5,
    atol=1e-5,
  )


@pytest.mark.parametrize('window', [(2, 2), (2, 3), (1, 2)])
@pytest.mark.parametrize('values', ['distinct', 'ties'])
def test_max_pool_matches_reduce_window_in_values_and_gradients(window, values):
  # With ties (few distinct values, like the flat background of MNIST after
  # a convolution), the gradient must still reach only the first maximum of
  # each window, as select-and-scatter routes it.
  rng = np.random.default_rng(0)
  shape = (3, 6, 12, 4)
  if values == 'ties':
    x = rng.integers(0, 3, shape).astype(np.float32)
  else:
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)
  cotangent = rng.normal(size=(3, 6 // window[0], 12 // window[1], 4)).astype(np.float32)

  def grad(pool):
    return jax.jit(jax.grad(lambda x: jnp.sum(pool(x) * cotangent)))(x)

  reference = lambda x: nnx.max_pool(x, window, strides=window)  # noqa: E731
  np.testing.assert_array_equal(jax.jit(lambda x: max_pool(x, window))(x), reference(x))
  np.testing.assert_array_equal(grad(lambda x: max_pool(x, window)), grad(reference))


def test_max_pool_keeps_nan():
  x = jnp.array([1.0, jnp.nan, 0.0, 2.0]).reshape(1, 2, 2, 1)
  assert np.isnan(max_pool(x)).all()


@pytest.mark.parametrize(
  ('shape', 'message'),
  [
    ((2, 5, 4, 1), r'image size 5x4 is not a multiple of the pooling window 2x2'),
    ((5, 4, 1), r'4 dims, got shape \(5, 4, 1\)'),
  ],
)
def test_max_pool_rejects_bad_shapes(shape, message):
  with pytest.raises(ValueError, match=message):
    max_pool(jnp.zeros(shape))


def test_invalid_conv_impl_names_value_and_choices():
  with pytest.raises(ValueError, match='conv_impl') as error:
    LeNet5(nnx.Rngs(0), conv_impl='winograd')
  message = str(error.value)
  assert "'winograd'" in message
  for impl in CONV_IMPLS:
    assert repr(impl) in message
