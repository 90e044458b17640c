"""Tests for pruning.analysis.thresholds on curves whose right answer is known by hand."""

import json
import math

import jax.numpy as jnp
import pytest

from pruning import (
  LayerCurve,
  SensitivityResult,
  Thresholds,
  choose_thresholds,
  sensitivity_analysis,
  sparsity_mask,
)

SWEEP = tuple(k / 10 for k in range(11))


def toy_result():
  """Two layers whose weights are 1..10 and 10, 20, ..., 100; the metric is the kept |w| mass.

  Pruning the k smallest weights of 'a' loses 1 + ... + k = k (k + 1) / 2 of
  the metric, of 'b' ten times that, so the answer to any budget is known.
  """
  params = {
    'a': {'kernel': jnp.arange(1.0, 11.0).reshape(2, 5)},
    'b': {'kernel': 10 * jnp.arange(1.0, 11.0).reshape(5, 2)},
  }

  def mass(p):
    return float(jnp.abs(p['a']['kernel']).sum() + jnp.abs(p['b']['kernel']).sum())

  return sensitivity_analysis(params, mass, higher_is_better=True, sweep=SWEEP), params


def test_toy_model_per_layer_budget_picks_the_known_sparsity():
  result, params = toy_result()
  assert result.baseline == 55.0 + 550.0
  assert result.degradation('a/kernel').tolist() == [k * (k + 1) / 2 for k in range(11)]
  # Budget 6: 'a' can lose 1 + 2 + 3 (the 4th weight costs 10); 'b' cannot lose even its 10.
  chosen = choose_thresholds(result, 6.0)
  assert chosen.densities() == {'a': 0.7, 'b': 1.0}
  assert chosen.layers['a/kernel'].degradation == 6.0
  assert chosen.layers['b/kernel'].sparsity == 0.0
  assert chosen.layers['b/kernel'].metric == result.baseline
  # Per-layer budgets: 'a' loses 15 (five weights), 'b' loses 10 + 20 (two weights).
  chosen = choose_thresholds(result, {'a': 15, 'b/kernel': 30})
  assert chosen.densities() == {'a': 0.5, 'b': 0.8}
  for t in chosen.layers.values():
    assert t.degradation <= t.budget
    assert t.metric == result.baseline - t.degradation
  # The targets reproduce the measured points through the criterion.
  mask = sparsity_mask(params, {k: 1 - d for k, d in chosen.densities().items()})
  assert int(mask['a']['kernel'].sum()) == 5 and int(mask['b']['kernel'].sum()) == 8


def test_budget_zero_keeps_only_free_points_and_a_large_budget_takes_everything():
  result, _ = toy_result()
  assert choose_thresholds(result, 0).densities() == {'a': 1.0, 'b': 1.0}
  assert choose_thresholds(result, 1e9).densities() == {'a': 0.0, 'b': 0.0}


def test_mapping_leaves_unnamed_layers_out():
  result, _ = toy_result()
  assert choose_thresholds(result, {'a': 3}).densities() == {'a': 0.8}


def curve(metric, sparsity=SWEEP[:6], name='fc1/kernel', size=100):
  return LayerCurve(name, 'fc', size, tuple(sparsity), tuple(sparsity), tuple(metric))


def test_stops_at_the_first_point_over_budget_even_if_a_later_one_comes_back():
  noisy = curve([1.0, 1.1, 1.6, 1.2, 1.3, 4.0])
  result = SensitivityResult({'fc1/kernel': noisy}, baseline=1.0, higher_is_better=False)
  chosen = choose_thresholds(result, 0.5).layers['fc1/kernel']
  assert (chosen.target, chosen.metric) == (0.1, 1.1)


def test_float_rounding_at_the_budget_edge_passes():
  # 1.7 - 1.6 is 0.10000000000000009 in floats: still within a budget of 0.1.
  edge = curve([1.6, 1.7, 1.8], sparsity=(0.0, 0.5, 0.9))
  result = SensitivityResult({'fc1/kernel': edge}, baseline=1.6, higher_is_better=False)
  assert choose_thresholds(result, 0.1).densities() == {'fc1': 0.5}


def test_first_point_over_budget_means_unpruned():
  steep = curve([5.0, 9.0], sparsity=(0.5, 0.9))
  result = SensitivityResult({'fc1/kernel': steep}, baseline=1.0, higher_is_better=False)
  chosen = choose_thresholds(result, 1.0).layers['fc1/kernel']
  assert (chosen.target, chosen.sparsity, chosen.degradation) == (0.0, 0.0, 0.0)


