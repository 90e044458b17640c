"""Data parallelism: a step sharded over 8 devices equals the single-device step; two processes.

JAX fixes the number of CPU devices when it initialises, so the 8-device
checks run in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: this file, run as a
script, performs them (plain asserts) and the test checks that it succeeded.
The same way, two processes of this file joined by ``jax.distributed`` (one
CPU device each, gloo collectives) check what only several processes show:
the order of what they write into shared folders (a dataset opened by
process 0 first, a workdir written by process 0 once both have checked it, a
run seeded from a dense one by process 0 alone), the comparison of their
replicas, error rates over a batch whose padding is one process's share,
and a checkpoint saved by both and read back by one. The whole pipeline on
two processes: ``tests/scripts/test_prune_vgg_two_processes.py``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import traceback

import jax
import numpy as np
import pytest

from pruning.experiment import checkpoints, parallel
from pruning.experiment.config import from_recipe

RECIPES = pathlib.Path(__file__).resolve().parents[3] / 'scripts' / 'configs'

DEVICES = 8
TWO_PROCESS_WEIGHTS = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_sharded_step_equals_single_device_step_on_8_cpu_devices():
  env = {
    **os.environ,
    # Without backend optimisations: compiling is most of the time, and both sides
    # of every comparison compile alike.
    'XLA_FLAGS': f'--xla_force_host_platform_device_count={DEVICES} --xla_backend_optimization_level=0',
    'JAX_PLATFORMS': 'cpu',
  }
  cache = jax.config.jax_compilation_cache_dir
  if cache:
    env['JAX_COMPILATION_CACHE_DIR'] = cache
  done = subprocess.run(
    [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, f'8-device checks failed:\n{done.stdout}\n{done.stderr}'
  assert 'all 8-device checks passed' in done.stdout


def test_local_batch_size_names_the_batch_and_the_devices():
  mesh = parallel.data_mesh(jax.devices()[:1])
  assert parallel.local_batch_size(12, mesh) == 12
  global_images, global_labels = parallel.global_batch(mesh, np.zeros((4, 2)), np.arange(4))
  assert global_images.shape == (4, 2)
  assert global_labels.sharding.spec == jax.sharding.PartitionSpec('data')


@pytest.mark.parametrize(
  ('kwargs', 'message'),
  [
    ({'num_processes': 2, 'process_id': 1}, 'need a coordinator_address'),
    (
      {'coordinator_address': 'host:1234', 'num_processes': 2},
      'needs num_processes and process_id',
    ),
    (
      {'coordinator_address': 'host:1234', 'num_processes': 2, 'process_id': 2},
      'process_id is 2; expected 0..1',
    ),
  ],
)
def test_initialize_checks_its_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    parallel.initialize(**kwargs)


def test_two_processes_order_their_writes_agree_on_values_and_save_together(
  run_processes, free_port, tmp_path
):
  address = f'127.0.0.1:{free_port()}'
  command = [sys.executable, __file__, 'two-processes', address]
  outputs = run_processes([[*command, str(i), str(tmp_path)] for i in range(2)], timeout=180)
  for output in outputs:
    assert 'all two-process checks passed' in output, output
  # What two processes saved together, one process reads whole: as numpy arrays.
  restored = checkpoints.restore_to_host(tmp_path / 'checkpoint')
  np.testing.assert_array_equal(restored['params']['w']['value'], TWO_PROCESS_WEIGHTS)
  params, _ = checkpoints.load_dense(
    tmp_path / 'checkpoint', {'w': np.zeros((2, 3), np.float32)}, {}
  )
  np.testing.assert_array_equal(params['w'], TWO_PROCESS_WEIGHTS)


# --- run in the 8-device subprocess --------------------------------------------------------------


def _named(tree):
  def host(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    return parallel.fetch(leaf)

  return {
    jax.tree_util.keystr(path, simple=True, separator='/'): host(leaf)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def _two_steps(mesh, images, labels, eval_batch):
  """Two masked train steps of a tiny VGG-16-CIFAR (batch norm, dropout) on ``mesh``."""
  import optax
  from flax import nnx

  from models import create_model
  from pruning import criteria, masks, optimizer
  from pruning.experiment import steps

  model = create_model('vgg16_cifar', nnx.Rngs(0), width=1 / 16, batch_norm=True)
  tx = optimizer.masked_optimizer(optax.sgd(0.05, momentum=0.9))
  compiled = steps.compile_steps(model, tx, steps.penalty('l2', 5e-4), mesh)
  params, rest = compiled.params, compiled.rest
  initial = _named(params)
  opt_state = parallel.replicate(tx.init(params), mesh)
  batch = parallel.global_batch(mesh, images, labels)
  assert batch[0].sharding.spec == jax.sharding.PartitionSpec('data')
  assert len(batch[0].addressable_shards) == mesh.devices.size
  losses, mask = [], None
  # Kept fractions 0.5 then 0.8 put this network (fc6 alive since the classifier's
  # initialisation changed) on a knife edge: 1 and 4 devices agree to 1e-6, 2 and 8
  # likewise, but the two pairs differ by 1e-3 of the scale in three batch-norm biases
  # after step 2, while 0.3/0.6, 0.5/0.5 and 0.8/0.8 agree to 1e-6 between 1 and 2
  # devices, as does 0.5/0.8 with dropout off. A reordered float32 sum flips a discrete choice
  # (a ReLU or max-pool at a tie) there; it is not a sharding error, which would show
  # at every kept fraction.
  for sparsity in (0.3, 0.6):
    host = jax.tree.map(parallel.fetch, params)
    mask = parallel.replicate(criteria.sparsity_mask(host, sparsity, mask=mask), mesh)
    opt_state = optimizer.replace_mask(opt_state, mask)
    params = masks.apply_mask(params, mask)
    params, opt_state = parallel.replicate((params, opt_state), mesh)
    params, rest, opt_state, metrics = compiled.train(params, rest, opt_state, *batch)
    losses.append(float(parallel.fetch(metrics['loss'])))
  errors = compiled.count_errors(params, rest, *parallel.global_batch(mesh, *eval_batch))
  for leaf in jax.tree.leaves(params):
    assert leaf.sharding.is_fully_replicated
  return {
    'initial': initial,
    'params': _named(params),
    'rest': _named(rest),
    'mask': _named(mask),
    'opt_state': _named(optimizer.get_mask(opt_state)),
    'losses': losses,
    'errors': int(parallel.fetch(errors[1])),
    'compiles': compiled.train._cache_size(),
  }


def _check_steps():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(32, 32, 32, 3)).astype(np.float32)
  labels = rng.integers(0, 10, 32).astype(np.int32)
  valid = np.arange(24) < 21  # a padded evaluation batch
  eval_batch = (images[:24], labels[:24], valid)
  sharded = _two_steps(parallel.data_mesh(), images, labels, eval_batch)
  single = _two_steps(parallel.data_mesh(jax.devices()[:1]), images, labels, eval_batch)

  # The new mask of the second round did not recompile the sharded step.
  assert sharded['compiles'] == 1, sharded['compiles']
  np.testing.assert_allclose(sharded['losses'], single['losses'], rtol=1e-5)
  assert sharded['errors'] == single['errors']
  for name, expected in single['mask'].items():
    np.testing.assert_array_equal(sharded['mask'][name], expected, err_msg=name)
    np.testing.assert_array_equal(sharded['opt_state'][name], expected, err_msg=name)
  kernels = 0
  for name, expected in single['params'].items():
    got = sharded['params'][name]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=name)
    kernel_mask = single['mask'].get(name.removesuffix('/value'))
    if kernel_mask is not None:
      kernels += 1
      # Pruned weights are exactly 0.0 on both, kept ones moved.
      assert np.all(got[~kernel_mask] == 0.0) and np.all(expected[~kernel_mask] == 0.0), name
      assert kernel_mask.any(), name
      for run in (sharded, single):
        kept = run['params'][name][kernel_mask]
        assert np.all(kept != run['initial'][name][kernel_mask]), name
  assert kernels == len(single['mask']) > 0, (kernels, sorted(single['mask']))
  for name, expected in single['rest'].items():
    np.testing.assert_allclose(sharded['rest'][name], expected, rtol=1e-4, atol=1e-6, err_msg=name)


def _check_pipeline():
  """The whole loop on 8 devices: sharded batches, padded evaluation, exact masks."""
  from pruning.data import datasets
  from pruning.experiment import pipeline

  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (296, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, 296).astype(np.int32)
  datasets.DATASETS['mnist'] = lambda options: datasets.array_input(
    (images[:256], labels[:256]), (images[256:], labels[256:]), options
  )
  config = from_recipe(
    RECIPES / 'lenet300.py',
    batch_size=32,
    eval_batch_size=16,
    dense_epochs=1,
    rounds=1,
    retrain_epochs=1,
  )
  runs = {}
  for devices in (DEVICES, 1):
    with tempfile.TemporaryDirectory() as workdir:
      mesh = parallel.data_mesh(jax.devices()[:devices])
      runs[devices] = pipeline.train_and_evaluate(config, workdir, progress=False, mesh=mesh)
  sharded, single = runs[DEVICES], runs[1]
  assert [r['event'] for r in sharded['records']] == [r['event'] for r in single['records']]
  assert any('kept' in r for r in single['records'])
  assert any('train_loss' in r for r in single['records'])
  for a, b in zip(sharded['records'], single['records'], strict=True):
    assert a.get('kept') == b.get('kept')
    if 'train_loss' in a:
      np.testing.assert_allclose(a['train_loss'], b['train_loss'], rtol=1e-4)
  stats = sharded['mask_stats'].overall
  zeros = sum(
    int((parallel.fetch(leaf) == 0).sum())
    for name, leaf in _named(sharded['params']).items()
    if 'kernel' in name
  )
  assert zeros == stats.total - stats.kept

  try:
    bad = from_recipe(RECIPES / 'lenet300.py', batch_size=12, dense_epochs=1, rounds=0)
    pipeline.train_and_evaluate(bad, tempfile.mkdtemp(), progress=False)
  except ValueError as error:
    assert 'batch_size is 12' in str(error) and 'the 8 devices' in str(error), error
  else:
    raise AssertionError('a batch of 12 on 8 devices was accepted')


def _check_resident():
  """Device-resident batches on 8 devices: the 1-device batches, each device holding its rows."""
  from pruning.data import resident
  from pruning.data.images import ImageSource, dataset_info

  info = dataset_info('cifar10')
  rng = np.random.default_rng(2)
  pixels = rng.integers(0, 256, (70, *info.image_shape), dtype=np.uint8)
  source = ImageSource([{'image': p, 'label': i % 10} for i, p in enumerate(pixels)], info)
  test = source.subset(np.arange(50, 70))
  batches = {}
  for devices in (DEVICES, 1):
    data = resident.resident_input(
      source.subset(np.arange(50)),
      {'test': test},
      mesh=parallel.data_mesh(jax.devices()[:devices]),
      batch_size=16,
      eval_batch_size=16,
      seed=5,
      augment=True,
    )
    train = list(data.train_epoch(2))
    evaluation = list(data.evaluation('test'))
    x = train[0][0]
    assert len(x.addressable_shards) == devices, x.sharding
    assert {s.data.shape[0] for s in x.addressable_shards} == {16 // devices}
    batches[devices] = [tuple(np.asarray(a) for a in b) for b in train + evaluation]
  for sharded, single in zip(batches[DEVICES], batches[1], strict=True):
    for a, b in zip(sharded, single, strict=True):
      np.testing.assert_array_equal(a, b)
  try:
    resident.resident_input(
      source, {}, mesh=parallel.data_mesh(), batch_size=12, eval_batch_size=16, seed=0, augment=True
    )
  except ValueError as error:
    assert 'batch_size is 12' in str(error) and 'the 8 mesh devices' in str(error), error
  else:
    raise AssertionError('a resident batch of 12 on 8 devices was accepted')


# --- run in each of the two processes ------------------------------------------------------------


def _check_two_processes(address: str, process_id: int, shared: pathlib.Path) -> None:
  """Plain asserts, in each of two processes sharing the folder ``shared``."""
  parallel.initialize(address, 2, process_id)
  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 2, 1)
  assert jax.process_index() == process_id
  mesh = parallel.data_mesh()
  _check_process_zero_first(process_id, shared)
  _check_replicated(process_id)
  _check_error_rates(process_id, mesh)
  _check_checkpoint_saved_together(mesh, shared)
  _check_run_start(process_id, shared)
  parallel.barrier('checked')
  print('all two-process checks passed')


def _check_process_zero_first(process_id: int, shared: pathlib.Path) -> None:
  # Process 1 calls only once process 0 has returned (the sleep would let it
  # overtake otherwise), and finds what process 0 wrote.
  def mark():
    if process_id == 0:
      time.sleep(1.0)
    (shared / f'mark{process_id}').touch()
    return sorted(path.name for path in shared.glob('mark*'))

  seen = parallel.process_zero_first(mark, 'marking')
  assert seen == ['mark0', 'mark1'][: process_id + 1], seen

  # A failure on process 0 is raised there, and reported on process 1, which does not call.
  def fail():
    if process_id == 0:
      raise ValueError('no data here')
    raise AssertionError('process 1 called after process 0 failed')

  try:
    parallel.process_zero_first(fail, 'opening the data')
  except (ValueError, RuntimeError) as error:
    expected = 'no data here' if process_id == 0 else 'opening the data failed on process 0'
    assert expected in str(error), error
  else:
    raise AssertionError('a failure on process 0 was not raised')


def _check_replicated(process_id: int) -> None:
  parallel.check_replicated({'a': np.arange(3), 'b': None, 'key': jax.random.key(0)}, 'trees')
  try:
    parallel.check_replicated({'a': np.arange(3), 'b': np.full(2, process_id)}, 'the masks')
  except RuntimeError as error:
    assert 'the masks differ between the 2 processes' in str(error), error
    assert "['b']" in str(error), error
  else:
    raise AssertionError('different values on the two processes passed check_replicated')


def _check_error_rates(process_id: int, mesh) -> None:
  """Five test examples, global batches of 4: the second batch's one example is process 0's.

  Process 1 holds padding only there; the rate is over the 5 examples on both.
  """
  import jax.numpy as jnp
  from flax import nnx

  from pruning.data import datasets
  from pruning.experiment import pipeline, steps

  class Identity(nnx.Module):
    def __init__(self):
      self.scale = nnx.Param(jnp.ones(()))

    def __call__(self, x):
      return x * self.scale

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 10), dtype=np.uint8)
  labels = rng.integers(0, 10, 5).astype(np.int32)
  options = datasets.InputOptions(
    batch_size=2, eval_batch_size=4, seed=0, shard_index=process_id, shard_count=2
  )
  data = datasets.array_input((images, labels), (images, labels), options)
  graphdef, params, rest = nnx.split(Identity(), nnx.Param, ...)
  params, rest = parallel.replicate((params, rest), mesh)
  count = steps.error_count_step(graphdef, mesh)
  rate = pipeline.error_rates(count, params, rest, data, 'test', mesh)[1]
  assert rate == 100.0 * np.mean(np.argmax(images, axis=1) != labels), rate


def _check_checkpoint_saved_together(mesh, shared: pathlib.Path) -> None:
  """Saved by both processes together; read back whole on each (and by the test, on one)."""
  import orbax.checkpoint as ocp

  tree = {'params': {'w': {'value': parallel.replicate(TWO_PROCESS_WEIGHTS, mesh)}}, 'round': 0}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save((shared / 'checkpoint').absolute(), tree)
  params, _ = checkpoints.load_dense(shared / 'checkpoint', {'w': np.zeros((2, 3), np.float32)}, {})
  np.testing.assert_array_equal(params['w'], TWO_PROCESS_WEIGHTS)


def _check_run_start(process_id: int, shared: pathlib.Path) -> None:
  """A run's start: process 0 opens (prepares) the data first, and alone writes the workdir.

  It writes ``config.json`` only once process 1 has checked the workdir,
  however late process 1 comes, and seeds a run from a dense one alone. Masks
  chosen differently on the two processes stop the run.
  """
  from pruning import rounds
  from pruning.data import datasets
  from pruning.experiment import pipeline

  rng = np.random.default_rng(0)
  digits = (rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8), np.arange(8) % 10)

  def open_standin(options):
    if options.shard_index == 0:
      time.sleep(1.0)
      (shared / 'opened').touch()
    else:
      assert (shared / 'opened').exists(), 'process 1 opened the data before process 0 did'
    return datasets.array_input(digits, digits, options)

  datasets.DATASETS['mnist'] = open_standin
  dense = from_recipe(
    RECIPES / 'lenet300.py', batch_size=4, eval_batch_size=4, dense_epochs=1, rounds=0
  )
  pipeline.prepare(dense, shared / 'first', progress=False)
  datasets.DATASETS['mnist'] = lambda options: datasets.array_input(digits, digits, options)
  if process_id == 1:
    time.sleep(3.0)  # time enough for process 0 to write config.json, were it not waiting
  pipeline.run_prepared(pipeline.prepare(dense, shared / 'second', progress=False))
  # Seeded from that dense run: process 0 copies its round 0, both restore it.
  pruned = dataclasses.replace(dense, rounds=1, retrain_epochs=1)
  result = pipeline.train_and_evaluate(
    pruned, shared / 'third', dense_from=shared / 'second', progress=False
  )
  assert [(r['round'], r['event']) for r in result['records']] == [
    (0, 'start'),
    (0, 'epoch'),
    (0, 'round_end'),
    (1, 'start'),
    (1, 'pruned'),
    (1, 'epoch'),
    (1, 'round_end'),
  ], result['records']

  # Masks that differ between the processes stop the run before it trains on them.
  def prune_round_differently(host_params, mask, *args):
    new, group, targets = prune_round(host_params, mask, *args)
    if process_id == 1:
      kernel = new['fc1']['kernel']
      new['fc1']['kernel'] = kernel.at[0, 0].set(~kernel[0, 0])
    return new, group, targets

  prune_round, rounds.prune_round = rounds.prune_round, prune_round_differently
  try:
    pipeline.train_and_evaluate(
      pruned, shared / 'fourth', dense_from=shared / 'second', progress=False
    )
  except RuntimeError as error:
    assert 'the masks of round 1 differ between the 2 processes' in str(error), error
    assert "['fc1/kernel']" in str(error), error
  else:
    raise AssertionError('the run trained on masks that differ between the processes')
  finally:
    rounds.prune_round = prune_round


if __name__ == '__main__' and sys.argv[1:2] == ['two-processes']:
  address, process_id, shared = sys.argv[2:]
  try:
    _check_two_processes(address, int(process_id), pathlib.Path(shared))
  except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    # Not an ordinary exit: at exit, jax.distributed waits for the other process
    # (up to 5 minutes), which may itself be waiting for this one.
    os._exit(1)
elif __name__ == '__main__':
  assert jax.device_count() == DEVICES, jax.devices()
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  _check_steps()
  _check_pipeline()
  _check_resident()
  print(f'all {DEVICES}-device checks passed')
