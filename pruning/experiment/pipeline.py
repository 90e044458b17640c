"""The prune-retrain pipeline: train dense, then iterative rounds of prune + retrain.

:func:`train_and_evaluate` runs Han et al.'s three steps (§3) on any model of
:data:`models.MODELS` and dataset of :data:`pruning.data.datasets.DATASETS` (the
LeNets on MNIST, VGG-16 on CIFAR-10, VGG-16 and AlexNet on ImageNet, any of
them on synthetic data): train the dense network (or load it), prune
low-magnitude connections, retrain the survivors from their trained values,
repeat (§3.4). It evaluates on the held-out test split (ImageNet's official
validation set) after dense training, right after each prune and after every
epoch, top-1 and, for 1000-class models, top-5; logs every epoch to
``metrics.jsonl``; and writes an orbax checkpoint after every round
(:mod:`pruning.experiment.checkpoints`), so ``resume=True`` continues a killed run from
its last complete round with the same data order, reaching the same final
masks. The run directory's files are named by
:class:`~pruning.experiment.run_dir.RunDir`.

The loop carries one explicit state, :class:`~pruning.experiment.run_state.RunState`
(params, the model's other state, the optimizer state, round, epoch, step),
which is what a checkpoint holds; beside it the loop keeps the current mask
on the host, fetched from the devices once when the run starts and then
replaced by each round's new mask.

One optimizer serves the whole run: ``masked_optimizer`` around SGD with
momentum (or AdamW, :func:`pruning.experiment.steps.base_optimizer`) on one
learning-rate schedule spanning all phases
(:mod:`pruning.schedule`), so the train step (:mod:`pruning.experiment.steps`) is
compiled once and each new mask is data. With ``pruning_schedule='gradual'``
the optimizer is :func:`pruning.gradual.gradual_pruning` instead, which prunes
inside the step while round 0 trains (Zhu & Gupta 2017); the loop then reads
the mask back once an epoch. With ``structure='channels'`` each round removes
whole units of the model's dependency groups instead
(:mod:`pruning.experiment.structured_rounds`), and the run ends by cutting
them out: the smaller dense model and its plan are saved in ``pruned/``, and
the last round's record gives its parameters and MACs. The
step runs data-parallel on every
device of every process (:mod:`pruning.experiment.parallel`); the model's other state
(batch-norm statistics, dropout RNG) travels with the params.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from models import MODELS, layer_costs, model_options
from pruning import _tree, gradual, masks, nm, optimizer, rounds, structured
from pruning.analysis import dropout
from pruning.data import datasets
from pruning.experiment import auto_targets, checkpoints, parallel, report, steps, structured_rounds
from pruning.experiment.config import (
  PruneConfig,
  field_defaults,
  from_recipe,
  load_recipe,
  prunable_layers,
)
from pruning.experiment.run_dir import RunDir
from pruning.experiment.run_state import RunState

start_from_dense = checkpoints.start_from_dense
prune_round = rounds.prune_round

__all__ = [
  'MODELS',
  'PruneConfig',
  'error_rates',
  'from_recipe',
  'load_data',
  'load_recipe',
  'prunable_layers',
  'prune_round',
  'start_from_dense',
  'train_and_evaluate',
]


# --- the run -------------------------------------------------------------------------------------

_NAN_CHECK_STEPS = 50  # steps between looks at the loss (each one waits for the device)


def input_options(
  config: PruneConfig,
  mesh: Mesh,
  *,
  data_dir: str | None = None,
  raw_dir: str | None = None,
  workers: int = 0,
) -> datasets.InputOptions:
  """How a run of ``config`` on ``mesh`` opens its data: this process's share of each batch.

  Examples:
    >>> from pruning.experiment import parallel
    >>> from pruning.experiment.config import PruneConfig
    >>> config = PruneConfig(model='lenet5', batch_size=64, rounds=0)
    >>> options = input_options(config, parallel.data_mesh())
    >>> options.batch_size, options.image_shape, options.shard_count
    (64, (28, 28, 1), 1)
  """
  spec = MODELS[config.model]
  return datasets.InputOptions(
    batch_size=parallel.local_batch_size(config.batch_size, mesh) * jax.process_count(),
    eval_batch_size=parallel.local_batch_size(config.eval_batch_size, mesh, what='eval_batch_size')
    * jax.process_count(),
    seed=config.seed,
    validation_size=config.validation_size,
    train_subset=config.train_subset,
    test_subset=config.test_subset,
    augment=config.augment,
    image_shape=spec.image_shape,
    num_classes=spec.num_classes,
    data_dir=data_dir,
    raw_dir=raw_dir,
    workers=workers,
    shard_index=jax.process_index(),
    shard_count=jax.process_count(),
    mesh=mesh,
  )


def load_data(
  config: PruneConfig, data_dir=None, raw_dir=None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """MNIST as arrays: the train (and validation) split and the official test split."""
  # Arrays, not batches: one device, so no batch size has to split over the devices.
  mesh = parallel.data_mesh(jax.local_devices()[:1])
  options = input_options(config, mesh, data_dir=data_dir, raw_dir=raw_dir)
  data = datasets.open_mnist(options)
  return {**data.evaluation_data, 'train': data.train}


def error_rates(
  count_errors: Callable[..., Any], params: Any, rest: Any, data: datasets.Input, split: str, mesh
) -> dict[int, float]:
  """Top-k error (%) over a whole split, for each k the count function reports."""
  errors: dict[int, int] = {}
  total = 0
  for images, labels, valid in data.evaluation(split):
    images, labels, valid = parallel.global_batch(mesh, images, labels, valid)
    counts = count_errors(params, rest, images, labels, valid)
    for k, count in counts.items():
      errors[k] = errors.get(k, 0) + int(parallel.fetch(count))
    # Counted on the global mask: the last batch's padding may be one process's share alone.
    total += int(parallel.fetch(jnp.count_nonzero(valid)))
  return {k: 100.0 * count / total for k, count in errors.items()}


def train_and_evaluate(
  config: PruneConfig,
  workdir: str | pathlib.Path,
  *,
  resume: bool = False,
  dense_from: str | pathlib.Path | None = None,
  data_dir: str | None = None,
  raw_dir: str | None = None,
  progress: bool = True,
  on_epoch_end: Callable[[int, int], None] | None = None,
  mesh: Mesh | None = None,
  input_workers: int = 0,
  checkpoint_epochs: bool = False,
) -> dict[str, Any]:
  """Runs dense training (or loads it) and ``config.rounds`` prune-retrain rounds.

  Args:
    config: the run's configuration.
    workdir: output folder (its layout: :class:`~pruning.experiment.run_dir.RunDir`):
      ``config.json``, ``metrics.jsonl``, ``checkpoints/`` (one per round),
      and the reports written by :mod:`pruning.experiment.report` through
      the scripts.
    resume: continue the run in ``workdir`` from its last complete round.
    dense_from: start from the dense network (round 0) of the run in this
      folder instead of training one
      (:func:`~pruning.experiment.checkpoints.start_from_dense`); with
      ``resume``, a ``workdir`` already seeded continues as it is.
    data_dir: where prepared tfds datasets live.
    raw_dir: where the raw files are (the MNIST IDX files, the CIFAR-10
      archive), used when a dataset is prepared.
    progress: show tqdm progress bars.
    on_epoch_end: called with ``(round, epoch)`` after each epoch (tests use
      it to interrupt a run).
    mesh: the ``('data',)`` device mesh; default: every device of every
      process (:func:`pruning.experiment.parallel.data_mesh`).
    input_workers: input worker processes, for datasets read through grain.
    checkpoint_epochs: also checkpoint after every epoch of a round (only
      the latest is kept, in ``epoch_checkpoint/``), so a killed run resumes
      mid-round: for long dense phases.

  Returns:
    A summary: per-round records (test error, kept weights), the final mask
    statistics, the final params and mask, and per-layer costs.

  Everything that can be checked is checked before anything is written: the
  configuration against the model, the workdir (:func:`~pruning.experiment.checkpoints.check_config`),
  ``dense_from``, the data (opened) and the compiled steps; a start that fails
  leaves ``workdir`` as it was.

  Raises:
    FileExistsError: ``workdir`` holds a run and ``resume`` is false.
    FileNotFoundError: ``resume`` and ``workdir`` holds no run; ``dense_from``
      holds no dense phase.
    ValueError: resuming with a different configuration, or a ``dense_from``
      run trained differently (naming the fields); a target for a layer the
      model lacks.
    pruning.data.datasets.DataFilesError: the data are missing or corrupt.
    FloatingPointError: the training loss became NaN or infinite.
  """
  return run_prepared(
    prepare(
      config,
      workdir,
      resume=resume,
      dense_from=dense_from,
      data_dir=data_dir,
      raw_dir=raw_dir,
      progress=progress,
      mesh=mesh,
      input_workers=input_workers,
    ),
    on_epoch_end=on_epoch_end,
    checkpoint_epochs=checkpoint_epochs,
  )


class Prepared(NamedTuple):
  """A run checked and set up by :func:`prepare`, its directory claimed; :func:`run_prepared` runs it."""

  run: _Run
  compiled: steps.Steps  # the model's compiled steps, with its initial params
  costs: dict[str, Any]  # per-layer costs (models.layer_costs)
  resume: bool  # continue from the run's checkpoints (also after seeding from dense_from)


def prepare(
  config: PruneConfig,
  workdir: str | pathlib.Path,
  *,
  resume: bool = False,
  dense_from: str | pathlib.Path | None = None,
  data_dir: str | None = None,
  raw_dir: str | None = None,
  progress: bool = True,
  mesh: Mesh | None = None,
  input_workers: int = 0,
) -> Prepared:
  """The first half of :func:`train_and_evaluate` (same arguments): checks, opens, compiles.

  Every check is made before anything is written, so a start that fails
  (the exceptions in :func:`train_and_evaluate`'s ``Raises``) leaves
  ``workdir`` as it was; a command line reports them as the user's mistakes,
  while what :func:`run_prepared` raises is not.
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  run, compiled, costs = _set_up(
    config, workdir, resume, dense_from, mesh, data_dir, raw_dir, input_workers, progress
  )
  return Prepared(run, compiled, costs, resume or dense_from is not None)


def run_prepared(
  prepared: Prepared,
  *,
  on_epoch_end: Callable[[int, int], None] | None = None,
  checkpoint_epochs: bool = False,
) -> dict[str, Any]:
  """The second half of :func:`train_and_evaluate`: the prune-retrain loop of a prepared run."""
  run, compiled, costs, resume = prepared
  config = run.config
  saved = checkpoints.RoundCheckpoints(run.files.checkpoints)
  in_round = checkpoints.EpochCheckpoint(run.files.epoch_checkpoint)
  rewind = checkpoints.RewindPoint(run.files.rewind_point)
  state, first_round = _start(run, compiled, saved, in_round, resume)
  # Each invocation that trains (a start or a --resume) is marked, so the log gives the
  # run's wall time (from each start to the invocation's last record), the commit of the
  # code each piece ran (a run of hours may end after new commits) and the data it read.
  if first_round <= config.rounds:
    start = {'round': first_round, 'event': 'start', 'epoch': state.epoch, 'resumed': resume}
    _log(run, start | {'commit': report.git_commit(), 'data': run.data.provenance})
  # The loop keeps the mask on the host from here on: it changes only when a round prunes.
  mask = _host_mask(run, state)
  if config.dropout and state.round > 0:
    compiled, state, _ = _with_dropout_rates(run, compiled, state, mask)
  started = time.perf_counter()
  targets = None if config.auto_sensitivity is not None else config
  for round_index in range(first_round, config.rounds + 1):
    epochs = _round_epochs(config, round_index)
    if round_index > 0 and state.epoch == epochs.start:  # not a round resumed mid-way
      host_params = jax.tree.map(parallel.fetch, state.params)
      if run.unit_groups is not None:
        compiled, state, mask = _prune_units(
          run, compiled, state, mask, host_params, round_index, rewind
        )
      else:
        if targets is None:
          targets = _auto_targets(run, compiled, state, host_params, round_index)
        compiled, state, mask = _prune(
          run, compiled, state, mask, host_params, targets, round_index, rewind
        )
    for epoch in range(state.epoch, epochs.stop):
      state, loss = _train_epoch(run, compiled.train, state, epochs, rewind)
      if config.pruning_schedule == 'gradual':  # the step changed it: fetched once an epoch
        mask = _host_mask(run, state)
      record = {
        'round': round_index,
        'event': 'epoch',
        'epoch': epoch,
        'step': state.step,
        'learning_rate': _rate_of(state.opt_state),
        'train_loss': loss,
        **_errors(run, compiled, state),
      }
      if config.pruning_schedule == 'gradual':
        overall = masks.mask_stats(mask).overall
        record |= {'kept': overall.kept, 'total': overall.total}
        record |= _nm_valid_layers(run, mask)
      _log(run, record)
      if checkpoint_epochs and state.epoch < epochs.stop:
        in_round.save(state)  # the round's own checkpoint follows its last epoch
      if on_epoch_end is not None:
        on_epoch_end(round_index, epoch - epochs.start)
    stats = masks.mask_stats(mask).overall
    record = {
      'round': round_index,
      'event': 'round_end',
      **_errors(run, compiled, state),
      'kept': stats.kept,
      'total': stats.total,
      'compression': stats.compression,
      'wall_time_s': time.perf_counter() - started,
    }
    if run.unit_groups is not None and round_index == config.rounds > 0:
      record |= _remove_units(run, compiled, state, mask, costs)
    _log(run, record)
    parallel.check_replicated(
      (state.params, state.rest, state.opt_state),
      f'the run states at the end of round {round_index}',
    )
    if round_index == 0:
      _keep_rewind_point(run, rewind, state)
    saved.save(state)
    in_round.clear()
  saved.close()
  in_round.close()
  rewind.close()
  return {
    'config': dataclasses.asdict(config),
    'records': checkpoints.read_records(run.files.metrics),
    'mask_stats': masks.mask_stats(mask),
    'params': state.params,
    'mask': mask,
    'layer_costs': costs,
  }


# --- the loop's pieces ---------------------------------------------------------------------------


class _Run(NamedTuple):
  """What stays fixed through a run; the loop's pieces read it."""

  config: PruneConfig
  files: RunDir  # where the run keeps its files
  mesh: Mesh  # the ('data',) device mesh
  data: datasets.Input
  tx: optax.GradientTransformation  # masked SGD (or AdamW); the rate is set before each step
  penalty: steps.Penalty  # the regularisation term (§3.1)
  learning_rate: Callable[[int], float]  # step -> rate, over every phase (pruning.schedule)
  steps_per_epoch: int
  rewind_step: int  # the dense step whose state the rewind point holds (weight rewinding)
  top_k: tuple[int, ...]  # the top-k errors evaluated: (1,), or (1, 5) for 1000-class models
  groups: dict[str, list[str]]  # {'conv': [...], 'fc': [...]}: the prunable layers (§3.3)
  dense_dropout: dict[str, float]  # each dropout module's dense-training rate, D_o of §3.2
  progress: bool  # show tqdm bars (process 0 only)
  # structure='channels': the model's dependency groups (pruning.structured); else None
  unit_groups: list[structured.DependencyGroup] | None = None
  # structure='channels': the groups removal cannot cut out, kept whole, and why
  kept_whole: dict[str, str] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)
  # nm set: the layers N:M pruning prunes (every prunable one but nm_dense); else None
  nm_layers: list[str] | None = None


