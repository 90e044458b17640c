"""A compact, self-checking file format for pruned params (Han et al. 2015, §5).

Every pruned weight tensor is stored as compressed sparse rows with relative
column indices of a few bits and filler zeros (:mod:`pruning.sparse.relative_index`);
every other leaf (biases, unpruned kernels) is stored dense. A kernel's rows
are its output units (its last axis) and its columns the remaining axes
flattened in C order, so a Dense kernel ``(in, out)`` becomes the ``(out, in)``
matrix ``W^T`` and a Conv kernel ``(h, w, in, out)`` becomes
``(out, h * w * in)``.

Binary layout, version 1. All integers are little-endian and unsigned; CRC-32
is ``zlib.crc32``::

    file     = header(32) metadata record*
    header   = magic "\\x89JPRUNE\\n"(8) version:u16 flags:u16(=0) records:u32
               metadata_size:u64 metadata_crc:u32 header_crc:u32 (of bytes 0-27)
    metadata = UTF-8 JSON object (metadata_size bytes)
    record   = size:u64 kind:u8 (0 dense, 1 sparse) dtype:u8 ndim:u8
               index_bits:u8 pointer_bytes:u8 reserved:u8(=0) path_size:u16
               shape:u64[ndim]  [sparse: entries:u64 fillers:u64]
               path (UTF-8)  payload  crc:u32 (of the record's preceding bytes)
    payload  = dense:  values (prod(shape) x itemsize)
               sparse: row pointers u{8*pointer_bytes}[rows + 1],
                       values (entries x itemsize),
                       codes packed LSB first (ceil(entries x index_bits / 8))

``size`` counts the whole record, CRC included. The loader checks the magic,
version, every size against the bytes present, each CRC, the row pointers and
the column range, and that nothing follows the last record; a damaged file is
rejected with a ``CorruptFileError`` saying what is wrong and where. No
pickle is involved anywhere: arrays are raw little-endian bytes, metadata is
JSON.

Loading gives back, bit for bit, the masked params (pruned weights ``+0.0``)
with the sparse leaves' values in the stored dtype; a kept ``-0.0`` stays
``-0.0``.

Every byte is accounted for, per leaf and by component
(:mod:`pruning.sparse.byte_accounting`); the parts sum to the file's size.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from pruning import _io, _tree, masks
from pruning.sparse import relative_index as rel
from pruning.sparse.byte_accounting import FileBytes, LeafBytes

PyTree = Any

MAGIC = b'\x89JPRUNE\n'
VERSION = 1
_HEADER = struct.Struct('<8sHHIQII')
_RECORD = struct.Struct('<QBBBBBBH')
_SPARSE_COUNTS = struct.Struct('<QQ')
_CRC = struct.Struct('<I')
_DENSE, _SPARSE = 0, 1
_MAX_NDIM = 8
_DTYPES = {
  1: np.dtype(np.float32),
  2: np.dtype(np.float16),
  3: np.dtype(ml_dtypes.bfloat16),
  4: np.dtype(np.float64),
  5: np.dtype(np.int8),
  6: np.dtype(np.int16),
  7: np.dtype(np.int32),
  8: np.dtype(np.int64),
  9: np.dtype(np.uint8),
  10: np.dtype(np.uint16),
  11: np.dtype(np.uint32),
  12: np.dtype(np.uint64),
  13: np.dtype(np.bool_),
}
_DTYPE_CODES = {dtype: code for code, dtype in _DTYPES.items()}
VALUE_DTYPES = ('float32', 'float16', 'bfloat16')
"""Dtypes the values of sparse leaves can be stored in."""


class CorruptFileError(ValueError):
  """A sparse checkpoint file is truncated, damaged or not one at all."""


class SparseCheckpoint(NamedTuple):
  """What :func:`load_sparse` returns.

  Attributes:
    params: nested dicts of dense numpy arrays, keyed by the path components
      (``params['fc1']['kernel']``); sparse leaves decoded bit-exactly.
    sparse: leaf path -> :class:`~pruning.sparse.relative_index.RelativeCSR` for the
      leaves stored sparse, in their row layout (rows = output units).
    metadata: the JSON metadata saved with the file.
    bytes: exact byte accounting of the file.
  """

  params: dict[str, Any]
  sparse: dict[str, rel.RelativeCSR]
  metadata: dict[str, Any]
  bytes: FileBytes


def kernel_rows(kernel: np.ndarray) -> np.ndarray:
  """A kernel as the matrix that is stored: one row per output unit (last axis).

  Examples:
    >>> kernel_rows(np.zeros((5, 5, 3, 8))).shape
    (8, 75)
  """
  kernel = np.asarray(kernel)
  return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


def kernel_from_rows(matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """Inverse of :func:`kernel_rows` for a kernel of ``shape``."""
  return np.moveaxis(matrix.reshape(shape[-1], *shape[:-1]), 0, -1)


def _value_dtype(value_dtype: Any) -> np.dtype:
  name = np.dtype(value_dtype).name if not isinstance(value_dtype, str) else value_dtype
  if name not in VALUE_DTYPES:
    raise ValueError(f'value_dtype is {value_dtype!r}; expected one of {VALUE_DTYPES}')
  return np.dtype(ml_dtypes.bfloat16) if name == 'bfloat16' else np.dtype(name)


def _index_bits(setting: int | str, path: str, matrix: np.ndarray) -> int:
  if setting == 'auto':
    return rel.best_index_bits(matrix, matrix.dtype.itemsize)
  if not isinstance(setting, (int, np.integer)) or not 1 <= setting <= rel.MAX_INDEX_BITS:
    raise ValueError(
      f'index bits for {path!r} are {setting!r}; expected an integer in '
      f"[1, {rel.MAX_INDEX_BITS}] or 'auto'"
    )
  return int(setting)


def _raw(array: np.ndarray) -> bytes:
  """Little-endian bytes of ``array`` (bfloat16 and bool included)."""
  array = np.ascontiguousarray(array)
  return array.view(f'u{array.dtype.itemsize}').astype(f'<u{array.dtype.itemsize}').tobytes()


def _from_raw(buffer: bytes, dtype: np.dtype, count: int) -> np.ndarray:
  raw = np.frombuffer(buffer, f'<u{dtype.itemsize}', count=count)
  return raw.astype(f'=u{dtype.itemsize}').view(dtype)


def _pointer_bytes(entries: int) -> int:
  return next(width for width in (1, 2, 4, 8) if entries < 1 << (8 * width))


def _record(path: str, array: np.ndarray, index_bits: int | None) -> tuple[bytes, LeafBytes]:
  """One leaf's record and its byte accounting; sparse when ``index_bits`` is given."""
  path_bytes = path.encode()
  shape = tuple(int(n) for n in array.shape)
  dtype_code = _DTYPE_CODES.get(array.dtype)
  if dtype_code is None:
    raise ValueError(f'leaf {path!r} has dtype {array.dtype}, which the format cannot store')
  if len(shape) > _MAX_NDIM:
    raise ValueError(f'leaf {path!r} has {len(shape)} dimensions; at most {_MAX_NDIM} supported')
  itemsize = array.dtype.itemsize
  if index_bits is None:
    fixed = _RECORD.pack(0, _DENSE, dtype_code, len(shape), 0, 0, 0, len(path_bytes))
    parts = [fixed, struct.pack(f'<{len(shape)}Q', *shape), path_bytes, _raw(array)]
    cost = dict(
      index_bits=0, nonzeros=array.size, filler_count=0, values=array.size * itemsize,
      fillers=0, indices=0, row_pointers=0,
    )  # fmt: skip
  else:
    csr = rel.encode(kernel_rows(array), index_bits)
    width = _pointer_bytes(csr.entries)
    fixed = _RECORD.pack(0, _SPARSE, dtype_code, len(shape), index_bits, width, 0, len(path_bytes))
    pointers = csr.row_pointers.astype(f'<u{width}').tobytes()
    codes = rel.pack_bits(csr.codes, index_bits)
    parts = [
      fixed,
      struct.pack(f'<{len(shape)}Q', *shape),
      _SPARSE_COUNTS.pack(csr.entries, csr.fillers),
      path_bytes,
      pointers,
      _raw(csr.values),
      codes,
    ]
    cost = dict(
      index_bits=index_bits, nonzeros=csr.nonzeros, filler_count=csr.fillers,
      values=csr.nonzeros * itemsize, fillers=csr.fillers * itemsize, indices=len(codes),
      row_pointers=len(pointers),
    )  # fmt: skip
  size = sum(map(len, parts)) + _CRC.size
  parts[0] = struct.pack('<Q', size) + parts[0][8:]
  body = b''.join(parts)
  record = body + _CRC.pack(zlib.crc32(body))
  header = size - sum(cost[k] for k in ('values', 'fillers', 'indices', 'row_pointers'))
  return record, LeafBytes(path, shape, array.dtype.name, header=header, **cost)


