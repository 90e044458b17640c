"""pruning.experiment.config: an option that would do nothing in its run is an error naming the mode it needs."""

import dataclasses
import math
import pathlib
import re
import sys

import pytest

from pruning.experiment import config as run_config
from pruning.experiment.config import (
  IdleOptionError,
  PruneConfig,
  check_options,
  from_recipe,
)

RECIPES = pathlib.Path(__file__).resolve().parents[3] / 'scripts' / 'configs'

QUALITY = {'fc1': 1.0, 'fc2': 1.0, 'fc3': 1.0}


@pytest.mark.parametrize(
  ('model', 'overrides', 'message'),
  [
    (
      'lenet300',
      {'quality': {'fc1': 1.0}},
      "quality needs criterion='quality' (the criterion is 'sparsity', which selects by count)",
    ),
    (
      'lenet300',
      {'criterion': 'random', 'quality': {'fc1': 1.0}},
      "quality needs criterion='quality' (the criterion is 'random', which selects by count)",
    ),
    (
      'lenet300',
      {'std_of': 'kept'},
      "std_of needs criterion='quality' (the criterion is 'sparsity', which selects by count)",
    ),
    (
      'lenet5',
      {'regularization': 'none', 'regularization_strength': 1e-3},
      "regularization_strength needs regularization='l2' or 'l1' (the regularization is 'none')",
    ),
    (
      'vgg16_cifar',
      {'dataset': 'synthetic', 'augment': False},
      "augment needs dataset='cifar10' (the dataset is 'synthetic', which is not augmented)",
    ),
    (
      'lenet5',
      {'weight_decay': 0.05},
      "weight_decay needs optimizer='adamw' "
      "(the optimizer is 'sgd', which regularises through regularization)",
    ),
    (
      'lenet300',
      {'dataset': 'synthetic', 'augment': True},
      "augment needs dataset='mnist' (the dataset is 'synthetic', which is not augmented)",
    ),
  ],
)
def test_a_value_no_recipe_sets_that_would_do_nothing_is_an_error(model, overrides, message):
  with pytest.raises(IdleOptionError, match=f'^{re.escape(message)}$'):
    from_recipe(RECIPES / f'{model}.py', **overrides)
  with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
    PruneConfig(**{**run_config.load_recipe(RECIPES / f'{model}.py'), **overrides})


@pytest.mark.parametrize(
  'config',
  [
    pytest.param(
      lambda: from_recipe(RECIPES / 'vgg16.py', retrain_schedule='rewind'), id='vgg16-rewind'
    ),
    pytest.param(
      lambda: from_recipe(RECIPES / 'lenet300.py', retrain_lr_scale=0.5), id='scale-unchecked'
    ),
    pytest.param(
      lambda: from_recipe(
        RECIPES / 'lenet300.py', criterion='quality', quality=QUALITY, std_of='kept'
      ),
      id='quality',
    ),
    # The dense half of a from-dense pair carries the pruning fields of the runs to come.
    pytest.param(
      lambda: from_recipe(RECIPES / 'lenet300.py', rounds=0, criterion='quality', quality=QUALITY),
      id='dense-half',
    ),
    # The pipeline puts the targets auto_sensitivity chose into the config.
    pytest.param(
      lambda: dataclasses.replace(
        from_recipe(
          RECIPES / 'lenet300.py', criterion='quality', auto_sensitivity=1.0, validation_size=10
        ),
        quality=QUALITY,
      ),
      id='auto-targets',
    ),
    pytest.param(lambda: PruneConfig(regularization='none', rounds=0), id='no-regularization'),
    pytest.param(lambda: from_recipe(RECIPES / 'vgg16_cifar.py', augment=False), id='no-augment'),
  ],
)
def test_configs_built_in_code_that_recipes_fill_still_build(config):
  assert isinstance(config(), PruneConfig)


@pytest.mark.parametrize('model', sorted(path.stem for path in RECIPES.glob('*.py')))
def test_every_recipe_field_given_explicitly_acts(model):
  recipe = run_config.load_recipe(RECIPES / f'{model}.py')
  check_options(from_recipe(RECIPES / f'{model}.py'), set(recipe) - {'model'})


