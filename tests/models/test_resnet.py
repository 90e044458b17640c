"""The CIFAR ResNets of He et al. 2016: exact counts, per-layer MACs by hand, shortcuts A and B, steps.

Counts come from abstract initialisation; the forward passes and the train
step use one ResNet-8 (n = 1: every kind of block and shortcut of the family,
cheap to run eagerly and to compile on a CPU), built once for the module.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pruning
from models import (
  MODELS,
  BasicBlock,
  CIFARResNet,
  LayerCost,
  create_model,
  layer_costs,
  model_costs,
)
from pruning import rounds
from pruning.experiment import parallel, steps

# He et al. 2016, Table 6: 0.27M and 0.85M parameters; the exact figures, with every
# batch-norm scale and offset, are those of the torch reproductions (option A).
PARAMS = {('resnet20', 'A'): 269_722, ('resnet56', 'A'): 853_018}
MACS = {'resnet20': 40_551_040, 'resnet56': 125_485_696}  # ~40.55M and ~125.49M
CHANNELS, SIDES = (16, 32, 64), (32, 16, 8)
# One batch shape for every eager call: eager jax compiles each operation once per shape.
IMAGES = (4, 32, 32, 3)
BATCH_AT_STAGE1 = (4, 32, 32, 16)


def _hand_costs(n: int, shortcut: str = 'A') -> dict[str, LayerCost]:
  """Per-layer weights, biases and MACs of ResNet-(6n+2) on 32x32 images, derived by hand.

  A 3x3 convolution from ``c_in`` to ``c_out`` channels on an ``s x s`` output map
  holds ``9 c_in c_out`` weights and does that many MACs per output position.
  """
  costs = {'conv1': LayerCost(9 * 3 * 16, 0, 32 * 32 * 9 * 3 * 16)}
  c_in = 16
  for stage, (c_out, side) in enumerate(zip(CHANNELS, SIDES, strict=True), start=1):
    for block in range(n):
      name = f'stage{stage}/{block}'
      costs[f'{name}/conv1'] = LayerCost(9 * c_in * c_out, 0, side * side * 9 * c_in * c_out)
      costs[f'{name}/conv2'] = LayerCost(9 * c_out * c_out, 0, side * side * 9 * c_out * c_out)
      if shortcut == 'B' and c_in != c_out:
        costs[f'{name}/shortcut'] = LayerCost(c_in * c_out, 0, side * side * c_in * c_out)
      c_in = c_out
  costs['fc'] = LayerCost(64 * 10, 10, 64 * 10)
  return costs


def _hand_params(n: int, shortcut: str = 'A') -> int:
  """Weights and fc's bias from :func:`_hand_costs`, plus a scale and an offset per BN channel."""
  bn_channels = 16 + 2 * n * sum(CHANNELS)
  if shortcut == 'B':
    bn_channels += 32 + 64
  costs = _hand_costs(n, shortcut)
  return sum(c.weights + c.biases for c in costs.values()) + 2 * bn_channels


def _abstract(name, **options):
  return nnx.eval_shape(lambda: create_model(name, nnx.Rngs(0), **options))


def _param_shapes(model) -> dict[str, tuple[int, ...]]:
  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): variable.get_value().shape
    for path, variable in jax.tree.leaves_with_path(
      nnx.state(model, nnx.Param), is_leaf=lambda node: isinstance(node, nnx.Variable)
    )
  }


@pytest.fixture(scope='module')
def resnet8():
  return CIFARResNet(nnx.Rngs(0), depth=8)


@pytest.mark.parametrize(('name', 'n'), [('resnet20', 3), ('resnet56', 9)])
@pytest.mark.parametrize('shortcut', ['A', 'B'])
def test_parameter_counts_are_exact(name, n, shortcut):
  count = sum(int(np.prod(s)) for s in _param_shapes(_abstract(name, shortcut=shortcut)).values())
  assert count == _hand_params(n, shortcut)
  if shortcut == 'A':
    assert count == PARAMS[name, 'A']
  else:  # two 1x1 projections and their batch norms
    assert count == PARAMS[name, 'A'] + 16 * 32 + 32 * 64 + 2 * (32 + 64)


