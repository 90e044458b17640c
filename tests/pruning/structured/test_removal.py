"""Physical removal: the smaller dense model computes what the masked model computes."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pruning
from models import LeNet5, layer_costs, resnet20, vit_cifar
from pruning.structured import (
  dependency_groups,
  group_names,
  load_plan,
  load_pruned,
  plan_record,
  remove_units,
  save_pruned,
  structured_mask,
  structured_plan,
)
from pruning.structured import removal as removal_module
from pruning.structured.removal import PARAMS_FILE


def _randomised(model, seed):
  """Biases, BN scales, offsets and means drawn at random (kernels keep their initialisation)."""
  rng = np.random.default_rng(seed)
  state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))

  def value(path, v):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    if v.ndim > 1:
      return v[...]
    if name.endswith('/var'):
      return jnp.asarray(rng.uniform(0.5, 2.0, v.shape), jnp.float32)
    return jnp.asarray(0.5 * rng.standard_normal(v.shape), jnp.float32)

  nnx.update(
    model,
    jax.tree_util.tree_map_with_path(value, state, is_leaf=lambda x: isinstance(x, nnx.Variable)),
  )
  return model


def _assert_same_outputs(smaller, model, x):
  """Equal up to float32 rounding: 1e-5 of the outputs' scale (at least 1)."""
  want = _outputs(model, x)
  scale = max(1.0, float(np.abs(want).max()))
  np.testing.assert_allclose(_outputs(smaller, x), want, rtol=0, atol=1e-5 * scale)


def _masked(model, groups, plan, **options):
  params = nnx.state(model, nnx.Param)
  nnx.update(model, pruning.apply_mask(params, structured_mask(params, groups, plan, **options)))
  return model


def _images(shape, count=4, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((count, *shape)), jnp.float32)


def _outputs(model, x):
  model.eval()
  return np.asarray(model(x))


def _totals(model, shape):
  costs = layer_costs(model, shape)
  return {name: (c.weights, c.macs) for name, c in costs.items()}


def test_lenet5_outputs_and_costs():
  x = _images((28, 28, 1))
  model = _randomised(LeNet5(nnx.Rngs(0)), 0)
  groups = dependency_groups(model, x)
  plan = {'conv1/kernel:3': tuple(range(0, 20, 2)), 'conv2/kernel:3': tuple(range(20)),
          'fc1/kernel:1': tuple(range(0, 500, 4))}  # fmt: skip
  _masked(model, groups, plan)
  smaller = remove_units(model, groups, plan, x)
  _assert_same_outputs(smaller, model, x)
  assert smaller.conv1.kernel.shape == (5, 5, 1, 10) and smaller.fc1.kernel.shape == (16 * 20, 125)
  # Weights and MACs by hand: 24x24 and 8x8 conv outputs, one position for the FC layers.
  assert _totals(smaller, (28, 28, 1)) == {
    'conv1': (25 * 10, 24 * 24 * 25 * 10),
    'conv2': (25 * 10 * 20, 8 * 8 * 25 * 10 * 20),
    'fc1': (320 * 125, 320 * 125),
    'fc2': (125 * 10, 125 * 10),
  }
  assert sum(p.size for p in jax.tree.leaves(nnx.state(smaller, nnx.Param))) == (
    250 + 10 + 5000 + 20 + 40000 + 125 + 1250 + 10
  )


def test_lenet5_folds_the_constant_outputs_of_removed_units():
  """Only the producing kernels are masked: removed units output their bias, which the
  next layers still read; their constant is folded into conv2's and fc1's biases."""
  x = _images((28, 28, 1))
  model = _randomised(LeNet5(nnx.Rngs(0)), 1)
  groups = dependency_groups(model, x)
  plan = {'conv1/kernel:3': tuple(range(12)), 'conv2/kernel:3': tuple(range(1, 50, 2))}
  _masked(model, groups, plan, roles=('out',))
  assert np.any(np.asarray(model.conv2.kernel[...])[:, :, 12:] != 0)  # still read
  smaller = remove_units(model, groups, plan, x)
  _assert_same_outputs(smaller, model, x)
  assert not np.allclose(smaller.fc1.bias[...], model.fc1.bias[...])  # something was folded
  assert smaller.conv2.kernel.shape == (5, 5, 12, 25)


def test_units_that_are_not_dead_are_refused():
  x = _images((28, 28, 1))
  model = _randomised(LeNet5(nnx.Rngs(0)), 2)
  groups = dependency_groups(model, x)
  with pytest.raises(ValueError, match=r"group 'conv2/kernel:3' reach 'fc1'.*not dead"):
    remove_units(model, groups, {'conv2/kernel:3': (0, 1)}, x)