@pytest.mark.parametrize(
  ('model', 'overrides', 'given', 'message', 'flags'),
  [
    (
      'lenet300',
      {'retrain_lr_scale': 0.5},
      {'retrain_lr_scale'},
      "retrain_lr_scale needs retrain_schedule='fine-tune' (the retrain schedule is 'rewind')",
      "--retrain-lr-scale needs --retrain-schedule fine-tune (the retrain schedule is 'rewind')",
    ),
    (
      'vgg16',
      {'retrain_schedule': 'rewind'},
      {'retrain_schedule', 'retrain_lr_scale'},
      "retrain_lr_scale needs retrain_schedule='fine-tune' (the retrain schedule is 'rewind')",
      "--retrain-lr-scale needs --retrain-schedule fine-tune (the retrain schedule is 'rewind')",
    ),
    (
      'lenet300',
      {'criterion': 'quality', 'quality': QUALITY},
      {'criterion', 'quality', 'density'},
      "density needs criterion='sparsity' or 'random' (the criterion is 'quality', which selects by threshold)",
      "--density needs --criterion sparsity or random (the criterion is 'quality', which selects by threshold)",
    ),
    (
      'lenet300',
      {'auto_sensitivity': 1.0, 'validation_size': 10},
      {'auto_sensitivity', 'validation_size', 'density'},
      "density needs auto_sensitivity=None (the sensitivity curves choose every layer's density)",
      "--density needs no --auto-sensitivity (the sensitivity curves choose every layer's density)",
    ),
    (
      'lenet300',
      {'criterion': 'quality', 'quality': QUALITY, 'auto_sensitivity': 1.0, 'validation_size': 10},
      {'criterion', 'quality'},
      "quality needs auto_sensitivity=None (the sensitivity curves choose every layer's quality)",
      "--quality needs no --auto-sensitivity (the sensitivity curves choose every layer's quality)",
    ),
    (
      'lenet5',
      {'rounds': 0, 'criterion': 'random'},
      {'rounds', 'criterion'},
      'criterion needs rounds >= 1 (with 0 rounds the run only trains the dense network)',
      '--criterion needs --rounds >= 1 (with 0 rounds the run only trains the dense network)',
    ),
    (
      'lenet300',
      {'retrain_epochs': 0, 'retrain_schedule': 'fine-tune'},
      {'retrain_epochs', 'retrain_schedule'},
      'retrain_schedule needs retrain_epochs >= 1 (with 0 retraining epochs nothing is retrained)',
      '--retrain-schedule needs --retrain-epochs >= 1 '
      '(with 0 retraining epochs nothing is retrained)',
    ),
    (
      'lenet300',
      {'alternate': True},
      {'alternate'},
      'alternate needs a model with both CONV and FC layers (lenet300 has only FC layers)',
      '--alternate needs a model with both CONV and FC layers (lenet300 has only FC layers)',
    ),
    (
      'vgg16',
      {'dataset': 'synthetic'},
      {'dataset', 'input_workers'},
      "input_workers needs dataset='imagenet2012' "
      "(the dataset is 'synthetic', which is not read through grain)",
      '--input-workers needs --dataset imagenet2012 '
      "(the dataset is 'synthetic', which is not read through grain)",
    ),
    (
      'vgg16_cifar',
      {'dataset': 'synthetic'},
      {'data_dir'},
      "data_dir needs dataset='cifar10' (the dataset is 'synthetic', made in memory)",
      "--data-dir needs --dataset cifar10 (the dataset is 'synthetic', made in memory)",
    ),
    (
      'lenet300',
      {'optimizer': 'adamw', 'momentum': 0.8},
      {'optimizer', 'momentum'},
      "momentum needs optimizer='sgd' (the optimizer is 'adamw')",
      "--momentum needs --optimizer sgd (the optimizer is 'adamw')",
    ),
    (
      'vgg16',
      {},
      {'raw_dir'},
      'raw_dir needs a model that takes mnist or cifar10 '
      "(the dataset is 'imagenet2012', which is not prepared from raw files)",
      '--raw-dir needs a model that takes mnist or cifar10 '
      "(the dataset is 'imagenet2012', which is not prepared from raw files)",
    ),
  ],
)
def test_check_options_names_the_option_and_the_mode_it_needs(
  model, overrides, given, message, flags
):
  config = from_recipe(RECIPES / f'{model}.py', **overrides)
  with pytest.raises(IdleOptionError, match=f'^{re.escape(message)}$') as caught:
    check_options(config, given)
  assert isinstance(caught.value, ValueError)
  assert caught.value.command_line() == flags


