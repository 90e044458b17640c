"""Export a pruning run as a compact sparse model, verified and measured.

:func:`export_run` takes the workdir of a :mod:`pruning.experiment.pipeline` run,
rebuilds its model from ``config.json`` (``models.MODELS`` with the run's
width, batch norm, dropout and dtype), restores a round's checkpoint with its
mask and batch-norm statistics, removes dead neurons
(:func:`~pruning.remove_dead_neurons`; through batch norm for VGG-16), encodes
the smaller model in the sparse format (:mod:`pruning.sparse.file_format`),
decodes those bytes again and checks on a test set that the decoded model,
dense and with sparse FC layers, predicts exactly what the masked model
predicts. Only then is the file written (atomically), with a size and
latency report beside it: ``<name>.report.md`` and ``<name>.report.json``.

Every model of the registry exports. The input shape comes from its entry
(``models.MODELS[name].image_shape``), the test set from
:data:`EVALUATION_DATA`, read through :mod:`pruning.data` as the pipeline
evaluates a run, preprocessing included:

* ``lenet300``, ``lenet5``: MNIST's test split (10,000), scaled to [0, 1];
* ``vgg16_cifar``: CIFAR-10's test split (10,000), normalised per channel;
* ``vgg16``, ``alexnet``: ImageNet's validation split (50,000), resized and
  centre-cropped to 224 (227 for AlexNet) and normalised, from the tfds
  ``imagenet2012`` dataset the user prepared in ``data_dir`` (see
  :mod:`pruning.data.imagenet`); without it the export stops with the steps
  that prepare it.

The report gives the file's size against the dense float32 params with
float32 and with float16 values, the test predictions of each variant, and
latencies (median ms) at batch 1 and 64: of the whole model dense and with
sparse FC layers, and of each FC layer alone (``fc6``, ``fc7`` of VGG-16)
with the run's real pruned weights.
"""

from __future__ import annotations

import functools
import itertools
import json
import pathlib
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from models import MODELS, create_model, model_options
from pruning import _io, _tree, optimizer
from pruning.data import grain_batches, mnist, sampling
from pruning.data.images import dataset_info, image_source
from pruning.data.raw_files import DataFilesError
from pruning.experiment import checkpoints, report
from pruning.experiment.run_dir import RunDir
from pruning.sparse import file_format, inference, resize, surgery
from pruning.sparse.layer_chain import path_string

PyTree = Any
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


class EvaluationSplit(NamedTuple):
  """The split an export is verified on, as the model sees it.

  Attributes:
    dataset: ``'mnist'``, ``'cifar10'`` or ``'imagenet2012'``.
    split: the dataset's report split (``'test'``; ImageNet's ``'validation'``).
    size: examples read (all of the split, or a subset).
    provenance: where the examples come from.
    batches: batch size -> ``(inputs float32 (B, H, W, C), labels int (B,),
      valid bool (B,))`` covering the examples once in stored order, the last
      batch padded (one shape, one compile), preprocessed as for training.
  """

  dataset: str
  split: str
  size: int
  provenance: str
  batches: Callable[[int], Iterator[Batch]]


def _padded(array: np.ndarray, size: int) -> np.ndarray:
  """``array`` with zero rows appended up to ``size`` rows."""
  out = np.zeros((size, *array.shape[1:]), array.dtype)
  out[: len(array)] = array
  return out


def _mnist_test(
  data_dir: str | None, raw_dir: str | None, image_shape: tuple[int, ...], subset: int | None
) -> EvaluationSplit:
  del image_shape  # MNIST is stored at the LeNets' size
  pixels, labels = mnist.load_mnist('test', data_dir=data_dir, raw_dir=raw_dir)
  if subset:
    keep = sampling.subset_indices(len(pixels), subset, seed=None)  # the first, as a run's
    pixels, labels = pixels[keep], labels[keep]

  def batches(size: int) -> Iterator[Batch]:
    for x, y in sampling.array_batches(
      pixels, labels, size, seed=0, epoch=0, shuffle=False, drop_remainder=False
    ):
      valid = np.arange(size) < len(x)
      yield _padded(x, size), _padded(y, size), valid

  return EvaluationSplit('mnist', 'test', len(pixels), 'tfds mnist_idx (MNIST IDX files)', batches)


