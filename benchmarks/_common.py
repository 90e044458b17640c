"""Bookkeeping shared by the experiment scripts in this folder.

Each experiment is many pipeline runs, one workdir each, resumable: a script
invoked again finishes what a killed invocation left and skips what is done,
so long experiments run in pieces (one seed per invocation) under the team's
heavy-job lock. Runs that prune the same dense network start from one dense
run (:func:`pruning.experiment.pipeline.start_from_dense`) instead of training it again.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import statistics
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from pruning import _io
from pruning.experiment import cli, pipeline, report
from pruning.experiment.run_dir import RunDir

REPO = pathlib.Path(__file__).resolve().parents[1]
# The checkout's offline copies of the official MNIST and CIFAR-10 files (see
# ../shared/datasets/README.md); the library itself never looks there.
DATASETS = REPO.parent / 'shared' / 'datasets'


RECIPES = REPO / 'scripts' / 'configs'


def shipped_config(model: str, **overrides: Any) -> pipeline.PruneConfig:
  """The configuration of the shipped recipe ``scripts/configs/<model>.py``, ``overrides`` applied."""
  return pipeline.from_recipe(RECIPES / f'{model}.py', **overrides)


def add_data_arguments(parser: argparse.ArgumentParser, dataset: str = 'mnist') -> None:
  """``--data-dir`` and ``--raw-dir``, the data options every training experiment takes.

  ``--raw-dir`` defaults as the scripts' ``--raw-data`` does
  (:func:`pruning.experiment.cli.raw_copy`): the dataset's variable if set,
  else the checkout's copy of ``dataset``.
  """
  variable = cli.RAW_COPIES[dataset][1]
  parser.add_argument(
    '--data-dir', default=None, help='where prepared tfds datasets live (default: tfds default)'
  )
  parser.add_argument(
    '--raw-dir',
    default=cli.raw_copy(dataset, DATASETS),
    help=f'the raw files {dataset} is prepared from (default: ${variable} if set, else '
    f"the checkout's copy in {DATASETS})",
  )


def data_options(args: argparse.Namespace) -> dict[str, str | None]:
  """The keywords of :func:`pruning.experiment.pipeline.train_and_evaluate` that locate data."""
  return {'data_dir': args.data_dir, 'raw_dir': args.raw_dir}


def provenance(argv: Sequence[str] | None = None) -> dict[str, str]:
  """Command, commit and machine, for the top of a results file and each run's record."""
  argv = sys.argv if argv is None else argv
  return {
    'command': shlex.join(['python', *argv]),
    'commit': report.git_commit(),
    'machine': report.machine_description(),
    'jax': jax.__version__,
  }


