"""``velvet fit|validate|test``: the LightningCLI over velvet's tasks and DataModules.

Recipes (``recipes/**/*.yaml``) name the task and the DataModule by ``class_path``; every value can
be overridden on the command line (``velvet fit --config recipes/pretrain/demo.yaml
--trainer.max_epochs 2``). The YAML is the single source of truth: velvet adds no flags that
silently override it. A section may be the path of another YAML file (``data:
shared/data_m3d_cap.yaml``), relative to the file that names it; :func:`read_recipe` reads a recipe
this way without running anything (``velvet data check`` uses it).

``predict`` is not offered: the pretraining task has no predict step (``velvet embed`` writes
embeddings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

__all__ = ["RecipeError", "VelvetCLI", "read_recipe", "run_lightning_cli"]

# the LightningCLI settings shared by the runs and by read_recipe
_CLI_KWARGS: dict[str, Any] = {
    "subclass_mode_model": True,
    "subclass_mode_data": True,
    "seed_everything_default": 0,
    # the tasks build their optimiser and schedule from their own arguments
    "auto_configure_optimizers": False,
}
_INCLUDE_SUFFIXES = (".yaml", ".yml", ".json")


class RecipeError(ValueError):
    """A recipe that cannot be read; the message names the recipe file."""


class VelvetCLI(LightningCLI):
    """LightningCLI with velvet's defaults: tasks and DataModules chosen by ``class_path``."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands without ``predict`` (no velvet task has a predict step)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}


def run_lightning_cli(args: Sequence[str] | None = None, *, run: bool = True) -> VelvetCLI:
    """Run the Lightning subcommand in ``args``.

    Args:
        args: the command line after ``velvet`` (e.g. ``["fit", "--config", "recipe.yaml"]``);
            ``None`` reads ``sys.argv[1:]``.
        run: whether to run the subcommand (``False`` only instantiates the classes).

    Returns:
        The finished CLI (its ``trainer``, ``model`` and ``datamodule``).
    """
    if args is not None and list(args) == sys.argv[1:]:
        # the process's own command line: passing it again as `args` makes Lightning warn that both
        # were given
        args = None
    return VelvetCLI(
        LightningModule,
        LightningDataModule,
        args=list(args) if args is not None else None,
        run=run,
        save_config_kwargs={"overwrite": True},
        **_CLI_KWARGS,
    )


class _Parsed(Exception):
    """Carries the parsed configuration out of :class:`_RecipeReader` before anything runs."""

    def __init__(self, config: Namespace) -> None:
        super().__init__("recipe parsed")
        self.config = config


class _RecipeReader(VelvetCLI):
    """VelvetCLI's parser for ``fit``, stopped right after parsing (no seeding, no instantiation)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``Trainer.fit``'s own keys (``ckpt_path``), which the ``fit`` subcommand accepts."""
        skip: set[str | int] = set(LightningCLI.subcommands()["fit"])
        parser.add_method_arguments(Trainer, "fit", skip=skip)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse and validate; only the ``model`` section may be absent (a data-only recipe)."""
        config = parser.parse_args(args, _skip_validation=True)
        parser.validate(config, skip_required=True)
        raise _Parsed(config)


def read_recipe(config_path: str | Path) -> Namespace:
    """Read a recipe as ``velvet fit --config RECIPE`` reads it, without instantiating anything.

    Sections given as file paths are loaded relative to the file that names them (nested too),
    ``class_path``/``init_args`` are checked against the classes' signatures and their defaults
    filled in.

    Args:
        config_path: the recipe YAML.

    Returns:
        The parsed configuration (``config.data.class_path``, ``config.data.init_args``, ...);
        ``config.model`` is ``None`` for a recipe without a ``model:`` section.

    Raises:
        RecipeError: the file is missing or not YAML, an included file is missing, or a value does
            not fit; the message names the recipe (and the include).
    """
    path = Path(config_path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (trainer:, model:, data:)")
    try:
        _RecipeReader(
            LightningModule,
            LightningDataModule,
            args=["--config", str(path)],
            run=False,
            parser_kwargs={"exit_on_error": False},
            load_from_checkpoint_support=False,
            **_CLI_KWARGS,
        )
    except _Parsed as parsed:
        return parsed.config
    except (argparse.ArgumentError, TypeError, KeyError) as exc:
        message = str(exc).strip()
        for where, key, value, looked_for in _missing_includes(path):
            if value in message:
                origin = "" if where == path else f" (named in {where})"
                raise RecipeError(
                    f"{path}: included file `{key}: {value}`{origin} not found: no file {looked_for}"
                ) from exc
        raise RecipeError(f"{path}: {message}") from exc
    raise AssertionError("unreachable: _RecipeReader always raises")  # pragma: no cover


def _missing_includes(path: Path, seen: set[Path] | None = None) -> list[tuple[Path, str, str, Path]]:
    """Values of ``path`` (and of the files it includes) that name a YAML/JSON file that is absent.

    Args:
        path: a recipe or an included file.
        seen: files already walked (include cycles).

    Returns:
        ``(file, key, value, resolved path)`` for each missing file, resolved relative to ``file``'s
        folder as jsonargparse does.
    """
    seen = set() if seen is None else seen
    if path.resolve() in seen:
        return []
    seen.add(path.resolve())
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    missing: list[tuple[Path, str, str, Path]] = []
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((key, v) for v in node)
        elif isinstance(node, str) and node.lower().endswith(_INCLUDE_SUFFIXES):
            target = path.parent / node
            if target.is_file():
                missing += _missing_includes(target, seen)
            else:
                missing.append((path, key, node, target))
    return missing
