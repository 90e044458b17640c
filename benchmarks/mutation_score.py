"""Mutation score of the core and the round logic: cosmic-ray, one module at a time.

A mutation tester changes the code on purpose (``<`` to ``<=``, ``+`` to
``-``, a number to another, a condition negated, ...) and runs the module's
own tests once per change; a change the tests do not notice "survives".
Each module of :data:`MODULES` is mutated with only its own tests (its
``tests/pruning/test_*.py`` and its doctests), so a mutant is judged by the
tests written for that concept and a module's run fits on 2 CPU cores.

cosmic-ray edits the source files in place, so the runs happen in a scratch
clone of this checkout's ``HEAD`` (``--work``), never in the checkout
itself; every test command takes the team's heavy-job lock
(``flock /tmp/heavy.lock``) when ``flock`` exists, so do not run this script
itself under that lock (its tests would wait for it forever). The time limit
of a mutant's test run (:func:`mutant_timeout`: a few times the unmutated
run's) starts once the lock is held: time spent waiting for another job never
turns a mutant into a timeout. A session is kept per
module version (its fingerprint), so a killed invocation continues where it
stopped, and every run writes the session's verdicts to a small record in the
repository (``benchmarks/results/mutation/<module>-<fingerprint>.json``): the
results table is built from the records, and a new machine continues from them
instead of starting over.
Before a session runs any mutant, the module's tests run once on the
unmutated clone (:func:`check_baseline`): tests that fail there would count
every mutant as killed, so the run stops instead; their time sets the
mutants' limit.
Surviving mutants are listed with the line they change; the ones that cannot
change behaviour (equivalent mutants) are explained, one line each, in
``benchmarks/mutation_equivalents.json`` and left out of the score.

Needs cosmic-ray (a tool, not a dependency of the package)::

  .venv/bin/pip install cosmic-ray==8.7.0
  .venv/bin/python benchmarks/mutation_score.py                 # every module (hours)
  .venv/bin/python benchmarks/mutation_score.py --modules schedule rounds
  .venv/bin/python benchmarks/mutation_score.py --write-only     # table from finished sessions
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import math
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any

from pruning import _io

REPO = pathlib.Path(__file__).resolve().parents[1]
EQUIVALENTS = REPO / 'benchmarks' / 'mutation_equivalents.json'
RESULTS = REPO / 'benchmarks' / 'results' / 'mutation_score.md'
# One verdict record per module version, kept in the repository: the sqlite
# sessions live in the scratch folder, which a new machine does not have.
RECORDS = REPO / 'benchmarks' / 'results' / 'mutation'
TARGET = 0.90  # the share of non-equivalent mutants the tests must kill
XLA_FLAGS = '--xla_backend_optimization_level=0'  # for the test runs (_test_command)
TEST_TIMEOUT_S = 600  # the unmutated test run's limit, once the lock is held
TIMEOUT_FACTOR = 4  # a mutant's test run may take this many times the unmutated run's
HEAVY_LOCK = '/tmp/heavy.lock'  # the team's lock for jobs that compute for long
LOCK_AND_TEST_TIMEOUT_S = 24 * 3600  # cosmic-ray's limit, which includes the wait for the lock


@dataclasses.dataclass(frozen=True)
class Module:
  """A module under mutation and the tests that judge it."""

  name: str  # pruning/<name>.py
  tests: tuple[str, ...]  # test files, relative to the repository root
  kind: str  # 'core' or 'round logic'

  @property
  def path(self) -> str:
    return f'pruning/{self.name}.py'


MODULES = {
  m.name: m
  for m in (
    Module('masks', ('tests/pruning/test_masks.py',), 'core'),
    Module('criteria', ('tests/pruning/test_criteria.py',), 'core'),
    Module('optimizer', ('tests/pruning/test_optimizer.py',), 'core'),
    Module('regularization', ('tests/pruning/test_regularization.py',), 'core'),
    Module('nm', ('tests/pruning/test_nm.py',), 'core'),
    Module('gradual', ('tests/pruning/test_gradual.py',), 'core'),
    # The private tree helpers: their own contracts in test_tree.py, and every core
    # concept's tests go through them.
    Module(
      '_tree',
      (
        'tests/pruning/test_tree.py',
        'tests/pruning/test_masks.py',
        'tests/pruning/test_optimizer.py',
        'tests/pruning/test_criteria.py',
        'tests/pruning/test_regularization.py',
      ),
      'core',
    ),
    Module('schedule', ('tests/pruning/test_schedule.py',), 'round logic'),
    Module('rounds', ('tests/pruning/test_rounds.py',), 'round logic'),
  )
}


def _run(command: list[str], cwd: pathlib.Path, **kwargs: Any) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=cwd, check=True, text=True, **kwargs)


def _commit() -> str:
  return _run(['git', 'rev-parse', '--short', 'HEAD'], REPO, capture_output=True).stdout.strip()


def fingerprint(module: Module, root: pathlib.Path = REPO) -> str:
  """A hash of everything that decides the module's mutants and their verdicts.

  The module, its test files and the shared test fixtures, as they are under
  ``root``: a session whose fingerprint matches the checkout's still holds,
  whatever else changed.
  """
  digest = hashlib.sha256()
  for path in (module.path, *module.tests, 'tests/conftest.py'):
    digest.update(path.encode() + b'\0' + (root / path).read_bytes() + b'\0')
  return digest.hexdigest()[:12]


def _dirty(module: Module) -> list[str]:
  """The module's files that differ from ``HEAD`` (the clone would not hold them)."""
  paths = [module.path, *module.tests, 'tests/conftest.py']
  out = _run(['git', 'status', '--porcelain', '--', *paths], REPO, capture_output=True).stdout
  return [line[3:] for line in out.splitlines()]


