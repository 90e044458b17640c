"""Dead-neuron removal keeps the masked model's outputs, with exact per-layer counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pruning
from models import MODELS, VGG16CIFAR, AlexNet, LeNet5, LeNet300100
from models.alexnet import local_response_norm
from pruning.sparse import surgery
from pruning.sparse.layer_chain import LayerChain


class MLP(nnx.Module):
  """6 -> 5 -> 4 -> 3 with ReLUs."""

  def __init__(self, rngs):
    self.fc1 = nnx.Linear(6, 5, rngs=rngs)
    self.fc2 = nnx.Linear(5, 4, rngs=rngs)
    self.fc3 = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.fc1(x))
    x = nnx.relu(self.fc2(x))
    return self.fc3(x)


class CaffeLeNet(nnx.Module):
  """LeNet-5's shape in small: VALID convs without ReLU, max-pool, flatten, two FC."""

  def __init__(self, rngs):
    self.conv1 = nnx.Conv(1, 4, kernel_size=(3, 3), padding='VALID', rngs=rngs)
    self.conv2 = nnx.Conv(4, 5, kernel_size=(3, 3), padding='VALID', rngs=rngs)
    self.fc1 = nnx.Linear(4 * 5, 6, rngs=rngs)
    self.fc2 = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(self.conv1(x), window_shape=(2, 2), strides=(2, 2))  # 14 -> 12 -> 6
    x = nnx.max_pool(self.conv2(x), window_shape=(2, 2), strides=(2, 2))  # 6 -> 4 -> 2
    x = x.reshape(x.shape[0], -1)
    return self.fc2(nnx.relu(self.fc1(x)))


class VGGBlock(nnx.Module):
  """VGG-style: SAME convs with BatchNorm and ReLU, max-pool, flatten, two FC."""

  def __init__(self, rngs):
    self.conv1 = nnx.Conv(2, 4, kernel_size=(3, 3), padding='SAME', rngs=rngs)
    self.bn1 = nnx.BatchNorm(4, rngs=rngs)
    self.conv2 = nnx.Conv(4, 4, kernel_size=(3, 3), padding='SAME', rngs=rngs)
    self.bn2 = nnx.BatchNorm(4, rngs=rngs)
    self.fc1 = nnx.Linear(4 * 4 * 4, 5, rngs=rngs)
    self.fc2 = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nnx.relu(self.bn2(self.conv2(x)))
    x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))


def randomise(model, seed=0):
  """Nonzero biases and BatchNorm statistics, so constants are not trivially zero."""
  rng = np.random.default_rng(seed)
  for _, module in nnx.iter_modules(model):
    if isinstance(module, (nnx.Linear, nnx.Conv)):
      module.bias[...] = jnp.asarray(rng.normal(size=module.bias.shape), jnp.float32)
    if isinstance(module, nnx.BatchNorm):
      for name in ('scale', 'bias', 'mean'):
        getattr(module, name)[...] = jnp.asarray(rng.normal(size=module.num_features), jnp.float32)
      module.var[...] = jnp.asarray(rng.uniform(0.5, 2, module.num_features), jnp.float32)
  return model


def built_from_numpy(build, seed=0):
  """``build()`` traced abstractly, its variables filled from numpy.

  Building a VGG eagerly compiles every initialiser for every shape (about
  10 s on 2 cores); this costs nothing. Kernels are He-normal, BatchNorm
  variances one, the rest zero until :func:`randomise`.
  """
  model = nnx.eval_shape(build)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path, simple=True, separator='/').removesuffix('/value')
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(np.zeros((*leaf.shape, 2), np.uint32))
    if name.endswith('kernel'):
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), leaf.shape), leaf.dtype)
    return jnp.full(leaf.shape, 1 if name.endswith('var') else 0, leaf.dtype)

  nnx.update(model, jax.tree_util.tree_map_with_path(fill, nnx.state(model)))
  return model


