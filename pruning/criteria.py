"""Pruning criteria: a score per weight, and shared selections that turn scores into masks.

A criterion (Han et al. 2015 prune by weight magnitude) is a *score
function* registered by name (:func:`register_criterion`, :data:`CRITERIA`):
``score(weights, rng) -> scores``, higher meaning more worth keeping. How
scores become a mask is one of the shared *selections*:

* ``'count'``: prune the ``round(sparsity * n)`` lowest scores of each layer
  (:func:`sparsity_mask`, counted as ``torch.nn.utils.prune.l1_unstructured``
  counts), or of several layers pooled (:func:`global_sparsity_mask`, as
  ``torch.nn.utils.prune.global_unstructured``); targets are sparsities;
* ``'threshold'``: Han et al.'s rule, prune where the score is below
  ``quality * std(w)`` of the layer's weights (§4; :func:`quality_mask`);
  targets are qualities.

Registered here: ``'sparsity'`` (magnitude, count), ``'quality'``
(magnitude, threshold) and ``'random'`` (uniform scores, count: the
baseline that shows magnitude matters; :func:`random_mask`). A criterion
registered anywhere is known by name to the rounds of a run
(:mod:`pruning.rounds`), the sensitivity analysis, the automatic thresholds
and the scripts' ``--criterion``.

Each mask function takes the current ``mask`` (optional). When given, a
weight it prunes stays pruned, so masks only shrink across iterative rounds
(§3.4); when left out, the decision rests on the weights alone and the
current mask is the dense ``prunable_mask(params)`` of the default kernels.
``pattern`` chooses which of the prunable layers this call prunes; the others
keep their current mask, which is how FC and CONV layers are pruned in
separate rounds (§3.3). To prune leaves other than the default kernels, pass
``mask=prunable_mask(params, pattern)``.

Scores, thresholds, orderings and counts are computed in float64 with numpy
on the host: these functions run between rounds, not inside a compiled step,
and the host makes their result exact and the same on every backend. They
validate their input and therefore cannot be traced by ``jit``.

Tie-breaking in the count selection: weights are ranked by score with a
stable sort over the row-major flattened tensor (for the global criterion,
the layers concatenated in params flattening order), weights already pruned
first. Among equal scores the weight that comes first is pruned first, so the
number pruned is always exactly the documented count.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

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


Selection = Literal['count', 'threshold']
ScoreFn = Callable[[np.ndarray, 'np.random.Generator | None'], np.ndarray]


class Criterion(NamedTuple):
  """A registered criterion: how weights are scored, and how scores are selected."""

  name: str  # what runs, curves and the command line call it
  score: ScoreFn  # (float64 weights of one layer, rng or None) -> float64 scores, higher kept
  selection: Selection  # 'count': targets are sparsities; 'threshold': qualities (§4)
  random: bool  # draws from rng: needs a key; each key gives another mask


CRITERIA: dict[str, Criterion] = {}
"""Every registered criterion by name; :func:`register_criterion` adds to it."""


def register_criterion(
  name: str,
  score: ScoreFn | None = None,
  *,
  selection: Selection = 'count',
  random: bool = False,
) -> Any:
  """Registers a score function under ``name``, for every part of the toolkit.

  Once registered, ``name`` works as the ``criterion`` of the mask functions
  here, of a run's rounds (:mod:`pruning.rounds`), of
  :func:`~pruning.sensitivity_analysis` and the thresholds read off it, and
  of the scripts' ``--criterion``.

  Args:
    name: the criterion's name; not already registered.
    score: ``score(weights, rng) -> scores``: float64 weights of one layer
      (any shape) to scores of the same shape, higher meaning more worth
      keeping. ``rng`` is a ``numpy.random.Generator`` seeded from the call's
      key and the layer's path when ``random=True``, else ``None``.
    selection: ``'count'`` (prune the lowest scores to a target sparsity) or
      ``'threshold'`` (prune scores below ``quality * std(w)``, Han et al.'s
      rule).
    random: whether ``score`` draws from ``rng``.

  Returns:
    The :class:`Criterion`, or without ``score`` a decorator that registers
    the function it decorates and returns it unchanged.

  Raises:
    ValueError: a name already registered, an unknown selection, a score that
      is not callable.

  Examples:
    >>> import numpy as np
    >>> @register_criterion('smallest_first')
    ... def keep_the_smallest(weights, rng):
    ...   return -np.abs(weights)
    >>> params = {'fc': {'kernel': np.array([[0.3, -0.1], [0.2, 0.4]])}}
    >>> sparsity_mask(params, 0.5, criterion='smallest_first')['fc']['kernel'].tolist()
    [[False, True], [True, False]]
    >>> del CRITERIA['smallest_first']
  """
  if score is None:

    def decorator(fn: ScoreFn) -> ScoreFn:
      register_criterion(name, fn, selection=selection, random=random)
      return fn

    return decorator
  if not (isinstance(name, str) and name):
    raise ValueError(f'criterion name is {name!r}; expected a non-empty string')
  if name in CRITERIA:
    raise ValueError(f'criterion {name!r} is already registered (by {CRITERIA[name].score!r})')
  if selection not in ('count', 'threshold'):
    raise ValueError(f"selection is {selection!r}; expected 'count' or 'threshold'")
  if not callable(score):
    raise ValueError(f'score of criterion {name!r} is {score!r}; expected a function')
  criterion = Criterion(name, score, selection, bool(random))
  CRITERIA[name] = criterion
  return criterion


def get_criterion(name: str, selection: Selection | None = None) -> Criterion:
  """The criterion registered as ``name`` (with the given selection, if one is asked for).

  Raises:
    ValueError: an unknown name (listing the registered ones), or a
      criterion whose selection is not ``selection``.
  """
  if not isinstance(name, str) or name not in CRITERIA:
    raise ValueError(f'criterion is {name!r}; expected one of {sorted(CRITERIA)}')
  criterion = CRITERIA[name]
  if selection is not None and criterion.selection != selection:
    fitting = sorted(c.name for c in CRITERIA.values() if c.selection == selection)
    raise ValueError(
      f'criterion {name!r} selects by {criterion.selection}, not by {selection}; '
      f'criteria that select by {selection}: {fitting}'
    )
  return criterion


def magnitude(weights: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
  """``|w|``: the magnitude criterion of Han et al. 2015 (§3)."""
  del rng
  return np.abs(weights)


def uniform(weights: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
  """Uniform random scores: pruning blind to the weights' values."""
  return rng.random(weights.size).reshape(weights.shape)


