"""The configuration of a prune-retrain run, and each model's defaults.

A :class:`PruneConfig` is everything that determines a run of
:func:`pruning.experiment.pipeline.train_and_evaluate`: the model and dataset, the dense
and retraining schedules, the pruning criterion and its per-layer targets.
It is checked when built, so a bad value fails before any work, with a
message naming it. An option that would do nothing in its run (``quality``
under ``criterion='sparsity'``, ``retrain_lr_scale`` under the ``'rewind'``
schedule, ...) is an error too, :class:`IdleOptionError`: the config rejects
the values no recipe sets, and :func:`check_options` checks the options a
user gave (the scripts' flags). :func:`default_config` starts from a model's defaults:
LeNet-300-100's and LeNet-5's tuned on MNIST, VGG-16's and AlexNet's the
paper's (Tables 4 and 5), VGG-16-CIFAR's the paper's Table 5 densities with an
ordinary CIFAR-10 recipe, not validated here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Collection, Mapping
from typing import Any, Literal

from flax import nnx

from models import CPU_COMPILER_OPTIONS, MODELS, model_options
from pruning import _tree, criteria, masks, schedule
from pruning.data import datasets


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  """Everything that determines a run.

  The field defaults are a LeNet-300-100 starting point (25x); each model's
  recipe is :func:`default_config`'s (the LeNets' chosen on a validation split; the VGG-16
  and AlexNet ones the paper's, not validated here).

  Attributes:
    model: a name in :data:`models.MODELS`: ``'lenet300'``, ``'lenet5'``,
      ``'vgg16'``, ``'vgg16_cifar'`` or ``'alexnet'``.
    dataset: a name in :data:`pruning.data.datasets.DATASETS`: the model's own
      (``'mnist'``, ``'cifar10'``, ``'imagenet2012'``) or ``'synthetic'``.
    seed: initialisation and data order.
    batch_size: global training batch size (across all devices and hosts).
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
      no retraining; :mod:`pruning.analysis.sensitivity`) and each layer's final
      density (or quality, for ``criterion='quality'``) is the largest point
      of its curve within the budget (:mod:`pruning.analysis.thresholds`). These
      replace ``density``/``quality`` and are reached over the rounds like
      hand-set ones. Needs ``validation_size > 0``.
    train_subset: use only N training examples (tests, smoke runs): the first N
      of MNIST, a seeded random N of the tfds image datasets (stored by class).
    test_subset: evaluate on only the first N test examples (tests only).
    eval_batch_size: global evaluation batch size.
    compiler_options: XLA options for compiling the train and evaluation
      steps (``jax.jit(..., compiler_options=...)``). LeNet-5's default keeps
      its CPU convolutions off YNNPACK (``models.CPU_COMPILER_OPTIONS``,
      measured in :mod:`models.lenet`); ``xla_cpu_*`` options only affect
      compilation for CPU.
    width: channel multiplier of the VGG models (reduced-width CPU runs).
    batch_norm: batch normalisation after every VGG convolution.
    dropout_rate: the dense-training rate ``D_o`` of the VGG/AlexNet
      dropouts; ``None`` for the model's own 0.5.
    augment: training augmentation; ``None`` for the dataset's default
      (random crop with padding and flips for CIFAR-10).
    dtype: ``'float32'``, or ``'bfloat16'`` for mixed precision on
      accelerators: params and optimizer state stay float32, the model
      computes in bfloat16, pruned weights stay exactly 0.0.
    dense_checkpoint: a dense network to start from instead of training one
      (a run's workdir or an orbax checkpoint with ``params``); round 0 then
      trains it for ``dense_epochs`` more epochs, usually 0.
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
  criterion: str = 'sparsity'
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
  dataset: str = 'mnist'
  width: float = 1.0
  batch_norm: bool = False
  dropout_rate: float | None = None
  augment: bool | None = None
  dtype: Literal['float32', 'bfloat16'] = 'float32'
  dense_checkpoint: str | None = None

  @property
  def by_quality(self) -> bool:
    """Whether the criterion selects by threshold: its targets are ``quality``, not ``density``."""
    return criteria.get_criterion(self.criterion).selection == 'threshold'

  def __post_init__(self):
    if self.model not in MODELS:
      raise ValueError(f'model is {self.model!r}; expected one of {sorted(MODELS)}')
    model_options(
      self.model,
      width=self.width,
      batch_norm=self.batch_norm,
      dropout_rate=self.dropout_rate,
      dtype=self.dtype,
    )
    if self.dataset not in datasets.DATASETS:
      raise ValueError(f'dataset is {self.dataset!r}; expected one of {sorted(datasets.DATASETS)}')
    fits = (*MODELS[self.model].datasets, 'synthetic')
    if self.dataset not in fits:
      raise ValueError(
        f'dataset {self.dataset!r} does not fit model {self.model!r}; it takes {list(fits)}'
      )
    if self.regularization not in ('l2', 'l1', 'none'):
      raise ValueError(f"regularization is {self.regularization!r}; expected 'l2', 'l1' or 'none'")
    criterion = criteria.get_criterion(self.criterion)
    if self.by_quality and not self.quality and self.auto_sensitivity is None:
      raise ValueError(
        f'criterion {self.criterion!r} selects by threshold: it needs per-layer quality values'
      )
    if self.auto_sensitivity is not None:
      budget = self.auto_sensitivity
      if not (isinstance(budget, int | float) and math.isfinite(budget) and budget >= 0):
        raise ValueError(f'auto_sensitivity is {budget!r}; expected a budget >= 0 (points)')
      if self.validation_size < 1:
        raise ValueError(
          'auto_sensitivity needs a validation split (validation_size > 0): '
          'thresholds are chosen on held-out training data, never on the test set'
        )
      if criterion.random:
        raise ValueError(
          f'auto_sensitivity needs a criterion that does not draw at random; {self.criterion!r} '
          'does, and its curves would show one draw'
        )
    for name in ('batch_size', 'eval_batch_size'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} is {getattr(self, name)}; expected >= 1')
    if self.dense_epochs < (0 if self.dense_checkpoint else 1):
      raise ValueError(
        f'dense_epochs is {self.dense_epochs}; expected >= 1, or >= 0 with a dense_checkpoint'
      )
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
    field = 'quality' if self.by_quality else 'density'
    unknown = sorted(set(getattr(self, field)) - set(layers))
    if unknown:
      raise ValueError(
        f'{field} is given for {unknown}, which {self.model} does not have; '
        f'its prunable layers: {layers}'
      )
    # A value no recipe sets that differs from its field's default was chosen by the
    # user, so here it is an error if it would do nothing. Fields that recipes fill
    # (density, retrain_lr_scale, ...) are checked against the options a user actually
    # gave, by check_options.
    for option, default in _user_only_defaults().items():
      if getattr(self, option) != default:
        idle = _idle_option(self, option, in_code=True)
        if idle is not None:
          raise idle


@functools.cache
def prunable_layers(model: str) -> list[str]:
  """Paths of the layers of ``MODELS[model]`` whose kernels are pruned by default.

  Examples:
    >>> prunable_layers('lenet5')
    ['conv1', 'conv2', 'fc1', 'fc2']
  """
  return list(_kernel_ndims(model))


@functools.cache
def _kernel_ndims(model: str) -> dict[str, int]:
  """Prunable layer path -> number of dimensions of its kernel (4: CONV, 2: FC)."""
  abstract = nnx.eval_shape(lambda: MODELS[model].build(nnx.Rngs(0)))
  pattern = _tree.compile_pattern(masks.KERNEL_PATTERN)
  return {
    name.rpartition('/')[0]: len(_tree.unbox(leaf).shape)
    for name, leaf in _tree.named_leaves(nnx.state(abstract, nnx.Param))
    if pattern.search(name)
  }


# Fields that only act after dense training: two configs that agree on all the
# others train the same dense network (round 0), metrics included.
AFTER_DENSE_FIELDS = frozenset(
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


# Chosen on a 5000-image validation split of the training set, by the rule
# and with the runs given in benchmarks/LENET_RESULTS.md. LeNet-300-100: of
# final densities 12x-30x and dense recipes pruned 20x (3 seeds each), lr 0.1
# pruned 20.1x had the lowest mean validation error (1.67 %, against 1.88 % at
# lr 0.05) and no more compressed configuration came within 0.05 points of it.
LENET300_DEFAULTS = {
  'model': 'lenet300',
  'learning_rate': 0.1,
  'density': {'fc1': 0.044, 'fc2': 0.088, 'fc3': 0.28},
}

# LeNet-5: lr 0.05 beat 0.02 dense, and 8 retraining epochs per round beat 4
# after every round; of fc1 kept at 7.6 %, 4 % and 2.5 % (12.1x, 20.4x, 28.5x;
# one seed), 4 % tied the lowest validation error (0.92 %, 28.5x 1.00 %).
LENET5_DEFAULTS = {
  'model': 'lenet5',
  'learning_rate': 0.05,
  'dense_epochs': 30,
  'rounds': 5,
  'retrain_epochs': 8,
  'density': {'conv1': 0.66, 'conv2': 0.15, 'fc1': 0.04, 'fc2': 0.2},
  'compiler_options': CPU_COMPILER_OPTIONS,
}


# Han et al. 2015, Table 5: per-layer weights kept by the pruned VGG-16.
VGG16_TABLE5_DENSITY = {
  'conv1_1': 0.58,
  'conv1_2': 0.22,
  'conv2_1': 0.34,
  'conv2_2': 0.36,
  'conv3_1': 0.53,
  'conv3_2': 0.24,
  'conv3_3': 0.42,
  'conv4_1': 0.32,
  'conv4_2': 0.27,
  'conv4_3': 0.34,
  'conv5_1': 0.35,
  'conv5_2': 0.29,
  'conv5_3': 0.36,
  'fc6': 0.04,
  'fc7': 0.04,
  'fc8': 0.23,
}

# ImageNet networks: the paper's final densities (Tables 4 and 5), FC and CONV
# pruned in alternate rounds (§3.3), retrained at 1/100 of the initial rate
# (§4), dropout adjusted (§3.2). The dense schedule is the usual SGD one.
VGG16_DEFAULTS = {
  'model': 'vgg16',
  'dataset': 'imagenet2012',
  'batch_size': 256,
  'eval_batch_size': 500,
  'learning_rate': 0.01,
  'dense_epochs': 74,
  'rounds': 6,
  'retrain_epochs': 4,
  'retrain_schedule': 'fine-tune',
  'retrain_lr_scale': 0.01,
  'alternate': True,
  'density': VGG16_TABLE5_DENSITY,
  'dropout': MODELS['vgg16'].dropout,
}

ALEXNET_DEFAULTS = {
  **VGG16_DEFAULTS,
  'model': 'alexnet',
  'dense_epochs': 90,
  'density': {
    'conv1': 0.84,
    'conv2': 0.38,
    'conv3': 0.35,
    'conv4': 0.37,
    'conv5': 0.37,
    'fc1': 0.09,
    'fc2': 0.09,
    'fc3': 0.25,
  },
  'dropout': MODELS['alexnet'].dropout,
}

# VGG-16 on CIFAR-10: the paper's Table 5 densities and an ordinary CIFAR-10 recipe,
# not validated here (no recorded run used these defaults). The reduced-width CPU runs
# of benchmarks/VGG_CIFAR_RESULTS.md set their own flags: --width 0.125 --batch-norm
# --dropout-rate 0 --validation-size 5000, and 4 x 3 or 6 x 4 retraining epochs.
VGG16_CIFAR_DEFAULTS = {
  'model': 'vgg16_cifar',
  'dataset': 'cifar10',
  'batch_size': 128,
  'learning_rate': 0.05,
  'dense_epochs': 30,
  'rounds': 4,
  'retrain_epochs': 4,
  'alternate': True,
  'density': VGG16_TABLE5_DENSITY,
  'dropout': MODELS['vgg16_cifar'].dropout,
  # The CPU-sized VGG: XLA's own convolutions, not YNNPACK's, as for LeNet-5.
  # A width-1/8 step at batch 128 took 43 ms against 48 ms (2-core CPU).
  'compiler_options': CPU_COMPILER_OPTIONS,
}

MODEL_DEFAULTS: dict[str, Mapping[str, Any]] = {
  'lenet300': LENET300_DEFAULTS,
  'lenet5': LENET5_DEFAULTS,
  'vgg16': VGG16_DEFAULTS,
  'vgg16_cifar': VGG16_CIFAR_DEFAULTS,
  'alexnet': ALEXNET_DEFAULTS,
}


def default_config(model: str, **overrides: Any) -> PruneConfig:
  """The default configuration for ``model``, with ``overrides`` applied.

  Examples:
    >>> default_config('lenet5', seed=3).learning_rate
    0.05
    >>> config = default_config('lenet300')
    >>> config.learning_rate, config.density
    (0.1, {'fc1': 0.044, 'fc2': 0.088, 'fc3': 0.28})
  """
  if model not in MODEL_DEFAULTS:
    raise ValueError(f'model is {model!r}; expected one of {sorted(MODEL_DEFAULTS)}')
  # Copies, so that no config shares a mapping with the defaults.
  base = {k: dict(v) if isinstance(v, Mapping) else v for k, v in MODEL_DEFAULTS[model].items()}
  return PruneConfig(**{**base, **overrides})


# --- options that act only in some modes ----------------------------------------------------

# train_and_evaluate's arguments that act only with some datasets; check_options takes
# their names among the options given.
RUN_OPTIONS = ('data_dir', 'raw_dir', 'input_workers')

# Read through the grain pipeline (pruning.data.datasets.SourceInput): the only datasets with
# training augmentation and input worker processes.
_GRAIN_DATASETS = ('cifar10', 'imagenet2012')
# Prepared from raw files on first use: the MNIST IDX folder, the CIFAR-10 archive.
_RAW_DATASETS = ('mnist', 'cifar10')


@dataclasses.dataclass(frozen=True)
class Needs:
  """The mode an option acts in: ``field`` one of ``values``, ``field >= at_least``, or
  ``text`` (a mode no single option sets)."""

  field: str = ''
  values: tuple[Any, ...] = ()
  at_least: int | None = None
  text: str = ''


class IdleOptionError(ValueError):
  """An option was given that would do nothing in its run.

  ``str(error)`` names the config's fields (``quality needs criterion='quality'
  (the criterion is 'sparsity', which selects by count)``); :meth:`command_line` names a script's flags
  (``--quality needs --criterion quality (...)``).

  Attributes:
    option: the field (or :data:`RUN_OPTIONS` name) that was given.
    needs: the mode in which it would act.
    reason: why it would not act in this run.
  """

  def __init__(self, option: str, needs: Needs, reason: str):
    super().__init__(option, needs, reason)
    self.option, self.needs, self.reason = option, needs, reason

  def __str__(self) -> str:
    return self._message(None)

  def command_line(self, flags: Mapping[str, str] | None = None) -> str:
    """The message with flags for names: ``--`` and the name with dashes, or ``flags[name]``.

    Examples:
      >>> error = IdleOptionError('raw_dir', Needs('dataset', ('cifar10',)), 'no archive')
      >>> str(error)
      "raw_dir needs dataset='cifar10' (no archive)"
      >>> error.command_line({'raw_dir': '--raw-path'})
      '--raw-path needs --dataset cifar10 (no archive)'
    """
    return self._message(flags or {})

  def _message(self, flags: Mapping[str, str] | None) -> str:
    def name(field: str) -> str:
      if flags is None:
        return field
      return flags.get(field, '--' + field.replace('_', '-'))

    needs = self.needs
    if needs.text:
      mode = needs.text
    elif needs.at_least is not None:
      mode = f'{name(needs.field)} >= {needs.at_least}'
    elif flags is None:
      mode = f'{needs.field}=' + ' or '.join(repr(value) for value in needs.values)
    elif needs.values == (None,):
      mode = f'no {name(needs.field)}'
    else:
      mode = f'{name(needs.field)} ' + ' or '.join(str(value) for value in needs.values)
    return f'{name(self.option)} needs {mode} ({self.reason})'


def check_options(config: PruneConfig, given: Collection[str]) -> None:
  """Checks that every option in ``given`` acts in a run of ``config``.

  An option that would be silently ignored (``quality`` under
  ``criterion='sparsity'``, ``retrain_lr_scale`` under the ``'rewind'``
  schedule, pruning options with ``rounds=0``, ``alternate`` on a model
  without CONV layers, ``input_workers`` for a dataset not read through
  grain, ...) is an error naming it and the mode it needs. A recipe fills
  some fields for every model (``density``, ``retrain_lr_scale``), so only
  the options a user gave can be checked: a script passes its flags'.

  Args:
    config: the run's configuration.
    given: the fields set explicitly (not by the model's recipe), and any of
      :data:`RUN_OPTIONS` passed to
      :func:`pruning.experiment.pipeline.train_and_evaluate`.

  Raises:
    IdleOptionError: the first option given that would do nothing, naming the
      mode it needs (a ``ValueError``).
    ValueError: a name in ``given`` that is neither a field nor a run option.

  Examples:
    >>> config = default_config('lenet300', retrain_lr_scale=0.5)
    >>> check_options(config, {'retrain_lr_scale'})
    Traceback (most recent call last):
    ...
    pruning.experiment.config.IdleOptionError: retrain_lr_scale needs retrain_schedule='fine-tune' (the retrain schedule is 'rewind')
    >>> check_options(default_config('vgg16', retrain_schedule='rewind'), {'retrain_schedule'})
  """
  order = [*PruneConfig.__dataclass_fields__, *RUN_OPTIONS]
  unknown = sorted(set(given) - set(order))
  if unknown:
    raise ValueError(f'{unknown} are neither PruneConfig fields nor run options {RUN_OPTIONS}')
  for option in sorted(given, key=order.index):
    idle = _idle_option(config, option, in_code=False)
    if idle is not None:
      raise idle


def _idle_option(config: PruneConfig, option: str, *, in_code: bool) -> IdleOptionError | None:
  """Why ``option`` would do nothing in a run of ``config``, or ``None`` if it acts.

  ``in_code``: ``config`` may be built in code rather than asked for whole. Then
  0 rounds may be the dense half of a pair (:func:`pruning.experiment.checkpoints.start_from_dense`
  ignores the pruning fields), and ``auto_sensitivity`` may come with the targets it
  chose (the pipeline replaces ``density``/``quality`` with them); neither is checked.
  """
  criterion = config.criterion
  if not in_code and config.rounds == 0 and option in AFTER_DENSE_FIELDS - {'rounds'}:
    return IdleOptionError(
      option, Needs('rounds', at_least=1), 'with 0 rounds the run only trains the dense network'
    )
  by_selection = {
    selection: tuple(name for name, c in criteria.CRITERIA.items() if c.selection == selection)
    for selection in ('count', 'threshold')
  }
  if option in ('quality', 'std_of') and not config.by_quality:
    return IdleOptionError(
      option,
      Needs('criterion', by_selection['threshold']),
      f'the criterion is {criterion!r}, which selects by count',
    )
  if option == 'density' and config.by_quality:
    return IdleOptionError(
      option,
      Needs('criterion', by_selection['count']),
      f'the criterion is {criterion!r}, which selects by threshold',
    )
  if not in_code and option in ('density', 'quality') and config.auto_sensitivity is not None:
    return IdleOptionError(
      option,
      Needs('auto_sensitivity', (None,)),
      f"the sensitivity curves choose every layer's {option}",
    )
  if option == 'retrain_lr_scale' and config.retrain_schedule != 'fine-tune':
    return IdleOptionError(
      option,
      Needs('retrain_schedule', ('fine-tune',)),
      f'the retrain schedule is {config.retrain_schedule!r}',
    )
  if option in ('retrain_schedule', 'retrain_lr_scale') and config.retrain_epochs == 0:
    return IdleOptionError(
      option, Needs('retrain_epochs', at_least=1), 'with 0 retraining epochs nothing is retrained'
    )
  if option == 'alternate':
    ndims = _kernel_ndims(config.model).values()
    if not (any(n > 2 for n in ndims) and any(n == 2 for n in ndims)):
      only = 'CONV' if any(n > 2 for n in ndims) else 'FC'
      return IdleOptionError(
        option,
        Needs(text='a model with both CONV and FC layers'),
        f'{config.model} has only {only} layers',
      )
  if option == 'regularization_strength' and config.regularization == 'none':
    return IdleOptionError(
      option, Needs('regularization', ('l2', 'l1')), "the regularization is 'none'"
    )
  dataset = config.dataset
  if option in ('augment', 'input_workers') and dataset not in _GRAIN_DATASETS:
    what = 'augmented' if option == 'augment' else 'read through grain'
    return IdleOptionError(
      option,
      _needs_dataset(config.model, _GRAIN_DATASETS),
      f'the dataset is {dataset!r}, which is not {what}',
    )
  if option == 'raw_dir' and dataset not in _RAW_DATASETS:
    return IdleOptionError(
      option,
      _needs_dataset(config.model, _RAW_DATASETS),
      f'the dataset is {dataset!r}, which is not prepared from raw files',
    )
  if option == 'data_dir' and dataset == 'synthetic':
    return IdleOptionError(
      option,
      Needs('dataset', MODELS[config.model].datasets),
      "the dataset is 'synthetic', made in memory",
    )
  return None


def _needs_dataset(model: str, datasets: tuple[str, ...]) -> Needs:
  """One of ``datasets`` that ``model`` takes, or a model that takes one."""
  fitting = tuple(d for d in datasets if d in MODELS[model].datasets)
  if fitting:
    return Needs('dataset', fitting)
  return Needs(text=f'a model that takes {" or ".join(datasets)}')


@functools.cache
def _user_only_defaults() -> dict[str, Any]:
  """Field -> default value, for the fields no recipe of :data:`MODEL_DEFAULTS` sets."""
  set_by_recipes = set().union(*MODEL_DEFAULTS.values())
  return {
    f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
    for f in dataclasses.fields(PruneConfig)
    if f.name not in set_by_recipes
  }


def layer_values(text: str) -> dict[str, float]:
  """Parses per-layer values given on a command line.

  Examples:
    >>> layer_values('fc1=0.035, fc2=0.07')
    {'fc1': 0.035, 'fc2': 0.07}
    >>> layer_values('fc1:0.1')
    Traceback (most recent call last):
    ...
    ValueError: 'fc1:0.1' is not LAYER=VALUE
  """
  values = {}
  for item in text.split(','):
    name, sep, value = item.partition('=')
    if not sep:
      raise ValueError(f'{item!r} is not LAYER=VALUE')
    try:
      values[name.strip()] = float(value)
    except ValueError as e:
      raise ValueError(f'{item!r}: {value!r} is not a number') from e
  return values