def encode_sparse(
  params: PyTree,
  mask: PyTree | None = None,
  *,
  fc_index_bits: int | str = 5,
  conv_index_bits: int | str = 8,
  value_dtype: Any = 'float32',
  metadata: Mapping[str, Any] | None = None,
) -> tuple[bytes, FileBytes]:
  """The bytes of a sparse checkpoint of ``params``, and their exact accounting.

  Args:
    params: a params pytree (nested dicts or an nnx ``State``).
    mask: a mask mirroring ``params`` (see :mod:`pruning.masks`); its
      non-``None`` leaves are stored sparse, the weights it prunes dropped.
      Without one, the leaves that :data:`~pruning.KERNEL_PATTERN` selects
      are stored sparse, keeping their nonzero entries (``-0.0`` counts as
      pruned and loads as ``+0.0``).
    fc_index_bits: relative index width for 2-D kernels (paper: 5), or
      ``'auto'`` for the width that minimises each leaf's bytes.
    conv_index_bits: the same for kernels of 3+ dimensions (paper: 8).
    value_dtype: dtype of the sparse leaves' stored values, one of
      :data:`VALUE_DTYPES`. Dense leaves keep their own dtype.
    metadata: JSON-serialisable information saved with the params.

  Returns:
    ``(data, accounting)``.

  Raises:
    ValueError: naming the leaf, for a bad mask, a non-float sparse leaf or a
      dtype the format cannot hold; or for bad options or metadata.

  References:
    Han et al. 2015, §5 (5-bit FC and 8-bit CONV relative indices).
  """
  dtype = _value_dtype(value_dtype)
  named = [(name, np.asarray(_tree.unbox(leaf))) for name, leaf in _tree.named_leaves(params)]
  if mask is None:
    selected = re.compile(masks.KERNEL_PATTERN)
    mask_leaves = [a != 0 if selected.search(name) and a.ndim >= 2 else None for name, a in named]
  else:
    mask_leaves = [None if m is None else np.asarray(m) for m in masks.check_mask(mask, params)]
  try:
    metadata_bytes = json.dumps(dict(metadata or {}), sort_keys=True).encode()
  except TypeError as e:
    raise ValueError(f'metadata must be JSON-serialisable: {e}') from e
  records, costs = [], []
  for (name, array), keep in zip(named, mask_leaves, strict=True):
    index_bits = None
    if keep is not None:
      if array.ndim < 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
          f'leaf {name!r} ({array.dtype}{list(array.shape)}) cannot be stored sparse: '
          'only float kernels of 2+ dimensions can'
        )
      array = np.where(keep, array, 0).astype(dtype)
      setting = fc_index_bits if array.ndim == 2 else conv_index_bits
      index_bits = _index_bits(setting, name, kernel_rows(array))
    record, cost = _record(name, array, index_bits)
    records.append(record)
    costs.append(cost)
  head = _HEADER.pack(
    MAGIC, VERSION, 0, len(records), len(metadata_bytes), zlib.crc32(metadata_bytes), 0
  )
  head = head[:-4] + _CRC.pack(zlib.crc32(head[:-4]))
  data = b''.join([head, metadata_bytes, *records])
  return data, FileBytes(_HEADER.size, len(metadata_bytes), costs)


