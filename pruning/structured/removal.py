"""Physical removal: a plan's pruned units cut out of the model, giving a smaller dense one.

:func:`remove_units` takes an nnx model, its dependency groups and a plan
(``{group name: kept unit indices}``, :mod:`pruning.structured.criteria`)
and returns a copy in which every member axis of every planned group has
lost the removed indices: kernels, biases, batch-norm scales, offsets and
statistics, layer-norm parameters. ``nnx.Linear``, ``nnx.Conv``,
``nnx.BatchNorm``, ``nnx.LayerNorm`` and ``nnx.LinearGeneral`` take the new
widths (their size attributes follow the new shapes), as do the heads of
``nnx.MultiHeadAttention``, and the model's code runs unchanged.

The smaller model's outputs equal the model's own, which must already be
masked (trained with :func:`~pruning.structured.structured_mask` held by
:func:`~pruning.masked_optimizer`, or with the mask applied):

* with the default mask every member of a removed unit is zero: the unit is
  absent already, and removal only slices;
* with a mask on the producing kernels only (``roles=('out',)``), a removed
  unit outputs a constant (its bias through batch norm and activation, and
  pooling) that the next layer still reads. That constant, observed on the
  check inputs, is folded exactly into the next layer's bias, as dead-neuron
  removal does (:mod:`pruning.sparse.surgery`): into a ``Linear`` layer
  always, into a ``Conv`` only when no zero padding meets it (else the
  contribution differs at the border), and never into a layer without bias;
  those cases raise, naming the group and the layer.

After removal the outputs on the check inputs are compared, and a difference
beyond the tolerance raises: never a silently different model. Two cases are
refused up front, naming the group: a group that fills only part of an axis
built by padding or concatenation (an option-A ResNet shortcut pads the
stream with zero channels whose number is a constant of the model's code, so
cutting the stream would break it; use option B, or leave the stream groups
whole and prune the blocks' inner groups), the head dimensions of an
attention (q.k is scaled by ``1/sqrt(head_dim)``, so removing q.k dimensions
changes every score, and ``jax.nn.dot_product_attention`` wants v's head
dimension equal to q's), and a member held by a module whose widths this
module cannot update.

:func:`save_pruned` writes the plan (``plan.json``: per group the kept
indices and new width, per member axis its kept indices, the model's name
and options) and the smaller model's variables (``params.npz``, plain
arrays); :func:`load_pruned` rebuilds the smaller model from a freshly built
full-width one by slicing it as the plan says, and loads the variables,
without pickle and without tracing, scoring or selecting again.

References: Fang et al. 2023, "DepGraph", §3 (removing coupled parameters
group by group); Li et al. 2017, "Pruning Filters for Efficient ConvNets", §3.1.
"""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pruning import _io, _tree
from pruning.structured.criteria import group_names, removed_indices
from pruning.structured.groups import DependencyGroup

PLAN_FILE = 'plan.json'
PARAMS_FILE = 'params.npz'
PLAN_FORMAT = 'jax-pruning structured plan'
_RESIZABLE = (nnx.Linear, nnx.Conv, nnx.BatchNorm, nnx.LayerNorm, nnx.LinearGeneral)


def _modules(model: nnx.Module) -> dict[str, nnx.Module]:
  return {'/'.join(str(k) for k in keys): module for keys, module in nnx.iter_modules(model)}


def unremovable_groups(model: nnx.Module, groups: Sequence[DependencyGroup]) -> dict[str, str]:
  """The prunable groups whose units :func:`remove_units` cannot cut out, and why.

  Such a group can be masked but never made smaller: an option-A ResNet's
  residual stream (its zero-padded shortcut fixes the width), a member in a
  module removal cannot resize, a head dimension of attention. Checked on
  the model's structure alone, so ``model`` may be abstract
  (``nnx.eval_shape``): a run can keep these groups whole before it trains.

  Returns:
    ``{group name: the reason}``, in the groups' order.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from pruning.structured import dependency_groups
    >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    >>> unremovable_groups(model, dependency_groups(model, jnp.ones((1, 4))))
    {}
  """
  refused = {}
  for name, group in zip(group_names(groups), groups, strict=True):
    if not group.prunable or group.size < 2:
      continue
    try:
      _check_removable(model, groups, {name: tuple(range(1, group.size))})
    except ValueError as error:
      refused[name] = str(error)
  return refused


