"""Pruning methods side by side on one training budget: test error vs compression, 3 seeds.

Every run of a model trains for the same total number of epochs (dense
epochs + rounds x retraining epochs), so the methods differ in how they
spend it, not in how much they get:

* ``han-fine-tune``: Han et al.'s iterative rounds, retraining at 1/10 of
  the rate (the paper's §4);
* ``han-rewind``: the same rounds with learning-rate rewinding (Renda et al. 2020);
* ``one-shot``: one prune to the target, then all the retraining epochs of
  the rounds in one go, at 1/10 of the rate;
* ``weight-rewind``: the rounds with lottery-ticket weight rewinding to
  ``--rewind-step`` (default one epoch; Frankle et al. 2020);
* ``gradual``: Zhu & Gupta's (2017) cubic schedule inside the train step,
  ``rounds=0`` and the whole budget as round 0 (it prunes while it trains,
  so it trains from scratch, not from the shared dense network);
* ``random``: the iterative rounds (rewinding) with the per-layer counts
  chosen at random: the floor.

Per-layer kept fractions of the iterative and one-shot methods keep the
proportions of the recipe's ``density`` (``scripts/configs/<model>.py``),
scaled by one common factor so that the layers keep ``1 / compression`` of
their weights (:func:`_common.level_densities`); ``gradual`` prunes the same
fraction globally (``--gradual-scope``). Each (model, seed) trains one dense
network (``rounds=0``, the iterative methods' dense epochs) that every
method but ``gradual`` starts from (``train_and_evaluate(dense_from=...)``).

Errors are reported on a validation split carved from the training set
(``--validation-size``, default 5000) and on the official test set; any
choice made from these results (the best method per level) is made on the
validation error only.

Runs live under ``--runs`` (``<model>/seed<s>/<method>-<c>x-<epochs>ep``);
finished runs are skipped and unfinished ones resumed, so the study can be
done in pieces (one model and seed per invocation). Every invocation then
rewrites ``<output-dir>/methods_side_by_side.{json,md,png}`` from *all*
finished runs under ``--runs``; every provenance value in them (commands,
commits, machines, jax versions, data, wall times) is read from the runs.
The pieces may run on different machines: the runs of the earlier results
file whose directories are not under ``--runs`` are kept, with the
provenance they recorded, and the header counts them (``carried_over``);
a run found under ``--runs`` replaces its earlier entry. Delete the results
file to start afresh.

  python benchmarks/methods_side_by_side.py --models lenet300 --seeds 0
  python benchmarks/methods_side_by_side.py --models lenet5 --seeds 0 \\
      --methods han-rewind gradual --compressions 20 50 100
  python benchmarks/methods_side_by_side.py --report-only
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import _common
from flax import nnx

from models import MODELS, layer_costs
from pruning.data.datasets import SHIFT
from pruning.experiment import cli, pipeline
from pruning.experiment.config import prunable_layers
from pruning.experiment.run_dir import RunDir

NAMES = {'lenet300': 'LeNet-300-100', 'lenet5': 'LeNet-5'}
METHODS = ('han-fine-tune', 'han-rewind', 'one-shot', 'weight-rewind', 'gradual', 'random')
COMPRESSIONS = {'lenet300': (10, 20, 40, 70, 100), 'lenet5': (20, 50, 100)}
_RUN_NAME = re.compile(r'^(?P<method>[a-z-]+)-(?P<target>[0-9.]+)x-(?P<epochs>[0-9]+)ep$')


class Budget(NamedTuple):
  """How the iterative methods spend a run's epochs: dense, then ``rounds`` x ``retrain_epochs``."""

  dense_epochs: int
  rounds: int
  retrain_epochs: int

  @property
  def total(self) -> int:
    return self.dense_epochs + self.rounds * self.retrain_epochs


class Gradual(NamedTuple):
  """The gradual method's schedule; ``None`` epochs take :func:`gradual_epochs`' defaults."""

  scope: str = 'global'
  start_epoch: int | None = None
  end_epoch: int | None = None
  frequency: int = 100


