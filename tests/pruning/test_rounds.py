"""A pruning round against masks computed here from its definition (Han et al. 2015, §3.3-3.4)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from pruning import rounds

GROUPS = {'conv': ['conv1'], 'fc': ['fc1', 'fc2']}


def _params(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {
    'conv1': {'kernel': rng.normal(size=(3, 3, 2, 4)), 'bias': rng.normal(size=4)},
    'fc1': {'kernel': rng.normal(size=(40, 30)), 'bias': rng.normal(size=30)},
    'fc2': {'kernel': rng.normal(size=(30, 10)), 'bias': rng.normal(size=10)},
  }


def _settings(**overrides) -> types.SimpleNamespace:
  fields = {
    'criterion': 'sparsity',
    'density': {'conv1': 0.5, 'fc1': 0.05, 'fc2': 0.2},
    'quality': {},
    'std_of': 'all',
    'rounds': 3,
    'alternate': False,
    'seed': 0,
    'nm': None,
    'nm_dense': (),
  }
  return types.SimpleNamespace(**{**fields, **overrides})


def _keep(mask, layer) -> np.ndarray:
  return np.asarray(mask[layer]['kernel'])


def _run(params, settings, upto: int):
  """Masks after rounds 1..upto, each round starting from the previous mask."""
  mask, out = None, []
  for r in range(1, upto + 1):
    mask, group, targets = rounds.prune_round(params, mask, settings, r, GROUPS)
    out.append((mask, group, targets))
  return out


def test_layer_groups_sort_kernels_by_rank():
  params = _params()
  params['norm'] = {'scale': np.ones(4)}
  assert rounds.layer_groups(params) == GROUPS
  # A 1-D convolution's kernel has 3 dimensions; a 1-D "kernel" is neither kind.
  params['conv1d'] = {'kernel': np.ones((3, 2, 4))}
  params['gate'] = {'kernel': np.ones(4)}
  assert rounds.layer_groups(params) == {'conv': ['conv1', 'conv1d'], 'fc': ['fc1', 'fc2']}


def test_sparsity_rounds_keep_the_largest_weights_at_the_geometric_density():
  params = _params()
  settings = _settings()
  for r, (mask, group, targets) in enumerate(_run(params, settings, 3), start=1):
    assert group == 'all'
    for layer, final in settings.density.items():
      density = final ** (r / 3)
      assert targets[layer] == pytest.approx(density, rel=1e-15)
      w = np.abs(params[layer]['kernel']).reshape(-1)
      kept = w.size - round((1 - density) * w.size)
      expected = np.zeros(w.size, bool)
      expected[np.argsort(-w, kind='stable')[:kept]] = True
      np.testing.assert_array_equal(
        _keep(mask, layer).reshape(-1), expected, err_msg=f'{r} {layer}'
      )
    assert mask['fc1']['bias'] is None


def test_a_weight_pruned_once_stays_pruned():
  params = _params()
  settings = _settings(rounds=2)
  first, _, _ = rounds.prune_round(params, None, settings, 1, GROUPS)
  # The weights grow back large after round 1 (retraining); round 2 must not revive them.
  grown = {layer: dict(values) for layer, values in params.items()}
  for layer in ('conv1', 'fc1', 'fc2'):
    kernel = params[layer]['kernel'].copy()
    kernel[~_keep(first, layer)] = 100.0
    grown[layer]['kernel'] = kernel
  second, _, _ = rounds.prune_round(grown, first, settings, 2, GROUPS)
  for layer in ('conv1', 'fc1', 'fc2'):
    assert not np.any(_keep(second, layer) & ~_keep(first, layer)), layer
    size = _keep(second, layer).size
    assert _keep(second, layer).sum() == size - round((1 - settings.density[layer]) * size)


def test_quality_rounds_prune_below_quality_times_std():
  params = _params()
  final = {'conv1': 0.3, 'fc1': 1.5, 'fc2': 0.9}
  for std_of in ('all', 'kept'):
    settings = _settings(criterion='quality', quality=final, std_of=std_of, rounds=2)
    previous = {layer: np.ones(params[layer]['kernel'].shape, bool) for layer in final}
    for r, (mask, group, targets) in enumerate(_run(params, settings, 2), start=1):
      assert group == 'all'
      for layer, q in final.items():
        assert targets[layer] == pytest.approx(q * r / 2, rel=1e-15)
        w = params[layer]['kernel']
        sample = w if std_of == 'all' else w[previous[layer]]
        expected = (np.abs(w) >= q * r / 2 * sample.std()) & previous[layer]
        np.testing.assert_array_equal(_keep(mask, layer), expected, err_msg=f'{std_of} {r} {layer}')
        previous[layer] = expected
  assert all(not previous[layer].all() for layer in final)


def test_random_rounds_prune_the_same_counts_blind_to_magnitude():
  params = _params()
  magnitude = _run(params, _settings(), 3)
  random = _run(params, _settings(criterion='random'), 3)
  other_seed = _run(params, _settings(criterion='random', seed=1), 3)
  again = _run(params, _settings(criterion='random'), 3)
  for (m, _, m_targets), (rnd, _, r_targets), (o, _, _), (a, _, _) in zip(
    magnitude, random, other_seed, again, strict=True
  ):
    assert r_targets == m_targets
    for layer in ('conv1', 'fc1', 'fc2'):
      assert _keep(rnd, layer).sum() == _keep(m, layer).sum(), layer
      np.testing.assert_array_equal(_keep(a, layer), _keep(rnd, layer))
    assert not np.array_equal(_keep(rnd, 'fc1'), _keep(m, 'fc1'))
    assert not np.array_equal(_keep(rnd, 'fc1'), _keep(o, 'fc1'))
  # Each round draws afresh: round 2's new prunes are not round 1's stream again.
  first, second = _keep(random[0][0], 'fc1'), _keep(random[1][0], 'fc1')
  assert not np.any(second & ~first)


def test_alternating_rounds_prune_fc_then_conv_and_leave_the_other_group():
  params = _params()
  settings = _settings(alternate=True, rounds=4)
  results = _run(params, settings, 4)
  assert [group for _, group, _ in results] == ['fc', 'conv', 'fc', 'conv']
  assert list(results[0][2]) == ['fc1', 'fc2']
  assert results[0][2] == pytest.approx({'fc1': 0.05**0.5, 'fc2': 0.2**0.5})
  assert results[1][2] == pytest.approx({'conv1': 0.5**0.5})
  assert results[3][2] == pytest.approx({'conv1': 0.5})
  # Round 1 leaves the CONV layer whole; round 2 leaves the FC masks as round 1 left them.
  assert _keep(results[0][0], 'conv1').all()
  for layer in ('fc1', 'fc2'):
    np.testing.assert_array_equal(_keep(results[1][0], layer), _keep(results[0][0], layer))
  # Without alternate=True the groups are ignored: every layer every round.
  joint = rounds.prune_round(params, None, _settings(rounds=4), 1, GROUPS)
  assert joint[1] == 'all' and set(joint[2]) == {'conv1', 'fc1', 'fc2'}


def test_an_unknown_criterion_is_named():
  with pytest.raises(
    ValueError, match=r"criterion is 'magnitude'; expected one of \['quality', 'random'"
  ):
    rounds.prune_round(_params(), None, _settings(criterion='magnitude'), 1, GROUPS)


def test_a_selection_named_at_run_time_prunes_by_threshold(monkeypatch):
  # A criterion registered with a selection read at run time (a new string object, not
  # the interned literal) selects as the literal does.
  from pruning import criteria

  monkeypatch.setattr(criteria, 'CRITERIA', dict(criteria.CRITERIA))
  criteria.register_criterion(
    'magnitude_by_std', lambda w, rng: np.abs(w), selection=''.join(['thres', 'hold'])
  )
  params, final = _params(), {'conv1': 0.3, 'fc1': 1.5, 'fc2': 0.9}
  built = rounds.prune_round(
    params, None, _settings(criterion='magnitude_by_std', quality=final), 3, GROUPS
  )
  literal = rounds.prune_round(
    params, None, _settings(criterion='quality', quality=final), 3, GROUPS
  )
  assert built[2] == literal[2] == final
  for layer in final:
    np.testing.assert_array_equal(_keep(built[0], layer), _keep(literal[0], layer))


def _nm_reference(weights: np.ndarray, keep: int, m: int, kept: np.ndarray) -> np.ndarray:
  """Keep-mask written from the definition: per output unit (and kernel position), each
  run of ``m`` consecutive inputs keeps its ``keep`` largest |w| among the kept weights."""
  out = np.zeros(weights.shape, dtype=bool)
  w = np.moveaxis(weights, -2, 0)
  k = np.moveaxis(kept, -2, 0)
  o = np.moveaxis(out, -2, 0)  # a view: writing it writes out
  for start in range(0, w.shape[0], m):
    for index in np.ndindex(w.shape[1:]):
      block = [(start + j, *index) for j in range(m)]
      alive = [p for p in block if k[p]]
      for p in sorted(alive, key=lambda p: -abs(w[p]))[:keep]:
        o[p] = True
  return out


def test_nm_rounds_keep_fewer_of_every_m_each_round_down_to_n():
  # 2:5 over 3 rounds: round(5 * 0.4 ** (1/3)) = round(3.68) = 4, round(2.71) = 3, then 2.
  params = _params()
  settings = _settings(nm='2:5', nm_dense=('conv1',))
  mask, keeps = None, []
  for r in (1, 2, 3):
    before = mask
    mask, group, targets = rounds.prune_round(params, mask, settings, r, GROUPS)
    assert group == 'all'
    keeps.append(targets)
    for layer in ('fc1', 'fc2'):
      kept = (
        np.ones(params[layer]['kernel'].shape, bool) if before is None else _keep(before, layer)
      )
      expected = _nm_reference(params[layer]['kernel'], round(targets[layer] * 5), 5, kept)
      np.testing.assert_array_equal(_keep(mask, layer), expected, err_msg=f'{layer} round {r}')
    assert _keep(mask, 'conv1').all()
  assert keeps == [{'fc1': 0.8, 'fc2': 0.8}, {'fc1': 0.6, 'fc2': 0.6}, {'fc1': 0.4, 'fc2': 0.4}]


def test_nm_rounds_alternate_fc_and_conv():
  params = _params()
  settings = _settings(nm='1:2', alternate=True, rounds=2)
  mask, group, targets = rounds.prune_round(params, None, settings, 1, GROUPS)
  assert (group, targets) == ('fc', {'fc1': 0.5, 'fc2': 0.5})
  assert _keep(mask, 'conv1').all()
  fc_masks = {layer: _keep(mask, layer) for layer in ('fc1', 'fc2')}
  mask, group, targets = rounds.prune_round(params, mask, settings, 2, GROUPS)
  assert (group, targets) == ('conv', {'conv1': 0.5})
  expected = _nm_reference(params['conv1']['kernel'], 1, 2, np.ones((3, 3, 2, 4), bool))
  np.testing.assert_array_equal(_keep(mask, 'conv1'), expected)
  for layer, before in fc_masks.items():  # the FC round's masks are kept
    np.testing.assert_array_equal(_keep(mask, layer), before, err_msg=layer)


def test_an_nm_weight_pruned_once_stays_pruned_when_it_grows_back():
  params = _params()
  settings = _settings(nm='2:5', nm_dense=('conv1',), rounds=2)
  mask, _, _ = rounds.prune_round(params, None, settings, 1, GROUPS)
  grown = {k: {n: np.array(v) for n, v in layer.items()} for k, layer in params.items()}
  for layer in ('fc1', 'fc2'):  # every pruned weight becomes the largest of its group
    grown[layer]['kernel'][~_keep(mask, layer)] = 100.0
  new, _, _ = rounds.prune_round(grown, mask, settings, 2, GROUPS)
  for layer in ('fc1', 'fc2'):
    assert not (_keep(new, layer) & ~_keep(mask, layer)).any(), layer
    expected = _nm_reference(grown[layer]['kernel'], 2, 5, _keep(mask, layer))
    np.testing.assert_array_equal(_keep(new, layer), expected, err_msg=layer)


@pytest.mark.parametrize(
  ('m', 'dense', 'message'),
  [
    (
      4,
      (),
      r"layer 'conv1' has 2 inputs \(axis -2 of its kernel, shape \(3, 3, 2, 4\)\), not a "
      r'multiple of M=4; leave it dense \(nm_dense, --nm-dense conv1\)',
    ),
    (
      2,
      ('fc3',),
      r"nm_dense names \['fc3'\], not prunable layers; they are \['conv1', 'fc1', 'fc2'\]",
    ),
    (2, ('conv1', 'fc1', 'fc2'), r'nm_dense leaves every prunable layer dense'),
  ],
)
def test_nm_layers_refuse_what_cannot_be_grouped(m, dense, message):
  with pytest.raises(ValueError, match=message):
    rounds.nm_layers(_params(), m, dense)


def test_nm_layers_refuse_a_kernel_without_an_input_axis():
  params = {**_params(), 'scale': {'kernel': np.zeros(8)}}
  with pytest.raises(
    ValueError, match=r"layer 'scale' has a 1-D kernel \(8,\), with no input axis"
  ):
    rounds.nm_layers(params, 2)


def test_nm_layers_refuse_an_attention_kernel_whose_input_axis_is_not_minus_2():
  params = {**_params(), 'query': {'kernel': np.zeros((8, 4, 4))}}  # (in, heads, head dim)
  with pytest.raises(ValueError, match=r"layer 'query' has a 3-D kernel \(8, 4, 4\) \(attention\)"):
    rounds.nm_layers(params, 2)
  assert rounds.nm_layers(params, 2, dense=['query']) == ['conv1', 'fc1', 'fc2']


def test_nm_rounds_prune_every_layer_that_keeps_the_same_n_of_a_large_m():
  # M above 256: the layers' equal N values are distinct int objects, and each is pruned.
  rng = np.random.default_rng(0)
  params = {
    'fc1': {'kernel': rng.normal(size=(260, 3))},
    'fc2': {'kernel': rng.normal(size=(260, 2))},
  }
  settings = _settings(nm='258:260', rounds=1)
  mask, _, targets = rounds.prune_round(
    params, None, settings, 1, {'conv': [], 'fc': ['fc1', 'fc2']}
  )
  assert targets == {'fc1': 258 / 260, 'fc2': 258 / 260}
  for layer, kernel in params.items():
    expected = _nm_reference(kernel['kernel'], 258, 260, np.ones(kernel['kernel'].shape, bool))
    np.testing.assert_array_equal(_keep(mask, layer), expected, err_msg=layer)
    assert (~_keep(mask, layer)).sum() == 2 * kernel['kernel'].shape[1], layer


def test_nm_layers_name_the_inputs_of_a_dense_kernel_that_is_not_a_multiple_of_m():
  with pytest.raises(
    ValueError,
    match=r"^layer 'fc1' has 40 inputs \(axis -2 of its kernel, shape \(40, 30\)\), not a "
    r'multiple of M=3; leave it dense \(nm_dense, --nm-dense fc1\)$',
  ):
    rounds.nm_layers(_params(), 3, ('conv1',))