def _set_up(
  config: PruneConfig,
  workdir: str | pathlib.Path,
  resume: bool,
  dense_from: str | pathlib.Path | None,
  mesh: Mesh,
  data_dir: str | None,
  raw_dir: str | None,
  input_workers: int,
  progress: bool,
) -> tuple[_Run, steps.Steps, dict[str, Any]]:
  """Checks the config against the model and the workdir, opens the data, compiles, and
  only then claims the run directory (seeded from ``dense_from`` if given).

  Returns the run, the model's compiled steps (with its initial params) and
  its per-layer costs.
  """
  spec = MODELS[config.model]
  options = model_options(
    config.model,
    width=config.width,
    batch_norm=config.batch_norm,
    dropout_rate=config.dropout_rate,
    dtype=config.dtype,
  )
  _check_smaller_start(config)
  abstract = _model(config, spec, options, abstract=True)
  costs = layer_costs(abstract, spec.image_shape)
  groups = rounds.layer_groups(nnx.state(abstract, nnx.Param))
  _check_targets(config, costs, groups, dropout.dropout_rates(abstract))
  # Traced once, before anything is written: a model the rules cannot follow fails here.
  unit_groups, kept_whole = None, {}
  if config.structure == 'channels':
    unit_groups, kept_whole = structured_rounds.unit_groups(abstract, spec.image_shape)
  nm_layers = None
  if config.nm is not None:  # every pruned layer's inputs split into groups of M
    nm_layers = rounds.nm_layers(nnx.state(abstract, nnx.Param), config.nm_pair[1], config.nm_dense)
  inputs = input_options(config, mesh, data_dir=data_dir, raw_dir=raw_dir, workers=input_workers)
  files = RunDir(workdir)
  seed_from = None if dense_from is None or (resume and files.holds_run()) else dense_from
  if seed_from is not None:
    checkpoints.check_dense_source(seed_from, files.path, config)
  else:
    checkpoints.check_config(files, dataclasses.asdict(config), field_defaults(), resume)
  if config.dense_checkpoint and not pathlib.Path(config.dense_checkpoint).exists():
    raise FileNotFoundError(f'dense_checkpoint {config.dense_checkpoint} does not exist')
  # Process 0 prepares a dataset missing from a shared data_dir; the others then open it.
  data = parallel.process_zero_first(
    lambda: datasets.open_input(config.dataset, inputs), f'opening {config.dataset}'
  )
  steps_per_epoch = data.steps_per_epoch()
  learning_rate = config.learning_rate_schedule(steps_per_epoch)
  rewind_step = steps_per_epoch if config.rewind_step is None else config.rewind_step
  _check_rewind_point(config, files, seed_from, resume, rewind_step, steps_per_epoch)
  # The rate is data in the optimizer state, set on the host before each step: the
  # compiled step holds no schedule (see PruneConfig.learning_rate_schedule), and the
  # rate logged is the one the step used.
  base = steps.base_optimizer(
    config.optimizer,
    learning_rate(0),
    momentum=config.momentum,
    weight_decay=config.weight_decay,
  )
  if config.pruning_schedule == 'gradual':
    # Zhu & Gupta: the mask follows the cubic schedule inside the compiled step.
    tx = gradual.gradual_pruning(
      base,
      config.gradual_schedule(steps_per_epoch),
      scope=config.gradual_scope,
      nm=None if config.nm is None else config.nm_pair,
      pattern=masks.KERNEL_PATTERN if config.nm is None else rounds.kernels_pattern(nm_layers),
    )
  elif unit_groups is not None:
    # Every member of a prunable group is masked from the start (all kept), so each
    # round's mask, over biases and norm scales too, is data for replace_mask.
    tx = optimizer.masked_optimizer(
      base, structured_rounds.initial_mask(nnx.state(abstract, nnx.Param), unit_groups)
    )
  else:
    tx = optimizer.masked_optimizer(base)
  penalty = steps.penalty(config.regularization, config.regularization_strength)
  if unit_groups is not None:
    penalty = _on_kernels(penalty)
  model = _model(config, spec, options)
  run = _Run(
    config=config,
    files=files,
    mesh=mesh,
    data=data,
    tx=tx,
    penalty=penalty,
    learning_rate=learning_rate,
    steps_per_epoch=steps_per_epoch,
    rewind_step=rewind_step,
    top_k=(1, 5) if spec.num_classes >= 100 else (1,),
    groups=groups,
    dense_dropout=dropout.dropout_rates(model),
    progress=progress and jax.process_index() == 0,
    unit_groups=unit_groups,
    kept_whole=kept_whole,
    nm_layers=nm_layers,
  )
  compiled = steps.compile_steps(model, tx, run.penalty, mesh, run.top_k, config.compiler_options)
  # Every process has checked the workdir before process 0 writes into it, and
  # none goes on before the files are there (parallel.py's module docstring).
  parallel.barrier('run checked')
  if jax.process_index() == 0:
    if seed_from is not None:
      checkpoints.start_from_dense(seed_from, files.path, config)
    checkpoints.write_config(files, dataclasses.asdict(config))
  parallel.barrier('run directory written')
  return run, compiled, costs


