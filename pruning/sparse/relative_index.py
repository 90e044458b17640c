"""Compressed sparse rows with relative column indices of a few bits, and filler zeros.

The paper stores a pruned layer as compressed sparse rows whose column
indices are *relative*: each entry records how many zeros lie between it and
the previous entry of its row, in 5 bits for FC and 8 bits for CONV layers
(Han et al. 2015, §5; Han et al. 2016, "Deep Compression", §2). A gap longer
than the index can express is bridged with *filler* entries: explicit zeros
placed as far along as the index reaches.

Conventions used here (the on-disk format of :mod:`pruning.sparse.file_format`
depends on them):

* An entry's code ``k`` in ``[0, 2**bits)`` means "skip ``k`` zeros": the
  entry sits at column ``previous + 1 + k``, where ``previous`` is the
  column of the row's previous entry, or ``-1`` at the start of a row.
* A gap of ``z`` zeros before a nonzero value needs ``z // 2**bits``
  fillers. Each filler has code ``2**bits - 1`` and value ``+0.0``; the
  value's code is ``z % 2**bits``.
* Zeros after a row's last value are not stored; the row pointers say where
  each row's entries end.
* Stored values are the entries whose *bit pattern* is not zero in the
  value dtype, so ``-0.0`` is kept and a decoded matrix is bit-identical to
  the encoded one. Hence the fillers are exactly the stored ``+0.0`` values.

Codes are packed least significant bit first into bytes (see
:func:`pack_bits`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_INDEX_BITS = 16
"""Widest relative index supported (gaps up to 65535 zeros without a filler)."""


class RelativeCSR(NamedTuple):
  """A 2-D matrix in compressed sparse rows with relative column indices.

  Attributes:
    shape: ``(rows, cols)`` of the dense matrix.
    index_bits: bits per relative index.
    row_pointers: ``int64[rows + 1]``; row ``r``'s entries are
      ``row_pointers[r]:row_pointers[r + 1]`` (fillers included).
    codes: ``uint32[entries]``; zeros skipped before each entry.
    values: ``[entries]`` in the value dtype; fillers hold ``+0.0``.
  """

  shape: tuple[int, int]
  index_bits: int
  row_pointers: np.ndarray
  codes: np.ndarray
  values: np.ndarray

  @property
  def entries(self) -> int:
    """Stored entries: values and fillers."""
    return int(self.codes.size)

  @property
  def is_filler(self) -> np.ndarray:
    """``bool[entries]``: which entries are fillers (the stored ``+0.0`` values)."""
    return bit_patterns(self.values) == 0

  @property
  def fillers(self) -> int:
    """Filler entries."""
    return int(np.count_nonzero(self.is_filler))

  @property
  def nonzeros(self) -> int:
    """Stored entries that are not fillers."""
    return self.entries - self.fillers


def bit_patterns(values: np.ndarray) -> np.ndarray:
  """The raw bit patterns of ``values`` as unsigned integers of the same width."""
  return np.ascontiguousarray(values).view(f'u{values.dtype.itemsize}')


def _check_index_bits(index_bits: int) -> None:
  if not isinstance(index_bits, (int, np.integer)) or not 1 <= index_bits <= MAX_INDEX_BITS:
    raise ValueError(f'index_bits is {index_bits!r}; expected an integer in [1, {MAX_INDEX_BITS}]')


def _nonzero_positions(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Row and column of every entry whose bit pattern is not zero, row-major."""
  return np.nonzero(bit_patterns(matrix) != 0)