def full_mask(model):
  return pruning.prunable_mask(nnx.state(model, nnx.Param))


def outputs(model, x, mask=None):
  """The model's outputs in evaluation mode (compiled: cheaper than eager for a VGG)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if mask is not None:
    params = pruning.apply_mask(params, mask)
  copy = nnx.merge(graphdef, params, rest)
  copy.eval()
  graphdef, state = nnx.split(copy)
  return np.asarray(jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, x))


def assert_same_outputs(model, mask, result, input_shape, seed=1):
  x = np.random.default_rng(seed).normal(size=(16, *input_shape)).astype(np.float32)
  np.testing.assert_allclose(
    outputs(result.model, x), outputs(model, x, mask), rtol=1e-5, atol=1e-5
  )


def test_mlp_fold_drop_and_cascade():
  model = randomise(MLP(nnx.Rngs(0)))
  model.fc1.bias[...] = jnp.array([0.7, -0.4, 0.1, 0.2, 0.3])
  mask = full_mask(model)
  fc1 = np.ones((6, 5), bool)
  fc1[:, 0] = False  # unit 0: no inputs, relu(0.7) > 0 -> folded into fc2's bias
  fc1[:, 1] = False  # unit 1: no inputs, relu(-0.4) = 0 -> dropped
  fc2 = np.ones((5, 4), bool)
  fc2[2, :] = False  # fc1 unit 2: no outputs
  fc2[:, 0] = False
  fc2[0, 0] = True  # fc2 unit 0 is fed by fc1 unit 0 only: a cascade
  fc3 = np.ones((4, 3), bool)
  fc3[3, :] = False  # fc2 unit 3: no outputs; then fc1 unit 3 feeds only it...
  fc2[3, :] = False
  fc2[3, 3] = True  # ...so fc1 unit 3 loses its outputs in the second pass
  mask['fc1']['kernel'], mask['fc2']['kernel'] = jnp.asarray(fc1), jnp.asarray(fc2)
  mask['fc3']['kernel'] = jnp.asarray(fc3)
  result = pruning.remove_dead_neurons(model, mask, input_shape=(6,))
  assert result.neurons == {
    'fc1': pruning.NeuronCounts(units=5, no_outputs=2, no_inputs=2, constant=0),
    'fc2': pruning.NeuronCounts(units=4, no_outputs=1, no_inputs=1, constant=0),
    'fc3': pruning.NeuronCounts(units=3, no_outputs=0, no_inputs=0, constant=0),
  }
  assert result.model.fc1.kernel.shape == (6, 1)
  assert result.model.fc2.kernel.shape == (1, 2) and result.model.fc2.in_features == 1
  assert result.model.fc3.kernel.shape == (2, 3)
  assert result.max_abs_difference is not None and result.max_abs_difference < 1e-5
  assert_same_outputs(model, mask, result, (6,))
  assert model.fc1.kernel.shape == (6, 5), 'the input model must be left untouched'
  # The new mask mirrors the smaller params and keeps None where the old one had it.
  assert result.mask['fc1']['bias'] is None
  assert result.mask['fc2']['kernel'].shape == (1, 2)


def test_folded_bias_is_the_constant_times_the_weights():
  model = randomise(MLP(nnx.Rngs(1)))
  model.fc1.bias[...] = jnp.array([2.0, 1.0, 1.0, 1.0, 1.0])
  mask = full_mask(model)
  mask['fc1']['kernel'] = mask['fc1']['kernel'].at[:, 0].set(False)
  expected = np.asarray(model.fc2.bias[...]) + 2.0 * np.asarray(model.fc2.kernel[...])[0]
  result = pruning.remove_dead_neurons(model, mask, input_shape=(6,))
  np.testing.assert_allclose(np.asarray(result.model.fc2.bias[...]), expected, rtol=1e-6)
  np.testing.assert_array_equal(result.model.fc2.kernel[...], model.fc2.kernel[...][1:])


def test_conv_filters_fold_through_pooling_and_flatten():
  model = randomise(CaffeLeNet(nnx.Rngs(0)))
  input_shape = (14, 14, 1)
  mask = full_mask(model)
  conv1 = np.ones((3, 3, 1, 4), bool)
  conv1[..., 0] = False  # filter 0: constant map (no ReLU) -> folded into conv2 (VALID)
  conv2 = np.ones((3, 3, 4, 5), bool)
  conv2[..., 1] = False  # filter 1: constant -> folded into fc1 through the flatten
  fc1 = np.ones((20, 6), bool)
  fc1[np.arange(4) * 5 + 3, :] = False  # conv2 filter 3's slice of fc1 (NHWC flatten): no outputs
  mask['conv1']['kernel'] = jnp.asarray(conv1)
  mask['conv2']['kernel'] = jnp.asarray(conv2)
  mask['fc1']['kernel'] = jnp.asarray(fc1)
  result = pruning.remove_dead_neurons(model, mask, input_shape=input_shape)
  assert result.neurons['conv1'] == pruning.NeuronCounts(4, 0, 1, 0)
  assert result.neurons['conv2'] == pruning.NeuronCounts(5, 1, 1, 0)
  assert result.model.conv2.kernel.shape == (3, 3, 3, 3)
  assert result.model.fc1.kernel.shape == (12, 6) and result.model.fc1.in_features == 12
  assert_same_outputs(model, mask, result, input_shape)


def test_constant_filter_before_a_zero_padded_conv_is_kept():
  model = randomise(VGGBlock(nnx.Rngs(0)))
  input_shape = (8, 8, 2)
  # After BatchNorm, conv1 filter 0 outputs a positive constant, filter 1 a negative one.
  model.conv1.bias[...] = jnp.zeros(4)
  model.bn1.bias[...] = jnp.array([1.5, -1.5, 0.2, 0.3])
  mask = full_mask(model)
  conv1 = np.ones((3, 3, 2, 4), bool)
  conv1[..., :2] = False
  conv2 = np.ones((3, 3, 4, 4), bool)
  conv2[:, :, 2, :] = False  # conv1 filter 2 has no outputs
  mask['conv1']['kernel'], mask['conv2']['kernel'] = jnp.asarray(conv1), jnp.asarray(conv2)
  result = pruning.remove_dead_neurons(model, mask, input_shape=input_shape)
  # Filter 0's constant meets SAME zero padding in conv2: it cannot fold exactly, so it stays.
  assert result.neurons['conv1'] == pruning.NeuronCounts(4, 1, 1, 1)
  assert result.model.conv1.kernel.shape == (3, 3, 2, 2)
  assert result.model.bn1.num_features == 2 and result.model.bn1.mean.shape == (2,)
  assert result.model.conv2.kernel.shape == (3, 3, 2, 4)
  assert_same_outputs(model, mask, result, input_shape)


@pytest.mark.parametrize(
  ('model_cls', 'input_shape'), [(LeNet300100, (784,)), (LeNet5, (28, 28, 1))]
)
def test_paper_models_at_high_sparsity(model_cls, input_shape):
  model = randomise(model_cls(nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  mask = pruning.sparsity_mask(params, 0.995 if model_cls is LeNet300100 else 0.98)
  result = pruning.remove_dead_neurons(model, mask, input_shape=input_shape)
  assert sum(n.removed for n in result.neurons.values()) > 0
  kept = pruning.mask_stats(result.mask).overall.kept
  assert kept <= pruning.mask_stats(mask).overall.kept
  assert_same_outputs(model, mask, result, input_shape)
  # Removing again finds nothing left to remove: the first call reached a fixed point.
  again = pruning.remove_dead_neurons(result.model, result.mask, input_shape=input_shape)
  assert all(n.removed == 0 for n in again.neurons.values())


def test_without_mask_zero_weights_count_as_pruned():
  model = randomise(MLP(nnx.Rngs(2)))
  mask = full_mask(model)
  mask['fc2']['kernel'] = mask['fc2']['kernel'].at[:, 1].set(False)
  params = pruning.apply_mask(nnx.state(model, nnx.Param), mask)
  nnx.update(model, params)
  with_mask = pruning.remove_dead_neurons(model, mask, input_shape=(6,))
  without = pruning.remove_dead_neurons(model, input_shape=(6,))
  assert with_mask.neurons == without.neurons
  assert without.neurons['fc2'].no_inputs == 1


def test_a_channel_first_flatten_keeps_the_layer_whole_and_the_check_catches_it(monkeypatch):
  class ChannelsFirst(CaffeLeNet):
    def __call__(self, x):
      x = nnx.max_pool(self.conv1(x), window_shape=(2, 2), strides=(2, 2))
      x = nnx.max_pool(self.conv2(x), window_shape=(2, 2), strides=(2, 2))
      x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # NCHW order
      return self.fc2(nnx.relu(self.fc1(x)))

  model = randomise(ChannelsFirst(nnx.Rngs(0)))
  mask = full_mask(model)
  fc1 = np.ones((20, 6), bool)
  fc1[np.arange(4) * 5 + 3, :] = False  # the NHWC slice of filter 3: wrong for this model
  mask['fc1']['kernel'] = jnp.asarray(fc1)
  # The probe sees a unit's change land outside its channels-last slice: nothing goes.
  result = pruning.remove_dead_neurons(model, mask, input_shape=(14, 14, 1))
  assert result.neurons['conv2'] == pruning.NeuronCounts(
    5, fixed="the code between it and 'fc1' does not keep each unit in its own channel"
  )
  # Without the probe, the output check catches the wrong removal.
  monkeypatch.setattr(LayerChain, 'fixed_units', lambda self, index: None)
  with pytest.raises(ValueError, match='differs from the masked model'):
    pruning.remove_dead_neurons(model, mask, input_shape=(14, 14, 1))


def test_unsupported_models_are_named():
  class Scaled(MLP):
    def __init__(self, rngs):
      super().__init__(rngs)
      self.temperature = nnx.Param(jnp.ones(()))

  with pytest.raises(ValueError, match=r"outside Linear/Conv/BatchNorm layers: \['temperature'\]"):
    pruning.remove_dead_neurons(Scaled(nnx.Rngs(0)), input_shape=(6,))

  class Twice(nnx.Module):
    def __init__(self, rngs):
      self.fc = nnx.Linear(4, 4, rngs=rngs)

    def __call__(self, x):
      return self.fc(self.fc(x))

  with pytest.raises(ValueError, match=r"layers \['fc'\] run more than once"):
    pruning.remove_dead_neurons(Twice(nnx.Rngs(0)), input_shape=(4,))


def test_mask_of_another_model_is_an_error():
  mask = full_mask(MLP(nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"mask leaf 'fc1/kernel' has shape \(6, 5\)"):
    pruning.remove_dead_neurons(LeNet300100(nnx.Rngs(0)), mask, input_shape=(784,))


def test_load_resized_round_trip_and_errors():
  model = randomise(VGGBlock(nnx.Rngs(0)))
  mask = full_mask(model)
  mask['conv2']['kernel'] = mask['conv2']['kernel'].at[..., 1].set(False)
  smaller = pruning.remove_dead_neurons(model, mask, input_shape=(8, 8, 2)).model
  state = nnx.state(smaller, nnx.Any(nnx.Param, nnx.BatchStat))
  fresh = pruning.load_resized(VGGBlock(nnx.Rngs(5)), state)
  x = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype(np.float32)
  np.testing.assert_array_equal(outputs(fresh, x), outputs(smaller, x))
  assert fresh.bn2.num_features == 3
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(smaller, nnx.Param)))
  del params['fc2']['bias']
  with pytest.raises(ValueError, match=r"missing \['fc2/bias'\]"):
    pruning.load_resized(VGGBlock(nnx.Rngs(5)), params)


def _set_constant(model, conv, bn, unit, sign):
  """``conv``'s filter ``unit`` outputs a constant of ``sign`` after its BatchNorm (if any)."""
  getattr(model, conv).bias[...] = getattr(model, conv).bias[...].at[unit].set(sign * 1.0)
  if model.batch_norm:
    # (b - mean) / sqrt(var + eps) * scale + bias: the statistics matter, the sign holds.
    norm = getattr(model, bn)
    for name, value in (('mean', -sign), ('var', 1.0), ('scale', 0.5), ('bias', 0.2 * sign)):
      getattr(norm, name)[...] = getattr(norm, name)[...].at[unit].set(value)