def records(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The ``metrics.jsonl`` records of a run."""
  path = RunDir(workdir).metrics
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def is_complete(workdir: str | os.PathLike[str], rounds: int) -> bool:
  """Whether the run in ``workdir`` has logged the end of its last round."""
  return any(r['event'] == 'round_end' and r['round'] == rounds for r in records(workdir))


def ensure_run(
  config: pipeline.PruneConfig,
  workdir: str | os.PathLike[str],
  *,
  invocation: Mapping[str, str],
  dense_from: str | os.PathLike[str] | None = None,
  data: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
  """The records of the run in ``workdir``, running or finishing it first if needed.

  With ``dense_from``, a new run starts from that run's dense network.
  ``invocation`` (the script's :func:`provenance`, taken when it started, so
  edits made while it runs do not count) is appended to the run's
  ``provenance.json``. ``data`` holds the keywords that locate the data
  (:func:`data_options`).
  """
  workdir = pathlib.Path(workdir)
  if is_complete(workdir, config.rounds):
    return records(workdir)
  started = RunDir(workdir).holds_run()
  if not started and dense_from is not None:
    pipeline.start_from_dense(dense_from, workdir, config)
    started = True
  print(f'running {workdir}', flush=True)
  workdir.mkdir(parents=True, exist_ok=True)
  log = RunDir(workdir).provenance
  invocations = json.loads(log.read_text()) if log.exists() else []
  write_json(log, [*invocations, dict(invocation)])
  result = pipeline.train_and_evaluate(
    config, workdir, resume=started, progress=False, **(data or {})
  )
  return result['records']


def level_densities(
  kept_fraction: float, reference: Mapping[str, float], sizes: Mapping[str, int]
) -> dict[str, float]:
  """Per-layer kept fractions in ``reference``'s proportions that keep ``kept_fraction`` overall.

  Each layer keeps ``min(1, c * reference[layer])`` of its weights, with the
  one scale ``c`` that makes the layers together keep ``kept_fraction`` of
  all their weights (bisection). So one family of configurations spans every
  compression level, with the layers' relative densities of the reference.
  """
  if not 0 < kept_fraction <= 1:
    raise ValueError(f'kept fraction is {kept_fraction}; expected a value in (0, 1]')
  total = sum(sizes.values())

  def kept(scale: float) -> float:
    return sum(n * min(1.0, scale * reference[layer]) for layer, n in sizes.items())

  low, high = 0.0, 1.0 / min(reference.values())
  for _ in range(200):
    middle = (low + high) / 2
    low, high = (middle, high) if kept(middle) < kept_fraction * total else (low, middle)
  return {layer: min(1.0, high * reference[layer]) for layer in sizes}


def run_commits(workdirs: Sequence[str | os.PathLike[str]]) -> dict[str, int]:
  """How many of the runs in ``workdirs`` each commit produced (or resumed)."""
  return _count_invocations(workdirs, 'commit')


def run_machines(workdirs: Sequence[str | os.PathLike[str]]) -> dict[str, int]:
  """How many of the runs in ``workdirs`` each machine produced (or resumed), as they recorded it."""
  return _count_invocations(workdirs, 'machine')


def _count_invocations(workdirs: Sequence[str | os.PathLike[str]], key: str) -> dict[str, int]:
  """Runs per value of ``key`` in their ``provenance.json`` (``'unknown'`` where not recorded)."""
  counts: dict[str, int] = {}
  for workdir in workdirs:
    path = RunDir(workdir).provenance
    invocations = json.loads(path.read_text()) if path.exists() else []
    for value in {i.get(key, 'unknown') for i in invocations} or {'unknown'}:
      counts[value] = counts.get(value, 0) + 1
  return counts


def run_config(workdir: str | os.PathLike[str]) -> dict[str, Any] | None:
  """The ``config.json`` a run recorded (``None`` if it has none)."""
  path = RunDir(workdir).config
  return json.loads(path.read_text()) if path.exists() else None


def data_sizes(config: Mapping[str, Any]) -> dict[str, Any] | None:
  """The images a run trained, validated and was tested on, from its recorded config.

  The split sizes are the dataset's (:func:`pruning.data.images.dataset_info`);
  ``validation_size`` is carved out of the training split, then
  ``train_subset`` and ``test_subset`` keep that many (as
  :mod:`pruning.data.datasets` does). ``None`` where the config names no dataset
  whose split sizes are known (synthetic data, configs older than the field).

  Examples:
    >>> sizes = data_sizes({'dataset': 'mnist', 'validation_size': 5000, 'train_subset': None,
    ...                     'test_subset': None})
    >>> sizes['train'], sizes['validation'], sizes['test'], sizes['train_subset']
    (55000, 5000, 10000, False)
    >>> data_sizes({'dataset': 'synthetic'}) is None
    True
  """
  from pruning.data import images

  try:
    info = images.dataset_info(config.get('dataset') or '')
  except ValueError:
    return None
  validation = config.get('validation_size') or 0
  train = info.splits['train'] - validation
  test = info.splits[info.eval_split]
  train_subset, test_subset = config.get('train_subset'), config.get('test_subset')
  return {
    'dataset': info.name,
    'train': min(train, train_subset) if train_subset else train,
    'train_split': info.splits['train'],
    'train_subset': bool(train_subset and train_subset < train),
    'validation': validation,
    'test': min(test, test_subset) if test_subset else test,
    'test_split': info.eval_split,
    'test_subset': bool(test_subset and test_subset < test),
  }


def data_description(configs: Sequence[Mapping[str, Any]]) -> str | None:
  """What data the runs of ``configs`` used, in words, from their configs (``None``: unknown).

  Examples:
    >>> data_description([{'dataset': 'mnist', 'validation_size': 0, 'train_subset': 256,
    ...                    'test_subset': None}])
    'mnist: trained on 256 training images (train_subset), errors on its 10,000 test images'
    >>> data_description([{'dataset': 'mnist', 'validation_size': 5000, 'train_subset': None,
    ...                    'test_subset': None, 'augment': True}])
    'mnist: trained on 55,000 training images (5,000 of its 60,000 held out for validation),
     each shifted at random by up to 2 pixels, errors on its 10,000 test images'
  """
  described = []
  for config in configs:
    sizes = data_sizes(config)
    if sizes is None:
      return None
    train = f'trained on {sizes["train"]:,} training images'
    if sizes['train_subset']:
      train += ' (train_subset)'
    elif sizes['validation']:
      train += f' ({sizes["validation"]:,} of its {sizes["train_split"]:,} held out for validation)'
    else:
      train = f'trained on all {sizes["train"]:,} training images'
    test = f'its {sizes["test"]:,} {sizes["test_split"]} images'
    if sizes['test_subset']:
      test = f'{sizes["test"]:,} of its {sizes["test_split"]} images (test_subset)'
    augmentation = _augmentation(sizes['dataset'], config.get('augment'))
    if augmentation:
      train += f', {augmentation}'
    text = f'{sizes["dataset"]}: {train}, errors on {test}'
    if text not in described:
      described.append(text)
  return '; '.join(described) if described else None


# The words for a dataset's default training augmentation (pruning.data.images.DatasetInfo).
_AUGMENTATION_WORDS = {
  'crop_flip': 'each randomly cropped (4-pixel padding) and flipped',
  'random_resized_crop': 'each a random resized crop, randomly flipped',
}


def _augmentation(dataset: str, augment: bool | None) -> str | None:
  """The training augmentation of ``dataset`` under the config's ``augment``, in words."""
  from pruning.data import datasets, images

  kind = images.dataset_info(dataset).augmentation
  if kind == 'none':  # in-memory MNIST: shifted only when asked for (the paper does not)
    return f'each shifted at random by up to {datasets.SHIFT} pixels' if augment else None
  return 'not augmented' if augment is False else _AUGMENTATION_WORDS[kind]


def recipe(config: Mapping[str, Any]) -> str:
  """A run's training recipe in words, from its recorded config.

  Examples:
    >>> recipe({'dense_epochs': 30, 'learning_rate': 0.1, 'momentum': 0.9, 'batch_size': 128,
    ...         'regularization': 'l2', 'regularization_strength': 5e-4, 'rounds': 6,
    ...         'retrain_epochs': 8, 'retrain_schedule': 'rewind'})
    '30 dense epochs, SGD momentum 0.9 at learning rate 0.1 (cosine), batch 128, L2 0.0005; 6 rounds x 8 retraining epochs (rewind)'
  """
  regularization = (
    'no regularisation'
    if config['regularization'] == 'none'
    else f'{config["regularization"].upper()} {config["regularization_strength"]:g}'
  )
  # Cosine decay per phase is the pipeline's only schedule (pruning.schedule), not a setting.
  text = (
    f'{config["dense_epochs"]} dense epochs, SGD momentum {config["momentum"]:g} at learning rate '
    f'{config["learning_rate"]:g} (cosine), batch {config["batch_size"]}, {regularization}'
  )
  if config['rounds']:
    schedule = config['retrain_schedule']
    if schedule == 'fine-tune':
      schedule += f' at {config["retrain_lr_scale"]:g}x the rate'
    text += (
      f'; {config["rounds"]} rounds x {config["retrain_epochs"]} retraining epochs ({schedule})'
    )
  return text


def recorded_lines(workdirs: Sequence[str | os.PathLike[str]]) -> list[str]:
  """Markdown lines read back from runs: machines, data and recipes, each as the runs recorded it.

  Machines from their ``provenance.json``, data (:func:`data_description`)
  and recipes (:func:`recipe`, one line per distinct recipe with its number
  of runs) from their ``config.json``; for a results file's header, so that
  none of these is typed by hand.
  """
  configs = [config for workdir in workdirs if (config := run_config(workdir))]
  machines = run_machines(workdirs)
  lines = ['- runs made on: ' + '; '.join(f'{m} ({n} run(s))' for m, n in sorted(machines.items()))]
  data = data_description(configs)
  if data:
    lines.append(f"- data, from the runs' configs: {data}")
  recipes: dict[str, int] = {}
  for config in configs:
    recipes[recipe(config)] = recipes.get(recipe(config), 0) + 1
  lines += [f"- recipe, from the runs' configs ({n} run(s)): {r}" for r, n in recipes.items()]
  return lines


def wall_time(records: Sequence[Mapping[str, Any]]) -> float | None:
  """Seconds the run trained: from each ``start`` record to the last record before the next.

  A run seeded from a dense network holds that network's records too, so its
  time includes the dense training. ``None`` for a log without ``start``
  records (runs before they were logged); time an invocation spent after
  its last record (killed mid-epoch) is not counted.

  Examples:
    >>> wall_time([{'event': 'start', 'time': 10.0}, {'event': 'epoch', 'time': 25.0},
    ...            {'event': 'start', 'time': 100.0}, {'event': 'round_end', 'time': 130.0}])
    45.0
  """
  total, begun, last = 0.0, None, None
  for record in records:
    if record['event'] == 'start':
      if begun is not None:
        total += last - begun
      begun = last = record['time']
    elif begun is not None:
      last = record['time']
  if begun is None:
    return None
  return total + last - begun


def not_in(
  earlier: Sequence[Mapping[str, Any]], fresh: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
  """The entries of an earlier results file whose run (``workdir``) is not among ``fresh``.

  A results file spread over machines keeps the runs another machine made;
  a run read or measured again replaces its earlier entry.

  Example:
    >>> not_in([{'workdir': 'a', 'x': 1}, {'workdir': 'b'}], [{'workdir': 'a', 'x': 2}])
    [{'workdir': 'b'}]
  """
  here = {entry['workdir'] for entry in fresh}
  return [entry for entry in earlier if entry['workdir'] not in here]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """Writes a results file whole (temporary file, then rename)."""
  _io.write_atomic(path, text)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
  """A JSON results file, written whole."""
  _io.write_atomic(path, json.dumps(payload, indent=2) + '\n')
