"""The torch twin of benchmarks/vgg_vs_torch.py is the toolkit's network and recipe.

With dropout off (the one thing the two frameworks draw differently), the
toolkit's compiled step and the twin must give the same loss, the same
gradients (the first update of SGD with momentum is ``-rate * gradient``),
the same updated weights and batch-norm statistics, and keep agreeing over a
few steps with a warm-up, to float rounding. torch is a benchmark-only
dependency (``pip install torch==2.13.0``, the CPU wheel): without it these
tests skip, and on CI they fail (the ``torch`` fixture in ``tests/conftest.py``).
"""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from pruning.experiment import parallel

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'vgg_vs_torch.py'
WIDTH = 1 / 16


@pytest.fixture(scope='module')
def bench(torch):
  del torch  # the script exits at import without it
  spec = importlib.util.spec_from_file_location('vgg_vs_torch', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(str(SCRIPT.parent))  # the script imports benchmarks/_common.py
    spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def run_pair(bench, cifar10_data_dir):
  """``make(steps, **overrides) -> (toolkit run, torch run, batches)``, both from one start.

  Batches of 16: every ReLU input or max-pool pair within rounding of a tie
  may fall either way in the two frameworks and moves the runs apart by
  ~1e-4 of a gradient, after which they drift (bigger batches meet more of them).
  """

  def make(steps, **overrides):
    overrides = {'dropout_rate': 0.0, 'batch_size': 16, 'train_subset': 256, **overrides}
    config = bench.recipe_config(WIDTH, 0, **overrides)
    mesh = parallel.data_mesh()
    data = bench.open_data(config, mesh, {'data_dir': str(cifar10_data_dir), 'raw_dir': None})
    rate = bench.recipe_schedule(config, data.steps_per_epoch())
    model = bench.build_model(config)
    twin = bench.TorchRun(bench.torch_twin(model), config, rate)
    toolkit = bench.ToolkitRun(model, config, rate, mesh)
    return toolkit, twin, list(bench.train_batches(data, steps))

  return make


def _relative(a, b) -> float:
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _toolkit_state(run) -> dict[str, dict[str, np.ndarray]]:
  params = nnx.to_pure_dict(jax.device_get(run.params))
  stats = nnx.to_pure_dict(jax.device_get(nnx.filter_state(run.rest, nnx.BatchStat)))
  merged = {
    layer: {k: np.asarray(v) for k, v in leaves.items()} for layer, leaves in params.items()
  }
  for layer, leaves in stats.items():
    merged[layer].update({k: np.asarray(v) for k, v in leaves.items()})
  return merged


def test_first_step_same_loss_gradients_weights_and_statistics(bench, run_pair, torch):
  # The full rate at once: under the recipe's warm-up the first update is 1/200 of it,
  # too small next to the weights for (before - after) / rate to hold 1e-3.
  toolkit, twin, [(images, labels)] = run_pair(1, warmup_steps=0)
  before = _toolkit_state(toolkit)
  twin_images, twin_labels = bench.to_torch(images, labels)
  np.testing.assert_array_equal(twin_images.numpy().transpose(0, 2, 3, 1), np.asarray(images))
  ours = float(toolkit.step(0, images, labels))
  theirs = float(twin.step(0, twin_images, twin_labels))
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)
  assert 2.0 < ours < 2.6, f'first loss {ours}: not near ln 10'
  rate = np.float32(twin.rate(0))
  after, twin_after = _toolkit_state(toolkit), bench.torch_state_as_jax(twin.model)
  layers = [(name, m) for name, m in twin.model.named_children() if hasattr(m, 'weight')]
  assert len(layers) == 13 + 13 + 3, [name for name, _ in layers]  # convs, batch norms, fc6-8
  for layer, module in layers:
    leaves = {'kernel' if module.weight.dim() > 1 else 'scale': module.weight, 'bias': module.bias}
    for leaf, weight in leaves.items():
      # SGD with momentum, first step: the update is -rate * gradient (penalty included).
      ours = (before[layer][leaf] - after[layer][leaf]) / rate
      theirs = bench.jax_layout(weight.grad)
      if layer.startswith('conv') and leaf == 'bias':
        # A batch norm follows: the bias shifts its input and its mean alike, no gradient.
        scale = np.abs(bench.jax_layout(module.weight.grad)).max()
        assert np.abs(ours).max() < 1e-4 * scale and np.abs(theirs).max() < 1e-4 * scale, layer
        continue
      assert _relative(ours, theirs) < 1e-3, f'{layer}/{leaf}: gradients differ'
    if layer.startswith('bn'):
      np.testing.assert_allclose(
        after[layer]['mean'], twin_after[layer]['mean'], rtol=1e-5, atol=1e-7, err_msg=layer
      )
      # Both keep 0.99 of the old running variance (1 at the start) and add 0.01 of the
      # batch's: flax the biased variance, torch the unbiased one. Each channel's
      # statistics average examples x positions: 32x32 in block 1, 2x2 in block 5.
      count = images.shape[0] * (images.shape[1] // 2 ** (int(layer[2]) - 1)) ** 2
      keep = 1 - module.momentum
      biased = (after[layer]['var'] - keep) / (1 - keep)
      unbiased = (twin_after[layer]['var'] - keep) / (1 - keep)
      np.testing.assert_allclose(biased, unbiased * (count - 1) / count, rtol=1e-4, err_msg=layer)


def test_a_few_steps_with_warm_up_and_a_strong_penalty_stay_together(bench, run_pair):
  # A penalty 100x the recipe's: a different one (biases included, no 1/2) would show.
  toolkit, twin, batches = run_pair(3, warmup_steps=3, regularization_strength=0.05)
  start = _toolkit_state(toolkit)
  rates = [twin.rate(k) for k in range(4)]
  assert rates[0] < rates[1] < rates[2] and rates[2] > rates[3], rates
  for index, (images, labels) in enumerate(batches):
    twin_images, twin_labels = bench.to_torch(images, labels)
    assert toolkit.fc6_live(images) == twin.fc6_live(twin_images), f'step {index}'
    ours = float(toolkit.step(index, images, labels))
    theirs = float(twin.step(index, twin_images, twin_labels))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, err_msg=f'loss of step {index}')
  after, twin_after = _toolkit_state(toolkit), bench.torch_state_as_jax(twin.model)
  for layer, leaves in twin_after.items():
    for leaf in ('kernel', 'scale', 'bias'):
      if leaf not in leaves or (layer.startswith('conv') and leaf == 'bias'):
        continue
      # Where each weight moved: a wrong momentum, rate or penalty moves it O(1) elsewhere.
      ours, theirs = after[layer][leaf] - start[layer][leaf], leaves[leaf] - start[layer][leaf]
      assert _relative(ours, theirs) < 1e-3, f'{layer}/{leaf} moved elsewhere'