@pytest.mark.parametrize(('name', 'n'), [('resnet20', 3), ('resnet56', 9)])
def test_per_layer_macs_match_the_hand_derivation(name, n):
  costs = model_costs(name)
  assert list(costs.items()) == list(_hand_costs(n).items())  # names, order and counts
  assert sum(c.macs for c in costs.values()) == MACS[name]
  assert len(costs) == 6 * n + 2  # the network's depth: 6n + 2 weighted layers


def test_option_b_costs_add_the_projections_in_forward_order():
  model = _abstract('resnet20', shortcut='B')
  costs = model_costs('resnet20', shortcut='B')
  assert list(costs.items()) == list(_hand_costs(3, 'B').items())
  assert sum(c.macs for c in costs.values()) == MACS['resnet20'] + 2 * 131_072
  shapes = _param_shapes(model)
  projections = {path: shape for path, shape in shapes.items() if 'shortcut' in path}
  assert projections == {
    'stage2/0/shortcut/kernel': (1, 1, 16, 32),
    'stage2/0/shortcut_bn/scale': (32,),
    'stage2/0/shortcut_bn/bias': (32,),
    'stage3/0/shortcut/kernel': (1, 1, 32, 64),
    'stage3/0/shortcut_bn/scale': (64,),
    'stage3/0/shortcut_bn/bias': (64,),
  }
  assert not any('shortcut' in path for path in _param_shapes(_abstract('resnet20')))


def _silence_residual(block: BasicBlock) -> None:
  """bn2 outputs exact zeros, so the block's output is relu(shortcut(x))."""
  block.bn2.scale.set_value(jnp.zeros_like(block.bn2.scale.get_value()))


@pytest.mark.parametrize('shortcut', ['A', 'B'])
def test_the_shortcut_of_a_downsampling_block(shortcut, resnet8):
  if shortcut == 'A':
    block = nnx.clone(resnet8).stage2[0]
  else:
    block = BasicBlock(16, 32, stride=2, shortcut=shortcut, rngs=nnx.Rngs(0))
  _silence_residual(block)
  x = jax.random.normal(jax.random.key(1), BATCH_AT_STAGE1)
  if shortcut == 'A':
    # Every second row and column, 16 zero channels after the 16 of the input.
    expected = jnp.concatenate([x[:, ::2, ::2, :], jnp.zeros((4, 16, 16, 16))], axis=-1)
  else:
    expected = block.shortcut_bn(block.shortcut(x))
    assert block.shortcut.kernel.shape == (1, 1, 16, 32)
  np.testing.assert_array_equal(block(x), nnx.relu(expected))


def test_a_block_that_keeps_the_shape_adds_its_input():
  block = BasicBlock(16, 16, stride=1, shortcut='B', rngs=nnx.Rngs(0))
  assert not hasattr(block, 'shortcut')  # no projection where none is needed, even with B
  _silence_residual(block)
  x = jax.random.normal(jax.random.key(1), BATCH_AT_STAGE1)
  np.testing.assert_array_equal(block(x), nnx.relu(x))


def test_train_mode_uses_batch_statistics_and_eval_mode_running_averages(resnet8):
  images = jax.random.normal(jax.random.key(0), IMAGES)
  others = images.at[1:].set(jax.random.normal(jax.random.key(1), (3, 32, 32, 3)))
  model = nnx.clone(resnet8)
  model.train()
  logits = model(images)
  assert logits.shape == (4, 10) and bool(jnp.isfinite(logits).all())
  # The statistics moved towards the batch's (momentum 0.9: a tenth of the way).
  assert float(jnp.abs(model.bn1.mean.get_value()).max()) > 0
  assert float(jnp.abs(resnet8.bn1.mean.get_value()).max()) == 0  # the clone's, not the original's
  # In training mode an example's logits depend on the rest of the batch; in eval mode not.
  assert not np.allclose(logits[0], model(others)[0], atol=1e-4)
  model.eval()
  evaluated = model(images)
  np.testing.assert_allclose(evaluated[0], model(others)[0], rtol=1e-5, atol=1e-5)
  jitted = nnx.jit(lambda m, x: m(x))(model, images)
  np.testing.assert_allclose(jitted, evaluated, rtol=1e-5, atol=1e-5)


