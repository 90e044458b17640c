"""Collects the reduced-width VGG-16 CIFAR-10 runs into benchmarks/VGG_CIFAR_RESULTS.md.

The runs themselves are ``scripts/prune_vgg.py`` invocations (their exact
commands are in each run's ``report.json``), made in resumable pieces under
the team's CPU lock. This script only reads their work directories and
chooses, on the validation split and never on the test split:

1. the dense network: the dense run (``--rounds 0``) with the lowest final
   validation error;
2. the pruned network: among the runs that prune it (``--from-dense`` or
   ``--dense-checkpoint``), the most compressed one whose final validation
   error is within ``--tolerance`` points of the dense network's.

It writes the results file (choices, every candidate's validation and test
errors, the chosen run's per-layer table, commands, commits, seeds, machine,
wall times), copies the chosen run's ``report.json`` and
``error_vs_kept.png`` next to it, and writes one JSON entry per run to
``--json`` (``benchmarks/results/vgg16_cifar.json``): width, device, dtype,
dense and pruned test error, compression, epochs, wall time, command and
commit, each read from the run. Machine, data and epochs are read from the
runs (their ``report.json`` headers, ``config.json`` and ``metrics.jsonl``),
never typed here; so is the table of the GPU short run, computed from its
metrics log and put between the markers of ``vgg_gpu/gpu_evidence.md``.

Usage:
  python benchmarks/vgg_cifar_results.py --dense runs/vggc-dense-* --pruned runs/vggc-prune-*
  python benchmarks/vgg_cifar_results.py --gpu-table-only   # vgg_gpu/gpu_evidence.md's table
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import shlex
import shutil
import statistics
import sys
from typing import Any

import _common

from pruning.experiment import report

HERE = pathlib.Path(__file__).resolve().parent
# The GPU section, written by whoever measured on a GPU (command, device, figures);
# included verbatim. Without it the results file says no GPU figures exist.
GPU_EVIDENCE = HERE / 'vgg_gpu' / 'gpu_evidence.md'
# The GPU short run's own log and configuration, next to GPU_EVIDENCE; its table there is
# generated from them, between these markers (whatever stands there is replaced).
GPU_SHORT_RUN = 'vgg16_cifar_short_metrics.jsonl'
GPU_SHORT_CONFIG = 'vgg16_cifar_short_config.json'
TABLE_BEGIN = '<!-- begin: table generated from {log} by benchmarks/vgg_cifar_results.py -->'
TABLE_END = '<!-- end of the generated table -->'
# What pruning.data reads for each CIFAR-10 name (pruning/data/cifar10.py).
DATA_SOURCES = {
  'cifar10/jpeg': "the project's JPEG copy of CIFAR-10 (quality 75): real images, not "
  'byte-exact, so these errors compare with each other, not with published CIFAR-10 figures',
  'cifar10/official': 'the official CIFAR-10 binary release (byte-exact)',
  'cifar10': "`cifar10`, which `pruning.data.cifar10.resolve_config` maps to the project's JPEG copy "
  '(quality 75, not byte-exact) or to the official archive, by what is present; the runs do '
  'not record which, so these errors compare with each other, not with published CIFAR-10 '
  'figures',
}
# What a user with a GPU runs for the GPU evidence.
GPU_COMMANDS = (
  '# VGG-16 (224x224, synthetic data) training throughput, dense vs masked, bf16:',
  'python benchmarks/vgg_throughput.py --model vgg16 --dtype bfloat16 --batch-size 128 \\',
  '    --out benchmarks/vgg_throughput_gpu.json',
  '# A full-width VGG-16 pruned on CIFAR-10 (dense training, then alternating FC/CONV',
  '# rounds to 16x), bf16, in one call (vgg_gpu/full_width.sh says how to carry its data):',
  'bash benchmarks/vgg_gpu/full_width.sh',
)


def _records(workdir: pathlib.Path) -> list[dict[str, Any]]:
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def summarize(workdir: pathlib.Path) -> dict[str, Any]:
  """A run's configuration, report header, dense and final errors, and timings."""
  records = _records(workdir)
  report = json.loads((workdir / 'report.json').read_text())
  config = json.loads((workdir / 'config.json').read_text())
  rounds = [r for r in records if r['event'] == 'round_end']
  epochs = [r for r in records if r['event'] == 'epoch']
  # Seconds per epoch: gaps between consecutive epoch records of one round
  # (a gap across a resume or a prune would count other work).
  gaps = [b['time'] - a['time'] for a, b in itertools.pairwise(epochs) if a['round'] == b['round']]
  header = report['header']
  return {
    'workdir': str(workdir),
    'config': config,
    'header': header,
    'dense_from': header.get('dense network from') or config.get('dense_checkpoint'),
    'wall_time_s': _common.wall_time(records),
    'dense': rounds[0],
    'final': rounds[-1],
    'rounds': rounds,
    'groups': {r['round']: r['group'] for r in records if r['event'] == 'pruned'},
    'layers': report['layers'],
    'total': report['total'],
    'epochs': len(epochs),
    'epoch_seconds': statistics.median(gaps) if gaps else None,
    'sensitivity': (workdir / 'sensitivity.json').exists(),
    # What each invocation read, from its start record (runs before it was logged: none).
    'data': sorted({r['data'] for r in records if r['event'] == 'start' and r.get('data')}),
  }