def _zero_gaps(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
  """Zeros skipped before each nonzero within its row (``cols`` sorted per row)."""
  previous = np.empty_like(cols)
  previous[:1] = -1
  previous[1:] = np.where(rows[1:] == rows[:-1], cols[:-1], -1)
  return cols - previous - 1


def filler_count(matrix: np.ndarray, index_bits: int) -> int:
  """Fillers that relative indices of ``index_bits`` bits need for ``matrix``.

  Examples:
    >>> import numpy as np
    >>> row = np.zeros((1, 100), np.float32)
    >>> row[0, [0, 40, 99]] = 1.0
    >>> filler_count(row, 5)   # gaps of 0, 39 and 58 zeros; 32 per filler
    2

  References:
    Han et al. 2016 ("Deep Compression"), §2, Fig. 2.
  """
  _check_index_bits(index_bits)
  rows, cols = _nonzero_positions(np.asarray(matrix))
  return int((_zero_gaps(rows, cols) >> index_bits).sum())


def encode(matrix: np.ndarray, index_bits: int) -> RelativeCSR:
  """Compressed sparse rows of ``matrix`` with relative indices and fillers.

  Args:
    matrix: a 2-D array in the dtype the values are to be stored in.
    index_bits: bits per relative index, in ``[1, MAX_INDEX_BITS]``.

  Returns:
    The encoding; :func:`decode` inverts it bit for bit.

  Raises:
    ValueError: if ``matrix`` is not 2-D or ``index_bits`` is out of range.

  Examples:
    >>> import numpy as np
    >>> row = np.array([[0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5]], np.float32)
    >>> csr = encode(row, 2)   # at most 3 zeros skipped per entry
    >>> csr.codes.tolist(), csr.values.tolist(), csr.row_pointers.tolist()
    ([2, 3, 3, 0], [7.0, 0.0, 0.0, 5.0], [0, 4])
    >>> np.array_equal(decode(csr), row)
    True

  References:
    Han et al. 2015, §5; Han et al. 2016 ("Deep Compression"), §2.
  """
  matrix = np.asarray(matrix)
  if matrix.ndim != 2:
    raise ValueError(f'expected a 2-D matrix, got shape {matrix.shape}')
  _check_index_bits(index_bits)
  span = 1 << index_bits
  rows, cols = _nonzero_positions(matrix)
  gaps = _zero_gaps(rows, cols)
  fillers = gaps >> index_bits
  # Each value lands after its own fillers and everything before it.
  position = np.arange(rows.size) + np.cumsum(fillers)
  entries = rows.size + int(fillers.sum())
  codes = np.full(entries, span - 1, np.uint32)
  codes[position] = gaps & (span - 1)
  values = np.zeros(entries, matrix.dtype)
  values[position] = matrix[rows, cols]
  per_row = np.bincount(rows, weights=fillers + 1, minlength=matrix.shape[0]).astype(np.int64)
  row_pointers = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
  return RelativeCSR(
    (int(matrix.shape[0]), int(matrix.shape[1])), index_bits, row_pointers, codes, values
  )


def absolute_columns(csr: RelativeCSR) -> np.ndarray:
  """Column of every stored entry (fillers included), from the relative codes.

  Raises:
    ValueError: if the row pointers are inconsistent with the entries or an
      entry falls beyond the last column, naming the row.
  """
  rows, cols = csr.shape
  pointers = np.asarray(csr.row_pointers, np.int64)
  if pointers.shape != (rows + 1,):
    raise ValueError(f'{pointers.size} row pointers for {rows} rows; expected {rows + 1}')
  if pointers[0] != 0 or pointers[-1] != csr.entries or np.any(np.diff(pointers) < 0):
    raise ValueError(
      f'row pointers must rise from 0 to the {csr.entries} entries; '
      f'got first {pointers[0]}, last {pointers[-1]}'
    )
  if csr.codes.size and int(csr.codes.max()) >= 1 << csr.index_bits:
    raise ValueError(f'a relative index exceeds {csr.index_bits} bits')
  advance = np.cumsum(csr.codes.astype(np.int64) + 1)
  # Subtract the advance accumulated before each row's first entry.
  before_row = np.concatenate([[0], advance])[pointers[:-1]]
  columns = advance - np.repeat(before_row, np.diff(pointers)) - 1
  if columns.size and columns.max() >= cols:
    row = int(np.searchsorted(pointers, int(np.argmax(columns >= cols)), side='right') - 1)
    raise ValueError(f'row {row} has an entry beyond the last column ({cols - 1})')
  return columns


def row_indices(csr: RelativeCSR) -> np.ndarray:
  """Row of every stored entry (fillers included)."""
  return np.repeat(np.arange(csr.shape[0]), np.diff(csr.row_pointers))


def decode(csr: RelativeCSR) -> np.ndarray:
  """The dense matrix, bit-identical to the one :func:`encode` was given."""
  columns = absolute_columns(csr)
  dense = np.zeros(csr.shape, csr.values.dtype)
  dense[row_indices(csr), columns] = csr.values
  return dense


def best_index_bits(matrix: np.ndarray, value_bytes: int) -> int:
  """The index width that stores ``matrix`` in the fewest bytes (values + indices).

  Narrow indices cost fillers, wide ones cost bits on every entry; the best
  width depends on the density (about 5-6 bits at 8 % kept).

  Examples:
    >>> import numpy as np
    >>> matrix = (np.random.default_rng(0).random((100, 800)) < 0.08).astype(np.float32)
    >>> best_index_bits(matrix, value_bytes=4)
    6
  """
  rows, cols = _nonzero_positions(np.asarray(matrix))
  gaps = _zero_gaps(rows, cols)

  def size(bits: int) -> int:
    entries = rows.size + int((gaps >> bits).sum())
    return entries * value_bytes + -(-entries * bits // 8)

  return min(range(1, MAX_INDEX_BITS + 1), key=size)


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
  """Packs unsigned ``codes`` of ``bits`` bits each, least significant bit first.

  Examples:
    >>> pack_bits(np.array([1, 2, 3]), 2).hex()   # 01 | 10 | 11 -> 0b00111001
    '39'
  """
  _check_index_bits(bits)
  codes = np.asarray(codes, np.uint32)
  if codes.size and int(codes.max()) >= 1 << bits:
    raise ValueError(f'a code exceeds {bits} bits: {int(codes.max())}')
  planes = ((codes[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
  return np.packbits(planes.reshape(-1), bitorder='little').tobytes()


def packed_size(count: int, bits: int) -> int:
  """Bytes that :func:`pack_bits` writes for ``count`` codes."""
  return -(-count * bits // 8)


def unpack_bits(buffer: bytes, count: int, bits: int) -> np.ndarray:
  """Inverse of :func:`pack_bits`: ``count`` codes of ``bits`` bits as ``uint32``."""
  _check_index_bits(bits)
  if len(buffer) != packed_size(count, bits):
    raise ValueError(
      f'{len(buffer)} bytes of packed indices; {count} codes of {bits} bits '
      f'need {packed_size(count, bits)}'
    )
  planes = np.unpackbits(np.frombuffer(buffer, np.uint8), count=count * bits, bitorder='little')
  planes = planes.reshape(count, bits).astype(np.uint32)
  codes = np.zeros(count, np.uint32)
  for bit in range(bits):
    codes |= planes[:, bit] << np.uint32(bit)
  return codes