def test_total_budget_on_the_toy_model():
  result, _ = toy_result()
  # 16 buys five weights of 'a' (cost 15); 'b''s first weight alone costs 10.
  chosen = choose_thresholds(result, 16, mode='total')
  assert chosen.densities() == {'a': 0.5, 'b': 1.0}
  assert sum(t.degradation for t in chosen.layers.values()) <= 16
  # 70: all of 'a' (55) and one weight of 'b' (10) remove 11 weights; no other
  # combination within 70 removes as many (two of 'b' cost 30, leaving 'a' 8).
  chosen = choose_thresholds(result, 70, mode='total')
  assert chosen.densities() == {'a': 0.0, 'b': pytest.approx(0.9)}
  assert sum(t.degradation for t in chosen.layers.values()) <= 70


def test_total_budget_counts_free_points_after_a_costly_one_by_the_running_maximum():
  layer_a = curve([1.0, 3.0, 1.0, 1.0], sparsity=(0.0, 0.3, 0.6, 0.9), name='a/kernel')
  layer_b = curve([1.0, 1.5, 2.5, 9.0], sparsity=(0.0, 0.3, 0.6, 0.9), name='b/kernel')
  result = SensitivityResult(
    {'a/kernel': layer_a, 'b/kernel': layer_b}, baseline=1.0, higher_is_better=False
  )
  # Reaching 'a' at 0.9 costs 2 (its running maximum), not 0: out of reach at 1.5.
  chosen = choose_thresholds(result, 1.5, mode='total')
  assert chosen.densities() == {'a': 1.0, 'b': 0.4}
  # At 2.0, 'a' at 0.9 (90 weights) beats 'b' at 0.6 (60 weights, cheaper per weight).
  chosen = choose_thresholds(result, 2.0, mode='total')
  assert chosen.densities() == {'a': pytest.approx(0.1), 'b': 1.0}


def test_quality_curves_give_qualities():
  params = {'fc': {'kernel': jnp.array([[0.1, -0.2, 0.3, -0.4, 5.0, -6.0]])}}
  result = sensitivity_analysis(
    params,
    lambda p: float(jnp.abs(p['fc']['kernel']).sum()),
    higher_is_better=True,
    criterion='quality',
    sweep=(0.0, 0.1, 0.2, 1.0),
  )
  # std = 3.09...: quality 0.1 prunes |w| < 0.31 (three weights, 0.6 lost); 0.2 prunes four.
  chosen = choose_thresholds(result, 0.7)
  assert chosen.qualities() == {'fc': 0.1}
  assert chosen.densities() == {'fc': pytest.approx(0.5)}
  with pytest.raises(
    ValueError,
    match=r"criterion 'sparsity' were swept over sparsity; sweep with a criterion that selects by threshold",
  ):
    choose_thresholds(toy_result()[0], 1).qualities()


def test_accuracy_metric_direction():
  accuracy = curve([99.0, 98.9, 98.0], sparsity=(0.0, 0.5, 0.9))
  result = SensitivityResult({'fc1/kernel': accuracy}, baseline=99.0, higher_is_better=True)
  assert choose_thresholds(result, 0.2).densities() == {'fc1': 0.5}


def test_json_round_trip_and_markdown(tmp_path):
  result, _ = toy_result()
  chosen = choose_thresholds(result, 6)
  chosen.to_json(tmp_path / 'thresholds.json')
  again = Thresholds.from_dict(json.loads((tmp_path / 'thresholds.json').read_text()))
  assert again == chosen
  assert '| a | 0.3 | 30.0 |' in chosen.to_markdown()


@pytest.mark.parametrize(
  ('budget', 'kwargs', 'message'),
  [
    (-1, {}, 'budget is -1; expected a finite number >= 0'),
    (math.inf, {}, 'budget is inf'),
    ({'a': -0.5}, {}, "budget for 'a' is -0.5"),
    ({'zzz': 1.0}, {}, "budget given for 'zzz', which names no analysed layer"),
    ({'a': 1.0}, {'mode': 'total'}, "mode 'total' takes one budget"),
    (-2, {'mode': 'total'}, 'budget is -2'),
    (1.0, {'mode': 'global'}, "mode is 'global'"),
  ],
)
def test_bad_budget_is_named(budget, kwargs, message):
  result, _ = toy_result()
  with pytest.raises(ValueError, match=message):
    choose_thresholds(result, budget, **kwargs)
