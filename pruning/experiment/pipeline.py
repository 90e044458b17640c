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
masks.

One optimizer serves the whole run: ``masked_optimizer`` around SGD with
momentum on one learning-rate schedule spanning all phases
(:mod:`pruning.schedule`), so the train step (:mod:`pruning.experiment.steps`) is
compiled once and each new mask is data. The step runs data-parallel on every
device of every process (:mod:`pruning.experiment.parallel`); the model's other state
(batch-norm statistics, dropout RNG) travels with the params.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from models import MODELS, layer_costs, model_options
from pruning import _io, masks, optimizer, rounds, schedule
from pruning.analysis import dropout, sensitivity, thresholds
from pruning.data import datasets
from pruning.experiment import checkpoints, parallel, steps
from pruning.experiment.config import (
  ALEXNET_DEFAULTS,
  LENET5_DEFAULTS,
  LENET300_DEFAULTS,
  MODEL_DEFAULTS,
  VGG16_CIFAR_DEFAULTS,
  VGG16_DEFAULTS,
  PruneConfig,
  default_config,
  prunable_layers,
)

start_from_dense = checkpoints.start_from_dense
prune_round = rounds.prune_round

__all__ = [
  'ALEXNET_DEFAULTS',
  'LENET5_DEFAULTS',
  'LENET300_DEFAULTS',
  'MODELS',
  'MODEL_DEFAULTS',
  'VGG16_CIFAR_DEFAULTS',
  'VGG16_DEFAULTS',
  'PruneConfig',
  'default_config',
  'error_rates',
  'load_data',
  'prunable_layers',
  'prune_round',
  'start_from_dense',
  'train_and_evaluate',
]


# --- the run -------------------------------------------------------------------------------------

_NAN_CHECK_STEPS = 50  # steps between looks at the loss (each one waits for the device)


def _input_options(config, mesh, data_dir, raw_dir, workers) -> datasets.InputOptions:
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
  )