@pytest.mark.parametrize('batch_norm', [True, False], ids=['batch_norm', 'no_batch_norm'])
def test_tiny_vgg16_cifar_removes_filters_with_their_batch_norm_channels(batch_norm):
  build = lambda: VGG16CIFAR(nnx.Rngs(0), width=1 / 16, batch_norm=batch_norm)  # noqa: E731
  model = randomise(built_from_numpy(build))
  _set_constant(model, 'conv1_2', 'bn1_2', 0, +1)
  _set_constant(model, 'conv2_1', 'bn2_1', 1, +1)
  _set_constant(model, 'conv2_2', 'bn2_2', 2, -1)
  _set_constant(model, 'conv5_3', 'bn5_3', 4, +1)
  model.fc7.bias[...] = model.fc7.bias[...].at[6].set(1.0)
  mask = full_mask(model)
  kernels = {
    name: np.asarray(mask[name]['kernel']).copy() for name in mask if 'kernel' in mask[name]
  }
  # conv1_2 filter 0: no inputs, a positive constant into conv2_1's zero-padded 3x3: kept.
  kernels['conv1_2'][..., 0] = False
  # conv2_1 filter 1: no inputs; conv2_2 keeps only its centre taps, which see the
  # constant at every position, padding or not: folded into conv2_2's bias.
  kernels['conv2_1'][..., 1] = False
  kernels['conv2_2'][:, :, 1, :] = False
  kernels['conv2_2'][1, 1, 1, :] = True
  # conv2_2 filter 2: no inputs, negative before the ReLU: a zero, dropped.
  kernels['conv2_2'][..., 2] = False
  # conv3_1 filter 3: no outputs; its BatchNorm channel goes with it.
  kernels['conv3_2'][:, :, 3, :] = False
  # conv5_3 filter 4: no inputs, a constant through the pool and flatten: folded into fc6.
  kernels['conv5_3'][..., 4] = False
  # fc6 unit 5: no outputs. conv5_3 filter 7 feeds only fc6 unit 5, so it loses its
  # outputs in a second pass.
  kernels['fc7'][5, :] = False
  kernels['fc6'][7, :] = False
  kernels['fc6'][7, 5] = True
  # fc7 unit 6: no inputs, relu(1.0) folded into fc8.
  kernels['fc7'][:, 6] = False
  for name, keep in kernels.items():
    mask[name]['kernel'] = jnp.asarray(keep)
  result = pruning.remove_dead_neurons(model, mask, input_shape=(32, 32, 3))
  changed = {
    'conv1_2': pruning.NeuronCounts(4, 0, 0, 1),
    'conv2_1': pruning.NeuronCounts(8, 0, 1, 0),
    'conv2_2': pruning.NeuronCounts(8, 0, 1, 0),
    'conv3_1': pruning.NeuronCounts(16, 1, 0, 0),
    'conv5_3': pruning.NeuronCounts(32, 1, 1, 0),
    'fc6': pruning.NeuronCounts(32, 1, 0, 0),
    'fc7': pruning.NeuronCounts(32, 0, 1, 0),
  }
  unchanged = {
    name: pruning.NeuronCounts(getattr(model, name).out_features)
    for name in kernels
    if name not in changed
  }
  assert result.neurons == {name: changed.get(name, unchanged.get(name)) for name in kernels}
  smaller = result.model
  assert smaller.conv1_2.kernel.shape == (3, 3, 4, 4)
  assert smaller.conv2_2.kernel.shape == (3, 3, 7, 7)
  assert smaller.conv3_1.kernel.shape == (3, 3, 7, 15)
  assert smaller.conv3_2.kernel.shape == (3, 3, 15, 16)
  assert smaller.fc6.kernel.shape == (30, 31) and smaller.fc6.in_features == 30
  assert smaller.fc7.kernel.shape == (31, 31) and smaller.fc8.kernel.shape == (31, 10)
  if batch_norm:
    for bn, features in (('bn2_1', 7), ('bn2_2', 7), ('bn3_1', 15), ('bn5_3', 30)):
      norm = getattr(smaller, bn)
      assert norm.num_features == features, bn
      for name in ('scale', 'bias', 'mean', 'var'):
        assert getattr(norm, name)[...].shape == (features,), (bn, name)
    # The surviving channels keep their own statistics: bn3_1 lost channel 3.
    np.testing.assert_array_equal(
      smaller.bn3_1.var[...], np.delete(np.asarray(model.bn3_1.var[...]), 3)
    )
  x = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype(np.float32)
  expected = outputs(model, x, mask)
  assert np.ptp(expected, axis=0).min() > 1e-3, 'the outputs must depend on the inputs'
  np.testing.assert_allclose(outputs(smaller, x), expected, rtol=1e-5, atol=1e-5)
  assert result.max_abs_difference < 1e-4


