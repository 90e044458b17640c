"""Export a pruning run as a compact sparse model, verified and measured.

:func:`export_run` takes the workdir of a :mod:`pruning.experiment.pipeline` run,
rebuilds its model from ``config.json`` (``models.MODELS``), restores a
round's checkpoint with its mask, removes dead neurons
(:func:`~pruning.remove_dead_neurons`), encodes the smaller model in the
sparse format (:mod:`pruning.sparse.file_format`), decodes those bytes again and
checks on a test set that the decoded model, dense and with sparse FC
layers, predicts exactly what the masked model predicts. Only then is the
file written (atomically), with a size and latency report beside it:
``<name>.report.md`` and ``<name>.report.json``.

The input shape comes from the model's registry entry
(``models.MODELS[name].image_shape``), the test set from
:data:`EVALUATION_DATA`: the test split of a dataset the model takes. Only
MNIST's is read so far, so only the MNIST models (the LeNets) export.
"""

from __future__ import annotations

import functools
import json
import pathlib
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from models import MODELS, create_model
from pruning import _io, _tree, optimizer
from pruning.data import mnist
from pruning.experiment import checkpoints, report
from pruning.experiment.run_dir import RunDir
from pruning.sparse import file_format, inference, resize, surgery

PyTree = Any


def _mnist_test(data_dir: str | None, raw_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  return mnist.load_mnist('test', data_dir=data_dir, raw_dir=raw_dir)


EVALUATION_DATA: dict[str, Callable[[str | None, str | None], tuple[np.ndarray, np.ndarray]]] = {
  'mnist': _mnist_test,
}
"""Dataset -> ``(data_dir, raw_dir) -> (images uint8 (N, H, W, C), labels (N,))``, its test
split: what an export is verified on."""

LATENCY_BATCHES = (1, 64)


class RestoredRun(NamedTuple):
  """A pipeline run's model at one round.

  Attributes:
    config: the run's ``config.json``.
    model: the model with the checkpoint's params (pruned weights exactly 0).
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
    >>> evaluation_dataset('lenet5')
    'mnist'
    >>> evaluation_dataset('vgg16_cifar')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model 'vgg16_cifar' cannot be exported yet: it takes (32, 32, 3) images of cifar10, ...
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


def restore_run(workdir: str | pathlib.Path, round_index: int | None = None) -> RestoredRun:
  """Rebuilds a pipeline run's model and mask at ``round_index`` (default: the last).

  The checkpoint is restored without a target, so this does not depend on
  how the run's optimizer was built; the mask is read from the
  ``masked_optimizer`` state inside it.

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint in ``workdir``.
    ValueError: the round does not exist, or the checkpoint does not fit the
      model named in the config (naming the leaves).
  """
  files = RunDir(workdir)
  if not files.config.exists():
    raise FileNotFoundError(f'{files.path} holds no {files.config.name}: not a pruning run workdir')
  config = json.loads(files.config.read_text())
  _check_exportable(config.get('model'), f'{files.config}: config model')
  with ocp.CheckpointManager(files.checkpoints.absolute()) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f'{files.checkpoints} holds no checkpoint')
    round_index = max(steps) if round_index is None else round_index
    if round_index not in steps:
      raise ValueError(f'round {round_index} has no checkpoint; rounds saved: {sorted(steps)}')
  # As numpy arrays: a run trained on several processes restores here too.
  raw = checkpoints.restore_to_host(files.round_checkpoint(round_index))
  model = create_model(config['model'], nnx.Rngs(config.get('seed', 0)))
  params = nnx.state(model, nnx.Param)
  saved = _by_path(raw['params'])
  names = [name for name, _ in _tree.named_leaves(params)]
  if sorted(saved) != sorted(names):
    raise ValueError(
      f'checkpoint params {sorted(saved)} do not fit model {config["model"]!r} ({sorted(names)})'
    )
  nnx.update(
    model, _tree.map_named(lambda name, leaf: _tree.rebox(leaf, jnp.asarray(saved[name])), params)
  )
  masked_state = _find_masked_state(raw['opt_state'])
  mask = None
  if masked_state is not None:
    stored = _by_path(masked_state['mask'])
    mask = _tree.map_named(
      lambda name, _: None if stored.get(name) is None else jnp.asarray(stored[name], bool), params
    )
  return RestoredRun(config, model, mask, int(round_index))


def load_exported(path: str | pathlib.Path) -> tuple[nnx.Module, file_format.SparseCheckpoint]:
  """The dense (smaller) model of an exported file and the file's contents.

  The model class comes from the file's metadata (``models.MODELS``).

  Examples:
    ``model, checkpoint = load_exported('model.jpsparse')``, then
    ``pruning.sparsify(model, checkpoint.sparse)`` for sparse FC layers.
  """
  checkpoint = file_format.load_sparse(path)
  name = checkpoint.metadata.get('model')
  _check_exportable(name, f'{path}: metadata model')
  model = create_model(name, nnx.Rngs(0))
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


def _logits(fn: Callable[[jax.Array], jax.Array], images: np.ndarray, batch: int = 1000):
  return np.concatenate(
    [
      np.asarray(fn(jnp.asarray(images[i : i + batch], jnp.float32) / 255.0))
      for i in range(0, len(images), batch)
    ]
  )


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
    data_dir: where the evaluation dataset (:func:`evaluation_dataset`;
      MNIST for the LeNets) is prepared (see :mod:`pruning.data.mnist`).
    raw_dir: its raw files: the folder of the MNIST IDX files, used only if
      the dataset is not prepared in ``data_dir`` yet.
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
  """
  out = pathlib.Path(out)
  run = restore_run(workdir, round_index)
  model_name = run.config['model']
  input_shape = tuple(MODELS[model_name].image_shape)
  dataset = evaluation_dataset(model_name)
  images, labels = EVALUATION_DATA[dataset](data_dir, raw_dir)
  if tuple(images.shape[1:]) != input_shape:
    raise ValueError(
      f'model {model_name!r} takes {input_shape} images, but the {dataset} test images are '
      f'{tuple(images.shape[1:])}'
    )
  result = surgery.remove_dead_neurons(
    run.model, run.mask, input_shape=input_shape, check_inputs=images[:64].astype(np.float32) / 255
  )
  state = nnx.state(result.model, nnx.Any(nnx.Param, nnx.BatchStat))
  kernel_masks = dict(_tree.named_leaves(result.mask))
  mask = _tree.map_named(lambda name, _: kernel_masks.get(name), state)
  neurons = {name: {**n._asdict(), 'kept': n.kept} for name, n in result.neurons.items()}
  metadata = {
    'model': run.config['model'],
    'input_shape': list(input_shape),
    'source': {'workdir': str(workdir), 'round': run.round},
    'config': run.config,
    'neurons': neurons,
  }
  data, accounting = file_format.encode_sparse(
    state,
    mask,
    fc_index_bits=fc_index_bits,
    conv_index_bits=conv_index_bits,
    value_dtype=value_dtype,
    metadata=metadata,
  )
  decoded = file_format.decode_sparse(data, source=str(out))
  exported = resize.load_resized(create_model(run.config['model'], nnx.Rngs(0)), decoded.params)
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
  reference = _logits(masked, images)
  verification: dict[str, Any] = {'test_examples': len(images)}
  for name in ('after neuron removal, dense (jit)', 'sparse FC, scipy (eager)'):
    logits = _logits(variants[name], images)
    mismatches = int(np.sum(logits.argmax(-1) != reference.argmax(-1)))
    verification[name] = {
      'test_error_pct': 100.0 * float(np.mean(logits.argmax(-1) != labels)),
      'prediction_mismatches': mismatches,
      'max_abs_logit_difference': float(np.max(np.abs(logits - reference))),
    }
    if mismatches > max_mismatches:
      raise VerificationError(
        f'{name}: the exported model predicts another class than the masked model on '
        f'{mismatches} of {len(images)} test images (allowed: {max_mismatches}); '
        f'{out} was not written'
      )
  verification['masked model test_error_pct'] = 100.0 * float(
    np.mean(reference.argmax(-1) != labels)
  )
  out.parent.mkdir(parents=True, exist_ok=True)
  _io.write_atomic(out, data)
  latency = {}
  if latency_repeats:
    for batch in LATENCY_BATCHES:
      x = jnp.asarray(images[:batch], jnp.float32) / 255.0
      latency[f'batch {batch}'] = {
        name: 1e3 * median_latency(functools.partial(fn, x), latency_repeats)
        for name, fn in variants.items()
      }
  original_bytes = 4 * sum(
    int(np.size(_tree.unbox(leaf)))
    for _, leaf in _tree.named_leaves(nnx.state(run.model, nnx.Param))
  )
  payload = {
    'header': {
      'command': command,
      'commit': report.git_commit(),
      'machine': report.machine_description(),
      'workdir': str(workdir),
      'round': run.round,
      'model': run.config['model'],
      'file': str(out),
      'value_dtype': value_dtype,
      'fc_index_bits': fc_index_bits,
      'conv_index_bits': conv_index_bits,
    },
    'neurons': neurons,
    'storage': {
      'file_bytes': accounting.total,
      'dense_float32_bytes': original_bytes,
      'compression': original_bytes / accounting.total,
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
  }
  _write_report(out, payload, result, accounting)
  return payload


def _write_report(out, payload, result, accounting) -> None:
  storage, header = payload['storage'], payload['header']
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
    '## Verification on the MNIST test set',
    '',
    '| model | test error % | predictions differing from the masked model | max abs logit difference |',
    '|---|---:|---:|---:|',
  ]
  verification = payload['verification']
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
  stem = out.name.removesuffix(out.suffix)
  _io.write_atomic(out.parent / f'{stem}.report.md', '\n'.join(md) + '\n')
  _io.write_atomic(out.parent / f'{stem}.report.json', json.dumps(payload, indent=2) + '\n')
