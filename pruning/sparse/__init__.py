"""Real savings from a mask: a smaller model, a compact file, sparse inference.

* :mod:`~pruning.sparse.surgery`: remove the units and filters a mask left
  without inputs or outputs (Han et al. 2015, §3.5), through
  :mod:`~pruning.sparse.layer_chain` (how layers connect) and
  :mod:`~pruning.sparse.resize` (loading a smaller model);
* :mod:`~pruning.sparse.file_format`: the compact file, with
  :mod:`~pruning.sparse.relative_index` (relative indices, §5) and
  :mod:`~pruning.sparse.byte_accounting` (every byte, per layer);
* :mod:`~pruning.sparse.inference`: FC layers that multiply with the kept
  weights only.
"""

from pruning.sparse.byte_accounting import FileBytes, LeafBytes
from pruning.sparse.file_format import (
  CorruptFileError,
  SparseCheckpoint,
  decode_sparse,
  encode_sparse,
  load_sparse,
  save_sparse,
)
from pruning.sparse.inference import SparseLinear, sparsify
from pruning.sparse.layer_chain import ChainLayer, LayerChain
from pruning.sparse.relative_index import RelativeCSR
from pruning.sparse.resize import load_resized
from pruning.sparse.surgery import NeuronCounts, Surgery, remove_dead_neurons

__all__ = [
  'ChainLayer',
  'CorruptFileError',
  'FileBytes',
  'LayerChain',
  'LeafBytes',
  'NeuronCounts',
  'RelativeCSR',
  'SparseCheckpoint',
  'SparseLinear',
  'Surgery',
  'decode_sparse',
  'encode_sparse',
  'load_resized',
  'load_sparse',
  'remove_dead_neurons',
  'save_sparse',
  'sparsify',
]