def test_a_constant_folds_into_a_padded_conv_only_through_taps_that_are_always_inside():
  conv = nnx.Conv(1, 2, kernel_size=(3, 3), padding='SAME', rngs=nnx.Rngs(0))
  keep = np.zeros((3, 3, 2), bool)
  keep[1, 1, :] = True
  assert surgery._sees_constant_exactly(conv, keep, (4, 4))
  keep[0, 1, 1] = True  # a top tap: outside the input in the first output row
  assert not surgery._sees_constant_exactly(conv, keep, (4, 4))
  valid = nnx.Conv(1, 2, kernel_size=(3, 3), padding='VALID', rngs=nnx.Rngs(0))
  assert surgery._sees_constant_exactly(valid, np.ones((3, 3, 2), bool), (4, 4))
  one_by_one = nnx.Conv(1, 2, kernel_size=(1, 1), padding='SAME', rngs=nnx.Rngs(0))
  assert surgery._sees_constant_exactly(one_by_one, np.ones((1, 1, 2), bool), (4, 4))


class AlexNetLike(nnx.Module):
  """AlexNet's obstacles in small: LRN after conv1, conv2 feeding a grouped conv3, two FC."""

  def __init__(self, rngs):
    self.conv1 = nnx.Conv(2, 4, kernel_size=(3, 3), padding='VALID', rngs=rngs)
    self.conv2 = nnx.Conv(4, 4, kernel_size=(3, 3), padding='VALID', rngs=rngs)
    self.conv3 = nnx.Conv(4, 4, kernel_size=(1, 1), feature_group_count=2, rngs=rngs)
    self.fc1 = nnx.Linear(4 * 4 * 4, 5, rngs=rngs)
    self.fc2 = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    x = local_response_norm(nnx.relu(self.conv1(x)), size=3, alpha=1.0)  # 12 -> 10
    x = nnx.relu(self.conv2(x))  # 10 -> 8
    x = nnx.max_pool(nnx.relu(self.conv3(x)), window_shape=(2, 2), strides=(2, 2))  # 8 -> 4
    return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))


