"""Magnitude criteria that turn trained weights into pruning masks.

Three ways to choose which connections to remove by weight magnitude, and a
random baseline:

* :func:`quality_mask`: Han et al.'s rule, prune ``|w| < quality * std(w)``
  per layer (§4);
* :func:`sparsity_mask`: prune a target fraction of each layer, counted as
  ``torch.nn.utils.prune.l1_unstructured`` counts;
* :func:`global_sparsity_mask`: prune a target fraction of several layers
  pooled together, as ``torch.nn.utils.prune.global_unstructured`` does;
* :func:`random_mask`: prune the same per-layer counts as
  :func:`sparsity_mask`, chosen uniformly at random: the control that shows
  magnitude matters.

Each takes the current ``mask`` (optional). When given, a weight it prunes
stays pruned, so masks only shrink across iterative rounds (§3.4); when left
out, the decision rests on the weights alone and the current mask is the dense
``prunable_mask(params)`` of the default kernels. ``pattern`` chooses which of
the prunable layers this call prunes; the others keep their current mask, which
is how FC and CONV layers are pruned in separate rounds (§3.3). To prune leaves
other than the default kernels, pass ``mask=prunable_mask(params, pattern)``.

Thresholds, orderings and counts are computed in float64 with numpy on the
host: these functions run between rounds, not inside a compiled step, and the
host makes their result exact and the same on every backend. They validate
their input and therefore cannot be traced by ``jit``.

Tie-breaking in the sparsity criteria: weights are ranked by magnitude with a
stable sort over the row-major flattened tensor (for the global criterion, the
layers concatenated in params flattening order), weights already pruned first.
Among equal magnitudes the weight that comes first is pruned first, so the
number pruned is always exactly the documented count.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from pruning import _tree
from pruning.masks import KERNEL_PATTERN, check_mask, prunable_mask

PyTree = Any
PerLayer = float | Mapping[str, float]


def _selected_layers(
  params: PyTree, mask: PyTree | None, pattern: str | re.Pattern[str]
) -> tuple[PyTree, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """The base mask and, per selected layer, its weights and current mask as numpy."""
  if mask is None:
    # A dense network's current mask keeps every default-prunable layer whole;
    # ``pattern`` only chooses which of them this call prunes, so the others
    # come back all-True (and a bias the pattern happens to match is skipped).
    base = prunable_mask(params)
  else:
    check_mask(mask, params)
    base = mask
  regex = _tree.compile_pattern(pattern)
  weights = dict(_tree.named_leaves(params))
  layers = {}
  for name, leaf in _tree.named_leaves(base):
    if leaf is None or not regex.search(name):
      continue
    layers[name] = (np.asarray(_tree.unbox(weights[name])), np.asarray(_tree.unbox(leaf)))
  if not layers:
    prunable = [name for name, leaf in _tree.named_leaves(base) if leaf is not None]
    raise ValueError(
      f'pattern {regex.pattern!r} selects no prunable layer; prunable layers: {prunable}'
    )
  return base, layers


def _per_layer(value: PerLayer, names: list[str], what: str) -> dict[str, float]:
  """Expands a scalar or a ``{layer path: value}`` mapping to selected leaf paths.

  A mapping key may be a leaf path (``'fc1/kernel'``) or the path of its layer
  (``'fc1'``). Layers the mapping does not name are not pruned by this call.
  """
  if not isinstance(value, Mapping):
    return dict.fromkeys(names, value)
  out = {}
  for key, v in value.items():
    matches = [n for n in names if n == key or n.rpartition('/')[0] == key]
    if len(matches) != 1:
      raise ValueError(
        f'{what} given for {key!r}, which names '
        f'{"no" if not matches else "more than one"} selected layer; '
        f'selected layers: {names}'
      )
    out[matches[0]] = v
  return out


def _rebuild(base: PyTree, new_leaves: Mapping[str, np.ndarray]) -> PyTree:
  """``base`` with the leaves named in ``new_leaves`` replaced (as jax bool arrays)."""

  def replace(name: str, leaf: Any) -> Any:
    if name in new_leaves:
      return jnp.asarray(new_leaves[name], dtype=bool)
    return None if leaf is None else jnp.asarray(_tree.unbox(leaf), dtype=bool)

  return _tree.map_named(replace, base)


def quality_mask(
  params: PyTree,
  quality: PerLayer,
  *,
  std_of: Literal['all', 'kept'] = 'all',
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """Han et al.'s rule: per layer, prune ``|w| < quality * std(w)``.

  Args:
    params: trained params (plain dicts or an nnx ``State``).
    quality: the quality parameter, one for all selected layers or a mapping
      from layer path (``'fc1'`` or ``'fc1/kernel'``) to its own value; layers
      the mapping leaves out are not pruned by this call.
    std_of: ``'all'``: the standard deviation of all the layer's weights,
      pruned zeros included (the paper's literal rule); ``'kept'``: of the
      weights the current ``mask`` keeps.
    mask: the current mask. Its pruned weights stay pruned; without it the
      decision rests on the weights alone.
    pattern: which prunable layers this call prunes (regex on leaf paths).

  Returns:
    The new mask, mirroring ``params``.

  Raises:
    ValueError: negative or non-finite quality; weights holding NaN or inf;
      a mask that does not fit the params; a pattern or mapping key that
      selects no layer. Messages name the layer.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[0.1, -2.0], [1.0, -0.05]])}}
    >>> quality_mask(params, 0.5)['fc']['kernel'].tolist()
    [[False, True], [True, False]]

  References:
    Han et al. 2015, §4 (threshold = quality x std of the layer's weights).
  """
  if std_of not in ('all', 'kept'):
    raise ValueError(f"std_of is {std_of!r}; expected 'all' or 'kept'")
  base, layers = _selected_layers(params, mask, pattern)
  qualities = _per_layer(quality, list(layers), 'quality')
  new = {}
  for name, q in qualities.items():
    if not (isinstance(q, int | float) and math.isfinite(q) and q >= 0):
      raise ValueError(f'quality for {name!r} is {q!r}; expected a finite number >= 0')
    weights, kept = layers[name]
    _tree.check_all_finite(name, weights)
    w = weights.astype(np.float64)
    sample = w if std_of == 'all' else w[kept]
    threshold = q * float(sample.std()) if sample.size else 0.0
    keep = np.abs(w) >= threshold
    new[name] = keep & kept if mask is not None else keep
  return _rebuild(base, new)


def _prune_count(sparsity: float, size: int, name: str) -> int:
  if not (isinstance(sparsity, int | float) and 0.0 <= sparsity <= 1.0):
    raise ValueError(f'sparsity for {name!r} is {sparsity!r}; expected a value in [0, 1]')
  # Python's round (half to even), the count torch.nn.utils.prune uses.
  return round(sparsity * size)


def _prune_smallest(scores: np.ndarray, count: int, already: np.ndarray) -> np.ndarray:
  """Keep-mask pruning ``count`` entries: all of ``already`` first, then the smallest."""
  ranked = np.where(already, -1.0, scores)
  order = np.argsort(ranked, kind='stable')
  keep = np.ones(scores.size, dtype=bool)
  keep[order[: max(count, int(already.sum()))]] = False
  return keep


def sparsity_mask(
  params: PyTree,
  sparsity: PerLayer,
  *,
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """Prunes the ``round(sparsity * n)`` smallest-magnitude weights of each layer.

  ``sparsity`` is the fraction of the layer's ``n`` weights pruned after the
  call, counted over the whole layer. The count is the one
  ``torch.nn.utils.prune.l1_unstructured(module, name, amount=sparsity)``
  prunes on a dense layer: ``round(sparsity * n)`` with Python's
  round-half-to-even. (In a second torch call ``amount`` is a fraction of the
  survivors; here it is always of the whole layer.) If the current ``mask``
  already prunes more, nothing more is pruned and nothing returns.

  Args:
    params: trained params.
    sparsity: one fraction in [0, 1] for all selected layers, or a mapping
      from layer path to fraction; layers it leaves out are not pruned.
    mask: the current mask; its pruned weights stay pruned and count towards
      the target.
    pattern: which prunable layers this call prunes (regex on leaf paths).

  Returns:
    The new mask.

  Raises:
    ValueError: sparsity outside [0, 1]; weights holding NaN or inf; a mask
      that does not fit; a pattern or key that selects no layer.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[0.3, -0.1], [0.2, 0.4]])}}
    >>> sparsity_mask(params, 0.5)['fc']['kernel'].tolist()
    [[True, False], [False, True]]

  References:
    Han et al. 2015, §3.4 (iterative pruning: masks only shrink).
  """
  base, layers = _selected_layers(params, mask, pattern)
  targets = _per_layer(sparsity, list(layers), 'sparsity')
  new = {}
  for name, s in targets.items():
    weights, kept = layers[name]
    count = _prune_count(s, weights.size, name)
    _tree.check_all_finite(name, weights)
    pruned = ~kept.reshape(-1) if mask is not None else np.zeros(weights.size, dtype=bool)
    scores = np.abs(weights.reshape(-1).astype(np.float64))
    new[name] = _prune_smallest(scores, count, pruned).reshape(weights.shape)
  return _rebuild(base, new)


def global_sparsity_mask(
  params: PyTree,
  sparsity: float,
  *,
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """Prunes the ``round(sparsity * N)`` smallest magnitudes across selected layers.

  ``N`` is the total number of weights in the selected layers; one magnitude
  ranking spans them all, so layers with many small weights lose more. The
  count matches ``torch.nn.utils.prune.global_unstructured(...,
  pruning_method=L1Unstructured, amount=sparsity)`` on dense layers.

  Args:
    params: trained params.
    sparsity: fraction in [0, 1] of all selected weights pruned after the call.
    mask: the current mask; its pruned weights stay pruned and count.
    pattern: which prunable layers take part (regex on leaf paths).

  Returns:
    The new mask.

  Raises:
    ValueError: as :func:`sparsity_mask`.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'a': {'kernel': jnp.array([[0.1, 0.2]])},
    ...           'b': {'kernel': jnp.array([[3.0, 4.0]])}}
    >>> new = global_sparsity_mask(params, 0.5)
    >>> new['a']['kernel'].tolist(), new['b']['kernel'].tolist()
    ([[False, False]], [[True, True]])
  """
  base, layers = _selected_layers(params, mask, pattern)
  sizes = [w.size for w, _ in layers.values()]
  count = _prune_count(sparsity, sum(sizes), 'the selected layers')
  for name, (weights, _) in layers.items():
    _tree.check_all_finite(name, weights)
  scores = np.concatenate([np.abs(w.reshape(-1).astype(np.float64)) for w, _ in layers.values()])
  if mask is not None:
    pruned = np.concatenate([~k.reshape(-1) for _, k in layers.values()])
  else:
    pruned = np.zeros(scores.size, dtype=bool)
  keep = _prune_smallest(scores, count, pruned)
  pieces = np.split(keep, np.cumsum(sizes)[:-1])
  new = {
    name: piece.reshape(w.shape)
    for (name, (w, _)), piece in zip(layers.items(), pieces, strict=True)
  }
  return _rebuild(base, new)


def _seed_entropy(key: int | Sequence[int] | jax.Array) -> list[int]:
  """Non-negative integers seeding numpy from an int, ints, or a jax PRNG key."""
  if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  values = np.asarray(key).reshape(-1)
  if values.size == 0 or values.dtype.kind not in 'iu' or (values < 0).any():
    raise ValueError(
      f'key is {key!r}; expected a non-negative int, a sequence of them, or a jax PRNG key'
    )
  return [int(v) for v in values]


def random_mask(
  params: PyTree,
  sparsity: PerLayer,
  *,
  key: int | Sequence[int] | jax.Array,
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """Prunes ``round(sparsity * n)`` weights of each layer chosen uniformly at random.

  The baseline for magnitude pruning: the same exact per-layer counts as
  :func:`sparsity_mask` (the already-pruned weights of ``mask`` count and stay
  pruned; the rest of the count is drawn uniformly from the kept weights),
  but blind to the weights' values. The draw depends only on ``key`` and the
  layer's path, so the same key gives the same mask on every machine, and two
  layers never share a stream. Pass a different key every round.

  Args:
    params: trained params (only shapes are read).
    sparsity: one fraction in [0, 1] for all selected layers, or a mapping
      from layer path to fraction; layers it leaves out are not pruned.
    key: a non-negative int, a sequence of them (``(seed, round)``), or a jax
      PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``); it seeds
      numpy's ``default_rng`` together with a hash of the layer's path.
    mask: the current mask; its pruned weights stay pruned and count towards
      the target.
    pattern: which prunable layers this call prunes (regex on leaf paths).

  Returns:
    The new mask.

  Raises:
    ValueError: sparsity outside [0, 1]; a key that is not a non-negative
      int, ints or a PRNG key; a mask that does not fit; a pattern or key
      that selects no layer.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.zeros((4, 5))}}
    >>> mask = random_mask(params, 0.3, key=0)
    >>> int((~mask['fc']['kernel']).sum())
    6
    >>> again = random_mask(params, 0.3, key=0)
    >>> bool((again['fc']['kernel'] == mask['fc']['kernel']).all())
    True
  """
  entropy = _seed_entropy(key)
  base, layers = _selected_layers(params, mask, pattern)
  targets = _per_layer(sparsity, list(layers), 'sparsity')
  new = {}
  for name, s in targets.items():
    weights, kept = layers[name]
    count = _prune_count(s, weights.size, name)
    pruned = ~kept.reshape(-1) if mask is not None else np.zeros(weights.size, dtype=bool)
    # crc32, unlike hash(), is the same in every process.
    seed = np.random.SeedSequence([*entropy, zlib.crc32(name.encode())])
    scores = np.random.default_rng(seed).random(weights.size)
    new[name] = _prune_smallest(scores, count, pruned).reshape(weights.shape)
  return _rebuild(base, new)
