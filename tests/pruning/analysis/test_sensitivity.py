"""Tests for pruning.analysis.sensitivity: one layer pruned at a time, masks swapped as data."""

import csv
import io
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import (
  SensitivityResult,
  classification_error,
  prunable_mask,
  quality_mask,
  sensitivity_analysis,
  sparsity_mask,
)

SWEEP = (0.0, 0.25, 0.5, 0.9, 1.0)


def make_params(seed=0):
  """A conv kernel, two dense kernels and biases (zero, so a layer's output is x @ W)."""
  rng = np.random.default_rng(seed)
  return {
    'conv': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 1, 2)), jnp.float32)},
    'fc1': {'kernel': jnp.asarray(rng.normal(size=(8, 6)), jnp.float32), 'bias': jnp.zeros(6)},
    'fc2': {'kernel': jnp.asarray(rng.normal(size=(6, 3)), jnp.float32), 'bias': jnp.zeros(3)},
  }


X = jnp.asarray(np.random.default_rng(1).normal(size=(5, 8)), jnp.float32)


def fc1_output(params):
  return X @ params['fc1']['kernel'] + params['fc1']['bias']


def logits(params):
  return jax.nn.relu(fc1_output(params)) @ params['fc2']['kernel'] + params['fc2']['bias']


def leaf(tree, name):
  layer, _, key = name.partition('/')
  return np.asarray(tree[layer][key])


def test_sparsity_zero_equals_the_unpruned_metric():
  params = make_params()
  metric = jax.jit(lambda p: jnp.mean(logits(p) ** 2) + jnp.sum(p['conv']['kernel'] ** 2))
  result = sensitivity_analysis(params, metric, higher_is_better=False, sweep=SWEEP)
  assert result.baseline == float(metric(params))
  for name, curve in result.curves.items():
    assert curve.metric[0] == result.baseline, name
    assert curve.sparsity[0] == 0.0, name


def test_full_sparsity_zeroes_the_layer_output_and_leaves_other_layers_alone():
  params = make_params()
  result = sensitivity_analysis(
    params,
    lambda p: float(jnp.abs(fc1_output(p)).sum()),
    higher_is_better=True,
    sweep=SWEEP,
    layers=['fc1', 'fc2/kernel'],
  )
  fc1, fc2 = result.curves['fc1/kernel'], result.curves['fc2/kernel']
  assert fc1.metric[-1] == 0.0 and fc1.sparsity[-1] == 1.0
  # Pruning fc2 never touches fc1, so its output is the unpruned one at every point.
  assert fc2.metric == (result.baseline,) * len(SWEEP)
  assert all(m > 0 for m in fc1.metric[:-1])
  assert list(result.curves) == ['fc1/kernel', 'fc2/kernel']


def test_each_point_prunes_exactly_one_layer_with_the_magnitude_criterion():
  params = make_params()
  seen = []
  sensitivity_analysis(
    params, lambda p: seen.append(jax.device_get(p)) or 0.0, higher_is_better=True, sweep=SWEEP
  )
  names = ['conv/kernel', 'fc1/kernel', 'fc2/kernel']
  assert len(seen) == 1 + len(names) * len(SWEEP)
  for name in names:
    np.testing.assert_array_equal(leaf(seen[0], name), leaf(params, name), err_msg=name)
  calls = iter(seen[1:])
  for pruned in names:
    for s in SWEEP:
      got = next(calls)
      expected_mask = leaf(sparsity_mask(params, {pruned: s}), pruned)
      np.testing.assert_array_equal(
        leaf(got, pruned), np.where(expected_mask, leaf(params, pruned), 0), err_msg=pruned
      )
      assert int((leaf(got, pruned) == 0).sum()) == round(s * leaf(params, pruned).size)
      for other in names:
        if other != pruned:
          np.testing.assert_array_equal(leaf(got, other), leaf(params, other), err_msg=other)
      for bias in ('fc1', 'fc2'):
        np.testing.assert_array_equal(got[bias]['bias'], params[bias]['bias'])


def test_measured_sparsity_and_layer_kinds():
  params = make_params()
  result = sensitivity_analysis(params, lambda p: 0.0, higher_is_better=True, sweep=(0.3, 0.5))
  conv = result.curves['conv/kernel']
  assert (conv.kind, conv.size) == ('conv', 18)
  # round(0.3 * 18) = 5 (5.4), round(0.5 * 18) = 9.
  assert conv.sparsity == (5 / 18, 9 / 18)
  assert result.curves['fc1/kernel'].kind == 'fc'
  assert result.curves['fc1/kernel'].point == (0.3, 0.5)


def test_quality_sweep_records_the_quality_rule_sparsity():
  params = make_params()
  result = sensitivity_analysis(
    params, lambda p: 1.0, higher_is_better=True, criterion='quality', sweep=(0.0, 0.5, 1.5)
  )
  assert result.criterion == 'quality'
  for name, curve in result.curves.items():
    assert curve.point == (0.0, 0.5, 1.5)
    for q, s in zip(curve.point, curve.sparsity, strict=True):
      keep = leaf(quality_mask(params, {name: q}), name)
      assert s == (keep.size - keep.sum()) / keep.size, (name, q)