def _scratch_clone(work: pathlib.Path, commit: str) -> pathlib.Path:
  """A clone of ``commit`` in ``work/clones/<commit>/repo``, with the datasets beside it."""
  repo = work / 'clones' / commit / 'repo'
  if not (repo / '.git').exists():
    repo.parent.mkdir(parents=True, exist_ok=True)
    _run(['git', 'clone', '-q', str(REPO), str(repo)], work)
    _run(['git', 'checkout', '-q', commit], repo)
  # cosmic-ray writes each mutant into the file and puts the original back
  # afterwards; a killed run leaves its last mutant in place, and a session
  # continued on that file would judge every later mutant on top of it (four clones
  # were found so, their sessions' later verdicts void). Each run starts from the
  # commit's own files.
  _run(['git', 'reset', '-q', '--hard', commit], repo)
  shared = REPO.parent / 'shared'
  link = repo.parent / 'shared'
  if shared.exists() and not link.exists():
    link.symlink_to(shared)
  return repo


def _test_command(module: Module, timeout_s: int = TEST_TIMEOUT_S, *, locked: bool = True) -> str:
  # The clone's own package: `python -m pytest` puts the working directory first on
  # sys.path, ahead of the editable install of the checkout.
  pytest = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider']
  command = [*pytest, *module.tests, module.path]
  # coreutils' timeout ends a hung test run (a non-zero status: killed);
  # cosmic-ray's own limit, which would also count the wait for the lock, is
  # set far beyond it.
  command = ['timeout', str(timeout_s), *command]
  # XLA compiles at optimization level 0: the tests compile hundreds of small steps, and
  # gradual's run in 17 s instead of 25 s (2-core CPU). A mutant changes the program
  # XLA is given, not how it optimises it; check_baseline runs the tests so too.
  command = ['env', f'XLA_FLAGS={XLA_FLAGS}', *command]
  if locked and shutil.which('flock'):
    command = ['flock', HEAVY_LOCK, *command]
  return shlex.join(command)


