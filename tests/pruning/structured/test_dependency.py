"""Dependency groups traced from the jaxpr, against groups derived by hand.

The toy models are built with ``nnx.eval_shape``: tracing needs only shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import VGG16CIFAR, LeNet5
from pruning.sparse import LayerChain
from pruning.structured import (
  UnsupportedPrimitiveError,
  dependency_groups,
  format_groups,
)
from pruning.structured.jaxpr_walk import AxisClasses

BN = ('scale', 'bias', 'mean', 'var')


def _images(size: int, channels: int = 3) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)


def _prunable(groups) -> set[frozenset[tuple[str, int]]]:
  return {frozenset(g.axes()) for g in groups if g.prunable}


def _group_of(groups, path: str, axis: int, index: int = 0):
  found = [g for g in groups if (path, axis) in g.axes()]
  assert found, f'{path} axis {axis} is in no group'
  return found[index]


def _member(group, path: str, axis: int):
  (member,) = [m for m in group.members if (m.path, m.axis) == (path, axis)]
  return member


def _bn(name: str) -> set[tuple[str, int]]:
  return {(f'{name}/{leaf}', 0) for leaf in BN}


def _assert_same_groups(found, expected):
  missing = [sorted(g) for g in expected - found]
  extra = [sorted(g) for g in found - expected]
  assert not missing and not extra, f'missing: {missing}\nunexpected: {extra}'


# A CIFAR ResNet (He et al. 2016, §4.2) at toy widths.
class Block(nnx.Module):
  def __init__(self, cin: int, cout: int, stride: int, shortcut: str, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(
      cin, cout, (3, 3), strides=stride, padding='SAME', use_bias=False, rngs=rngs
    )
    self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), padding='SAME', use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
    self.shortcut = 'identity' if (stride == 1 and cin == cout) else shortcut
    self.pad = (cout - cin) // 2
    if self.shortcut == 'B':
      self.proj = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs)
      self.proj_bn = nnx.BatchNorm(cout, rngs=rngs)

  def __call__(self, x):
    y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
    if self.shortcut == 'identity':
      s = x
    elif self.shortcut == 'A':  # subsample, then zero channels on both sides
      s = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (self.pad, self.pad)))
    else:
      s = self.proj_bn(self.proj(x))
    return nnx.relu(y + s)


class ResNet(nnx.Module):
  def __init__(self, widths=(4, 8, 16), blocks=1, shortcut='B', rngs=None):
    self.stem = nnx.Conv(3, widths[0], (3, 3), padding='SAME', use_bias=False, rngs=rngs)
    self.stem_bn = nnx.BatchNorm(widths[0], rngs=rngs)
    layers, cin = [], widths[0]
    for stage, width in enumerate(widths):
      for index in range(blocks):
        layers.append(Block(cin, width, 2 if stage and not index else 1, shortcut, rngs))
        cin = width
    self.blocks = nnx.List(layers)
    self.fc = nnx.Linear(cin, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.stem_bn(self.stem(x)))
    for block in self.blocks:
      x = block(x)
    return self.fc(x.mean(axis=(1, 2)))


def _resnet(**kwargs):
  return nnx.eval_shape(lambda: ResNet(rngs=nnx.Rngs(0), **kwargs))


def _inner(block: str) -> frozenset:
  return frozenset(
    {(f'{block}/conv1/kernel', 3), (f'{block}/conv2/kernel', 2)} | _bn(f'{block}/bn1')
  )


def _stream(producers, consumers, norms) -> frozenset:
  axes = {(f'{p}/kernel', 3) for p in producers} | {(f'{c}/kernel', 2) for c in consumers}
  return frozenset(axes.union(*(_bn(n) for n in norms)))


def test_identity_resnet_has_one_stream_group_and_one_inner_group_per_block():
  groups = dependency_groups(_resnet(widths=(4,), blocks=3), _images(8))
  blocks = [f'blocks/{i}' for i in range(3)]
  stream = _stream(
    ['stem', *(f'{b}/conv2' for b in blocks)],
    [f'{b}/conv1' for b in blocks],
    ['stem_bn', *(f'{b}/bn2' for b in blocks)],
  ) | {('fc/kernel', 0)}
  _assert_same_groups(_prunable(groups), {stream, *(_inner(b) for b in blocks)})
  assert _group_of(groups, 'fc/kernel', 0).size == 4


def test_option_b_projections_join_the_stream_group_of_their_stage():
  groups = dependency_groups(_resnet(shortcut='B'), _images(8))
  b0, b1, b2 = (f'blocks/{i}' for i in range(3))
  expected = {
    _stream(
      ['stem', f'{b0}/conv2'],
      [f'{b0}/conv1', f'{b1}/conv1', f'{b1}/proj'],
      ['stem_bn', f'{b0}/bn2'],
    ),
    _stream(
      [f'{b1}/conv2', f'{b1}/proj'], [f'{b2}/conv1', f'{b2}/proj'], [f'{b1}/bn2', f'{b1}/proj_bn']
    ),
    _stream([f'{b2}/conv2', f'{b2}/proj'], [], [f'{b2}/bn2', f'{b2}/proj_bn']) | {('fc/kernel', 0)},
    _inner(b0),
    _inner(b1),
    _inner(b2),
  }
  _assert_same_groups(_prunable(groups), expected)


def _resnet20_option_b_groups(blocks: int = 3, stages: int = 3) -> set[frozenset]:
  """DepGraph's groups of a CIFAR ResNet with projection shortcuts, stage by stage."""
  names = [[f'blocks/{s * blocks + i}' for i in range(blocks)] for s in range(stages)]
  groups = {_inner(b) for stage in names for b in stage}
  for s, stage in enumerate(names):
    producers = ['stem'] if s == 0 else [f'{stage[0]}/proj']
    norms = ['stem_bn'] if s == 0 else [f'{stage[0]}/proj_bn']
    producers += [f'{b}/conv2' for b in stage]
    norms += [f'{b}/bn2' for b in stage]
    # The stream feeds its own blocks (but the first of a later stage, fed by
    # the previous stream) and the next stage's first block and projection.
    consumers = [f'{b}/conv1' for b in (stage if s == 0 else stage[1:])]
    if s + 1 < stages:
      consumers += [f'{names[s + 1][0]}/conv1', f'{names[s + 1][0]}/proj']
    stream = _stream(producers, consumers, norms)
    groups.add(stream | {('fc/kernel', 0)} if s + 1 == stages else stream)
  return groups