def _image_test(name: str):
  """The reader of an image dataset's report split (:mod:`pruning.data.images`)."""

  def read(
    data_dir: str | None, raw_dir: str | None, image_shape: tuple[int, ...], subset: int | None
  ) -> EvaluationSplit:
    info = dataset_info(name)
    source = image_source(name, info.eval_split, data_dir=data_dir, raw_path=raw_dir)
    if subset:
      # A seeded random sample, the same as a run's test_subset (sampling.carve).
      source = source.subset(sampling.subset_indices(len(source), subset, seed=0))
    image_size = None if info.fixed_size else image_shape[0]

    def batches(size: int) -> Iterator[Batch]:
      return iter(grain_batches.eval_batches(source, batch_size=size, image_size=image_size))

    return EvaluationSplit(name, info.eval_split, len(source), source.provenance, batches)

  return read


EVALUATION_DATA: dict[
  str, Callable[[str | None, str | None, tuple[int, ...], int | None], EvaluationSplit]
] = {
  'mnist': _mnist_test,
  'cifar10': _image_test('cifar10'),
  'imagenet2012': _image_test('imagenet2012'),
}
"""Dataset -> ``(data_dir, raw_dir, image_shape, subset) -> EvaluationSplit``: the
split an export is verified on. ``raw_dir`` is MNIST's IDX folder or the
CIFAR-10 tarball (ImageNet takes none: it is prepared with ``tfds build``);
``subset``: that many examples only (``None``: all)."""

LATENCY_BATCHES = (1, 64)


class RestoredRun(NamedTuple):
  """A pipeline run's model at one round.

  Attributes:
    config: the run's ``config.json``.
    model: the model with the checkpoint's params (pruned weights exactly 0)
      and batch statistics, in evaluation mode (dropout off, batch-norm
      averages).
    mask: its mask, ``nnx.state(model, nnx.Param)``-shaped.
    round: the restored round.
  """

  config: dict[str, Any]
  model: nnx.Module
  mask: PyTree
  round: int


class VerificationError(RuntimeError):
  """The exported model does not predict what the masked model predicts."""


def _find_masked_state(tree: Any) -> Mapping[str, Any] | None:
  """The ``MaskedState`` inside a raw (target-less) restored optimizer state."""
  if isinstance(tree, Mapping):
    if set(tree) == set(optimizer.MaskedState._fields):
      return tree
    children = tree.values()
  elif isinstance(tree, (list, tuple)):
    children = tree
  else:
    return None
  for child in children:
    found = _find_masked_state(child)
    if found is not None:
      return found
  return None


def _by_path(tree: Any) -> dict[str, Any]:
  """Leaves of a raw restored tree by path, without orbax's ``/value`` of nnx Variables."""
  return {name.removesuffix('/value'): leaf for name, leaf in _tree.named_leaves(tree)}


