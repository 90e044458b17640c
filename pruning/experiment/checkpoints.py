"""What a pipeline run keeps on disk: its configuration, metrics log and checkpoints.

A run's ``workdir`` (its files are named by :class:`~pruning.experiment.run_dir.RunDir`)
holds the configuration (checked when resuming), the metrics log (one JSON
record per line) and one orbax checkpoint per completed round: the run's
:class:`~pruning.experiment.run_state.RunState` (params, the model's other
state, the optimizer state with the mask, the round and the step). Orbax
writes each checkpoint to a temporary directory and renames it when complete,
so a killed run never leaves a half-written one; :class:`RoundCheckpoints`
restores the last complete round, :class:`EpochCheckpoint` the last complete
epoch of a round in progress. :func:`load_dense` takes the trained
weights of another run's round 0 (or any orbax checkpoint with ``params``)
to skip dense training; :func:`start_from_dense` seeds a new run with a
finished run's whole dense phase (checkpoint and metrics), so several runs
prune one dense network.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from pruning import _io, _tree
from pruning.experiment.config import AFTER_DENSE_FIELDS, field_defaults
from pruning.experiment.run_dir import RunDir
from pruning.experiment.run_state import RunState

PyTree = Any


def check_config(
  run: RunDir, config: Mapping[str, Any], defaults: Mapping[str, Any], resume: bool
) -> None:
  """Refuses to mix two runs in one directory, or to resume what is not there; writes nothing.

  A field missing from a saved configuration (written before the field
  existed) counts as its default, so such a run still resumes. The pipeline
  calls this before it opens the data and :func:`write_config` after, so a
  start that fails leaves the directory as it was.

  Raises:
    FileExistsError: ``run`` holds a run and ``resume`` is false.
    FileNotFoundError: ``resume`` is true and ``run`` holds no run (a missing
      or misspelt directory would otherwise start training from scratch).
    ValueError: resuming a run whose configuration differs, naming the fields.
  """
  workdir, saved = run.path, run.config
  if not resume:
    if run.holds_run():
      raise FileExistsError(
        f'{workdir} already holds a run; pass resume=True (--resume) to continue it, '
        'or choose another workdir'
      )
    return
  if not run.holds_run():
    what = 'does not exist' if not workdir.exists() else 'holds no run'
    raise FileNotFoundError(
      f'{workdir} {what}: nothing to resume (no {saved.name}, no {run.checkpoints.name}/); '
      'start the run without resume (--resume)'
    )
  if saved.exists():
    current = json.loads(json.dumps(dict(config)))
    previous = json.loads(saved.read_text())
    fallback = json.loads(json.dumps(dict(defaults)))
    differing = sorted(k for k in current if previous.get(k, fallback.get(k)) != current[k])
    if differing:
      raise ValueError(
        f'{workdir} holds a run with a different configuration; differing fields: {differing}'
      )


def write_config(run: RunDir, config: Mapping[str, Any]) -> None:
  """Writes the run's ``config.json`` (atomically), creating its directory if needed."""
  run.path.mkdir(parents=True, exist_ok=True)
  _io.write_atomic(run.config, json.dumps(json.loads(json.dumps(dict(config))), indent=2) + '\n')


def append_record(path: pathlib.Path, record: Mapping[str, Any]) -> None:
  """Appends one JSON line to the metrics log."""
  with path.open('a') as f:
    f.write(json.dumps(record) + '\n')


def read_records(path: pathlib.Path) -> list[dict[str, Any]]:
  """Every record of the metrics log, in order."""
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def truncate_metrics(path: pathlib.Path, last_round: int) -> None:
  """Drops records of rounds after ``last_round`` (a killed run's partial round)."""
  if not path.exists():
    return
  kept = [line for line in path.read_text().splitlines() if json.loads(line)['round'] <= last_round]
  _io.write_atomic(path, ''.join(line + '\n' for line in kept))


