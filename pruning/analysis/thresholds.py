"""Per-layer pruning targets read off sensitivity curves, from an accuracy budget.

The paper chooses each layer's quality parameter from its sensitivity curve
(Han et al. 2015, §4-5). :func:`choose_thresholds` automates the reading: given
the curves of :func:`pruning.sensitivity_analysis` and how much worse than the
unpruned network the metric may get, it picks one point of each layer's
sweep.

The rule, per layer (``mode='per-layer'``): walk the sweep from the lowest
sparsity up and stop before the first point whose degradation (metric worse
than the unpruned one, in the metric's units) exceeds the layer's budget. The
target is the last point that passed. It is always a measured point, never
interpolated between a passing and a failing one, and a noisy curve that
comes back under the budget after leaving it does not tempt the rule further.
If even the first point fails, the layer is not pruned (sparsity 0).

With ``mode='total'`` the budget is shared: the choice removes the most
weights such that the sum of the chosen points' degradations stays within it
(solved exactly, a multiple-choice knapsack over the sweep points). A point's
cost is the running maximum of its curve's degradation up to it, so a dip
never makes a point cheaper than the points before it. The curves were
measured one layer at a time, so the sum is an estimate that assumes the
layers' losses add up.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from pruning import _io, _tree
from pruning.analysis.sensitivity import SensitivityResult, layer_label

Budget = float | Mapping[str, float]

# Degradations are differences of measured floats: 1.7 - 1.6 is 0.10000000000000009.
_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class LayerThreshold:
  """The point chosen on one layer's sensitivity curve.

  Attributes:
    layer: the weight's leaf path.
    target: the sweep value chosen: a target sparsity, or a quality parameter.
    sparsity: the fraction of the layer's weights pruned at that point.
    metric: the metric measured there (the unpruned one if nothing is pruned).
    degradation: how much worse than unpruned that is.
    budget: the degradation this layer was allowed (the whole budget in
      ``mode='total'``).
  """

  layer: str
  target: float
  sparsity: float
  metric: float
  degradation: float
  budget: float


@dataclasses.dataclass(frozen=True)
class Thresholds:
  """Per-layer targets chosen from sensitivity curves."""

  layers: dict[str, LayerThreshold]  # leaf path -> chosen point
  criterion: str  # the name the curves were swept with
  mode: Literal['per-layer', 'total']
  metric_name: str
  selection: Literal['count', 'threshold'] = 'count'  # targets: sparsities or qualities

  def densities(self) -> dict[str, float]:
    """``{layer path: fraction of weights kept}``, keyed like a pipeline ``density``.

    For a criterion that selects by count the kept fraction is
    ``1 - target``, so :func:`~pruning.sparsity_mask` with ``1 - density``
    reproduces the measured point; for one that selects by threshold it is
    the measured one.
    """
    return {
      layer_label(name): 1.0 - (t.target if self.selection == 'count' else t.sparsity)
      for name, t in self.layers.items()
    }

  def qualities(self) -> dict[str, float]:
    """``{layer path: quality parameter}``; only for curves swept over quality.

    Raises:
      ValueError: if the curves were swept over target sparsities.
    """
    if self.selection != 'threshold':
      raise ValueError(
        f'the curves of criterion {self.criterion!r} were swept over sparsity; sweep with a '
        "criterion that selects by threshold (e.g. 'quality') to choose qualities"
      )
    return {layer_label(name): t.target for name, t in self.layers.items()}

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict; :meth:`from_dict` reads it back."""
    return {
      'criterion': self.criterion,
      'selection': self.selection,
      'mode': self.mode,
      'metric_name': self.metric_name,
      'layers': [dataclasses.asdict(t) for t in self.layers.values()],
    }

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
    """The choice :meth:`to_dict` described."""
    layers = {t['layer']: LayerThreshold(**t) for t in data['layers']}
    # Files written before criteria were registered name only 'sparsity' or 'quality'.
    default = 'threshold' if data['criterion'] == 'quality' else 'count'
    selection = data.get('selection', default)
    return cls(layers, data['criterion'], data['mode'], data['metric_name'], selection)

  def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
    """The choice as JSON text; also written atomically to ``path`` if given."""
    text = json.dumps(self.to_dict(), indent=2) + '\n'
    if path is not None:
      _io.write_atomic(path, text)
    return text

  def to_markdown(self) -> str:
    """One row per layer: the chosen point, its sparsity, metric and degradation."""
    head = 'target sparsity' if self.selection == 'count' else 'quality'
    lines = [
      f'| layer | {head} | % pruned | {self.metric_name} | degradation | budget |',
      '|---|---:|---:|---:|---:|---:|',
    ]
    for t in self.layers.values():
      lines.append(
        f'| {layer_label(t.layer)} | {t.target:g} | {100 * t.sparsity:.1f} | {t.metric:.4g} '
        f'| {t.degradation:.4g} | {t.budget:g} |'
      )
    return '\n'.join(lines)


def _check_budget(value: Any, what: str) -> float:
  return _tree.real_number(value, f'budget {what}'.strip(), minimum=0.0)


def _layer_budgets(result: SensitivityResult, budget: Budget) -> dict[str, float]:
  """Leaf path -> budget; a mapping may name layers by layer or leaf path."""
  names = list(result.curves)
  if not isinstance(budget, Mapping):
    value = _check_budget(budget, '')
    return dict.fromkeys(names, value)
  out = {}
  for key, value in budget.items():
    matches = [n for n in names if n == key or n.rpartition('/')[0] == key]
    if len(matches) != 1:
      raise ValueError(
        f'budget given for {key!r}, which names {"no" if not matches else "more than one"} '
        f'analysed layer; analysed layers: {names}'
      )
    out[matches[0]] = _check_budget(value, f'for {key!r} ')
  return out