class VGGLike(nnx.Module):
  """Two padded 3x3 conv-BN-ReLU layers, max pooling, flatten, two FC layers."""

  def __init__(self, rngs):
    self.conv1 = nnx.Conv(3, 8, (3, 3), padding='SAME', use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(8, rngs=rngs)
    self.conv2 = nnx.Conv(8, 16, (3, 3), padding='SAME', use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(16, rngs=rngs)
    self.fc1 = nnx.Linear(4 * 4 * 16, 32, rngs=rngs)
    self.fc2 = nnx.Linear(32, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(nnx.relu(self.bn1(self.conv1(x))), (2, 2), (2, 2))
    x = nnx.max_pool(nnx.relu(self.bn2(self.conv2(x))), (2, 2), (2, 2))
    return self.fc2(nnx.relu(self.fc1(x.reshape(x.shape[0], -1))))


@pytest.fixture(scope='module')
def vgg():
  x = _images((16, 16, 3))
  model = VGGLike(nnx.Rngs(0))
  return x, dependency_groups(model, x)


@pytest.mark.parametrize('criterion', ['l1', 'bn_scale'])
def test_vgg_with_batch_norm(vgg, criterion):
  x, groups = vgg
  model = _randomised(VGGLike(nnx.Rngs(0)), 3)
  plan = structured_plan(model, groups, 0.5, criterion=criterion, scope='global')
  _masked(model, groups, plan)
  smaller = remove_units(model, groups, plan, x)
  _assert_same_outputs(smaller, model, x)
  widths = {name: len(kept) for name, kept in plan.items()}
  assert smaller.bn1.num_features == smaller.conv1.out_features == widths['conv1/kernel:3']
  assert smaller.fc1.in_features == 16 * widths['conv2/kernel:3']


def test_vgg_folds_into_a_linear_layer_but_not_through_zero_padding(vgg):
  x, groups = vgg
  model = _randomised(VGGLike(nnx.Rngs(0)), 4)
  last = {'conv2/kernel:3': (0, 2, 4, 6, 8, 10)}
  _masked(model, groups, last, roles=('out',))  # BN offsets and fc1's rows stay: relu(b) folds
  smaller = remove_units(model, groups, last, x)
  _assert_same_outputs(smaller, model, x)
  model = _randomised(VGGLike(nnx.Rngs(0)), 4)
  first = {'conv1/kernel:3': (0, 1, 2, 3)}
  _masked(model, groups, first, roles=('out',))
  with pytest.raises(ValueError, match=r"group 'conv1/kernel:3' reach 'conv2'.*zero padding"):
    remove_units(model, groups, first, x)


@pytest.fixture(scope='module')
def resnet_b():
  x = _images((32, 32, 3), count=2)
  model = _randomised(resnet20(nnx.Rngs(0), shortcut='B'), 5)
  return x, model, dependency_groups(model, x)


def test_resnet20_option_b(resnet_b):
  x, dense, groups = resnet_b
  model = nnx.clone(dense)
  plan = structured_plan(model, groups, 0.5, criterion='l2', round_to=8)
  sizes = {n: g.size for n, g in zip(group_names(groups), groups, strict=True)}
  assert {n: len(kept) for n, kept in plan.items()} == {n: sizes[n] // 2 for n in plan}
  _masked(model, groups, plan)
  smaller = remove_units(model, groups, plan, x)
  _assert_same_outputs(smaller, model, x)
  before, after = _totals(dense, (32, 32, 3)), _totals(smaller, (32, 32, 3))
  for name, (weights, macs) in before.items():
    # Every width halves but the image's 3 channels and the 10 classes.
    ratio = 2 if name in ('conv1', 'fc') else 4
    assert after[name] == (weights // ratio, macs // ratio), name
  norms = [m for _, m in nnx.iter_modules(dense) if isinstance(m, nnx.BatchNorm)]
  params = sum(p.size for p in jax.tree.leaves(nnx.state(smaller, nnx.Param)))
  # The kernels, fc's 10 biases, and half of every BN's scales and offsets.
  assert params == sum(w for w, _ in after.values()) + 10 + sum(m.num_features for m in norms)


def test_plan_round_trip(resnet_b, tmp_path):
  x, dense, groups = resnet_b
  model = nnx.clone(dense)
  plan = structured_plan(model, groups, 0.25, criterion='random', key=0)
  _masked(model, groups, plan)
  smaller = remove_units(model, groups, plan, x)
  record = plan_record(model, groups, plan, model_name='resnet20', options={'shortcut': 'B'})
  save_pruned(tmp_path, smaller, record)
  saved = json.loads((tmp_path / 'plan.json').read_text())
  assert saved['model'] == 'resnet20' and saved['options'] == {'shortcut': 'B'}
  assert saved['groups']['conv1/kernel:3']['width'] == 12
  assert saved['groups']['conv1/kernel:3']['kept'] == list(plan['conv1/kernel:3'])
  assert load_plan(tmp_path) == saved
  fresh = resnet20(nnx.Rngs(7), shortcut='B')  # other values: all must come from the file
  loaded = load_pruned(tmp_path, fresh)
  np.testing.assert_array_equal(_outputs(loaded, x), _outputs(smaller, x))
  assert loaded.stage3[0].bn2.num_features == smaller.stage3[0].bn2.num_features == 48
  with np.load(tmp_path / PARAMS_FILE, allow_pickle=False) as arrays:
    assert all(arrays[name].dtype != object for name in arrays.files)
  with pytest.raises(ValueError, match=r"'stage2/0/shortcut/kernel'"):
    load_pruned(tmp_path, resnet20(nnx.Rngs(0)))  # option A has no projection to cut


def test_resnet20_option_a_streams_are_refused_inner_groups_removed():
  x = _images((32, 32, 3), count=2)
  model = _randomised(resnet20(nnx.Rngs(0)), 6)
  groups = dependency_groups(model, x)
  stream = {'conv1/kernel:3': tuple(range(8))}
  refused = r"group 'conv1/kernel:3' is only part of axis 0 of 'fc/kernel'.*option-A.*option B"
  with pytest.raises(ValueError, match=refused):
    remove_units(model, groups, stream, x)
  plan = {
    name: tuple(range(0, g.size, 2))
    for name, g in zip(group_names(groups), groups, strict=True)
    if g.prunable and name.endswith('conv1/kernel:3') and name != 'conv1/kernel:3'
  }
  assert len(plan) == 9
  _masked(model, groups, plan)
  smaller = remove_units(model, groups, plan, x)
  _assert_same_outputs(smaller, model, x)
  assert smaller.stage3[2].conv1.kernel.shape == (3, 3, 64, 32)


def test_vit_heads_and_mlp_units_removed_head_dimensions_refused():
  x = _images((32, 32, 3), count=2)
  model = _randomised(vit_cifar(nnx.Rngs(0), dim=32, depth=1, num_heads=4, mlp_dim=64), 7)
  groups = dependency_groups(model, x)
  plan = {
    'blocks/0/attention/key/kernel:1': (0, 2),  # heads
    'blocks/0/fc1/kernel:1': tuple(range(0, 64, 2)),  # MLP hidden units
  }
  _masked(model, groups, plan)
  smaller = remove_units(model, groups, plan, x)
  _assert_same_outputs(smaller, model, x)
  attention = smaller.blocks[0].attention
  assert attention.num_heads == 2 and attention.query.kernel.shape == (32, 2, 8)
  assert attention.out.kernel.shape == (2, 8, 32) and smaller.blocks[0].fc2.in_features == 32
  for name in ('blocks/0/attention/key/kernel:2', 'blocks/0/attention/value/kernel:2'):
    with pytest.raises(ValueError, match=f"'{name}' is a head dimension of 'blocks/0/attention'"):
      remove_units(model, groups, {name: (0, 1)}, x)


def test_a_failed_save_leaves_the_previous_pair_and_no_litter(resnet_b, tmp_path, monkeypatch):
  x, dense, groups = resnet_b
  folder = tmp_path / 'pruned'
  saved = {}
  for fraction in (0.25, 0.5):
    model = nnx.clone(dense)
    plan = structured_plan(model, groups, fraction, criterion='random', key=0)
    _masked(model, groups, plan)
    smaller = remove_units(model, groups, plan, x)
    record = plan_record(model, groups, plan, model_name='resnet20', options={'shortcut': 'B'})
    saved[fraction] = (smaller, record)
  save_pruned(folder, *saved[0.25])
  first = (folder / 'plan.json').read_bytes(), (folder / PARAMS_FILE).read_bytes()

  def failing(path, data):
    if str(path).endswith('plan.json'):
      raise OSError('disk full')
    return real(path, data)

  real = removal_module._io.write_atomic
  monkeypatch.setattr(removal_module._io, 'write_atomic', failing)
  with pytest.raises(OSError, match='disk full'):
    save_pruned(folder, *saved[0.5])
  assert ((folder / 'plan.json').read_bytes(), (folder / PARAMS_FILE).read_bytes()) == first
  assert sorted(p.name for p in tmp_path.iterdir()) == ['pruned']
  monkeypatch.undo()
  save_pruned(folder, *saved[0.5])  # over the old pair: both files replaced, nothing left over
  assert load_plan(folder) == json.loads(json.dumps(saved[0.5][1]))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['pruned']