def save_sparse(path: str | os.PathLike, params: PyTree, mask: PyTree | None = None, **options):
  """Writes :func:`encode_sparse` ``(params, mask, **options)`` to ``path`` atomically.

  The bytes go to a temporary file in the same folder, are flushed to disk and
  renamed over ``path``, so an interrupted save never leaves a partial file
  in its place.

  Returns:
    The file's :class:`FileBytes`.

  Examples:
    >>> import tempfile, pathlib, numpy as np
    >>> kernel = np.zeros((784, 300), np.float32)
    >>> kernel[::10, ::3] = 1.0                        # 3.4 % of the weights kept
    >>> params = {'fc1': {'kernel': kernel, 'bias': np.ones(300, np.float32)}}
    >>> path = pathlib.Path(tempfile.mkdtemp()) / 'model.jpsparse'
    >>> accounting = save_sparse(path, params)
    >>> accounting.total == path.stat().st_size, round(accounting.compression)
    (True, 24)
    >>> restored = load_sparse(path).params
    >>> np.array_equal(restored['fc1']['kernel'], kernel)
    True
  """
  data, accounting = encode_sparse(params, mask, **options)
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  _io.write_atomic(path, data)
  return accounting


def load_sparse(path: str | os.PathLike) -> SparseCheckpoint:
  """Reads and validates a file written by :func:`save_sparse`.

  Raises:
    CorruptFileError: if the file is truncated, damaged or of another
      format; the message says what is wrong and where.
  """
  path = pathlib.Path(path)
  return decode_sparse(path.read_bytes(), source=str(path))