register_criterion('sparsity', magnitude, selection='count')
register_criterion('quality', magnitude, selection='threshold')
register_criterion('random', uniform, selection='count', random=True)


def _scores(
  criterion: Criterion, name: str, weights: np.ndarray, entropy: list[int] | None
) -> np.ndarray:
  """The criterion's float64 scores of one layer, checked."""
  rng = None
  if criterion.random:
    # crc32, unlike hash(), is the same in every process: the same key gives the
    # same mask on every machine, and two layers never share a stream.
    rng = np.random.default_rng(np.random.SeedSequence([*entropy, zlib.crc32(name.encode())]))
  scores = np.asarray(criterion.score(weights.astype(np.float64), rng), dtype=np.float64)
  if scores.shape != weights.shape:
    raise ValueError(
      f'criterion {criterion.name!r} scored {name!r} with shape {scores.shape}; '
      f"expected the weights' shape {weights.shape}"
    )
  if not np.isfinite(scores).all():
    raise ValueError(f'criterion {criterion.name!r} gave {name!r} non-finite scores')
  return scores


def _entropy(criterion: Criterion, key: Any) -> list[int] | None:
  if criterion.random and key is None:
    raise ValueError(f'criterion {criterion.name!r} draws at random: pass key=')
  if not criterion.random and key is not None:
    raise ValueError(f'criterion {criterion.name!r} does not draw at random; it takes no key')
  return _seed_entropy(key) if criterion.random else None


