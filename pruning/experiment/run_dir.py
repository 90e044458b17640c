"""The layout of a run directory: the one place that names the files a pipeline run keeps.

A run's ``workdir`` holds its configuration (``config.json``), its metrics log
(``metrics.jsonl``), one orbax checkpoint per completed round
(``checkpoints/<round>``), the latest epoch of the round in progress
(``epoch_checkpoint/``), the state early in dense training that weight
rewinding goes back to (``rewind_point/``), what an automatic-sensitivity run measured
(``sensitivity.json``, ``.csv``, ``.png``), a structured run's smaller dense
model and its plan (``pruned/``), the reports a script writes at the
end (``report.md``, ``report.json``, ``error_vs_kept.png``), the benchmarks'
``provenance.json`` and the default place of a sparse export
(``model.jpsparse``). Every module that reads or writes a run directory asks
:class:`RunDir` for the path instead of spelling the name.
"""

from __future__ import annotations

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class RunDir:
  """The files and folders of one run directory.

  Examples:
    >>> run = RunDir('runs/lenet300')
    >>> run.metrics.as_posix(), run.round_checkpoint(2).as_posix()
    ('runs/lenet300/metrics.jsonl', 'runs/lenet300/checkpoints/2')
  """

  path: pathlib.Path  # the run's workdir (a str or any path-like is converted)

  def __post_init__(self):
    object.__setattr__(self, 'path', pathlib.Path(self.path))

  @property
  def config(self) -> pathlib.Path:
    """``config.json``: the run's configuration, checked when it resumes."""
    return self.path / 'config.json'

  @property
  def metrics(self) -> pathlib.Path:
    """``metrics.jsonl``: one JSON record per epoch, prune and round end."""
    return self.path / 'metrics.jsonl'

  @property
  def checkpoints(self) -> pathlib.Path:
    """``checkpoints/``: one orbax checkpoint per completed round."""
    return self.path / 'checkpoints'

  def round_checkpoint(self, round_index: int) -> pathlib.Path:
    """``checkpoints/<round>``: the orbax step folder of one completed round."""
    return self.checkpoints / str(round_index)

  @property
  def epoch_checkpoint(self) -> pathlib.Path:
    """``epoch_checkpoint/``: the state after the last epoch of the round in progress."""
    return self.path / 'epoch_checkpoint'

  @property
  def rewind_point(self) -> pathlib.Path:
    """``rewind_point/``: the state after ``rewind_step`` steps of dense training."""
    return self.path / 'rewind_point'

  @property
  def sensitivity_json(self) -> pathlib.Path:
    """``sensitivity.json``: the curves and the targets chosen from them (§5)."""
    return self.path / 'sensitivity.json'

  @property
  def sensitivity_csv(self) -> pathlib.Path:
    """``sensitivity.csv``: the sensitivity curves as a table."""
    return self.path / 'sensitivity.csv'

  @property
  def sensitivity_png(self) -> pathlib.Path:
    """``sensitivity.png``: the sensitivity curves as a plot."""
    return self.path / 'sensitivity.png'

  @property
  def report_md(self) -> pathlib.Path:
    """``report.md``: the per-layer and per-round tables of the paper."""
    return self.path / 'report.md'

  @property
  def report_json(self) -> pathlib.Path:
    """``report.json``: the same report, as data."""
    return self.path / 'report.json'

  @property
  def error_vs_kept(self) -> pathlib.Path:
    """``error_vs_kept.png``: test error against weights kept, a point per round."""
    return self.path / 'error_vs_kept.png'

  @property
  def provenance(self) -> pathlib.Path:
    """``provenance.json``: the invocations (command, commit, machine) that ran it."""
    return self.path / 'provenance.json'

  @property
  def pruned_model(self) -> pathlib.Path:
    """``pruned/``: a structured run's smaller dense model, ``plan.json`` and ``params.npz``
    (:func:`pruning.structured.save_pruned`)."""
    return self.path / 'pruned'

  @property
  def sparse_model(self) -> pathlib.Path:
    """``model.jpsparse``: where a sparse export goes by default."""
    return self.path / 'model.jpsparse'

  def holds_run(self) -> bool:
    """Whether a run has started here (a configuration or a checkpoint exists)."""
    return self.config.exists() or self.checkpoints.exists()