def test_grouped_convolutions_and_channel_mixing_keep_their_layers_whole():
  model = randomise(AlexNetLike(nnx.Rngs(0)))
  mask = full_mask(model)
  kernels = {name: np.asarray(mask[name]['kernel']).copy() for name in mask}
  kernels['conv2'][:, :, 2, :] = False  # conv1 filter 2: no outputs, but LRN mixes it in
  kernels['conv1'][..., 0] = False  # conv1 filter 0: no inputs; kept, a constant
  kernels['conv3'][:, :, 1, 2:] = False  # conv2 filter 3 (group 1's second input): no outputs
  kernels['conv3'][..., 1] = False  # conv3 filter 1: no inputs, in a grouped layer
  kernels['fc2'][0, :] = False  # fc1 unit 0: no outputs
  kernels['fc1'][:, 1] = False  # fc1 unit 1: no inputs
  for name, keep in kernels.items():
    mask[name]['kernel'] = jnp.asarray(keep)
  result = pruning.remove_dead_neurons(model, mask, input_shape=(12, 12, 2))
  assert result.neurons == {
    'conv1': pruning.NeuronCounts(
      4, 0, 0, 1, "the code between it and 'conv2' does not keep each unit in its own channel"
    ),
    'conv2': pruning.NeuronCounts(4, 0, 0, 0, "feeds 'conv3', a convolution of 2 groups"),
    'conv3': pruning.NeuronCounts(4, 0, 0, 1, 'a convolution of 2 groups'),
    'fc1': pruning.NeuronCounts(5, 1, 1, 0),
    'fc2': pruning.NeuronCounts(3),
  }
  smaller = result.model
  assert smaller.conv3.kernel.shape == (1, 1, 2, 4) and smaller.conv3.in_features == 4
  assert smaller.fc1.kernel.shape == (64, 3)
  assert_same_outputs(model, mask, result, (12, 12, 2))
  assert 'a convolution of 2 groups |' in result.to_markdown()
  # The file's params load into a fresh model, grouped convolution included.
  state = nnx.state(smaller, nnx.Param)
  fresh = pruning.load_resized(AlexNetLike(nnx.Rngs(1)), state)
  assert fresh.conv3.in_features == 4 and fresh.conv3.feature_group_count == 2
  x = np.random.default_rng(0).normal(size=(4, 12, 12, 2)).astype(np.float32)
  np.testing.assert_array_equal(outputs(fresh, x), outputs(smaller, x))


