"""The prune-retrain pipeline: train dense, then iterative rounds of prune + retrain.

:func:`train_and_evaluate` runs Han et al.'s three steps (§3) on the LeNets and
MNIST: train the dense network, prune low-magnitude connections, retrain the
survivors from their trained values, repeat (§3.4). It evaluates on the
official test set after dense training, right after each prune and after each
round's retraining, logs every epoch to ``metrics.jsonl``, and writes an
orbax checkpoint (params, optimizer state with the mask, round, step) after
every round. Orbax writes a checkpoint to a temporary directory and renames it
when complete, so a killed run never leaves a half-written one behind, and
``resume=True`` continues from the last complete round with the same data
order, reaching the same final masks.

With ``auto_sensitivity`` the per-layer targets come from sensitivity curves
measured on the validation split after dense training (:mod:`pruning.sensitivity`,
:mod:`pruning.thresholds`); :func:`start_from_dense` lets several runs prune one
dense network.

One optimizer serves the whole run: ``masked_optimizer`` around SGD with
momentum on one learning-rate schedule spanning all phases
(:mod:`pruning.schedule`), so the train step is compiled once and each new
mask is data.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from models import CPU_COMPILER_OPTIONS, LeNet5, LeNet300100, layer_costs
from pruning import (
  _io,
  _tree,
  criteria,
  dropout,
  evaluation,
  masks,
  optimizer,
  regularization,
  schedule,
  sensitivity,
  thresholds,
)
from pruning.data import mnist

MODELS: dict[str, Callable[..., nnx.Module]] = {'lenet300': LeNet300100, 'lenet5': LeNet5}


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  """Everything that determines a run. Defaults are LeNet-300-100's.

  Attributes:
    model: ``'lenet300'`` or ``'lenet5'``.
    seed: initialisation and data order.
    batch_size: training batch size.
    learning_rate: peak learning rate of the dense phase.
    momentum: SGD momentum.
    regularization: ``'l2'``, ``'l1'`` or ``'none'``, over kept weights (§3.1).
    regularization_strength: its coefficient.
    dense_epochs: epochs of dense training (round 0).
    rounds: prune-retrain rounds after dense training.
    retrain_epochs: epochs of retraining per round.
    retrain_schedule: ``'rewind'`` restarts the dense cosine schedule each
      round; ``'fine-tune'`` restarts it at ``retrain_lr_scale`` x the peak
      (the paper's 1/10, §4).
    retrain_lr_scale: see ``retrain_schedule``.
    criterion: ``'sparsity'`` (prune to per-layer kept fractions),
      ``'quality'`` (Han's ``|w| < quality x std`` rule) or ``'random'``
      (the per-layer counts of ``'sparsity'``, chosen at random: the
      baseline that shows magnitude matters).
    density: final kept fraction per layer (``'fc1'`` -> 0.035), reached
      geometrically over the rounds; for ``criterion='sparsity'`` and
      ``'random'``.
    quality: final quality parameter per layer, reached linearly over the
      rounds; for ``criterion='quality'``.
    std_of: ``'all'`` or ``'kept'`` weights for the quality rule's std.
    alternate: prune and retrain FC and CONV layers in alternate rounds, the
      other group frozen (§3.3).
    dropout: ``nnx.Dropout`` path -> layer path whose kept fraction sets its
      rate after each prune, ``D_r = D_o sqrt(C_ir / C_io)`` (§3.2). The
      LeNets have no dropout (as in Caffe), so their default is empty.
    validation_size: training examples held out as a validation set (0: none).
      Choose hyperparameters on it, never on the test set.
    auto_sensitivity: if set, an accuracy budget in validation-error
      percentage points: after dense training, each layer's sensitivity
      curve is measured on the validation split (one layer pruned at a time,
      no retraining; :mod:`pruning.sensitivity`) and each layer's final
      density (or quality, for ``criterion='quality'``) is the largest point
      of its curve within the budget (:mod:`pruning.thresholds`). These
      replace ``density``/``quality`` and are reached over the rounds like
      hand-set ones. Needs ``validation_size > 0``.
    train_subset: use only the first N training examples (tests, smoke runs).
    test_subset: evaluate on only the first N test examples (tests only).
    eval_batch_size: evaluation batch size.
    compiler_options: XLA options for compiling the train and evaluation
      steps (``jax.jit(..., compiler_options=...)``). LeNet-5's default keeps
      its CPU convolutions off YNNPACK (``models.CPU_COMPILER_OPTIONS``,
      measured in :mod:`models.lenet`); ``xla_cpu_*`` options only affect
      compilation for CPU.
  """

  model: str = 'lenet300'
  seed: int = 0
  batch_size: int = 128
  learning_rate: float = 0.05
  momentum: float = 0.9
  regularization: Literal['l2', 'l1', 'none'] = 'l2'
  regularization_strength: float = 5e-4
  dense_epochs: int = 30
  rounds: int = 6
  retrain_epochs: int = 8
  retrain_schedule: schedule.RetrainSchedule = 'rewind'
  retrain_lr_scale: float = 0.1
  criterion: Literal['sparsity', 'quality', 'random'] = 'sparsity'
  density: Mapping[str, float] = dataclasses.field(
    default_factory=lambda: {'fc1': 0.035, 'fc2': 0.07, 'fc3': 0.25}
  )
  quality: Mapping[str, float] = dataclasses.field(default_factory=dict)
  std_of: Literal['all', 'kept'] = 'all'
  alternate: bool = False
  dropout: Mapping[str, str] = dataclasses.field(default_factory=dict)
  validation_size: int = 0
  auto_sensitivity: float | None = None
  train_subset: int | None = None
  test_subset: int | None = None
  eval_batch_size: int = 1000
  compiler_options: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.model not in MODELS:
      raise ValueError(f'model is {self.model!r}; expected one of {sorted(MODELS)}')
    if self.regularization not in ('l2', 'l1', 'none'):
      raise ValueError(f"regularization is {self.regularization!r}; expected 'l2', 'l1' or 'none'")
    if self.criterion not in ('sparsity', 'quality', 'random'):
      raise ValueError(
        f"criterion is {self.criterion!r}; expected 'sparsity', 'quality' or 'random'"
      )
    if self.criterion == 'quality' and not self.quality and self.auto_sensitivity is None:
      raise ValueError("criterion 'quality' needs per-layer quality values")
    if self.auto_sensitivity is not None:
      budget = self.auto_sensitivity
      if not (isinstance(budget, int | float) and np.isfinite(budget) and budget >= 0):
        raise ValueError(f'auto_sensitivity is {budget!r}; expected a budget >= 0 (points)')
      if self.validation_size < 1:
        raise ValueError(
          'auto_sensitivity needs a validation split (validation_size > 0): '
          'thresholds are chosen on held-out training data, never on the test set'
        )
      if self.criterion == 'random':
        raise ValueError("auto_sensitivity chooses magnitude targets; criterion 'random' has none")
    for name in ('batch_size', 'dense_epochs', 'eval_batch_size'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} is {getattr(self, name)}; expected >= 1')
    if self.rounds < 0 or self.retrain_epochs < 0:
      raise ValueError('rounds and retrain_epochs must be >= 0')
    for name, density in self.density.items():
      if not 0.0 < density <= 1.0:
        raise ValueError(f'density for {name!r} is {density}; expected a kept fraction in (0, 1]')
    for name, quality in self.quality.items():
      if quality < 0:
        raise ValueError(f'quality for {name!r} is {quality}; expected a value >= 0')
    # Checked here, not when round 1 prunes, so a typo does not cost a dense run.
    layers = prunable_layers(self.model)
    field = 'quality' if self.criterion == 'quality' else 'density'
    unknown = sorted(set(getattr(self, field)) - set(layers))
    if unknown:
      raise ValueError(
        f'{field} is given for {unknown}, which {self.model} does not have; '
        f'its prunable layers: {layers}'
      )


@functools.cache
def prunable_layers(model: str) -> list[str]:
  """Paths of the layers of ``MODELS[model]`` whose kernels are pruned by default.

  Examples:
    >>> prunable_layers('lenet5')
    ['conv1', 'conv2', 'fc1', 'fc2']
  """
  abstract = nnx.eval_shape(lambda: MODELS[model](nnx.Rngs(0)))
  pattern = _tree.compile_pattern(masks.KERNEL_PATTERN)
  return [
    name.rpartition('/')[0]
    for name, _ in _tree.named_leaves(nnx.state(abstract, nnx.Param))
    if pattern.search(name)
  ]


# Chosen on a 5000-image validation split of the training set (the tuning
# runs are listed in benchmarks/LENET_RESULTS.md): lr 0.05 beat 0.02 dense,
# and 8 retraining epochs per round beat 4 after every round.
LENET5_DEFAULTS = {
  'model': 'lenet5',
  'learning_rate': 0.05,
  'dense_epochs': 30,
  'rounds': 5,
  'retrain_epochs': 8,
  'density': {'conv1': 0.66, 'conv2': 0.15, 'fc1': 0.025, 'fc2': 0.2},
  'compiler_options': CPU_COMPILER_OPTIONS,
}


def default_config(model: str, **overrides: Any) -> PruneConfig:
  """The default configuration for ``model``, with ``overrides`` applied.

  Examples:
    >>> default_config('lenet5', seed=3).learning_rate
    0.05
  """
  base = LENET5_DEFAULTS if model == 'lenet5' else {'model': model}
  return PruneConfig(**{**base, **overrides})


# --- compiled steps ------------------------------------------------------------------------------


def _penalty(config: PruneConfig) -> Callable[[Any, Any], jax.Array]:
  if config.regularization == 'none':
    return lambda params, mask: jnp.zeros(())
  term = regularization.l2_penalty if config.regularization == 'l2' else regularization.l1_penalty
  return lambda params, mask: config.regularization_strength * term(params, mask)


def _train_step(graphdef, tx, penalty, compiler_options):
  def step(params, rest, opt_state, images, labels):
    def loss_fn(params):
      model = nnx.merge(graphdef, params, rest)
      logits = model(images)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      total = loss + penalty(params, optimizer.get_mask(opt_state))
      return total, (loss, nnx.state(model, nnx.Not(nnx.Param)))

    (_, (loss, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, {'loss': loss}

  return jax.jit(step, donate_argnums=(0, 2), compiler_options=compiler_options)


def _error_count(graphdef, compiler_options):
  @functools.partial(jax.jit, compiler_options=compiler_options)
  def count(params, rest, images, labels):
    logits = nnx.merge(graphdef, params, rest)(images)
    return jnp.sum(jnp.argmax(logits, axis=-1) != labels)

  return count


def _compile(model: nnx.Module, tx, penalty, compiler_options: Mapping[str, Any]):
  """Train and evaluation functions for the model's current static configuration."""
  model.train()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  compiler_options = dict(compiler_options) or None
  train_step = _train_step(graphdef, tx, penalty, compiler_options)
  model.eval()
  eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  model.train()
  return graphdef, params, rest, train_step, _error_count(eval_graphdef, compiler_options)


def evaluate(
  count_fn, params, rest, images: np.ndarray, labels: np.ndarray, batch_size: int
) -> float:
  """Top-1 error (%) over a whole split."""
  errors = 0
  for start in range(0, len(images), batch_size):
    x = jnp.asarray(images[start : start + batch_size], jnp.float32) / 255.0
    errors += int(count_fn(params, rest, x, jnp.asarray(labels[start : start + batch_size])))
  return 100.0 * errors / len(images)


# --- pruning -------------------------------------------------------------------------------------


def prune_round(
  params: Any, mask: Any, config: PruneConfig, round_index: int, groups: Mapping[str, list[str]]
) -> tuple[Any, str]:
  """The mask after round ``round_index`` and the layer group it pruned.

  ``groups`` maps ``'conv'``/``'fc'`` to layer paths; it only matters with
  ``config.alternate``.
  """
  final = config.quality if config.criterion == 'quality' else config.density
  group, fractions = schedule.round_fractions(
    list(final), config.rounds, round_index, groups if config.alternate else None
  )
  if config.criterion in ('sparsity', 'random'):
    sparsity = {name: 1.0 - final[name] ** f for name, f in fractions.items()}
    if config.criterion == 'random':
      key = (config.seed, round_index)
      return criteria.random_mask(params, sparsity, key=key, mask=mask), group
    return criteria.sparsity_mask(params, sparsity, mask=mask), group
  # The quality parameter rises linearly to its final value (§3.4).
  quality = {name: final[name] * f for name, f in fractions.items()}
  return criteria.quality_mask(params, quality, mask=mask, std_of=config.std_of), group


# --- the run -------------------------------------------------------------------------------------


def _write_jsonl(path: pathlib.Path, record: Mapping[str, Any]) -> None:
  with path.open('a') as f:
    f.write(json.dumps(record) + '\n')


def _truncate_metrics(path: pathlib.Path, last_round: int) -> None:
  """Drops records of rounds after ``last_round`` (a killed run's partial round)."""
  if not path.exists():
    return
  kept = [line for line in path.read_text().splitlines() if json.loads(line)['round'] <= last_round]
  tmp = path.with_suffix('.tmp')
  tmp.write_text(''.join(line + '\n' for line in kept))
  tmp.replace(path)


def _check_config(workdir: pathlib.Path, config: PruneConfig, resume: bool) -> None:
  saved = workdir / 'config.json'
  current = dataclasses.asdict(config)
  if saved.exists():
    previous = json.loads(saved.read_text())
    if not resume:
      raise FileExistsError(
        f'{workdir} already holds a run; pass resume=True (--resume) to continue it, '
        'or choose another workdir'
      )
    differing = sorted(k for k in current if previous.get(k) != json.loads(json.dumps(current[k])))
    if differing:
      raise ValueError(
        f'{workdir} holds a run with a different configuration; differing fields: {differing}'
      )
  saved.write_text(json.dumps(current, indent=2) + '\n')


def load_data(
  config: PruneConfig, data_dir=None, raw_dir=None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Train (and validation) split of MNIST, and the official test split."""
  train = mnist.load_mnist('train', data_dir=data_dir, raw_dir=raw_dir)
  test = mnist.load_mnist('test', data_dir=data_dir, raw_dir=raw_dir)
  data = {}
  if config.validation_size:
    train_x, train_y, val_x, val_y = mnist.validation_split(
      *train, config.validation_size, seed=config.seed
    )
    train = (train_x, train_y)
    data['validation'] = (val_x, val_y)
  if config.train_subset:
    train = (train[0][: config.train_subset], train[1][: config.train_subset])
  if config.test_subset:
    test = (test[0][: config.test_subset], test[1][: config.test_subset])
  data['train'], data['test'] = train, test
  return data


def train_and_evaluate(
  config: PruneConfig,
  workdir: str | pathlib.Path,
  *,
  resume: bool = False,
  data_dir: str | None = None,
  raw_dir: str | None = None,
  progress: bool = True,
  on_epoch_end: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
  """Runs dense training and ``config.rounds`` prune-retrain rounds.

  Args:
    config: the run's configuration.
    workdir: output folder: ``config.json``, ``metrics.jsonl``,
      ``checkpoints/`` (one per round), and the reports written by
      :mod:`pruning.report` through the script.
    resume: continue the run in ``workdir`` from its last complete round.
    data_dir: where the prepared tfds dataset lives (see
      :mod:`pruning.data.mnist`).
    raw_dir: where the four MNIST IDX files are.
    progress: show tqdm progress bars.
    on_epoch_end: called with ``(round, epoch)`` after each epoch (tests use
      it to interrupt a run).

  Returns:
    A summary: per-round records (test error, kept weights), the final mask
    statistics and the final params and mask.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _check_config(workdir, config, resume)
  metrics_path = workdir / 'metrics.jsonl'
  data = load_data(config, data_dir, raw_dir)
  train_x, train_y = data['train']
  steps_per_epoch = len(train_x) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(
      f'{len(train_x)} training examples cannot fill one batch of {config.batch_size}'
    )

  model = MODELS[config.model](nnx.Rngs(config.seed))
  original_rates = dropout.dropout_rates(model)
  penalty = _penalty(config)
  lr = schedule.learning_rate_schedule(
    config.learning_rate,
    steps_per_epoch,
    config.dense_epochs,
    config.rounds,
    config.retrain_epochs,
    config.retrain_schedule,
    config.retrain_lr_scale,
  )
  tx = optimizer.masked_optimizer(optax.sgd(lr, momentum=config.momentum))
  graphdef, params, rest, train_step, count_errors = _compile(
    model, tx, penalty, config.compiler_options
  )
  opt_state = tx.init(params)
  groups = _layer_groups(optimizer.get_mask(opt_state))

  manager = ocp.CheckpointManager(
    (workdir / 'checkpoints').absolute(),
    options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True),
  )
  first_round, step = 0, 0
  if resume and manager.latest_step() is not None:
    last = manager.latest_step()
    target = {'params': params, 'rest': rest, 'opt_state': opt_state, 'round': 0, 'step': 0}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(last, args=ocp.args.StandardRestore(abstract))
    params, rest, opt_state = restored['params'], restored['rest'], restored['opt_state']
    first_round, step = int(restored['round']) + 1, int(restored['step'])
    _truncate_metrics(metrics_path, last)
    if config.dropout and last > 0:
      graphdef, params, rest, train_step, count_errors = _with_dropout_rates(
        graphdef, params, rest, tx, penalty, config, original_rates, optimizer.get_mask(opt_state)
      )
  elif metrics_path.exists():
    metrics_path.unlink()

  def log(record):
    record = {'round': record.pop('round'), **record, 'time': time.time()}
    _write_jsonl(metrics_path, record)

  def error_on(split):
    return evaluate(count_errors, params, rest, *data[split], config.eval_batch_size)

  started = time.perf_counter()
  targets = None if config.auto_sensitivity is not None else config
  for round_index in range(first_round, config.rounds + 1):
    if round_index > 0:
      if targets is None:
        if round_index > 1 and not (workdir / 'sensitivity.json').exists():
          raise FileNotFoundError(
            f'{workdir}/sensitivity.json is missing: the targets were chosen on the dense '
            'network and cannot be measured again after pruning; start a new run'
          )
        model = nnx.merge(graphdef, params, rest)
        targets, chosen = _auto_sensitivity(config, workdir, model, data['validation'], progress)
        if round_index == 1:
          log({'round': 1, 'event': 'sensitivity', **chosen})
      mask, group = prune_round(params, optimizer.get_mask(opt_state), targets, round_index, groups)
      opt_state = optimizer.replace_mask(opt_state, mask)
      params = masks.apply_mask(params, mask)
      if config.alternate:
        frozen = {'fc': 'conv', 'conv': 'fc'}.get(group)
        pattern = '|'.join(f'^{layer}/' for layer in groups.get(frozen, []))
        opt_state = optimizer.set_frozen(opt_state, pattern or None)
      if config.dropout:
        graphdef, params, rest, train_step, count_errors = _with_dropout_rates(
          graphdef, params, rest, tx, penalty, config, original_rates, mask
        )
      stats = masks.mask_stats(mask)
      log(
        {
          'round': round_index,
          'event': 'pruned',
          'group': group,
          'test_error': error_on('test'),
          'kept': stats.overall.kept,
          'total': stats.overall.total,
        }
      )
    epochs = config.dense_epochs if round_index == 0 else config.retrain_epochs
    first_epoch = (
      0 if round_index == 0 else config.dense_epochs + (round_index - 1) * config.retrain_epochs
    )
    for epoch in range(epochs):
      global_epoch = first_epoch + epoch
      losses = []
      batches = mnist.batches(
        train_x, train_y, config.batch_size, seed=config.seed, epoch=global_epoch
      )
      desc = f'round {round_index}/{config.rounds} epoch {epoch + 1}/{epochs}'
      for images, labels in tqdm(
        batches, total=steps_per_epoch, desc=desc, disable=not progress, leave=False
      ):
        params, rest, opt_state, metrics = train_step(
          params, rest, opt_state, jnp.asarray(images), jnp.asarray(labels)
        )
        losses.append(metrics['loss'])
        step += 1
      loss = float(np.mean(jax.device_get(losses)))
      if not np.isfinite(loss):
        raise FloatingPointError(f'training loss is {loss} in round {round_index}, epoch {epoch}')
      record = {
        'round': round_index,
        'event': 'epoch',
        'epoch': global_epoch,
        'step': step,
        'learning_rate': float(lr(step - 1)),
        'train_loss': loss,
        'test_error': error_on('test'),
      }
      if 'validation' in data:
        record['validation_error'] = error_on('validation')
      log(record)
      if on_epoch_end is not None:
        on_epoch_end(round_index, epoch)
    stats = masks.mask_stats(optimizer.get_mask(opt_state))
    log(
      {
        'round': round_index,
        'event': 'round_end',
        'test_error': error_on('test'),
        **({'validation_error': error_on('validation')} if 'validation' in data else {}),
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
    manager.save(round_index, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
  manager.close()

  records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
  final_mask = optimizer.get_mask(opt_state)
  return {
    'config': dataclasses.asdict(config),
    'records': records,
    'mask_stats': masks.mask_stats(final_mask),
    'params': params,
    'mask': final_mask,
    'layer_costs': layer_costs(MODELS[config.model]),
  }


def _auto_sensitivity(
  config: PruneConfig,
  workdir: pathlib.Path,
  model: nnx.Module,
  validation: tuple[np.ndarray, np.ndarray],
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
    metric = evaluation.classification_error(
      model,
      *validation,
      batch_size=config.eval_batch_size,
      preprocess=lambda x: x.astype(jnp.float32) / 255.0,
      compiler_options=dict(config.compiler_options) or None,
    )
    result = sensitivity.sensitivity_analysis(
      nnx.state(model, nnx.Param),
      metric,
      higher_is_better=False,
      criterion='quality' if config.criterion == 'quality' else 'sparsity',
      metric_name='validation error (%)',
      progress=progress,
    )
    chosen = thresholds.choose_thresholds(result, config.auto_sensitivity)
    result.to_csv(workdir / 'sensitivity.csv')
    result.plot(workdir / 'sensitivity.png', title=f'{config.model}: sensitivity on validation')
    payload = {
      'budget': config.auto_sensitivity,
      'curves': result.to_dict(),
      'thresholds': chosen.to_dict(),
    }
    _io.write_atomic(path, json.dumps(payload, indent=2) + '\n')
  if config.criterion == 'quality':
    targets = {'quality': chosen.qualities()}
  else:
    targets = {'density': chosen.densities()}
  return dataclasses.replace(config, **targets), {'budget': config.auto_sensitivity, **targets}


# Fields that only act after dense training: two configs that agree on all the
# others train the same dense network (round 0), metrics included.
_AFTER_DENSE_FIELDS = frozenset(
  {
    'rounds',
    'retrain_epochs',
    'retrain_schedule',
    'retrain_lr_scale',
    'criterion',
    'density',
    'quality',
    'std_of',
    'alternate',
    'dropout',
    'auto_sensitivity',
  }
)


def start_from_dense(
  source: str | pathlib.Path, workdir: str | pathlib.Path, config: PruneConfig
) -> None:
  """Seeds ``workdir`` with the dense phase (round 0) of the run in ``source``.

  Then ``train_and_evaluate(config, workdir, resume=True)`` skips dense
  training and starts at round 1 from the very same dense network, with the
  round-0 records in its ``metrics.jsonl``. Experiments that prune one dense
  network in several ways (criteria, budgets, schedules) train it once.

  Args:
    source: a workdir whose round 0 is complete (any later rounds are ignored).
    workdir: a new workdir (created if missing).
    config: the new run's configuration; it must agree with the source's on
      every field that shapes dense training (all but the pruning and
      retraining ones).

  Raises:
    FileNotFoundError: ``source`` has no config or no round-0 checkpoint.
    FileExistsError: ``workdir`` already holds a run.
    ValueError: the configs differ in a field that shapes dense training
      (naming the fields).

  Example (minutes of training, so not a doctest; the pipeline tests run it)::

    dense = default_config('lenet300', rounds=0)
    train_and_evaluate(dense, 'runs/dense')
    pruned = default_config('lenet300', criterion='random')
    start_from_dense('runs/dense', 'runs/random', pruned)
    train_and_evaluate(pruned, 'runs/random', resume=True)
  """
  source, workdir = pathlib.Path(source), pathlib.Path(workdir)
  checkpoint = source / 'checkpoints' / '0'
  if not (source / 'config.json').exists() or not checkpoint.is_dir():
    raise FileNotFoundError(f'{source} holds no completed dense phase (round-0 checkpoint)')
  if (workdir / 'config.json').exists() or (workdir / 'checkpoints').exists():
    raise FileExistsError(f'{workdir} already holds a run; choose a new workdir')
  previous = json.loads((source / 'config.json').read_text())
  current = json.loads(json.dumps(dataclasses.asdict(config)))
  differing = sorted(
    key
    for key in current.keys() | previous.keys()
    if key not in _AFTER_DENSE_FIELDS and previous.get(key) != current.get(key)
  )
  if differing:
    raise ValueError(
      f'{source} trained its dense network with a different configuration; '
      f'differing fields: {differing}'
    )
  workdir.mkdir(parents=True, exist_ok=True)
  records = (source / 'metrics.jsonl').read_text().splitlines()
  dense_records = [line for line in records if json.loads(line)['round'] == 0]
  # Copy aside, then rename: the checkpoint appears whole or not at all.
  staging = workdir / '.dense-checkpoint.tmp'
  shutil.rmtree(staging, ignore_errors=True)
  shutil.copytree(checkpoint, staging / '0')
  _io.write_atomic(workdir / 'metrics.jsonl', ''.join(line + '\n' for line in dense_records))
  staging.rename(workdir / 'checkpoints')


def _layer_groups(mask: Any) -> dict[str, list[str]]:
  """Prunable layers by kind: ``'conv'`` (kernels of 3+ dims) and ``'fc'``."""
  ndims = {
    name.rpartition('/')[0]: np.ndim(leaf)
    for name, leaf in _tree.named_leaves(mask)
    if leaf is not None
  }
  return {
    'conv': [layer for layer, ndim in ndims.items() if ndim > 2],
    'fc': [layer for layer, ndim in ndims.items() if ndim == 2],
  }


def _with_dropout_rates(graphdef, params, rest, tx, penalty, config, original_rates, mask):
  """Re-derives the dropout rates from ``mask`` (§3.2) and recompiles for them.

  A dropout rate is static model configuration, so new rates mean a new
  compiled step: once per round, and only for models with dropout.
  """
  model = nnx.merge(graphdef, params, rest)
  dropout.adjust_dropout_rates(model, config.dropout, original_rates, mask)
  return _compile(model, tx, penalty, config.compiler_options)