def _round_epochs(config: PruneConfig, round_index: int) -> range:
  """The run's global indices of the epochs of round ``round_index`` (0: dense training)."""
  if round_index == 0:
    return range(config.dense_epochs)
  start = config.dense_epochs + (round_index - 1) * config.retrain_epochs
  return range(start, start + config.retrain_epochs)


def _start(
  run: _Run,
  compiled: steps.Steps,
  saved: checkpoints.RoundCheckpoints,
  in_round: checkpoints.EpochCheckpoint,
  resume: bool,
) -> tuple[RunState, int]:
  """The state the run starts from and its first round.

  Resumed from the run's checkpoints (:func:`_resume`) where it has any;
  otherwise new, from the initialised model or with a dense checkpoint's
  weights (``config.dense_checkpoint``), and with a new metrics log.
  """
  params, rest = compiled.params, compiled.rest
  opt_state = parallel.replicate(run.tx.init(params), run.mesh)
  initial = RunState(params, rest, opt_state, round=0, epoch=0, step=0)
  if resume:
    resumed = _resume(run, saved, in_round, initial)
    if resumed is not None:
      return resumed
  if jax.process_index() == 0:
    run.files.metrics.unlink(missing_ok=True)
  if run.config.dense_checkpoint and not structured.holds_plan(run.config.dense_checkpoint):
    # (A structured run's pruned/ folder: the model was built from it, variables included.)
    params, rest = parallel.replicate(
      checkpoints.load_dense(run.config.dense_checkpoint, params, rest), run.mesh
    )
  return initial._replace(params=params, rest=rest), 0