def _check_removable(
  model: nnx.Module, groups: Sequence[DependencyGroup], plan: Mapping[str, Sequence[int]]
) -> None:
  modules = _modules(model)
  by_name = dict(zip(group_names(groups), groups, strict=True))
  for name, kept in plan.items():
    group = by_name.get(name)
    if group is None or len(set(kept)) == group.size:
      continue  # unknown names are reported by removed_indices; whole groups change nothing
    for m in group.members:
      if m.index_map is not None and len(m.index_map[0]) == 1 and m.length > group.size:
        raise ValueError(
          f'group {name!r} is only part of axis {m.axis} of {m.path!r} (its {group.size} units '
          f'of {m.length}, from index {m.index_map[0][0]}): a padding or a concatenation joins '
          'it with other units there, and a padding (an option-A ResNet shortcut, whose zero '
          'channels are a constant of the code) would no longer fit. Keep this group whole, '
          "prune the blocks' inner groups, or use projection shortcuts (option B)"
        )
      owner_path = m.path.rpartition('/')[0]
      owner = modules.get(owner_path)
      if owner is not None and (
        not isinstance(owner, _RESIZABLE)
        or (isinstance(owner, nnx.LinearGeneral) and owner.batch_axis)
      ):
        raise ValueError(
          f'group {name!r} has member {m.path!r} axis {m.axis} in a {type(owner).__name__}, '
          'whose widths removal cannot update (it resizes Linear, Conv, BatchNorm, LayerNorm, '
          'LinearGeneral without batch axes and the heads of MultiHeadAttention)'
        )
      attention = modules.get(owner_path.rpartition('/')[0])
      if (
        isinstance(attention, nnx.MultiHeadAttention)
        and owner in (attention.query, attention.value)
        and m.path.endswith('/kernel')
        and m.axis == 2
      ):
        why = (
          'attention divides q.k by sqrt(head dimension), so removing dimensions changes '
          'every score'
          if owner is attention.query
          else 'attention functions such as jax.nn.dot_product_attention require v to have '
          'the q and k head dimension'
        )
        raise ValueError(
          f'group {name!r} is a head dimension of {owner_path.rpartition("/")[0]!r}: {why}; '
          'prune whole heads instead'
        )


def _consumer_inputs(model: nnx.Module, paths: set[str], inputs: Sequence[Any]) -> dict:
  """The inputs each layer in ``paths`` receives on ``inputs`` (evaluation mode, a copy)."""
  copy = nnx.clone(model)
  copy.eval()
  seen: dict[str, np.ndarray] = {}
  for keys, module in list(nnx.iter_modules(copy)):
    path = '/'.join(str(k) for k in keys)
    if path not in paths:
      continue

    def record(x, *args, _module=module, _path=path, **kwargs):
      seen[_path] = np.asarray(x)
      return _module(x, *args, **kwargs)

    parent = copy
    for key in keys[:-1]:
      parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(keys[-1], int):
      parent[keys[-1]] = record
    else:
      setattr(parent, keys[-1], record)
  copy(*inputs)
  return seen


def _uniform_conv(conv: nnx.Conv) -> bool:
  """Whether a constant input channel adds the same at every output position (no zero padding)."""
  if any(d != 1 for d in np.atleast_1d(conv.input_dilation or 1)):
    return False
  padding = conv.padding
  if isinstance(padding, str):
    return padding in ('VALID', 'CIRCULAR', 'REFLECT') or all(k == 1 for k in conv.kernel_size)
  if isinstance(padding, int):
    return padding == 0
  return all(np.all(np.asarray(pad) == 0) for pad in padding)