def test_resnet20_with_projection_shortcuts_has_three_stream_groups_and_nine_inner_groups():
  model = _resnet(widths=(16, 32, 64), blocks=3, shortcut='B')
  groups = dependency_groups(model, _images(32))
  _assert_same_groups(_prunable(groups), _resnet20_option_b_groups())
  assert len([g for g in groups if g.prunable]) == 12


def test_resnet20_with_option_a_shortcuts_nests_each_stream_in_the_next():
  # He et al. 2016's CIFAR ResNet: stage 2 is [8 zeros, stage 1's 16, 8 zeros]
  # and stage 3 [16 zeros, stage 2's 32, 16 zeros], so stage 1's channels are
  # 8..23 of stage 2 and 24..39 of stage 3.
  model = _resnet(widths=(16, 32, 64), blocks=3, shortcut='A')
  groups = dependency_groups(model, _images(32))
  stream = _group_of(groups, 'stem/kernel', 3)
  assert stream.prunable and stream.size == 16
  for block, offset in ((0, 0), (2, 0), (3, 8), (5, 8), (6, 24), (8, 24)):
    member = _member(stream, f'blocks/{block}/conv2/kernel', 3)
    assert member.indices(range(16)).tolist() == list(range(offset, offset + 16)), block
  assert _member(stream, 'fc/kernel', 0).indices([0, 15]).tolist() == [24, 39]
  # The pads of stage 2 (8 channels each side) ride on into stage 3 at 16 + ...
  pads = [g for g in groups if g.size == 8 and ('blocks/3/conv2/kernel', 3) in g.axes()]
  assert len(pads) == 2
  assert sorted(_member(g, 'blocks/8/bn2/scale', 0).indices([0])[0] for g in pads) == [16, 40]
  # Inner groups stay one per block.
  inner = [
    g
    for g in groups
    if g.prunable and any(m.path.endswith('conv1/kernel') and m.role == 'out' for m in g.members)
  ]
  assert {frozenset(g.axes()) for g in inner} == {_inner(f'blocks/{i}') for i in range(9)}


def test_input_channels_classifier_outputs_and_spatial_axes_are_pinned():
  groups = dependency_groups(_resnet(), _images(8))
  assert 'model input 0, axis 3' in _group_of(groups, 'stem/kernel', 2).reason
  for axis in (1,):
    assert 'model output 0, axis 1' in _group_of(groups, 'fc/kernel', axis).reason
  assert 'model output' in _group_of(groups, 'fc/bias', 0).reason
  assert 'spatial axis of a convolution' in _group_of(groups, 'stem/kernel', 0).reason
  assert _member(_group_of(groups, 'stem/kernel', 0), 'stem/kernel', 0).role == 'spatial'
  stem = _group_of(groups, 'stem/kernel', 3)
  assert stem.prunable
  assert {m.role for m in stem.members if m.path.endswith('kernel')} == {'in', 'out'}
  assert _member(stem, 'stem_bn/mean', 0).role == 'channel'
  assert _member(stem, 'stem/kernel', 3).module == 'Conv'


def test_option_a_shortcuts_place_the_previous_stream_at_an_offset():
  # Stage 2's 8 channels are 2 zero channels, stage 1's 4 channels, 2 zero
  # channels: pruning stream unit u of stage 1 removes channel 2 + u of stage 2
  # (and 4 + 2 + u of stage 3); the padded channels are groups of their own.
  groups = dependency_groups(_resnet(shortcut='A'), _images(8))
  stream = _group_of(groups, 'stem/kernel', 3)
  assert stream.prunable and stream.size == 4
  assert _member(stream, 'blocks/0/conv2/kernel', 3).index_map is None
  stage2 = _member(stream, 'blocks/1/conv2/kernel', 3)
  assert stage2.index_map == ((2,), (3,), (4,), (5,))
  assert _member(stream, 'blocks/2/bn2/scale', 0).index_map == ((6,), (7,), (8,), (9,))
  assert list(_member(stream, 'fc/kernel', 0).indices([0, 3])) == [6, 9]
  padded = [g for g in groups if ('blocks/1/conv2/kernel', 3) in g.axes() and g is not stream]
  assert [g.size for g in padded] == [2, 2]
  maps = [_member(g, 'blocks/1/conv2/kernel', 3).index_map for g in padded]
  assert sorted(maps) == [((0,), (1,)), ((6,), (7,))]
  stage3_pads = [g for g in groups if g.size == 4 and ('blocks/2/conv2/kernel', 3) in g.axes()]
  assert len(stage3_pads) == 3  # stage 1's stream and the two pads of stage 3
  # The strided slice's spatial axes are pinned, not joined.
  assert all(g.prunable for g in groups if ('blocks/1/conv2/kernel', 3) in g.axes())


