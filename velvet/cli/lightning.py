"""``velvet fit|validate|test|predict``: the LightningCLI over velvet's tasks and DataModules.

Recipes (``recipes/**/*.yaml``) name the task and the DataModule by ``class_path``; every value can
be overridden on the command line (``velvet fit --config recipes/pretrain/demo.yaml
--trainer.max_epochs 2``). The YAML is the single source of truth: velvet adds no flags that
silently override it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

__all__ = ["VelvetCLI", "run_lightning_cli"]


class VelvetCLI(LightningCLI):
    """LightningCLI with velvet's defaults: tasks and DataModules chosen by ``class_path``."""


def run_lightning_cli(args: Sequence[str] | None = None, *, run: bool = True) -> VelvetCLI:
    """Run the Lightning subcommand in ``args`` (e.g. ``["fit", "--config", "recipe.yaml"]``)."""
    return VelvetCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        run=run,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # the tasks build their optimiser and schedule from their own arguments
        auto_configure_optimizers=False,
    )
