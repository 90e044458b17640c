"""Automatic per-layer targets from sensitivity curves vs the hand-set densities.

One dense network (the model's pipeline defaults, with a 5000-image
validation split carved from the training set) is pruned and retrained
three ways by the pipeline, all from that same dense network:

* ``hand-set``: the model's default per-layer densities;
* ``auto-B``: ``auto_sensitivity=B`` for each budget ``B`` (validation-error
  percentage points): the pipeline measures each layer's sensitivity curve on
  the validation split (one layer pruned at a time, no retraining, the
  default sweep) and takes, per layer, the largest swept sparsity before the
  curve first exceeds the dense validation error by more than ``B``.

The budgets are fixed in advance (0.5 and 2 points by default); nothing is
chosen on the test set. Writes ``<output-dir>/auto_sensitivity_<model>.md``
with the chosen targets, compression and errors of every variant, and the
paper's Fig. 6 for the model, ``<model>_sensitivity.{png,csv,json}``: the
validation curves of the dense network.

Usage (LeNet-5: about 9 minutes for the dense network and 11 per variant on
2 cores; one piece per invocation):
  python benchmarks/auto_sensitivity.py --model lenet5 --variants dense
  python benchmarks/auto_sensitivity.py --model lenet5 --variants hand-set
  python benchmarks/auto_sensitivity.py --model lenet5 --variants auto-0.5
  python benchmarks/auto_sensitivity.py --model lenet5 --variants auto-2
  python benchmarks/auto_sensitivity.py --model lenet300      # all of it, ~4 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys

import _common

from pruning import SensitivityResult, Thresholds
from pruning.experiment import pipeline

VALIDATION_SIZE = 5000


def variants(model: str, seed: int, budgets) -> dict[str, pipeline.PruneConfig]:
  dense = _common.shipped_config(model, seed=seed, validation_size=VALIDATION_SIZE, rounds=0)
  hand_set = _common.shipped_config(model, seed=seed, validation_size=VALIDATION_SIZE)
  out = {'dense': dense, 'hand-set': hand_set}
  for budget in budgets:
    out[f'auto-{budget:g}'] = dataclasses.replace(hand_set, auto_sensitivity=budget)
  return out


def summary_row(name: str, config, workdir: pathlib.Path) -> dict | None:
  if not _common.is_complete(workdir, config.rounds):
    return None
  records = _common.records(workdir)
  final = records[-1]
  row = {
    'variant': name,
    'test_error': final['test_error'],
    'validation_error': final.get('validation_error'),
    'compression': final['compression'],
    'density': dict(config.density),
  }
  event = next((r for r in records if r['event'] == 'sensitivity'), None)
  if event is not None:
    row['density'] = event['density']
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model', choices=sorted(pipeline.MODELS), default='lenet5')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--budgets', nargs='+', type=float, default=[0.5, 2.0])
  parser.add_argument(
    '--variants', nargs='+', default=None, help='run only these (dense, hand-set, auto-B, ...)'
  )
  parser.add_argument('--runs', default='runs/auto_sensitivity')
  parser.add_argument('--output-dir', default='benchmarks/results')
  _common.add_data_arguments(parser)
  parser.add_argument('--report-only', action='store_true')
  args = parser.parse_args(argv)
  header = _common.provenance(
    sys.argv if argv is None else ['benchmarks/auto_sensitivity.py', *argv]
  )
  runs = pathlib.Path(args.runs) / f'{args.model}-seed{args.seed}'
  out = pathlib.Path(args.output_dir)
  out.mkdir(parents=True, exist_ok=True)
  configs = variants(args.model, args.seed, args.budgets)
  unknown = set(args.variants or []) - set(configs)
  if unknown:
    sys.exit(f'unknown variants {sorted(unknown)}; expected some of {list(configs)}')
  if not args.report_only:
    for name, config in configs.items():
      if args.variants is None or name in args.variants:
        dense_from = None if name == 'dense' else runs / 'dense'
        if dense_from is not None and not _common.is_complete(dense_from, 0):
          sys.exit('run the dense network first: --variants dense')
        _common.ensure_run(
          config,
          runs / name,
          dense_from=dense_from,
          data=_common.data_options(args),
          invocation=header,
        )

  rows = [r for name, c in configs.items() if (r := summary_row(name, c, runs / name))]
  if not rows:
    sys.exit('no finished runs to report')
  header['runs made at commits'] = _common.run_commits([runs / name for name in configs])
  dense = next((r for r in rows if r['variant'] == 'dense'), None)
  lines = [
    f'# Automatic per-layer targets from sensitivity vs hand-set densities: {args.model}',
    '',
    *(f'- {key}: `{value}`' for key, value in header.items()),
    *_common.recorded_lines([runs / name for name in configs]),
    f'- seed: {args.seed}; every variant prunes the same dense network',
    '- budgets fixed in advance, in validation-error percentage points; errors in % on the '
    'test set and on the validation split',
    '',
  ]
  if dense:
    lines.append(
      f'Dense: {dense["test_error"]:.2f} % test error, {dense["validation_error"]:.2f} % validation error.'
    )
    lines.append('')
  layers = list(configs['hand-set'].density)
  lines += [
    '| variant | '
    + ' | '.join(f'{layer} % kept' for layer in layers)
    + ' | compression | test error % | validation error % |',
    '|---|' + '---:|' * (len(layers) + 3),
  ]
  for r in rows:
    if r['variant'] == 'dense':
      continue
    kept = ' | '.join(f'{100 * r["density"][layer]:.1f}' for layer in layers)
    lines.append(
      f'| {r["variant"]} | {kept} | {r["compression"]:.1f}x | {r["test_error"]:.2f} '
      f'| {r["validation_error"]:.2f} |'
    )
  curves = None
  for name in configs:
    path = runs / name / 'sensitivity.json'
    if not path.exists():
      continue
    saved = json.loads(path.read_text())
    chosen = Thresholds.from_dict(saved['thresholds'])
    lines += [
      '',
      f'## `{name}`: what the sensitivity curves chose (budget {saved["budget"]:g} points)',
      '',
      chosen.to_markdown(),
    ]
    curves = curves or SensitivityResult.from_dict(saved['curves'])
  if curves is not None:
    name = f'{args.model}_sensitivity'
    curves.plot(
      out / f'{name}.png', title=f'{args.model}: one layer pruned, no retraining (validation)'
    )
    curves.to_csv(out / f'{name}.csv')
    curves.to_json(out / f'{name}.json')
    lines += [
      '',
      f"## Sensitivity curves (the paper's Fig. 6 for {args.model})",
      '',
      'The dense network, one layer pruned at a time by magnitude, no retraining, validation '
      f'error; solid: CONV layers, dashed: FC layers. Data: [{name}.csv]({name}.csv), '
      f'[{name}.json]({name}.json).',
      '',
      f'![sensitivity]({name}.png)',
      '',
      curves.to_markdown(),
    ]
  text = '\n'.join(lines) + '\n'
  _common.write_text(out / f'auto_sensitivity_{args.model}.md', text)
  print(text)


if __name__ == '__main__':
  main()