def test_command_line_spells_renamed_flags():
  config = from_recipe(RECIPES / 'vgg16_cifar.py', rounds=0, alternate=False)
  with pytest.raises(IdleOptionError) as caught:
    check_options(config, {'rounds', 'alternate'})
  assert caught.value.command_line({'alternate': '--no-alternate'}) == (
    '--no-alternate needs --rounds >= 1 (with 0 rounds the run only trains the dense network)'
  )


def test_options_that_act_pass():
  check_options(
    from_recipe(
      RECIPES / 'lenet5.py', alternate=True, retrain_schedule='fine-tune', retrain_lr_scale=0.5
    ),
    {'alternate', 'retrain_schedule', 'retrain_lr_scale', 'density', 'data_dir', 'raw_dir'},
  )
  check_options(
    from_recipe(RECIPES / 'lenet300.py', criterion='quality', quality=QUALITY, std_of='kept'),
    {'criterion', 'quality', 'std_of'},
  )
  check_options(from_recipe(RECIPES / 'vgg16.py'), {'input_workers', 'data_dir', 'augment'})
  check_options(from_recipe(RECIPES / 'vgg16_cifar.py'), {'raw_dir', 'input_workers'})


def test_an_unknown_option_name_is_an_error():
  with pytest.raises(ValueError, match=r"\['qualty'\] are neither PruneConfig fields"):
    check_options(from_recipe(RECIPES / 'lenet300.py'), {'qualty'})


@pytest.mark.parametrize(
  ('text', 'message'),
  [
    ('x = 1\n', r'has no get_config\(\) function'),
    ('def get_config():\n  return [1]\n', 'get_config\\(\\) returned list; expected a dict'),
    (
      "def get_config():\n  return {'model': 'lenet300', 'learning_rte': 0.1}\n",
      r"sets \['learning_rte'\], which are not PruneConfig fields",
    ),
    (
      'import no_such_module\n',
      "failed to load: ModuleNotFoundError: No module named 'no_such_module'",
    ),
  ],
)
def test_a_recipe_that_cannot_be_used_is_named(tmp_path, text, message):
  path = tmp_path / 'recipe.py'
  path.write_text(text)
  with pytest.raises(run_config.RecipeError, match=message):
    run_config.load_recipe(path)


def test_recipes_are_copied_and_may_build_on_a_sibling(tmp_path):
  (tmp_path / 'base.py').write_text("DENSITY = {'fc1': 0.1}\n")
  (tmp_path / 'child.py').write_text(
    "from base import DENSITY\n\ndef get_config():\n  return {'model': 'lenet300', 'density': DENSITY}\n"
  )
  first = run_config.load_recipe(tmp_path / 'child.py')
  first['density']['fc1'] = 0.9
  assert run_config.from_recipe(tmp_path / 'child.py').density == {'fc1': 0.1}
  assert str(tmp_path) not in sys.path  # the folder is importable only while loading
  # Another folder's sibling of the same name is its own.
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'base.py').write_text("DENSITY = {'fc2': 0.2}\n")
  (tmp_path / 'other' / 'child.py').write_text((tmp_path / 'child.py').read_text())
  assert run_config.load_recipe(tmp_path / 'other' / 'child.py')['density'] == {'fc2': 0.2}


@pytest.mark.parametrize(
  ('overrides', 'message'),
  [
    ({'optimizer': 'adam'}, "optimizer is 'adam'; expected 'sgd' or 'adamw'"),
    ({'optimizer': 'adamw', 'weight_decay': -0.1}, 'weight_decay is -0.1; expected a finite'),
    ({'optimizer': 'adamw', 'weight_decay': math.nan}, 'weight_decay is nan; expected a finite'),
    ({'optimizer': 'adamw', 'weight_decay': True}, 'weight_decay is True; expected a finite'),
  ],
)
def test_optimizer_fields_are_checked(overrides, message):
  with pytest.raises(ValueError, match=f'^{re.escape(message)}'):
    PruneConfig(rounds=0, **overrides)
  assert PruneConfig(rounds=0, optimizer='adamw', weight_decay=0.05).weight_decay == 0.05