def evaluation_dataset(name: str) -> str:
  """The dataset whose test split an export of model ``name`` is verified on.

  The first of the model's datasets (``models.MODELS[name].datasets``) that
  :data:`EVALUATION_DATA` can read.

  Raises:
    ValueError: an unknown model, or one whose datasets have no evaluation
      data here; the message names the model, its datasets and input shape,
      and the datasets export can read.

  Examples:
    >>> evaluation_dataset('lenet5'), evaluation_dataset('vgg16_cifar'), evaluation_dataset('alexnet')
    ('mnist', 'cifar10', 'imagenet2012')
  """
  if name not in MODELS:
    raise ValueError(f'model is {name!r}; expected one of {sorted(MODELS)}')
  spec = MODELS[name]
  for dataset in spec.datasets:
    if dataset in EVALUATION_DATA:
      return dataset
  exportable = sorted(n for n, s in MODELS.items() if any(d in EVALUATION_DATA for d in s.datasets))
  raise ValueError(
    f'model {name!r} cannot be exported yet: it takes {spec.image_shape} images of '
    f'{" or ".join(spec.datasets)}, and an export is verified on the test split of such a '
    f'dataset, but export reads only the test split of {" and ".join(sorted(EVALUATION_DATA))} '
    f'so far (EVALUATION_DATA); the models it can export: {exportable}'
  )


def _check_exportable(name: Any, what: str) -> None:
  """Export verifies on a test set of the model's data: :func:`evaluation_dataset` must find one."""
  try:
    evaluation_dataset(name)
  except ValueError as error:
    raise ValueError(f'{what}: {error}') from None


def read_config(workdir: str | pathlib.Path) -> dict[str, Any]:
  """A run's ``config.json``, checked to name a model that exports.

  Raises:
    FileNotFoundError: ``workdir`` holds no ``config.json``.
    ValueError: its model is unknown or has no evaluation data
      (:func:`evaluation_dataset`).
  """
  files = RunDir(workdir)
  if not files.config.exists():
    raise FileNotFoundError(f'{files.path} holds no {files.config.name}: not a pruning run workdir')
  config = json.loads(files.config.read_text())
  _check_exportable(config.get('model'), f'{files.config}: config model')
  return config


def build_model(config: Mapping[str, Any], seed: int = 0) -> nnx.Module:
  """The model a run's config describes: its registry name and options.

  Width, batch norm, dropout rate and dtype as the pipeline passed them
  (:func:`models.model_options`); a config without them means the defaults.

  Examples:
    >>> config = {'model': 'vgg16_cifar', 'width': 0.125, 'batch_norm': True}
    >>> nnx.eval_shape(lambda: build_model(config)).bn1_1.num_features
    8
  """
  options = model_options(
    config['model'],
    width=config.get('width', 1.0),
    batch_norm=config.get('batch_norm', False),
    dropout_rate=config.get('dropout_rate'),
    dtype=config.get('dtype', 'float32'),
  )
  return create_model(config['model'], nnx.Rngs(seed), **options)


