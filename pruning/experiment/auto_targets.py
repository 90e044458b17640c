"""The per-layer targets of an automatic-sensitivity run (``PruneConfig.auto_sensitivity``).

After dense training, each layer's sensitivity curve is measured on the
validation split (:mod:`pruning.analysis.sensitivity`, one layer pruned at a
time, no retraining) and each layer's final density, or quality, is the
largest point of its curve within the budget (:mod:`pruning.analysis.thresholds`).
The curves and the choice are written into the run directory once, so a
resumed run reads the same targets back instead of measuring a pruned network.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax

from pruning import _io
from pruning.analysis import sensitivity, thresholds
from pruning.experiment.config import PruneConfig
from pruning.experiment.run_dir import RunDir


def choose_targets(
  config: PruneConfig,
  files: RunDir,
  params: Any,
  validation_error: Callable[[Any], float],
  progress: bool,
) -> tuple[PruneConfig, dict[str, Any]]:
  """The config with the rounds' final targets read off validation sensitivity curves.

  Runs once, on the dense network, and writes ``sensitivity.json`` (curves
  and the choice), ``sensitivity.csv`` and ``sensitivity.png`` into the run
  directory; a resumed run reads the choice back from ``sensitivity.json``.
  """
  path = files.sensitivity_json
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
      result.to_csv(files.sensitivity_csv)
      result.plot(files.sensitivity_png, title=f'{config.model}: sensitivity on validation')
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
