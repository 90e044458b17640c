"""The configuration of a prune-retrain run, and each model's defaults.

A :class:`PruneConfig` is everything that determines a run of
:func:`pruning.experiment.pipeline.train_and_evaluate`: the model and dataset, the dense
and retraining schedules, the pruning criterion and its per-layer targets.
It is checked when built, so a bad value fails before any work, with a
message naming it. An option that would do nothing in its run (``quality``
under ``criterion='sparsity'``, ``retrain_lr_scale`` under the ``'rewind'``
schedule, ...) is an error too, :class:`IdleOptionError`: the config rejects
the values no recipe sets, and :func:`check_options` checks the options a
user gave (the scripts' flags).

The library holds no recipe: each model's values, with where each came from,
are data in a recipe file (``scripts/configs/<model>.py``, whose
``get_config()`` returns the fields it sets), read by :func:`load_recipe`;
:func:`from_recipe` builds a config from one, with overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import pathlib
import sys
from collections.abc import Collection, Mapping
from typing import Any, Literal

import jax
import numpy as np
from flax import nnx

from models import MODELS, model_options
from pruning import _tree, criteria, gradual, masks, schedule, structured
from pruning.data import datasets
from pruning.nm import parse_nm

# structured_scope's values; pruning.structured spells them with underscores.
STRUCTURED_SCOPES = {'per-group': 'per_group', 'global': 'global', 'isomorphic': 'isomorphic'}


def _field(group: str, default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING):
  """A field of :class:`PruneConfig` in ``group``, the part of a run it shapes."""
  return dataclasses.field(default=default, default_factory=factory, metadata={'group': group})


@dataclasses.dataclass(frozen=True)
class PruneConfig:
  """Everything that determines a run.

  The field defaults are generic (SGD with momentum, a cosine schedule, no
  pruning targets); a model's values come from its recipe
  (:func:`from_recipe`). Each field's ``metadata['group']`` says which part
  of a run it shapes (the command line's help groups them so).

  Attributes:
    model: a name in :data:`models.MODELS`: ``'lenet300'``, ``'lenet5'``,
      ``'vgg16'``, ``'vgg16_cifar'``, ``'alexnet'``, ``'resnet20'``,
      ``'resnet56'`` or ``'vit_cifar'``.
    dataset: a name in :data:`pruning.data.datasets.DATASETS`: the model's own
      (``'mnist'``, ``'cifar10'``, ``'imagenet2012'``) or ``'synthetic'``.
    seed: initialisation and data order.
    batch_size: global training batch size (across all devices and hosts).
    learning_rate: peak learning rate of the dense phase.
    warmup_steps: the dense phase's rate rises linearly over its first
      ``warmup_steps`` steps (0: none); see :func:`pruning.schedule.learning_rate_schedule`.
    optimizer: ``'sgd'`` (with ``momentum``; the paper's and every CNN
      recipe's) or ``'adamw'`` (Loshchilov & Hutter 2019: Adam with
      ``weight_decay`` decoupled from the gradient, applied to the params of
      two or more dimensions, kernels and embeddings, not to biases and norm
      scales; optax's ``b1=0.9, b2=0.999, eps=1e-8``), what vision
      transformers train with. Either way ``masked_optimizer`` wraps it, so
      pruned weights get no update and no decay.
    momentum: SGD momentum.
    weight_decay: AdamW's decoupled weight decay (``'adamw'`` only; an
      ``'sgd'`` run regularises through ``regularization``).
    regularization: ``'l2'``, ``'l1'`` or ``'none'``, over kept weights (§3.1).
    regularization_strength: its coefficient.
    dense_epochs: epochs of dense training (round 0).
    rounds: prune-retrain rounds after dense training.
    retrain_epochs: epochs of retraining per round.
    retrain_schedule: ``'rewind'`` restarts the dense cosine schedule each
      round; ``'fine-tune'`` restarts it at ``retrain_lr_scale`` x the peak
      (the paper's 1/10, §4); ``'weight-rewind'`` restarts it as ``'rewind'``
      does and sets the surviving weights, the optimizer state and the
      model's other state back to their values after ``rewind_step`` steps
      of dense training (lottery-ticket rewinding, Frankle et al. 2020).
    retrain_lr_scale: see ``retrain_schedule``.
    rewind_step: the step of dense training that ``'weight-rewind'`` goes
      back to (0: the initialisation); ``None`` for one epoch's steps. Every
      dense phase saves the state of this step (``rewind_point/``), so a
      dense run can seed weight-rewinding runs (``--from-dense``).
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
    pruning_schedule: ``'iterative'``, Han et al.'s rounds of prune then
      retrain (§3.4), or ``'gradual'``, Zhu & Gupta's (2017) pruning while
      the network trains: the sparsity rises along their cubic schedule from
      ``gradual_initial_sparsity`` at ``gradual_start_epoch`` to
      ``gradual_sparsity`` at ``gradual_end_epoch``, the mask recomputed on
      the device every ``gradual_frequency`` steps
      (:func:`pruning.gradual.gradual_pruning`), all within the
      ``dense_epochs`` of round 0 (so ``rounds`` is 0); the epochs after
      ``gradual_end_epoch`` retrain the pruned network.
    gradual_sparsity: the final sparsity of gradual pruning (0.95: 20x).
    gradual_initial_sparsity: the sparsity of its first mask update.
    gradual_start_epoch: the epoch at whose start the first update prunes.
    gradual_end_epoch: the epoch at whose start the sparsity is final;
      ``None`` for the middle of training (``dense_epochs // 2``).
    gradual_frequency: train steps between two mask updates (``Δt``; Zhu &
      Gupta use 100 to 1000).
    gradual_scope: ``'global'`` ranks every prunable weight together;
      ``'per-layer'`` prunes each layer to the same sparsity.
    nm: ``'N:M'`` (e.g. ``'2:4'``, ``1 <= N < M``) to prune towards N:M
      sparsity (:mod:`pruning.nm`): in every prunable layer but
      ``nm_dense``, each group of M consecutive inputs ends keeping its N
      largest weights. Iteratively, round ``r`` of ``R`` keeps
      ``round(M (N/M)^(r/R))`` per group (one round: one-shot N:M), by
      magnitude (``criterion='sparsity'``; ``density`` is not used);
      gradually, ``gradual_sparsity`` must be ``(M - N) / M`` with
      ``gradual_scope='per-layer'``.
    nm_dense: with ``nm``, the layers left dense, such as a first
      convolution whose 1 or 3 input channels do not split into groups of M.
    structure: ``'unstructured'`` prunes single weights (Han et al.'s
      rounds, by ``criterion`` to ``density`` or ``quality``);
      ``'channels'`` prunes whole units (channels, filters, heads, hidden
      units) of the model's dependency groups
      (:func:`pruning.structured.dependency_groups`), every member of a unit
      held at zero by the mask (kernels, biases, norm scales, the next
      layer's inputs), by ``structured_criterion`` to
      ``structured_sparsity``; at the end of the run the smaller dense model
      and its plan are saved in ``pruned/``.
    structured_criterion: a name in
      :data:`pruning.structured.STRUCTURED_CRITERIA` (``'l1'``, ``'l2'``,
      ``'bn_scale'``, ``'taylor'``, ``'random'``).
    structured_scope: which units compete: ``'per-group'`` (each group
      loses the same fraction), ``'global'`` (one ranking over every group,
      scores divided by their group's mean) or ``'isomorphic'`` (groups of
      the same structure compete).
    structured_sparsity: the final fraction of each group's units removed,
      reached geometrically over the rounds as Han's densities are: round
      ``r`` of ``R`` removes ``1 - (1 - s)^(r/R)``.
    structured_grad_batches: for a structured criterion that scores from
      gradients (``'taylor'``): how many training batches' loss gradients
      score the units at each round; each batch scores the units on its own
      and the scores are summed, so a unit's score is not the product of
      its weights with a mean gradient that training has driven towards 0
      (Molchanov et al. 2019 accumulate per batch too).
    round_to: kept widths rounded to a multiple of this (8 for GPUs, 128
      for TPUs).
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
      steps (``jax.jit(..., compiler_options=...)``). LeNet-5's recipe keeps
      its CPU convolutions off YNNPACK (``models.CPU_COMPILER_OPTIONS``,
      measured in :mod:`models.lenet`); ``xla_cpu_*`` options only affect
      compilation for CPU.
    width: channel multiplier of the VGG models (reduced-width CPU runs).
    batch_norm: batch normalisation after every VGG convolution.
    dropout_rate: the dense-training rate ``D_o`` of the VGG/AlexNet
      dropouts; ``None`` for the model's own 0.5.
    augment: training augmentation; ``None`` for the dataset's default
      (random crop with padding and flips for CIFAR-10, none for MNIST,
      whose augmentation is a random shift of up to 2 pixels each way).
    dtype: ``'float32'``, or ``'bfloat16'`` for mixed precision on
      accelerators: params and optimizer state stay float32, the model
      computes in bfloat16, pruned weights stay exactly 0.0.
    dense_checkpoint: a dense network to start from instead of training one
      (a run's workdir or an orbax checkpoint with ``params``); round 0 then
      trains it for ``dense_epochs`` more epochs, usually 0. It may also be a
      structured run's ``pruned/`` folder: the run's model is then that
      smaller model with its saved variables, and Han's rounds prune its
      single weights (both kinds together); its plan must be of ``model``
      with the same options, and ``structure`` must be ``'unstructured'``.
  """

  model: str = _field('model and data', 'lenet300')
  dataset: str = _field('model and data', 'mnist')
  width: float = _field('model and data', 1.0)
  batch_norm: bool = _field('model and data', False)
  dropout_rate: float | None = _field('model and data', None)
  augment: bool | None = _field('model and data', None)
  validation_size: int = _field('model and data', 0)
  train_subset: int | None = _field('model and data', None)
  test_subset: int | None = _field('model and data', None)
  seed: int = _field('dense training', 0)
  batch_size: int = _field('dense training', 128)
  learning_rate: float = _field('dense training', 0.05)
  warmup_steps: int = _field('dense training', 0)
  optimizer: Literal['sgd', 'adamw'] = _field('dense training', 'sgd')
  momentum: float = _field('dense training', 0.9)
  weight_decay: float = _field('dense training', 0.0)
  regularization: Literal['l2', 'l1', 'none'] = _field('dense training', 'l2')
  regularization_strength: float = _field('dense training', 5e-4)
  dense_epochs: int = _field('dense training', 30)
  dense_checkpoint: str | None = _field('dense training', None)
  rounds: int = _field('pruning', 6)
  criterion: str = _field('pruning', 'sparsity')
  density: Mapping[str, float] = _field('pruning', factory=dict)
  quality: Mapping[str, float] = _field('pruning', factory=dict)
  std_of: Literal['all', 'kept'] = _field('pruning', 'all')
  auto_sensitivity: float | None = _field('pruning', None)
  alternate: bool = _field('pruning', False)
  pruning_schedule: Literal['iterative', 'gradual'] = _field('pruning', 'iterative')
  gradual_sparsity: float | None = _field('pruning', None)
  gradual_initial_sparsity: float = _field('pruning', 0.0)
  gradual_start_epoch: int = _field('pruning', 0)
  gradual_end_epoch: int | None = _field('pruning', None)
  gradual_frequency: int = _field('pruning', 100)
  gradual_scope: Literal['global', 'per-layer'] = _field('pruning', 'global')
  nm: str | None = _field('pruning', None)
  nm_dense: tuple[str, ...] = _field('pruning', factory=tuple)
  structure: Literal['unstructured', 'channels'] = _field('pruning', 'unstructured')
  structured_criterion: str = _field('pruning', 'l1')
  structured_scope: Literal['per-group', 'global', 'isomorphic'] = _field('pruning', 'per-group')
  structured_sparsity: float | None = _field('pruning', None)
  structured_grad_batches: int = _field('pruning', 8)
  round_to: int = _field('pruning', 1)
  dropout: Mapping[str, str] = _field('pruning', factory=dict)
  retrain_epochs: int = _field('retraining', 8)
  retrain_schedule: schedule.RetrainSchedule = _field('retraining', 'rewind')  # noqa: RUF009
  retrain_lr_scale: float = _field('retraining', 0.1)
  rewind_step: int | None = _field('retraining', None)
  eval_batch_size: int = _field('compute', 1000)
  compiler_options: Mapping[str, str] = _field('compute', factory=dict)
  dtype: Literal['float32', 'bfloat16'] = _field('compute', 'float32')

  @property
  def by_quality(self) -> bool:
    """Whether the criterion selects by threshold: its targets are ``quality``, not ``density``."""
    return criteria.get_criterion(self.criterion).selection == 'threshold'

  def learning_rate_schedule(self, steps_per_epoch: int):
    """The run's learning rate at each global step (:func:`pruning.schedule.learning_rate_schedule`)."""
    return schedule.learning_rate_schedule(
      self.learning_rate,
      steps_per_epoch,
      self.dense_epochs,
      self.rounds,
      self.retrain_epochs,
      self.retrain_schedule,
      self.retrain_lr_scale,
      self.warmup_steps,
    )

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
    if self.optimizer not in ('sgd', 'adamw'):
      raise ValueError(f"optimizer is {self.optimizer!r}; expected 'sgd' or 'adamw'")
    decay = self.weight_decay
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay < math.inf:
      raise ValueError(f'weight_decay is {decay!r}; expected a finite number >= 0')
    criterion = criteria.get_criterion(self.criterion)
    self._check_structure()
    channels = self.structure == 'channels'  # its targets are structured_sparsity's
    if not channels and self.by_quality and not self.quality and self.auto_sensitivity is None:
      raise ValueError(
        f'criterion {self.criterion!r} selects by threshold: it needs per-layer quality values'
      )
    if (
      not channels
      and self.rounds > 0
      and not self.by_quality
      and not self.density
      and self.auto_sensitivity is None
      and self.nm is None
    ):
      raise ValueError(
        f'criterion {self.criterion!r} selects by count: with {self.rounds} rounds it needs '
        'per-layer density values (or auto_sensitivity to choose them)'
      )
    for name in ('seed', 'validation_size', 'warmup_steps'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f'{name} is {value!r}; expected an integer >= 0')
    self._check_gradual()
    self._check_nm()
    if self.rewind_step is not None and (
      not isinstance(self.rewind_step, int)
      or isinstance(self.rewind_step, bool)
      or self.rewind_step < 0
    ):
      raise ValueError(
        f'rewind_step is {self.rewind_step!r}; expected an integer >= 0, or None for one epoch'
      )
    for name in ('train_subset', 'test_subset'):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f'{name} is {value!r}; expected an integer >= 1, or None for all')
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
    _check_compiler_options(tuple(sorted(self.compiler_options.items())))
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
    # A value of a DELIBERATE field that differs from its default was chosen by the
    # user, so here it is an error if it would do nothing. Fields that recipes fill
    # (density, retrain_lr_scale, ...) are checked against the options a user actually
    # gave, by check_options.
    for option in DELIBERATE_FIELDS:
      if getattr(self, option) != _default(option):
        idle = _idle_option(self, option, in_code=True)
        if idle is not None:
          raise idle

  def _check_structure(self) -> None:
    """Checks the structured-pruning fields (the pipeline prunes units with them)."""
    if self.structure not in ('unstructured', 'channels'):
      raise ValueError(f"structure is {self.structure!r}; expected 'unstructured' or 'channels'")
    if self.structured_scope not in STRUCTURED_SCOPES:
      raise ValueError(
        f'structured_scope is {self.structured_scope!r}; expected one of {list(STRUCTURED_SCOPES)}'
      )
    if self.structured_criterion not in structured.STRUCTURED_CRITERIA:
      raise ValueError(
        f'structured_criterion is {self.structured_criterion!r}; expected one of '
        f'{sorted(structured.STRUCTURED_CRITERIA)}'
      )
    value = self.structured_grad_batches
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'structured_grad_batches is {value!r}; expected an integer >= 1')
    value = self.round_to
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(
        f'round_to is {value!r}; expected an integer >= 1 (8 for GPUs, 128 for TPUs)'
      )
    value = self.structured_sparsity
    if value is not None and (
      isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1
    ):
      raise ValueError(f'structured_sparsity is {value!r}; expected a fraction of units in [0, 1)')
    if self.structure != 'channels':
      return
    if self.rounds > 0 and value is None:
      raise ValueError(
        f"structure='channels' with {self.rounds} rounds needs structured_sparsity, the "
        'fraction of units removed (e.g. 0.5)'
      )
    refused = {
      'pruning_schedule': (self.pruning_schedule != 'iterative', "'gradual' prunes single weights"),
      'auto_sensitivity': (
        self.auto_sensitivity is not None,
        'the sensitivity curves are per-layer weight densities',
      ),
    }
    for name, (given, why) in refused.items():
      if given:
        raise ValueError(
          f"{name} is {getattr(self, name)!r}; structure='channels' does not take it ({why})"
        )

  def _check_nm(self) -> None:
    """Checks the N:M fields (whether each layer's inputs split into groups of M
    needs the model's shapes: the pipeline checks it before anything is written)."""
    if self.nm is None:
      return
    parse_nm(self.nm)  # an error names what is not N:M
    refused = {
      'structure': (self.structure != 'unstructured', 'N:M groups are single weights'),
      'auto_sensitivity': (
        self.auto_sensitivity is not None,
        'every pruned layer ends at N/M; there is no density to choose',
      ),
      'criterion': (
        self.pruning_schedule == 'iterative' and self.criterion != 'sparsity',
        "each group keeps its N largest magnitudes: the criterion is 'sparsity'",
      ),
    }
    for name, (given, why) in refused.items():
      if given:
        raise ValueError(
          f'{name} is {getattr(self, name)!r}; nm {self.nm!r} does not take it ({why})'
        )
    layers = prunable_layers(self.model)
    unknown = sorted(set(self.nm_dense) - set(layers))
    if unknown:
      raise ValueError(
        f'nm_dense names {unknown}, which {self.model} does not have; its prunable layers: {layers}'
      )

  def _check_gradual(self) -> None:
    """Checks the gradual-pruning fields (the pipeline builds the schedule from them)."""
    if self.pruning_schedule not in ('iterative', 'gradual'):
      raise ValueError(
        f"pruning_schedule is {self.pruning_schedule!r}; expected 'iterative' or 'gradual'"
      )
    if self.gradual_scope not in ('global', 'per-layer'):
      raise ValueError(f"gradual_scope is {self.gradual_scope!r}; expected 'global' or 'per-layer'")
    if self.pruning_schedule != 'gradual':
      return
    if self.gradual_sparsity is None:
      raise ValueError("pruning_schedule='gradual' needs gradual_sparsity (e.g. 0.95 for 20x)")
    if self.rounds != 0:
      raise ValueError(
        f"pruning_schedule='gradual' prunes while round 0 trains; rounds is {self.rounds}, "
        'expected 0'
      )
    for name in ('gradual_sparsity', 'gradual_initial_sparsity'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f'{name} is {value!r}; expected a sparsity in [0, 1)')
    if self.gradual_initial_sparsity > self.gradual_sparsity:
      raise ValueError(
        f'gradual_initial_sparsity {self.gradual_initial_sparsity} is above gradual_sparsity '
        f'{self.gradual_sparsity}; the sparsity only rises'
      )
    for name in ('gradual_start_epoch', 'gradual_frequency'):
      value = getattr(self, name)
      if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < (name == 'gradual_frequency')
      ):
        raise ValueError(
          f'{name} is {value!r}; expected an integer >= {int(name == "gradual_frequency")}'
        )
    if self.nm is not None:
      n, m = self.nm_pair
      if self.gradual_scope != 'per-layer':
        raise ValueError(
          f"nm {self.nm!r} needs gradual_scope='per-layer' (N:M groups are each layer's own)"
        )
      if abs(self.gradual_sparsity - (m - n) / m) > 1e-9:
        raise ValueError(
          f'nm {self.nm!r} keeps {n} of every {m}: gradual_sparsity must be '
          f'{(m - n) / m!r}, not {self.gradual_sparsity!r}'
        )
    end = self.gradual_end
    if not self.gradual_start_epoch < end <= self.dense_epochs:
      raise ValueError(
        f'gradual pruning runs from epoch {self.gradual_start_epoch} to epoch {end}; expected '
        f'gradual_start_epoch < gradual_end_epoch <= dense_epochs ({self.dense_epochs})'
      )

  @property
  def nm_pair(self) -> tuple[int, int]:
    """``(N, M)`` of ``nm``.

    Raises:
      ValueError: ``nm`` is not ``'N:M'`` with ``1 <= N < M``.
    """
    return parse_nm(self.nm)

  @property
  def gradual_end(self) -> int:
    """``gradual_end_epoch``, or its default, the middle of training."""
    if self.gradual_end_epoch is None:
      return self.dense_epochs // 2
    return self.gradual_end_epoch

  def gradual_schedule(self, steps_per_epoch: int):
    """The :class:`pruning.gradual.GradualSchedule` of ``pruning_schedule='gradual'``.

    Updates every ``gradual_frequency`` steps from the first step of
    ``gradual_start_epoch``; the last one falls at or before the first step
    of ``gradual_end_epoch``.

    Examples:
      >>> config = PruneConfig('lenet300', rounds=0, dense_epochs=10,
      ...                      pruning_schedule='gradual', gradual_sparsity=0.9,
      ...                      gradual_start_epoch=1, gradual_end_epoch=4, gradual_frequency=50)
      >>> schedule = config.gradual_schedule(steps_per_epoch=100)
      >>> schedule.t0, schedule.n, schedule.delta_t, schedule.end
      (100, 6, 50, 400)
    """
    start = self.gradual_start_epoch * steps_per_epoch
    span = (self.gradual_end - self.gradual_start_epoch) * steps_per_epoch
    return gradual.GradualSchedule(
      t0=start,
      n=max(1, span // self.gradual_frequency),
      delta_t=min(self.gradual_frequency, max(1, span)),
      initial_sparsity=self.gradual_initial_sparsity,
      final_sparsity=self.gradual_sparsity,
    )


@functools.cache
def _check_compiler_options(options: tuple[tuple[str, str], ...]) -> None:
  """Compiles a trivial function with ``options``: XLA names an option it does not know."""
  if not options:
    return
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()
  except jax.errors.JaxRuntimeError as error:
    raise ValueError(f'compiler_options {dict(options)}: {error}') from None


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
    'rewind_step',
    'criterion',
    'density',
    'quality',
    'std_of',
    'alternate',
    'dropout',
    'auto_sensitivity',
    'nm',
    'nm_dense',
    'structured_criterion',
    'structured_scope',
    'structured_sparsity',
    'structured_grad_batches',
    'round_to',
  }
)


# Fields no recipe sets unless it uses them: a value of one that differs from its
# default is the user's choice even in code, so PruneConfig rejects it if it would do
# nothing. (A recipe's density is idle once a user switches to criterion='quality';
# only check_options, which knows what the user gave, can tell.)
DELIBERATE_FIELDS = (
  'quality',
  'nm_dense',
  'std_of',
  'regularization_strength',
  'weight_decay',
  'augment',
  'structured_criterion',
  'structured_scope',
  'structured_sparsity',
  'structured_grad_batches',
  'round_to',
)


def _default(name: str) -> Any:
  """The default value of field ``name``."""
  field = PruneConfig.__dataclass_fields__[name]
  return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def field_defaults() -> dict[str, Any]:
  """Every field's default value (a :class:`PruneConfig` of them all may not be valid:
  pruning rounds need targets)."""
  return {name: _default(name) for name in PruneConfig.__dataclass_fields__}


# The options of each structure: the others' would do nothing (a recipe's density and
# alternate are left alone by a structured run, which prunes every group each round).
STRUCTURED_FIELDS = (
  'structured_criterion',
  'structured_scope',
  'structured_sparsity',
  'structured_grad_batches',
  'round_to',
)
UNSTRUCTURED_FIELDS = ('criterion', 'density', 'quality', 'std_of', 'alternate')


class RecipeError(ValueError):
  """A recipe file that cannot be read, or that sets what is not a field."""


def load_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
  """The fields a recipe file sets: its ``get_config()``, checked to name only fields.

  A recipe is a Python file (as in flax's ``examples/*/configs``) whose
  ``get_config()`` returns a dict of :class:`PruneConfig` fields, each value
  with a comment on where it came from. Its folder is importable while it
  loads, so a recipe may build on a sibling (``from vgg16 import
  TABLE5_DENSITY``). Mappings are copied, so no two configs share one.

  Raises:
    RecipeError: the file is missing, fails to load, has no ``get_config``,
      or returns what is not a dict of fields (naming the unknown ones).

  Examples:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / 'tiny.py'
    >>> _ = path.write_text("def get_config():\\n  return {'model': 'lenet300', 'rounds': 0}\\n")
    >>> load_recipe(path)
    {'model': 'lenet300', 'rounds': 0}
    >>> from_recipe(path, seed=3).seed
    3
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise RecipeError(f'recipe {path} does not exist')
  spec = importlib.util.spec_from_file_location(f'_recipe_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  folder = str(path.resolve().parent)
  before = set(sys.modules)
  sys.path.insert(0, folder)
  try:
    spec.loader.exec_module(module)
  except Exception as error:
    raise RecipeError(f'recipe {path} failed to load: {type(error).__name__}: {error}') from error
  finally:
    sys.path.remove(folder)
    # Siblings imported from the recipe's folder are forgotten, so another folder's
    # sibling of the same name is read from its own file.
    for name in set(sys.modules) - before:
      if str(getattr(sys.modules[name], '__file__', '') or '').startswith(folder + os.sep):
        del sys.modules[name]
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise RecipeError(f'recipe {path} has no get_config() function')
  recipe = get_config()
  if not isinstance(recipe, Mapping):
    raise RecipeError(
      f'recipe {path}: get_config() returned {type(recipe).__name__}; expected a dict'
    )
  unknown = sorted(set(recipe) - set(PruneConfig.__dataclass_fields__))
  if unknown:
    raise RecipeError(
      f'recipe {path} sets {unknown}, which are not PruneConfig fields; '
      f'the fields: {list(PruneConfig.__dataclass_fields__)}'
    )
  return {k: dict(v) if isinstance(v, Mapping) else v for k, v in recipe.items()}


def from_recipe(path: str | os.PathLike[str], **overrides: Any) -> PruneConfig:
  """The configuration of the recipe in ``path`` (:func:`load_recipe`), ``overrides`` applied.

  Raises:
    RecipeError: see :func:`load_recipe`.
    ValueError: a bad value (:class:`PruneConfig` checks every field).
  """
  return PruneConfig(**{**load_recipe(path), **overrides})


# --- options that act only in some modes ----------------------------------------------------

# train_and_evaluate's arguments that act only with some datasets; check_options takes
# their names among the options given.
RUN_OPTIONS = ('data_dir', 'raw_dir', 'input_workers')

# Read through the grain pipeline (pruning.data.datasets.SourceInput): the only datasets with
# input worker processes.
_GRAIN_DATASETS = ('cifar10', 'imagenet2012')
# With training augmentation: the image datasets' crops (and flips), MNIST's shifts.
_AUGMENTED_DATASETS = ('mnist', 'cifar10', 'imagenet2012')
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
    >>> config = PruneConfig('lenet300', density={'fc1': 0.1}, retrain_lr_scale=0.5)
    >>> check_options(config, {'retrain_lr_scale'})
    Traceback (most recent call last):
    ...
    pruning.experiment.config.IdleOptionError: retrain_lr_scale needs retrain_schedule='fine-tune' (the retrain schedule is 'rewind')
    >>> fine_tune = PruneConfig('lenet300', density={'fc1': 0.1}, retrain_schedule='fine-tune')
    >>> check_options(fine_tune, {'retrain_lr_scale'})
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
  if option == 'nm_dense' and config.nm is None:
    return IdleOptionError(
      option,
      Needs(text="an N:M pattern (nm, such as '2:4')"),
      'without nm every layer prunes by its density',
    )
  gradual_nm = config.pruning_schedule == 'gradual' and option in ('nm', 'nm_dense')
  # A dense run (0 rounds) saves the state of its rewind_step for the runs it seeds.
  if (
    not in_code
    and config.rounds == 0
    and option in AFTER_DENSE_FIELDS - {'rounds', 'rewind_step'}
    and not gradual_nm  # gradual pruning prunes while round 0 trains
  ):
    return IdleOptionError(
      option, Needs('rounds', at_least=1), 'with 0 rounds the run only trains the dense network'
    )
  if option in STRUCTURED_FIELDS and config.structure != 'channels':
    return IdleOptionError(
      option,
      Needs('structure', ('channels',)),
      f'the structure is {config.structure!r}, which prunes single weights',
    )
  if option in UNSTRUCTURED_FIELDS and config.structure == 'channels':
    return IdleOptionError(
      option,
      Needs('structure', ('unstructured',)),
      "structure='channels' removes whole units, chosen by structured_criterion",
    )
  if option == 'structured_grad_batches':
    spec = structured.STRUCTURED_CRITERIA[config.structured_criterion]
    if not spec.needs_grads:
      return IdleOptionError(
        option,
        Needs(
          'structured_criterion',
          tuple(n for n, c in structured.STRUCTURED_CRITERIA.items() if c.needs_grads),
        ),
        f'the structured criterion is {config.structured_criterion!r}, which does not score '
        'from gradients',
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
  if not in_code and option == 'density' and config.nm is not None:
    return IdleOptionError(
      option, Needs('nm', (None,)), f'nm {config.nm!r} keeps N of every M in each pruned layer'
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
  if option.startswith('gradual_') and config.pruning_schedule != 'gradual':
    return IdleOptionError(
      option,
      Needs('pruning_schedule', ('gradual',)),
      f'the pruning schedule is {config.pruning_schedule!r}',
    )
  if option == 'rewind_step' and config.rounds > 0 and config.retrain_schedule != 'weight-rewind':
    return IdleOptionError(
      option,
      Needs('retrain_schedule', ('weight-rewind',)),
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
  if option == 'momentum' and config.optimizer != 'sgd':
    return IdleOptionError(
      option, Needs('optimizer', ('sgd',)), f'the optimizer is {config.optimizer!r}'
    )
  if option == 'weight_decay' and config.optimizer != 'adamw':
    return IdleOptionError(
      option,
      Needs('optimizer', ('adamw',)),
      f'the optimizer is {config.optimizer!r}, which regularises through regularization',
    )
  if option == 'regularization_strength' and config.regularization == 'none':
    return IdleOptionError(
      option, Needs('regularization', ('l2', 'l1')), "the regularization is 'none'"
    )
  dataset = config.dataset
  if option == 'augment' and dataset not in _AUGMENTED_DATASETS:
    return IdleOptionError(
      option,
      _needs_dataset(config.model, _AUGMENTED_DATASETS),
      f'the dataset is {dataset!r}, which is not augmented',
    )
  if option == 'input_workers' and dataset not in _GRAIN_DATASETS:
    return IdleOptionError(
      option,
      _needs_dataset(config.model, _GRAIN_DATASETS),
      f'the dataset is {dataset!r}, which is not read through grain',
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