def _resume(
  run: _Run,
  saved: checkpoints.RoundCheckpoints,
  in_round: checkpoints.EpochCheckpoint,
  like: RunState,
) -> tuple[RunState, int] | None:
  """The saved state to continue from and the round to continue with (``None``: nothing saved).

  After the last complete epoch of a round in progress (an epoch checkpoint
  newer than the last round's), else after the last complete round; the
  metrics log is cut back to the same point, so the records of the work
  redone are not doubled.
  """
  last = saved.latest_round()
  mid = in_round.latest_epoch()
  if mid is not None:
    state = in_round.restore(mid, like)
    if last is None or state.round > last:
      # Killed in the middle of a round: continue after its last completed epoch.
      if jax.process_index() == 0:
        checkpoints.truncate_metrics_after_epoch(run.files.metrics, state.round, mid)
      return parallel.replicate(state, run.mesh), state.round
  if last is None:
    return None
  state = saved.restore(last, like, epoch=_round_epochs(run.config, last).stop)
  if jax.process_index() == 0:
    checkpoints.truncate_metrics(run.files.metrics, last)
  return parallel.replicate(state, run.mesh), last + 1


def _prune(
  run: _Run,
  compiled: steps.Steps,
  state: RunState,
  mask: Any,
  host_params: Any,
  targets: PruneConfig,
  round_index: int,
  rewind: checkpoints.RewindPoint,
) -> tuple[steps.Steps, RunState, Any]:
  """Prunes round ``round_index`` and logs its ``'pruned'`` record.

  The mask is chosen on the trained weights (before any weight rewinding)
  and made the run's by :func:`_install_mask`; with alternating rounds the
  other layer group is frozen (§3.3).

  Args:
    run: the run.
    compiled: the current steps.
    state: the state after the previous round.
    mask: the current mask, on the host.
    host_params: ``state.params`` on the host.
    targets: the config whose targets the rounds reach.
    round_index: the round, 1..``config.rounds``.
    rewind: the rewind point (read for weight rewinding only).

  Returns:
    The steps (recompiled if the dropout rates changed), the state of the
    new round, and its mask on the host.

  References:
    Han et al. 2015, §3.4 (iterative pruning).
  """
  new, group, round_targets = rounds.prune_round(
    host_params, mask, targets, round_index, run.groups
  )
  frozen = None
  if run.config.alternate:
    others = run.groups.get({'fc': 'conv', 'conv': 'fc'}.get(group), [])
    frozen = '|'.join(f'^{layer}/' for layer in others) or None
  compiled, state, mask, notes = _install_mask(
    run, compiled, state, new, round_index, rewind, frozen=frozen
  )
  stats = masks.mask_stats(mask)
  target_name = 'quality' if targets.by_quality else 'density'
  record = {
    'round': round_index,
    'event': 'pruned',
    'group': group,
    **_errors(run, compiled, state, validation=False),
    'kept': stats.overall.kept,
    'total': stats.overall.total,
    target_name: round_targets,
    'layers': {
      name.rpartition('/')[0]: {'kept': layer.kept, 'total': layer.total}
      for name, layer in stats.layers.items()
    },
    **notes,
    **_nm_valid_layers(run, mask),
  }
  _log(run, record)
  return compiled, state, mask