def _sorted_points(result: SensitivityResult, name: str) -> list[tuple[float, float, float, float]]:
  """``(sparsity, target, metric, degradation)`` of a curve, by increasing sparsity.

  Ties in sparsity (a quality sweep below the smallest weight) keep sweep order.
  """
  curve = result.curves[name]
  rows = zip(
    curve.sparsity, curve.point, curve.metric, result.degradation(name).tolist(), strict=True
  )
  return sorted(rows, key=lambda row: row[0])


def _unpruned(result: SensitivityResult, name: str, budget: float) -> LayerThreshold:
  return LayerThreshold(name, 0.0, 0.0, result.baseline, 0.0, budget)


def _per_layer_choice(result: SensitivityResult, name: str, budget: float) -> LayerThreshold:
  chosen = _unpruned(result, name, budget)
  limit = budget + _TOLERANCE * max(1.0, abs(result.baseline))
  for sparsity, target, metric, drop in _sorted_points(result, name):
    if drop > limit:
      break
    chosen = LayerThreshold(name, target, sparsity, metric, max(drop, 0.0), budget)
  return chosen


def _total_choice(result: SensitivityResult, budget: float) -> dict[str, LayerThreshold]:
  """One point per layer, most weights removed with the summed degradations within budget.

  An exact multiple-choice knapsack: layers are added one at a time to a
  Pareto front of (degradation spent, weights removed) combinations, dropping
  any combination that spends more and removes no more than another.
  """
  limit = budget + _TOLERANCE * max(1.0, abs(result.baseline))
  front: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
  points = {name: _sorted_points(result, name) for name in result.curves}
  for name, rows in points.items():
    size = result.curves[name].size
    # Running maximum: reaching a point costs at least every point before it.
    costs = np.maximum.accumulate([max(row[3], 0.0) for row in rows]).tolist()
    options = [(0.0, 0.0, -1)] + [(costs[j], size * rows[j][0], j) for j in range(len(rows))]
    merged = [
      (cost + c, gain + g, (*choice, j))
      for cost, gain, choice in front
      for c, g, j in options
      if cost + c <= limit
    ]
    merged.sort(key=lambda item: (item[0], -item[1]))
    front = []
    for item in merged:
      if not front or item[1] > front[-1][1]:
        front.append(item)
  # The front's gains rise with cost: its last entry removes the most, at the least cost for that.
  _, _, choice = front[-1]
  chosen = {}
  for (name, rows), j in zip(points.items(), choice, strict=True):
    if j < 0:
      chosen[name] = _unpruned(result, name, budget)
    else:
      sparsity, target, metric, drop = rows[j]
      chosen[name] = LayerThreshold(name, target, sparsity, metric, max(drop, 0.0), budget)
  return chosen


def choose_thresholds(
  result: SensitivityResult,
  budget: Budget,
  *,
  mode: Literal['per-layer', 'total'] = 'per-layer',
) -> Thresholds:
  """Each layer's target sparsity (or quality) from its curve and an accuracy budget.

  Args:
    result: curves from :func:`pruning.sensitivity_analysis`.
    budget: how much worse than the unpruned metric a layer may make it, in
      the metric's units (percentage points for an error in %). A number
      applies to every layer; a mapping from layer path (``'fc1'`` or
      ``'fc1/kernel'``) sets each layer's own, and layers it leaves out are
      not pruned (absent from the result). With ``mode='total'``, one number
      for the whole network.
    mode: ``'per-layer'``: each layer within its own budget (see the module
      docstring for the rule); ``'total'``: the most weights removed with the
      sum of the layers' degradations within ``budget``.

  Returns:
    :class:`Thresholds`; ``.densities()`` feeds a pipeline's ``density``,
    ``.qualities()`` its ``quality`` (quality sweeps only).

  Raises:
    ValueError: a negative or non-finite budget, or a mapping key that names
      no analysed layer (naming it); a mapping with ``mode='total'``; an
      unknown mode.

  Examples:
    >>> from pruning.analysis.sensitivity import LayerCurve, SensitivityResult
    >>> curve = LayerCurve('fc1/kernel', 'fc', 100, point=(0.0, 0.5, 0.9),
    ...                    sparsity=(0.0, 0.5, 0.9), metric=(1.0, 1.2, 3.0))
    >>> result = SensitivityResult({'fc1/kernel': curve}, baseline=1.0, higher_is_better=False)
    >>> choose_thresholds(result, budget=0.5).densities()
    {'fc1': 0.5}

  References:
    Han et al. 2015, §4 (quality parameter per layer) and §5 (sensitivity).
  """
  if mode == 'per-layer':
    budgets = _layer_budgets(result, budget)
    layers = {name: _per_layer_choice(result, name, b) for name, b in budgets.items()}
  elif mode == 'total':
    if isinstance(budget, Mapping):
      raise ValueError("mode 'total' takes one budget for the whole network, not a mapping")
    layers = _total_choice(result, _check_budget(budget, ''))
  else:
    raise ValueError(f"mode is {mode!r}; expected 'per-layer' or 'total'")
  return Thresholds(layers, result.criterion, mode, result.metric_name, result.selection)
