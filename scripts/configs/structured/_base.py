"""What every structured recipe here shares: its dense sibling in ``scripts/configs``,
without the fields of single-weight pruning (they would do nothing with
``structure='channels'``)."""

import pathlib

from pruning.experiment.config import UNSTRUCTURED_FIELDS, load_recipe

DENSE_RECIPES = pathlib.Path(__file__).resolve().parents[1]


def dense_recipe(model: str) -> dict:
  """``scripts/configs/<model>.py``'s fields, less those of unstructured pruning."""
  recipe = load_recipe(DENSE_RECIPES / f'{model}.py')
  return {k: v for k, v in recipe.items() if k not in UNSTRUCTURED_FIELDS}