def mutant_timeout(baseline_s: float) -> int:
  """Seconds a mutant's test run may take: a few times the unmutated run's, and at least a minute.

  A mutant that makes a loop endless would otherwise hold the machine for
  :data:`TEST_TIMEOUT_S`; one that only slows the tests down this much is
  caught as a timeout, which counts as killed.

  Examples:
    >>> mutant_timeout(20.4), mutant_timeout(3.0)
    (82, 60)
  """
  return max(60, math.ceil(TIMEOUT_FACTOR * baseline_s))


def check_baseline(module: Module, repo: pathlib.Path) -> float:
  """Runs the module's test command on the unmutated clone; returns its seconds, or exits.

  Every mutant whose tests fail counts as killed, so tests that fail on the
  code as it is (a broken test, a missing dataset in the clone) would score
  100 %. Each invocation checks them before it runs a mutant. The time is
  measured once the lock is held, so waiting for another job is not in it.
  """
  command = shlex.split(_test_command(module, locked=False))
  with _io.exclusive_lock(HEAVY_LOCK):  # the lock `flock` takes
    start = time.perf_counter()
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
  if done.returncode != 0:
    tail = '\n'.join((done.stdout + done.stderr).strip().splitlines()[-15:])
    raise SystemExit(
      f'{module.name}: its tests fail on the unmutated code (exit {done.returncode}), so '
      f'every mutant would count as killed; fix them first:\n{tail}'
    )
  return seconds


def _session(module: Module, work: pathlib.Path, root: pathlib.Path = REPO) -> pathlib.Path:
  return work / 'sessions' / f'{module.name}-{fingerprint(module, root)}.sqlite'


def _annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
  """``((line, column), (end line, end column))`` of every type annotation."""
  spans = []
  for node in ast.walk(ast.parse(source)):
    annotations = []
    if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
      annotations.append(node.annotation)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
      annotations.append(node.returns)
    for a in annotations:
      spans.append(((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)))
  return spans


def _skip_annotations(session: pathlib.Path, repo: pathlib.Path) -> int:
  """Marks the mutants inside type annotations as skipped; returns how many.

  Every module here starts with ``from __future__ import annotations``, so an
  annotation is never evaluated and no mutation of it can change behaviour.
  """
  from cosmic_ray.work_db import use_db
  from cosmic_ray.work_item import WorkerOutcome, WorkResult

  skipped = 0
  with use_db(str(session)) as db:
    for item in db.work_items:
      (mutation,) = item.mutations
      source = (repo / mutation.module_path).read_text()
      assert 'from __future__ import annotations' in source, mutation.module_path
      position = tuple(mutation.start_pos)
      if any(start <= position < end for start, end in _annotation_spans(source)):
        result = WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output='in an annotation')
        db.set_result(item.job_id, result)
        skipped += 1
  return skipped


def _mutant_key(mutation: Any) -> tuple:
  """Names a mutant of one module: operator, occurrence and the span it changes."""
  if isinstance(mutation, dict):
    return (
      mutation['operator'],
      int(mutation['occurrence']),
      *map(tuple, (mutation['start'], mutation['end'])),
    )
  return (
    mutation.operator_name,
    int(mutation.occurrence),
    tuple(mutation.start_pos),
    tuple(mutation.end_pos),
  )


def _record_path(module: Module, fingerprint_: str) -> pathlib.Path:
  return RECORDS / f'{module.name}-{fingerprint_}.json'


def _read_record(path: pathlib.Path) -> dict[str, Any]:
  return json.loads(path.read_text())


