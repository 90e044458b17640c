"""Exact storage cost of a sparse checkpoint, per leaf and by component.

:func:`pruning.encode_sparse` and :func:`pruning.load_sparse` account for
every byte of a file: per leaf the kept ``values``, the ``fillers``' values,
the packed relative ``indices`` (fillers' codes and the last byte's padding
included), the ``row_pointers`` and the record ``header`` (fixed fields,
shape, path, CRC); per file the file header and the JSON metadata. The parts
sum to the file's size exactly. The reference is the same params as dense
float32 arrays (Han et al. 2015, §5).
"""

from __future__ import annotations

import math
from typing import NamedTuple


class LeafBytes(NamedTuple):
  """Exact storage cost of one leaf, by component; the parts sum to ``total``."""

  path: str
  shape: tuple[int, ...]
  dtype: str  # dtype of the stored values
  index_bits: int  # 0 for a dense leaf
  nonzeros: int  # stored values that are not fillers (every entry of a dense leaf)
  filler_count: int
  values: int  # bytes of the kept values
  fillers: int  # bytes of the filler zeros' values
  indices: int  # bytes of packed relative indices (fillers' too), last byte's padding included
  row_pointers: int
  header: int  # record header, path and CRC

  @property
  def total(self) -> int:
    """Bytes of the whole record."""
    return self.values + self.fillers + self.indices + self.row_pointers + self.header

  @property
  def dense_float32(self) -> int:
    """Bytes of the same leaf as a dense float32 array (the reference)."""
    return 4 * math.prod(self.shape)

  @property
  def compression(self) -> float:
    """``dense_float32 / total``."""
    return self.dense_float32 / self.total


class FileBytes(NamedTuple):
  """Exact storage cost of a whole file: header, metadata and every leaf."""

  header: int
  metadata: int
  leaves: list[LeafBytes]

  @property
  def total(self) -> int:
    """The file's size in bytes."""
    return self.header + self.metadata + sum(leaf.total for leaf in self.leaves)

  @property
  def dense_float32(self) -> int:
    """Bytes of all leaves as dense float32 arrays."""
    return sum(leaf.dense_float32 for leaf in self.leaves)

  @property
  def compression(self) -> float:
    """``dense_float32 / total``: how many times smaller than dense float32 params."""
    return self.dense_float32 / self.total

  def to_markdown(self) -> str:
    """Per-leaf table of bytes by component, then the file total."""
    lines = [
      '| leaf | shape | index bits | kept | fillers | dense f32 B | values B | fillers B '
      '| indices B | row ptrs B | header B | stored B | compression |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for leaf in self.leaves:
      lines.append(
        f'| {leaf.path} | {"x".join(map(str, leaf.shape))} | {leaf.index_bits or "-"} '
        f'| {leaf.nonzeros:,} | {leaf.filler_count:,} | {leaf.dense_float32:,} | {leaf.values:,} '
        f'| {leaf.fillers:,} | {leaf.indices:,} | {leaf.row_pointers:,} | {leaf.header:,} '
        f'| {leaf.total:,} | {leaf.compression:.1f}x |'
      )
    lines.append(
      f'| file header + metadata | | | | | | | | | | {self.header + self.metadata:,} '
      f'| {self.header + self.metadata:,} | |'
    )
    lines.append(
      f'| **total** | | | | | {self.dense_float32:,} | | | | | | {self.total:,} '
      f'| {self.compression:.1f}x |'
    )
    return '\n'.join(lines)
