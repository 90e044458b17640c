"""Give a model's layers other widths: load the params of a model after neuron removal.

Layer widths of an nnx model are fixed by its constructor (``Linear(784,
300)``), but after :func:`~pruning.remove_dead_neurons` the params have fewer
units. :func:`load_resized` builds the smaller model from a freshly
constructed one: each ``nnx.Linear``, ``nnx.Conv`` and ``nnx.BatchNorm``
takes the shapes of its new params, and its size attributes
(``in_features``, ``out_features``, ``kernel_shape``, ``num_features``)
follow. The model's code is unchanged, so it runs as before at the new widths.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from pruning import _tree
from pruning.sparse.layer_chain import path_string

PyTree = Any


def norm_variables(module: nnx.BatchNorm) -> dict[str, np.ndarray]:
  """The per-feature arrays of a BatchNorm layer, by variable name."""
  names = ('scale', 'bias', 'mean', 'var')
  return {n: np.asarray(getattr(module, n)[...]) for n in names if getattr(module, n) is not None}


def resize_layer(module: Any, values: dict[str, np.ndarray], path: str) -> None:
  """Gives ``module``'s variables the given values, and its size attributes their shapes."""
  for name, value in values.items():
    old = getattr(module, name, None)
    if not isinstance(old, nnx.Variable):
      raise ValueError(f'{path!r} has no variable {name!r} to load')
    setattr(module, name, _tree.rebox(old, jnp.asarray(value, old[...].dtype)))
  if isinstance(module, nnx.BatchNorm):
    sizes = {getattr(module, n)[...].shape[-1] for n in norm_variables(module)}
    if len(sizes) != 1:
      raise ValueError(f'BatchNorm {path!r} would have variables of sizes {sorted(sizes)}')
    module.num_features = sizes.pop()
    return
  kernel_shape = module.kernel[...].shape
  module.in_features, module.out_features = int(kernel_shape[-2]), int(kernel_shape[-1])
  if isinstance(module, nnx.Conv):
    # A grouped kernel holds each group's share of the input channels.
    module.in_features *= module.feature_group_count
    module.kernel_shape = tuple(int(n) for n in kernel_shape)


def load_resized(model: nnx.Module, params: PyTree) -> nnx.Module:
  """Loads params of possibly smaller layer widths into ``model``, in place.

  ``model`` is built at its original widths (from its config); ``params``
  are those of the model after :func:`~pruning.remove_dead_neurons` (and may include
  BatchNorm statistics), for instance as :func:`~pruning.load_sparse`
  returns them. Each Linear, Conv and BatchNorm layer takes the shapes of
  its leaves; any other leaf must keep its shape.

  Returns:
    ``model``, for chaining.

  Raises:
    ValueError: if ``params`` lack a parameter of the model or hold a leaf
      the model lacks, or a leaf outside those layers changes shape, naming
      the leaves.

  Examples:
    >>> from flax import nnx
    >>> from models import LeNet300100
    >>> import pruning
    >>> model = LeNet300100(nnx.Rngs(0))
    >>> mask = pruning.prunable_mask(nnx.state(model, nnx.Param))
    >>> mask['fc1']['kernel'] = mask['fc1']['kernel'].at[:, 100:].set(False)
    >>> smaller = pruning.remove_dead_neurons(model, mask, input_shape=(784,)).model
    >>> fresh = load_resized(LeNet300100(nnx.Rngs(1)), nnx.state(smaller, nnx.Param))
    >>> fresh.fc1.out_features, fresh.fc2.kernel.shape
    (100, (100, 100))
  """
  wanted = dict(_tree.named_leaves(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))))
  given = {name: np.asarray(_tree.unbox(leaf)) for name, leaf in _tree.named_leaves(params)}
  missing = sorted(
    n for n, leaf in wanted.items() if isinstance(leaf, nnx.Param) and n not in given
  )
  unexpected = sorted(n for n in given if n not in wanted)
  if missing or unexpected:
    raise ValueError(f'params do not fit the model: missing {missing}, unexpected {unexpected}')
  layers = {
    path_string(keys): module
    for keys, module in nnx.iter_modules(model)
    if isinstance(module, (nnx.Linear, nnx.Conv, nnx.BatchNorm))
  }
  by_owner: dict[str, dict[str, np.ndarray]] = {}
  for name, value in given.items():
    owner, _, leaf = name.rpartition('/')
    by_owner.setdefault(owner, {})[leaf] = value
  for owner, values in by_owner.items():
    if owner in layers:
      resize_layer(layers[owner], values, owner)
      continue
    for leaf, value in values.items():
      name = f'{owner}/{leaf}' if owner else leaf
      variable = wanted[name]
      if variable[...].shape != value.shape:
        raise ValueError(
          f'leaf {name!r} has shape {value.shape}; the model expects {variable[...].shape} '
          'and only Linear, Conv and BatchNorm layers can be resized'
        )
      variable[...] = jnp.asarray(value, variable[...].dtype)
  return model