def restore_run(workdir: str | pathlib.Path, round_index: int | None = None) -> RestoredRun:
  """Rebuilds a pipeline run's model and mask at ``round_index`` (default: the last).

  The checkpoint is restored without a target, so this does not depend on
  how the run's optimizer was built; the mask is read from the
  ``masked_optimizer`` state inside it.

  The model is built as the run built it (:func:`build_model`), and gets the
  checkpoint's params and batch-norm statistics.

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint in ``workdir``.
    ValueError: the round does not exist, or the checkpoint does not fit the
      model named in the config (naming the leaves).
  """
  files = RunDir(workdir)
  config = read_config(workdir)
  with ocp.CheckpointManager(files.checkpoints.absolute()) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f'{files.checkpoints} holds no checkpoint')
    round_index = max(steps) if round_index is None else round_index
    if round_index not in steps:
      raise ValueError(f'round {round_index} has no checkpoint; rounds saved: {sorted(steps)}')
  # As numpy arrays: a run trained on several processes restores here too.
  raw = checkpoints.restore_to_host(files.round_checkpoint(round_index))
  model = build_model(config, seed=config.get('seed', 0))
  params = nnx.state(model, nnx.Param)
  saved = _by_path(raw['params'])
  names = [name for name, _ in _tree.named_leaves(params)]
  if sorted(saved) != sorted(names):
    raise ValueError(
      f'checkpoint params {sorted(saved)} do not fit model {config["model"]!r} ({sorted(names)})'
    )
  widths = {name: np.shape(_tree.unbox(leaf)) for name, leaf in _tree.named_leaves(params)}
  if any(np.shape(saved[name]) != shape for name, shape in widths.items()):
    # A run that pruned a structured run's smaller model (its dense_checkpoint a pruned/
    # folder): the model takes the checkpoint's widths (Linear, Conv and BatchNorm layers).
    wanted = {name for name, _ in _tree.named_leaves(nnx.state(model, nnx.BatchStat))}
    stats = {n: v for n, v in _by_path(raw.get('rest', {})).items() if n in wanted}
    resize.load_resized(model, {**saved, **stats})
    params = nnx.state(model, nnx.Param)
  nnx.update(
    model, _tree.map_named(lambda name, leaf: _tree.rebox(leaf, jnp.asarray(saved[name])), params)
  )
  # Batch-norm averages: the masked model's outputs depend on them as on the params.
  stats = nnx.state(model, nnx.BatchStat)
  if jax.tree.leaves(stats):
    saved_stats = _by_path(raw.get('rest', {}))
    missing = sorted(name for name, _ in _tree.named_leaves(stats) if name not in saved_stats)
    if missing:
      raise ValueError(f'checkpoint of round {round_index} holds no batch statistics {missing}')
    nnx.update(
      model,
      _tree.map_named(lambda name, leaf: _tree.rebox(leaf, jnp.asarray(saved_stats[name])), stats),
    )
  masked_state = _find_masked_state(raw['opt_state'])
  mask = None
  if masked_state is not None:
    stored = _by_path(masked_state['mask'])
    mask = _tree.map_named(
      lambda name, _: None if stored.get(name) is None else jnp.asarray(stored[name], bool), params
    )
  model.eval()
  return RestoredRun(config, model, mask, int(round_index))


def load_exported(path: str | pathlib.Path) -> tuple[nnx.Module, file_format.SparseCheckpoint]:
  """The dense (smaller) model of an exported file and the file's contents.

  The model comes from the file's metadata: its registry name
  (``models.MODELS``) and the run's config (:func:`build_model`). It is
  returned in evaluation mode.

  Examples:
    ``model, checkpoint = load_exported('model.jpsparse')``, then
    ``pruning.sparsify(model, checkpoint.sparse)`` for sparse FC layers.
  """
  checkpoint = file_format.load_sparse(path)
  name = checkpoint.metadata.get('model')
  _check_exportable(name, f'{path}: metadata model')
  model = build_model({**checkpoint.metadata.get('config', {}), 'model': name})
  model.eval()
  return resize.load_resized(model, checkpoint.params), checkpoint


