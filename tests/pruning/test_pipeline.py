"""End-to-end tests of the prune-retrain pipeline on small subsets of real MNIST."""

from __future__ import annotations

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from pruning import pipeline, report

TINY = {
  'dense_epochs': 1,
  'rounds': 2,
  'retrain_epochs': 1,
  'train_subset': 512,
  'test_subset': 500,
  'eval_batch_size': 250,
}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  pipeline.load_data(pipeline.default_config('lenet300'), data_dir=str(path))
  return str(path)


def run(workdir, data_dir, **overrides):
  config = pipeline.default_config('lenet300', **{**TINY, **overrides})
  return pipeline.train_and_evaluate(config, workdir, data_dir=data_dir, progress=False)


def kernel_zeros(params) -> int:
  named = jax.tree_util.tree_leaves_with_path(params)
  return sum(
    int((np.asarray(leaf) == 0).sum())
    for path, leaf in named
    if 'kernel' in jax.tree_util.keystr(path, simple=True, separator='/')
  )


def test_checkpoint_holds_exactly_the_reported_zeros(tmp_path, data_dir):
  result = run(tmp_path, data_dir)
  last = result['records'][-1]
  assert last['event'] == 'round_end' and last['round'] == 2
  pruned = last['total'] - last['kept']
  assert pruned > 0
  with ocp.CheckpointManager((tmp_path / 'checkpoints').absolute()) as manager:
    assert manager.all_steps() == [0, 1, 2]
    restored = manager.restore(2, args=ocp.args.StandardRestore())
  assert kernel_zeros(restored['params']) == pruned
  assert restored['round'] == 2
  assert result['mask_stats'].overall.kept == last['kept']
  rounds = [r['round'] for r in result['records'] if r['event'] == 'round_end']
  assert rounds == [0, 1, 2]
  for line in (tmp_path / 'metrics.jsonl').read_text().splitlines():
    assert np.isfinite(json.loads(line).get('test_error', 0.0))


def test_resume_after_an_interrupted_round_reaches_the_same_masks(tmp_path, data_dir):
  reference = run(tmp_path / 'reference', data_dir)

  def interrupt(round_index, epoch):
    if round_index == 2:
      raise KeyboardInterrupt('simulated kill during round 2')

  config = pipeline.default_config('lenet300', **TINY)
  workdir = tmp_path / 'interrupted'
  with pytest.raises(KeyboardInterrupt):
    pipeline.train_and_evaluate(
      config, workdir, data_dir=data_dir, progress=False, on_epoch_end=interrupt
    )
  resumed = pipeline.train_and_evaluate(
    config, workdir, data_dir=data_dir, progress=False, resume=True
  )
  for name, leaf in jax.tree_util.tree_leaves_with_path(reference['mask']):
    other = resumed['mask']
    for key in name:
      other = other[key.key]
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(other), err_msg=str(name))
  strip = [
    {k: v for k, v in r.items() if k not in ('time', 'wall_time_s')} for r in reference['records']
  ]
  again = [
    {k: v for k, v in r.items() if k not in ('time', 'wall_time_s')} for r in resumed['records']
  ]
  assert again == strip


def test_existing_workdir_needs_resume_and_the_same_config(tmp_path, data_dir):
  run(tmp_path, data_dir, rounds=0)
  with pytest.raises(FileExistsError, match='pass resume=True'):
    run(tmp_path, data_dir, rounds=0)
  config = pipeline.default_config('lenet300', **{**TINY, 'rounds': 0, 'seed': 5})
  with pytest.raises(ValueError, match=r"differing fields: \['seed'\]"):
    pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, resume=True, progress=False)


def test_report_totals_are_the_sums_of_the_rows(tmp_path, data_dir):
  result = run(tmp_path, data_dir, rounds=1)
  rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
  paths = report.write_report(tmp_path, rows, result['records'], {'model': 'lenet300'})
  payload = json.loads(paths['json'].read_text())
  for column in ('weights', 'kept', 'flops', 'flops_kept'):
    assert payload['total'][column] == sum(layer[column] for layer in payload['layers'])
  assert payload['total']['weights'] == 266_200
  assert payload['total']['kept'] == result['mask_stats'].overall.kept
  assert [layer['layer'] for layer in payload['layers']] == ['fc1', 'fc2', 'fc3']
  assert paths['plot'].stat().st_size > 0
  assert '| **total** | 266,200 | 532,400 |' in paths['markdown'].read_text()


def test_alternating_rounds_prune_one_group_and_freeze_the_other(tmp_path, data_dir):
  config = pipeline.default_config(
    'lenet5', **{**TINY, 'train_subset': 256, 'test_subset': 250, 'alternate': True}
  )
  result = pipeline.train_and_evaluate(config, tmp_path, data_dir=data_dir, progress=False)
  pruned = [r for r in result['records'] if r['event'] == 'pruned']
  assert [r['group'] for r in pruned] == ['fc', 'conv']
  layers = result['mask_stats'].layers
  for name, density in config.density.items():
    assert layers[f'{name}/kernel'].kept == layers[f'{name}/kernel'].total - round(
      (1 - density) * layers[f'{name}/kernel'].total
    ), name


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'model': 'lenet7'}, "model is 'lenet7'"),
    ({'regularization': 'l3'}, "regularization is 'l3'"),
    ({'criterion': 'quality'}, 'needs per-layer quality values'),
    ({'batch_size': 0}, 'batch_size is 0'),
    ({'density': {'fc1': 1.5}}, r"density for 'fc1' is 1.5; expected a kept fraction in \(0, 1\]"),
    ({'density': {'fc1': 0.0}}, r"density for 'fc1' is 0.0"),
    ({'density': {'fc9': 0.1}}, r"density is given for \['fc9'\], which lenet300 does not have"),
    (
      {'model': 'lenet5', 'criterion': 'quality', 'quality': {'conv3': 1.0}},
      r"quality is given for \['conv3'\], which lenet5 does not have; "
      r"its prunable layers: \['conv1', 'conv2', 'fc1', 'fc2'\]",
    ),
    ({'criterion': 'quality', 'quality': {'fc1': -1.0}}, r"quality for 'fc1' is -1.0"),
  ],
)
def test_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    pipeline.PruneConfig(**overrides)
