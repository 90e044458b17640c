"""VGG-16-CIFAR's first training steps: this toolkit next to a torch twin, and the dead classifier.

Trains the shipped recipe (``scripts/configs/vgg16_cifar.py``: batch 128,
SGD momentum 0.9 at lr 0.05 with its cosine schedule and warm-up as
configured, L2 5e-4 over the kept weights, dropout 0.5 after ``fc6`` and
``fc7``) at a reduced width with batch norm, for the first few hundred steps,
in two frameworks from the same initial weights on the same CIFAR-10
training batches:

* the toolkit as the pipeline runs it: ``steps.compile_steps`` with
  ``masked_optimizer`` (its all-kept mask) around ``inject_hyperparams(sgd)``,
  the rate set on the host before every step, the recipe's compiler options;
* a torch model of the same architecture written here (3x3 convolutions
  padded 1, ``BatchNorm2d`` with flax's epsilon and ``momentum = 1 - 0.99``,
  ReLU, 2x2 max-pools, ``fc6``/``fc7`` with ReLU and dropout, ``fc8``), the
  toolkit's initial weights copied in (NHWC/HWIO to NCHW/OIHW), the L2
  penalty of ``steps.penalty('l2', ...)`` (``strength * sum w**2 / 2`` over
  convolution and dense kernels, no biases, no batch-norm scales) added to
  the loss, ``torch.optim.SGD`` with the same momentum and the same rate at
  every step.

Dropout masks come from each framework's own random numbers, so the two
curves agree within noise, not exactly; ``tests/benchmarks/test_vgg_vs_torch.py``
checks that without dropout they agree to float rounding. Torch's
``BatchNorm2d`` updates its running variance with the unbiased batch
variance, flax with the biased one; training reads batch statistics only, so
this changes nothing here.

Parts (each run separately, under the heavy-job lock, each adding its rows
to ``benchmarks/results/vgg_vs_torch.json`` and rewriting
``benchmarks/results/vgg_vs_torch.md`` from it):

* ``new``: the recipe as shipped (``fc6``-``fc8`` uniform ±1/sqrt(fan_in));
* ``old``: the same but ``fc6``-``fc8`` He-initialised (``he_normal``, the
  classifier before ``models/init.py``): the dead classifier;
* ``bf16``: the toolkit's own step in float32 and in bfloat16
  (``dtype='bfloat16'``) from the same weights on the same batches (and the
  same dropout masks: the same seeds, and masks do not depend on the dtype);
* ``timing``: the median step time of the toolkit and of torch
  (``torch.set_num_threads(2)``), in alternating blocks so that other load
  hits both alike; of the toolkit's step compiled with XLA's default
  options (YNNPACK convolutions) instead of the recipe's; and of each model
  alone, its forward and its forward + backward without the optimizer
  (:func:`model_passes`, :func:`torch_passes`), which says how much of a
  gap between the steps is the models' compiled passes.

Losses are the mean cross-entropy of each step's batch (without the
penalty), averaged over windows; "live" ``fc6`` units are those whose ReLU
output is positive for at least one example of the batch, at step ``k``
meaning the weights after ``k`` updates on batch ``k`` (batch statistics, as
training sees it). Torch is a benchmark-only dependency
(``pip install torch==2.13.0``, the CPU wheel).

Usage:
  python benchmarks/vgg_vs_torch.py --part new [--width 0.25] [--steps 300] [--seed 0]
  python benchmarks/vgg_vs_torch.py --part old
  python benchmarks/vgg_vs_torch.py --part bf16 [--bf16-steps 200]
  python benchmarks/vgg_vs_torch.py --part timing [--timed-steps 100]
  python benchmarks/vgg_vs_torch.py --part report   # the Markdown again, from the JSON
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import _common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from models import MODELS, model_options
from pruning import optimizer
from pruning.data import datasets
from pruning.experiment import parallel, pipeline, steps
from pruning.experiment.config import PruneConfig

try:
  import torch
except ImportError:  # pragma: no cover - the message says what to do
  sys.exit('this benchmark needs torch: pip install torch==2.13.0')

RECIPE = 'vgg16_cifar'
CLASSIFIER = ('fc6', 'fc7', 'fc8')
LIVE_STEPS = (0, 20, 100, 300)
RESULTS = _common.REPO / 'benchmarks' / 'results'
PARTS = ('new', 'old', 'bf16', 'timing')
TOOLKIT = 'toolkit (the recipe: XLA convolutions)'
YNNPACK = "ablation: XLA's default options (YNNPACK convolutions)"
# The models alone, no optimizer: where a gap between the steps comes from.
MODEL_PASSES = {
  'forward': ('toolkit model: forward only', 'torch model: forward only'),
  'forward + backward': ('toolkit model: forward + backward', 'torch model: forward + backward'),
}


# --- the toolkit's side ------------------------------------------------------------------------


def recipe_config(width: float, seed: int, **overrides: Any) -> PruneConfig:
  """The shipped VGG-16-CIFAR recipe at ``width`` with batch norm, ``overrides`` applied."""
  return _common.shipped_config(
    RECIPE, **{'width': width, 'batch_norm': True, 'seed': seed, **overrides}
  )


def build_model(config: PruneConfig, classifier_init: Callable | None = None) -> nnx.Module:
  """The model the pipeline builds for ``config``; ``classifier_init`` redraws ``fc6``-``fc8``.

  With ``classifier_init`` (``nnx.initializers.he_normal()`` for the old
  classifier) the three dense kernels are drawn again from it, from a key of
  their own; everything else is the pipeline's model, weight for weight.
  """
  options = model_options(
    config.model,
    width=config.width,
    batch_norm=config.batch_norm,
    dropout_rate=config.dropout_rate,
    dtype=config.dtype,
  )
  model = MODELS[config.model].build(nnx.Rngs(config.seed), **options)
  if classifier_init is not None:
    key = jax.random.fold_in(jax.random.key(config.seed), 6)
    for index, name in enumerate(CLASSIFIER):
      kernel = getattr(model, name).kernel
      kernel.set_value(classifier_init(jax.random.fold_in(key, index), kernel.shape, jnp.float32))
  return model


def recipe_schedule(config: PruneConfig, steps_per_epoch: int) -> Callable[[int], float]:
  """The pipeline's learning rate at each step of ``config``'s run."""
  return config.learning_rate_schedule(steps_per_epoch)


def open_data(config: PruneConfig, mesh, data: dict[str, str | None]) -> datasets.Input:
  """``config``'s CIFAR-10 input as the pipeline opens it (batches on the device, augmented)."""
  return datasets.open_input(config.dataset, pipeline.input_options(config, mesh, **data))


