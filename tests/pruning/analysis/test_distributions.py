"""Tests for pruning.analysis.distributions: histograms of kept weights at the three stages."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pruning import plot_weight_distributions, sparsity_mask, weight_histograms


def params(seed, shape=(40, 30)):
  w = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  return {'fc1': {'kernel': jnp.asarray(w), 'bias': jnp.zeros(shape[1])}}


def test_pruned_weights_leave_a_gap_and_counts_add_up():
  dense = params(0)
  mask = sparsity_mask(dense, 0.6)
  retrained = {'fc1': {'kernel': jnp.where(mask['fc1']['kernel'], dense['fc1']['kernel'] * 1.1, 0)}}
  h = weight_histograms(dense, mask, retrained, 'fc1', bins=40)
  before, pruned, after = h['before pruning'], h['after pruning'], h['after retraining']
  assert before.counts.sum() == before.kept == before.total == 1200
  assert pruned.counts.sum() == pruned.kept == after.kept == 1200 - 720
  assert pruned.total == after.total == 1200
  np.testing.assert_array_equal(before.edges, after.edges)
  # The smallest 60 % are gone: no kept weight lies within the threshold of zero.
  threshold = np.sort(np.abs(np.asarray(dense['fc1']['kernel'])).ravel())[720]
  centres = (pruned.edges[:-1] + pruned.edges[1:]) / 2
  inner = np.abs(centres) < threshold - (pruned.edges[1] - pruned.edges[0])
  assert inner.any() and pruned.counts[inner].sum() == 0
  assert before.counts[inner].sum() > 0
  # The range covers the largest kept magnitude of any stage (here the retrained one).
  assert after.edges[-1] == pytest.approx(1.1 * np.abs(np.asarray(dense['fc1']['kernel'])).max())


def test_nnx_state_and_leaf_paths(small_cnn):
  state = nnx.state(small_cnn, nnx.Param)
  mask = sparsity_mask(state, 0.5)
  by_layer = weight_histograms(state, mask, state, 'conv')
  by_leaf = weight_histograms(state, mask, state, 'conv/kernel')
  for stage in by_layer:
    np.testing.assert_array_equal(by_layer[stage].counts, by_leaf[stage].counts)
  assert by_layer['after pruning'].kept == 13  # 27 weights, round(13.5) = 14 pruned


def test_plot_has_one_panel_per_stage(tmp_path):
  dense = params(1)
  mask = sparsity_mask(dense, 0.5)
  fig = plot_weight_distributions(weight_histograms(dense, mask, dense, 'fc1'), tmp_path / 'w.png')
  assert [ax.get_title().split('\n')[0] for ax in fig.axes] == [
    'before pruning',
    'after pruning',
    'after retraining',
  ]
  assert 0 < (tmp_path / 'w.png').stat().st_size < 150_000


def test_bad_layer_is_named():
  dense = params(2)
  mask = sparsity_mask(dense, 0.5)
  with pytest.raises(ValueError, match="layer 'fc9' is not in dense_params"):
    weight_histograms(dense, mask, dense, 'fc9')
  with pytest.raises(ValueError, match="layer 'fc1/bias' has no mask"):
    weight_histograms(dense, mask, dense, 'fc1/bias')
  with pytest.raises(ValueError, match=r'shapes \(40, 30\) \(dense\)'):
    weight_histograms(dense, mask, params(3, (40, 31)), 'fc1')