def export_record(module: Module, session: pathlib.Path) -> pathlib.Path:
  """Writes the session's verdicts to its record in the repository; returns the record.

  The record holds what the table needs (each mutant's operator, occurrence,
  span and outcome) and the session's provenance (commit, test time, carried
  kills); it is replaced whole, never half-written.
  """
  meta = json.loads(session.with_suffix('.json').read_text())
  mutants = []
  for m in _results(session):
    result = m['result'] or {}
    mutants.append(
      {
        'operator': m['operator_name'],
        'occurrence': m['occurrence'],
        'start': m['start_pos'],
        'end': m['end_pos'],
        'worker_outcome': result.get('worker_outcome'),
        'test_outcome': result.get('test_outcome'),
      }
    )
  record = {
    'module': module.path,
    'fingerprint': session.stem.rpartition('-')[2],
    'tests': list(module.tests),
    'commit': meta['commit'],
    'in_annotations': meta['in_annotations'],
    'wall_s': round(meta['wall_s'], 1),
    'carried': meta.get('carried', 0),
    'mutants': sorted(mutants, key=lambda m: (m['start'], m['operator'], m['occurrence'])),
  }
  path = _record_path(module, record['fingerprint'])
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_suffix('.json.partial')
  partial.write_text(json.dumps(record, indent=1) + '\n')
  partial.replace(path)
  return path


def _only_added(old: str, new: str, paths: list[str]) -> bool:
  """Whether ``paths`` went from commit ``old`` to ``new`` by added lines alone."""
  numstat = _run(
    ['git', 'diff', '--numstat', old, new, '--', *paths], REPO, capture_output=True
  ).stdout
  return all(line.split('\t')[1] == '0' for line in numstat.splitlines())


def _copy_verdicts(session: pathlib.Path, verdicts: dict[tuple, dict], source: str) -> int:
  """Sets the verdicts of ``session``'s untried mutants from ``verdicts``; returns how many."""
  from cosmic_ray.work_db import WorkDB, use_db
  from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

  copied = 0
  with use_db(str(session), WorkDB.Mode.open) as db:
    done = {job for job, _ in db.results}
    for item in db.work_items:
      verdict = verdicts.get(_mutant_key(item.mutations[0]))
      if verdict is None or item.job_id in done or verdict['worker_outcome'] is None:
        continue
      test_outcome = verdict['test_outcome']
      db.set_result(
        item.job_id,
        WorkResult(
          worker_outcome=WorkerOutcome(verdict['worker_outcome']),
          test_outcome=None if test_outcome is None else TestOutcome(test_outcome),
          output=f'from {source}',
          diff='',
        ),
      )
      copied += 1
  return copied


def resume_from_record(module: Module, session: pathlib.Path) -> dict[str, Any] | None:
  """Copies every verdict of the record of this very module version into ``session``.

  A record of the same fingerprint judged the same mutants with the same
  tests, so its verdicts stand (this is how a new machine continues a run).
  Returns the record, or None when there is none.
  """
  path = _record_path(module, session.stem.rpartition('-')[2])
  if not path.exists():
    return None
  record = _read_record(path)
  verdicts = {_mutant_key(m): m for m in record['mutants']}
  _copy_verdicts(session, verdicts, path.name)
  return record


def carry_kills(module: Module, session: pathlib.Path, commit: str) -> int:
  """Copies the killed verdicts of an earlier version's record of ``module`` into ``session``.

  Adding a test changes the module's fingerprint, so its session would
  start from nothing and re-run every mutant (about an hour for
  ``criteria``). A mutant the earlier tests killed is killed by the new ones
  too when nothing was taken away: the module's source is the same at both
  commits (so are its mutants) and its test files and ``tests/conftest.py``
  only gained lines (``git diff --numstat`` counts no deleted line). Then the
  killed verdicts are copied (a hung test run is one of them), each output naming the record
  it came from, and only the survivors and the untried mutants run again.
  Mutants that already have a verdict keep it. Returns how many verdicts
  were copied (from the earlier record with the most to give).
  """
  tests = [*module.tests, 'tests/conftest.py']
  own = _record_path(module, session.stem.rpartition('-')[2])
  best: tuple[int, pathlib.Path | None, dict] = (0, None, {})
  for earlier in sorted(RECORDS.glob(f'{module.name}-*.json')):
    if earlier == own:
      continue
    record = _read_record(earlier)
    old = record['commit']
    same_source = not _run(
      ['git', 'diff', '--name-only', old, commit, '--', module.path], REPO, capture_output=True
    ).stdout.strip()
    if not (same_source and _only_added(old, commit, tests)):
      continue
    kills = {_mutant_key(m): m for m in record['mutants'] if m['test_outcome'] == 'killed'}
    if len(kills) > best[0]:
      best = (len(kills), earlier, kills)
  _, earlier, kills = best
  return _copy_verdicts(session, kills, earlier.name) if earlier else 0