def train_batches(data: datasets.Input, count: int) -> Iterator[tuple[jax.Array, jax.Array]]:
  """The run's first ``count`` training batches, epoch after epoch."""
  epoch = 0
  while True:
    for batch in data.train_epoch(epoch):
      if count == 0:
        return
      yield batch
      count -= 1
    epoch += 1


def model_passes(
  model: nnx.Module, config: PruneConfig, images: jax.Array, labels: jax.Array
) -> dict[str, Callable]:
  """The model's loss alone, and its gradient, compiled as the recipe compiles the step.

  Each takes a batch shaped like ``(images, labels)`` and returns device
  values, not waited for; training mode (batch statistics, dropout), no
  penalty, no optimizer.
  """
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params, rest, images, labels):
    logits = nnx.merge(graphdef, params, rest, copy=True)(images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def compiled(fn: Callable) -> Callable:
    lowered = jax.jit(fn).lower(params, rest, images, labels)
    executable = lowered.compile(compiler_options=config.compiler_options or None)
    return lambda images, labels: executable(params, rest, images, labels)

  return {'forward': compiled(loss), 'forward + backward': compiled(jax.grad(loss))}


def torch_passes(twin: TorchVGG) -> dict[str, Callable]:
  """:func:`model_passes` for the torch twin (which stays in training mode)."""

  def forward(images: torch.Tensor, labels: torch.Tensor) -> None:
    with torch.no_grad():
      torch.nn.functional.cross_entropy(twin(images), labels)

  def forward_backward(images: torch.Tensor, labels: torch.Tensor) -> None:
    twin.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(twin(images), labels).backward()

  return {'forward': forward, 'forward + backward': forward_backward}


class ToolkitRun:
  """The pipeline's compiled train step on ``model``, with the pipeline's optimizer and rate.

  The step donates its params: ``model``'s arrays are not to be used after the first step.
  """

  def __init__(self, model: nnx.Module, config: PruneConfig, rate: Callable[[int], float], mesh):
    self.rate = rate
    self.tx = optimizer.masked_optimizer(
      optax.inject_hyperparams(optax.sgd)(learning_rate=rate(0), momentum=config.momentum)
    )
    penalty = steps.penalty(config.regularization, config.regularization_strength)
    compiled = steps.compile_steps(
      model, self.tx, penalty, mesh, compiler_options=config.compiler_options
    )
    self.graphdef, self.params, self.rest = compiled.graphdef, compiled.params, compiled.rest
    self.train = compiled.train
    self.opt_state = parallel.replicate(self.tx.init(self.params), mesh)
    self._live = jax.jit(self._fc6_live)

  def step(self, index: int, images: jax.Array, labels: jax.Array) -> jax.Array:
    """Step ``index`` (from 0) on one batch; its loss, not waited for."""
    inner = self.opt_state.inner_state
    hyperparams = {**inner.hyperparams, 'learning_rate': np.float32(self.rate(index))}
    self.opt_state = self.opt_state._replace(inner_state=inner._replace(hyperparams=hyperparams))
    self.params, self.rest, self.opt_state, metrics = self.train(
      self.params, self.rest, self.opt_state, images, labels
    )
    return metrics['loss']

  def _fc6_live(self, params, rest, images):
    # A copy in training mode (batch statistics): what the train step's forward sees.
    # dropout6's input is relu(fc6(x)); the copy's running statistics are discarded.
    model = nnx.merge(self.graphdef, params, rest, copy=True)
    seen = []
    model.dropout6 = lambda x: seen.append(x) or x
    model(images)
    return jnp.mean(jnp.any(seen[0] > 0, axis=0))

  def fc6_live(self, images: jax.Array) -> float:
    """The fraction of ``fc6`` units positive for at least one example of ``images``."""
    return float(self._live(self.params, self.rest, images))


# --- the torch twin ----------------------------------------------------------------------------


class TorchVGG(torch.nn.Module):
  """VGG-16 (CIFAR or ImageNet shape) in torch, NCHW, with the toolkit's layer names."""

  def __init__(
    self,
    blocks: Sequence[Sequence[tuple[str, int, int]]],
    hidden: tuple[int, int, int, int],
    *,
    batch_norm: bool,
    dropout_rate: float,
    bn_epsilon: float,
    bn_momentum: float,
  ):
    super().__init__()
    self.names = tuple(tuple(name for name, _, _ in block) for block in blocks)
    self.batch_norm = batch_norm
    for block in blocks:
      for name, features_in, features_out in block:
        setattr(self, name, torch.nn.Conv2d(features_in, features_out, 3, padding=1))
        if batch_norm:
          norm = torch.nn.BatchNorm2d(features_out, eps=bn_epsilon, momentum=bn_momentum)
          setattr(self, name.replace('conv', 'bn'), norm)
    flat, fc6, fc7, classes = hidden
    self.fc6 = torch.nn.Linear(flat, fc6)
    self.dropout6 = torch.nn.Dropout(dropout_rate)
    self.fc7 = torch.nn.Linear(fc6, fc7)
    self.dropout7 = torch.nn.Dropout(dropout_rate)
    self.fc8 = torch.nn.Linear(fc7, classes)

  def features(self, x):
    for names in self.names:
      for name in names:
        x = getattr(self, name)(x)
        if self.batch_norm:
          x = getattr(self, name.replace('conv', 'bn'))(x)
        x = torch.relu(x)
      x = torch.nn.functional.max_pool2d(x, 2)
    # Flattened height, width, channels, as the toolkit's NHWC reshape.
    return x.permute(0, 2, 3, 1).flatten(1)

  def forward(self, x):
    x = self.dropout6(torch.relu(self.fc6(self.features(x))))
    x = self.dropout7(torch.relu(self.fc7(x)))
    return self.fc8(x)


def _pure(tree) -> dict[str, dict[str, np.ndarray]]:
  return {
    layer: {leaf: np.asarray(value) for leaf, value in leaves.items()}
    for layer, leaves in nnx.to_pure_dict(tree).items()
    if isinstance(leaves, dict)
  }


def torch_twin(model: nnx.Module) -> TorchVGG:
  """A torch :class:`TorchVGG` holding ``model``'s weights and batch-norm statistics."""
  params, stats = _pure(nnx.state(model, nnx.Param)), _pure(nnx.state(model, nnx.BatchStat))
  blocks = [[(name, *params[name]['kernel'].shape[2:]) for name in names] for names in model.blocks]
  norm = getattr(model, 'bn1_1', None)
  twin = TorchVGG(
    blocks,
    (
      params['fc6']['kernel'].shape[0],
      params['fc6']['kernel'].shape[1],
      params['fc7']['kernel'].shape[1],
      params['fc8']['kernel'].shape[1],
    ),
    batch_norm=model.batch_norm,
    dropout_rate=model.dropout6.rate,
    # flax keeps momentum of the old average, torch gives the new batch's weight.
    bn_epsilon=norm.epsilon if norm is not None else 1e-5,
    bn_momentum=1.0 - norm.momentum if norm is not None else 0.1,
  )
  with torch.no_grad():
    for name, module in twin.named_children():
      if isinstance(module, torch.nn.Conv2d):
        module.weight.copy_(torch.from_numpy(params[name]['kernel'].transpose(3, 2, 0, 1).copy()))
        module.bias.copy_(torch.tensor(params[name]['bias']))
      elif isinstance(module, torch.nn.Linear):
        module.weight.copy_(torch.from_numpy(params[name]['kernel'].T.copy()))
        module.bias.copy_(torch.tensor(params[name]['bias']))
      elif isinstance(module, torch.nn.BatchNorm2d):
        module.weight.copy_(torch.tensor(params[name]['scale']))
        module.bias.copy_(torch.tensor(params[name]['bias']))
        module.running_mean.copy_(torch.tensor(stats[name]['mean']))
        module.running_var.copy_(torch.tensor(stats[name]['var']))
  return twin


def jax_layout(tensor: torch.Tensor) -> np.ndarray:
  """A torch weight (or its gradient) in the toolkit's layout: OIHW to HWIO, (out, in) to (in, out)."""
  array = tensor.detach().numpy()
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  return array.T if array.ndim == 2 else array.copy()


def torch_state_as_jax(twin: TorchVGG) -> dict[str, dict[str, np.ndarray]]:
  """``twin``'s weights and running statistics under the toolkit's names and layouts."""
  out = {}
  for name, module in twin.named_children():
    if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
      out[name] = {'kernel': jax_layout(module.weight), 'bias': jax_layout(module.bias)}
    elif isinstance(module, torch.nn.BatchNorm2d):
      out[name] = {
        'scale': jax_layout(module.weight),
        'bias': jax_layout(module.bias),
        'mean': jax_layout(module.running_mean),
        'var': jax_layout(module.running_var),
      }
  return out


class TorchRun:
  """The recipe's training step on a :class:`TorchVGG`: SGD with momentum, L2 in the loss."""

  def __init__(self, twin: TorchVGG, config: PruneConfig, rate: Callable[[int], float]):
    self.model, self.rate = twin, rate
    self.strength = config.regularization_strength if config.regularization == 'l2' else 0.0
    if config.regularization not in ('l2', 'none'):
      raise ValueError(f'the torch twin has no {config.regularization!r} penalty')
    self.kernels = [
      m.weight for m in twin.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    self.optimizer = torch.optim.SGD(twin.parameters(), lr=rate(0), momentum=config.momentum)
    twin.train()

  def step(self, index: int, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Step ``index`` (from 0) on one NCHW batch; its mean cross-entropy."""
    for group in self.optimizer.param_groups:
      group['lr'] = self.rate(index)
    self.optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(self.model(images), labels)
    # steps.penalty('l2', s): s * sum w**2 / 2 over the kernels (regularization.l2_penalty).
    penalty = 0.5 * sum(w.square().sum() for w in self.kernels)
    (loss + self.strength * penalty).backward()
    self.optimizer.step()
    return loss.detach()

  def fc6_live(self, images: torch.Tensor) -> float:
    """The fraction of ``fc6`` units positive for at least one example of ``images``."""
    probe = copy.deepcopy(self.model)  # batch statistics, and these running averages dropped
    with torch.no_grad():
      hidden = torch.relu(probe.fc6(probe.features(images)))
    return float((hidden > 0).any(dim=0).float().mean())


def to_torch(images: jax.Array, labels: jax.Array) -> tuple[torch.Tensor, torch.Tensor]:
  """A toolkit batch (NHWC) as torch tensors (NCHW, int64 labels)."""
  x = np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))
  return torch.from_numpy(x), torch.from_numpy(np.asarray(labels).astype(np.int64))


# --- the parts ---------------------------------------------------------------------------------


def _setup(args, **overrides):
  config = recipe_config(args.width, args.seed, **overrides)
  mesh = parallel.data_mesh()
  data = open_data(config, mesh, _common.data_options(args))
  return config, mesh, data, recipe_schedule(config, data.steps_per_epoch())


def run_curves(args, part: str) -> dict[str, Any]:
  """Toolkit and torch, one recipe (``'new'`` or ``'old'`` classifier), side by side."""
  config, mesh, data, rate = _setup(args)
  init = nnx.initializers.he_normal() if part == 'old' else None
  model = build_model(config, init)
  torch.manual_seed(args.seed)
  twin = TorchRun(torch_twin(model), config, rate)
  toolkit = ToolkitRun(model, config, rate, mesh)
  losses: dict[str, list] = {'toolkit': [], 'torch': []}
  live: dict[str, dict[int, float]] = {'toolkit': {}, 'torch': {}}
  for index, (images, labels) in enumerate(train_batches(data, args.steps + 1)):
    torch_images, torch_labels = to_torch(images, labels)
    if index in LIVE_STEPS or index == args.steps:
      live['toolkit'][index] = toolkit.fc6_live(images)
      live['torch'][index] = twin.fc6_live(torch_images)
    if index == args.steps:
      break
    losses['toolkit'].append(toolkit.step(index, images, labels))
    losses['torch'].append(twin.step(index, torch_images, torch_labels))
    if index % 50 == 49:
      print(f'{part}: step {index + 1}/{args.steps}', flush=True)
  curves = {
    'toolkit': [float(x) for x in jax.device_get(losses['toolkit'])],
    'torch': [float(x) for x in losses['torch']],
  }
  for name, curve in curves.items():
    if not np.isfinite(curve).all():
      raise FloatingPointError(f'{part}: the {name} loss is not finite')
  return {
    'classifier_init': 'he_normal' if init else 'models.init.CLASSIFIER_KERNEL_INIT',
    'loss': curves,
    'fc6_live': {name: {str(k): v for k, v in values.items()} for name, values in live.items()},
    'learning_rate': [rate(k) for k in range(args.steps)],
  }


def run_bf16(args) -> dict[str, Any]:
  """The toolkit's own step in float32 and bfloat16 from the same weights, same batches."""
  runs = {}
  for dtype in ('float32', 'bfloat16'):
    config, mesh, data, rate = _setup(args, dtype=dtype)
    runs[dtype] = (ToolkitRun(build_model(config), config, rate, mesh), [], [])
  for index, (images, labels) in enumerate(train_batches(data, args.bf16_steps)):
    for run, losses, times in runs.values():
      start = time.perf_counter()
      losses.append(run.step(index, images, labels).block_until_ready())
      times.append(time.perf_counter() - start)
  return {
    'loss': {dtype: [float(x) for x in losses] for dtype, (_, losses, _) in runs.items()},
    'median_step_ms': {
      dtype: 1e3 * statistics.median(times[1:]) for dtype, (_, _, times) in runs.items()
    },
  }


def run_timing(args) -> dict[str, Any]:
  """Median step time of the toolkit and of torch, alternating blocks of steps."""
  config, mesh, data, rate = _setup(args)
  batches = list(train_batches(data, args.timing_batches))
  torch_batches = [to_torch(*batch) for batch in batches]
  # The recipe compiles with models.CPU_COMPILER_OPTIONS (XLA's own convolutions, not
  # YNNPACK); the ablation compiles the same step with XLA's defaults.
  # The models are built again for each: a step donates its params.
  twin = TorchRun(torch_twin(build_model(config)), config, rate)
  toolkits = {
    TOOLKIT: ToolkitRun(build_model(config), config, rate, mesh),
    YNNPACK: ToolkitRun(
      build_model(config), dataclasses.replace(config, compiler_options={}), rate, mesh
    ),
  }
  passes = {}
  ours = model_passes(build_model(config), config, *batches[0])
  theirs = torch_passes(twin.model)
  for kind, (our_name, their_name) in MODEL_PASSES.items():
    passes[our_name] = lambda index, fn=ours[kind]: jax.block_until_ready(fn(*batches[index]))
    passes[their_name] = lambda index, fn=theirs[kind]: fn(*torch_batches[index])
  times: dict[str, list[float]] = {name: [] for name in [*toolkits, 'torch', *passes]}

  def timed(name: str, index: int) -> float:
    batch = index % len(batches)
    start = time.perf_counter()
    if name in toolkits:
      toolkits[name].step(index, *batches[batch]).block_until_ready()
    elif name in passes:
      passes[name](batch)
    else:
      twin.step(index, *torch_batches[batch])
    return time.perf_counter() - start

  warmup, blocks = 5, args.blocks
  per_block = max(1, args.timed_steps // blocks)
  for name in times:
    for index in range(warmup):
      timed(name, index)
  for block in range(blocks):
    for name in times:
      for index in range(warmup + block * per_block, warmup + (block + 1) * per_block):
        times[name].append(timed(name, index))
  return {
    'median_ms': {name: 1e3 * statistics.median(t) for name, t in times.items()},
    'min_ms': {name: 1e3 * min(t) for name, t in times.items()},
    'timed_steps': {name: len(t) for name, t in times.items()},
    'blocks': blocks,
    'torch_threads': torch.get_num_threads(),
  }


# --- the report --------------------------------------------------------------------------------


def window_means(curve: Sequence[float], window: int) -> list[tuple[int, int, float]]:
  """``(first step, last step, mean)`` of each full or final partial window, steps from 1.

  Examples:
    >>> window_means([4.0, 2.0, 1.0], 2)
    [(1, 2, 3.0), (3, 3, 1.0)]
  """
  return [
    (start + 1, min(start + window, len(curve)), float(np.mean(curve[start : start + window])))
    for start in range(0, len(curve), window)
  ]


def _provenance_lines(entry: dict[str, Any]) -> list[str]:
  settings = entry['settings']
  return [
    f'- command: `{entry["provenance"]["command"]}`',
    f'- commit: `{entry["provenance"]["commit"]}`; machine: {entry["provenance"]["machine"]}; '
    f'torch {entry["torch"]}',
    f'- seed {settings["seed"]}, width {settings["width"]}, batch {settings["batch_size"]}, '
    f'recipe: {settings["recipe"]}',
  ]


def _curve_section(results: dict[str, Any], window: int) -> list[str]:
  lines = []
  parts = [part for part in ('new', 'old') if part in results]
  if not parts:
    return lines
  lines += ['## Loss, toolkit vs torch (same weights, same batches, own dropout masks)', '']
  for part in parts:
    lines += [f'`{part}` ({results[part]["classifier_init"]} for fc6-fc8):', '']
    lines += [*_provenance_lines(results[part]), '']
  header = '| steps |'
  rule = '|---|'
  for part in parts:
    header += f' toolkit, {part} | torch, {part} | difference |'
    rule += '---:|---:|---:|'
  lines += [header, rule]
  first = '| first loss (step 1) |'
  for part in parts:
    curves = results[part]['loss']
    first += f' {curves["toolkit"][0]:.3f} | {curves["torch"][0]:.3f} | '
    first += f'{curves["toolkit"][0] - curves["torch"][0]:+.3f} |'
  lines.append(first)
  columns = [
    (
      window_means(results[p]['loss']['toolkit'], window),
      window_means(results[p]['loss']['torch'], window),
    )
    for p in parts
  ]
  for row in range(len(columns[0][0])):
    start, end, _ = columns[0][0][row]
    text = f'| {start}-{end} |'
    for ours, theirs in columns:
      if row < len(ours):
        text += (
          f' {ours[row][2]:.3f} | {theirs[row][2]:.3f} | {ours[row][2] - theirs[row][2]:+.3f} |'
        )
      else:
        text += ' | | |'
    lines.append(text)
  lines += [
    '',
    f"Mean cross-entropy of each step's batch (no penalty), averaged over {window} steps; "
    'step k trains on the k-th batch (from 1). The difference is toolkit - torch.',
    '',
  ]
  lines += ['## Live fc6 units (ReLU output > 0 for at least one example of the batch)', '']
  lines += [
    'At step k: the weights after k updates, on the batch of update k + 1 (batch statistics, '
    'as training sees it); step 0 is the initial network.',
    '',
  ]
  steps_seen = sorted({int(k) for p in parts for k in results[p]['fc6_live']['toolkit']})
  header, rule = '| recipe | framework |', '|---|---|'
  for k in steps_seen:
    header += f' step {k} |'
    rule += '---:|'
  lines += [header, rule]
  for part in parts:
    for name in ('toolkit', 'torch'):
      live = results[part]['fc6_live'][name]
      cells = ''.join(
        f' {100 * live[str(k)]:.1f} % |' if str(k) in live else ' |' for k in steps_seen
      )
      lines.append(f'| {part} | {name} |{cells}')
  lines.append('')
  return lines


def _bf16_section(results: dict[str, Any], window: int) -> list[str]:
  if 'bf16' not in results:
    return []
  entry = results['bf16']
  f32, bf16 = entry['loss']['float32'], entry['loss']['bfloat16']
  lines = ["## bfloat16 vs float32, the toolkit's own step", '', *_provenance_lines(entry), '']
  noise = None
  if 'new' in results and results['new']['settings'] == entry['settings']:
    noise = window_means(results['new']['loss']['torch'], window)
    same = results['new']['loss']['toolkit'][: len(f32)] == f32
    lines += [
      "The float32 curve is the `new` part's toolkit curve again, "
      + ('value for value (the step is deterministic).' if same else '**but it differs** from it.'),
      '',
    ]
  header = '| steps | float32 | bfloat16 | difference |'
  rule = '|---|---:|---:|---:|'
  if noise:
    header += ' float32 toolkit - torch (noise of other dropout masks) |'
    rule += '---:|'
  lines += [header, rule]
  for row, ((start, end, a), (_, _, b)) in enumerate(
    zip(window_means(f32, window), window_means(bf16, window), strict=True)
  ):
    text = f'| {start}-{end} | {a:.3f} | {b:.3f} | {b - a:+.3f} |'
    if noise:
      text += f' {a - noise[row][2]:+.3f} |' if noise[row][1] == end else ' |'
    lines.append(text)
  ms = entry['median_step_ms']
  lines += [
    '',
    f'Same initial weights, batches and dropout masks. Median step on this CPU: float32 '
    f'{ms["float32"]:.0f} ms, bfloat16 {ms["bfloat16"]:.0f} ms (bfloat16 is for accelerators).',
    '',
  ]
  return lines


def _timing_section(results: dict[str, Any]) -> list[str]:
  if 'timing' not in results:
    return []
  entry = results['timing']
  median, low = entry['median_ms'], entry['min_ms']
  lines = ['## Step time, toolkit vs torch', '', *_provenance_lines(entry), '']
  lines += [
    '| | median step (ms) | min step (ms) | / torch | timed steps |',
    '|---|---:|---:|---:|---:|',
  ]
  for name in median:
    lines.append(
      f'| {name} | {median[name]:.1f} | {low[name]:.1f} | {median[name] / median["torch"]:.2f} '
      f'| {entry["timed_steps"][name]} |'
    )
  lines += [
    '',
    f'{entry["blocks"]} alternating blocks, 5 warm-up steps each; torch with '
    f'{entry["torch_threads"]} threads; batches prepared beforehand (input not timed).',
    '',
  ]
  return lines


def reading(results: dict[str, Any], window: int) -> list[str]:
  """What the curves say, computed from them: first losses, agreement, live units."""
  lines = []
  for part in ('new', 'old'):
    if part not in results:
      continue
    curves, live = results[part]['loss'], results[part]['fc6_live']
    ours, theirs = (window_means(curves[name], window) for name in ('toolkit', 'torch'))
    gap = max(abs(a[2] - b[2]) for a, b in zip(ours, theirs, strict=True))
    at = str(max(k for k in LIVE_STEPS if str(k) in live['toolkit'] and k <= 20))
    lines.append(
      f'- `{part}`: first loss {curves["toolkit"][0]:.2f} (toolkit) and {curves["torch"][0]:.2f} '
      f'(torch), ln 10 = {np.log(10):.3f}; the {window}-step means of the two differ by at most '
      f'{gap:.3f}; live fc6 units at step {at}: {100 * live["toolkit"][at]:.1f} % and '
      f'{100 * live["torch"][at]:.1f} %'
    )
  if 'bf16' in results:
    curves = results['bf16']['loss']
    f32, bf16 = (window_means(curves[dtype], window) for dtype in ('float32', 'bfloat16'))
    gap = max(abs(a[2] - b[2]) for a, b in zip(f32, bf16, strict=True))
    text = f'- bf16: its {window}-step means differ from float32 by at most {gap:.3f}'
    if 'new' in results:
      ours, theirs = (window_means(results['new']['loss'][n], window) for n in ('toolkit', 'torch'))
      noise = max(
        abs(a[2] - b[2]) for a, b in zip(ours[: len(f32)], theirs[: len(f32)], strict=True)
      )
      text += f', toolkit from torch (other dropout masks) over the same steps by {noise:.3f}'
    lines.append(text)
  if 'timing' in results:
    median = results['timing']['median_ms']
    text = (
      f'- step time: the toolkit {median[TOOLKIT]:.0f} ms, torch {median["torch"]:.0f} ms '
      f'({median[TOOLKIT] / median["torch"]:.2f}x)'
    )
    ours, theirs = MODEL_PASSES['forward + backward']
    if ours in median:  # timing entries from before the models were timed alone lack them
      text += (
        f"; the models' forward + backward alone, without the optimizer, {median[ours]:.0f} and "
        f'{median[theirs]:.0f} ms ({median[ours] / median[theirs]:.2f}x), so '
        f'{median[TOOLKIT] - median["torch"] - (median[ours] - median[theirs]):.0f} ms of the '
        f'{median[TOOLKIT] - median["torch"]:.0f} ms difference is outside the models'
      )
    lines.append(text)
  return ['## Reading (computed from the results below)', '', *lines, ''] if lines else []


def markdown(results: dict[str, Any], window: int, invocation: dict[str, str]) -> str:
  """The results file: what the curves say, then one section per part present in ``results``."""
  lines = [
    '# VGG-16-CIFAR, first training steps: toolkit vs torch, new vs old classifier init, bf16',
    '',
    'Written by `benchmarks/vgg_vs_torch.py` (see its docstring for what each part does) from '
    '`vgg_vs_torch.json`, which holds the raw per-step curves; each part below names the '
    f'command, commit and machine that ran it. This file: `{invocation["command"]}` at '
    f'`{invocation["commit"]}`.',
    '',
  ]
  lines += reading(results, window)
  lines += _curve_section(results, window)
  lines += _bf16_section(results, window)
  lines += _timing_section(results)
  return '\n'.join(lines).rstrip() + '\n'


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--part', choices=[*PARTS, 'report'], required=True)
  parser.add_argument('--width', type=float, default=0.25)
  parser.add_argument('--steps', type=int, default=300, help='steps of the new and old parts')
  parser.add_argument('--bf16-steps', type=int, default=200)
  parser.add_argument('--timed-steps', type=int, default=100, help='timed steps per framework')
  parser.add_argument('--timing-batches', type=int, default=20, help='distinct batches, cycled')
  parser.add_argument('--blocks', type=int, default=10)
  parser.add_argument('--window', type=int, default=25, help='steps per averaged loss')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', type=pathlib.Path, default=RESULTS / 'vgg_vs_torch')
  _common.add_data_arguments(parser, 'cifar10')
  args = parser.parse_args(argv)
  json_path, md_path = args.out.with_suffix('.json'), args.out.with_suffix('.md')
  results = json.loads(json_path.read_text()) if json_path.exists() else {}
  if args.part != 'report':
    torch.set_num_threads(2)
    invocation = _common.provenance()
    if args.part in ('new', 'old'):
      entry = run_curves(args, args.part)
    elif args.part == 'bf16':
      entry = run_bf16(args)
    else:
      entry = run_timing(args)
    config = recipe_config(args.width, args.seed)
    entry['provenance'] = invocation
    entry['torch'] = torch.__version__
    entry['settings'] = {
      'seed': args.seed,
      'width': args.width,
      'batch_size': config.batch_size,
      'recipe': _common.recipe(dataclasses.asdict(config))
      + f'; warm-up {config.warmup_steps} steps, batch norm, dropout '
      + ('0.5 (the model default)' if config.dropout_rate is None else f'{config.dropout_rate}'),
    }
    results[args.part] = entry
    _common.write_json(json_path, results)
  text = markdown(results, args.window, _common.provenance())
  _common.write_text(md_path, text)
  print(text)


if __name__ == '__main__':
  main()
