"""The layers show in the imports: a lean core, subpackages that build on it, never the reverse.

* the core (``pruning/*.py``) imports jax, optax and numpy only;
* ``pruning.analysis``, ``pruning.sparse`` and ``pruning.structured`` build on
  the core, never on the experiment layer, the data layer or :mod:`models`;
* ``pruning.data`` knows nothing of pruning;
* ``pruning.experiment`` may import everything.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

PRUNING = pathlib.Path(__file__).resolve().parents[2] / 'pruning'

# Third-party packages only the experiment layer (and the data layer) may use.
HEAVY = ('tensorflow_datasets', 'orbax', 'grain', 'matplotlib', 'scipy', 'tqdm', 'PIL')
FORBIDDEN = {
  'core': (
    *HEAVY,
    'flax',
    'models',
    'pruning.analysis',
    'pruning.sparse',
    'pruning.structured',
    'pruning.data',
    'pruning.experiment',
  ),
  'analysis': (
    'tensorflow_datasets',
    'orbax',
    'grain',
    'models',
    'pruning.sparse',
    'pruning.data',
    'pruning.experiment',
  ),
  'sparse': (
    'tensorflow_datasets',
    'orbax',
    'grain',
    'matplotlib',
    'tqdm',
    'models',
    'pruning.analysis',
    'pruning.data',
    'pruning.experiment',
  ),
  'structured': (
    'tensorflow_datasets',
    'orbax',
    'grain',
    'matplotlib',
    'tqdm',
    'models',
    'pruning.analysis',
    'pruning.data',
    'pruning.experiment',
  ),
  'data': (
    'orbax',
    'matplotlib',
    'models',
    'pruning.analysis',
    'pruning.sparse',
    'pruning.experiment',
    'pruning.criteria',
    'pruning.masks',
    'pruning.optimizer',
  ),
}
MODULE_BUDGET = 80  # modules `import pruning` may load beyond `import jax, optax`


def _layer(path: pathlib.Path) -> str | None:
  parts = path.relative_to(PRUNING).parts
  if len(parts) == 1:
    return 'core'
  return parts[0] if parts[0] in FORBIDDEN else None


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
  """``(line, dotted name)`` of every import in the file, ``from x import y`` as ``x.y``."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out += [(node.lineno, f'{node.module}.{alias.name}') for alias in node.names]
  return out


def _violations() -> list[str]:
  found = []
  for path in sorted(PRUNING.rglob('*.py')):
    layer = _layer(path)
    if layer is None:
      continue
    for line, name in _imports(path):
      for banned in FORBIDDEN[layer]:
        if name == banned or name.startswith(banned + '.'):
          found.append(f'{path.relative_to(PRUNING.parent)}:{line} ({layer}) imports {name}')
  return found


def test_each_layer_imports_only_what_it_may():
  assert _violations() == []


def test_the_check_sees_a_forbidden_import(tmp_path, monkeypatch):
  # The check itself must be able to fail: a core module that imports flax.
  fake = tmp_path / 'pruning'
  fake.mkdir()
  (fake / 'masks.py').write_text('from flax import nnx\nimport scipy.sparse\n')
  monkeypatch.setattr(sys.modules[__name__], 'PRUNING', fake)
  assert _violations() == [
    'pruning/masks.py:1 (core) imports flax.nnx',
    'pruning/masks.py:2 (core) imports scipy.sparse',
  ]


def _loaded_by(statement: str) -> tuple[int, list[str]]:
  """Modules a fresh interpreter loads for ``statement`` beyond ``import jax, optax``."""
  script = (
    'import sys, json, jax, optax\n'
    'before = set(sys.modules)\n'
    f'{statement}\n'
    'print(json.dumps(sorted(set(sys.modules) - before)))\n'
  )
  done = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, timeout=120, check=False
  )
  assert done.returncode == 0, done.stderr[-3000:]
  loaded = json.loads(done.stdout.strip().splitlines()[-1])
  return len(loaded), loaded


@pytest.mark.parametrize('statement', ['import pruning', 'import pruning.masks'])
def test_importing_the_core_is_cheap(statement):
  count, loaded = _loaded_by(statement)
  heavy = [m for m in loaded if m.split('.')[0] in (*HEAVY, 'flax', 'models')]
  subpackages = [
    m
    for m in loaded
    if m.startswith(
      (
        'pruning.analysis',
        'pruning.sparse',
        'pruning.structured',
        'pruning.data',
        'pruning.experiment',
      )
    )
  ]
  assert heavy == [] and subpackages == []
  assert count <= MODULE_BUDGET, loaded


def test_subpackage_names_load_on_first_use():
  _, loaded = _loaded_by('import pruning\npruning.remove_dead_neurons')
  assert 'pruning.sparse.surgery' in loaded
  assert 'pruning.experiment' not in loaded and 'tensorflow_datasets' not in loaded


def test_structured_names_load_on_first_use():
  _, loaded = _loaded_by('import pruning\npruning.dependency_groups')
  assert 'pruning.structured.primitive_rules' in loaded
  assert 'pruning.sparse' not in loaded and 'pruning.experiment' not in loaded
