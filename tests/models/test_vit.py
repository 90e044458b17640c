"""The CIFAR-10 ViT: exact counts, per-layer MACs (attention products included) by hand, masks, steps.

Counts of the full model come from abstract initialisation; forward passes
and the train step use a 2-block ViT of width 32, built once for the module.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pruning
from models import MODELS, LayerCost, ViTCIFAR, create_model, layer_costs, model_costs
from pruning import rounds
from pruning.experiment import parallel, steps

PARAMS = 1_806_538
MACS = 125_341_824
SMALL = {'dim': 32, 'depth': 2, 'num_heads': 4, 'mlp_dim': 64, 'patch_size': 8}


def _hand_costs(
  dim=192, depth=6, num_heads=6, mlp_dim=384, patch_size=4, image_size=32, classes=10
) -> dict[str, LayerCost]:
  """Per-layer weights, biases and MACs of the ViT, derived by hand.

  ``n`` tokens (the patches and the class token) pass through every block. A
  projection of ``d_in`` to ``d_out`` features does ``d_in d_out`` MACs per
  token. ``q k^T`` takes, for each head, each of ``n`` queries against each of
  ``n`` keys over the head dimension ``dim / heads``: ``n n dim`` MACs over all
  heads; ``softmax(.) v`` the same. The head reads the class token alone.
  """
  patches = (image_size // patch_size) ** 2
  n = patches + 1
  patch_weights = patch_size * patch_size * 3 * dim
  costs = {'patch_embed': LayerCost(patch_weights, dim, patches * patch_weights)}
  for block in range(depth):
    name = f'blocks/{block}'
    for projection in ('query', 'key', 'value'):
      costs[f'{name}/attention/{projection}'] = LayerCost(dim * dim, dim, n * dim * dim)
    costs[f'{name}/attention/qk'] = LayerCost(0, 0, n * n * dim)
    costs[f'{name}/attention/av'] = LayerCost(0, 0, n * n * dim)
    costs[f'{name}/attention/out'] = LayerCost(dim * dim, dim, n * dim * dim)
    costs[f'{name}/fc1'] = LayerCost(dim * mlp_dim, mlp_dim, n * dim * mlp_dim)
    costs[f'{name}/fc2'] = LayerCost(mlp_dim * dim, dim, n * mlp_dim * dim)
  costs['head'] = LayerCost(dim * classes, classes, dim * classes)
  return costs


def _named(tree) -> dict[str, object]:
  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): leaf
    for path, leaf in jax.tree.leaves_with_path(
      tree, is_leaf=lambda node: isinstance(node, nnx.Variable)
    )
  }


@pytest.fixture(scope='module')
def small():
  return ViTCIFAR(nnx.Rngs(0), **SMALL)


def test_parameter_count_is_exact():
  model = nnx.eval_shape(lambda: create_model('vit_cifar', nnx.Rngs(0)))
  shapes = {name: v.get_value().shape for name, v in _named(nnx.state(model, nnx.Param)).items()}
  count = sum(int(np.prod(shape)) for shape in shapes.values())
  linear = sum(c.weights + c.biases for c in _hand_costs().values())
  norms = (2 * 6 + 1) * 2 * 192  # two LayerNorms a block and the final one: scale and offset
  tokens = 65 * 192 + 192  # position embedding of 64 patches and the class token; the token
  assert count == linear + norms + tokens == PARAMS
  assert shapes['blocks/0/attention/query/kernel'] == (192, 6, 32)
  assert shapes['blocks/0/attention/out/kernel'] == (6, 32, 192)
  assert shapes['patch_embed/kernel'] == (4, 4, 3, 192)


def test_per_layer_macs_match_the_hand_derivation():
  costs = model_costs('vit_cifar')
  assert list(costs.items()) == list(_hand_costs().items())  # names, order and counts
  assert sum(c.macs for c in costs.values()) == MACS
  attention = sum(c.macs for name, c in costs.items() if name.endswith(('/qk', '/av')))
  assert attention == 6 * 2 * 65 * 65 * 192


def test_macs_of_another_shape_match_the_hand_derivation(small):
  # 17 tokens of head dimension 8: a count that mixed up tokens, heads and
  # head dimension would differ here.
  assert layer_costs(small, (32, 32, 3)) == _hand_costs(**SMALL)


def test_prunable_mask_selects_every_kernel_and_no_embedding_or_norm():
  model = nnx.eval_shape(lambda: create_model('vit_cifar', nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  selected = {
    name for name, leaf in _named(pruning.prunable_mask(params)).items() if leaf is not None
  }
  layers = [name for name, c in _hand_costs().items() if c.weights]
  assert selected == {f'{name}/kernel' for name in layers}
  assert len(selected) == 1 + 6 * 6 + 1
  # The attention projections' kernels are 3-D (heads are a kernel axis), so the
  # FC/CONV split of §3.3 counts them with the convolutions.
  groups = rounds.layer_groups(params)
  assert sorted(groups['conv']) == sorted(
    name for name in layers if name == 'patch_embed' or '/attention/' in name
  )
  assert sorted(groups['fc']) == sorted(
    name for name in layers if name.endswith(('fc1', 'fc2', 'head'))
  )


def test_magnitude_pruning_counts_a_3d_kernel_as_one_layer(small):
  params = nnx.state(small, nnx.Param)
  mask = pruning.sparsity_mask(params, 0.75)
  kept = np.asarray(mask['blocks'][0]['attention']['query']['kernel'])
  kernel = np.abs(np.asarray(small.blocks[0].attention.query.kernel.get_value()))
  assert kept.shape == (32, 4, 8) and kept.sum() == 32 * 4 * 8 // 4
  assert kernel[kept].min() >= kernel[~kept].max()  # the largest quarter of the whole kernel


def test_forward_shapes_modes_and_jit(small):
  images = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
  logits = small(images)
  assert logits.shape == (3, 10) and bool(jnp.isfinite(logits).all())
  # No dropout and no batch statistics: the same logits in either mode, and an
  # image's logits do not depend on the rest of the batch.
  model = nnx.clone(small)
  model.eval()
  jitted = nnx.jit(lambda m, x: m(x))
  np.testing.assert_allclose(jitted(model, images), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jitted(model, images[::-1])[::-1], logits, rtol=1e-5, atol=1e-5)


def test_the_class_token_carries_the_prediction(small):
  # The head reads token 0 alone: changing the class token changes the logits.
  model = nnx.clone(small)
  images = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))  # as above: eager ops cached
  before = model(images)
  model.cls_token.set_value(jnp.ones_like(model.cls_token.get_value()))
  assert not np.allclose(model(images), before)


def test_initialisation_follows_timm(small):
  # 1,024 to 2,048 draws a kernel: the spread of a standard deviation is 2-3 %.
  for kernel in (small.blocks[0].fc1.kernel, small.blocks[0].attention.query.kernel):
    assert np.std(np.asarray(kernel.get_value())) == pytest.approx(0.02, rel=0.1)
  assert np.std(np.asarray(small.pos_embedding.get_value())) == pytest.approx(0.02, rel=0.15)
  patch = np.asarray(small.patch_embed.kernel.get_value())
  bound = 1 / np.sqrt(8 * 8 * 3)  # torch's Conv2d: uniform in +-1/sqrt(fan_in)
  assert np.abs(patch).max() <= np.float32(bound)
  assert np.std(patch) == pytest.approx(bound / np.sqrt(3), rel=0.1)
  assert not np.asarray(small.cls_token.get_value()).any()
  assert not np.asarray(small.blocks[0].attention.out.bias.get_value()).any()


def test_a_masked_train_step_keeps_pruned_weights_at_zero(small):
  mesh = parallel.data_mesh(jax.devices()[:1])
  tx = pruning.masked_optimizer(optax.sgd(0.1, momentum=0.9))
  compiled = steps.compile_steps(nnx.clone(small), tx, steps.penalty('l2', 1e-4), mesh)
  mask = pruning.sparsity_mask(compiled.params, 0.5)
  opt_state = pruning.replace_mask(tx.init(compiled.params), mask)
  params, opt_state = parallel.replicate(
    (pruning.apply_mask(compiled.params, mask), opt_state), mesh
  )
  rng = np.random.default_rng(0)
  batch = parallel.global_batch(
    mesh,
    rng.normal(size=(4, 32, 32, 3)).astype(np.float32),
    rng.integers(0, 10, 4).astype(np.int32),
  )
  before = np.asarray(params['blocks'][1]['attention']['key']['kernel'].get_value())
  params, _, _, metrics = compiled.train(params, compiled.rest, opt_state, *batch)
  assert np.isfinite(float(metrics['loss']))
  kernel = np.asarray(params['blocks'][1]['attention']['key']['kernel'].get_value())
  kept = np.asarray(mask['blocks'][1]['attention']['key']['kernel'])
  assert (kernel[~kept] == 0).all() and (kernel[kept] != before[kept]).any()


def test_registered_for_cifar10_in_bfloat16_too():
  spec = MODELS['vit_cifar']
  assert (spec.image_shape, spec.num_classes, spec.datasets) == ((32, 32, 3), 10, ('cifar10',))
  model = nnx.eval_shape(lambda: create_model('vit_cifar', nnx.Rngs(0), dtype=jnp.bfloat16))
  logits = nnx.eval_shape(
    lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  )
  assert logits.shape == (2, 10) and logits.dtype == jnp.bfloat16


@pytest.mark.parametrize(
  ('options', 'message'),
  [
    ({'patch_size': 5}, 'patch_size 5 does not divide image_size 32'),
    ({'num_heads': 5}, 'num_heads 5 does not divide dim 192'),
  ],
)
def test_errors_name_the_bad_value(options, message):
  with pytest.raises(ValueError, match=message):
    ViTCIFAR(nnx.Rngs(0), **options)