def quality_mask(
  params: PyTree,
  quality: PerLayer,
  *,
  criterion: str = 'quality',
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
    criterion: a registered criterion that selects by ``'threshold'``; its
      score takes the place of ``|w|``.
    std_of: ``'all'``: the standard deviation of all the layer's weights,
      pruned zeros included (the paper's literal rule); ``'kept'``: of the
      weights the current ``mask`` keeps.
    mask: the current mask. Its pruned weights stay pruned; without it the
      decision rests on the weights alone.
    pattern: which prunable layers this call prunes (regex on leaf paths).

  Returns:
    The new mask, mirroring ``params``.

  Raises:
    ValueError: a quality that is not a finite real number >= 0 (``bool``
      included); weights holding NaN or inf; a mask that does not fit the
      params; a pattern or mapping key that selects no layer. Messages name
      the layer.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[0.1, -2.0], [1.0, -0.05]])}}
    >>> quality_mask(params, 0.5)['fc']['kernel'].tolist()
    [[False, True], [True, False]]

  References:
    Han et al. 2015, §4 (threshold = quality x std of the layer's weights).
  """
  spec = get_criterion(criterion, 'threshold')
  if std_of not in ('all', 'kept'):
    raise ValueError(f"std_of is {std_of!r}; expected 'all' or 'kept'")
  base, layers = _selected_layers(params, mask, pattern)
  qualities = _per_layer(quality, list(layers), 'quality')
  new = {}
  for name, q in qualities.items():
    q = _tree.real_number(q, f'quality for {name!r}', minimum=0.0)
    weights, kept = layers[name]
    _tree.check_all_finite(name, weights)
    w = weights.astype(np.float64)
    sample = w if std_of == 'all' else w[kept]
    threshold = q * float(sample.std()) if sample.size else 0.0
    keep = _scores(spec, name, weights, None) >= threshold
    new[name] = keep & kept if mask is not None else keep
  return _rebuild(base, new)


def _prune_count(sparsity: Any, size: int, name: str) -> int:
  s = _tree.real_number(sparsity, f'sparsity for {name!r}', minimum=0.0, maximum=1.0)
  # Python's round (half to even), the count torch.nn.utils.prune uses.
  return round(s * size)


def _prune_smallest(scores: np.ndarray, count: int, already: np.ndarray) -> np.ndarray:
  """Keep-mask pruning ``count`` entries: all of ``already`` first, then the lowest scores."""
  ranked = np.where(already, -np.inf, scores)
  order = np.argsort(ranked, kind='stable')
  keep = np.ones(scores.size, dtype=bool)
  keep[order[: max(count, int(already.sum()))]] = False
  return keep


def sparsity_mask(
  params: PyTree,
  sparsity: PerLayer,
  *,
  criterion: str = 'sparsity',
  key: int | Sequence[int] | jax.Array | None = None,
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """Prunes the ``round(sparsity * n)`` lowest-scoring weights of each layer: magnitude by default.

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
    criterion: a registered criterion that selects by ``'count'``
      (``'sparsity'``: magnitude).
    key: for a random criterion, as in :func:`random_mask`.
    mask: the current mask; its pruned weights stay pruned and count towards
      the target.
    pattern: which prunable layers this call prunes (regex on leaf paths).

  Returns:
    The new mask.

  Raises:
    ValueError: a sparsity that is not a real number in [0, 1] (``bool``
      included); weights holding NaN or inf; a mask that does not fit; a
      pattern or key that selects no layer.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[0.3, -0.1], [0.2, 0.4]])}}
    >>> sparsity_mask(params, 0.5)['fc']['kernel'].tolist()
    [[True, False], [False, True]]

  References:
    Han et al. 2015, §3.4 (iterative pruning: masks only shrink).
  """
  spec = get_criterion(criterion, 'count')
  entropy = _entropy(spec, key)
  base, layers = _selected_layers(params, mask, pattern)
  targets = _per_layer(sparsity, list(layers), 'sparsity')
  new = {}
  for name, s in targets.items():
    weights, kept = layers[name]
    count = _prune_count(s, weights.size, name)
    _tree.check_all_finite(name, weights)
    pruned = ~kept.reshape(-1) if mask is not None else np.zeros(weights.size, dtype=bool)
    scores = _scores(spec, name, weights, entropy).reshape(-1)
    new[name] = _prune_smallest(scores, count, pruned).reshape(weights.shape)
  return _rebuild(base, new)


def global_sparsity_mask(
  params: PyTree,
  sparsity: float,
  *,
  criterion: str = 'sparsity',
  key: int | Sequence[int] | jax.Array | None = None,
  mask: PyTree | None = None,
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """Prunes the ``round(sparsity * N)`` lowest scores across selected layers: magnitude by default.

  ``N`` is the total number of weights in the selected layers; one ranking
  spans them all, so layers with many small weights lose more. The count
  matches ``torch.nn.utils.prune.global_unstructured(...,
  pruning_method=L1Unstructured, amount=sparsity)`` on dense layers.

  Args:
    params: trained params.
    sparsity: fraction in [0, 1] of all selected weights pruned after the call.
    criterion: a registered criterion that selects by ``'count'``.
    key: for a random criterion, as in :func:`random_mask`.
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
  spec = get_criterion(criterion, 'count')
  entropy = _entropy(spec, key)
  base, layers = _selected_layers(params, mask, pattern)
  sizes = [w.size for w, _ in layers.values()]
  count = _prune_count(sparsity, sum(sizes), 'the selected layers')
  for name, (weights, _) in layers.items():
    _tree.check_all_finite(name, weights)
  scores = np.concatenate(
    [_scores(spec, name, w, entropy).reshape(-1) for name, (w, _) in layers.items()]
  )
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

  The baseline for magnitude pruning: :func:`sparsity_mask` with the
  ``'random'`` criterion, so the same exact per-layer counts (the
  already-pruned weights of ``mask`` count and stay pruned; the rest of the
  count is drawn uniformly from the kept weights), but blind to the weights'
  values. The draw depends only on ``key`` and the layer's path, so the same
  key gives the same mask on every machine, and two layers never share a
  stream. Pass a different key every round.

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
    ValueError: as :func:`sparsity_mask`; a key that is not a non-negative
      int, ints or a PRNG key.

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
  return sparsity_mask(params, sparsity, criterion='random', key=key, mask=mask, pattern=pattern)