# A small ViT on nnx.MultiHeadAttention (Dosovitskiy et al. 2021).
class ViTBlock(nnx.Module):
  def __init__(self, dim, heads, head_dim, hidden, rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      num_heads=heads, in_features=dim, qkv_features=heads * head_dim, decode=False, rngs=rngs
    )
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
    self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x))))


class ViT(nnx.Module):
  def __init__(self, dim=16, heads=2, head_dim=4, hidden=24, depth=2, rngs=None):
    self.patch = nnx.Conv(3, dim, (4, 4), strides=4, padding='VALID', rngs=rngs)
    self.cls = nnx.Param(jnp.zeros((1, 1, dim)))
    self.pos = nnx.Param(jnp.zeros((1, 5, dim)))
    self.blocks = nnx.List([ViTBlock(dim, heads, head_dim, hidden, rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, 10, rngs=rngs)

  def __call__(self, x):
    x = self.patch(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.pos[...]
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x)[:, 0])


def test_vit_groups_heads_head_dims_mlp_and_the_residual_stream():
  model = nnx.eval_shape(lambda: ViT(rngs=nnx.Rngs(0)))
  # nnx keeps heads as kernel axes: q/k/v (in, heads, head_dim), out (heads, head_dim, out).
  assert model.blocks[0].attn.query.kernel.shape == (16, 2, 4)
  assert model.blocks[0].attn.out.kernel.shape == (2, 4, 16)
  groups = dependency_groups(model, _images(8))
  stream = {('patch/kernel', 3), ('patch/bias', 0), ('cls', 2), ('pos', 2), ('head/kernel', 0)}
  stream |= {('norm/scale', 0), ('norm/bias', 0)}
  expected = set()
  for b in ('blocks/0', 'blocks/1'):
    a = f'{b}/attn'
    stream |= {(f'{b}/{n}/{leaf}', 0) for n in ('norm1', 'norm2') for leaf in ('scale', 'bias')}
    stream |= {(f'{a}/{p}/kernel', 0) for p in ('query', 'key', 'value')}
    stream |= {(f'{a}/out/kernel', 2), (f'{a}/out/bias', 0), (f'{b}/fc1/kernel', 0)}
    stream |= {(f'{b}/fc2/kernel', 1), (f'{b}/fc2/bias', 0)}
    heads = {(f'{a}/{p}/kernel', 1) for p in ('query', 'key', 'value')}
    heads |= {(f'{a}/{p}/bias', 0) for p in ('query', 'key', 'value')} | {(f'{a}/out/kernel', 0)}
    qk = {(f'{a}/{p}/kernel', 2) for p in ('query', 'key')} | {
      (f'{a}/{p}/bias', 1) for p in ('query', 'key')
    }
    v = {(f'{a}/value/kernel', 2), (f'{a}/value/bias', 1), (f'{a}/out/kernel', 1)}
    mlp = {(f'{b}/fc1/kernel', 1), (f'{b}/fc1/bias', 0), (f'{b}/fc2/kernel', 0)}
    expected |= {frozenset(heads), frozenset(qk), frozenset(v), frozenset(mlp)}
  expected.add(frozenset(stream))
  _assert_same_groups(_prunable(groups), expected)
  assert _group_of(groups, 'blocks/0/attn/query/kernel', 1).size == 2
  # The sequence axis comes from the patch grid (spatial) and the class token.
  assert not _group_of(groups, 'pos', 1).prunable


# Grouped and depthwise convolutions.
class GroupedNet(nnx.Module):
  def __init__(self, rngs):
    self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    # Two groups of 4 inputs and 6 outputs each.
    self.grouped = nnx.Conv(8, 12, (3, 3), feature_group_count=2, rngs=rngs)
    self.depthwise = nnx.Conv(12, 12, (3, 3), feature_group_count=12, rngs=rngs)
    self.pointwise = nnx.Conv(12, 5, (1, 1), rngs=rngs)

  def __call__(self, x):
    return self.pointwise(nnx.relu(self.depthwise(nnx.relu(self.grouped(nnx.relu(self.conv1(x)))))))


def test_grouped_convolution_couples_inputs_and_outputs_by_group():
  groups = dependency_groups(nnx.eval_shape(lambda: GroupedNet(nnx.Rngs(0))), _images(8))
  # Group index g: conv1's channels 4g..4g+3 with the grouped conv's outputs 6g..6g+5.
  by_group = [g for g in groups if g.size == 2 and ('grouped/kernel', 3) in g.axes()]
  assert len(by_group) == 1 and by_group[0].prunable
  assert _member(by_group[0], 'conv1/kernel', 3).index_map == ((0, 1, 2, 3), (4, 5, 6, 7))
  assert _member(by_group[0], 'grouped/kernel', 3).index_map == (
    tuple(range(6)),
    tuple(range(6, 12)),
  )
  # Input j of every group: conv1's channels j and 4 + j, the kernel's input axis.
  per_input = _group_of(groups, 'grouped/kernel', 2)
  assert per_input.size == 4 and per_input.prunable
  assert _member(per_input, 'conv1/kernel', 3).index_map == ((0, 4), (1, 5), (2, 6), (3, 7))
  # Output m of every group, which the depthwise conv carries through to pointwise.
  per_output = [g for g in groups if g.size == 6 and ('grouped/kernel', 3) in g.axes()]
  assert len(per_output) == 1
  assert _member(per_output[0], 'grouped/kernel', 3).index_map == tuple(
    (m, 6 + m) for m in range(6)
  )
  assert {('depthwise/kernel', 3), ('pointwise/kernel', 2)} <= per_output[0].axes()


def test_depthwise_convolution_joins_its_input_and_output_channels():
  groups = dependency_groups(nnx.eval_shape(lambda: GroupedNet(nnx.Rngs(0))), _images(8))
  maps = {
    m.path: m.index_map
    for g in groups
    if ('depthwise/kernel', 3) in g.axes()
    for m in g.members
    if (m.path, m.axis) in {('depthwise/kernel', 3), ('depthwise/bias', 0), ('pointwise/kernel', 2)}
  }
  # The depthwise conv's 12 channels split like the grouped conv's outputs: by group and by m.
  assert set(maps) == {'depthwise/kernel', 'depthwise/bias', 'pointwise/kernel'}
  depth = [g for g in groups if ('depthwise/kernel', 3) in g.axes()]
  assert all(
    {('depthwise/bias', 0), ('pointwise/kernel', 2), ('grouped/bias', 0)} <= g.axes() for g in depth
  )
  assert not _group_of(groups, 'depthwise/kernel', 2).prunable  # one input per group


class DepthwiseOnly(nnx.Module):
  def __init__(self, rngs):
    self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
    self.depthwise = nnx.Conv(8, 16, (3, 3), feature_group_count=8, rngs=rngs)  # multiplier 2
    self.pointwise = nnx.Conv(16, 5, (1, 1), rngs=rngs)

  def __call__(self, x):
    return self.pointwise(nnx.relu(self.depthwise(nnx.relu(self.conv1(x)))))


def test_depthwise_multiplier_couples_each_input_channel_with_its_outputs():
  groups = dependency_groups(nnx.eval_shape(lambda: DepthwiseOnly(nnx.Rngs(0))), _images(8))
  channel = _group_of(groups, 'conv1/kernel', 3)
  assert channel.size == 8 and channel.prunable
  assert _member(channel, 'conv1/kernel', 3).index_map is None
  assert _member(channel, 'depthwise/kernel', 3).index_map == tuple(
    (2 * c, 2 * c + 1) for c in range(8)
  )
  assert _member(channel, 'pointwise/kernel', 2).index_map == tuple(
    (2 * c, 2 * c + 1) for c in range(8)
  )
  multiplier = [g for g in groups if g.size == 2 and ('depthwise/kernel', 3) in g.axes()]
  assert len(multiplier) == 1 and multiplier[0].prunable


# Sequential nets: the groups are the layer chain's (layer, next layer) pairs.
@pytest.mark.parametrize(
  ('build', 'shape'),
  [
    (lambda: LeNet5(nnx.Rngs(0)), (28, 28, 1)),
    (lambda: VGG16CIFAR(nnx.Rngs(0), width=0.125, batch_norm=True), (32, 32, 3)),
  ],
  ids=['lenet5', 'vgg16-cifar'],
)
def test_sequential_groups_are_the_layer_chains_pairs(build, shape):
  model = nnx.eval_shape(build)
  chain = LayerChain(model, shape)
  groups = dependency_groups(model, _images(shape[0], shape[-1]))
  kernels = {
    frozenset(
      (m.path, m.axis) for m in g.members if m.path.endswith('kernel') and m.role != 'spatial'
    )
    for g in groups
    if g.prunable
  }
  pairs = set()
  for index, (layer, following) in enumerate(zip(chain.layers, chain.layers[1:], strict=False)):
    out_axis = 3 if layer.kind == 'conv' else 1
    in_axis = 2 if following.kind == 'conv' else 0
    pairs.add(
      frozenset({(f'{layer.path}/kernel', out_axis), (f'{following.path}/kernel', in_axis)})
    )
    group = _group_of(groups, f'{layer.path}/kernel', out_axis)
    assert group.size == layer.units
    consumer = _member(group, f'{following.path}/kernel', in_axis)
    positions = chain.positions(index)
    if positions == 1:
      assert consumer.index_map is None
    else:  # channels-last flatten: input p * units + c comes from channel c
      expected = tuple(
        tuple(p * layer.units + c for p in range(positions)) for c in range(layer.units)
      )
      assert consumer.index_map == expected
    for norm in layer.norms:
      assert _bn('/'.join(map(str, norm))) <= group.axes()
  assert kernels == pairs


# What a group promises: removing its unit everywhere is zeroing it.
def _with_values(abstract, change):
  """The model with random values, ``change(path, array)`` applied to each variable."""
  graphdef, state = nnx.split(abstract)
  paths = jax.tree_util.tree_flatten_with_path(
    state, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )[0]
  leaves, treedef = jax.tree.flatten(state)
  rng = np.random.default_rng(0)
  values = []
  for (path, _), leaf in zip(paths, leaves, strict=True):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    value = rng.normal(0.0, 0.3, leaf.shape).astype(np.float32)
    value = np.abs(value) + 0.5 if name.endswith('/var') else value
    values.append(jnp.asarray(change(name, value)))
  model = nnx.merge(graphdef, jax.tree.unflatten(treedef, values))
  model.eval()
  return model


def _cut(group, unit, delete):
  """Zeroes (or deletes) what unit ``unit`` of ``group`` stands for in every member."""

  def change(name, value):
    for member in (m for m in group.members if m.path == name):
      indices = member.indices([unit])
      if delete:
        value = np.delete(value, indices, axis=member.axis)
      else:
        where = [slice(None)] * value.ndim
        where[member.axis] = indices
        value[tuple(where)] = 1.0 if name.endswith('/var') else 0.0
    return value

  return change


@pytest.mark.parametrize(
  ('build', 'shape'),
  [
    (lambda: ResNet(widths=(4, 8), blocks=2, shortcut='B', rngs=nnx.Rngs(0)), (8, 8, 3)),
    (lambda: LeNet5(nnx.Rngs(0)), (28, 28, 1)),
  ],
  ids=['resnet-b', 'lenet5'],
)
def test_removing_a_groups_unit_from_every_member_equals_zeroing_it(build, shape):
  # A member missing from a group would leave mismatched shapes; a wrong one
  # would change the outputs.
  abstract = nnx.eval_shape(build)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, *shape)), jnp.float32)
  groups = [g for g in dependency_groups(abstract, x) if g.prunable]
  assert groups
  for group in groups:
    zeroed = _with_values(abstract, _cut(group, 1, delete=False))(x)
    removed = _with_values(abstract, _cut(group, 1, delete=True))(x)
    scale = float(jnp.abs(zeroed).max())
    np.testing.assert_allclose(
      removed, zeroed, atol=1e-5 * scale, err_msg=str(sorted(group.axes()))
    )


