"""The torch side-by-side benchmark trains the same pruned LeNet-5 in both frameworks.

torch is a benchmark-only dependency (``pip install torch==2.13.0``, the CPU
wheel): without it these tests skip, and on CI they fail (the ``torch``
fixture in ``tests/conftest.py``).
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import pruning
from models import CPU_COMPILER_OPTIONS, LeNet5

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'lenet5_vs_torch.py'


@pytest.fixture(scope='module')
def bench(torch):
  del torch  # the script exits at import without it
  spec = importlib.util.spec_from_file_location('lenet5_vs_torch', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(str(SCRIPT.parent))  # the script imports benchmarks/_common.py
    spec.loader.exec_module(module)
  return module


def test_same_weights_after_masked_training(bench, torch):
  params = nnx.state(LeNet5(nnx.Rngs(0)), nnx.Param)
  mask = pruning.sparsity_mask(params, {name: 1.0 - d for name, d in bench.DENSITY.items()})
  params = pruning.apply_mask(params, mask)
  tx = pruning.masked_optimizer(optax.sgd(bench.LEARNING_RATE, momentum=bench.MOMENTUM), mask)
  step = bench.jax_step(nnx.graphdef(LeNet5(nnx.Rngs(0))), tx, CPU_COMPILER_OPTIONS)
  model = bench.torch_model(params, mask)
  torch_step = bench.torch_step(model)
  images, labels = bench._batches(3, 16, seed=1)
  state = (jax.tree.map(jnp.copy, params), tx.init(params))
  for x, y in zip(images, labels, strict=True):
    *state, _ = step(*state, jnp.asarray(x), jnp.asarray(y.astype(np.int32)))
    torch_step(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y))
  ours, theirs = bench._layers(state[0]), bench.torch_weights_as_jax(model)
  kept = bench._layers(mask)
  assert set(theirs) == {'conv1', 'conv2', 'fc1', 'fc2'}
  for name, weight in theirs.items():
    moved = np.abs(ours[name]['kernel'] - np.asarray(params[name]['kernel'][...])).max()
    assert moved > 1e-4, f'{name}: training did not change the weights'
    np.testing.assert_allclose(ours[name]['kernel'], weight, atol=1e-6, err_msg=name)
    pruned = ~kept[name]['kernel']
    assert (
      pruned.any() and (weight[pruned] == 0).all() and (ours[name]['kernel'][pruned] == 0).all()
    )