def test_starting_mask_keeps_its_pruned_weights_pruned_in_every_layer():
  params = make_params()
  start = sparsity_mask(params, 0.5)
  seen = []
  result = sensitivity_analysis(
    params,
    lambda p: seen.append(jax.device_get(p)) or 0.0,
    higher_is_better=True,
    sweep=(0.0, 0.75),
    mask=start,
  )
  for got in seen:
    for name in result.curves:
      assert not leaf(got, name)[~leaf(start, name)].any(), name
  # A target below the current sparsity prunes nothing more; the 0.75 target counts the 50 %.
  fc1 = result.curves['fc1/kernel']
  assert fc1.sparsity == (0.5, 0.75)


def test_nnx_model_sweep_compiles_nothing_after_the_first_point(compile_counter, small_cnn):
  params = nnx.state(small_cnn, nnx.Param)
  images = np.random.default_rng(0).normal(size=(30, 2, 2, 1)).astype(np.float32)
  labels = np.arange(30) % 5
  error = classification_error(small_cnn, images, labels, batch_size=8)
  counts = []

  def metric(p):
    counts.append(compile_counter.count)
    return error(p)

  result = sensitivity_analysis(
    params, metric, higher_is_better=False, sweep=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
  )
  assert list(result.curves) == ['conv/kernel', 'fc/kernel']
  assert len(counts) == 13
  # counts[i] is read before call i: the first call compiles the metric, and
  # from the second call to the end of the sweep no compile happens at all.
  assert counts[1] > counts[0]
  assert counts[1:] == [compile_counter.count] * 12, counts
  assert result.curves['conv/kernel'].metric[0] == result.baseline


def test_json_and_csv_round_trip(tmp_path):
  params = make_params()
  result = sensitivity_analysis(
    params,
    jax.jit(lambda p: jnp.mean(logits(p))),
    higher_is_better=True,
    sweep=(0.0, 0.5),
    metric_name='mean logit, test',
  )
  text = result.to_json(tmp_path / 'curves.json')
  assert SensitivityResult.from_json(text) == result
  assert SensitivityResult.from_json((tmp_path / 'curves.json').read_text()) == result
  assert json.loads(text)['curves'][0]['layer'] == 'conv/kernel'
  rows = list(csv.reader(io.StringIO(result.to_csv(tmp_path / 'curves.csv'))))
  assert rows[0] == [
    'layer',
    'kind',
    'size',
    'target_sparsity',
    'sparsity',
    'mean logit, test',
    'degradation',
  ]
  assert len(rows) == 1 + 3 * 2
  layer, kind, size, point, sparsity, metric, drop = rows[4]
  curve = result.curves['fc1/kernel']
  assert (layer, kind, int(size), float(point)) == ('fc1/kernel', 'fc', 48, 0.5)
  assert float(sparsity) == 0.5
  assert float(metric) == curve.metric[1]
  assert float(drop) == pytest.approx(result.baseline - curve.metric[1])
  assert sorted(p.name for p in tmp_path.iterdir()) == ['curves.csv', 'curves.json']
  assert '| fc1 | fc | 48 |' in result.to_markdown()


def test_plot_draws_conv_solid_and_fc_dashed(tmp_path):
  params = make_params()
  result = sensitivity_analysis(params, lambda p: 1.0, higher_is_better=True, sweep=(0.0, 0.5))
  fig = result.plot(tmp_path / 'fig6.png')
  styles = {line.get_label(): line.get_linestyle() for line in fig.axes[0].get_lines()}
  assert styles == {'conv (CONV)': '-', 'fc1 (FC)': '--', 'fc2 (FC)': '--', 'unpruned': ':'}
  assert 0 < (tmp_path / 'fig6.png').stat().st_size < 150_000


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    ({'layers': ['fc9']}, "layer 'fc9' names no prunable layer"),
    ({'layers': ['fc1/bias']}, "layer 'fc1/bias' names no prunable layer"),
    ({'sweep': (0.0, 1.5)}, r'sparsity in the sweep is 1.5; expected a value in \[0, 1\]'),
    ({'sweep': (-0.1,)}, r'sparsity in the sweep is -0.1; expected a value in \[0, 1\]'),
    ({'sweep': (math.nan,)}, r'sparsity in the sweep is nan'),
    ({'sweep': ()}, 'expected a non-empty sequence'),
    (
      {'sweep': (1.0, -2.0), 'criterion': 'quality'},
      'quality in the sweep is -2.0; expected a finite number >= 0',
    ),
    ({'criterion': 'magnitude'}, r"criterion is 'magnitude'; expected one of \['quality', "),
    ({'criterion': 'random'}, "criterion 'random' draws at random: pass key="),
    ({'sweep': (True, 0.5)}, 'sparsity in the sweep is True'),
  ],
)
def test_bad_input_is_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    sensitivity_analysis(make_params(), lambda p: 0.0, higher_is_better=True, **kwargs)


def test_non_finite_metric_names_the_layer_and_point():
  params = make_params()

  def metric(p):
    return math.nan if not np.asarray(p['fc2']['kernel']).all() else 1.0

  with pytest.raises(ValueError, match=r"returned nan with 'fc2/kernel' pruned at sparsity 0.5"):
    sensitivity_analysis(params, metric, higher_is_better=True, sweep=(0.0, 0.5))


def test_mask_that_does_not_fit_is_rejected():
  params = make_params()
  bad = prunable_mask(params)
  bad['fc1']['kernel'] = jnp.ones((8, 5), bool)
  with pytest.raises(ValueError, match=r"mask leaf 'fc1/kernel' has shape \(8, 5\)"):
    sensitivity_analysis(params, lambda p: 0.0, higher_is_better=True, mask=bad)