def test_alexnet_loses_units_in_fc1_and_fc2_only():
  model = built_from_numpy(lambda: AlexNet(nnx.Rngs(0)))
  mask = full_mask(model)
  mask['fc2']['kernel'] = mask['fc2']['kernel'].at[:7, :].set(False)  # 7 fc1 units: no outputs
  mask['fc2']['kernel'] = mask['fc2']['kernel'].at[:, :5].set(False)  # 5 fc2 units: no inputs
  mask['conv5']['kernel'] = mask['conv5']['kernel'].at[..., :3].set(False)  # grouped: kept
  result = pruning.remove_dead_neurons(model, mask, input_shape=MODELS['alexnet'].image_shape)
  assert {name: (n.removed, n.constant, n.fixed) for name, n in result.neurons.items()} == {
    'conv1': (0, 0, "feeds 'conv2', a convolution of 2 groups"),
    'conv2': (0, 0, 'a convolution of 2 groups'),
    'conv3': (0, 0, "feeds 'conv4', a convolution of 2 groups"),
    'conv4': (0, 0, 'a convolution of 2 groups'),
    'conv5': (0, 3, 'a convolution of 2 groups'),
    'fc1': (7, 0, ''),
    'fc2': (5, 0, ''),
    'fc3': (0, 0, ''),
  }
  assert result.model.fc2.kernel.shape == (4089, 4091)
  assert result.max_abs_difference < 1e-4
