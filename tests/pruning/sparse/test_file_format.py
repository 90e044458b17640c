"""Sparse checkpoint files: bit-exact round trips, exact byte accounting, damaged files rejected."""

from __future__ import annotations

import struct
import zlib

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

import pruning
from pruning.sparse import file_format
from pruning.sparse import relative_index as rel


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  return {
    'conv': {
      'kernel': rng.normal(size=(3, 3, 2, 8)).astype(np.float32),
      'bias': rng.normal(size=8).astype(np.float32),
    },
    'fc': {
      'kernel': rng.normal(size=(300, 20)).astype(np.float32),
      'bias': rng.normal(size=20).astype(np.float32),
    },
    'step': np.array(7, np.int32),
  }


def make_mask(params, density=0.05, seed=1):
  rng = np.random.default_rng(seed)
  return {
    'conv': {'kernel': rng.random((3, 3, 2, 8)) < 0.5, 'bias': None},
    'fc': {'kernel': rng.random((300, 20)) < density, 'bias': None},
    'step': None,
  }


@pytest.mark.parametrize('value_dtype', ['float32', 'float16', 'bfloat16'])
@pytest.mark.parametrize(('fc_bits', 'conv_bits'), [(5, 8), (1, 1), (3, 16), ('auto', 'auto')])
def test_round_trip_is_bit_exact(tmp_path, value_dtype, fc_bits, conv_bits, assert_trees_equal):
  params, mask = make_params(), make_mask(make_params())
  params['fc']['kernel'][np.flatnonzero(mask['fc']['kernel'])[:3] // 20, 0] = -0.0
  path = tmp_path / 'model.jpsparse'
  accounting = pruning.save_sparse(
    path,
    params,
    mask,
    fc_index_bits=fc_bits,
    conv_index_bits=conv_bits,
    value_dtype=value_dtype,
    metadata={'model': 'test', 'sizes': [1, 2]},
  )
  loaded = pruning.load_sparse(path)
  dtype = np.dtype(ml_dtypes.bfloat16) if value_dtype == 'bfloat16' else np.dtype(value_dtype)
  expected = {
    'conv': {
      'kernel': np.where(mask['conv']['kernel'], params['conv']['kernel'], 0).astype(dtype),
      'bias': params['conv']['bias'],
    },
    'fc': {
      'kernel': np.where(mask['fc']['kernel'], params['fc']['kernel'], 0).astype(dtype),
      'bias': params['fc']['bias'],
    },
    'step': params['step'],
  }
  # Compare bit patterns: -0.0 must survive, and bfloat16 compares exactly this way.
  bits = {
    k: {n: rel.bit_patterns(np.asarray(v)) for n, v in d.items()}
    for k, d in expected.items()
    if k != 'step'
  }
  got = {
    k: {n: rel.bit_patterns(v) for n, v in d.items()}
    for k, d in loaded.params.items()
    if k != 'step'
  }
  assert_trees_equal(got, bits)
  assert loaded.params['fc']['kernel'].dtype == dtype
  assert loaded.params['step'] == 7 and loaded.params['step'].dtype == np.int32
  assert loaded.metadata == {'model': 'test', 'sizes': [1, 2]}
  assert set(loaded.sparse) == {'conv/kernel', 'fc/kernel'}
  assert loaded.bytes == accounting
  assert accounting.total == path.stat().st_size
  for leaf in accounting.leaves:
    if leaf.index_bits:
      kept = int(np.count_nonzero(rel.bit_patterns(expected[leaf.path.split('/')[0]]['kernel'])))
      assert leaf.nonzeros == kept, leaf.path
      assert leaf.values == kept * dtype.itemsize
      assert leaf.indices == rel.packed_size(kept + leaf.filler_count, leaf.index_bits)


def test_byte_accounting_by_hand():
  # One row of 100 with values at 0, 40, 99: two fillers with 5-bit indices.
  kernel = np.zeros((100, 1), np.float32)
  kernel[[0, 40, 99], 0] = 1.0
  data, accounting = pruning.encode_sparse({'fc': {'kernel': kernel}}, fc_index_bits=5)
  (leaf,) = accounting.leaves
  assert (leaf.nonzeros, leaf.filler_count) == (3, 2)
  assert leaf.values == 12 and leaf.fillers == 8
  assert leaf.indices == 4  # 5 entries x 5 bits = 25 bits -> 4 bytes
  assert leaf.row_pointers == 2  # 2 pointers of one byte
  # Record header: 16 fixed + 8 per dimension + 16 counts + path 'fc/kernel' + CRC.
  assert leaf.header == 16 + 2 * 8 + 16 + 9 + 4
  assert accounting.metadata == 2  # '{}'
  assert accounting.total == len(data) == 32 + 2 + leaf.total
  assert leaf.dense_float32 == 400


def test_without_mask_kernels_are_sparse_by_pattern(assert_trees_equal):
  params = make_params()
  params['fc']['kernel'][params['fc']['kernel'] < 1.5] = 0
  data, accounting = pruning.encode_sparse(params)
  loaded = pruning.decode_sparse(data)
  assert set(loaded.sparse) == {'conv/kernel', 'fc/kernel'}
  assert_trees_equal(loaded.params, params)
  kinds = {leaf.path: leaf.index_bits for leaf in accounting.leaves}
  assert kinds == {'conv/bias': 0, 'conv/kernel': 8, 'fc/bias': 0, 'fc/kernel': 5, 'step': 0}


def test_nnx_state_with_its_mask():
  model = nnx.Linear(30, 4, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  mask = pruning.sparsity_mask(params, 0.9)
  data, _ = pruning.encode_sparse(params, mask)
  loaded = pruning.decode_sparse(data).params
  expected = np.asarray(pruning.apply_mask(params, mask)['kernel'][...])
  np.testing.assert_array_equal(loaded['kernel'], expected)
  assert np.count_nonzero(loaded['kernel']) == 12


def test_the_paper_widths_store_a_lenet_fc1_about_10x_smaller():
  # fc1 of LeNet-300-100 at the paper's 8 % kept: 32-bit values + 5-bit indices + fillers.
  rng = np.random.default_rng(0)
  kernel = (rng.normal(size=(784, 300)) * (rng.random((784, 300)) < 0.08)).astype(np.float32)
  _, accounting = pruning.encode_sparse({'fc1': {'kernel': kernel}})
  (leaf,) = accounting.leaves
  assert 0.06 < leaf.filler_count / leaf.nonzeros < 0.09  # about 0.92 ** 32 per value
  # 12.5x fewer weights, each 37 bits instead of 32, plus 7 % fillers: 12.5 * 32 / 37 / 1.07.
  assert 9.8 < leaf.compression < 10.3


def test_write_is_atomic(tmp_path):
  path = tmp_path / 'model.jpsparse'
  pruning.save_sparse(path, make_params())
  before = path.read_bytes()
  with pytest.raises(ValueError, match='JSON-serialisable'):
    pruning.save_sparse(path, make_params(seed=1), metadata={'bad': object()})
  assert path.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model.jpsparse']


@pytest.fixture
def saved():
  data, accounting = pruning.encode_sparse(
    make_params(), make_mask(make_params()), metadata={'model': 'x'}
  )
  return data, accounting


def flip(data: bytes, offset: int) -> bytes:
  return data[:offset] + bytes([data[offset] ^ 0x40]) + data[offset + 1 :]


def test_every_flipped_byte_is_detected(saved):
  data, _ = saved
  for offset in range(0, len(data), 7):
    with pytest.raises(pruning.CorruptFileError):
      pruning.decode_sparse(flip(data, offset))


@pytest.mark.parametrize(
  ('where', 'message'),
  [
    (lambda acc: 33, 'the metadata fails its checksum'),
    (lambda acc: 20, 'the file header fails its checksum'),
    (
      lambda acc: 32 + acc.metadata + acc.leaves[0].total + 60,
      r'record 1 \(offset \d+\) fails its checksum',
    ),
  ],
)
def test_flipped_byte_names_the_damaged_section(saved, where, message):
  data, accounting = saved
  with pytest.raises(pruning.CorruptFileError, match=f'^<bytes>: {message}'):
    pruning.decode_sparse(flip(data, where(accounting)))


def test_truncated_files(saved, tmp_path):
  data, accounting = saved
  path = tmp_path / 'cut.jpsparse'
  for size in [0, 10, 31, 40, 32 + accounting.metadata + 20, len(data) - 1]:
    path.write_bytes(data[:size])
    with pytest.raises(
      pruning.CorruptFileError,
      match=rf'^{path}: truncated: .* the file has {size} bytes|^{path}: truncated: record \d+ .* declares',
    ):
      pruning.load_sparse(path)


def test_trailing_bytes_wrong_magic_and_version(saved):
  data, _ = saved
  with pytest.raises(
    pruning.CorruptFileError, match='3 unexpected bytes after the last of 5 records'
  ):
    pruning.decode_sparse(data + b'abc')
  with pytest.raises(
    pruning.CorruptFileError, match=r"not a sparse checkpoint: magic is b'PK\\x03\\x04"
  ):
    pruning.decode_sparse(b'PK\x03\x04' + data[4:])
  header = bytearray(data[:32])
  header[8:10] = struct.pack('<H', 2)
  with pytest.raises(
    pruning.CorruptFileError, match=r'format version 2 is not supported \(this reader reads 1\)'
  ):
    pruning.decode_sparse(bytes(header) + data[32:])


def test_consistent_checksum_but_inconsistent_fields_are_rejected(saved):
  data, accounting = saved
  # Rewrite the conv kernel record's filler count and fix its CRC: only the
  # structural checks can catch it.
  start = 32 + accounting.metadata + accounting.leaves[0].total
  leaf = accounting.leaves[1]
  assert leaf.path == 'conv/kernel'
  record = bytearray(data[start : start + leaf.total])
  counts = 16 + 8 * 4
  entries, fillers = struct.unpack('<QQ', record[counts : counts + 16])
  record[counts : counts + 16] = struct.pack('<QQ', entries, fillers + 1)
  record[-4:] = struct.pack('<I', zlib.crc32(bytes(record[:-4])))
  damaged = data[:start] + bytes(record) + data[start + leaf.total :]
  with pytest.raises(
    pruning.CorruptFileError, match=r"leaf 'conv/kernel' holds fillers inconsistent"
  ):
    pruning.decode_sparse(damaged)
  record[counts : counts + 16] = struct.pack('<QQ', entries + 1, fillers)
  record[-4:] = struct.pack('<I', zlib.crc32(bytes(record[:-4])))
  damaged = data[:start] + bytes(record) + data[start + leaf.total :]
  with pytest.raises(
    pruning.CorruptFileError, match=r'declares \d+ bytes but its fields add up to \d+'
  ):
    pruning.decode_sparse(damaged)


def test_encode_errors_name_the_leaf():
  params = make_params()
  with pytest.raises(ValueError, match=r"value_dtype is 'int8'; expected one of"):
    pruning.encode_sparse(params, value_dtype='int8')
  with pytest.raises(ValueError, match=r"index bits for 'fc/kernel' are 0"):
    pruning.encode_sparse(params, fc_index_bits=0)
  mask = make_mask(params)
  mask['step'] = np.array(True)
  with pytest.raises(ValueError, match=r"leaf 'step' \(int32\[\]\) cannot be stored sparse"):
    pruning.encode_sparse(params, mask)
  mask = make_mask(params)
  mask['fc']['kernel'] = mask['fc']['kernel'][:10]
  with pytest.raises(ValueError, match=r"mask leaf 'fc/kernel' has shape \(10, 20\)"):
    pruning.encode_sparse(params, mask)
  with pytest.raises(ValueError, match=r"leaf 'x' has dtype complex64"):
    pruning.encode_sparse({'x': jnp.zeros(2, jnp.complex64)})


def test_layout_constants_match_the_documentation():
  assert file_format.MAGIC == b'\x89JPRUNE\n' and file_format.VERSION == 1
  assert file_format._HEADER.size == 32 and file_format._RECORD.size == 16
