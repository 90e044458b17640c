"""The command line of the prune scripts, generated from :class:`~pruning.experiment.config.PruneConfig`.

Every field of the configuration is a flag of the same name (``learning_rate``
-> ``--learning-rate``), with its type, choices and help taken from the
dataclass and its docstring, so no field is declared twice and both scripts
(``scripts/prune_lenet.py``, ``scripts/prune_vgg.py``) spell each concept the
same way. A run starts from a recipe file (``--config FILE``, or the recipe of
``--model`` in the scripts' ``configs/`` folder, as flax's examples do) and
the flags given override it.

A user's mistake (a bad value, an option the run would not use, a workdir
conflict, missing or damaged data) ends the command with one line on stderr
and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import pathlib
import re
import shlex
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pruning import criteria, structured
from pruning.data import datasets
from pruning.experiment import config as run_config

# The flags that are not configuration: where a run lives, how it is shown, which hosts.
RUN_FLAGS = (
  'config',
  'workdir',
  'resume',
  'from_dense',
  'data_dir',
  'raw_data',
  'input_workers',
  'epoch_checkpoints',
  'progress',
  'coordinator_address',
  'num_processes',
  'process_id',
)


def field_help() -> dict[str, str]:
  """Each field's description, read from the ``Attributes:`` block of PruneConfig's docstring."""
  doc = inspect.cleandoc(run_config.PruneConfig.__doc__ or '')
  block = doc.split('Attributes:', 1)[1] if 'Attributes:' in doc else ''
  out: dict[str, list[str]] = {}
  current = None
  for line in block.splitlines():
    match = re.match(r'^  (\w+): (.*)$', line)
    if match and match.group(1) in run_config.PruneConfig.__dataclass_fields__:
      current = match.group(1)
      out[current] = [match.group(2)]
    elif current and line.startswith('    '):
      out[current].append(line.strip())
    elif line.strip():
      current = None
  return {name: re.sub(r'``|:\w+:`~?|`', '', ' '.join(words)) for name, words in out.items()}


def _layer_values(text: str) -> dict[str, float]:
  try:
    return run_config.layer_values(text)
  except ValueError as error:
    raise argparse.ArgumentTypeError(str(error)) from None


def _names(text: str) -> dict[str, str]:
  """``'a=b,c='`` -> ``{'a': 'b', 'c': ''}``; ``'none'`` -> ``{}``."""
  if text.strip().lower() in ('', 'none'):
    return {}
  out = {}
  for item in text.split(','):
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise argparse.ArgumentTypeError(f'{item!r} is not NAME=VALUE')
    out[key.strip()] = value.strip()
  return out


def _layer_names(text: str) -> tuple[str, ...]:
  """``'conv1,conv2'`` -> ``('conv1', 'conv2')``; ``'none'`` -> ``()``."""
  if text.strip().lower() in ('', 'none'):
    return ()
  names = tuple(name.strip() for name in text.split(','))
  if not all(names):
    raise argparse.ArgumentTypeError(f'{text!r} is not LAYER,LAYER,...')
  return names


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
  def parse(text: str) -> Any:
    return None if text.strip().lower() == 'none' else kind(text)

  parse.__name__ = getattr(kind, '__name__', 'value')
  return parse


def _argument(name: str, hint: Any) -> dict[str, Any]:
  """``add_argument`` keywords for a field of type ``hint``."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  optional = origin in (typing.Union, types.UnionType) and type(None) in args
  if optional:
    (hint,) = [a for a in args if a is not type(None)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is bool:
    return {'action': argparse.BooleanOptionalAction}
  if origin is typing.Literal:
    return {'choices': list(args)}
  if origin in (Mapping, dict) or hint in (Mapping, dict):
    value = args[1] if len(args) == 2 else str
    if value is float:
      return {'type': _layer_values, 'metavar': 'LAYER=VALUE,...'}
    return {'type': _names, 'metavar': 'NAME=VALUE,...|none'}
  if origin is tuple:
    return {'type': _layer_names, 'metavar': 'LAYER,...|none'}
  kind = {int: int, float: float, str: str}.get(hint, str)
  return {'type': _optional(kind) if optional else kind, 'metavar': name.upper()}


# Fields whose values are names in a registry: a criterion registered or a dataset added
# is a choice of the command line with no change here.
_CHOICES: dict[str, Callable[[], Any]] = {
  'criterion': lambda: criteria.CRITERIA,
  'structured_criterion': lambda: structured.STRUCTURED_CRITERIA,
  'dataset': lambda: datasets.DATASETS,
}


def flag(name: str) -> str:
  """The command-line flag of a field or run option: ``--learning-rate``."""
  return '--' + name.replace('_', '-')


class Parser(argparse.ArgumentParser):
  """An ``ArgumentParser`` whose errors are one line on stderr and exit status 2 (no usage block)."""

  def error(self, message: str) -> typing.NoReturn:
    self.exit(2, f'{self.prog}: error: {message}\n')


# Each dataset's raw copy in a checkout's datasets folder (``../shared/datasets``), and the
# variable by which a user points the library at other files, which then wins.
RAW_COPIES = {
  'mnist': ('mnist', 'PRUNING_MNIST_DIR'),
  'cifar10': ('cifar10-jpeg.tar.gz', 'PRUNING_CIFAR10_PATH'),
}


def raw_copy(dataset: str, datasets_dir: str | os.PathLike[str]) -> str | None:
  """The raw copy of ``dataset`` in ``datasets_dir``: the scripts' default of ``--raw-data``.

  The library knows no checkout, so each script passes its checkout's
  datasets folder. ``None`` (the library's own default) when the dataset's
  variable is set, the copy is absent, or the dataset has no raw copy
  (ImageNet, prepared with ``tfds build``).

  Examples:
    >>> import os, pathlib, tempfile
    >>> from unittest import mock
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / 'mnist').mkdir()
    >>> with mock.patch.dict(os.environ, {'PRUNING_MNIST_DIR': ''}):  # unset
    ...   raw_copy('mnist', folder) == str(folder / 'mnist')
    True
    >>> with mock.patch.dict(os.environ, {'PRUNING_MNIST_DIR': '/elsewhere'}):
    ...   raw_copy('mnist', folder) is None
    True
    >>> raw_copy('cifar10', folder), raw_copy('imagenet2012', folder)
    (None, None)
  """
  name, variable = RAW_COPIES.get(dataset, (None, None))
  if name is None or os.environ.get(variable):
    return None
  path = pathlib.Path(datasets_dir) / name
  return str(path) if path.exists() else None


def build_parser(
  *,
  description: str,
  prog: str | None = None,
  epilog: str = '',
  models: Sequence[str],
  default_model: str,
  raw_data_default: str | None = None,
  epoch_checkpoints_default: bool = False,
) -> Parser:
  """The parser of a prune script: run flags, then one flag per configuration field.

  Every configuration flag defaults to ``None`` (meaning: the recipe's value),
  so the flags a user gave are exactly the ones that are not ``None``.
  """
  parser = Parser(
    prog=prog,
    description=description,
    epilog=epilog,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  run = parser.add_argument_group('run')
  run.add_argument(
    '--config',
    metavar='FILE',
    help='a recipe file (a Python file whose get_config() returns the fields); default: the '
    "recipe of --model in the scripts' configs/ folder",
  )
  run.add_argument('--workdir', help='output folder (default: runs/<model>-seed<seed>)')
  run.add_argument('--resume', action='store_true', help='continue the run in --workdir')
  run.add_argument(
    '--from-dense',
    metavar='RUN',
    help='start from the dense network (round 0) of the run in RUN instead of training one; '
    'its settings must match on everything but pruning and retraining, so several pruning '
    'settings share (and are compared on) one dense network',
  )
  run.add_argument('--data-dir', help='where prepared tfds datasets are kept')
  run.add_argument(
    '--raw-data',
    metavar='PATH',
    default=raw_data_default,
    help="the raw files a dataset is prepared from: MNIST's folder of IDX files, or the "
    f'CIFAR-10 archive (default: {raw_data_default or "$PRUNING_MNIST_DIR / $PRUNING_CIFAR10_PATH, else a download"})',
  )
  run.add_argument(
    '--input-workers',
    type=int,
    default=0,
    help='grain worker processes for datasets read through grain (imagenet2012; cifar10 is '
    'batched on the device)',
  )
  run.add_argument(
    '--epoch-checkpoints',
    action=argparse.BooleanOptionalAction,
    default=epoch_checkpoints_default,
    help='also checkpoint after every epoch, so a killed run resumes mid-round',
  )
  run.add_argument(
    '--progress', action=argparse.BooleanOptionalAction, default=True, help='progress bars'
  )
  hosts = parser.add_argument_group(
    'several hosts',
    'Start the same command on every host with its own --process-id; each host reads its own '
    'shard of every batch, and every device of every host joins one data-parallel mesh. '
    '--workdir must be one folder that every host sees: process 0 writes the run files, all '
    'processes write the checkpoints together.',
  )
  hosts.add_argument('--coordinator-address', help="host:port of process 0, or 'auto'")
  hosts.add_argument('--num-processes', type=int)
  hosts.add_argument('--process-id', type=int)

  helps = field_help()
  hints = typing.get_type_hints(run_config.PruneConfig)
  groups: dict[str, argparse._ArgumentGroup] = {}
  for field in dataclasses.fields(run_config.PruneConfig):
    group_name = field.metadata.get('group', 'configuration')
    if group_name not in groups:
      groups[group_name] = parser.add_argument_group(
        group_name, '(the recipe gives every default; a flag overrides it)'
      )
    keywords = {'help': helps.get(field.name), **_argument(field.name, hints[field.name])}
    if field.name in _CHOICES:  # registries, read when the parser is built
      keywords['choices'] = sorted(_CHOICES[field.name]())
      keywords.pop('metavar')
    if field.name == 'model':
      keywords = {'choices': list(models), 'help': f'{keywords["help"]} (default: {default_model})'}
    groups[group_name].add_argument(flag(field.name), dest=field.name, default=None, **keywords)
  return parser


def given_fields(args: argparse.Namespace) -> set[str]:
  """The configuration fields set on the command line."""
  return {
    f.name for f in dataclasses.fields(run_config.PruneConfig) if getattr(args, f.name) is not None
  }


def build_config(
  args: argparse.Namespace,
  *,
  recipes: pathlib.Path,
  default_model: str,
  raw_data_default: str | None = None,
) -> tuple[run_config.PruneConfig, set[str]]:
  """The run's configuration, its recipe with the flags given applied, and the fields given.

  Raises:
    ValueError: a recipe that cannot be read, a bad value, a flag the run
      would not use (worded with flags: ``--quality needs --criterion quality
      ...``), or ``--model`` contradicting ``--config``.
  """
  given = given_fields(args)
  if args.config:
    recipe_path = pathlib.Path(args.config)
  else:
    recipe_path = recipes / f'{args.model or default_model}.py'
  recipe = run_config.load_recipe(recipe_path)
  if args.model and args.config and recipe.get('model') not in (None, args.model):
    raise ValueError(
      f'--model {args.model} contradicts --config {args.config}, a recipe for '
      f'{recipe.get("model")!r}; give one of them'
    )
  overrides = {name: getattr(args, name) for name in given}
  # A dense network given is not trained further unless --dense-epochs says so.
  if 'dense_checkpoint' in given and 'dense_epochs' not in given:
    overrides['dense_epochs'] = 0
  # Errors name the flags as typed: --no-alternate for alternate=False given.
  flags = {'raw_dir': '--raw-data'}
  flags.update(
    {name: flag(name).replace('--', '--no-', 1) for name in given if overrides[name] is False}
  )
  try:
    config = run_config.PruneConfig(**{**recipe, **overrides})
  except run_config.IdleOptionError as error:
    message = error.command_line(flags)
    if error.option not in given:  # the recipe set it: say so, not only its flag
      message = f'recipe {recipe_path} sets {message}'
    raise ValueError(message) from None
  options = set(given)
  for name, default in (('data_dir', None), ('input_workers', 0)):
    if getattr(args, name) != default:
      options.add(name)
  if args.raw_data is not None and args.raw_data != raw_data_default:
    options.add('raw_dir')
  try:
    run_config.check_options(config, options)
  except run_config.IdleOptionError as error:
    raise ValueError(error.command_line(flags)) from None
  return config, given


def recipe_epilog(recipes: pathlib.Path, models: Sequence[str]) -> str:
  """For ``--help``: what each model's recipe sets, beyond the configuration's own defaults."""
  lines = [f'recipes (in {recipes}; any flag overrides them):']
  defaults = {f.name: f for f in dataclasses.fields(run_config.PruneConfig)}
  for model in models:
    try:
      recipe = run_config.load_recipe(recipes / f'{model}.py')
    except ValueError as error:
      lines.append(f'  {model}: {error}')
      continue
    shown = []
    for name, value in recipe.items():
      field = defaults.get(name)
      if name == 'model' or field is None:
        continue
      if isinstance(value, bool):
        shown.append(flag(name) if value else flag(name).replace('--', '--no-', 1))
        continue
      if isinstance(value, Mapping):
        text = ','.join(
          f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in value.items()
        )
      else:
        text = f'{value:g}' if isinstance(value, float) else str(value)
      shown.append(f'{flag(name)} {text}')
    lines.append(
      textwrap.fill(
        f'{model}: ' + '; '.join(shown),
        100,
        initial_indent='  ',
        subsequent_indent='      ',
        break_long_words=False,
        break_on_hyphens=False,
      )
    )
  return '\n'.join(lines)


def command_line(argv: Sequence[str] | None, script: str) -> str:
  """The command as typed, for the results files."""
  if argv is None:
    return shlex.join([os.path.basename(sys.executable), *sys.argv])
  return shlex.join([script, *argv])


@dataclasses.dataclass(frozen=True)
class Script:
  """What a prune script passes to :func:`main`: its models, recipes and bundled data.

  Attributes:
    name: the script's file name, for the command recorded in reports.
    description: the first line of ``--help``.
    examples: text shown after the options in ``--help``.
    models: the ``--model`` choices.
    default_model: the model run without ``--model``.
    recipes: the folder of recipe files, ``<model>.py`` each.
    raw_data_default: the raw files used when none are given (the
      checkout's offline copy), or ``None``.
    epoch_checkpoints_default: whether to checkpoint every epoch by default.
  """

  name: str
  description: str
  examples: str
  models: Sequence[str]
  default_model: str
  recipes: pathlib.Path
  raw_data_default: str | None = None
  epoch_checkpoints_default: bool = False

  def parser(self) -> Parser:
    """The script's argument parser."""
    epilog = f'{self.examples}\n\n{recipe_epilog(self.recipes, self.models)}'.strip()
    return build_parser(
      prog=self.name,
      description=self.description,
      epilog=epilog,
      models=self.models,
      default_model=self.default_model,
      raw_data_default=self.raw_data_default,
      epoch_checkpoints_default=self.epoch_checkpoints_default,
    )

  def config(self, args: argparse.Namespace) -> run_config.PruneConfig:
    """The run's configuration (see :func:`build_config`)."""
    return build_config(
      args,
      recipes=self.recipes,
      default_model=self.default_model,
      raw_data_default=self.raw_data_default,
    )[0]


# The errors of a user's input: raised by parsing, configuring and preparing a run
# (pipeline.prepare writes nothing before its checks), reported as one line, exit 2.
# DataFilesError (missing or corrupt data files) is a FileNotFoundError.
USER_ERRORS = (ValueError, OSError)


def main(script: Script, argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs a prune script: parse, configure, prepare, train, report.

  A mistake in the user's input (a bad value, a recipe that does not load,
  an option the run would not use, a workdir conflict, ``--resume`` of
  nothing, missing or corrupt data, host options that do not fit) ends the
  command with one line on stderr and exit status 2, before anything is
  written; errors while training are not the user's and keep their
  traceback.

  Returns:
    ``{'workdir', 'final', 'paths'}``: the run's folder, its last record and
    the report files written (on process 0).
  """
  import jax

  from pruning.experiment import parallel, pipeline, report  # the heavy layers, once parsed

  parser = script.parser()
  args = parser.parse_args(argv)
  try:
    # First: jax.distributed must start before anything touches a backend, and building
    # the config does (it compiles the compiler options once).
    parallel.initialize(args.coordinator_address, args.num_processes, args.process_id)
    config, _ = build_config(
      args,
      recipes=script.recipes,
      default_model=script.default_model,
      raw_data_default=script.raw_data_default,
    )
    workdir = pathlib.Path(args.workdir or f'runs/{config.model}-seed{config.seed}')
    prepared = pipeline.prepare(
      config,
      workdir,
      resume=args.resume,
      dense_from=args.from_dense,
      data_dir=args.data_dir,
      raw_dir=args.raw_data,
      progress=args.progress,
      input_workers=args.input_workers,
    )
  except USER_ERRORS as error:
    parser.error(one_line(error))
  # The code that trains is the checkout's now: a run of hours may end after new commits.
  commit = report.git_commit()
  result = pipeline.run_prepared(prepared, checkpoint_epochs=args.epoch_checkpoints)
  header = {
    'model': config.model,
    'dataset': config.dataset,
    'command': command_line(argv, script.name),
    'commit': commit,
    'seed': config.seed,
    'retrain schedule': config.retrain_schedule,
    'machine': report.machine_description(),
  }
  model_fields = ('width', 'batch_norm', 'dtype')
  defaults = run_config.field_defaults()
  for name in model_fields:
    if getattr(config, name) != defaults[name]:
      header[name.replace('_', ' ')] = getattr(config, name)
  if args.from_dense:
    header['dense network from'] = args.from_dense
  paths = {}
  if jax.process_index() == 0:
    rows = report.layer_rows(result['mask_stats'], result['layer_costs'])
    paths = report.write_and_print(
      workdir, rows, result['records'], header, auto_sensitivity=config.auto_sensitivity
    )
  return {
    'workdir': str(workdir),
    'final': result['records'][-1],
    'paths': {k: str(v) for k, v in paths.items()},
  }


def one_line(error: BaseException) -> str:
  """The error's message on one line (a multi-line data error keeps its first line and hint)."""
  text = str(error)
  if isinstance(error, KeyError) and error.args:
    text = str(error.args[0])
  return ' '.join(part.strip() for part in text.splitlines() if part.strip())
