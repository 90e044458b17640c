"""L1 and L2 weight penalties that skip pruned connections.

Add one of these to the training loss while retraining. Only prunable leaves
(those with a mask array) are penalised, as weight decay conventionally
spares biases and normalisation scales; inside them only the connections the
mask keeps count, so a pruned weight contributes neither to the penalty nor
to its gradient (``d|w|/dw`` at ``w = 0`` is never asked for).

Han et al. 2015, §3.1 and Fig. 5: L1 leaves the network in better shape right
after pruning (it pushes more weights near zero); L2 gives the best accuracy
after retraining.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from pruning import _tree
from pruning.masks import check_mask

PyTree = Any


def _penalty(params: PyTree, mask: PyTree, term: Callable[[jax.Array], jax.Array]) -> jax.Array:
  leaves = check_mask(mask, params)
  total = jnp.zeros((), dtype=jnp.float32)
  for (_, weight), keep in zip(_tree.named_leaves(params), leaves, strict=True):
    if keep is None:
      continue
    w = _tree.unbox(weight)
    total = total + jnp.sum(jnp.where(_tree.unbox(keep), term(w), 0)).astype(jnp.float32)
  return total


def l1_penalty(params: PyTree, mask: PyTree) -> jax.Array:
  """``sum |w|`` over the kept connections of the prunable leaves.

  Multiply by the regularisation strength and add it to the loss.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'kernel': jnp.array([[1.0, -2.0, 3.0]]), 'bias': jnp.array([5.0])}
    >>> mask = {'kernel': jnp.array([[True, True, False]]), 'bias': None}
    >>> float(l1_penalty(params, mask))
    3.0

  References:
    Han et al. 2015, §3.1.
  """
  return _penalty(params, mask, jnp.abs)


def l2_penalty(params: PyTree, mask: PyTree) -> jax.Array:
  """``sum w**2 / 2`` over the kept connections of the prunable leaves.

  The factor ``1/2`` makes the gradient ``w``, so a strength ``lambda`` here is
  the ``weight_decay`` of plain SGD.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'kernel': jnp.array([[1.0, -2.0, 3.0]]), 'bias': jnp.array([5.0])}
    >>> mask = {'kernel': jnp.array([[True, True, False]]), 'bias': None}
    >>> float(l2_penalty(params, mask))
    2.5

  References:
    Han et al. 2015, §3.1.
  """
  return _penalty(params, mask, lambda w: 0.5 * jnp.square(w))
