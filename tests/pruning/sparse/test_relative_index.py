"""Relative-index CSR: hand-computed fillers and codes, bit packing, exact inversion."""

from __future__ import annotations

import numpy as np
import pytest

from pruning.sparse import relative_index as rel


def test_gaps_longer_than_the_index_range_need_fillers_by_hand():
  # 5 bits: one entry can skip at most 31 zeros, so it reaches at most 32 columns further.
  row = np.zeros((1, 200), np.float32)
  row[0, [0, 31, 32, 96, 97, 199]] = [1, 2, 3, 4, 5, 6]
  # Zeros skipped before each value: 0, 30, 0, 63, 0, 101.
  #   63 zeros -> 63 // 32 = 1 filler (at column 64), then code 63 - 32 = 31.
  #   101 zeros -> 101 // 32 = 3 fillers (columns 129, 161, 193), then code 101 - 96 = 5.
  csr = rel.encode(row, 5)
  assert csr.codes.tolist() == [0, 30, 0, 31, 31, 0, 31, 31, 31, 5]
  assert csr.values.tolist() == [1, 2, 3, 0, 4, 5, 0, 0, 0, 6]
  assert csr.fillers == 4 and csr.nonzeros == 6 and csr.entries == 10
  assert rel.filler_count(row, 5) == 4
  assert rel.absolute_columns(csr).tolist() == [0, 31, 32, 64, 96, 97, 129, 161, 193, 199]
  np.testing.assert_array_equal(rel.decode(csr), row)


def test_a_gap_of_exactly_the_span_needs_no_filler_and_one_more_does():
  for zeros, fillers in [(31, 0), (32, 1), (63, 1), (64, 2)]:
    row = np.zeros((1, zeros + 1), np.float32)
    row[0, -1] = 1.0
    assert rel.encode(row, 5).fillers == fillers, zeros


def test_rows_restart_and_trailing_zeros_are_not_stored():
  matrix = np.zeros((3, 70), np.float32)
  matrix[0, 69] = 1.0  # 69 zeros: 2 fillers with 5 bits
  matrix[2, 0] = 2.0  # row 1 is empty; row 2 starts at column -1 again
  csr = rel.encode(matrix, 5)
  assert csr.row_pointers.tolist() == [0, 3, 3, 4]
  assert csr.codes.tolist() == [31, 31, 5, 0]
  np.testing.assert_array_equal(rel.decode(csr), matrix)


@pytest.mark.parametrize('bits', [1, 2, 3, 5, 8, 12, 16])
@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16'])
def test_random_matrices_invert_bit_for_bit(bits, dtype):
  import ml_dtypes

  rng = np.random.default_rng(bits)
  matrix = rng.normal(size=(37, 300)) * (rng.random((37, 300)) < 0.05)
  matrix = matrix.astype(ml_dtypes.bfloat16 if dtype == 'bfloat16' else dtype)
  matrix[3, 7] = -0.0  # a kept negative zero is a value, not a filler
  csr = rel.encode(matrix, bits)
  decoded = rel.decode(csr)
  assert decoded.dtype == matrix.dtype
  np.testing.assert_array_equal(rel.bit_patterns(decoded), rel.bit_patterns(matrix))
  assert csr.fillers == rel.filler_count(matrix, bits)
  assert csr.nonzeros == int(np.count_nonzero(rel.bit_patterns(matrix)))


def test_best_index_bits_is_the_smallest_encoding():
  matrix = (np.random.default_rng(0).random((50, 1000)) < 0.03).astype(np.float32)
  best = rel.best_index_bits(matrix, value_bytes=4)

  def size(bits):
    csr = rel.encode(matrix, bits)
    return csr.entries * 4 + rel.packed_size(csr.entries, bits)

  assert size(best) == min(size(b) for b in range(1, rel.MAX_INDEX_BITS + 1))


@pytest.mark.parametrize('bits', [1, 3, 5, 7, 8, 13, 16])
def test_pack_bits_round_trip(bits):
  codes = np.random.default_rng(bits).integers(0, 1 << bits, size=1001).astype(np.uint32)
  packed = rel.pack_bits(codes, bits)
  assert len(packed) == rel.packed_size(1001, bits) == -(-1001 * bits // 8)
  np.testing.assert_array_equal(rel.unpack_bits(packed, 1001, bits), codes)


def test_errors():
  with pytest.raises(ValueError, match=r'index_bits is 0; expected an integer in \[1, 16\]'):
    rel.encode(np.zeros((2, 2)), 0)
  with pytest.raises(ValueError, match=r'expected a 2-D matrix, got shape \(4,\)'):
    rel.encode(np.zeros(4), 5)
  with pytest.raises(ValueError, match='a code exceeds 3 bits: 8'):
    rel.pack_bits(np.array([8]), 3)
  with pytest.raises(ValueError, match='2 bytes of packed indices; 4 codes of 5 bits need 3'):
    rel.unpack_bits(b'\x00\x00', 4, 5)
  csr = rel.encode(np.ones((2, 3), np.float32), 2)
  with pytest.raises(ValueError, match='row 1 has an entry beyond the last column'):
    rel.absolute_columns(csr._replace(codes=np.array([0, 0, 0, 0, 2, 0], np.uint32)))
  with pytest.raises(ValueError, match='row pointers must rise from 0 to the 6 entries'):
    rel.absolute_columns(csr._replace(row_pointers=np.array([0, 4, 3])))