def median_latency(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
  """Median wall time of ``fn()`` in seconds, each call blocked until its result is ready."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def jitted(
  model: nnx.Module, compiler_options: Mapping[str, Any] | None = None
) -> Callable[[jax.Array], jax.Array]:
  """``model``'s forward pass compiled with ``jax.jit`` (and XLA ``compiler_options``)."""
  graphdef, state = nnx.split(model)
  forward = jax.jit(
    lambda state, x: nnx.merge(graphdef, state)(x),
    compiler_options=dict(compiler_options or {}) or None,
  )
  return lambda x: forward(state, x)


def _weights(layer: nnx.Linear) -> tuple[jax.Array, jax.Array]:
  kernel = jnp.asarray(layer.kernel[...])
  bias = jnp.zeros(kernel.shape[-1]) if layer.bias is None else jnp.asarray(layer.bias[...])
  return kernel, bias


def fc_layer_latency(
  masked: nnx.Module,
  exported: nnx.Module,
  sparse: Mapping[str, Any],
  *,
  repeats: int,
  batches: tuple[int, ...] = LATENCY_BATCHES,
  seed: int = 0,
) -> dict[str, dict[str, Any]]:
  """Latency of each FC layer alone, dense and sparse, with the run's pruned weights.

  The layers are the model's own ``nnx.Linear`` layers that the file stores
  sparse (VGG-16's ``fc6``, ``fc7``, ``fc8``; the LeNets' ``fc1`` ...), each
  timed on standard normal inputs of its width: the masked layer at its
  original size and after neuron removal (``x @ W + b`` under ``jax.jit``),
  and its :class:`~pruning.sparse.inference.SparseLinear` from the stored
  matrix with scipy (eager) and BCSR (jit).

  Returns:
    Layer path -> ``{'shape': [in, out] after removal, 'masked_shape',
    'kept_weights', f'batch {b}': {variant: median ms}}``.
  """
  dense_layer = jax.jit(lambda x, w, b: x @ w + b)
  original = dict(nnx.iter_modules(masked))
  rng = np.random.default_rng(seed)
  results = {}
  for keys, layer in nnx.iter_modules(exported):
    path = path_string(keys)
    if not isinstance(layer, nnx.Linear) or f'{path}/kernel' not in sparse:
      continue
    kernel, bias = _weights(layer)
    masked_kernel, masked_bias = _weights(original[keys])
    matrix = inference.to_scipy(sparse[f'{path}/kernel'])
    scipy_layer = inference.SparseLinear(matrix, np.asarray(bias), backend='scipy')
    bcsr_layer = jitted(inference.SparseLinear(matrix, np.asarray(bias), backend='bcsr'))
    entry: dict[str, Any] = {
      'shape': list(kernel.shape),
      'masked_shape': list(masked_kernel.shape),
      'kept_weights': int(matrix.nnz),
    }
    for batch in batches:
      x = jnp.asarray(rng.standard_normal((batch, kernel.shape[0]), np.float32))
      x_masked = jnp.asarray(rng.standard_normal((batch, masked_kernel.shape[0]), np.float32))
      variants = {
        'masked, dense (jit)': functools.partial(dense_layer, x_masked, masked_kernel, masked_bias),
        'after neuron removal, dense (jit)': functools.partial(dense_layer, x, kernel, bias),
        'sparse, scipy (eager)': functools.partial(scipy_layer, x),
        'sparse, bcsr (jit)': functools.partial(bcsr_layer, x),
      }
      entry[f'batch {batch}'] = {
        name: 1e3 * median_latency(fn, repeats) for name, fn in variants.items()
      }
    results[path] = entry
  return results


def _read_split(dataset, model_name, data_dir, raw_dir, input_shape, subset) -> EvaluationSplit:
  """The evaluation split, or the data layer's error saying which model needs it."""
  try:
    return EVALUATION_DATA[dataset](data_dir, raw_dir, input_shape, subset)
  except DataFilesError as error:
    raise type(error)(
      f'model {model_name!r} is verified on the {dataset} '
      f'{dataset_info(dataset).eval_split} split, which is not available: {error}'
    ) from error


def _rows(x: np.ndarray, count: int) -> np.ndarray:
  """``count`` rows of ``x``, repeated cyclically when it has fewer."""
  return np.resize(x, (count, *x.shape[1:]))


def export_run(
  workdir: str | pathlib.Path,
  out: str | pathlib.Path,
  *,
  round_index: int | None = None,
  fc_index_bits: int | str = 5,
  conv_index_bits: int | str = 8,
  value_dtype: str = 'float32',
  data_dir: str | None = None,
  raw_dir: str | None = None,
  test_subset: int | None = None,
  batch_size: int | None = None,
  max_mismatches: int = 0,
  latency_repeats: int = 100,
  command: str | None = None,
) -> dict[str, Any]:
  """Exports a run's round as a sparse file, verifies it, and writes its report.

  Args:
    workdir: the pipeline run's folder.
    out: path of the sparse file to write.
    round_index: the round to export (default: the last).
    fc_index_bits: relative index width of FC kernels (``'auto'``: per layer).
    conv_index_bits: the same for CONV kernels.
    value_dtype: stored dtype of the kept weights (see
      :data:`~pruning.sparse.file_format.VALUE_DTYPES`).
    data_dir: where the evaluation dataset (:func:`evaluation_dataset`) is
      prepared: MNIST and CIFAR-10 are prepared there on first use, ImageNet
      must have been (:mod:`pruning.data.imagenet`).
    raw_dir: the raw files to prepare from, used only if the dataset is not
      prepared in ``data_dir`` yet: MNIST's folder of IDX files, or a
      CIFAR-10 tarball; ``None`` for ImageNet.
    test_subset: verify on this many test examples only, chosen as a run's
      ``test_subset`` (``None``: the whole split).
    batch_size: evaluation batch (default: the run's ``eval_batch_size``).
    max_mismatches: test images on which the exported model may predict
      another class than the masked model (0 for float32 values; reduced
      precision values may need more).
    latency_repeats: timed calls per latency figure (0: no latency section).
    command: the command line, recorded in the report.

  Returns:
    The report's payload (also written as JSON beside ``out``).

  Raises:
    VerificationError: if the exported model disagrees with the masked model
      on more than ``max_mismatches`` test images; nothing is written then.
    ValueError: the run's model has no evaluation data here (naming the
      model and what is missing), or the test images do not have the shape
      the model takes.
    DataFilesError: the evaluation data is missing (ImageNet not prepared in
      ``data_dir``, no raw MNIST or CIFAR-10 files); the message names the
      model, the split and how to get it.
  """
  out = pathlib.Path(out)
  # The data first: a missing dataset is reported before a large model is restored.
  config = read_config(workdir)
  model_name = config['model']
  input_shape = tuple(MODELS[model_name].image_shape)
  dataset = evaluation_dataset(model_name)
  split = _read_split(dataset, model_name, data_dir, raw_dir, input_shape, test_subset)
  batches = split.batches(batch_size or config.get('eval_batch_size', 1000))
  first = next(batches, None)
  if first is None:
    raise ValueError(f'the {dataset} {split.split} split holds no examples')
  if tuple(first[0].shape[1:]) != input_shape:
    raise ValueError(
      f'model {model_name!r} takes {input_shape} images, but the {dataset} {split.split} images '
      f'are {tuple(first[0].shape[1:])}'
    )
  samples = first[0][first[2]]  # real examples: for the surgery check and latency
  run = restore_run(workdir, round_index)
  result = surgery.remove_dead_neurons(
    run.model, run.mask, input_shape=input_shape, check_inputs=samples[:16]
  )
  state = nnx.state(result.model, nnx.Any(nnx.Param, nnx.BatchStat))
  kernel_masks = dict(_tree.named_leaves(result.mask))
  mask = _tree.map_named(lambda name, _: kernel_masks.get(name), state)
  neurons = {name: {**n._asdict(), 'kept': n.kept} for name, n in result.neurons.items()}
  metadata = {
    'model': model_name,
    'input_shape': list(input_shape),
    'source': {'workdir': str(workdir), 'round': run.round},
    'config': run.config,
    'neurons': neurons,
  }
  encode = functools.partial(
    file_format.encode_sparse,
    state,
    mask,
    fc_index_bits=fc_index_bits,
    conv_index_bits=conv_index_bits,
    metadata=metadata,
  )
  data, accounting = encode(value_dtype=value_dtype)
  decoded = file_format.decode_sparse(data, source=str(out))
  exported = resize.load_resized(build_model(run.config), decoded.params)
  exported.eval()
  # The run's own XLA options (LeNet-5 keeps its convolutions off YNNPACK), for every variant.
  options = run.config.get('compiler_options')
  masked = jitted(run.model, options)

  def sparse(backend: str) -> nnx.Module:
    return inference.sparsify(exported, decoded.sparse, backend=backend)

  variants = {
    'masked model, dense (jit)': masked,
    'after neuron removal, dense (jit)': jitted(exported, options),
    'sparse FC, scipy (eager)': sparse('scipy'),
    'sparse FC, scipy (jit)': jitted(sparse('scipy'), options),
    'sparse FC, bcsr (jit)': jitted(sparse('bcsr'), options),
    'sparse FC, auto (jit)': jitted(sparse('auto'), options),
  }
  verification = _verify(variants, itertools.chain([first], batches), split, out, max_mismatches)
  out.parent.mkdir(parents=True, exist_ok=True)
  _io.write_atomic(out, data)
  latency, fc_latency = {}, {}
  if latency_repeats:
    for batch in LATENCY_BATCHES:
      x = jnp.asarray(_rows(samples, batch))
      latency[f'batch {batch}'] = {
        name: 1e3 * median_latency(functools.partial(fn, x), latency_repeats)
        for name, fn in variants.items()
      }
    fc_latency = fc_layer_latency(run.model, exported, decoded.sparse, repeats=latency_repeats)
  original_bytes = 4 * sum(
    int(np.size(_tree.unbox(leaf)))
    for _, leaf in _tree.named_leaves(nnx.state(run.model, nnx.Param))
  )
  by_value_dtype = {}
  for dtype in dict.fromkeys(('float32', 'float16', value_dtype)):
    total = accounting.total if dtype == value_dtype else encode(value_dtype=dtype)[1].total
    by_value_dtype[dtype] = {'file_bytes': total, 'compression': original_bytes / total}
  payload = {
    'header': {
      'command': command,
      'commit': report.git_commit(),
      'machine': report.machine_description(),
      'workdir': str(workdir),
      'round': run.round,
      'model': model_name,
      'file': str(out),
      'value_dtype': value_dtype,
      'fc_index_bits': fc_index_bits,
      'conv_index_bits': conv_index_bits,
      'evaluation_data': f'{dataset} {split.split}: {split.provenance}',
    },
    'neurons': neurons,
    'storage': {
      'file_bytes': accounting.total,
      'dense_float32_bytes': original_bytes,
      'compression': original_bytes / accounting.total,
      'by_value_dtype': by_value_dtype,
      'after_removal_dense_float32_bytes': accounting.dense_float32,
      'file_header_bytes': accounting.header,
      'metadata_bytes': accounting.metadata,
      'leaves': [
        {**leaf._asdict(), 'total': leaf.total, 'dense_float32': leaf.dense_float32}
        for leaf in accounting.leaves
      ],
    },
    'verification': verification,
    'latency_ms': latency,
    'fc_latency_ms': fc_latency,
  }
  _write_report(out, payload, result, accounting)
  return payload


_VERIFIED = ('after neuron removal, dense (jit)', 'sparse FC, scipy (eager)')


def _verify(variants, batches, split, out, max_mismatches) -> dict[str, Any]:
  """Predictions of the exported variants against the masked model's, over the whole split."""
  count, reference_errors = 0, 0
  tally = {name: {'errors': 0, 'mismatches': 0, 'difference': 0.0} for name in _VERIFIED}
  for x, labels, valid in batches:
    x = jnp.asarray(x)
    reference = np.asarray(variants['masked model, dense (jit)'](x), np.float32)[valid]
    labels = np.asarray(labels)[valid]
    count += len(labels)
    reference_errors += int(np.sum(reference.argmax(-1) != labels))
    for name in _VERIFIED:
      logits = np.asarray(variants[name](x), np.float32)[valid]
      t = tally[name]
      t['errors'] += int(np.sum(logits.argmax(-1) != labels))
      t['mismatches'] += int(np.sum(logits.argmax(-1) != reference.argmax(-1)))
      if logits.size:
        t['difference'] = max(t['difference'], float(np.max(np.abs(logits - reference))))
  verification: dict[str, Any] = {
    'dataset': split.dataset,
    'split': split.split,
    'test_examples': count,
  }
  for name, t in tally.items():
    verification[name] = {
      'test_error_pct': 100.0 * t['errors'] / count,
      'prediction_mismatches': t['mismatches'],
      'max_abs_logit_difference': t['difference'],
    }
  for name, t in tally.items():
    if t['mismatches'] > max_mismatches:
      raise VerificationError(
        f'{name}: the exported model predicts another class than the masked model on '
        f'{t["mismatches"]} of {count} test images (allowed: {max_mismatches}); '
        f'{out} was not written'
      )
  verification['masked model test_error_pct'] = 100.0 * reference_errors / count
  return verification


def _write_report(out, payload, result, accounting) -> None:
  storage, header = payload['storage'], payload['header']
  verification = payload['verification']
  md = [f'# Sparse export of `{header["workdir"]}` (round {header["round"]})', '']
  md += [f'- {key}: `{value}`' for key, value in header.items()]
  md += ['', '## Dead neurons removed (§3.5)', '', result.to_markdown(), '']
  md += ['## Storage', '', accounting.to_markdown(), '']
  md += [
    f'File: {storage["file_bytes"]:,} bytes; the original dense float32 params: '
    f'{storage["dense_float32_bytes"]:,} bytes, **{storage["compression"]:.1f}x** larger. '
    'Values, fillers, indices, row pointers and headers are exact byte counts that sum to the '
    'file size; "indices" include the fillers\' codes.',
    '',
    '| kept values stored as | file bytes | dense float32 / file |',
    '|---|---:|---:|',
  ]
  for dtype, size in storage['by_value_dtype'].items():
    written = ' (this file)' if dtype == header['value_dtype'] else ''
    md.append(f'| {dtype}{written} | {size["file_bytes"]:,} | {size["compression"]:.1f}x |')
  md += [
    '',
    f'## Verification on the {verification["dataset"]} {verification["split"]} split '
    f'({verification["test_examples"]:,} images)',
    '',
    '| model | test error % | predictions differing from the masked model | max abs logit difference |',
    '|---|---:|---:|---:|',
  ]
  md.append(f'| masked model | {verification["masked model test_error_pct"]:.2f} | | |')
  for name, v in verification.items():
    if isinstance(v, dict):
      md.append(
        f'| {name} | {v["test_error_pct"]:.2f} | {v["prediction_mismatches"]} '
        f'| {v["max_abs_logit_difference"]:.2g} |'
      )
  if payload['latency_ms']:
    batches = list(payload['latency_ms'])
    md += ['', '## Latency (median ms per call)', '']
    md += ['| variant | ' + ' | '.join(batches) + ' |', '|---|' + '---:|' * len(batches)]
    for name in payload['latency_ms'][batches[0]]:
      md.append(
        f'| {name} | ' + ' | '.join(f'{payload["latency_ms"][b][name]:.3f}' for b in batches) + ' |'
      )
  if payload['fc_latency_ms']:
    md += ['', '## FC layers alone, with the pruned weights (median ms per call)', '']
    md += [
      '| layer | variant | ' + ' | '.join(batches) + ' |',
      '|---|---|' + '---:|' * len(batches),
    ]
    for layer, entry in payload['fc_latency_ms'].items():
      for name in entry[batches[0]]:
        shape = entry['masked_shape'] if name.startswith('masked') else entry['shape']
        md.append(
          f'| {layer} {shape[0]}x{shape[1]} | {name} | '
          + ' | '.join(f'{entry[b][name]:.3f}' for b in batches)
          + ' |'
        )
  stem = out.name.removesuffix(out.suffix)
  _io.write_atomic(out.parent / f'{stem}.report.md', '\n'.join(md) + '\n')
  _io.write_atomic(out.parent / f'{stem}.report.json', json.dumps(payload, indent=2) + '\n')
