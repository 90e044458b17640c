"""scripts/prune_structured.py: its recipes, a tiny run end to end (channels removed and the
smaller model saved), and a resumed finished run that does no more."""

import importlib.util
import pathlib

import pytest
from flax import nnx

from models import create_model, model_options
from pruning.structured import load_plan, load_pruned

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'scripts' / 'prune_structured.py'
TINY = [
  '--model=vgg16_cifar',
  '--width=0.0625',
  '--batch-size=32',
  '--eval-batch-size=48',
  '--dense-epochs=1',
  '--retrain-epochs=1',
  '--train-subset=128',
  '--test-subset=40',
  '--validation-size=0',
  '--no-progress',
]


def load_script():
  spec = importlib.util.spec_from_file_location('prune_structured', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize(
  ('model', 'criterion', 'scope', 'sparsity', 'round_to'),
  [
    ('resnet20', 'l1', 'per-group', 0.6, 8),  # widths XLA's CPU convolutions run fast
    ('resnet56', 'l1', 'per-group', 0.6, 8),
    ('vgg16_cifar', 'bn_scale', 'global', 0.7, 1),
    ('vit_cifar', 'taylor', 'isomorphic', 0.6, 1),
  ],
)
def test_each_recipe_removes_channels_from_its_dense_recipe(
  model, criterion, scope, sparsity, round_to
):
  script = load_script()
  config = script.build_config(script.parse_args(['--model', model]))
  assert (config.structure, config.structured_criterion) == ('channels', criterion)
  assert (config.structured_scope, config.structured_sparsity) == (scope, sparsity)
  assert config.round_to == round_to
  dense = script.build_config(script.parse_args(['--model', model, '--rounds', '0']))
  epochs = {'resnet20': 182, 'resnet56': 182, 'vgg16_cifar': 30, 'vit_cifar': 200}
  assert dense.dense_epochs == epochs[model]
  assert dense.optimizer == ('adamw' if model == 'vit_cifar' else 'sgd')
  assert config.density == {}  # the dense recipe's single-weight fields are left out


def test_tiny_vgg_run_saves_a_smaller_model_that_reloads(cifar10_data_dir, tmp_path):
  script = load_script()
  workdir = tmp_path / 'run'
  argv = ['--workdir', str(workdir), '--data-dir', str(cifar10_data_dir), *TINY]
  out = script.main(argv)
  last = out['final']
  assert (last['round'], last['event']) == (1, 'round_end')
  assert last['macs_ratio'] > 1 and last['params_ratio'] > 1
  record = load_plan(workdir / 'pruned')
  assert record['model'] == 'vgg16_cifar'
  full = create_model(
    'vgg16_cifar', nnx.Rngs(0), **model_options('vgg16_cifar', **record['options'])
  )
  smaller = load_pruned(workdir / 'pruned', full)
  widths = {name: group['width'] for name, group in record['groups'].items()}
  assert widths == last['widths']
  assert sum(widths.values()) < sum(group['size'] for group in record['groups'].values())
  assert smaller.fc8.kernel.shape[-1] == 10
  # A finished run resumed does no more work.
  again = script.main([*argv, '--resume'])
  assert again['final'] == out['final']


def test_tiny_vit_run_with_its_recipe_removes_heads_and_reloads(tmp_path):
  # The ViT recipe as it is (AdamW, Taylor scores, isomorphic scope) on a few synthetic
  # images: heads and MLP units leave, the residual stream stays whole.
  script = load_script()
  workdir = tmp_path / 'vit'
  argv = [
    *('--model', 'vit_cifar', '--dataset', 'synthetic', '--workdir', str(workdir)),
    *('--batch-size', '32', '--eval-batch-size', '32', '--train-subset', '64'),
    *('--test-subset', '32', '--validation-size', '32', '--dense-epochs', '1'),
    *('--warmup-steps', '1', '--rounds', '1', '--retrain-epochs', '1', '--no-progress'),
  ]
  last = script.main(argv)['final']
  assert last['macs_ratio'] > 1.5, last
  record = load_plan(workdir / 'pruned')
  widths = {name: group['width'] for name, group in record['groups'].items()}
  heads = [w for name, w in widths.items() if 'attention' in name]
  assert len(heads) == 6 and sum(heads) < 36, widths
  full = create_model('vit_cifar', nnx.Rngs(0), **model_options('vit_cifar', **record['options']))
  smaller = load_pruned(workdir / 'pruned', full)
  assert smaller.head.kernel.shape == (192, 10)  # the stream is kept whole