def run_module(module: Module, work: pathlib.Path, commit: str) -> pathlib.Path:
  """Runs (or continues) the module's session; returns its record in the repository."""
  dirty = _dirty(module)
  if dirty:
    raise SystemExit(f'{module.name}: commit {dirty} first (the scratch clone holds HEAD only)')
  repo = _scratch_clone(work, commit)
  # The clone's files name the session: the checkout may change while it runs.
  session = _session(module, work, repo)
  session.parent.mkdir(parents=True, exist_ok=True)
  baseline = check_baseline(module, repo)
  timeout_s = mutant_timeout(baseline)
  print(
    f'{module.name}: the unmutated tests pass in {baseline:.0f} s; a mutant gets {timeout_s} s',
    flush=True,
  )
  config = session.with_suffix('.toml')
  config.write_text(
    '[cosmic-ray]\n'
    f'module-path = "{module.path}"\n'
    f'timeout = {float(LOCK_AND_TEST_TIMEOUT_S)}\n'
    'excluded-modules = []\n'
    f'test-command = {json.dumps(_test_command(module, timeout_s))}\n'
    '[cosmic-ray.distributor]\n'
    'name = "local"\n'
  )
  meta = session.with_suffix('.json')
  cosmic_ray = pathlib.Path(sys.executable).with_name('cosmic-ray')
  if not session.exists():
    _run([str(cosmic_ray), 'init', str(config), str(session)], repo)
    skipped = _skip_annotations(session, repo)
    record = resume_from_record(module, session)
    if record is not None:  # an earlier machine's run of this version
      meta.write_text(
        json.dumps({k: record[k] for k in ('commit', 'in_annotations', 'wall_s', 'carried')})
      )
    else:
      meta.write_text(json.dumps({'commit': commit, 'in_annotations': skipped, 'wall_s': 0.0}))
  record = json.loads(meta.read_text())
  record['carried'] = record.get('carried', 0) + carry_kills(module, session, record['commit'])
  meta.write_text(json.dumps(record))
  export_record(module, session)
  started = time.perf_counter()
  _run([str(cosmic_ray), 'exec', str(config), str(session)], repo)
  record = json.loads(meta.read_text())
  record['wall_s'] += time.perf_counter() - started
  meta.write_text(json.dumps(record))
  print(f'{module.name}: session done in {record["wall_s"]:.0f} s of test runs', flush=True)
  return export_record(module, session)


def _results(session: pathlib.Path) -> list[dict[str, Any]]:
  cosmic_ray = pathlib.Path(sys.executable).with_name('cosmic-ray')
  dump = _run([str(cosmic_ray), 'dump', str(session)], session.parent, capture_output=True)
  out = []
  for line in dump.stdout.splitlines():
    job, result = json.loads(line)
    (mutation,) = job['mutations']
    out.append({**mutation, 'result': result})
  return out


def _line(commit: str, path: str, number: int) -> str:
  # From git, not the clone: a session may be running there, with a mutant in the file.
  source = _run(['git', 'show', f'{commit}:{path}'], REPO, capture_output=True).stdout
  return source.splitlines()[number - 1].strip()


def _equivalents() -> dict[str, list[dict[str, str]]]:
  return json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else {}


def _explanation(module: str, operator: str, line: str, known: dict) -> str | None:
  for entry in known.get(module, []):
    if entry['operator'] == operator and entry['line'] == line:
      return entry['why']
  return None