def budget(
  model: str,
  total_epochs: int | None = None,
  rounds: int | None = None,
  dense_epochs: int | None = None,
) -> Budget:
  """The iterative methods' split of ``total_epochs`` (default: the recipe's own total).

  Raises:
    ValueError: the epochs after dense training do not split into ``rounds``
      equal retraining phases of at least one epoch.

  Examples:
    >>> budget('lenet300')
    Budget(dense_epochs=30, rounds=6, retrain_epochs=8)
    >>> budget('lenet300', total_epochs=3, rounds=2, dense_epochs=1).total
    3
  """
  recipe = _common.shipped_config(model)
  dense = recipe.dense_epochs if dense_epochs is None else dense_epochs
  rounds = recipe.rounds if rounds is None else rounds
  total = recipe.dense_epochs + recipe.rounds * recipe.retrain_epochs
  total = total if total_epochs is None else total_epochs
  if dense < 1 or rounds < 1:
    raise ValueError(f'dense epochs {dense} and rounds {rounds} must both be >= 1')
  retrain, left = divmod(total - dense, rounds)
  if retrain < 1 or left:
    raise ValueError(
      f'{total} total epochs leave {total - dense} after {dense} dense epochs, which do not '
      f'split into {rounds} rounds of equal retraining (>= 1 epoch each)'
    )
  return Budget(dense, rounds, retrain)