def test_prunable_mask_covers_every_convolution_and_fc_and_nothing_else(resnet8):
  params = nnx.state(resnet8, nnx.Param)
  mask = pruning.prunable_mask(params)
  selected = {
    jax.tree_util.keystr(path, simple=True, separator='/')
    for path, leaf in jax.tree.leaves_with_path(mask)
    if leaf is not None
  }
  layers = [name for name in layer_costs(resnet8, (32, 32, 3)) if name != 'fc']
  assert selected == {f'{name}/kernel' for name in [*layers, 'fc']}
  assert len(layers) == 7  # 6n + 1 convolutions
  assert rounds.layer_groups(params) == {'conv': layers, 'fc': ['fc']}


def test_convolutions_start_he_and_fc_like_torch_linear(resnet8):
  kernel = np.asarray(resnet8.stage3[0].conv2.kernel.get_value())  # 36,864 draws
  assert np.std(kernel) == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.05)
  fc = np.asarray(resnet8.fc.kernel.get_value())
  assert np.abs(fc).max() <= np.float32(1 / 8)  # uniform in +-1/sqrt(64)
  assert not np.asarray(resnet8.fc.bias.get_value()).any()
  assert (np.asarray(resnet8.bn1.scale.get_value()) == 1).all()


def test_a_masked_train_step_keeps_pruned_weights_at_zero(resnet8):
  mesh = parallel.data_mesh(jax.devices()[:1])
  model = nnx.clone(resnet8)
  tx = pruning.masked_optimizer(optax.sgd(0.1, momentum=0.9))
  compiled = steps.compile_steps(model, tx, steps.penalty('l2', 1e-4), mesh)
  mask = pruning.sparsity_mask(compiled.params, 0.5)
  opt_state = pruning.replace_mask(tx.init(compiled.params), mask)
  params, opt_state = parallel.replicate(
    (pruning.apply_mask(compiled.params, mask), opt_state), mesh
  )
  rng = np.random.default_rng(0)
  batch = parallel.global_batch(
    mesh,
    rng.normal(size=IMAGES).astype(np.float32),
    rng.integers(0, 10, 4).astype(np.int32),
  )
  before = jax.tree.map(np.array, params)
  params, rest, opt_state, metrics = compiled.train(params, compiled.rest, opt_state, *batch)
  assert np.isfinite(float(metrics['loss']))
  kernel = np.asarray(params['stage2'][0]['conv1']['kernel'].get_value())
  kept = np.asarray(mask['stage2'][0]['conv1']['kernel'])
  assert kept.sum() == kernel.size // 2
  assert (kernel[~kept] == 0).all()
  assert (kernel[kept] != before['stage2'][0]['conv1']['kernel'].get_value()[kept]).any()
  assert float(jnp.abs(rest['bn1']['mean'].get_value()).max()) > 0  # batch statistics moved


def test_registered_for_cifar10():
  for name in ('resnet20', 'resnet56'):
    spec = MODELS[name]
    assert (spec.image_shape, spec.num_classes, spec.datasets) == ((32, 32, 3), 10, ('cifar10',))
  model = _abstract('resnet56', dtype=jnp.bfloat16)
  logits = nnx.eval_shape(
    lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  )
  assert logits.shape == (2, 10) and logits.dtype == jnp.bfloat16
  assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
    jnp.dtype(jnp.float32)
  }


@pytest.mark.parametrize(
  ('options', 'message'),
  [({'depth': 21}, 'depth is 21; a CIFAR ResNet has 6n'), ({'shortcut': 'C'}, "shortcut is 'C'")],
)
def test_errors_name_the_bad_value(options, message):
  with pytest.raises(ValueError, match=message):
    CIFARResNet(nnx.Rngs(0), **options)