def _fold_constants(model, groups, plan, inputs) -> dict[str, np.ndarray]:
  """New biases of the layers that read removed units' nonzero constants: ``{bias path: value}``."""
  params = {
    n: np.asarray(_tree.unbox(v)) for n, v in _tree.named_leaves(nnx.state(model, nnx.Param))
  }
  modules = _modules(model)
  by_name = dict(zip(group_names(groups), groups, strict=True))
  reads = []  # (group name, layer path, member, removed indices of its input axis)
  for name, kept in plan.items():
    group = by_name[name]
    dropped = np.setdiff1d(np.arange(group.size), np.asarray(kept, np.int64))
    for m in group.members:
      if m.role != 'in' or dropped.size == 0:
        continue
      indices = m.indices(dropped)
      rows = np.take(params[m.path], indices, axis=m.axis)
      if np.any(rows != 0):
        reads.append((name, m.path.rpartition('/')[0], m, indices))
  if not reads:
    return {}
  seen = _consumer_inputs(model, {layer for _, layer, _, _ in reads}, inputs)
  biases: dict[str, np.ndarray] = {}
  for name, layer, member, indices in reads:
    module, x = modules[layer], seen[layer]
    kernel = params[member.path].astype(np.float64)
    values = np.take(x, indices, axis=-1).astype(np.float64)
    if isinstance(module, nnx.Conv):
      flat = values.reshape(-1, indices.size)
      constant = bool(np.all(flat == flat[0]))
      if constant and not np.any(flat[0]):
        continue
      if not (constant and _uniform_conv(module) and module.bias is not None):
        why = (
          'varies with the input (the units are not dead: apply the mask first)'
          if not constant
          else 'is a nonzero constant, which a convolution with zero padding or without bias '
          'cannot absorb exactly'
        )
        raise ValueError(
          f'removed units of group {name!r} reach {layer!r}, where their input {why}; '
          'mask every member of the group (structured_mask with the default roles)'
        )
      rows = np.take(kernel, indices, axis=member.axis)
      added = flat[0] @ rows.reshape(-1, indices.size, rows.shape[-1]).sum(axis=0)
    else:
      flat = values.reshape(-1, indices.size)
      if not np.all(flat == flat[0]):
        raise ValueError(
          f'removed units of group {name!r} reach {layer!r} with values that vary with the '
          'input: the units are not dead (apply the mask before removing them)'
        )
      if not np.any(flat[0]):
        continue
      if module.bias is None:
        raise ValueError(
          f'removed units of group {name!r} give {layer!r} a nonzero constant input, and it '
          'has no bias to fold it into; mask every member of the group'
        )
      added = flat[0] @ np.take(kernel, indices, axis=member.axis)
    bias = f'{layer}/bias'
    biases[bias] = biases.get(bias, params[bias].astype(np.float64)) + added
  return biases


def _resize(module: nnx.Module) -> None:
  """The module's size attributes from its variables' shapes."""
  if isinstance(module, (nnx.BatchNorm, nnx.LayerNorm)):
    for name in ('scale', 'bias', 'mean', 'var'):
      variable = getattr(module, name, None)
      if isinstance(variable, nnx.Variable):
        module.num_features = int(variable[...].shape[-1])
        return
    return
  shape = module.kernel[...].shape
  if isinstance(module, nnx.LinearGeneral):
    inputs = len(module.in_features)
    module.in_features = tuple(int(n) for n in shape[:inputs])
    module.out_features = tuple(int(n) for n in shape[inputs:])
    return
  module.in_features, module.out_features = int(shape[-2]), int(shape[-1])
  if isinstance(module, nnx.Conv):
    module.in_features *= module.feature_group_count
    module.kernel_shape = tuple(int(n) for n in shape)


def _sliced(model: nnx.Module, kept: Mapping[tuple[str, int], np.ndarray]) -> nnx.Module:
  """A copy of ``model`` whose variables keep only the ``kept`` indices of each named axis."""
  copy = nnx.clone(model)
  modules = _modules(copy)
  variables = dict(_tree.named_leaves(nnx.state(copy)))
  changed: dict[str, np.ndarray] = {}
  for (path, axis), indices in kept.items():
    if path not in variables:
      raise ValueError(f'the plan cuts {path!r}, which the model does not have')
    value = changed.get(path, np.asarray(_tree.unbox(variables[path])))
    changed[path] = np.take(value, np.asarray(indices, np.int64), axis=axis)
  for path, value in changed.items():
    owner, _, name = path.rpartition('/')
    module = modules[owner]
    old = getattr(module, name)
    setattr(module, name, _tree.rebox(old, jnp.asarray(value, old[...].dtype)))
  for owner in {path.rpartition('/')[0] for path in changed}:
    if isinstance(modules[owner], _RESIZABLE):
      _resize(modules[owner])
  for module in modules.values():
    if isinstance(module, nnx.MultiHeadAttention):
      # Heads are the q/k/v projections' axis 1 and the out projection's axis 0.
      module.num_heads, module.head_dim = (int(n) for n in module.query.out_features)
      if hasattr(module, 'num_kv_heads'):
        module.num_kv_heads = int(module.key.out_features[0])
      module.qkv_features = module.num_heads * module.head_dim
  return copy