# Call sites, errors and the union-find.
class TwoReLUs(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(8, 8, rngs=rngs)
    self.fc2 = nnx.Linear(8, 8, rngs=rngs)
    self.fc3 = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.fc3(nnx.relu(self.fc2(nnx.relu(self.fc1(x)))))


def test_relus_of_the_same_shape_keep_their_own_groups():
  # Both relus are one shared custom_jvp jaxpr: keyed by call site, they stay apart.
  model = nnx.eval_shape(lambda: TwoReLUs(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 8), jnp.float32))
  _assert_same_groups(
    _prunable(groups),
    {
      frozenset({('fc1/kernel', 1), ('fc1/bias', 0), ('fc2/kernel', 0)}),
      frozenset({('fc2/kernel', 1), ('fc2/bias', 0), ('fc3/kernel', 0)}),
    },
  )


class Sorting(nnx.Module):
  def __init__(self, rngs):
    self.fc = nnx.Linear(4, 4, rngs=rngs)

  def __call__(self, x):
    return jax.jit(lambda y: jnp.sort(y, axis=-1))(self.fc(x))


def test_an_unhandled_primitive_is_an_error_naming_it_and_where_it_sits():
  model = nnx.eval_shape(lambda: Sorting(nnx.Rngs(0)))
  with pytest.raises(
    UnsupportedPrimitiveError, match=r"primitive 'sort' at .*test_dependency\.py:\d+"
  ) as info:
    dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  assert 'inside jit(<lambda>) at ' in str(info.value)


