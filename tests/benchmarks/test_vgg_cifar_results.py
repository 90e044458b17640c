"""The VGG results script chooses on the validation split only, never on the test split.

Its machine, data and epoch lines, and the GPU short run's table, come from the runs.
"""

import importlib.util
import json
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks'
SCRIPT = BENCHMARKS / 'vgg_cifar_results.py'


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
  monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports benchmarks/_common.py


def _load():
  spec = importlib.util.spec_from_file_location('vgg_cifar_results', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(
  workdir: pathlib.Path,
  validation: float,
  test: float,
  compression: float,
  dense=None,
  validation_size=5000,
  machine='test machine',
):
  """A minimal work directory as prune_vgg.py leaves it."""
  workdir.mkdir(parents=True)
  config = {
    'rounds': 0 if dense is None else 2,
    'retrain_epochs': 1,
    'criterion': 'sparsity',
    'dropout_rate': 0.0,
    'auto_sensitivity': None,
    'dense_checkpoint': None if dense is None else str(dense),
    'dense_epochs': 3,
    'dataset': 'cifar10',
    'width': 0.125,
    'validation_size': validation_size,
    'train_subset': None,
    'test_subset': None,
  }
  rounds = [
    {
      'event': 'round_end',
      'round': 0,
      'kept': 100,
      'validation_error': 20.0,
      'test_error': 21.0,
      'compression': 1.0,
    }
  ]
  if dense is not None:
    rounds.append({'event': 'pruned', 'round': 1, 'group': 'fc'})
    rounds.append(
      {
        'event': 'round_end',
        'round': 1,
        'kept': round(100 / compression),
        'validation_error': validation,
        'test_error': test,
        'compression': compression,
      }
    )
  else:
    rounds[0].update(validation_error=validation, test_error=test)
  epochs = [{'event': 'epoch', 'round': 1, 'time': t} for t in (0.0, 10.0, 30.0)]
  (workdir / 'metrics.jsonl').write_text(
    '\n'.join(json.dumps(r) for r in [*epochs, *rounds]) + '\n'
  )
  (workdir / 'config.json').write_text(json.dumps(config))
  layer = {'layer': 'fc6', 'weights': 100, 'flops': 200, 'weights_kept_pct': 50.0}
  layer['flops_kept_pct'] = 50.0
  total = {**layer, 'layer': 'total', 'kept': 50, 'flops_kept': 100}
  header = {'command': f'prune_vgg.py --workdir {workdir.name}', 'commit': 'abc1234', 'seed': 0}
  header['machine'] = machine
  (workdir / 'report.json').write_text(
    json.dumps({'header': header, 'layers': [layer], 'total': total})
  )
  for name in ('report.md', 'error_vs_kept.png'):
    (workdir / name).write_text(name)
  return workdir


def test_chooses_the_most_compressed_run_within_tolerance_on_validation(tmp_path):
  results = _load()
  dense = _run(tmp_path / 'dense', validation=20.0, test=21.0, compression=1.0)
  # 'best_test' has the lowest test error but is outside the validation tolerance.
  _run(tmp_path / 'best_test', validation=20.6, test=19.0, compression=20.0, dense=dense)
  _run(tmp_path / 'within', validation=20.4, test=22.0, compression=8.0, dense=dense)
  _run(tmp_path / 'less', validation=20.1, test=21.5, compression=4.0, dense=dense)
  out = tmp_path / 'RESULTS.md'
  summaries = [results.summarize(tmp_path / n) for n in ('best_test', 'within', 'less')]
  chosen_dense, chosen = results.choose([results.summarize(dense)], summaries, tolerance=0.5)
  assert chosen_dense['workdir'] == str(dense)
  assert chosen['workdir'] == str(tmp_path / 'within')
  assert chosen['epoch_seconds'] == 15.0

  results.HERE = tmp_path
  text = results.main(
    ['--dense', str(dense), '--pruned', *(s['workdir'] for s in summaries), '--out', str(out)]
  )
  assert out.read_text() == text
  assert '| pruned (chosen) | `within` |' in text
  assert '## GPU evidence' in text  # both forms: see test_gpu_section_...
  assert 'bash benchmarks/vgg_gpu/full_width.sh' in text  # the GPU section's command
  assert (tmp_path / 'vgg_cifar' / 'report.json').exists()


def test_no_pruned_run_within_tolerance_is_said_plainly(tmp_path):
  results = _load()
  results.HERE = tmp_path
  dense = _run(tmp_path / 'dense', validation=20.0, test=21.0, compression=1.0)
  _run(tmp_path / 'near', validation=23.0, test=22.0, compression=4.0, dense=dense)
  _run(tmp_path / 'far', validation=25.0, test=19.0, compression=20.0, dense=dense)
  pruned = [str(tmp_path / 'far'), str(tmp_path / 'near')]
  text = results.main(['--dense', str(dense), '--pruned', *pruned, '--out', str(tmp_path / 'R.md')])
  assert 'No pruned run is within the tolerance.' in text
  # The closest is read off validation (23.0 < 25.0), never off test (19.0 < 22.0).
  assert '## The closest pruned network (outside the tolerance): `near`' in text
  assert '| 1 | fc | 25 | 23.00 | 22.00 |' in text


def test_gpu_section_is_the_measured_file_or_says_there_is_none(tmp_path, monkeypatch):
  results = _load()
  results.HERE = tmp_path
  dense = _run(tmp_path / 'dense', validation=20.0, test=21.0, compression=1.0)
  args = ['--dense', str(dense), '--out', str(tmp_path / 'R.md')]
  monkeypatch.setattr(results, 'GPU_EVIDENCE', tmp_path / 'missing.md')
  text = results.main(args)
  assert 'No GPU figures are reported' in text
  assert 'python benchmarks/vgg_throughput.py' in text
  evidence = tmp_path / 'gpu_evidence.md'
  evidence.write_text(
    '## GPU evidence\n\n| batch | variant | step (ms) |\n| 128 | dense | 24.63 |\n'
  )
  monkeypatch.setattr(results, 'GPU_EVIDENCE', evidence)
  text = results.main(args)
  assert '| 128 | dense | 24.63 |' in text
  assert 'No GPU figures are reported' not in text
  assert text.count('## GPU evidence') == 1


def test_machine_and_data_lines_come_from_the_runs(tmp_path):
  results = _load()
  results.HERE = tmp_path
  machine = 'Made-up Vector Engine, 7 cores visible, jax 9.9 on quill (1 device(s))'
  dense = _run(tmp_path / 'dense', 20.0, 21.0, 1.0, validation_size=1234, machine=machine)
  text = results.main(['--dense', str(dense), '--out', str(tmp_path / 'R.md')])
  assert f"- machine(s), from the runs' `report.json`: {machine}" in text
  assert f'Machine, as the runs recorded it: {machine}.' in text
  assert (
    'cifar10: trained on 48,766 training images (1,234 of its 50,000 held out for validation), '
    'each randomly cropped (4-pixel padding) and flipped, errors on its 10,000 test images'
  ) in text
  assert text.startswith('# Pruning VGG-16 (width 0.125) on CIFAR-10')
  prose = '\n'.join(line for line in text.split('## GPU evidence')[0].splitlines())
  for typed in ('VM', '2-core', '2 CPU cores', '45,000', 'team'):
    assert typed not in prose, typed


def test_short_run_table_counts_the_epochs_in_the_log():
  records = [
    {'round': 0, 'event': 'epoch', 'test_error': 70.0, 'validation_error': 71.0},
    {'round': 0, 'event': 'epoch', 'test_error': 60.0, 'validation_error': 61.0},
    {'round': 0, 'event': 'round_end', 'test_error': 60.0, 'validation_error': 61.0}
    | {'kept': 1000, 'total': 1000},
    {'round': 1, 'event': 'pruned', 'group': 'fc', 'kept': 400, 'total': 1000},
    {'round': 1, 'event': 'epoch', 'test_error': 55.0, 'validation_error': 56.0},
  ]
  table = _load().short_run_table(records, {'dense_epochs': 2, 'retrain_epochs': 3})
  assert table[2] == '| dense | 2 of 2 | 1,000 | 1.00x | 60.00 | 61.00 |'
  assert (
    table[3]
    == '| round 1 (FC pruned), no round-end record | 1 of 3 | 400 | 2.50x | 55.00 | 56.00 |'
  )
  assert table[-1].startswith('Round 1 has no round-end record')


def test_the_committed_gpu_evidence_is_its_log():
  """gpu_evidence.md's table is the one its metrics log gives, and so is the results file's."""
  results = _load()
  evidence = BENCHMARKS / 'vgg_gpu' / 'gpu_evidence.md'
  text = results.gpu_evidence_text(evidence)
  assert text == evidence.read_text()
  # The short run logged both epochs of its last round (only the round-end record is missing).
  assert '| round 3 (FC pruned), no round-end record | 2 of 2 | 4,830,956 | 3.15x |' in text
  assert text.rstrip('\n') in (BENCHMARKS / 'VGG_CIFAR_RESULTS.md').read_text()


def test_json_has_one_entry_per_run_read_from_its_files(tmp_path):
  results = _load()
  results.HERE = tmp_path
  dense = _run(tmp_path / 'dense', validation=20.0, test=21.0, compression=1.0)
  pruned = _run(tmp_path / 'pruned', validation=20.3, test=21.4, compression=12.5, dense=None)
  # A run seeded with --from-dense: the source is named in its report header, not its config.
  config = json.loads((pruned / 'config.json').read_text())
  (pruned / 'config.json').write_text(json.dumps({**config, 'rounds': 2}))
  report = json.loads((pruned / 'report.json').read_text())
  report['header'].update({'dense network from': str(dense), 'dtype': 'float32'})
  (pruned / 'report.json').write_text(json.dumps(report))
  records = [
    {'event': 'start', 'round': 0, 'time': 100.0},
    {'event': 'epoch', 'round': 0, 'time': 160.0},
    {'event': 'round_end', 'round': 0, 'validation_error': 20.0, 'test_error': 21.0,
     'kept': 100, 'compression': 1.0, 'time': 161.0},
    {'event': 'start', 'round': 1, 'time': 1000.0},
    {'event': 'pruned', 'round': 1, 'group': 'fc', 'time': 1001.0},
    {'event': 'epoch', 'round': 1, 'time': 1030.0},
    {'event': 'round_end', 'round': 1, 'validation_error': 20.3, 'test_error': 21.4,
     'kept': 8, 'compression': 12.5, 'time': 1031.0},
  ]  # fmt: skip
  (pruned / 'metrics.jsonl').write_text('\n'.join(json.dumps(r) for r in records) + '\n')
  out = tmp_path / 'runs.json'
  args = ['--dense', str(dense), '--pruned', str(pruned), '--out', str(tmp_path / 'R.md')]
  text = results.main([*args, '--json', str(out)])
  assert '| pruned (chosen) | `pruned` |' in text  # chosen through the header's source
  written = json.loads(out.read_text())
  assert written['command'].startswith('python benchmarks/vgg_cifar_results.py --dense')
  by_name = {entry['workdir']: entry for entry in written['runs']}
  assert by_name['dense']['role'] == 'dense' and by_name['dense']['pruned_test_error'] is None
  assert by_name['dense']['wall_time_s'] is None  # its log has no start record
  entry = by_name['pruned']
  assert entry == {
    'workdir': 'pruned',
    'role': 'pruned',
    'width': 0.125,
    'device': 'test machine',
    'dtype': 'float32',
    'dense_test_error': 21.0,
    'pruned_test_error': 21.4,
    'dense_validation_error': 20.0,
    'pruned_validation_error': 20.3,
    'compression': 12.5,
    'epochs': 2,
    'wall_time_s': 61.0 + 31.0,
    'command': 'prune_vgg.py --workdir pruned',
    'commit': 'abc1234',
    'seed': 0,
    'dense_command': 'prune_vgg.py --workdir dense',
  }


def test_the_chosen_runs_reports_are_copied_beside_out_and_nowhere_else(tmp_path):
  results = _load()
  results.HERE = tmp_path / 'benchmarks'  # where a fixed path would write
  dense = _run(tmp_path / 'dense', validation=20.0, test=21.0, compression=1.0)
  pruned = _run(tmp_path / 'pruned', validation=20.2, test=21.1, compression=8.0, dense=dense)
  out = tmp_path / 'elsewhere' / 'R.md'
  out.parent.mkdir()
  json_out = tmp_path / 'elsewhere' / 'r.json'
  results.main(
    ['--dense', str(dense), '--pruned', str(pruned), '--out', str(out), '--json', str(json_out)]
  )
  copied = out.parent / 'vgg_cifar'
  assert json.loads((copied / 'report.json').read_text())['header']['command'].endswith('pruned')
  assert (copied / 'report.md').read_text() == 'report.md'
  assert not results.HERE.exists()


def test_the_data_line_quotes_what_the_runs_logged(tmp_path):
  results = _load()
  results.HERE = tmp_path
  dense = _run(tmp_path / 'dense', validation=20.0, test=21.0, compression=1.0)
  pruned = _run(tmp_path / 'pruned', validation=20.2, test=21.2, compression=8.0, dense=dense)
  read = 'tfds cifar10_tarball/jpeg/1.0.0 from cifar10-jpeg.tar.gz (md5 0123): JPEG copy'
  out = tmp_path / 'RESULTS.md'
  argv = ['--dense', str(dense), '--pruned', str(pruned), '--out', str(out)]
  # Runs from before the start record named the data: the name's possible meanings.
  assert 'the runs do not record which' in ' '.join(results.main(argv).split())
  for run in (dense, pruned):
    start = {'event': 'start', 'round': 0, 'epoch': 0, 'time': 0.0, 'commit': 'abc', 'data': read}
    log = run / 'metrics.jsonl'
    # After a start record every record has its time, as the pipeline writes them.
    timed = [{'time': 0.0} | json.loads(line) for line in log.read_text().splitlines()]
    log.write_text('\n'.join(json.dumps(r) for r in [start, *timed]) + '\n')
  text = ' '.join(results.main(argv).split())
  assert f'**Data:** as the runs logged it, {read}.' in text
  assert 'the runs do not record which' not in text