def _install_mask(
  run: _Run,
  compiled: steps.Steps,
  state: RunState,
  new: Any,
  round_index: int,
  rewind: checkpoints.RewindPoint,
  *,
  frozen: str | None = None,
) -> tuple[steps.Steps, RunState, Any, dict[str, Any]]:
  """Makes ``new``, round ``round_index``'s mask chosen on the host, the run's mask.

  The mask goes into the optimizer state and zeroes the pruned weights;
  with weight rewinding the survivors, the optimizer state and the model's
  other state first go back to the rewind point (Frankle et al. 2020); the
  parameters ``frozen`` matches (a pattern) are not updated (§3.3's
  alternating rounds); the dropout rates follow the connections left (§3.2).

  Returns:
    The steps (recompiled if the dropout rates changed), the state of the
    new round, the mask on the host, and the ``'pruned'`` record's notes on
    the dropout rates and the rewinding.
  """
  # Each process chose the mask on its own host: replicated, it must be one mask.
  parallel.check_replicated(new, f'the masks of round {round_index}')
  placed = parallel.replicate(new, run.mesh)
  rewound = run.config.retrain_schedule == 'weight-rewind'
  if rewound:
    state = rewind.restore(state)
  opt_state = optimizer.replace_mask(state.opt_state, placed)
  params = masks.apply_mask(state.params, placed)
  if run.config.alternate:
    opt_state = optimizer.set_frozen(opt_state, frozen)
  params, opt_state = parallel.replicate((params, opt_state), run.mesh)
  state = state._replace(params=params, opt_state=opt_state, round=round_index)
  mask = jax.tree.map(parallel.fetch, new)
  rates = {}
  if run.config.dropout:
    compiled, state, rates = _with_dropout_rates(run, compiled, state, mask)
  notes = {
    **({'dropout_rates': rates} if rates else {}),
    **({'rewound_to_step': run.rewind_step} if rewound else {}),
  }
  return compiled, state, mask, notes


