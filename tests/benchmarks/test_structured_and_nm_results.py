"""The results scripts of structured and N:M runs read real (tiny) runs: every number comes
from a run's records or is measured, every provenance line from the run's report."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / 'benchmarks'
TINY = ['--train-subset', '256', '--test-subset', '200', '--eval-batch-size', '200']
TINY += ['--dense-epochs', '1', '--retrain-epochs', '1', '--no-progress']


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import benchmarks/_common.py


def _load(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _prune_lenet(workdir, data_dir, *argv):
  script = _load(ROOT / 'scripts' / 'prune_lenet.py')
  script.main(['--workdir', str(workdir), '--data-dir', str(data_dir), *TINY, *argv])
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def test_nm_schedules_tabulates_a_run_from_its_records(tmp_path, mnist_data_dir):
  workdir = tmp_path / 'one-shot'
  records = _prune_lenet(workdir, mnist_data_dir, '--nm', '2:4', '--rounds', '1')
  out = tmp_path / 'nm'
  _load(BENCHMARKS / 'nm_schedules.py').main([str(workdir), '--output', str(out)])
  (row,) = json.loads((out.with_suffix('.json')).read_text())['runs']
  ends = [r for r in records if r['event'] == 'round_end']
  assert row['schedule'] == 'one-shot' and row['nm'] == '2:4' and row['epochs'] == 2
  assert (row['dense_test_error'], row['test_error']) == (
    ends[0]['test_error'],
    ends[-1]['test_error'],
  )
  assert (row['kept'], row['total']) == (266_200 // 2, 266_200)
  assert row['nm_valid_layers'] == ['fc1', 'fc2', 'fc3']
  header = json.loads((workdir / 'report.json').read_text())['header']
  assert row['command'] == header['command'] and '--nm 2:4' in row['command']
  assert '| lenet300 | 2:4 (dense: none) | one-shot | 2 |' in out.with_suffix('.md').read_text()


def test_structured_results_measures_a_finished_run_and_refuses_others(
  tmp_path, mnist_data_dir, capsys
):
  workdir = tmp_path / 'channels'
  argv = ['--model', 'lenet5', '--structure', 'channels', '--structured-sparsity', '0.5']
  records = _prune_lenet(workdir, mnist_data_dir, *argv, '--rounds', '1')
  results = _load(BENCHMARKS / 'structured_results.py')
  out = tmp_path / 'structured'
  results.main([str(workdir), '--repeats', '2', '--output', str(out)])
  (entry,) = json.loads(out.with_suffix('.json').read_text())['runs']
  ends = [r for r in records if r['event'] == 'round_end']
  assert entry['dense_test_error'] == ends[0]['test_error']
  assert entry['pruned_test_error'] == ends[-1]['test_error']
  assert entry['macs_ratio'] == ends[-1]['macs_ratio'] > 1
  assert entry['widths'] == {'conv1/kernel:3': 10, 'conv2/kernel:3': 25, 'fc1/kernel:1': 250}
  assert entry['latency_ratio'] == entry['dense_latency_ms'] / entry['pruned_latency_ms']
  assert sorted(entry['latency_ms']) == ['1', '64'] and entry['latency_batch'] == 64
  assert entry['latency_ms']['64']['dense'] == entry['dense_latency_ms']
  for times in [*entry['latency_ms'].values(), entry['train_step_ms']]:
    assert times['ratio'] == times['dense'] / times['pruned'] and times['pruned'] > 0
  config = json.loads((workdir / 'config.json').read_text())
  assert entry['train_step_ms']['batch'] == config['batch_size']
  assert (entry['criterion'], entry['scope']) == ('l1', 'per-group')
  assert '--structure channels' in entry['command']
  assert entry['measured_by']['machine'] == entry['machine']  # measured where it ran, here
  assert out.with_suffix('.png').stat().st_size > 0
  assert f'| `{workdir}` | lenet5 | l1 (per-group) | 50% |' in out.with_suffix('.md').read_text()
  # Measured again elsewhere, the earlier file's other runs stay (an entry written when one
  # batch was timed shows it by batch), and this run's entry is replaced, not repeated.
  foreign = {k: v for k, v in entry.items() if k not in ('latency_ms', 'train_step_ms')}
  foreign |= {'workdir': 'runs/elsewhere', 'latency_batch': 32, 'latency_ratio': 1.5}
  foreign |= {'dense_latency_ms': 3.0, 'pruned_latency_ms': 2.0}
  del foreign['measured_by']
  elsewhere = {'command': 'python benchmarks/structured_results.py runs/elsewhere'}
  elsewhere |= {'commit': 'abc1234', 'machine': 'another machine', 'jax': '0.0.1'}
  earlier = {'measured_by': elsewhere, 'runs': [foreign, entry]}
  out.with_suffix('.json').write_text(json.dumps(earlier))
  results.main(
    [str(workdir), '--batches', '8', '--train-batch', '16', '--repeats', '1', '--output', str(out)]
  )
  payload = json.loads(out.with_suffix('.json').read_text())
  kept, again = payload['runs']
  assert payload['carried_over'] == 1 and kept['measured_by'] == elsewhere
  assert kept['latency_ms'] == {'32': {'dense': 3.0, 'pruned': 2.0, 'ratio': 1.5}}
  assert again['workdir'] == str(workdir) and sorted(again['latency_ms']) == ['8']
  assert again['train_step_ms']['batch'] == 16
  text = out.with_suffix('.md').read_text()
  assert '| `runs/elsewhere` |' in text and '3.00 → 2.00 ms (1.50x)' in text
  assert 'another machine' in text
  unstructured = tmp_path / 'han'
  _prune_lenet(unstructured, mnist_data_dir, '--rounds', '1')
  with pytest.raises(SystemExit) as exit_info:
    results.main([str(unstructured), '--output', str(tmp_path / 'refused')])
  assert exit_info.value.code == 2
  assert 'is not a finished structured run' in capsys.readouterr().err
  assert not (tmp_path / 'refused.json').exists()
  for bad, message in (
    (['--batches', '0'], '--batches 0: expected a batch size of at least 1'),
    (['--repeats', '0'], '--repeats 0: expected at least 1'),
  ):
    with pytest.raises(SystemExit) as exit_info:
      results.main([str(workdir), *bad, '--output', str(tmp_path / 'refused')])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count('\n') == 1 and message in error, error
    assert not (tmp_path / 'refused.json').exists()
