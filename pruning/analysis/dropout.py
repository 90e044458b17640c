"""Dropout rate for retraining a pruned layer.

Pruning leaves a layer with fewer connections, so less variance to reduce;
Han et al. 2015, §3.2, lower the dropout rate with the square root of the
fraction of connections left: ``D_r = D_o * sqrt(C_ir / C_io)``, where ``C_i``
counts the connections of layer ``i`` (``o``: original, ``r``: remaining).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import nnx

from pruning import _tree


def adjusted_dropout_rate(original_rate: float, mask: Any) -> float:
  """``D_r = D_o * sqrt(C_ir / C_io)`` from the mask of the layer's connections.

  Args:
    original_rate: ``D_o``, the dropout rate used while training dense, in
      [0, 1).
    mask: boolean array (or a one-leaf mask pytree) of the connections of the
      layer the dropout acts on: ``C_io`` is its size, ``C_ir`` its number of
      ``True`` entries. Use the layer whose connections the dropout masks, for
      VGG's and AlexNet's fc6/fc7 the kernel that consumes the dropped
      activations.

  Returns:
    ``D_r``, the dropout rate for retraining.

  Raises:
    ValueError: a rate outside [0, 1), a mask that is not boolean, or an
      empty mask.

  Examples:
    >>> import numpy as np
    >>> adjusted_dropout_rate(0.5, np.array([True, False, False, False]))
    0.25

  References:
    Han et al. 2015, §3.2.
  """
  try:
    rate = _tree.real_number(original_rate, 'original_rate', minimum=0.0, maximum=1.0)
  except ValueError:
    rate = None
  if rate is None or rate == 1.0:
    raise ValueError(f'original_rate is {original_rate!r}; expected a value in [0, 1)')
  leaves = [leaf for _, leaf in _tree.named_leaves(mask) if leaf is not None]
  if len(leaves) != 1:
    raise ValueError(f'mask must be one boolean array (a single layer); got {len(leaves)} arrays')
  array = np.asarray(_tree.unbox(leaves[0]))
  if array.dtype != np.bool_:
    raise ValueError(f'mask has dtype {array.dtype}; expected bool')
  if array.size == 0:
    raise ValueError('mask is empty: the layer has no connections to count')
  return rate * math.sqrt(np.count_nonzero(array) / array.size)


def adjust_dropout_rates(
  model: nnx.Module,
  dropout_layers: Mapping[str, str],
  original_rates: Mapping[str, float],
  mask: Any,
) -> dict[str, float]:
  """Sets each listed ``nnx.Dropout``'s rate from its layer's mask, in place.

  Args:
    model: an nnx model holding ``nnx.Dropout`` modules.
    dropout_layers: dropout module path (``'dropout6'``) -> path of the layer
      whose connections it acts on (``'fc7'``; its ``kernel`` mask is used).
    original_rates: dropout module path -> ``D_o``, the dense-training rate.
    mask: the current mask of the model's params.

  Returns:
    ``{dropout path: D_r}``, the rates now set.

  Raises:
    ValueError: a path that names no ``nnx.Dropout``, or a layer with no mask.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.fc = nnx.Linear(2, 2, rngs=rngs)
    ...     self.drop = nnx.Dropout(0.5, rngs=rngs)
    >>> net = Net(nnx.Rngs(0))
    >>> mask = {'fc': {'kernel': jnp.array([[True, False], [False, False]]), 'bias': None}}
    >>> adjust_dropout_rates(net, {'drop': 'fc'}, {'drop': 0.5}, mask)
    {'drop': 0.25}
    >>> net.drop.rate
    0.25

  References:
    Han et al. 2015, §3.2.
  """
  modules = {
    '/'.join(str(p) for p in path): node
    for path, node in nnx.iter_graph(model)
    if isinstance(node, nnx.Dropout)
  }
  layer_masks = {name: leaf for name, leaf in _tree.named_leaves(mask) if leaf is not None}
  rates = {}
  for path, layer in dropout_layers.items():
    if path not in modules:
      raise ValueError(f'{path!r} names no nnx.Dropout module; dropout modules: {sorted(modules)}')
    kernel = f'{layer}/kernel'
    if kernel not in layer_masks:
      raise ValueError(
        f'dropout {path!r} follows layer {layer!r}, which has no mask; '
        f'masked layers: {sorted(n.rpartition("/")[0] for n in layer_masks)}'
      )
    rates[path] = adjusted_dropout_rate(original_rates[path], layer_masks[kernel])
    modules[path].rate = rates[path]
  return rates


def dropout_rates(model: nnx.Module) -> dict[str, float]:
  """``{path: rate}`` of every ``nnx.Dropout`` in ``model`` (the original ``D_o``)."""
  return {
    '/'.join(str(p) for p in path): float(node.rate)
    for path, node in nnx.iter_graph(model)
    if isinstance(node, nnx.Dropout)
  }