def _unit_gradients(run: _Run, compiled: steps.Steps, state: RunState) -> list[Any]:
  """The loss gradients of the first ``structured_grad_batches`` training batches of the
  coming epoch, on the host, for a structured criterion that scores from gradients
  (``[]`` for the others)."""
  config = run.config
  if not structured.STRUCTURED_CRITERIA[config.structured_criterion].needs_grads:
    return []
  grads = []
  for images, labels in run.data.train_epoch(state.epoch):
    images, labels = parallel.global_batch(run.mesh, images, labels)
    batch = compiled.gradients(state.params, state.rest, images, labels)
    grads.append(jax.tree.map(parallel.fetch, batch))
    if len(grads) == config.structured_grad_batches:
      break
  return grads


def _nm_valid_layers(run: _Run, mask: Any) -> dict[str, list[str]]:
  """``{'nm_valid_layers': [...]}``, the N:M-pruned layers whose every group keeps at most
  N (all of them once N:M pruning is done), for a record; ``{}`` without ``nm``."""
  if run.nm_layers is None:
    return {}
  validity = nm.nm_validity(
    mask, *run.config.nm_pair, pattern=rounds.kernels_pattern(run.nm_layers)
  )
  return {
    'nm_valid_layers': sorted(name.rpartition('/')[0] for name, v in validity.items() if v.valid)
  }


def _on_kernels(penalty: steps.Penalty) -> steps.Penalty:
  """``penalty`` over the kernels the mask holds: biases and norm scales, which a
  structured mask holds too, are not regularised, as in an unstructured run (§3.1)."""
  kernel = _tree.compile_pattern(masks.KERNEL_PATTERN)

  def on_kernels(params: Any, mask: Any) -> jax.Array:
    kernels = _tree.map_named(lambda name, m: m if kernel.search(name) else None, mask)
    return penalty(params, kernels)

  return on_kernels


def _prune_units(
  run: _Run,
  compiled: steps.Steps,
  state: RunState,
  mask: Any,
  host_params: Any,
  round_index: int,
  rewind: checkpoints.RewindPoint,
) -> tuple[steps.Steps, RunState, Any]:
  """Removes the units of round ``round_index`` (``structure='channels'``) and logs its ``'pruned'`` record.

  The plan (:func:`~pruning.experiment.structured_rounds.round_plan`) keeps
  a subset of the previous round's units; its mask, over every member of
  every prunable group, goes into the optimizer state and zeroes whole
  channels (kernel slices, biases, norm scales, the next layer's inputs).
  Weight rewinding and the dropout rates follow as in :func:`_prune` (:func:`_install_mask`).

  Returns:
    The steps, the state of the new round, and its mask on the host.
  """
  groups = run.unit_groups
  grads = _unit_gradients(run, compiled, state)
  plan, sparsity = structured_rounds.round_plan(
    host_params, mask, groups, run.config, round_index, grads
  )
  new = structured.structured_mask(host_params, groups, plan)
  compiled, state, mask, notes = _install_mask(run, compiled, state, new, round_index, rewind)
  stats = masks.mask_stats(mask)
  sizes = {name: g.size for name, g in zip(structured.group_names(groups), groups, strict=True)}
  record = {
    'round': round_index,
    'event': 'pruned',
    **_errors(run, compiled, state, validation=False),
    'kept': stats.overall.kept,  # entries of the masked params (kernels, biases, norm scales)
    'total': stats.overall.total,
    'structured_sparsity': sparsity,
    'groups': {name: {'kept': len(kept), 'total': sizes[name]} for name, kept in plan.items()},
    **({'kept_whole': sorted(run.kept_whole)} if run.kept_whole else {}),
    **notes,
  }
  _log(run, record)
  return compiled, state, mask


def _remove_units(
  run: _Run, compiled: steps.Steps, state: RunState, mask: Any, costs: dict[str, Any]
) -> dict[str, Any]:
  """Cuts the removed units out of the final model and saves it with its plan in ``pruned/``.

  Returns the fields of the last round's ``'round_end'`` record it adds: the
  groups' widths, and the smaller model's parameters and MACs against the
  dense model's.

  The outputs of the smaller model are checked against the masked model's on
  a batch of test images (:func:`pruning.structured.remove_units`).
  """
  config = run.config
  host = jax.tree.map(_on_host, (state.params, state.rest))
  model = nnx.merge(compiled.graphdef, *host)
  images, _, valid = next(iter(run.data.evaluation('test')))
  images = np.asarray(images)[np.asarray(valid)][:16]
  options = _plan_options(config)
  removed = structured_rounds.remove(
    model,
    run.unit_groups,
    mask,
    images,
    MODELS[config.model].image_shape,
    model_name=config.model,
    options=options,
  )
  if jax.process_index() == 0:
    structured.save_pruned(run.files.pruned_model, removed.model, removed.record)
  return {
    'widths': {name: group['width'] for name, group in removed.record['groups'].items()},
    **structured_rounds.cost_summary(costs, removed.costs, removed.model),
  }


def _host_mask(run: _Run, state: RunState) -> Any:
  """The optimizer state's mask, fetched to the host.

  A gradual step masks only the layers it prunes; the kernels it leaves out
  (``nm_dense``) are filled in as kept whole, as the rounds' masks hold them,
  so ``kept`` and ``total`` count the same weights whatever the schedule.
  """
  mask = jax.tree.map(parallel.fetch, optimizer.get_mask(state.opt_state))
  if run.config.pruning_schedule != 'gradual':
    return mask
  # intersect_masks computes in jax.numpy: its result is brought back to the host.
  return jax.tree.map(np.asarray, masks.intersect_masks(masks.prunable_mask(state.params), mask))