def json_entries(dense: list[dict], pruned: list[dict]) -> list[dict[str, Any]]:
  """One entry per run, every value read from the run's own files."""
  by_workdir = {pathlib.Path(run['workdir']).resolve(): run for run in dense}
  entries = []
  for run in [*dense, *pruned]:
    header, config, final = run['header'], run['config'], run['final']
    source = (
      by_workdir.get(pathlib.Path(run['dense_from']).resolve()) if run['dense_from'] else None
    )
    entries.append(
      {
        'workdir': pathlib.Path(run['workdir']).name,
        'role': 'dense' if config['rounds'] == 0 else 'pruned',
        'width': config.get('width', 1.0),
        'device': header['machine'],
        'dtype': header.get('dtype', config.get('dtype')),
        'dense_test_error': run['dense']['test_error'],
        'pruned_test_error': final['test_error'] if config['rounds'] else None,
        'dense_validation_error': run['dense']['validation_error'],
        'pruned_validation_error': final['validation_error'] if config['rounds'] else None,
        'compression': final['compression'],
        'epochs': run['epochs'],
        'wall_time_s': run['wall_time_s'],
        'command': header['command'],
        'commit': header['commit'],
        'seed': header['seed'],
        'dense_command': None if source is None else source['header']['command'],
      }
    )
  return entries