def summarise(modules: list[Module], work: pathlib.Path) -> tuple[list[dict], list]:
  """Per-module counts and the surviving mutants, from the records of this checkout's versions.

  A session in ``work`` for a module's current version is exported to its
  record first, so a run still under way counts as far as it got.
  """
  known = _equivalents()
  rows, survivors = [], []
  for module in modules:
    session = _session(module, work)
    if session.exists() and session.with_suffix('.json').exists():
      export_record(module, session)
    path = _record_path(module, fingerprint(module))
    if not path.exists():
      rows.append({'module': module, 'missing': True})
      continue
    record = _read_record(path)
    counts = dict.fromkeys(
      ('killed', 'timeout', 'survived', 'equivalent', 'pending', 'incompetent', 'skipped'), 0
    )
    for m in record['mutants']:
      if m['worker_outcome'] is None:
        counts['pending'] += 1
      elif m['worker_outcome'] == 'skipped':
        counts['skipped'] += 1
      elif m['worker_outcome'] == 'timeout':
        counts['timeout'] += 1
      elif m['test_outcome'] == 'killed':
        counts['killed'] += 1
      elif m['test_outcome'] == 'incompetent':
        counts['incompetent'] += 1
      else:
        line = _line(record['commit'], module.path, m['start'][0])
        why = _explanation(module.name, m['operator'], line, known)
        counts['equivalent' if why else 'survived'] += 1
        survivors.append(
          {
            'module': module.name,
            'line_number': m['start'][0],
            'line': line,
            'operator': m['operator'],
            'occurrence': m['occurrence'],
            'why': why,
          }
        )
    judged = counts['killed'] + counts['timeout'] + counts['survived']
    score = (judged - counts['survived']) / judged if judged else 0.0
    meta = {k: record[k] for k in ('commit', 'in_annotations', 'wall_s', 'carried')}
    rows.append({'module': module, **counts, 'score': score, **meta})
  return rows, survivors