def gradual_epochs(total: int, options: Gradual) -> tuple[int, int]:
  """The gradual schedule's start and end epochs: by default a tenth into training and the middle.

  Examples:
    >>> gradual_epochs(78, Gradual())
    (7, 39)
    >>> gradual_epochs(3, Gradual())
    (0, 1)
  """
  start = total // 10 if options.start_epoch is None else options.start_epoch
  end = max(start + 1, total // 2) if options.end_epoch is None else options.end_epoch
  return start, end


@functools.cache
def layer_sizes(model: str) -> dict[str, int]:
  """Weights of each prunable layer of ``model`` (its kernel), from :func:`models.layer_costs`."""
  spec = MODELS[model]
  abstract = nnx.eval_shape(lambda: spec.build(nnx.Rngs(0)))
  costs = layer_costs(abstract, spec.image_shape)
  return {name: costs[name].weights for name in prunable_layers(model)}


def densities(model: str, compression: float) -> dict[str, float]:
  """Per-layer kept fractions in the recipe's proportions that keep ``1 / compression`` of the weights.

  One common factor scales the recipe's ``density`` (each capped at 1.0),
  found by bisection (:func:`_common.level_densities`): the layers' kept
  counts then sum to ``total / compression`` up to rounding each layer's.
  """
  reference = _common.shipped_config(model).density
  return _common.level_densities(1 / compression, reference, layer_sizes(model))


def dense_config(
  model: str, seed: int, plan: Budget, data: Mapping[str, Any], rewind_step: int | None
) -> pipeline.PruneConfig:
  """The shared dense network's run: the recipe with ``rounds=0`` and the plan's dense epochs."""
  return _common.shipped_config(
    model, seed=seed, rounds=0, dense_epochs=plan.dense_epochs, rewind_step=rewind_step, **data
  )


def method_config(
  model: str,
  method: str,
  compression: float,
  seed: int,
  plan: Budget,
  data: Mapping[str, Any],
  *,
  rewind_step: int | None = None,
  gradual: Gradual | None = None,
) -> pipeline.PruneConfig:
  """The configuration of one run of ``method`` at ``compression``, on ``plan.total`` epochs.

  ``data`` holds the data fields (``validation_size``, ``train_subset``, ``augment``,
  ``test_subset``) every run of the study shares.
  """
  if method not in METHODS:
    raise ValueError(f'method is {method!r}; expected one of {list(METHODS)}')
  common = {'seed': seed, **data}
  if method == 'gradual':
    gradual = gradual or Gradual()
    start, end = gradual_epochs(plan.total, gradual)
    return _common.shipped_config(
      model,
      **common,
      rounds=0,
      dense_epochs=plan.total,
      pruning_schedule='gradual',
      gradual_sparsity=1 - 1 / compression,
      gradual_scope=gradual.scope,
      gradual_start_epoch=start,
      gradual_end_epoch=end,
      gradual_frequency=gradual.frequency,
    )
  iterative = {
    **common,
    'dense_epochs': plan.dense_epochs,
    'rounds': plan.rounds,
    'retrain_epochs': plan.retrain_epochs,
    'criterion': 'sparsity',
    'density': densities(model, compression),
    'rewind_step': rewind_step,
  }
  if method == 'han-fine-tune':
    return _common.shipped_config(model, **iterative, retrain_schedule='fine-tune')
  if method == 'han-rewind':
    return _common.shipped_config(model, **iterative, retrain_schedule='rewind')
  if method == 'one-shot':
    one_shot = {**iterative, 'rounds': 1, 'retrain_epochs': plan.rounds * plan.retrain_epochs}
    return _common.shipped_config(model, **one_shot, retrain_schedule='fine-tune')
  if method == 'weight-rewind':
    return _common.shipped_config(model, **iterative, retrain_schedule='weight-rewind')
  random = {**iterative, 'criterion': 'random'}
  return _common.shipped_config(model, **random, retrain_schedule='rewind')


def total_epochs(config: pipeline.PruneConfig) -> int:
  """The epochs a run trains in all (a run seeded from a dense network counts that network's)."""
  return config.dense_epochs + config.rounds * config.retrain_epochs


# --- the runs ------------------------------------------------------------------------------------


def run_name(method: str, compression: float, epochs: int) -> str:
  return f'{method}-{compression:g}x-{epochs}ep'


def dense_name(plan: Budget, rewind_step: int | None) -> str:
  return f'dense-{plan.dense_epochs}ep' + ('' if rewind_step is None else f'-rewind{rewind_step}')


class Planned(NamedTuple):
  """One run the invocation asked for."""

  config: pipeline.PruneConfig
  workdir: pathlib.Path
  dense_from: pathlib.Path | None  # the shared dense run it starts from (None: from scratch)


def plan_runs(args, data: Mapping[str, Any]) -> list[Planned]:
  """The runs asked for, each shared dense run before the first run that starts from it.

  Raises:
    ValueError: a bad budget or option (nothing is written before this returns).
  """
  runs = pathlib.Path(args.runs)
  gradual = Gradual(
    args.gradual_scope, args.gradual_start_epoch, args.gradual_end_epoch, args.gradual_frequency
  )
  planned = []
  for model in args.models:
    plan = budget(model, args.total_epochs, args.rounds, args.dense_epochs)
    for seed in args.seeds:
      folder = runs / model / f'seed{seed}'
      dense = None
      if any(method != 'gradual' for method in args.methods):
        dense = folder / dense_name(plan, args.rewind_step)
        planned.append(
          Planned(dense_config(model, seed, plan, data, args.rewind_step), dense, None)
        )
      for compression in args.compressions or COMPRESSIONS[model]:
        for method in args.methods:
          config = method_config(
            model,
            method,
            compression,
            seed,
            plan,
            data,
            rewind_step=args.rewind_step if method == 'weight-rewind' else None,
            gradual=gradual,
          )
          workdir = folder / run_name(method, compression, plan.total)
          planned.append(Planned(config, workdir, None if method == 'gradual' else dense))
  return planned


def _differences(workdir: pathlib.Path, config: pipeline.PruneConfig) -> list[str]:
  """The fields in which the run recorded in ``workdir`` differs from ``config``."""
  recorded = _common.run_config(workdir)
  if recorded is None:
    return []
  wanted = json.loads(json.dumps(dataclasses.asdict(config)))
  return sorted(k for k in wanted if recorded.get(k) != wanted[k])


def check_planned(planned: Sequence[Planned]) -> None:
  """Refuses, before any training, a run folder that holds a run of other settings.

  Raises:
    ValueError: naming the folder and the fields that differ.
  """
  for run in planned:
    differ = _differences(run.workdir, run.config)
    if differ:
      raise ValueError(
        f'{run.workdir} holds a run with other settings ({", ".join(differ)}); '
        'use another --runs folder for these settings'
      )


class StartError(Exception):
  """A run could not start: the user's input (data, folders, settings), reported in one line."""


def ensure_run(run: Planned, data: Mapping[str, Any], invocation: Mapping[str, str]) -> bool:
  """Runs, resumes or (if finished) skips ``run``; returns whether it trained.

  The invocation (command, commit, machine, jax) is appended to the run's
  ``provenance.json`` once the pipeline has checked the run and claimed its
  folder, and before it trains.

  Raises:
    StartError: the pipeline refused to start the run (missing data, a
      folder conflict, ...); nothing of it was written.
  """
  if _common.is_complete(run.workdir, run.config.rounds):
    return False
  files = RunDir(run.workdir)
  print(f'running {run.workdir}', flush=True)
  try:
    prepared = pipeline.prepare(
      run.config,
      run.workdir,
      resume=files.holds_run(),
      dense_from=run.dense_from,
      progress=False,
      **data,
    )
  except cli.USER_ERRORS as error:  # prepare writes nothing before its checks
    raise StartError(f'{run.workdir}: {cli.one_line(error)}') from error
  invocations = json.loads(files.provenance.read_text()) if files.provenance.exists() else []
  _common.write_json(files.provenance, [*invocations, dict(invocation)])
  pipeline.run_prepared(prepared)
  return True


# --- the results ---------------------------------------------------------------------------------


def collect(runs: pathlib.Path) -> list[dict[str, Any]]:
  """One entry per finished method run under ``runs`` (every value read from its files)."""
  entries = []
  for workdir in sorted(runs.glob('*/seed*/*')):
    match = _RUN_NAME.match(workdir.name)
    config = _common.run_config(workdir)
    if not match or config is None or not _common.is_complete(workdir, config['rounds']):
      continue
    records = _common.records(workdir)
    final = records[-1]
    invocations = json.loads(RunDir(workdir).provenance.read_text())
    commits = list(dict.fromkeys(i['commit'] for i in invocations))
    dense_from = next(
      (d for d in workdir.parent.glob('dense-*') if records[0] in _common.records(d)[:1]), None
    )
    if dense_from:  # its epochs are part of this run: so are the machines that trained them
      invocations = json.loads(RunDir(dense_from).provenance.read_text()) + invocations
    entries.append(
      {
        'model': config['model'],
        'method': match['method'],
        'target_compression': float(match['target']),
        'compression': final['compression'],
        'seed': config['seed'],
        'validation_error': final.get('validation_error'),
        'test_error': final['test_error'],
        'epochs': sum(r['event'] == 'epoch' for r in records),
        'augment': bool(config.get('augment')),
        'wall_time_s': _common.wall_time(records),
        'command': invocations[0]['command'],
        'commit': commits[0],
        'resumed_at_commits': commits[1:],
        'workdir': str(workdir.relative_to(runs)),
        'dense_run': str(dense_from.relative_to(runs)) if dense_from else None,
        'machines': list(dict.fromkeys(i.get('machine', 'unknown') for i in invocations)),
        'jax': list(dict.fromkeys(i.get('jax', 'unknown') for i in invocations)),
        'data': _common.data_description([config]),
      }
    )
  return entries


def previous_entries(path: pathlib.Path) -> list[dict[str, Any]]:
  """The runs of an earlier results file at ``path`` (none if there is none).

  Entries written before runs recorded their own machines, jax and data take
  them from that file's header where it names only one of each.
  """
  if not path.exists():
    return []
  payload = json.loads(path.read_text())
  header = payload.get('provenance', {})
  only = {
    key: list(values) if len(values := header.get(key) or {}) == 1 else ['unknown']
    for key in ('machines', 'jax')
  }
  return [{**only, 'data': header.get('data'), **entry} for entry in payload.get('runs', [])]


def merge(read: Sequence[dict[str, Any]], earlier: Sequence[dict[str, Any]]) -> list[dict]:
  """The runs read here, and the earlier file's runs that are not (another machine's).

  A run is known by its ``workdir`` (``<model>/seed<s>/<method>-<c>x-<epochs>ep``):
  read here, it replaces the earlier file's entry. Carried entries are marked
  ``'carried_over': True``.
  """
  carried = [{**e, 'carried_over': True} for e in _common.not_in(earlier, read)]
  fresh = [{**e, 'carried_over': False} for e in read]
  return sorted([*fresh, *carried], key=lambda e: e['workdir'])


def provenance(entries: Sequence[Mapping[str, Any]], invocation: Mapping[str, str]) -> dict:
  """The results' provenance block, summed over the runs' own provenance fields.

  ``machines``, ``jax`` and ``commits`` count the runs (a run seeded from a
  dense network counts the dense run's machines too); ``data`` lists each
  distinct data line once; ``carried_over`` counts the runs taken from an
  earlier results file because their directories are not on this machine.
  """

  def count(values_per_run: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for values in values_per_run:
      for value in dict.fromkeys(values):
        counts[value] = counts.get(value, 0) + 1
    return counts

  data = list(dict.fromkeys(e['data'] for e in entries if e.get('data')))
  return {
    'machines': count(e['machines'] for e in entries),
    'jax': count(e['jax'] for e in entries),
    'commits': count([e['commit'], *e.get('resumed_at_commits', [])] for e in entries),
    'data': '; '.join(data) if data else None,
    'carried_over': sum(e['carried_over'] for e in entries),
    'written_by': {'command': invocation['command'], 'commit': invocation['commit']},
  }


def _groups(entries: Sequence[Mapping[str, Any]]) -> dict[tuple, dict[tuple, list[dict]]]:
  """``{(model, epochs, augment): {(method, target): [entries over seeds]}}``."""
  groups: dict[tuple, dict[tuple, list[dict]]] = {}
  for entry in entries:
    key = (entry['model'], entry['epochs'], entry.get('augment', False))
    cell = groups.setdefault(key, {})
    cell.setdefault((entry['method'], entry['target_compression']), []).append(entry)
  return groups


def _title(model: str, epochs: int, augment: bool) -> str:
  """A table's (and a plot panel's) title: the model, the budget and the augmentation if any."""
  title = f'{NAMES.get(model, model)}, {epochs} epochs per run'
  return title + f', training images shifted by up to {SHIFT} pixels' if augment else title


def _cell(values: Sequence[float | None], digits: int = 2) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return '-'
  mean, std = _common.mean_std(values)
  return f'{mean:.{digits}f} ± {std:.{digits}f}'


def markdown(entries: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
  """The summary: per model and budget, tables method x compression (mean ± std over seeds)."""
  lines = [
    '# Pruning methods side by side on one training budget',
    '',
    'Written by `benchmarks/methods_side_by_side.py` from the finished runs; every figure is '
    "a measurement of those runs, and the lines below are read from the runs' own records.",
    '',
    f'- machines: {"; ".join(f"{m} ({n} run(s))" for m, n in header["machines"].items())}',
    f'- jax: {", ".join(header["jax"])}',
    f'- commits of the runs: {", ".join(f"`{c}`" for c in header["commits"])}',
    f'- data: {header["data"]}',
    f'- written by: `{header["written_by"]["command"]}` at `{header["written_by"]["commit"]}`',
    *(
      [
        f'- {header["carried_over"]} of the {len(entries)} runs were taken from the earlier '
        'results file: their run directories were not on the machine that wrote this one'
      ]
      if header.get('carried_over')
      else []
    ),
    '',
    'Every run of a table trains for the same number of epochs. All methods but `gradual` '
    'start from one dense network per seed (trained once, `rounds=0`), whose epochs and wall '
    'time count in each of them; `gradual` prunes while it trains, so it trains from scratch. '
    'Errors are in %, mean ± std over seeds; choices (the best method per level) are made on '
    'the validation error only, never on the test error. A wall time runs from each '
    "invocation's `start` record (data opened, steps compiled) to its last record, summed "
    'over the invocations that trained the run.',
    '',
  ]
  for (model, epochs, augment), cells in _groups(entries).items():
    methods = [m for m in METHODS if any(key[0] == m for key in cells)]
    targets = sorted({key[1] for key in cells})
    head = '| method | ' + ' | '.join(f'{t:g}x' for t in targets) + ' |'
    rule = '|---|' + '---:|' * len(targets)
    lines += [f'## {_title(model, epochs, augment)}', '']
    for title, key, digits in (
      ('Test error %', 'test_error', 2),
      ('Validation error %', 'validation_error', 2),
      ('Compression reached (mean)', 'compression', 1),
    ):
      lines += [f'{title}:', '', head, rule]
      for method in methods:
        row = []
        for target in targets:
          group = cells.get((method, target), [])
          if not group:
            row.append('-')
          elif key == 'compression':
            row.append(f'{_common.mean_std([g[key] for g in group])[0]:.{digits}f}x')
          else:
            row.append(f'{_cell([g[key] for g in group], digits)} (n={len(group)})')
        lines.append(f'| {method} | ' + ' | '.join(row) + ' |')
      lines.append('')
    lines += ['Best method per level, chosen on the mean validation error:', '']
    for target in targets:
      scored = [
        (_common.mean_std([g['validation_error'] for g in group])[0], method, group)
        for (method, t), group in cells.items()
        if t == target and all(g['validation_error'] is not None for g in group)
      ]
      if scored:
        error, method, group = min(scored, key=lambda s: s[0])
        test = _common.mean_std([g['test_error'] for g in group])[0]
        tied = [f'`{m}`' for e, m, _ in scored if m != method and round(e, 2) == round(error, 2)]
        tie = f'; tied on validation with {", ".join(tied)}' if tied else ''
        lines.append(
          f'- {target:g}x: `{method}` (validation {error:.2f} %, its test error {test:.2f} %{tie})'
        )
    lines += [
      '',
      'Training cost per method (per run; a run from the shared dense network includes it):',
      '',
      '| method | runs | epochs per run | wall time per run (s) | mean per seed (s) |',
      '|---|---:|---:|---:|---|',
    ]
    for method in methods:
      group = [g for (m, _), runs in cells.items() if m == method for g in runs]
      epochs_run = sorted({g['epochs'] for g in group})
      wall = [g['wall_time_s'] for g in group]
      # Seeds may have run on machines of different speed: each seed's mean shows it.
      per_seed: dict[int, list[float]] = {}
      for g in group:
        if g['wall_time_s'] is not None:
          per_seed.setdefault(g['seed'], []).append(g['wall_time_s'])
      by_seed = ', '.join(
        f'{seed}: {_common.mean_std(w)[0]:.0f}' for seed, w in sorted(per_seed.items())
      )
      lines.append(
        f'| {method} | {len(group)} | {"/".join(map(str, epochs_run))} | {_cell(wall, 0)} '
        f'| {by_seed} |'
      )
    lines.append('')
  lines += ['![test error vs compression](methods_side_by_side.png)', '']
  return '\n'.join(lines)


def plot(entries: Sequence[Mapping[str, Any]], path: pathlib.Path) -> None:
  """Test error vs compression reached (log-log), one curve per method, error bars: std over seeds."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.ticker import FuncFormatter, NullFormatter

  groups = _groups(entries)
  fig = Figure(figsize=(5.5 * len(groups), 4.0))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(groups), squeeze=False)[0]
  for ax, ((model, epochs, augment), cells) in zip(axes, groups.items(), strict=True):
    targets = sorted({key[1] for key in cells})
    for method in METHODS:
      points = sorted((t, g) for (m, t), g in cells.items() if m == method)
      if not points:
        continue
      ax.errorbar(
        [_common.mean_std([e['compression'] for e in g])[0] for _, g in points],
        [_common.mean_std([e['test_error'] for e in g])[0] for _, g in points],
        yerr=[_common.mean_std([e['test_error'] for e in g])[1] for _, g in points],
        fmt='o-' if method != 'random' else 's--',
        capsize=3,
        markersize=4,
        label=method,
      )
    ax.set_xscale('log')
    ax.set_xticks(targets, [f'{t:g}x' for t in targets])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale('log')  # the floor (random) would flatten the others' differences
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f'{y:g}'))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: f'{y:g}'))
    ax.set_xlabel('compression (weights before / after)')
    ax.set_ylabel('test error (%)')
    ax.set_title(_title(model, epochs, augment), fontsize=9 if augment else None)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def write_results(runs: pathlib.Path, out: pathlib.Path, invocation: Mapping[str, str]) -> list:
  """Rewrites the JSON, Markdown and PNG from every finished run under ``runs``.

  Runs of the earlier results file in ``out`` whose directories are not under
  ``runs`` are kept (:func:`merge`), so the study can be spread over machines.
  """
  entries = merge(collect(runs), previous_entries(out / 'methods_side_by_side.json'))
  if not entries:
    return []
  header = provenance(entries, invocation)
  out.mkdir(parents=True, exist_ok=True)
  _common.write_json(out / 'methods_side_by_side.json', {'provenance': header, 'runs': entries})
  _common.write_text(out / 'methods_side_by_side.md', markdown(entries, header))
  plot(entries, out / 'methods_side_by_side.png')
  return entries


def parser() -> cli.Parser:
  parser = cli.Parser(prog='methods_side_by_side.py', description=__doc__.split('\n\n')[0])
  parser.add_argument('--models', nargs='+', default=['lenet300'], choices=list(NAMES))
  parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
  parser.add_argument(
    '--compressions',
    nargs='+',
    type=float,
    default=None,
    help='target compressions (default: lenet300 10 20 40 70 100, lenet5 20 50 100)',
  )
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument(
    '--total-epochs', type=int, default=None, help="epochs per run (default: the recipe's total)"
  )
  parser.add_argument(
    '--rounds', type=int, default=None, help="iterative rounds (default: the recipe's)"
  )
  parser.add_argument(
    '--dense-epochs',
    type=int,
    default=None,
    help="dense epochs of the iterative methods (default: the recipe's)",
  )
  parser.add_argument(
    '--rewind-step', type=int, default=None, help='weight-rewind step (default: one epoch)'
  )
  parser.add_argument('--gradual-scope', default='global', choices=['global', 'per-layer'])
  parser.add_argument('--gradual-start-epoch', type=int, default=None)
  parser.add_argument('--gradual-end-epoch', type=int, default=None)
  parser.add_argument('--gradual-frequency', type=int, default=100)
  parser.add_argument('--validation-size', type=int, default=5000)
  parser.add_argument('--train-subset', type=int, default=None, help='for tests')
  parser.add_argument('--test-subset', type=int, default=None, help='for tests')
  parser.add_argument('--runs', default='runs/side_by_side')
  parser.add_argument('--output-dir', default='benchmarks/results')
  _common.add_data_arguments(parser)
  parser.add_argument(
    '--augment',
    action='store_true',
    help=f'shift each training image at random by up to {SHIFT} pixels each way (the config '
    'field augment; default: none, as in the paper); use its own --runs and --output-dir',
  )
  parser.add_argument('--report-only', action='store_true', help='only rewrite the results')
  return parser


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  args = parser().parse_args(argv)
  invocation = _common.provenance(
    sys.argv if argv is None else ['benchmarks/methods_side_by_side.py', *argv]
  )
  data = {
    'validation_size': args.validation_size,
    'train_subset': args.train_subset,
    'test_subset': args.test_subset,
    'augment': True if args.augment else None,
  }
  for compression in args.compressions or ():
    if not compression > 1:
      parser().error(f'compression {compression:g} is not above 1')
  if len(set(args.seeds)) < len(args.seeds) or min(args.seeds) < 0:
    parser().error(f'seeds {args.seeds}: expected distinct integers >= 0')
  try:
    planned = [] if args.report_only else plan_runs(args, data)
    check_planned(planned)
  except ValueError as error:
    parser().error(str(error))
  for run in planned:
    try:
      ensure_run(run, _common.data_options(args), invocation)
    except StartError as error:
      parser().error(str(error))
  entries = write_results(pathlib.Path(args.runs), pathlib.Path(args.output_dir), invocation)
  if not entries:
    sys.exit(f'no finished runs under {args.runs} to report')
  print(f'wrote {args.output_dir}/methods_side_by_side.{{json,md,png}} ({len(entries)} runs)')
  return entries


if __name__ == '__main__':
  main()
