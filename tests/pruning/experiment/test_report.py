"""Tests for pruning.experiment.report.write_and_print: the end of every pruning script."""

import json

import jax.numpy as jnp
import pytest

from pruning import choose_thresholds, sensitivity_analysis
from pruning.experiment import report

ROWS = [report.LayerRow('fc1', 1000, 100, 2000, 200), report.LayerRow('fc2', 100, 50, 200, 100)]
RECORDS = [
  {
    'event': 'round_end',
    'round': 0,
    'test_error': 2.0,
    'kept': 1100,
    'total': 1100,
    'compression': 1.0,
  },
  {
    'event': 'round_end',
    'round': 1,
    'test_error': 2.5,
    'kept': 150,
    'total': 1100,
    'compression': 1100 / 150,
  },
]


def test_writes_the_reports_and_prints_the_table_and_final_line(tmp_path, capsys):
  paths = report.write_and_print(tmp_path, ROWS, RECORDS, {'command': 'x', 'seed': 0})
  assert set(paths) == {'markdown', 'json', 'plot'}
  for path in paths.values():
    assert path.exists()
  saved = json.loads((tmp_path / 'report.json').read_text())
  assert saved['total']['kept'] == 150 == sum(r.kept for r in ROWS)
  out = capsys.readouterr().out
  assert report.markdown_table(ROWS) in out
  assert 'final test error 2.50 % at 7.3x' in out
  assert 'targets chosen' not in out


def test_an_auto_sensitivity_run_prints_the_chosen_targets(tmp_path, capsys):
  params = {'a': {'kernel': jnp.arange(1.0, 11.0).reshape(2, 5)}}
  result = sensitivity_analysis(
    params, lambda p: float(p['a']['kernel'].sum()), higher_is_better=True, sweep=(0.0, 0.1, 0.2)
  )
  chosen = choose_thresholds(result, 1.0)  # losing the 1 is within budget, the 2 is not
  assert chosen.densities() == {'a': 0.9}
  payload = {'budget': 6.0, 'thresholds': chosen.to_dict()}
  (tmp_path / 'sensitivity.json').write_text(json.dumps(payload))
  paths = report.write_and_print(tmp_path, ROWS, RECORDS, {'seed': 0}, auto_sensitivity=6.0)
  assert paths['sensitivity'] == tmp_path / 'sensitivity.json'
  out = capsys.readouterr().out
  assert 'targets chosen within 6.0 points of validation error:' in out
  assert chosen.to_markdown() in out


def test_an_auto_sensitivity_run_without_its_curves_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'sensitivity\.json'):
    report.write_and_print(tmp_path, ROWS, RECORDS, {'seed': 0}, auto_sensitivity=1.0)


def test_a_structured_run_ends_on_the_smaller_models_ratios(tmp_path, capsys):
  # Its kept/total count the masked biases and norm scales too: the smaller model's
  # parameter and MAC ratios are the ones that say what it saves.
  final = {**RECORDS[-1], 'params_ratio': 2.26, 'macs_ratio': 2.04}
  report.write_and_print(tmp_path, ROWS, [*RECORDS[:-1], final], {'command': 'x', 'seed': 0})
  out = capsys.readouterr().out
  assert 'final test error 2.50 % at 2.3x fewer parameters and 2.0x fewer MACs;' in out


def test_git_commit_is_dirty_for_changed_code_but_not_for_rewritten_results(tmp_path):
  import subprocess

  def git(*args):
    subprocess.run(
      ['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
      cwd=tmp_path,
      check=True,
      capture_output=True,
    )

  results = tmp_path / report.RESULTS_DIR / 'study.md'
  results.parent.mkdir(parents=True)
  code = tmp_path / 'code.py'
  results.write_text('before\n')
  code.write_text('x = 1\n')
  git('init', '-q')
  git('add', '.')
  git('commit', '-q', '-m', 'one')
  clean = report.git_commit(tmp_path)
  assert len(clean) >= 7 and not clean.endswith('-dirty')
  results.write_text('after\n')
  (tmp_path / 'untracked.py').write_text('y = 2\n')
  assert report.git_commit(tmp_path) == clean
  code.write_text('x = 2\n')
  assert report.git_commit(tmp_path) == clean + '-dirty'
  assert report.git_commit(tmp_path / 'nowhere') == 'unknown'
