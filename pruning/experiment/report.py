"""Reports of a pruning run in the paper's format (Han et al. 2015, Tables 2-5).

Per layer: weights, FLOP, weights % kept and FLOP % kept, then totals and the
compression rate. FLOP here are ``2 x`` multiply-accumulates of a dense input
(the paper's FLOP column is the same count); "FLOP % kept" counts only pruned
*weights*: a multiply by a pruned weight is saved, a multiply by a zero
activation is not. The paper's FLOP column also credits zero activations, so
its percentages are lower.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pruning.analysis import thresholds
from pruning.experiment.run_dir import RunDir
from pruning.masks import MaskStats


class LayerRow(NamedTuple):
  """One row of the per-layer table."""

  layer: str
  weights: int
  kept: int
  flops: int
  flops_kept: int

  @property
  def weights_kept_pct(self) -> float:
    return 100.0 * self.kept / self.weights if self.weights else 100.0

  @property
  def flops_kept_pct(self) -> float:
    return 100.0 * self.flops_kept / self.flops if self.flops else 100.0


def layer_rows(stats: MaskStats, costs: Mapping[str, Any]) -> list[LayerRow]:
  """Rows for every layer in ``costs`` (name -> object with ``weights``, ``flops``).

  A layer's kept FLOP are its FLOP scaled by its kept fraction of weights.
  Layers without a mask keep everything.

  Raises:
    ValueError: if a layer's weight count differs between the mask and the
      cost table (the two describe different models).
  """
  rows = []
  for name, cost in costs.items():
    layer = stats.layers.get(f'{name}/kernel')
    kept = cost.weights if layer is None else layer.kept
    if layer is not None and layer.total != cost.weights:
      raise ValueError(
        f'layer {name!r} has {layer.total} masked weights but {cost.weights} in the cost table'
      )
    flops_kept = round(cost.flops * kept / cost.weights) if cost.weights else cost.flops
    rows.append(LayerRow(name, cost.weights, kept, cost.flops, flops_kept))
  return rows


def totals(rows: Sequence[LayerRow]) -> LayerRow:
  """The total row: sums of every column."""
  return LayerRow(
    'total',
    sum(r.weights for r in rows),
    sum(r.kept for r in rows),
    sum(r.flops for r in rows),
    sum(r.flops_kept for r in rows),
  )


def markdown_table(rows: Sequence[LayerRow]) -> str:
  """The per-layer table plus the total row, in Markdown.

  Examples:
    >>> print(markdown_table([LayerRow('fc1', 100, 10, 200, 20)]))
    | layer | weights | FLOP | weights % kept | FLOP % kept |
    |---|---:|---:|---:|---:|
    | fc1 | 100 | 200 | 10.00 | 10.00 |
    | **total** | 100 | 200 | 10.00 | 10.00 |
    <BLANKLINE>
    compression: 10.0x weights, 10.0x FLOP
  """
  total = totals(rows)
  lines = [
    '| layer | weights | FLOP | weights % kept | FLOP % kept |',
    '|---|---:|---:|---:|---:|',
  ]
  for r in rows:
    lines.append(
      f'| {r.layer} | {r.weights:,} | {r.flops:,} | {r.weights_kept_pct:.2f} | {r.flops_kept_pct:.2f} |'
    )
  lines.append(
    f'| **total** | {total.weights:,} | {total.flops:,} | {total.weights_kept_pct:.2f} '
    f'| {total.flops_kept_pct:.2f} |'
  )
  lines += [
    '',
    f'compression: {_ratio(total.weights, total.kept)} weights, '
    f'{_ratio(total.flops, total.flops_kept)} FLOP',
  ]
  return '\n'.join(lines)


def _ratio(total: int, kept: int) -> str:
  return f'{total / kept:.1f}x' if kept else 'inf'


def round_summaries(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """One entry per round: test error after retraining and weights kept."""
  keys = ('round', 'test_error', 'test_error_top5', 'kept', 'total', 'compression')
  return [
    {k: r[k] for k in keys if k in r}
    | ({'validation_error': r['validation_error']} if 'validation_error' in r else {})
    for r in records
    if r.get('event') == 'round_end'
  ]


def write_report(
  workdir: str | pathlib.Path,
  rows: Sequence[LayerRow],
  records: Sequence[Mapping[str, Any]],
  header: Mapping[str, Any],
) -> dict[str, pathlib.Path]:
  """Writes ``report.md``, ``report.json`` and ``error_vs_kept.png`` into ``workdir``.

  ``header`` (command, commit, seed, machine, ...) goes at the top of both
  reports, so a results file says how it was produced.
  """
  files = RunDir(workdir)
  rounds = round_summaries(records)
  total = totals(rows)
  md = ['# Pruning report', '']
  md += [f'- {key}: `{value}`' for key, value in header.items()]
  md += ['', '## Per layer (after the last round)', '', markdown_table(rows), '', '## Rounds', '']
  top5 = any('test_error_top5' in r for r in rounds)
  if top5:
    md += ['| round | top-1 error % | top-5 error % | weights kept | compression |']
    md += ['|---:|---:|---:|---:|---:|']
  else:
    md += ['| round | test error % | weights kept | compression |', '|---:|---:|---:|---:|']
  for r in rounds:
    errors = f'{r["test_error"]:.2f} |' + (f' {r["test_error_top5"]:.2f} |' if top5 else '')
    md.append(f'| {r["round"]} | {errors} {r["kept"]:,} | {r["total"] / r["kept"]:.1f}x |')
  md += ['', 'FLOP % kept counts pruned weights only (dense activations), unlike the paper.', '']
  paths = {'markdown': files.report_md, 'json': files.report_json}
  paths['markdown'].write_text('\n'.join(md))
  payload = {
    'header': dict(header),
    'layers': [
      r._asdict() | {'weights_kept_pct': r.weights_kept_pct, 'flops_kept_pct': r.flops_kept_pct}
      for r in rows
    ],
    'total': total._asdict()
    | {
      'weights_kept_pct': total.weights_kept_pct,
      'flops_kept_pct': total.flops_kept_pct,
      'compression': total.weights / total.kept if total.kept else None,
    },
    'rounds': rounds,
  }
  paths['json'].write_text(json.dumps(payload, indent=2) + '\n')
  paths['plot'] = plot_error_vs_kept(
    rounds, files.error_vs_kept, title=str(header.get('model', ''))
  )
  return paths


def write_and_print(
  workdir: str | pathlib.Path,
  rows: Sequence[LayerRow],
  records: Sequence[Mapping[str, Any]],
  header: Mapping[str, Any],
  *,
  auto_sensitivity: float | None = None,
) -> dict[str, pathlib.Path]:
  """The end of a pruning script: :func:`write_report`, then the summary on stdout.

  Prints the targets an automatic-sensitivity run chose (``auto_sensitivity``,
  its budget, is set; read from ``workdir/sensitivity.json``), the per-layer
  table and the final error with the paths written: at the compression of
  the masked weights, or for a structured run (its last record has
  ``macs_ratio``) at the smaller model's parameter and MAC ratios.

  Returns:
    the paths written, by name (``sensitivity`` added when present).
  """
  paths = write_report(workdir, rows, records, header)
  final = records[-1]
  if auto_sensitivity is not None:
    sensitivity = RunDir(workdir).sensitivity_json
    saved = json.loads(sensitivity.read_text())
    chosen = thresholds.Thresholds.from_dict(saved['thresholds'])
    print(f'targets chosen within {auto_sensitivity} points of validation error:')
    print(chosen.to_markdown() + '\n')
    paths['sensitivity'] = sensitivity
  print(markdown_table(rows))
  if 'macs_ratio' in final:
    # Structured: the smaller dense model against the dense one. The round's kept/total
    # count entries of the masked params (biases and norm scales too), not the table's.
    size = (
      f'{final["params_ratio"]:.1f}x fewer parameters and {final["macs_ratio"]:.1f}x fewer MACs'
    )
  else:
    size = f'{final["compression"]:.1f}x'
  print(
    f'\nfinal test error {final["test_error"]:.2f} % at {size}; '
    f'reports: {", ".join(str(p) for p in paths.values())}'
  )
  return paths


def plot_error_vs_kept(
  rounds: Sequence[Mapping[str, Any]], path: pathlib.Path, title: str = ''
) -> pathlib.Path:
  """Test error against the percentage of weights kept, one point per round."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  kept = [100.0 * r['kept'] / r['total'] for r in rounds]
  error = [r['test_error'] for r in rounds]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(kept, error, 'o-')
  for r, x, y in zip(rounds, kept, error, strict=True):
    ax.annotate(str(r['round']), (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
  ax.set_xscale('log')
  ax.invert_xaxis()
  ax.set_xlabel('weights kept (%)')
  ax.set_ylabel('test error (%)')
  ax.set_title(f'{title} test error across pruning rounds'.strip())
  ax.grid(True, which='both', alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


RESULTS_DIR = 'benchmarks/results'
"""Where the benchmarks write their results, relative to the checkout's root."""


def git_commit(repo: str | pathlib.Path | None = None) -> str:
  """Short hash of the checked-out commit, ``-dirty`` if tracked files changed.

  Results files record it so a figure can be traced to the code that made it;
  ``'unknown'`` outside a git checkout. Changes under :data:`RESULTS_DIR` do
  not count: they are figures, not code, and a study that runs one
  invocation after another rewrites them before the next one starts.
  """
  import subprocess

  cwd = pathlib.Path(repo) if repo else pathlib.Path(__file__).resolve().parents[2]
  try:
    sha = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ['git', 'status', '--porcelain', '--untracked-files=no', '--', '.', f':!{RESULTS_DIR}'],
      cwd=cwd,
      capture_output=True,
      text=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
  return sha + ('-dirty' if dirty else '')


def machine_description() -> str:
  """CPU model, visible cores and the JAX backend, for results files."""
  import os
  import platform

  import jax

  cpu = platform.processor() or platform.machine()
  cpuinfo = pathlib.Path('/proc/cpuinfo')
  if cpuinfo.exists():
    for line in cpuinfo.read_text().splitlines():
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  device = jax.devices()[0]
  return (
    f'{cpu}, {len(os.sched_getaffinity(0))} cores visible, '
    f'jax {jax.__version__} on {device.platform} ({jax.device_count()} device(s))'
  )
