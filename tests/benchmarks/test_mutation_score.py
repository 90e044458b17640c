"""The mutation results are tabulated from the verdict records kept in the repository."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'mutation_score.py'


@pytest.fixture
def mutation(monkeypatch, tmp_path):
  spec = importlib.util.spec_from_file_location('mutation_score', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  monkeypatch.setitem(sys.modules, 'mutation_score', module)  # its dataclasses look it up
  spec.loader.exec_module(module)
  monkeypatch.setattr(module, 'RECORDS', tmp_path / 'records')
  return module


def _verdict(line, operator, worker='normal', test='killed', occurrence=0):
  return {
    'operator': operator,
    'occurrence': occurrence,
    'start': [line, 4],
    'end': [line, 9],
    'worker_outcome': worker,
    'test_outcome': test,
  }


def test_a_record_gives_the_counts_the_score_and_the_survivors(mutation, tmp_path):
  module = mutation.MODULES['rounds']
  source = (SCRIPT.parents[1] / module.path).read_text().splitlines()
  # A line with an explained (equivalent) mutant, and another line with none.
  equivalent = next(i for i, text in enumerate(source, 1) if "selection == 'threshold'" in text)
  other = next(i for i, text in enumerate(source, 1) if text.strip().startswith('def prune_round'))
  commit = mutation._commit()
  record = {
    'module': module.path,
    'fingerprint': mutation.fingerprint(module),
    'tests': list(module.tests),
    'commit': commit,
    'in_annotations': 1,
    'wall_s': 120.0,
    'carried': 2,
    'mutants': [
      _verdict(other, 'core/NumberReplacer'),
      _verdict(other, 'core/NumberReplacer', occurrence=1),
      _verdict(other, 'core/AddNot', worker='timeout', test=None),
      _verdict(other, 'core/ReplaceAndWithOr', worker='skipped', test=None),
      _verdict(other, 'core/ZeroIterationForLoop', test='survived'),
      _verdict(equivalent, 'core/ReplaceComparisonOperator_Eq_GtE', test='survived'),
      _verdict(other, 'core/ReplaceOrWithAnd', worker=None, test=None),
    ],
  }
  path = mutation._record_path(module, record['fingerprint'])
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps(record))
  rows, survivors = mutation.summarise([module, mutation.MODULES['schedule']], tmp_path / 'work')
  row = rows[0]
  assert (row['killed'], row['timeout'], row['skipped'], row['pending']) == (2, 1, 1, 1)
  assert (row['survived'], row['equivalent']) == (1, 1)
  assert row['score'] == pytest.approx(3 / 4)  # killed + timeout over killed + timeout + survived
  assert rows[1] == {'module': mutation.MODULES['schedule'], 'missing': True}
  (why,) = [s['why'] for s in survivors if s['line_number'] == equivalent]
  assert "only 'threshold' is >= 'threshold'" in why
  (missing,) = [s for s in survivors if s['why'] is None]
  assert missing['line_number'] == other and missing['operator'] == 'core/ZeroIterationForLoop'
  out = tmp_path / 'score.md'
  text = mutation.write_results(rows, survivors, ['benchmarks/mutation_score.py'], out)
  assert out.read_text() == text
  assert (
    f'| `pruning/rounds.py` | round logic | `test_rounds.py` | `{record["fingerprint"]}` | 6 (1 pending) |'
    in text
  )
  # Pending mutants and a module not run (schedule) leave the group's verdict open.
  assert (
    '- **round logic**: 3 of 4 killed, 75.0% (incomplete: 1 mutants pending, 1 modules not run)'
  ) in text
  assert f'`pruning/rounds.py:{other}`' in text and '**not explained: a test is missing**' in text
  assert f'sessions run at commit(s): `{commit}`' in text


def test_a_record_of_another_version_is_not_counted(mutation, tmp_path):
  module = mutation.MODULES['rounds']
  path = mutation._record_path(module, '000000000000')
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps({'commit': 'x', 'mutants': []}))
  rows, _ = mutation.summarise([module], tmp_path / 'work')
  assert rows == [{'module': module, 'missing': True}]


def test_a_complete_group_meets_or_misses_the_target(mutation, tmp_path):
  module = mutation.MODULES['rounds']
  rows = [
    {
      'module': module,
      'killed': 9,
      'timeout': 0,
      'survived': 1,
      'equivalent': 0,
      'incompetent': 0,
      'skipped': 0,
      'pending': 0,
      'score': 0.9,
      'commit': 'abc',
      'wall_s': 60.0,
      'carried': 0,
    }
  ]
  text = mutation.write_results(rows, [], ['x'], tmp_path / 'a.md')
  assert '- **round logic**: 9 of 10 killed, 90.0% (meets the target)' in text
  rows[0] |= {'killed': 8, 'survived': 2, 'score': 0.8}
  text = mutation.write_results(rows, [], ['x'], tmp_path / 'b.md')
  assert '- **round logic**: 8 of 10 killed, 80.0% (MISSES the target)' in text


def test_tests_that_fail_on_the_unmutated_code_stop_the_run(mutation, tmp_path, monkeypatch):
  # Every mutant of such a module would count as killed: the run must not start.
  (tmp_path / 'test_ok.py').write_text('def test_ok():\n  assert True\n')
  (tmp_path / 'test_broken.py').write_text('def test_broken():\n  assert 1 == 2\n')
  python = sys.executable
  monkeypatch.setattr(
    mutation,
    '_test_command',
    lambda module, *_, **__: f'{python} -m pytest -q -p no:cacheprovider {module.tests[0]}',
  )
  # Not the team's lock: the suite itself may run under it.
  monkeypatch.setattr(mutation, 'HEAVY_LOCK', str(tmp_path / 'heavy.lock'))
  seconds = mutation.check_baseline(mutation.Module('x', ('test_ok.py',), 'core'), tmp_path)
  assert 0 < seconds < 60
  with pytest.raises(SystemExit, match=r'^x: its tests fail on the unmutated code \(exit 1\)'):
    mutation.check_baseline(mutation.Module('x', ('test_broken.py',), 'core'), tmp_path)