def criterion_mask(
  params: PyTree,
  criterion: str,
  target: PerLayer,
  *,
  key: int | Sequence[int] | jax.Array | None = None,
  mask: PyTree | None = None,
  std_of: Literal['all', 'kept'] = 'all',
  pattern: str | re.Pattern[str] = KERNEL_PATTERN,
) -> PyTree:
  """The mask of any registered criterion: ``target`` is a sparsity or a quality by its selection.

  What the rounds of a run and the sensitivity analysis call, so that a
  criterion registered anywhere works there unchanged.

  Examples:
    >>> import jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[0.3, -0.1], [0.2, 0.4]])}}
    >>> criterion_mask(params, 'quality', 1.0)['fc']['kernel'].tolist()  # |w| >= 0.187 (std)
    [[True, False], [True, True]]
    >>> criterion_mask(params, 'sparsity', 0.5)['fc']['kernel'].tolist()
    [[True, False], [False, True]]
  """
  spec = get_criterion(criterion)
  if spec.selection == 'threshold':
    if key is not None:
      raise ValueError(f'criterion {criterion!r} does not draw at random; it takes no key')
    return quality_mask(
      params, target, criterion=criterion, std_of=std_of, mask=mask, pattern=pattern
    )
  return sparsity_mask(params, target, criterion=criterion, key=key, mask=mask, pattern=pattern)