def _kept_axes(model, groups, plan) -> dict[tuple[str, int], np.ndarray]:
  lengths = {n: np.shape(_tree.unbox(v)) for n, v in _tree.named_leaves(nnx.state(model))}
  return {
    (path, axis): np.setdiff1d(np.arange(lengths[path][axis]), removed)
    for (path, axis), removed in removed_indices(groups, plan).items()
    if removed.size
  }


def _outputs(model: nnx.Module, inputs: Sequence[Any]) -> list[np.ndarray]:
  copy = nnx.clone(model)
  copy.eval()
  return [np.asarray(x) for x in jax.tree.leaves(copy(*inputs))]


def remove_units(
  model: nnx.Module,
  groups: Sequence[DependencyGroup],
  plan: Mapping[str, Sequence[int]],
  *inputs: Any,
  tolerance: float = 1e-5,
) -> nnx.Module:
  """A smaller dense copy of ``model`` without the units the plan removes.

  Args:
    model: a masked nnx model (the input is not changed).
    groups: its dependency groups, :func:`~pruning.dependency_groups`.
    plan: ``{group name: kept unit indices}``.
    *inputs: example inputs with real values, to observe the constants to
      fold and to compare the outputs on.
    tolerance: allowed ``max |difference|`` of the outputs, relative to
      ``max(1, max |output|)``.

  Returns:
    The smaller model, in the mode (training or evaluation) of ``model``.

  Raises:
    ValueError: a plan that does not fit the groups, a group that cannot be
      removed (a padded or concatenated axis, a module that cannot be
      resized), a removed unit whose output cannot be folded, or outputs that
      differ after removal. Messages name the group.

  Examples:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> from pruning.structured import dependency_groups, structured_mask
    >>> import pruning
    >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu,
    ...                        nnx.Linear(8, 3, rngs=nnx.Rngs(0)))
    >>> x = jnp.ones((2, 4))
    >>> groups = dependency_groups(model, x)
    >>> plan = {'layers/0/kernel:1': (1, 4, 6)}
    >>> params = nnx.state(model, nnx.Param)
    >>> nnx.update(model, pruning.apply_mask(params, structured_mask(params, groups, plan)))
    >>> smaller = remove_units(model, groups, plan, x)
    >>> smaller.layers[0].kernel.shape, smaller.layers[2].in_features
    ((4, 3), 3)
  """
  _check_removable(model, groups, plan)
  kept = _kept_axes(model, groups, plan)
  folded = _fold_constants(model, groups, plan, inputs)
  source = model
  if folded:
    source = nnx.clone(model)
    modules = _modules(source)
    for path, value in folded.items():
      owner, _, name = path.rpartition('/')
      variable = getattr(modules[owner], name)
      variable[...] = jnp.asarray(value, variable[...].dtype)
  smaller = _sliced(source, kept)
  expected, got = _outputs(model, inputs), _outputs(smaller, inputs)
  difference = max(
    (float(np.max(np.abs(e - g))) for e, g in zip(expected, got, strict=True)), default=0.0
  )
  scale = max([1.0] + [float(np.max(np.abs(e))) for e in expected if e.size])
  if not difference <= tolerance * scale:
    raise ValueError(
      f'the model after removing the units of groups {sorted(n for n in plan)} differs from '
      f'the masked model by up to {difference:.3g} (tolerance {tolerance * scale:.3g}); are '
      'the removed units masked in every member, and does no normalisation reduce over a '
      "removed group's axis (a LayerNorm on a pruned stream)?"
    )
  return smaller