class _Reader:
  """Reads sized fields off a buffer, raising ``CorruptFileError`` on a short read."""

  def __init__(self, data: bytes, source: str):
    self.data, self.source, self.offset = data, source, 0

  def fail(self, message: str) -> CorruptFileError:
    return CorruptFileError(f'{self.source}: {message}')

  def take(self, size: int, what: str) -> bytes:
    if size > len(self.data) - self.offset:
      raise self.fail(
        f'truncated: {what} needs {size} bytes at offset {self.offset}, '
        f'but the file has {len(self.data)} bytes in all'
      )
    chunk = self.data[self.offset : self.offset + size]
    self.offset += size
    return chunk


def decode_sparse(data: bytes, *, source: str = '<bytes>') -> SparseCheckpoint:
  """Parses and validates the bytes of a sparse checkpoint (see :func:`load_sparse`)."""
  reader = _Reader(data, source)
  head = reader.take(_HEADER.size, 'the file header')
  magic, version, flags, count, metadata_size, metadata_crc, header_crc = _HEADER.unpack(head)
  if magic != MAGIC:
    raise reader.fail(f'not a sparse checkpoint: magic is {magic!r}, expected {MAGIC!r}')
  if version != VERSION:
    raise reader.fail(f'format version {version} is not supported (this reader reads {VERSION})')
  if zlib.crc32(head[:-4]) != header_crc:
    raise reader.fail('the file header fails its checksum: the file is corrupt')
  if flags:
    raise reader.fail(f'header flags are {flags:#06x}; expected 0')
  metadata_bytes = reader.take(metadata_size, 'the metadata')
  if zlib.crc32(metadata_bytes) != metadata_crc:
    raise reader.fail('the metadata fails its checksum: the file is corrupt')
  try:
    metadata = json.loads(metadata_bytes)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise reader.fail(f'the metadata is not valid JSON: {e}') from e
  if not isinstance(metadata, dict):
    raise reader.fail(f'the metadata is a JSON {type(metadata).__name__}, expected an object')
  arrays, sparse, costs = {}, {}, []
  for index in range(count):
    path, array, csr, cost = _read_record(reader, index)
    if path in arrays:
      raise reader.fail(f'record {index} repeats the leaf path {path!r}')
    arrays[path] = array
    if csr is not None:
      sparse[path] = csr
    costs.append(cost)
  if reader.offset != len(data):
    raise reader.fail(
      f'{len(data) - reader.offset} unexpected bytes after the last of {count} records '
      f'(offset {reader.offset})'
    )
  params: dict[str, Any] = {}
  for path, array in arrays.items():
    *parents, leaf = path.split('/')
    node = params
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = array
  return SparseCheckpoint(params, sparse, metadata, FileBytes(_HEADER.size, metadata_size, costs))