# A module attribute would be state (nnx treats arrays as data); a global is closed over.
_GAIN = np.linspace(1.0, 2.0, 6, dtype=np.float32)


class Constant(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 6, rngs=rngs)
    self.fc2 = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    return self.fc2(self.fc1(x) * jnp.asarray(_GAIN))


def test_a_closed_over_array_pins_the_axes_it_touches():
  model = nnx.eval_shape(lambda: Constant(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  assert 'constant' in _group_of(groups, 'fc1/kernel', 1).reason


class Concat(nnx.Module):
  def __init__(self, rngs):
    self.a = nnx.Linear(4, 3, rngs=rngs)
    self.b = nnx.Linear(4, 5, rngs=rngs)
    self.c = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    return self.c(jnp.concatenate([self.a(x), self.b(x)], axis=-1))


def test_a_concatenation_places_each_operand_at_its_offset():
  model = nnx.eval_shape(lambda: Concat(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  first, second = _group_of(groups, 'a/kernel', 1), _group_of(groups, 'b/kernel', 1)
  assert _member(first, 'c/kernel', 0).index_map == ((0,), (1,), (2,))
  assert _member(second, 'c/kernel', 0).index_map == tuple((3 + i,) for i in range(5))
  assert first.prunable and second.prunable


class Regroup(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 6, rngs=rngs)
    self.fc2 = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    return self.fc2(
      self.fc1(x).reshape(x.shape[0], 3, 2).reshape(x.shape[0], 2, 3).reshape(x.shape[0], -1)[:, :4]
    )


def test_incompatible_reshapes_pin_the_axis_with_the_reason():
  model = nnx.eval_shape(lambda: Regroup(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  # (3, 2) -> (2, 3) has no unit-to-unit map: both factor groups are pinned.
  factors = [g for g in groups if ('fc1/kernel', 1) in g.axes()]
  assert sorted(g.size for g in factors) == [2, 3]
  for group in factors:
    assert group.reason.startswith('reshape regroups axes [3, 2] into [2, 3] at ')
    assert 'test_dependency.py' in group.reason
  # The flattened 6 are also cut to 4 by a slice: a product and a concatenation.
  reason = _group_of(groups, 'fc2/kernel', 0).reason
  assert 'split or merged in two incompatible ways (product [2, 3] and concat [4, 2])' in reason


def test_format_groups_lists_members_and_optionally_pinned_groups():
  model = nnx.eval_shape(lambda: TwoReLUs(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 8), jnp.float32))
  text = format_groups(groups)
  assert (
    'group 0: 8 units\n  fc1/bias axis 0 (channel, Linear)\n  fc1/kernel axis 1 (out, Linear)'
    in text
  )
  assert 'pinned' not in text
  assert 'pinned: the model output 0, axis 1' in format_groups(groups, pinned=True)


def test_merging_two_compositions_joins_their_parts():
  classes = AxisClasses()
  whole, other = classes.new(6), classes.new(6)
  a, b, c, d = classes.new(2), classes.new(3), classes.new(2), classes.new(3)
  classes.compose(whole, 'product', [a, b])
  classes.compose(other, 'product', [c, d])
  classes.union(whole, other)
  assert classes.find(a) == classes.find(c) and classes.find(b) == classes.find(d)
  e, f = classes.new(3), classes.new(2)
  classes.compose(whole, 'product', [e, f])  # 3 x 2 against 2 x 3: no index map fits
  assert classes.effective_pins()[classes.find(a)]
  with pytest.raises(UnsupportedPrimitiveError, match='sizes 6 and 2'):
    classes.union(whole, a)


class TextNet(nnx.Module):
  def __init__(self, rngs):
    self.embed = nnx.Embed(20, 8, rngs=rngs)
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.fc = nnx.Linear(8, 6, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)
    self.out = nnx.Linear(6, 2, rngs=rngs)

  def __call__(self, tokens):
    x = self.dropout(nnx.relu(self.fc(self.norm(self.embed(tokens)))))
    return self.out(x.max(axis=1))


def test_an_embedding_table_joins_by_its_features_and_pins_its_vocabulary():
  model = nnx.eval_shape(lambda: TextNet(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 7), jnp.int32))
  _assert_same_groups(
    _prunable(groups),
    {
      frozenset({('embed/embedding', 1), ('norm/scale', 0), ('norm/bias', 0), ('fc/kernel', 0)}),
      frozenset({('fc/kernel', 1), ('fc/bias', 0), ('out/kernel', 0)}),
    },
  )
  assert 'gather' in _group_of(groups, 'embed/embedding', 0).reason


class Pooling(nnx.Module):
  def __init__(self, rngs):
    self.conv1 = nnx.Conv(3, 6, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(6, rngs=rngs)
    self.conv2 = nnx.Conv(6, 4, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(4 * 2 * 2, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.max_pool(nnx.relu(self.bn(self.conv1(x))), (2, 2), (2, 2))
    x = nnx.avg_pool(jnp.tanh(self.conv2(x)), (2, 2), (2, 2))
    return self.fc(x.reshape(x.shape[0], -1))


def test_pooling_keeps_channels_and_pins_its_window_axes():
  model = nnx.eval_shape(lambda: Pooling(nnx.Rngs(0)))
  groups = dependency_groups(model, _images(8))
  first = _group_of(groups, 'conv1/kernel', 3)
  assert first.axes() == {('conv1/kernel', 3), ('conv1/bias', 0), ('conv2/kernel', 2)} | _bn('bn')
  second = _group_of(groups, 'conv2/kernel', 3)
  assert second.prunable and second.size == 4
  assert _member(second, 'fc/kernel', 0).index_map == tuple(
    (c, 4 + c, 8 + c, 12 + c) for c in range(4)
  )
  spatial = [g for g in groups if ('fc/kernel', 0) in g.axes() and g is not second]
  assert len(spatial) == 2 and all('window axis of reduce_window' in g.reason for g in spatial)


@jax.custom_vjp
def _sine(x):
  return jnp.sin(x)


_sine.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))


class SubJaxprs(nnx.Module):
  def __init__(self, rngs):
    self.a = nnx.Linear(4, 6, rngs=rngs)
    self.b = nnx.Linear(6, 6, rngs=rngs)
    self.c = nnx.Linear(6, 2, rngs=rngs)

  def __call__(self, x):
    y = jax.checkpoint(lambda y: nnx.relu(y) * 2)(_sine(self.a(x)))
    return self.c(jax.nn.softmax(jax.jit(self.b)(y)))


def test_custom_vjp_remat_and_jit_calls_are_walked_into():
  model = nnx.eval_shape(lambda: SubJaxprs(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  _assert_same_groups(
    _prunable(groups),
    {
      frozenset({('a/kernel', 1), ('a/bias', 0), ('b/kernel', 0)}),
      frozenset({('b/kernel', 1), ('b/bias', 0), ('c/kernel', 0)}),
    },
  )


class Elementwise(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 6, rngs=rngs)
    self.fc2 = nnx.Linear(6, 3, rngs=rngs)

  def __call__(self, x):
    y = jnp.where(self.fc1(x) > 0, self.fc1(x), 0.1 * self.fc1(x)) ** 2  # select_n, integer_pow
    y = jnp.squeeze(jnp.expand_dims(jnp.clip(y, 0.0, 6.0), 1), 1).astype(jnp.bfloat16)
    first, second = jnp.split(y, [2], axis=-1)
    return self.fc2(jnp.concatenate([second, first], axis=-1).astype(jnp.float32))


def test_split_and_concatenate_move_units_to_their_new_offsets():
  # fc1's units 0, 1 reach fc2's inputs 4, 5; units 2..5 its inputs 0..3.
  model = nnx.eval_shape(lambda: Elementwise(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  first, second = sorted((g for g in groups if ('fc1/kernel', 1) in g.axes()), key=lambda g: g.size)
  assert first.prunable and second.prunable
  assert _member(first, 'fc1/kernel', 1).index_map == ((0,), (1,))
  assert _member(first, 'fc2/kernel', 0).index_map == ((4,), (5,))
  assert _member(second, 'fc1/bias', 0).index_map == ((2,), (3,), (4,), (5,))
  assert _member(second, 'fc2/kernel', 0).index_map == ((0,), (1,), (2,), (3,))
  assert _member(first, 'fc1/kernel', 1).role == 'out'


class PositionDependent(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 6, rngs=rngs)
    self.fc2 = nnx.Linear(6, 2, rngs=rngs)
    self.fc3 = nnx.Linear(4, 6, rngs=rngs)
    self.fc4 = nnx.Linear(3, 2, rngs=rngs)

  def __call__(self, x):
    ramp = self.fc2(self.fc1(x) + jnp.arange(6, dtype=jnp.float32))  # iota
    y = self.fc3(x)
    window = jax.lax.dynamic_slice_in_dim(y, jnp.argmax(y[0]), 3, axis=-1)
    return ramp + self.fc4(window)


def test_index_dependent_values_and_run_time_slices_pin_their_axes():
  model = nnx.eval_shape(lambda: PositionDependent(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  assert 'positions along it (iota)' in _group_of(groups, 'fc1/kernel', 1).reason
  assert 'known only at run time' in _group_of(groups, 'fc3/kernel', 1).reason


class Stacked(nnx.Module):
  """Three layers stacked on a leading axis and run by ``lax.scan`` (as ``nnx.scan`` does)."""

  def __init__(self, rngs):
    self.embed = nnx.Linear(4, 6, rngs=rngs)
    self.kernels = nnx.Param(jnp.zeros((3, 6, 6)))
    self.biases = nnx.Param(jnp.zeros((3, 6)))
    self.hidden = nnx.Param(jnp.zeros((3, 6, 5)))
    self.back = nnx.Param(jnp.zeros((3, 5, 6)))
    self.head = nnx.Linear(6, 2, rngs=rngs)

  def __call__(self, x):
    def layer(h, weights):
      kernel, bias, hidden, back = weights
      h = jnp.tanh(h @ kernel + bias)
      return h + nnx.relu(h @ hidden) @ back, None

    weights = (self.kernels[...], self.biases[...], self.hidden[...], self.back[...])
    h, _ = jax.lax.scan(layer, self.embed(x), weights)
    return self.head(h)


def test_a_scan_over_stacked_layers_gives_them_one_width():
  model = nnx.eval_shape(lambda: Stacked(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  # The carry goes round: every stacked layer's input and output share a group.
  _assert_same_groups(
    _prunable(groups),
    {
      frozenset(
        {('embed/kernel', 1), ('embed/bias', 0), ('kernels', 1), ('kernels', 2), ('biases', 1)}
        | {('hidden', 1), ('back', 2), ('head/kernel', 0)}
      ),
      frozenset({('hidden', 2), ('back', 1)}),
    },
  )
  assert 'the axis a scan runs over' in _group_of(groups, 'kernels', 0).reason


class Branches(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 6, rngs=rngs)
    self.left = nnx.Linear(6, 5, rngs=rngs)
    self.right = nnx.Linear(6, 5, rngs=rngs)
    self.fc2 = nnx.Linear(5, 2, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.fc1(x))
    h = jax.lax.cond(x[0, 0] > 0, lambda h: self.left(h), lambda h: jnp.tanh(self.right(h)), h)
    return self.fc2(h)


def test_the_branches_of_a_cond_must_agree():
  model = nnx.eval_shape(lambda: Branches(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  _assert_same_groups(
    _prunable(groups),
    {
      frozenset({('fc1/kernel', 1), ('fc1/bias', 0), ('left/kernel', 0), ('right/kernel', 0)}),
      frozenset(
        {('left/kernel', 1), ('left/bias', 0), ('right/kernel', 1), ('right/bias', 0)}
        | {('fc2/kernel', 0)}
      ),
    },
  )


class Loop(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 6, rngs=rngs)
    self.square = nnx.Linear(6, 6, rngs=rngs)
    self.fc2 = nnx.Linear(6, 2, rngs=rngs)

  def __call__(self, x):
    def step(carry):
      h, count = carry
      return jnp.tanh(self.square(h)), count + 1

    h, _ = jax.lax.while_loop(lambda c: c[1] < 3, step, (self.fc1(x), 0))
    return self.fc2(h)


def test_a_while_loop_joins_what_goes_round():
  model = nnx.eval_shape(lambda: Loop(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  expected = {('fc1/kernel', 1), ('fc1/bias', 0), ('square/kernel', 0), ('square/kernel', 1)}
  expected |= {('square/bias', 0), ('fc2/kernel', 0)}
  _assert_same_groups(_prunable(groups), {frozenset(expected)})


class ScannedLayer(nnx.Module):
  def __init__(self, rngs):
    self.fc = nnx.Linear(6, 6, rngs=rngs)

  def __call__(self, x):
    return jnp.tanh(self.fc(x))


class NNXScan(nnx.Module):
  def __init__(self, rngs):
    self.inp = nnx.Linear(4, 6, rngs=rngs)

    @nnx.split_rngs(splits=3)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def stack(rngs):
      return ScannedLayer(rngs)

    self.layers = stack(rngs)
    self.out = nnx.Linear(6, 2, rngs=rngs)

  def __call__(self, x):
    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
    def run(x, layer):
      return layer(x)

    return self.out(run(self.inp(x), self.layers))


def test_nnx_scan_layers_share_the_stream_and_keep_their_roles():
  model = nnx.eval_shape(lambda: NNXScan(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  stream = _group_of(groups, 'inp/kernel', 1)
  assert stream.axes() == {
    ('inp/kernel', 1),
    ('inp/bias', 0),
    ('layers/fc/kernel', 1),
    ('layers/fc/kernel', 2),
    ('layers/fc/bias', 1),
    ('out/kernel', 0),
  }
  assert _member(stream, 'layers/fc/kernel', 1).role == 'in'
  assert _member(stream, 'layers/fc/kernel', 2).role == 'out'
  assert not _group_of(groups, 'layers/fc/kernel', 0).prunable


class CommonFactors(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 24, rngs=rngs)
    self.fc2 = nnx.Linear(12, 3, rngs=rngs)

  def __call__(self, x):
    h = self.fc1(x).reshape(x.shape[0], 6, 4).reshape(x.shape[0], 2, 12)
    return self.fc2(h).mean(axis=1)


def test_a_reshape_between_several_axes_goes_through_their_common_factors():
  # 24 = 6 x 4 = 2 x 12 = 2 x 3 x 4: fc2 reads the 3 x 4 part of each half.
  model = nnx.eval_shape(lambda: CommonFactors(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  middle = _group_of(groups, 'fc2/kernel', 0)
  assert middle.size == 3 and middle.prunable
  assert _member(middle, 'fc2/kernel', 0).index_map == tuple(
    tuple(4 * b + c for c in range(4)) for b in range(3)
  )
  assert _member(middle, 'fc1/kernel', 1).index_map == tuple(
    tuple(12 * a + 4 * b + c for a in range(2) for c in range(4)) for b in range(3)
  )
  last = _group_of(groups, 'fc2/kernel', 0, index=1)
  assert last.size == 4
  assert _member(last, 'fc2/kernel', 0).index_map == tuple(tuple(range(c, 12, 4)) for c in range(4))


class Running(nnx.Module):
  def __init__(self, rngs):
    self.fc1 = nnx.Linear(4, 6, rngs=rngs)
    self.fc2 = nnx.Linear(6, 2, rngs=rngs)
    self.fc3 = nnx.Linear(4, 6, rngs=rngs)
    self.small = nnx.Linear(4, 2, rngs=rngs)

  def __call__(self, x):
    total = self.fc2(jnp.cumsum(self.fc1(x), axis=-1))
    start = jnp.argmax(x[0])
    patched = jax.lax.dynamic_update_slice_in_dim(self.fc3(x), self.small(x), start, axis=-1)
    return total + self.fc2(patched)


def test_cumulative_sums_and_run_time_updates_pin_their_axes():
  model = nnx.eval_shape(lambda: Running(nnx.Rngs(0)))
  groups = dependency_groups(model, jax.ShapeDtypeStruct((2, 4), jnp.float32))
  assert 'cumsum runs along it' in _group_of(groups, 'fc1/kernel', 1).reason
  assert 'updated at a position known only at run time' in _group_of(groups, 'fc3/kernel', 1).reason
  assert (
    'updated at a position known only at run time' in _group_of(groups, 'small/kernel', 1).reason
  )