def load_data(
  config: PruneConfig, data_dir=None, raw_dir=None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """MNIST as arrays: the train (and validation) split and the official test split."""
  options = datasets.InputOptions(
    batch_size=config.batch_size,
    eval_batch_size=config.eval_batch_size,
    seed=config.seed,
    validation_size=config.validation_size,
    train_subset=config.train_subset,
    test_subset=config.test_subset,
    data_dir=data_dir,
    raw_dir=raw_dir,
  )
  data = datasets.open_mnist(options)
  return {**data.evaluation_data, 'train': data.train}


def error_rates(
  count_errors: Callable[..., Any], params: Any, rest: Any, data: datasets.Input, split: str, mesh
) -> dict[int, float]:
  """Top-k error (%) over a whole split, for each k the count function reports."""
  errors: dict[int, int] = {}
  total = 0
  for images, labels, valid in data.evaluation(split):
    counts = count_errors(params, rest, *parallel.global_batch(mesh, images, labels, valid))
    for k, count in counts.items():
      errors[k] = errors.get(k, 0) + int(parallel.fetch(count))
    total += int(valid.sum()) * jax.process_count()
  return {k: 100.0 * count / total for k, count in errors.items()}


def train_and_evaluate(
  config: PruneConfig,
  workdir: str | pathlib.Path,
  *,
  resume: bool = False,
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
    workdir: output folder: ``config.json``, ``metrics.jsonl``,
      ``checkpoints/`` (one per round), and the reports written by
      :mod:`pruning.experiment.report` through the scripts.
    resume: continue the run in ``workdir`` from its last complete round.
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

  Raises:
    FloatingPointError: the training loss became NaN or infinite.
  """
  mesh = parallel.data_mesh() if mesh is None else mesh
  spec = MODELS[config.model]
  options = model_options(
    config.model,
    width=config.width,
    batch_norm=config.batch_norm,
    dropout_rate=config.dropout_rate,
    dtype=config.dtype,
  )
  abstract = nnx.eval_shape(lambda: spec.build(nnx.Rngs(config.seed), **options))
  costs = layer_costs(abstract, spec.image_shape)
  groups = rounds.layer_groups(nnx.state(abstract, nnx.Param))
  _check_targets(config, costs, groups, dropout.dropout_rates(abstract))
  input_options = _input_options(config, mesh, data_dir, raw_dir, input_workers)

  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  checkpoints.check_config(
    workdir, dataclasses.asdict(config), dataclasses.asdict(PruneConfig()), resume
  )
  metrics_path = workdir / 'metrics.jsonl'
  data = datasets.open_input(config.dataset, input_options)
  steps_per_epoch = data.steps_per_epoch()
  model = spec.build(nnx.Rngs(config.seed), **options)
  top_k = (1, 5) if spec.num_classes >= 100 else (1,)
  original_rates = dropout.dropout_rates(model)
  penalty = steps.penalty(config.regularization, config.regularization_strength)
  dense_epochs = config.dense_epochs
  lr = schedule.learning_rate_schedule(
    config.learning_rate,
    steps_per_epoch,
    dense_epochs,
    config.rounds,
    config.retrain_epochs,
    config.retrain_schedule,
    config.retrain_lr_scale,
  )
  # The rate is data in the optimizer state, set on the host before each step: the
  # compiled step holds no schedule (see schedule.learning_rate_schedule), and the
  # rate logged is the one the step used.
  tx = optimizer.masked_optimizer(
    optax.inject_hyperparams(optax.sgd)(learning_rate=lr(0), momentum=config.momentum)
  )
  graphdef, params, rest, train_step, count_errors = steps.compile_steps(
    model, tx, penalty, mesh, top_k, config.compiler_options
  )
  opt_state = parallel.replicate(tx.init(params), mesh)

  saved = checkpoints.RoundCheckpoints(workdir / 'checkpoints')
  in_round = checkpoints.EpochCheckpoint(workdir / 'epoch_checkpoint')
  first_round, step, done_epoch, restored = 0, 0, None, None
  like = {'params': params, 'rest': rest, 'opt_state': opt_state, 'round': 0, 'step': 0}
  if resume:
    last = saved.latest_round()
    mid = in_round.latest_epoch()
    if mid is not None:
      candidate = in_round.restore(mid, {**like, 'epoch': 0})
      if last is None or int(candidate['round']) > last:
        # Killed in the middle of a round: continue after its last completed epoch.
        restored, first_round, done_epoch = candidate, int(candidate['round']), mid
        checkpoints.truncate_metrics_after_epoch(metrics_path, first_round, mid)
    if restored is None and last is not None:
      restored, first_round = saved.restore(last, like), last + 1
      checkpoints.truncate_metrics(metrics_path, last)
  if restored is not None:
    params, rest, opt_state = parallel.replicate(
      (restored['params'], restored['rest'], restored['opt_state']), mesh
    )
    step = int(restored['step'])
    if config.dropout and int(restored['round']) > 0:
      (graphdef, params, rest, train_step, count_errors), _ = _with_dropout_rates(
        steps.Steps(graphdef, params, rest, train_step, count_errors),
        (tx, penalty, config, original_rates, opt_state, mesh, top_k),
      )
  else:
    if metrics_path.exists():
      metrics_path.unlink()
    if config.dense_checkpoint:
      params, rest = parallel.replicate(
        checkpoints.load_dense(config.dense_checkpoint, params, rest), mesh
      )

  def log(record):
    record = {'round': record.pop('round'), **record, 'time': time.time()}
    if jax.process_index() == 0:
      checkpoints.append_record(metrics_path, record)

  def errors_on(split, prefix=None):
    rates = error_rates(count_errors, params, rest, data, split, mesh)
    prefix = prefix or f'{split}_error'
    return {prefix if k == 1 else f'{prefix}_top{k}': rate for k, rate in rates.items()}

  def all_errors():
    out = errors_on('test')
    if 'validation' in data.splits:
      out |= errors_on('validation')
    return out

  started = time.perf_counter()
  targets = None if config.auto_sensitivity is not None else config
  for round_index in range(first_round, config.rounds + 1):
    if round_index > 0 and not (round_index == first_round and done_epoch is not None):
      host_params = jax.tree.map(parallel.fetch, params)
      if targets is None:
        if round_index > 1 and not (workdir / 'sensitivity.json').exists():
          raise FileNotFoundError(
            f'{workdir}/sensitivity.json is missing: the targets were chosen on the dense '
            'network and cannot be measured again after pruning; start a new run'
          )
        validation_error = functools.partial(_top1_error, count_errors, rest, data, mesh)
        targets, chosen = _auto_sensitivity(
          config, workdir, host_params, validation_error, progress
        )
        if round_index == 1:
          log({'round': 1, 'event': 'sensitivity', **chosen})
      host_mask = jax.tree.map(parallel.fetch, optimizer.get_mask(opt_state))
      mask, group, round_targets = rounds.prune_round(
        host_params, host_mask, targets, round_index, groups
      )
      mask = parallel.replicate(mask, mesh)
      opt_state = optimizer.replace_mask(opt_state, mask)
      params = masks.apply_mask(params, mask)
      if config.alternate:
        frozen = {'fc': 'conv', 'conv': 'fc'}.get(group)
        pattern = '|'.join(f'^{layer}/' for layer in groups.get(frozen, []))
        opt_state = optimizer.set_frozen(opt_state, pattern or None)
      params, opt_state = parallel.replicate((params, opt_state), mesh)
      rates = {}
      if config.dropout:
        (graphdef, params, rest, train_step, count_errors), rates = _with_dropout_rates(
          steps.Steps(graphdef, params, rest, train_step, count_errors),
          (tx, penalty, config, original_rates, opt_state, mesh, top_k),
        )
      stats = masks.mask_stats(jax.tree.map(parallel.fetch, mask))
      target_name = 'quality' if targets.by_quality else 'density'
      log(
        {
          'round': round_index,
          'event': 'pruned',
          'group': group,
          **errors_on('test'),
          'kept': stats.overall.kept,
          'total': stats.overall.total,
          target_name: round_targets,
          'layers': {
            name.rpartition('/')[0]: {'kept': layer.kept, 'total': layer.total}
            for name, layer in stats.layers.items()
          },
          **({'dropout_rates': rates} if rates else {}),
        }
      )
    epochs = dense_epochs if round_index == 0 else config.retrain_epochs
    first_epoch = (
      0 if round_index == 0 else dense_epochs + (round_index - 1) * config.retrain_epochs
    )
    for epoch in range(epochs):
      global_epoch = first_epoch + epoch
      if done_epoch is not None and global_epoch <= done_epoch:
        continue
      losses = []
      desc = f'round {round_index}/{config.rounds} epoch {epoch + 1}/{epochs}'
      bar = tqdm(
        data.train_epoch(global_epoch),
        total=steps_per_epoch,
        desc=desc,
        disable=not progress or jax.process_index() != 0,
        leave=False,
      )
      for images, labels in bar:
        images, labels = parallel.global_batch(mesh, images, labels)
        opt_state = _at_rate(opt_state, lr(step))
        params, rest, opt_state, metrics = train_step(params, rest, opt_state, images, labels)
        losses.append(metrics['loss'])
        step += 1
        if len(losses) % _NAN_CHECK_STEPS == 0:
          recent = float(parallel.fetch(losses[-1]))
          _check_finite(recent, round_index, epoch)
          bar.set_postfix(loss=f'{recent:.4f}', refresh=False)
      loss = float(np.mean([parallel.fetch(x) for x in losses]))
      _check_finite(loss, round_index, epoch)
      record = {
        'round': round_index,
        'event': 'epoch',
        'epoch': global_epoch,
        'step': step,
        'learning_rate': float(parallel.fetch(opt_state.inner_state.hyperparams['learning_rate'])),
        'train_loss': loss,
        **all_errors(),
      }
      log(record)
      if checkpoint_epochs and epoch < epochs - 1:
        # The round's own checkpoint follows its last epoch.
        in_round.save(
          global_epoch,
          {
            'params': params,
            'rest': rest,
            'opt_state': opt_state,
            'round': round_index,
            'step': step,
            'epoch': global_epoch,
          },
        )
      if on_epoch_end is not None:
        on_epoch_end(round_index, epoch)
    stats = masks.mask_stats(jax.tree.map(parallel.fetch, optimizer.get_mask(opt_state)))
    log(
      {
        'round': round_index,
        'event': 'round_end',
        **all_errors(),
        'kept': stats.overall.kept,
        'total': stats.overall.total,
        'compression': stats.overall.compression,
        'wall_time_s': time.perf_counter() - started,
      }
    )
    state = {
      'params': params,
      'rest': rest,
      'opt_state': opt_state,
      'round': round_index,
      'step': step,
    }
    saved.save(round_index, state)
    in_round.clear()
  saved.close()
  in_round.close()

  final_mask = jax.tree.map(parallel.fetch, optimizer.get_mask(opt_state))
  return {
    'config': dataclasses.asdict(config),
    'records': checkpoints.read_records(metrics_path),
    'mask_stats': masks.mask_stats(final_mask),
    'params': params,
    'mask': final_mask,
    'layer_costs': costs,
  }


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
  if config.alternate and config.rounds == 1 and groups['conv'] and groups['fc']:
    raise ValueError(
      'alternate=True with rounds=1 would prune only the FC layers; '
      'use rounds >= 2 to prune FC and CONV layers in turn (§3.3)'
    )


def _top1_error(count_errors, rest, data: datasets.Input, mesh: Mesh, params: Any) -> float:
  """Top-1 validation error (%) of ``params``: the metric of the sensitivity sweep."""
  params = parallel.replicate(params, mesh)
  return error_rates(count_errors, params, rest, data, 'validation', mesh)[1]


def _auto_sensitivity(
  config: PruneConfig,
  workdir: pathlib.Path,
  params: Any,
  validation_error: Callable[[Any], float],
  progress: bool,
) -> tuple[PruneConfig, dict[str, Any]]:
  """The config with the rounds' final targets read off validation sensitivity curves.

  Runs once, on the dense network, and writes ``sensitivity.json`` (curves
  and the choice), ``sensitivity.csv`` and ``sensitivity.png`` into
  ``workdir``; a resumed run reads the choice back from ``sensitivity.json``.
  """
  path = workdir / 'sensitivity.json'
  if path.exists():
    chosen = thresholds.Thresholds.from_dict(json.loads(path.read_text())['thresholds'])
  else:
    result = sensitivity.sensitivity_analysis(
      params,
      validation_error,
      higher_is_better=False,
      criterion=config.criterion,
      metric_name='validation error (%)',
      progress=progress,
    )
    chosen = thresholds.choose_thresholds(result, config.auto_sensitivity)
    if jax.process_index() == 0:
      result.to_csv(workdir / 'sensitivity.csv')
      result.plot(workdir / 'sensitivity.png', title=f'{config.model}: sensitivity on validation')
      payload = {
        'budget': config.auto_sensitivity,
        'curves': result.to_dict(),
        'thresholds': chosen.to_dict(),
      }
      _io.write_atomic(path, json.dumps(payload, indent=2) + '\n')
  if config.by_quality:
    targets = {'quality': chosen.qualities()}
  else:
    targets = {'density': chosen.densities()}
  return dataclasses.replace(config, **targets), {'budget': config.auto_sensitivity, **targets}


def _at_rate(opt_state: optimizer.MaskedState, rate: float) -> optimizer.MaskedState:
  """``opt_state`` with the learning rate of the next step set to ``rate``."""
  inner = opt_state.inner_state
  hyperparams = {**inner.hyperparams, 'learning_rate': np.float32(rate)}
  return opt_state._replace(inner_state=inner._replace(hyperparams=hyperparams))


def _check_finite(loss: float, round_index: int, epoch: int) -> None:
  if not np.isfinite(loss):
    raise FloatingPointError(f'training loss is {loss} in round {round_index}, epoch {epoch}')


def _with_dropout_rates(current: steps.Steps, context: tuple) -> tuple[steps.Steps, dict]:
  """Re-derives the dropout rates from the current mask (§3.2) and recompiles for them.

  A dropout rate is static model configuration, so new rates mean a new
  compiled step: once per round, and only for models with dropout whose
  rates changed. Returns the steps and ``{dropout path: rate}``.
  """
  tx, penalty, config, original_rates, opt_state, mesh, top_k = context
  model = nnx.merge(current.graphdef, current.params, current.rest)
  before = dropout.dropout_rates(model)
  mask = jax.tree.map(parallel.fetch, optimizer.get_mask(opt_state))
  rates = dropout.adjust_dropout_rates(model, config.dropout, original_rates, mask)
  if all(before[name] == rate for name, rate in rates.items()):
    return current, rates
  return steps.compile_steps(model, tx, penalty, mesh, top_k, config.compiler_options), rates