def short_run_table(records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
  """A run round by round from its metrics log: epochs logged of those configured, errors.

  A round without a ``round_end`` record (the run stopped inside it) shows the
  errors of its last logged epoch, and says so.
  """
  lines = [
    '| after | epochs logged | kept weights | compression | test error % | validation error % |',
    '|---|---:|---:|---:|---:|---:|',
  ]
  unfinished = []
  for index in sorted({r['round'] for r in records}):
    own = [r for r in records if r['round'] == index]
    epochs = [r for r in own if r['event'] == 'epoch']
    end = next((r for r in own if r['event'] == 'round_end'), None)
    pruned = next((r for r in own if r['event'] == 'pruned'), None)
    last = end or (epochs[-1] if epochs else None)
    counts = end or pruned
    if last is None or counts is None:
      continue
    configured = config['dense_epochs'] if index == 0 else config['retrain_epochs']
    label = 'dense' if index == 0 else f'round {index} ({pruned["group"].upper()} pruned)'
    if end is None:
      label += ', no round-end record'
      unfinished.append(index)
    lines.append(
      f'| {label} | {len(epochs)} of {configured} | {counts["kept"]:,} '
      f'| {counts["total"] / counts["kept"]:.2f}x | {last["test_error"]:.2f} '
      f'| {last["validation_error"]:.2f} |'
    )
  for index in unfinished:
    lines += [
      '',
      f'Round {index} has no round-end record: the run stopped after its last epoch record, '
      "so the round's errors are that epoch's evaluation.",
    ]
  return lines


def gpu_evidence_text(evidence: pathlib.Path) -> str:
  """``evidence`` with the table between its markers computed from the run's log and config.

  The log and configuration (:data:`GPU_SHORT_RUN`, :data:`GPU_SHORT_CONFIG`)
  are read from ``evidence``'s folder; text without the markers is returned as
  it is.
  """
  text = evidence.read_text()
  begin = TABLE_BEGIN.format(log=GPU_SHORT_RUN)
  if begin not in text:
    return text
  head, rest = text.split(begin, 1)
  _, tail = rest.split(TABLE_END, 1)
  log = evidence.with_name(GPU_SHORT_RUN).read_text()
  config = json.loads(evidence.with_name(GPU_SHORT_CONFIG).read_text())
  table = short_run_table([json.loads(line) for line in log.splitlines()], config)
  return '\n'.join([head + begin, *table, TABLE_END + tail])


def choose(dense: list[dict], pruned: list[dict], tolerance: float) -> tuple[dict, dict | None]:
  """The dense run with the lowest validation error; the most compressed pruned run within tolerance."""
  best_dense = min(dense, key=lambda run: run['final']['validation_error'])
  limit = best_dense['final']['validation_error'] + tolerance
  candidates = [
    run
    for run in pruned
    if run['dense_from']
    and pathlib.Path(run['dense_from']).resolve() == pathlib.Path(best_dense['workdir']).resolve()
    and run['final']['validation_error'] <= limit
  ]
  best_pruned = max(candidates, key=lambda run: run['final']['compression'], default=None)
  return best_dense, best_pruned


def _row(run: dict, label: str) -> str:
  final = run['final']
  config = run['config']
  if config['rounds'] == 0:
    rate = config['dropout_rate']
    what = (
      f'dense, {config.get("dense_epochs", "?")} epochs, dropout {0.5 if rate is None else rate}'
    )
  else:
    targets = (
      f'targets from validation sensitivity, budget {config["auto_sensitivity"]} points'
      if config.get('auto_sensitivity') is not None
      else f'hand-set targets ({config["criterion"]})'
    )
    what = f'{config["rounds"]} rounds x {config["retrain_epochs"]} epochs, {targets}'
  return (
    f'| {label} | `{pathlib.Path(run["workdir"]).name}` | {what} | '
    f'{final["validation_error"]:.2f} | {final["test_error"]:.2f} | {final["compression"]:.2f}x |'
  )


def _network_section(run: dict, title: str) -> list[str]:
  """Dense vs pruned, per round and per layer, for one pruned run."""
  dense_round, final, total = run['dense'], run['final'], run['total']
  lines = [
    f'## {title}: `{pathlib.Path(run["workdir"]).name}`',
    '',
    '| | dense | pruned |',
    '|---|---:|---:|',
    f'| test error % | {dense_round["test_error"]:.2f} | {final["test_error"]:.2f} |',
    f'| validation error % | {dense_round["validation_error"]:.2f} | '
    f'{final["validation_error"]:.2f} |',
    f'| weights | {total["weights"]:,} | {total["kept"]:,} |',
    f'| FLOP per image | {total["flops"]:,} | {total["flops_kept"]:,} |',
    '',
    f'Compression {final["compression"]:.2f}x of the weights, '
    f'{total["flops"] / total["flops_kept"]:.2f}x of the FLOP (pruned weights only).',
    '',
    '### Rounds',
    '',
    '| round | layers pruned | weights kept | validation error % | test error % |',
    '|---:|---|---:|---:|---:|',
  ]
  for record in run['rounds']:
    group = run['groups'].get(record['round'], 'none (dense)')
    lines.append(
      f'| {record["round"]} | {group} | {record["kept"]:,} '
      f'| {record["validation_error"]:.2f} | {record["test_error"]:.2f} |'
    )
  lines += [
    '',
    "Errors after each round's retraining. The paper prunes FC and CONV layers in",
    'alternate rounds, the other group frozen (§3.3).',
    '',
    "### Per layer (the paper's Table 5 format)",
    '',
    '| layer | weights | FLOP | weights % kept | FLOP % kept |',
    '|---|---:|---:|---:|---:|',
  ]
  for layer in run['layers']:
    lines.append(
      f'| {layer["layer"]} | {layer["weights"]:,} | {layer["flops"]:,} '
      f'| {layer["weights_kept_pct"]:.1f} | {layer["flops_kept_pct"]:.1f} |'
    )
  lines += [
    f'| **total** | {total["weights"]:,} | {total["flops"]:,} '
    f'| {total["weights_kept_pct"]:.1f} | {total["flops_kept_pct"]:.1f} |',
    '',
    'FLOP % kept counts pruned weights only (activations dense), unlike the paper, whose',
    "FLOP column also credits zero activations. This run's own reports are copied to",
    '`vgg_cifar/` (`report.md`, `report.json`, `error_vs_kept.png`).',
    '',
  ]
  return lines


def _copy_reports(run: dict, target: pathlib.Path) -> None:
  """Copies ``run``'s own reports into ``target``."""
  target.mkdir(parents=True, exist_ok=True)
  for name in ('report.json', 'report.md', 'error_vs_kept.png'):
    shutil.copy(pathlib.Path(run['workdir']) / name, target / name)


def write(
  dense: list[dict],
  pruned: list[dict],
  tolerance: float,
  out: pathlib.Path,
  command: str,
  gpu_evidence: pathlib.Path | None = None,
) -> str:
  """Writes the results file to ``out`` (and the chosen run's reports beside it).

  The GPU section is ``gpu_evidence`` (default :data:`GPU_EVIDENCE`) verbatim
  where that file exists.
  """
  gpu_evidence = GPU_EVIDENCE if gpu_evidence is None else gpu_evidence
  chosen_dense, chosen = choose(dense, pruned, tolerance)
  runs = [*dense, *pruned]
  configs = [run['config'] for run in runs]
  widths = sorted({config.get('width', 1.0) for config in configs})
  machines = sorted({run['header']['machine'] for run in runs})
  datasets = sorted({config.get('dataset') or '' for config in configs})
  read = sorted({data for run in runs for data in run.get('data', [])})
  sizes = _common.data_description(configs)
  lines = [
    f'# Pruning VGG-16 (width {", ".join(f"{w:g}" for w in widths)}) on CIFAR-10',
    '',
    f'- command: `{command}`',
    f"- commit: `{report.git_commit()}` (each run's own commit is listed with it below)",
    f"- machine(s), from the runs' `report.json`: {'; '.join(machines)}",
    '',
    'Written by `benchmarks/vgg_cifar_results.py` from the work directories of the',
    '`scripts/prune_vgg.py` runs below (commands, commits and machine from their',
    '`report.json`; data and epochs from their `config.json` and `metrics.jsonl`). **Data:** '
    + (
      # Every run logged what it read: that, else what the dataset's name may mean.
      'as the runs logged it, ' + '; '.join(read)
      if read and all(run.get('data') for run in runs)
      else '; '.join(DATA_SOURCES.get(name, f'`{name}`') for name in datasets if name)
      or "no dataset named in the runs' configs"
    )
    + '.'
    + (f' From their configs: {sizes}.' if sizes else '')
    + ' Every choice below is made on the validation split; the test split is reported and '
    'never used to choose.',
    '',
    '## Choices, made on the validation split',
    '',
    f'Tolerance: a pruned network qualifies if its validation error is at most {tolerance} '
    "points above the dense network's.",
    '',
    '| role | run | what | validation error % | test error % | compression |',
    '|---|---|---|---:|---:|---:|',
  ]
  for run in dense:
    lines.append(_row(run, 'dense' + (' (chosen)' if run is chosen_dense else '')))
  for run in pruned:
    lines.append(_row(run, 'pruned' + (' (chosen)' if run is chosen else '')))
  lines.append('')
  if chosen_dense['config'].get('dropout_rate') == 0:
    lines += [
      'The dense network was trained without dropout (`--dropout-rate 0`), so the dropout',
      'adjustment of §3.2 (D_r = D_o sqrt(C_r / C_o)) keeps the rate at 0 in every round here.',
      '',
    ]
  if chosen is not None:
    lines += _network_section(chosen, 'The chosen pruned network')
    _copy_reports(chosen, out.parent / 'vgg_cifar')
  elif pruned:
    # Still on validation: the pruned run that lost the least.
    closest = min(pruned, key=lambda run: run['final']['validation_error'])
    lines += [
      'No pruned run is within the tolerance. The one with the lowest validation error:',
      '',
      *_network_section(closest, 'The closest pruned network (outside the tolerance)'),
    ]
    _copy_reports(closest, out.parent / 'vgg_cifar')
  else:
    lines += ['No pruned run yet.', '']
  lines += ['## Runs: commands, commits, timings', '']
  for run in [*dense, *pruned]:
    header = run['header']
    seconds = run['epoch_seconds']
    lines += [
      f'- `{pathlib.Path(run["workdir"]).name}`: `{header["command"]}`',
      f'  - commit `{header["commit"]}`, seed {header["seed"]}, {run["epochs"]} epochs'
      + (f', median {seconds:.1f} s per epoch (training + evaluation)' if seconds else ''),
    ]
  resumed = [
    f'`{pathlib.Path(run["workdir"]).name}`'
    for run in runs
    if '--resume' in shlex.split(run['header']['command'])
  ]
  lines += [
    '',
    f'Machine, as the runs recorded it: {"; ".join(machines)}. Timings are as measured; the '
    'runs do not record what else ran on the machine.'
    + (
      ' Commands with `--resume` (which continues from the round and epoch checkpoints where '
      f'an earlier invocation stopped): {", ".join(resumed)}.'
      if resumed
      else ''
    ),
    '',
  ]
  if gpu_evidence.exists():
    lines += [gpu_evidence_text(gpu_evidence).rstrip('\n'), '']
  else:
    lines += [
      '## GPU evidence',
      '',
      f'No GPU figures are reported (no `{gpu_evidence.name}` in `{gpu_evidence.parent.name}/`):',
      'no VGG-16 throughput, model FLOP utilisation or masked/dense ratio, and no',
      'full-width VGG-16 CIFAR-10 run. With a',
      'GPU, these commands produce them (the first prints images/s dense and masked, MFU',
      'against the measured bf16 matmul peak and the masked/dense time ratio; targets',
      'MFU >= 45 %, ratio <= 1.03):',
      '',
      '```bash',
      *GPU_COMMANDS,
      '```',
      '',
    ]
  text = '\n'.join(lines)
  out.write_text(text)
  return text


def main(argv=None) -> str:
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n\n')[0],
    epilog=__doc__.split('\n\n', 1)[1],
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--dense', nargs='+', help='dense runs (--rounds 0)')
  parser.add_argument(
    '--pruned', nargs='*', default=[], help='pruning runs (--from-dense or --dense-checkpoint)'
  )
  parser.add_argument('--tolerance', type=float, default=0.5, help='validation points')
  parser.add_argument('--out', default=str(HERE / 'VGG_CIFAR_RESULTS.md'))
  parser.add_argument('--json', default=str(HERE / 'results' / 'vgg16_cifar.json'))
  parser.add_argument(
    '--gpu-table-only',
    action='store_true',
    help=f'only rewrite the generated table in {GPU_EVIDENCE.name} from its log',
  )
  args = parser.parse_args(argv)
  if args.gpu_table_only:
    text = gpu_evidence_text(GPU_EVIDENCE)
    GPU_EVIDENCE.write_text(text)
    return text
  if not args.dense:
    parser.error('--dense is required (or --gpu-table-only)')
  dense = [summarize(pathlib.Path(w)) for w in args.dense]
  pruned = [summarize(pathlib.Path(w)) for w in args.pruned]
  given = sys.argv[1:] if argv is None else argv
  command = shlex.join(['python', 'benchmarks/vgg_cifar_results.py', *given])
  text = write(dense, pruned, args.tolerance, pathlib.Path(args.out), command)
  entries = json_entries(dense, pruned)
  pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(args.json).write_text(
    json.dumps({'command': command, 'commit': report.git_commit(), 'runs': entries}, indent=2)
    + '\n'
  )
  print(text)
  return text


if __name__ == '__main__':
  main()