def test_the_old_classifier_is_redrawn_he_and_the_rest_kept(bench):
  config = bench.recipe_config(WIDTH, 0)
  new = nnx.to_pure_dict(nnx.state(bench.build_model(config), nnx.Param))
  old = nnx.to_pure_dict(
    nnx.state(bench.build_model(config, nnx.initializers.he_normal()), nnx.Param)
  )
  for layer in new:
    for leaf in new[layer]:
      same = np.array_equal(new[layer][leaf], old[layer][leaf])
      assert same == (layer not in bench.CLASSIFIER or leaf == 'bias'), f'{layer}/{leaf}'
  for layer in bench.CLASSIFIER:
    kernel = np.asarray(old[layer]['kernel'])
    std = np.sqrt(2 / kernel.shape[0])
    assert 0.8 * std < kernel.std() < 1.1 * std, f'{layer}: std {kernel.std()}, He {std}'
    bound = 1 / np.sqrt(kernel.shape[0])
    assert np.abs(np.asarray(new[layer]['kernel'])).max() <= bound, layer


def test_window_means(bench):
  assert bench.window_means([4.0, 2.0, 1.0, 3.0, 5.0], 2) == [(1, 2, 3.0), (3, 4, 2.0), (5, 5, 5.0)]


def test_the_timed_model_passes_are_the_same_computation_in_both(bench, run_pair):
  # The timing part times each model's forward and forward + backward alone: they must
  # compute the same loss and the same gradients, or the two times are not comparable.
  _, _, [(images, labels)] = run_pair(1)
  config = bench.recipe_config(WIDTH, 0, dropout_rate=0.0, batch_size=16)
  model = bench.build_model(config)
  twin = bench.torch_twin(model)
  twin.train()
  ours = bench.model_passes(model, config, images, labels)
  theirs = bench.torch_passes(twin)
  twin_images, twin_labels = bench.to_torch(images, labels)
  loss = float(ours['forward'](images, labels))
  twin_loss = float(
    bench.torch.nn.functional.cross_entropy(twin(twin_images), twin_labels).detach()
  )
  np.testing.assert_allclose(loss, twin_loss, rtol=1e-5)
  grads = nnx.to_pure_dict(jax.device_get(ours['forward + backward'](images, labels)))
  theirs['forward + backward'](twin_images, twin_labels)
  for layer in ('conv1_1', 'conv3_2', 'fc6', 'fc8'):
    twin_grad = bench.jax_layout(getattr(twin, layer).weight.grad)
    assert _relative(np.asarray(grads[layer]['kernel']), twin_grad) < 1e-3, layer