def write_results(rows, survivors, argv: list[str], out: pathlib.Path) -> str:
  """The results file: per-module counts, the score per group, every survivor."""
  sys.path.insert(0, str(REPO))
  from pruning.experiment import report

  commits = sorted({row['commit'] for row in rows if 'commit' in row})
  lines = [
    '# Mutation score of the core and the round logic',
    '',
    'Written by `benchmarks/mutation_score.py` from the verdict records of its cosmic-ray',
    "sessions (`benchmarks/results/mutation/`, one per module version); every count is a record's.",
    '',
    f'- command: `{shlex.join(["python", *argv])}`',
    f'- sessions run at commit(s): {", ".join(f"`{c}`" for c in commits)} (each module in a',
    '  scratch clone; a session stands while the module, its tests and `tests/conftest.py`',
    '  are unchanged, which the fingerprint column pins)',
    f'- machine: {report.machine_description()}',
    '- tool: cosmic-ray 8.7.0, all of its core operators; each module judged by its own tests',
    f'- test runs: `XLA_FLAGS={XLA_FLAGS}` from 2026-12-01, to cut compile time (earlier'
    " sessions compiled at XLA's default level); since then each session first runs the"
    ' unmutated tests and stops if they fail. Every earlier session has a surviving mutant,'
    ' which tests failing on the unmutated code could not have left',
    f'- target: at least {TARGET:.0%} of the non-equivalent mutants killed per group',
    '',
    'A timeout counts as killed (the tests noticed: they hung; from 2026-12-01 a',
    f"mutant's test run is stopped after {TIMEOUT_FACTOR}x the unmutated run's time, at least",
    '60 s, and before that after 600 s). "Kills carried" are',
    'verdicts copied from an earlier session of the same module source whose tests',
    'only gained lines since (`carry_kills`); the test time counts only the mutants run',
    'in this session. Mutants inside type',
    'annotations are skipped: with `from __future__ import annotations` they are never',
    'evaluated. An equivalent mutant (explained below, from `benchmarks/mutation_equivalents.json`)',
    'is left out of the score.',
    '',
    '| module | group | tests | fingerprint | mutants | in annotations | killed | timeout '
    '| survived | equivalent | score | kills carried | test time |',
    '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  groups: dict[str, list[int]] = {}  # kind -> [killed, judged, pending mutants, modules not run]
  for row in rows:
    module = row['module']
    tests = ', '.join(f'`{t.rpartition("/")[2]}`' for t in module.tests)
    if row.get('missing'):
      groups.setdefault(module.kind, [0, 0, 0, 0])[3] += 1
      lines.append(
        f'| `{module.path}` | {module.kind} | {tests} | not run for this version |' + ' |' * 9
      )
      continue
    total = sum(
      row[k] for k in ('killed', 'timeout', 'survived', 'equivalent', 'incompetent', 'skipped')
    )
    pending = f' ({row["pending"]} pending)' if row['pending'] else ''
    lines.append(
      f'| `{module.path}` | {module.kind} | {tests} | `{fingerprint(module)}` | {total}{pending} | '
      f'{row["skipped"]} | {row["killed"]} | {row["timeout"]} | {row["survived"]} | '
      f'{row["equivalent"]} | {row["score"]:.1%} | {row.get("carried", 0)} | '
      f'{row["wall_s"] / 60:.0f} min |'
    )
    judged = groups.setdefault(module.kind, [0, 0, 0, 0])
    judged[0] += row['killed'] + row['timeout']
    judged[1] += row['killed'] + row['timeout'] + row['survived']
    judged[2] += row['pending']
  lines.append('')
  for kind, (killed, judged, pending, missing) in groups.items():
    score = killed / judged if judged else 0.0
    if pending or missing:
      # A partial score says nothing about the target: the untried mutants may survive.
      verdict = f'incomplete: {pending} mutants pending, {missing} modules not run'
    else:
      verdict = ('meets' if score >= TARGET else 'MISSES') + ' the target'
    lines.append(f'- **{kind}**: {killed} of {judged} killed, {score:.1%} ({verdict})')
  lines += ['', '## Surviving mutants', '']
  if not survivors:
    lines.append('None.')
  for s in sorted(survivors, key=lambda s: (s['module'], s['line_number'], s['operator'])):
    status = f'equivalent: {s["why"]}' if s['why'] else '**not explained: a test is missing**'
    lines.append(
      f'- `pruning/{s["module"]}.py:{s["line_number"]}` `{s["line"]}` '
      f'({s["operator"].removeprefix("core/")}, occurrence {s["occurrence"]}): {status}'
    )
  text = '\n'.join(lines) + '\n'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  return text


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--modules', nargs='+', choices=list(MODULES), default=list(MODULES))
  parser.add_argument(
    '--work',
    type=pathlib.Path,
    default=pathlib.Path('/tmp/pruning-mutation'),
    help='scratch folder for the clones and the sessions',
  )
  parser.add_argument('--out', type=pathlib.Path, default=RESULTS)
  parser.add_argument(
    '--write-only', action='store_true', help='only tabulate the records (and sessions) there are'
  )
  args = parser.parse_args(argv)
  if shutil.which('cosmic-ray', path=str(pathlib.Path(sys.executable).parent)) is None:
    parser.error('cosmic-ray is not installed: .venv/bin/pip install cosmic-ray==8.7.0')
  work = args.work.absolute()
  if not args.write_only:
    commit = _commit()
    for name in args.modules:
      run_module(MODULES[name], work, commit)
  rows, survivors = summarise(list(MODULES.values()), work)
  argv = ['benchmarks/mutation_score.py', *(sys.argv[1:] if argv is None else argv)]
  print(write_results(rows, survivors, argv, args.out))


if __name__ == '__main__':
  main()