def _on_host(x: jax.Array) -> Any:
  """A host copy of a replicated array; a PRNG key (a dropout's) as a key again."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    data = parallel.fetch(jax.random.key_data(x))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  return parallel.fetch(x)


def _train_epoch(
  run: _Run,
  train_step: Callable[..., Any],
  state: RunState,
  epochs: range,
  rewind: checkpoints.RewindPoint | None = None,
) -> tuple[RunState, float]:
  """Trains the run's epoch ``state.epoch``, one of ``epochs`` (its round's).

  In dense training, the state after ``run.rewind_step`` steps is saved as
  the ``rewind`` point (if one is given) when the epoch passes that step.

  Returns the state after it and its mean training loss.

  Raises:
    FloatingPointError: the loss became NaN or infinite.
  """
  epoch = state.epoch - epochs.start  # within the round
  params, rest, opt_state, step = state.params, state.rest, state.opt_state, state.step
  losses = []
  bar = tqdm(
    run.data.train_epoch(state.epoch),
    total=run.steps_per_epoch,
    desc=f'round {state.round}/{run.config.rounds} epoch {epoch + 1}/{len(epochs)}',
    disable=not run.progress,
    leave=False,
  )
  for images, labels in bar:
    if rewind is not None and state.round == 0 and step == run.rewind_step:
      _keep_rewind_point(run, rewind, RunState(params, rest, opt_state, 0, state.epoch, step))
    images, labels = parallel.global_batch(run.mesh, images, labels)
    opt_state = _at_rate(opt_state, run.learning_rate(step))
    params, rest, opt_state, metrics = train_step(params, rest, opt_state, images, labels)
    losses.append(metrics['loss'])
    step += 1
    if len(losses) % _NAN_CHECK_STEPS == 0:
      recent = float(parallel.fetch(losses[-1]))
      _check_finite(recent, state.round, epoch)
      bar.set_postfix(loss=f'{recent:.4f}', refresh=False)
  loss = float(np.mean([parallel.fetch(x) for x in losses]))
  _check_finite(loss, state.round, epoch)
  return RunState(params, rest, opt_state, state.round, state.epoch + 1, step), loss


def _errors(
  run: _Run, compiled: steps.Steps, state: RunState, *, validation: bool = True
) -> dict[str, float]:
  """The test errors (%) of ``state``, and the validation errors where the run has that split.

  Keys: ``'test_error'``, ``'test_error_top5'`` (1000-class models),
  ``'validation_error'``, ...
  """
  splits = ['test']
  if validation and 'validation' in run.data.splits:
    splits.append('validation')
  errors = {}
  for split in splits:
    rates = error_rates(compiled.count_errors, state.params, state.rest, run.data, split, run.mesh)
    errors |= {f'{split}_error' if k == 1 else f'{split}_error_top{k}': r for k, r in rates.items()}
  return errors


def _log(run: _Run, record: dict[str, Any]) -> None:
  """Appends ``record`` to the metrics log (from process 0), its round first and the time last."""
  record = {'round': record.pop('round'), **record, 'time': time.time()}
  if jax.process_index() == 0:
    checkpoints.append_record(run.files.metrics, record)


def _check_targets(
  config: PruneConfig,
  costs: Mapping[str, Any],
  groups: Mapping[str, list[str]],
  dropout_rates: Mapping[str, float],
) -> None:
  """Checks, before any work, that the dropout map and the round schedule fit the model.

  (The per-layer densities and qualities are checked by :class:`PruneConfig`.)
  """
  layers = list(costs)
  for module, layer in config.dropout.items():
    if module not in dropout_rates:
      raise ValueError(
        f'dropout {module!r} is not an nnx.Dropout of {config.model}: {sorted(dropout_rates)}'
      )
    if layer not in layers:
      raise ValueError(f'dropout {module!r} follows {layer!r}, not a layer of {config.model}')
  if (
    config.alternate
    and config.structure == 'unstructured'
    and config.rounds == 1
    and groups['conv']
    and groups['fc']
  ):
    raise ValueError(
      'alternate=True with rounds=1 would prune only the FC layers; '
      'use rounds >= 2 to prune FC and CONV layers in turn (§3.3)'
    )


def _top1_error(count_errors, rest, data: datasets.Input, mesh: Mesh, params: Any) -> float:
  """Top-1 validation error (%) of ``params``: the metric of the sensitivity sweep."""
  params = parallel.replicate(params, mesh)
  return error_rates(count_errors, params, rest, data, 'validation', mesh)[1]


def _auto_targets(
  run: _Run, compiled: steps.Steps, state: RunState, host_params: Any, round_index: int
) -> PruneConfig:
  """The config with the targets an automatic-sensitivity run chose on its dense network.

  Measured at the first round (and logged as a ``'sensitivity'`` record), read
  back from ``sensitivity.json`` by a run resumed later.

  Raises:
    FileNotFoundError: a resumed run whose ``sensitivity.json`` is missing.
  """
  if round_index > 1 and not run.files.sensitivity_json.exists():
    raise FileNotFoundError(
      f'{run.files.sensitivity_json} is missing: the targets were chosen on the dense '
      'network and cannot be measured again after pruning; start a new run'
    )
  validation_error = functools.partial(
    _top1_error, compiled.count_errors, state.rest, run.data, run.mesh
  )
  targets, chosen = auto_targets.choose_targets(
    run.config, run.files, host_params, validation_error, run.progress
  )
  if round_index == 1:
    _log(run, {'round': 1, 'event': 'sensitivity', **chosen})
  return targets


def _at_rate(opt_state: Any, rate: float) -> Any:
  """``opt_state`` (masked or gradual) with the learning rate of the next step set to ``rate``."""
  if isinstance(opt_state, gradual.GradualState):
    return opt_state._replace(masked=_at_rate(opt_state.masked, rate))
  inner = opt_state.inner_state
  hyperparams = {**inner.hyperparams, 'learning_rate': np.float32(rate)}
  return opt_state._replace(inner_state=inner._replace(hyperparams=hyperparams))


def _rate_of(opt_state: Any) -> float:
  """The learning rate the last step used (set by :func:`_at_rate`)."""
  if isinstance(opt_state, gradual.GradualState):
    return _rate_of(opt_state.masked)
  return float(parallel.fetch(opt_state.inner_state.hyperparams['learning_rate']))


def _keep_rewind_point(run: _Run, rewind: checkpoints.RewindPoint, state: RunState) -> None:
  """Saves ``state`` as the rewind point if it is the state after ``run.rewind_step`` dense
  steps and none is saved yet (a resumed run passes the step again)."""
  if state.round == 0 and state.step == run.rewind_step and rewind.step() is None:
    rewind.save(state)


def _check_rewind_point(
  config: PruneConfig,
  files: RunDir,
  seed_from: str | pathlib.Path | None,
  resume: bool,
  rewind_step: int,
  steps_per_epoch: int,
) -> None:
  """Checks, before anything is written, that weight rewinding will find its rewind point.

  Raises:
    ValueError: ``rewind_step`` lies beyond the dense phase, or the dense run
      this one continues saved its rewind point at another step.
    FileNotFoundError: the dense run this one continues saved no rewind point.
  """
  if config.retrain_schedule != 'weight-rewind' or config.rounds == 0:
    return
  dense_steps = config.dense_epochs * steps_per_epoch
  if rewind_step > dense_steps:
    raise ValueError(
      f'rewind_step is {rewind_step}, beyond the {dense_steps} steps of dense training '
      f'({config.dense_epochs} epochs of {steps_per_epoch} steps)'
    )
  dense_run = RunDir(seed_from) if seed_from is not None else files
  if seed_from is None and not (resume and dense_run.round_checkpoint(0).is_dir()):
    return  # this run trains its dense network, and saves the point on the way
  point = checkpoints.RewindPoint(dense_run.rewind_point)
  saved = point.step()
  point.close()
  if saved is None:
    raise FileNotFoundError(
      f'{dense_run.rewind_point} is missing: the dense network was trained without a rewind '
      'point, so weight rewinding has nothing to go back to; train the dense run again'
    )
  if saved != rewind_step:
    raise ValueError(
      f'the dense run in {dense_run.path} saved its rewind point after step {saved}, '
      f'not {rewind_step}; use rewind_step={saved} or a dense run that saved step {rewind_step}'
    )


def _plan_options(config: PruneConfig) -> dict[str, Any]:
  """The model options a structured plan records: those of ``config`` that are not defaults."""
  defaults = field_defaults()
  return {
    name: getattr(config, name)
    for name in ('width', 'batch_norm', 'dropout_rate', 'dtype')
    if getattr(config, name) != defaults[name]
  }


def _check_smaller_start(config: PruneConfig) -> None:
  """Checks a ``dense_checkpoint`` that is a structured run's ``pruned/`` folder: its plan
  must be of this model with these options, and the run must prune single weights."""
  folder = config.dense_checkpoint
  if not folder or not structured.holds_plan(folder):
    return
  record = structured.load_plan(folder)
  if record.get('model') != config.model or record.get('options', {}) != _plan_options(config):
    raise ValueError(
      f'dense_checkpoint {folder} holds a smaller {record.get("model")!r} with options '
      f'{record.get("options", {})}; this run builds {config.model!r} with options '
      f'{_plan_options(config)}'
    )
  if config.structure == 'channels':
    raise ValueError(
      f"dense_checkpoint {folder} is a structurally pruned model; structure='channels' on top "
      "of it is not supported (prune its single weights: structure='unstructured')"
    )


def _model(
  config: PruneConfig, spec: Any, options: Mapping[str, Any], *, abstract: bool = False
) -> nnx.Module:
  """The run's model: built from the registry (its shapes only, with ``abstract``), or,
  when ``dense_checkpoint`` is a structured run's ``pruned/`` folder, that smaller model
  with its saved variables (Han's single weights pruned on top of removed units)."""

  def build() -> nnx.Module:
    return spec.build(nnx.Rngs(config.seed), **options)

  if config.dense_checkpoint and structured.holds_plan(config.dense_checkpoint):
    return structured.load_pruned(config.dense_checkpoint, build())
  return nnx.eval_shape(build) if abstract else build()


def _check_finite(loss: float, round_index: int, epoch: int) -> None:
  if not np.isfinite(loss):
    raise FloatingPointError(f'training loss is {loss} in round {round_index}, epoch {epoch}')


def _with_dropout_rates(
  run: _Run, compiled: steps.Steps, state: RunState, mask: Any
) -> tuple[steps.Steps, RunState, dict[str, float]]:
  """Re-derives the dropout rates from ``mask`` (§3.2) and recompiles the steps for them.

  A dropout rate is static model configuration, so new rates mean a new
  compiled step: once per round, and only for models with dropout whose
  rates changed. Returns the steps, the state (its params and other state
  those of the recompiled model) and ``{dropout path: rate}``.
  """
  model = nnx.merge(compiled.graphdef, state.params, state.rest)
  before = dropout.dropout_rates(model)
  rates = dropout.adjust_dropout_rates(model, run.config.dropout, run.dense_dropout, mask)
  if all(before[name] == rate for name, rate in rates.items()):
    return compiled, state, rates
  compiled = steps.compile_steps(
    model, run.tx, run.penalty, run.mesh, run.top_k, run.config.compiler_options
  )
  return compiled, state._replace(params=compiled.params, rest=compiled.rest), rates
