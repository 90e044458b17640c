"""Dropout rate for retraining a pruned layer.

Pruning leaves a layer with fewer connections, so less variance to reduce;
Han et al. 2015, §3.2, lower the dropout rate with the square root of the
fraction of connections left: ``D_r = D_o * sqrt(C_ir / C_io)``, where ``C_i``
counts the connections of layer ``i`` (``o``: original, ``r``: remaining).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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
  if not (isinstance(original_rate, int | float) and 0.0 <= original_rate < 1.0):
    raise ValueError(f'original_rate is {original_rate!r}; expected a value in [0, 1)')
  leaves = [leaf for _, leaf in _tree.named_leaves(mask) if leaf is not None]
  if len(leaves) != 1:
    raise ValueError(f'mask must be one boolean array (a single layer); got {len(leaves)} arrays')
  array = np.asarray(_tree.unbox(leaves[0]))
  if array.dtype != np.bool_:
    raise ValueError(f'mask has dtype {array.dtype}; expected bool')
  if array.size == 0:
    raise ValueError('mask is empty: the layer has no connections to count')
  return original_rate * math.sqrt(np.count_nonzero(array) / array.size)