def _read_record(reader: _Reader, index: int):
  start = reader.offset
  where = f'record {index} (offset {start})'
  fixed = reader.take(_RECORD.size, f'the header of {where}')
  size, kind, dtype_code, ndim, index_bits, width, reserved, path_size = _RECORD.unpack(fixed)
  if size > len(reader.data) - start:
    raise reader.fail(
      f'truncated: {where} declares {size} bytes but only {len(reader.data) - start} remain'
    )
  # Check the CRC before trusting any other field of the record.
  body_end = start + size - _CRC.size
  if (
    size < _RECORD.size + _CRC.size
    or zlib.crc32(reader.data[start:body_end])
    != _CRC.unpack(reader.data[body_end : start + size])[0]
  ):
    raise reader.fail(f'{where} fails its checksum: the file is corrupt')
  if kind not in (_DENSE, _SPARSE) or reserved or ndim > _MAX_NDIM or dtype_code not in _DTYPES:
    raise reader.fail(
      f'{where} has an invalid header (kind {kind}, dtype {dtype_code}, ndim {ndim})'
    )
  shape = struct.unpack(f'<{ndim}Q', reader.take(8 * ndim, f'the shape of {where}'))
  dtype = _DTYPES[dtype_code]
  entries = fillers = 0
  if kind == _SPARSE:
    entries, fillers = _SPARSE_COUNTS.unpack(reader.take(_SPARSE_COUNTS.size, where))
    if ndim < 2 or width not in (1, 2, 4, 8) or not 1 <= index_bits <= rel.MAX_INDEX_BITS:
      raise reader.fail(
        f'{where} has an invalid sparse header (ndim {ndim}, index bits {index_bits}, '
        f'pointer bytes {width})'
      )
  try:
    path = reader.take(path_size, f'the path of {where}').decode()
  except UnicodeDecodeError as e:
    raise reader.fail(f'the path of {where} is not UTF-8') from e
  where = f'{where}, leaf {path!r}'
  rows, cols = (shape[-1], math.prod(shape[:-1])) if kind == _SPARSE else (0, 0)
  sizes = {
    'row_pointers': (rows + 1) * width if kind == _SPARSE else 0,
    'values': (entries if kind == _SPARSE else math.prod(shape)) * dtype.itemsize,
    'indices': rel.packed_size(entries, index_bits) if kind == _SPARSE else 0,
  }
  expected = reader.offset - start + sum(sizes.values()) + _CRC.size
  if expected != size:
    raise reader.fail(f'{where} declares {size} bytes but its fields add up to {expected}')
  pointers = reader.take(sizes['row_pointers'], where)
  values = _from_raw(reader.take(sizes['values'], where), dtype, sizes['values'] // dtype.itemsize)
  codes = reader.take(sizes['indices'], where)
  reader.take(_CRC.size, where)
  header = size - sum(sizes.values())
  if kind == _DENSE:
    array = values.reshape(shape)
    cost = LeafBytes(path, shape, dtype.name, 0, array.size, 0, sizes['values'], 0, 0, 0, header)
    return path, array, None, cost
  csr = rel.RelativeCSR(
    (rows, cols),
    index_bits,
    np.frombuffer(pointers, f'<u{width}').astype(np.int64),
    rel.unpack_bits(codes, entries, index_bits),
    values,
  )
  is_filler = csr.is_filler
  if int(is_filler.sum()) != fillers or np.any(csr.codes[is_filler] != (1 << index_bits) - 1):
    raise reader.fail(f'{where} holds fillers inconsistent with its header ({fillers} declared)')
  try:
    matrix = rel.decode(csr)
  except ValueError as e:
    raise reader.fail(f'{where}: {e}') from e
  itemsize = dtype.itemsize
  cost = LeafBytes(
    path, shape, dtype.name, index_bits, entries - fillers, fillers,
    (entries - fillers) * itemsize, fillers * itemsize, sizes['indices'], sizes['row_pointers'],
    header,
  )  # fmt: skip
  return path, kernel_from_rows(matrix, shape), csr, cost