def _restore(manager: ocp.CheckpointManager, step: int, like: RunState, mid_round: bool) -> Any:
  """The tree saved at orbax ``step``, with the structure, dtypes and shardings of ``like``."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like.checkpoint(mid_round=mid_round))
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _save(manager: ocp.CheckpointManager, state: RunState, mid_round: bool) -> None:
  """Writes ``state`` and waits until it is complete on disk.

  Its orbax step number is the round of a round checkpoint, the epoch of an
  epoch checkpoint.
  """
  tree = state.checkpoint(mid_round=mid_round)
  step = tree['epoch'] if mid_round else tree['round']
  manager.save(step, args=ocp.args.StandardSave(tree))
  manager.wait_until_finished()


class RoundCheckpoints:
  """One orbax checkpoint per completed round under ``directory`` (a run's ``checkpoints/``).

  A saved state is :meth:`RunState.checkpoint`'s tree, without the epoch.
  """

  def __init__(self, directory: pathlib.Path):
    self._manager = ocp.CheckpointManager(
      pathlib.Path(directory).absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True),
    )

  def latest_round(self) -> int | None:
    """The last complete round, or ``None`` before any."""
    return self._manager.latest_step()

  def restore(self, round_index: int, like: RunState, *, epoch: int) -> RunState:
    """Round ``round_index``'s state, with the structure, dtypes and shardings of ``like``.

    ``epoch``: the epochs trained by the end of that round (the schedule's).
    """
    tree = _restore(self._manager, round_index, like, mid_round=False)
    return RunState.from_checkpoint(tree, epoch=epoch)

  def save(self, state: RunState) -> None:
    """Writes the state at the end of its round and waits until it is complete on disk."""
    _save(self._manager, state, mid_round=False)

  def close(self) -> None:
    self._manager.close()


class _LatestCheckpoint:
  """One orbax checkpoint (only the latest kept) under ``directory``, opened on first use."""

  def __init__(self, directory: pathlib.Path):
    self._directory = pathlib.Path(directory).absolute()
    self._manager: ocp.CheckpointManager | None = None

  def _open(self) -> ocp.CheckpointManager:
    if self._manager is None:
      self._manager = ocp.CheckpointManager(
        self._directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
      )
    return self._manager

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()


class EpochCheckpoint(_LatestCheckpoint):
  """The state after the last completed epoch of the round in progress, under ``directory``.

  Long rounds (a dense phase of many epochs) resume mid-round from it. Only
  the latest is kept, and :meth:`clear` removes it once the round's own
  checkpoint is written. A saved state is :meth:`RunState.checkpoint`'s tree
  with the epoch: the global index of the last epoch trained, also the orbax
  step number.
  """

  def latest_epoch(self) -> int | None:
    """The global epoch of the saved state, or ``None``."""
    return self._open().latest_step() if self._directory.exists() else None

  def restore(self, epoch: int, like: RunState) -> RunState:
    """The state saved after global epoch ``epoch``, shaped like ``like``."""
    return RunState.from_checkpoint(_restore(self._open(), epoch, like, mid_round=True))

  def save(self, state: RunState) -> None:
    """Writes the state after its last epoch trained (replacing the previous one)."""
    _save(self._open(), state, mid_round=True)

  def clear(self) -> None:
    """Removes the saved state (its round is complete)."""
    if self._manager is not None:
      self._manager.close()
      self._manager = None
    if jax.process_index() == 0:
      shutil.rmtree(self._directory, ignore_errors=True)


class RewindPoint(_LatestCheckpoint):
  """The state after a given step of dense training, under ``directory`` (a run's ``rewind_point/``).

  Weight rewinding (``retrain_schedule='weight-rewind'``) sets the surviving
  weights, the optimizer state and the model's other state back to it after
  every prune. Its orbax step number is the train step it was taken after.
  """

  def step(self) -> int | None:
    """The train step of the saved state, or ``None`` if there is none."""
    return self._open().latest_step() if self._directory.exists() else None

  def save(self, state: RunState) -> None:
    """Writes ``state`` (taken after ``state.step`` steps) and waits until it is on disk."""
    manager = self._open()
    manager.save(state.step, args=ocp.args.StandardSave(state.checkpoint()))
    manager.wait_until_finished()

  def restore(self, like: RunState) -> RunState:
    """The saved params, other state and optimizer state, shaped like ``like`` (its round,
    epoch and step are kept: the run goes on from where it is)."""
    step = self.step()
    if step is None:
      raise FileNotFoundError(f'{self._directory} holds no rewind point')
    tree = _restore(self._open(), step, like, mid_round=False)
    return like._replace(params=tree['params'], rest=tree['rest'], opt_state=tree['opt_state'])


def truncate_metrics_after_epoch(path: pathlib.Path, round_index: int, epoch: int) -> None:
  """Drops the records after epoch ``epoch`` of round ``round_index``."""
  lines = path.read_text().splitlines() if path.exists() else []
  for index, line in enumerate(lines):
    record = json.loads(line)
    if (record['round'], record['event'], record.get('epoch')) == (round_index, 'epoch', epoch):
      _io.write_atomic(path, ''.join(entry + '\n' for entry in lines[: index + 1]))
      return
  raise ValueError(f'{path} holds no record of epoch {epoch} of round {round_index}')


def _checkpoint_item(path: pathlib.Path) -> pathlib.Path:
  """The orbax item directory for a run's workdir, its checkpoints, a step, or the item."""
  for candidate in (
    RunDir(path).round_checkpoint(0) / 'default',
    path / '0' / 'default',
    path / 'default',
    path,
  ):
    if (candidate / '_METADATA').exists() or (candidate / '_sharding').exists():
      return candidate
  raise FileNotFoundError(
    f'no orbax checkpoint at {path}: expected a run directory (with checkpoints/0), '
    'a checkpoints directory, or one checkpoint step directory'
  )


def restore_to_host(path: str | pathlib.Path) -> dict[str, Any]:
  """A checkpoint's tree with every array as a numpy array, whatever devices and processes saved it.

  Restored without a target, orbax would place each array as it was saved,
  on the saving job's devices: a checkpoint written by two processes then
  does not restore in one (a "topology mismatch"), and in a job of several
  processes it gives arrays that no host holds whole. Read as numpy arrays,
  every process gets the whole checkpoint, on any topology.

  Args:
    path: a pipeline run's ``workdir`` (its round-0 checkpoint), its
      ``checkpoints`` folder (round 0), a step folder
      (:meth:`RunDir.round_checkpoint`), or an orbax checkpoint item.

  Raises:
    FileNotFoundError: no orbax checkpoint at ``path``.
  """
  item = _checkpoint_item(pathlib.Path(path)).absolute()
  with ocp.PyTreeCheckpointer() as checkpointer:
    saved = checkpointer.metadata(item).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), saved)
    return checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def _strip_value(name: str) -> str:
  # A restored nnx Variable is a dict with its array under 'value'.
  return name.removesuffix('/value')


def load_dense(path: str | pathlib.Path, params: PyTree, rest: PyTree) -> tuple[PyTree, PyTree]:
  """``params`` and ``rest`` with their values taken from a dense checkpoint.

  Args:
    path: a pipeline run's ``workdir`` (its round-0 checkpoint: the dense
      network), its ``checkpoints`` folder, a step folder, or an orbax
      checkpoint holding ``params`` (and optionally ``rest``).
    params: the current model's params: the structure, shapes and dtypes the
      checkpoint must match.
    rest: the current model's other state. Batch-norm statistics are taken
      from the checkpoint when it has them; RNG state stays the current run's.

  Returns:
    ``(params, rest)`` holding the checkpoint's values.

  Raises:
    FileNotFoundError: no checkpoint at ``path``.
    ValueError: the checkpoint's params differ from the model's, naming the
      missing, unexpected or mis-shaped leaves.
  """
  item = _checkpoint_item(pathlib.Path(path))
  restored = restore_to_host(item)
  if 'params' not in restored:
    raise ValueError(f'checkpoint {item} holds no params (keys: {sorted(restored)})')
  found = {_strip_value(name): leaf for name, leaf in _tree.named_leaves(restored['params'])}
  expected = _tree.named_leaves(params)
  missing = [name for name, _ in expected if _strip_value(name) not in found]
  unexpected = sorted(set(found) - {_strip_value(name) for name, _ in expected})
  if missing or unexpected:
    raise ValueError(
      f'checkpoint {item} does not fit the model: params missing there {missing}, '
      f'params the model lacks {unexpected}'
    )

  def take(name: str, leaf: Any) -> Any:
    value = found[_strip_value(name)]
    if np.shape(value) != np.shape(leaf):
      raise ValueError(
        f'checkpoint {item}: param {_strip_value(name)!r} has shape {np.shape(value)}; '
        f'the model has {np.shape(leaf)}'
      )
    return np.asarray(value).astype(leaf.dtype)

  saved_rest = {
    _strip_value(name): leaf for name, leaf in _tree.named_leaves(restored.get('rest', {}))
  }

  def take_rest(name: str, leaf: Any) -> Any:
    value = saved_rest.get(_strip_value(name))
    keep_own = (
      value is None
      or jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
      or np.shape(value) != np.shape(leaf)
      or np.asarray(value).dtype != leaf.dtype
    )
    return leaf if keep_own else np.asarray(value)

  return jax.tree.map_with_path(
    lambda p, x: take(_tree.path_str(p), x), params
  ), jax.tree.map_with_path(lambda p, x: take_rest(_tree.path_str(p), x), rest)


def check_dense_source(
  source: str | pathlib.Path, workdir: str | pathlib.Path, config: Any
) -> None:
  """Checks that :func:`start_from_dense` can seed ``workdir`` from ``source``; writes nothing.

  A field missing from the source's saved configuration (written before the
  field existed) counts as its default, as when a run resumes.

  Raises:
    FileNotFoundError: ``source`` has no config or no round-0 checkpoint.
    FileExistsError: ``workdir`` already holds a run.
    ValueError: the configs differ in a field that shapes dense training
      (naming the fields).
  """
  source, target = RunDir(source), RunDir(workdir)
  if not source.config.exists() or not source.round_checkpoint(0).is_dir():
    raise FileNotFoundError(f'{source.path} holds no completed dense phase (round-0 checkpoint)')
  if target.holds_run():
    raise FileExistsError(f'{target.path} already holds a run; choose a new workdir')
  previous = json.loads(source.config.read_text())
  current = json.loads(json.dumps(dataclasses.asdict(config)))
  fallback = json.loads(json.dumps(field_defaults()))
  differing = sorted(
    key
    for key in current.keys() | previous.keys()
    if key not in AFTER_DENSE_FIELDS and previous.get(key, fallback.get(key)) != current.get(key)
  )
  if differing:
    raise ValueError(
      f'{source.path} trained its dense network with a different configuration; '
      f'differing fields: {differing}'
    )


def start_from_dense(source: str | pathlib.Path, workdir: str | pathlib.Path, config: Any) -> None:
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

    pruned = pipeline.from_recipe('scripts/configs/lenet300.py', criterion='random')
    dense = dataclasses.replace(pruned, rounds=0)
    pipeline.train_and_evaluate(dense, 'runs/dense')
    start_from_dense('runs/dense', 'runs/random', pruned)
    pipeline.train_and_evaluate(pruned, 'runs/random', resume=True)

  (``train_and_evaluate(pruned, 'runs/random', dense_from='runs/dense')``
  does both, and checks the data before it writes anything.)
  """
  source, target = RunDir(source), RunDir(workdir)
  check_dense_source(source.path, target.path, config)
  target.path.mkdir(parents=True, exist_ok=True)
  checkpoint = source.round_checkpoint(0)
  records = source.metrics.read_text().splitlines()
  dense_records = [line for line in records if json.loads(line)['round'] == 0]
  # Copy aside, then rename: the checkpoint appears whole or not at all.
  staging = target.path / '.dense-checkpoint.tmp'
  shutil.rmtree(staging, ignore_errors=True)
  shutil.copytree(checkpoint, staging / checkpoint.name)
  if source.rewind_point.is_dir():  # weight rewinding's state early in dense training
    shutil.copytree(source.rewind_point, staging / 'rewind_point')
  _io.write_atomic(target.metrics, ''.join(line + '\n' for line in dense_records))
  if (staging / 'rewind_point').is_dir():
    (staging / 'rewind_point').rename(target.rewind_point)
  staging.rename(target.checkpoints)
