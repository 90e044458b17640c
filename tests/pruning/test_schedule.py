"""The run's schedules against formulas written out here: cosine rates, round fractions, targets."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from pruning import schedule


def _cosine(peak: float, k: int, n: int) -> float:
  return peak * 0.5 * (1 + math.cos(math.pi * min(k, n) / n))


@pytest.mark.parametrize(
  ('retrain', 'scale'),
  [('rewind', 0.1), ('fine-tune', 0.1), ('fine-tune', 0.3), ('weight-rewind', 0.3)],
)
def test_learning_rate_is_a_cosine_per_phase(retrain, scale):
  peak, steps_per_epoch, dense_epochs, rounds, retrain_epochs = 0.2, 7, 3, 3, 2
  lr = schedule.learning_rate_schedule(
    peak, steps_per_epoch, dense_epochs, rounds, retrain_epochs, retrain, scale
  )
  dense = dense_epochs * steps_per_epoch
  phase = retrain_epochs * steps_per_epoch
  retrain_peak = peak * scale if retrain == 'fine-tune' else peak
  for step in range(dense + rounds * phase + 5):
    if step < dense:
      expected = _cosine(peak, step, dense)
    else:
      round_index = min((step - dense) // phase, rounds - 1)
      expected = _cosine(retrain_peak, step - dense - round_index * phase, phase)
    # Computed in float64, returned rounded to float32.
    assert lr(step) == pytest.approx(expected, rel=1e-7, abs=1e-12), step
    assert lr(step) == float(np.float32(lr(step))), step


def test_learning_rate_without_rounds_is_the_dense_cosine():
  lr = schedule.learning_rate_schedule(0.1, 10, 2, 0, 5)
  for step in (0, 5, 10, 19, 20, 30):
    assert (lr(step)) == pytest.approx(_cosine(0.1, step, 20), abs=1e-7), step


def test_learning_rate_of_empty_phases_does_not_divide_by_zero():
  # No dense epochs (a dense checkpoint) and one-step phases: still a finite schedule.
  lr = schedule.learning_rate_schedule(0.1, 4, 0, 2, 1)
  assert (lr(0)) == pytest.approx(0.1)
  assert (lr(2)) == pytest.approx(0.05, abs=1e-7)
  assert (lr(4)) == pytest.approx(0.1)
  # An empty phase counts as one step, as optax.cosine_decay_schedule(peak, 0) would
  # refuse: the rate has decayed to 0 after it.
  nothing = schedule.learning_rate_schedule(0.1, 4, 0, 0, 1)
  assert [nothing(step) for step in (0, 1, 5)] == [pytest.approx(0.1), 0.0, 0.0]


def test_learning_rate_names_a_wrong_schedule():
  with pytest.raises(
    ValueError,
    match="retrain schedule is 'restart'; expected 'rewind', 'fine-tune' or 'weight-rewind'",
  ):
    schedule.learning_rate_schedule(0.1, 10, 1, 1, 1, 'restart')


def test_round_fractions_every_layer_every_round():
  for r in range(1, 6):
    group, fractions = schedule.round_fractions(['a', 'b'], 5, r)
    assert group == 'all'
    assert fractions == {'a': r / 5, 'b': r / 5}


def test_round_fractions_alternate_fc_odd_conv_even():
  groups = {'fc': ['fc1', 'fc2'], 'conv': ['conv1']}
  layers = ['conv1', 'fc1', 'fc2']
  expected = {
    1: ('fc', {'fc1': 1 / 3, 'fc2': 1 / 3}),
    2: ('conv', {'conv1': 1 / 2}),
    3: ('fc', {'fc1': 2 / 3, 'fc2': 2 / 3}),
    4: ('conv', {'conv1': 1.0}),
    5: ('fc', {'fc1': 1.0, 'fc2': 1.0}),
  }
  for r, (group, fractions) in expected.items():
    assert schedule.round_fractions(layers, 5, r, groups) == (group, pytest.approx(fractions)), r


@pytest.mark.parametrize('groups', [{'fc': ['fc1'], 'conv': []}, {'fc': [], 'conv': ['c']}, {}])
def test_round_fractions_with_one_group_prune_everything_each_round(groups):
  assert schedule.round_fractions(['fc1', 'c'], 2, 1, groups) == ('all', {'fc1': 0.5, 'c': 0.5})


@pytest.mark.parametrize('round_index', [0, 4, -1])
def test_round_fractions_rejects_rounds_outside_the_run(round_index):
  with pytest.raises(ValueError, match=rf'round_index is {round_index}; expected 1\.\.3'):
    schedule.round_fractions(['fc1'], 3, round_index)


def test_round_targets_fall_geometrically_to_the_final_density():
  final = {'fc1': 0.01, 'fc2': 0.5, 'fc3': 1.0}
  for r in range(1, 5):
    targets = schedule.round_targets(final, 4, r)
    assert targets == pytest.approx({name: d ** (r / 4) for name, d in final.items()}, rel=1e-15)
  # Each round removes the same fraction of the survivors.
  kept = [schedule.round_targets({'fc1': 0.01}, 4, r)['fc1'] for r in range(1, 5)]
  ratios = [b / a for a, b in zip([1.0, *kept], kept, strict=False)]
  assert ratios == pytest.approx([ratios[0]] * 4)
  assert kept[-1] == pytest.approx(0.01, rel=1e-15)


def test_round_targets_alternate():
  groups = {'fc': ['fc1'], 'conv': ['conv1']}
  final = {'fc1': 0.04, 'conv1': 0.25}
  assert schedule.round_targets(final, 4, 1, groups) == pytest.approx({'fc1': 0.2})
  assert schedule.round_targets(final, 4, 2, groups) == pytest.approx({'conv1': 0.5})
  assert schedule.round_targets(final, 4, 4, groups) == pytest.approx({'conv1': 0.25})


@pytest.mark.parametrize('density', [0.0, -0.1, 1.5, float('nan')])
def test_round_targets_reject_a_density_outside_0_1(density):
  with pytest.raises(ValueError, match=rf"final kept fraction for 'fc1' is {density}"):
    schedule.round_targets({'fc1': density}, 2, 1)


def test_round_qualities_rise_linearly_to_the_final_quality():
  final = {'fc1': 2.0, 'fc2': 0.0}
  for r in range(1, 4):
    assert schedule.round_qualities(final, 3, r) == pytest.approx({'fc1': 2.0 * r / 3, 'fc2': 0.0})
  groups = {'fc': ['fc1'], 'conv': ['conv1']}
  both = {'fc1': 2.0, 'conv1': 0.5}
  assert schedule.round_qualities(both, 4, 3, groups) == {'fc1': 2.0}
  assert schedule.round_qualities(both, 4, 2, groups) == {'conv1': 0.25}


@pytest.mark.parametrize('quality', [-0.5, float('inf'), float('nan')])
def test_round_qualities_reject_a_quality_that_is_not_finite_and_non_negative(quality):
  with pytest.raises(ValueError, match=rf"final quality for 'fc1' is {quality}"):
    schedule.round_qualities({'fc1': quality}, 2, 1)


def test_each_phase_ends_at_zero_even_when_it_is_one_step_long():
  # 1 step per epoch, 1 dense epoch, 1 round of 1 epoch: both phases are one step long.
  rate = schedule.learning_rate_schedule(0.1, 1, 1, 1, 1)
  assert [rate(step) for step in (0, 1, 2)] == [np.float32(0.1), np.float32(0.1), 0.0]
  # A step before the first is clamped to it: the peak, not a rate past the cosine's start.
  assert rate(-1) == rate(0)


def test_rounds_without_retraining_have_a_rate_and_no_division_by_zero():
  rate = schedule.learning_rate_schedule(0.1, 10, 2, 2, 0)
  assert rate(20) == np.float32(0.1)  # the dense schedule ended; rounds of 0 steps follow


def test_a_schedule_name_built_at_run_time_is_the_same_schedule():
  # Names read from a config.json or a command line are new string objects, not the
  # interned literals: they must compare by value.
  rewind = ''.join(['re', 'wind'])
  built = schedule.learning_rate_schedule(0.1, 10, 2, 2, 1, retrain=rewind, retrain_lr_scale=0.5)
  literal = schedule.learning_rate_schedule(0.1, 10, 2, 2, 1, retrain='rewind')
  assert [built(step) for step in range(0, 41, 5)] == [literal(step) for step in range(0, 41, 5)]


@pytest.mark.parametrize('retrain', ['rewind', 'fine-tune'])
def test_warmup_scales_the_first_dense_steps_linearly_and_nothing_else(retrain):
  peak, steps_per_epoch, dense_epochs, rounds, retrain_epochs, warmup = 0.2, 7, 3, 2, 2, 5
  plain = schedule.learning_rate_schedule(
    peak, steps_per_epoch, dense_epochs, rounds, retrain_epochs, retrain
  )
  warm = schedule.learning_rate_schedule(
    peak, steps_per_epoch, dense_epochs, rounds, retrain_epochs, retrain, warmup_steps=warmup
  )
  dense = dense_epochs * steps_per_epoch
  for step in range(dense + rounds * retrain_epochs * steps_per_epoch + 3):
    if step < warmup:
      expected = _cosine(peak, step, dense) * (step + 1) / warmup
      assert warm(step) == pytest.approx(expected, rel=1e-7), step
      assert warm(step) < plain(step) or step == warmup - 1, step
    else:  # from the warm-up's end on, and in every retraining phase: no scaling
      assert warm(step) == plain(step), step
  assert warm(-1) == warm(0)  # a step before the first is clamped to it


def test_warmup_longer_than_the_dense_phase_stops_with_it():
  warm = schedule.learning_rate_schedule(0.1, 2, 1, 1, 1, warmup_steps=10)
  assert warm(1) == np.float32(0.1 * 0.5 * (1 + math.cos(math.pi / 2)) * 2 / 10)
  assert warm(2) == np.float32(0.1)  # the round's rewound peak, not warmed up


@pytest.mark.parametrize('warmup', [-1, 1.5, True, '3'])
def test_warmup_steps_must_be_a_count(warmup):
  with pytest.raises(ValueError, match=rf'warmup_steps is {re.escape(repr(warmup))}; expected'):
    schedule.learning_rate_schedule(0.1, 10, 1, 1, 1, warmup_steps=warmup)


@pytest.mark.parametrize('name', ['fine-tune', 'weight-rewind'])
def test_every_schedule_name_built_at_run_time_is_the_same_schedule(name):
  built = ''.join(name)  # a new string object, as json or argparse give
  assert built is not name
  one = schedule.learning_rate_schedule(0.1, 10, 2, 2, 1, retrain=built, retrain_lr_scale=0.5)
  other = schedule.learning_rate_schedule(0.1, 10, 2, 2, 1, retrain=name, retrain_lr_scale=0.5)
  assert [one(step) for step in range(0, 41, 5)] == [other(step) for step in range(0, 41, 5)]
  assert one(20) == float(np.float32(0.05 if name == 'fine-tune' else 0.1))