def plan_record(
  model: nnx.Module,
  groups: Sequence[DependencyGroup],
  plan: Mapping[str, Sequence[int]],
  *,
  model_name: str | None = None,
  options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """The plan as a JSON-ready dict: per group its kept units and width, per member axis its kept indices."""
  by_name = dict(zip(group_names(groups), groups, strict=True))
  removed_indices(groups, plan)  # validates the plan
  kept_axes = _kept_axes(model, groups, plan)
  return {
    'format': PLAN_FORMAT,
    'version': 1,
    'model': model_name,
    'options': dict(options or {}),
    'groups': {
      name: {
        'size': by_name[name].size,
        'width': len(kept),
        'kept': sorted(int(u) for u in kept),
      }
      for name, kept in plan.items()
    },
    'axes': [
      {'path': path, 'axis': axis, 'kept': [int(i) for i in indices]}
      for (path, axis), indices in sorted(kept_axes.items())
    ],
  }


def save_pruned(
  directory: str | pathlib.Path,
  smaller: nnx.Module,
  record: Mapping[str, Any],
) -> pathlib.Path:
  """Writes ``plan.json`` (``record``, from :func:`plan_record`) and ``params.npz`` (the smaller model's variables).

  Both files are written into a new folder beside ``directory``, which then
  takes its place: a reader or a killed run sees the old pair or the new
  one, never a plan with another model's arrays or a half-written file.

  Returns:
    The directory.
  """
  directory = pathlib.Path(directory)
  arrays = {
    name: np.asarray(_tree.unbox(value))
    for name, value in _tree.named_leaves(nnx.state(smaller, nnx.Not(nnx.RngState)))
  }
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  directory.parent.mkdir(parents=True, exist_ok=True)
  staging = directory.with_name(f'.{directory.name}.{uuid.uuid4().hex}.tmp')
  staging.mkdir()
  try:
    _io.write_atomic(staging / PARAMS_FILE, buffer.getvalue())
    _io.write_atomic(staging / PLAN_FILE, json.dumps(record, indent=1) + '\n')
    old = None
    if directory.exists():
      old = directory.with_name(f'.{directory.name}.{uuid.uuid4().hex}.old')
      directory.rename(old)
    staging.rename(directory)
    if old is not None:
      shutil.rmtree(old)
  finally:
    if staging.exists():
      shutil.rmtree(staging)
  return directory


def holds_plan(directory: str | pathlib.Path) -> bool:
  """Whether ``directory`` is where :func:`save_pruned` wrote (it holds a ``plan.json``)."""
  return (pathlib.Path(directory) / PLAN_FILE).is_file()


def load_plan(directory: str | pathlib.Path) -> dict[str, Any]:
  """The plan record saved in ``directory``.

  Raises:
    ValueError: a file that is not a structured plan.
  """
  record = json.loads((pathlib.Path(directory) / PLAN_FILE).read_text())
  if not isinstance(record, dict) or record.get('format') != PLAN_FORMAT:
    raise ValueError(f'{pathlib.Path(directory) / PLAN_FILE} is not a {PLAN_FORMAT!r} file')
  return record


def load_pruned(directory: str | pathlib.Path, model: nnx.Module) -> nnx.Module:
  """The smaller model saved by :func:`save_pruned`, rebuilt from a full-width ``model``.

  Args:
    directory: where :func:`save_pruned` wrote.
    model: the model built at its original widths (the same name and
      options as the plan records, e.g. ``models.create_model(record['model'],
      rngs, **record['options'])``); its values are not used.

  Returns:
    A new model of the plan's widths holding the saved variables.

  Raises:
    ValueError: the plan cuts a variable the model lacks, or a saved array
      is missing, unexpected or of another shape (naming it).
  """
  record = load_plan(directory)
  kept = {(a['path'], a['axis']): np.asarray(a['kept'], np.int64) for a in record['axes']}
  smaller = _sliced(model, kept)
  with np.load(pathlib.Path(directory) / PARAMS_FILE, allow_pickle=False) as saved:
    arrays = {name: saved[name] for name in saved.files}
  variables = dict(_tree.named_leaves(nnx.state(smaller, nnx.Not(nnx.RngState))))
  missing, unexpected = sorted(set(variables) - set(arrays)), sorted(set(arrays) - set(variables))
  if missing or unexpected:
    raise ValueError(
      f'saved arrays do not fit the model: missing {missing}, unexpected {unexpected}'
    )
  for name, variable in variables.items():
    if np.shape(variable[...]) != arrays[name].shape:
      raise ValueError(
        f'saved {name!r} has shape {arrays[name].shape}; the rebuilt model expects '
        f'{np.shape(variable[...])}'
      )
  modules = _modules(smaller)
  for name, variable in variables.items():
    owner, _, attribute = name.rpartition('/')
    getattr(modules[owner], attribute)[...] = jnp.asarray(arrays[name], variable[...].dtype)
  return smaller
