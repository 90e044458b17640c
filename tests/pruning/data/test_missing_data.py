"""Without an offline dataset or torch, the tests that need it skip; on CI they fail.

Stand-in tests run in a fresh pytest whose conftest is ``tests/conftest.py``
itself, with ``shared_datasets`` overridden by a directory that does not
exist and torch made unimportable: the state of a machine without
``../shared/datasets`` and without torch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[2] / 'conftest.py'

NEEDS = """
import sys
from pathlib import Path

import pytest

sys.modules['torch'] = None  # as if torch were not installed


@pytest.fixture(scope='session')
def shared_datasets():
  return Path(__file__).parent / 'no-shared'


def test_mnist(shared_mnist):
  pass


def test_cifar10(cifar10_data_dir):
  pass


def test_torch(torch):
  pass


def test_needs_nothing():
  pass


def test_skipped_for_another_reason():
  pytest.skip('not about missing data')
"""


@pytest.fixture
def run_without_data(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
  """``run(ci) -> (result, missing)``: the stand-in tests run with ``CI=true`` or without CI."""
  pytester.makeconftest(CONFTEST.read_text())
  pytester.makepyfile(test_needs=NEEDS)
  missing = pytester.path / 'no-shared'
  monkeypatch.setenv('COLUMNS', '1000')  # whole messages in the summary lines

  def run(ci: bool) -> tuple[pytest.RunResult, Path]:
    if ci:
      monkeypatch.setenv('CI', 'true')
    else:
      monkeypatch.delenv('CI', raising=False)
    return pytester.runpytest_subprocess('-p', 'no:cacheprovider', '-rsE', '-v'), missing

  return run


def test_missing_data_and_torch_skip_locally(run_without_data):
  result, missing = run_without_data(ci=False)
  result.assert_outcomes(passed=1, skipped=4)
  result.stdout.fnmatch_lines_random(
    [
      f'*SKIPPED*no offline MNIST copy at {missing / "mnist"}',
      f'*SKIPPED*no offline CIFAR-10 copy at {missing / "cifar10-jpeg.tar.gz"}',
      '*SKIPPED*torch is not installed (*); install it with `pip install torch==2.13.0`',
      '*SKIPPED*not about missing data',
    ]
  )


def test_missing_data_and_torch_fail_on_ci(run_without_data):
  result, missing = run_without_data(ci=True)
  result.assert_outcomes(passed=1, skipped=1, errors=3)
  on_ci = '(CI=true: this test must run on CI, not skip)'
  result.stdout.fnmatch_lines_random(
    [
      f'ERROR test_needs.py::test_mnist - Failed: no offline MNIST copy at {missing / "mnist"} '
      f'{on_ci}',
      'ERROR test_needs.py::test_cifar10 - Failed: no offline CIFAR-10 copy at '
      f'{missing / "cifar10-jpeg.tar.gz"} {on_ci}',
      'ERROR test_needs.py::test_torch - Failed: torch is not installed (*); '
      f'install it with `pip install torch==2.13.0` {on_ci}',
      '*SKIPPED*not about missing data',
    ]
  )
