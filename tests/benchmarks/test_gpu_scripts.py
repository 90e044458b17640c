"""The one-call device scripts parse, and the full-width VGG run's recipe reaches 15x at full width."""

import pathlib
import subprocess

import pytest

from models.registry import model_costs
from pruning.experiment.config import from_recipe, load_recipe

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks'
GPU = BENCHMARKS / 'vgg_gpu'
RECIPE = GPU / 'full_width_recipe.py'


def test_the_recipe_prunes_full_width_vgg16_cifar_past_15x():
  config = from_recipe(RECIPE)
  assert (config.model, config.width, config.batch_norm, config.dtype) == (
    'vgg16_cifar',
    1.0,
    True,
    'bfloat16',
  )
  costs = model_costs('vgg16_cifar', batch_norm=True)
  assert set(config.density) == set(costs)  # every prunable layer has a target, no stray name
  weights = sum(cost.weights for cost in costs.values())
  kept = sum(costs[name].weights * density for name, density in config.density.items())
  assert weights == 15_239_872
  assert weights / kept == pytest.approx(16.24, abs=0.01)


def test_the_recipe_changes_only_what_its_docstring_says():
  recipe = load_recipe(RECIPE)
  base = load_recipe(GPU.parents[1] / 'scripts' / 'configs' / 'vgg16_cifar.py')
  changed = sorted(k for k in recipe if recipe[k] != base.get(k))
  assert changed == [
    'dense_epochs',
    'density',
    'dtype',
    'retrain_epochs',
    'rounds',
    'validation_size',
  ]
  sparser = sorted(k for k in recipe['density'] if recipe['density'][k] != base['density'][k])
  assert all(recipe['density'][k] < base['density'][k] for k in sparser)
  assert [k[:5] for k in sparser] == ['conv3'] * 3 + ['conv4'] * 3 + ['conv5'] * 3


@pytest.mark.parametrize(
  'script', ['vgg_gpu/full_width.sh', 'gpu/structured.sh', 'gpu/device_env.sh']
)
def test_the_device_scripts_parse(script):
  subprocess.run(['bash', '-n', str(BENCHMARKS / script)], check=True)
