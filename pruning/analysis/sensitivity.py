"""Sensitivity analysis: how much each layer can lose without retraining.

Han et al. (2015, §5, Fig. 6) prune one layer at a time at increasing rates,
measure accuracy with no retraining, and read each layer's threshold off the
curves: CONV layers turn out more sensitive than FC layers, and the first
CONV layer the most. :func:`sensitivity_analysis` does exactly that for any
model and any metric:

* every other layer keeps its current mask (the dense network's, unless a
  ``mask`` is given), and the layer under study is pruned with the library's
  own criteria: per-layer magnitude :func:`~pruning.sparsity_mask` at each
  target sparsity of the sweep, or Han's :func:`~pruning.quality_mask` at each
  quality parameter;
* the pruned params are produced by ONE jitted ``apply_mask`` that takes the
  mask as an argument. Every mask of the sweep has the same structure, shapes
  and dtype, so the whole sweep compiles it once, and a jitted ``metric_fn``
  sees arrays of identical shapes at every point and compiles once too.

The metric is any ``metric_fn(params) -> float`` (an error or an accuracy;
``higher_is_better`` says which), evaluated on params whose pruned weights
are exactly zero. :func:`pruning.analysis.evaluation.classification_error` builds one
for a flax nnx classifier and an in-memory dataset (the pipeline's LeNets on
MNIST, a VGG on a CIFAR-10 validation split). :mod:`pruning.analysis.thresholds` turns
the curves into per-layer targets.

A training script for a bigger model (``scripts/prune_vgg.py``) calls the same
three functions on its validation split after dense training::

    import pruning
    from flax import nnx

    # Any metric_fn(params) -> float works; this one keeps the split on the
    # device (fine for CIFAR-10; for ImageNet, write one that streams batches).
    error = pruning.classification_error(
      model, val_images, val_labels, batch_size=250, preprocess=normalize
    )
    curves = pruning.sensitivity_analysis(
      nnx.state(model, nnx.Param), error, higher_is_better=False,
      metric_name='validation error (%)', progress=True,
    )
    curves.to_json(workdir / 'sensitivity.json')
    curves.plot(workdir / 'sensitivity.png', title='VGG-16: sensitivity')
    chosen = pruning.choose_thresholds(curves, budget=args.auto_sensitivity)
    density = chosen.densities()  # {'conv1_1': 0.9, ..., 'fc6': 0.05}: kept fractions
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from pruning import _io, _tree, criteria, masks

PyTree = Any
MetricFn = Callable[[PyTree], float]

DEFAULT_SPARSITIES = (
  *(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
  *(0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99),
)
"""The default sweep of target sparsities (fraction of a layer's weights pruned).

Steps of 0.1 up to 0.8, then finer: past 80 % is where layers part ways and
where a threshold read off the curve decides most of the compression.
"""

DEFAULT_QUALITIES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
"""The default sweep of quality parameters (threshold = quality x std, §4)."""


@dataclasses.dataclass(frozen=True)
class LayerCurve:
  """The metric with one layer pruned, at each point of the sweep.

  Attributes:
    layer: the weight's leaf path, e.g. ``'conv1/kernel'``.
    kind: ``'conv'`` for kernels of three or more dimensions, else ``'fc'``.
    size: number of weights in the layer.
    point: the sweep value of each point: a target sparsity, or a quality.
    sparsity: the fraction of the layer's weights actually pruned there.
    metric: the metric measured there.
  """

  layer: str
  kind: Literal['conv', 'fc']
  size: int
  point: tuple[float, ...]
  sparsity: tuple[float, ...]
  metric: tuple[float, ...]


def layer_label(layer: str) -> str:
  """A leaf path without its trailing ``/kernel``: the layer's name in tables and plots.

  Examples:
    >>> layer_label('features/conv1/kernel')
    'features/conv1'
  """
  return layer.removesuffix('/kernel')


@dataclasses.dataclass(frozen=True)
class SensitivityResult:
  """Sensitivity curves of every analysed layer.

  Attributes:
    curves: leaf path -> its :class:`LayerCurve`, in params order.
    baseline: the metric with no layer pruned beyond the starting mask.
    higher_is_better: ``True`` for an accuracy, ``False`` for an error.
    metric_name: what the metric is, for tables and plot labels.
    criterion: the criterion's name (:data:`pruning.criteria.CRITERIA`).
    selection: how it selects: ``'count'`` (points are target sparsities)
      or ``'threshold'`` (points are quality parameters).
  """

  curves: dict[str, LayerCurve]
  baseline: float
  higher_is_better: bool
  metric_name: str = 'metric'
  criterion: str = 'sparsity'
  selection: criteria.Selection = 'count'

  def degradation(self, layer: str) -> np.ndarray:
    """How much worse than the baseline each point of ``layer`` is (negative: better)."""
    metric = np.asarray(self.curves[layer].metric, dtype=np.float64)
    return self.baseline - metric if self.higher_is_better else metric - self.baseline

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict; :meth:`from_dict` reads it back."""
    return {
      'metric_name': self.metric_name,
      'higher_is_better': self.higher_is_better,
      'criterion': self.criterion,
      'selection': self.selection,
      'baseline': self.baseline,
      'curves': [dataclasses.asdict(c) for c in self.curves.values()],
    }

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> SensitivityResult:
    """The result :meth:`to_dict` described."""
    curves = {}
    for c in data['curves']:
      curve = LayerCurve(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
      curves[curve.layer] = curve
    return cls(
      curves=curves,
      baseline=float(data['baseline']),
      higher_is_better=bool(data['higher_is_better']),
      metric_name=data['metric_name'],
      criterion=data['criterion'],
      # Files written before criteria were registered name only 'sparsity' or 'quality'.
      selection=data.get('selection', 'threshold' if data['criterion'] == 'quality' else 'count'),
    )

  def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
    """The result as JSON text; also written atomically to ``path`` if given."""
    text = json.dumps(self.to_dict(), indent=2) + '\n'
    if path is not None:
      _io.write_atomic(path, text)
    return text

  @classmethod
  def from_json(cls, text: str) -> SensitivityResult:
    """Reads :meth:`to_json`'s text back (``from_json(path.read_text())``)."""
    return cls.from_dict(json.loads(text))

  def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
    """One row per layer and point; also written atomically to ``path`` if given.

    Columns: ``layer, kind, size``, the sweep value (``target_sparsity`` or
    ``quality``), the measured ``sparsity``, the metric (headed by
    ``metric_name``) and its ``degradation`` from the unpruned metric.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    point = 'target_sparsity' if self.selection == 'count' else 'quality'
    writer.writerow(['layer', 'kind', 'size', point, 'sparsity', self.metric_name, 'degradation'])
    for name, c in self.curves.items():
      for row in zip(c.point, c.sparsity, c.metric, self.degradation(name).tolist(), strict=True):
        writer.writerow([name, c.kind, c.size, *(repr(float(v)) for v in row)])
    text = out.getvalue()
    if path is not None:
      _io.write_atomic(path, text)
    return text

  def to_markdown(self) -> str:
    """A table: one row per layer, one column per point of the sweep."""
    points = sorted({p for c in self.curves.values() for p in c.point})
    head = 'sparsity' if self.selection == 'count' else 'quality'
    lines = [
      f'{self.metric_name} with one layer pruned (rows) at each {head} (columns); '
      f'unpruned: {self.baseline:.4g}',
      '',
      '| layer | kind | weights | ' + ' | '.join(f'{p:g}' for p in points) + ' |',
      '|---|---|---:|' + '---:|' * len(points),
    ]
    for c in self.curves.values():
      values = dict(zip(c.point, c.metric, strict=True))
      cells = [f'{values[p]:.4g}' if p in values else '' for p in points]
      lines.append(
        f'| {layer_label(c.layer)} | {c.kind} | {c.size:,} | ' + ' | '.join(cells) + ' |'
      )
    return '\n'.join(lines)

  def plot(
    self, path: str | os.PathLike[str] | None = None, *, title: str = '', dpi: int = 100
  ) -> Any:
    """The paper's Fig. 6: the metric against % of the layer pruned, one curve per layer.

    CONV layers are solid lines, FC layers dashed; the dotted line is the
    unpruned metric. Returns the ``matplotlib.figure.Figure`` (shown inline in
    a notebook) and saves it as a PNG to ``path`` if given.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    markers = 'osd^vP*X'
    for i, c in enumerate(self.curves.values()):
      ax.plot(
        100 * np.asarray(c.sparsity),
        c.metric,
        linestyle='-' if c.kind == 'conv' else '--',
        marker=markers[i % len(markers)],
        markersize=4,
        label=f'{layer_label(c.layer)} ({c.kind.upper()})',
      )
    ax.axhline(self.baseline, color='grey', linestyle=':', linewidth=1, label='unpruned')
    ax.set_xlabel('parameters pruned away in the layer (%)')
    ax.set_ylabel(self.metric_name)
    ax.set_title(title or 'sensitivity of each layer, no retraining')
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
      fig.savefig(path, dpi=dpi)
    return fig


def _resolve_layers(base: PyTree, layers: Sequence[str] | None) -> list[str]:
  """Leaf paths of the layers to analyse; a layer may be named by its layer or leaf path."""
  prunable = [name for name, leaf in _tree.named_leaves(base) if leaf is not None]
  if layers is None:
    return prunable
  if isinstance(layers, str):
    layers = [layers]
  out = []
  for key in layers:
    matches = [n for n in prunable if n == key or n.rpartition('/')[0] == key]
    if len(matches) != 1:
      raise ValueError(
        f'layer {key!r} names {"no" if not matches else "more than one"} prunable layer; '
        f'prunable layers: {prunable}'
      )
    out.append(matches[0])
  return out


def _check_sweep(sweep: Sequence[float], selection: criteria.Selection) -> tuple[float, ...]:
  if isinstance(sweep, str) or not len(sweep):
    raise ValueError(f'sweep is {sweep!r}; expected a non-empty sequence of numbers')
  if selection == 'count':
    return tuple(
      _tree.real_number(v, 'sparsity in the sweep', minimum=0.0, maximum=1.0) for v in sweep
    )
  return tuple(_tree.real_number(v, 'quality in the sweep', minimum=0.0) for v in sweep)


def sensitivity_analysis(
  params: PyTree,
  metric_fn: MetricFn,
  *,
  higher_is_better: bool,
  sweep: Sequence[float] | None = None,
  criterion: str = 'sparsity',
  key: Any = None,
  layers: Sequence[str] | None = None,
  mask: PyTree | None = None,
  std_of: Literal['all', 'kept'] = 'all',
  metric_name: str = 'metric',
  progress: bool = False,
) -> SensitivityResult:
  """Prunes one layer at a time at each point of a sweep and records the metric.

  No retraining happens and every other layer keeps its current mask. The
  pruned params come from one jitted ``apply_mask`` whose mask is an argument,
  so the sweep compiles nothing after its first point (a jitted
  ``metric_fn`` included).

  Args:
    params: trained params (plain dicts or an nnx ``State``).
    metric_fn: ``metric_fn(params) -> float``, called with params whose
      pruned weights are exactly zero. Jit it (or the work inside it): it
      gets arrays of the same shapes at every point.
    higher_is_better: ``True`` if the metric is an accuracy, ``False`` if it
      is an error or a loss.
    sweep: target sparsities in [0, 1] for a criterion that selects by count
      (default :data:`DEFAULT_SPARSITIES`), or quality parameters >= 0 for
      one that selects by threshold (default :data:`DEFAULT_QUALITIES`).
    criterion: any registered criterion (:data:`pruning.criteria.CRITERIA`):
      ``'sparsity'`` prunes the ``round(s * n)`` smallest-magnitude weights
      (:func:`~pruning.sparsity_mask`); ``'quality'`` is Han's rule
      ``|w| < quality * std(w)`` (:func:`~pruning.quality_mask`).
    key: for a random criterion, the key of every point's draw.
    layers: layer or leaf paths to analyse (``'fc1'`` or ``'fc1/kernel'``);
      default: every prunable layer of ``mask``.
    mask: the starting mask (its pruned weights stay pruned and count);
      default: the dense mask of the default kernels.
    std_of: for a threshold criterion, as in :func:`~pruning.quality_mask`.
    metric_name: names the metric in tables and plots.
    progress: show a tqdm progress bar.

  Returns:
    A :class:`SensitivityResult`.

  Raises:
    ValueError: an unknown layer or a layer path naming several leaves; a
      sparsity outside [0, 1] or a negative quality in the sweep; an unknown
      criterion; a mask that does not fit the params; a metric that is not a
      finite number. Messages name the bad value.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = {'fc': {'kernel': jnp.array([[0.25, -2.0], [1.0, -0.5]])}}
    >>> x = jnp.ones((1, 2))
    >>> metric = jax.jit(lambda p: jnp.abs(x @ p['fc']['kernel']).sum())
    >>> result = sensitivity_analysis(params, metric, higher_is_better=True, sweep=(0, 0.5, 1))
    >>> result.baseline, result.curves['fc/kernel'].metric
    (3.75, (3.75, 3.0, 0.0))

  References:
    Han et al. 2015, §5 and Fig. 6 (sensitivity of each layer to pruning).
  """
  selection = criteria.get_criterion(criterion).selection
  if sweep is None:
    sweep = DEFAULT_SPARSITIES if selection == 'count' else DEFAULT_QUALITIES
  points = _check_sweep(sweep, selection)
  if mask is None:
    base = masks.prunable_mask(params)
  else:
    masks.check_mask(mask, params)
    # Jax bool arrays in the criteria's container, so every mask of the sweep
    # reaches the jitted function with the same type signature.
    base = _tree.map_named(
      lambda _, m: None if m is None else jnp.asarray(_tree.unbox(m), dtype=bool), mask
    )
  names = _resolve_layers(base, layers)
  weights = dict(_tree.named_leaves(params))
  apply = jax.jit(masks.apply_mask)

  def evaluate(candidate: PyTree, where: str) -> float:
    value = metric_fn(apply(params, candidate))
    try:
      value = float(value)
    except (TypeError, ValueError) as e:
      raise ValueError(f'metric_fn returned {value!r} {where}; expected a number') from e
    if not math.isfinite(value):
      raise ValueError(f'metric_fn returned {value} {where}; expected a finite number')
    return value

  baseline = evaluate(base, 'for the unpruned params')
  curves = {}
  bar = tqdm(total=len(names) * len(points), desc='sensitivity', disable=not progress, leave=False)
  with bar:
    for name in names:
      sparsities, metrics = [], []
      for point in points:
        candidate = criteria.criterion_mask(
          params, criterion, {name: point}, key=key, mask=base, std_of=std_of
        )
        leaf = dict(_tree.named_leaves(candidate))[name]
        # Counted on the host: an eager jnp op would compile once per new layer shape.
        sparsities.append((leaf.size - np.count_nonzero(np.asarray(leaf))) / leaf.size)
        metrics.append(evaluate(candidate, f'with {name!r} pruned at {criterion} {point}'))
        bar.update()
      shape = np.shape(_tree.unbox(weights[name]))
      curves[name] = LayerCurve(
        layer=name,
        kind='conv' if len(shape) > 2 else 'fc',
        size=math.prod(shape),
        point=points,
        sparsity=tuple(sparsities),
        metric=tuple(metrics),
      )
  return SensitivityResult(
    curves=curves,
    baseline=baseline,
    higher_is_better=higher_is_better,
    metric_name=metric_name,
    criterion=criterion,
    selection=selection,
  )
