"""Tests for pruning.experiment.run_dir: the one definition of a run directory's layout."""

from __future__ import annotations

import pathlib

import pytest

from pruning.experiment.run_dir import RunDir

# The layout the README, the scripts' help and existing run directories rely on.
LAYOUT = {
  'config': 'config.json',
  'metrics': 'metrics.jsonl',
  'checkpoints': 'checkpoints',
  'epoch_checkpoint': 'epoch_checkpoint',
  'rewind_point': 'rewind_point',
  'sensitivity_json': 'sensitivity.json',
  'sensitivity_csv': 'sensitivity.csv',
  'sensitivity_png': 'sensitivity.png',
  'report_md': 'report.md',
  'report_json': 'report.json',
  'error_vs_kept': 'error_vs_kept.png',
  'provenance': 'provenance.json',
  'sparse_model': 'model.jpsparse',
  'pruned_model': 'pruned',
}


def test_every_file_of_the_layout_lies_in_the_run_directory(tmp_path):
  run = RunDir(tmp_path / 'run')
  names = sorted(name for name, value in vars(RunDir).items() if isinstance(value, property))
  assert names == sorted(LAYOUT)
  for name, file_name in LAYOUT.items():
    assert getattr(run, name) == tmp_path / 'run' / file_name, name
  assert run.round_checkpoint(3) == tmp_path / 'run' / 'checkpoints' / '3'


def test_a_run_dir_takes_a_string_and_is_a_frozen_value(tmp_path):
  run = RunDir(str(tmp_path))
  assert isinstance(run.path, pathlib.Path)
  assert run == RunDir(tmp_path) and hash(run) == hash(RunDir(tmp_path))
  with pytest.raises(AttributeError):
    run.path = tmp_path / 'other'


@pytest.mark.parametrize('made', ['config', 'checkpoints', None])
def test_a_run_has_started_once_it_has_a_config_or_a_checkpoint(tmp_path, made):
  run = RunDir(tmp_path)
  (tmp_path / 'metrics.jsonl').write_text('')  # a log alone is no run
  if made == 'config':
    run.config.write_text('{}')
  elif made == 'checkpoints':
    run.round_checkpoint(0).mkdir(parents=True)
  assert run.holds_run() == (made is not None)
