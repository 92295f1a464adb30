"""What every velvet task shares: optimiser groups, warm-up + cosine, per-step seeding, logging.

A task subclasses :class:`VelvetTask`, calls ``save_hyperparameters()`` with (at least) the
optimisation arguments of :data:`OPTIM_DEFAULTS`, and provides ``self.model`` (the module whose
parameters are optimised) plus :meth:`trainable_modules` when more modules train than the model
(e.g. the pretraining heads).

Randomness: every random choice of a step is drawn from :meth:`step_generator`, a generator on the
task's device seeded by ``(seed, step, stage, rank)``; dropout uses the global RNG, which
:meth:`on_train_batch_start` reseeds from the same numbers. A step is therefore a function of its
inputs and seed on any device, and a run restarted from a checkpoint repeats the uninterrupted run
(the training loader resumes mid-epoch at the batch after the checkpoint:
:class:`~velvet.data.datamodule_base.ResumableDataLoader`).

Checkpoints: :meth:`VelvetTask.setup` makes the trainer write them atomically
(:class:`~velvet.tasks.checkpointing.AtomicCheckpointIO`) unless it was given a CheckpointIO of its own;
:meth:`VelvetTask.on_train_start` hands the training loader its saved position on a resumed run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

__all__ = ["OPTIM_DEFAULTS", "VelvetTask", "parameter_groups", "warmup_cosine"]

# the optimisation arguments every task accepts (names and defaults of the pretraining recipes)
OPTIM_DEFAULTS: dict[str, Any] = {
    "lr": 2e-5,
    "weight_decay": 0.02,
    "betas": (0.9, 0.98),
    "warmup_steps": 0,
    "min_lr": 1e-8,
    "gradient_clip_val": None,
    "seed": 0,
}


def warmup_cosine(total: int, warmup: int | float, floor: float) -> Any:
    """The LR factor of step ``s``: linear warm-up to 1, then cosine decay to ``floor``.

    Args:
        total: the number of optimiser steps of the run.
        warmup: warm-up steps, or a fraction of ``total`` when a float below 1.
        floor: the final factor (``min_lr / lr``).

    Returns:
        ``factor(step) -> float`` for :class:`torch.optim.lr_scheduler.LambdaLR`.
    """
    total = max(1, int(total))
    steps = int(warmup * total) if isinstance(warmup, float) and warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < steps:
            return (step + 1) / steps
        progress = min(1.0, (step - steps) / max(1, total - steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def parameter_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    no_decay: set[str],
    weight_decay: float,
    lr_by_prefix: Mapping[str, float] | None = None,
    *,
    include_frozen: bool = False,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay / no decay, optionally with a learning rate per name prefix.

    Args:
        named: ``(name, parameter)`` pairs; frozen parameters are left out unless ``include_frozen``.
        no_decay: names excluded from weight decay (norms, biases, position tables, temperature).
        weight_decay: the decay of the other parameters.
        lr_by_prefix: ``{"model.vision.": 1e-5}``: parameters whose name starts with a prefix get
            that learning rate (the longest matching prefix wins); others the optimiser's.
        include_frozen: keep frozen parameters too (to be unfrozen later in the run: AdamW leaves a
            parameter whose gradient is None untouched, decay included).

    Returns:
        Non-empty groups, each with ``params``, ``weight_decay`` and, where set, ``lr``.
    """
    prefixes = sorted((lr_by_prefix or {}).items(), key=lambda kv: -len(kv[0]))
    groups: dict[tuple[bool, float | None], list[nn.Parameter]] = {}
    for name, p in named:
        if not p.requires_grad and not include_frozen:
            continue
        lr = next((v for k, v in prefixes if name.startswith(k)), None)
        groups.setdefault((name in no_decay, lr), []).append(p)
    out = []
    for (plain, lr), params in groups.items():
        group: dict[str, Any] = {"params": params, "weight_decay": 0.0 if plain else weight_decay}
        if lr is not None:
            group["lr"] = lr
        out.append(group)
    return out


class VelvetTask(pl.LightningModule):
    """Base of velvet's LightningModules (see the module docstring)."""

    model: nn.Module

    # ------------------------------------------------------------------ checkpoints

    def setup(self, stage: str) -> None:
        """Make the trainer write checkpoints atomically (:func:`~velvet.tasks.checkpointing.use_atomic_checkpoints`).

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        from velvet.tasks.checkpointing import use_atomic_checkpoints

        use_atomic_checkpoints(self.trainer)

    def on_train_start(self) -> None:
        """Put the training loader where a mid-epoch checkpoint left it.

        See :func:`~velvet.tasks.checkpointing.restore_training_loader_state`.
        """
        from velvet.tasks.checkpointing import restore_training_loader_state

        restore_training_loader_state(self.trainer)

    # ------------------------------------------------------------------ randomness

    def step_seed(self, step: int, stage: int = 0) -> int:
        """The seed of ``(seed, step, stage, rank)``: stage 0 = objectives, 1 = dropout, 2 = evaluation."""
        return (self.hparams.seed * 1_000_003 + step * 7_919 + stage * 104_729 + self.global_rank) % (2**63 - 1)

    def step_generator(self, step: int, stage: int = 0) -> torch.Generator:
        """A generator on the task's device, seeded for ``(step, stage)``: no draw leaves the device."""
        return torch.Generator(device=self.device).manual_seed(self.step_seed(step, stage))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # dropout draws from the global RNG: make it a function of the step, like everything else
        torch.manual_seed(self.step_seed(self.global_step, stage=1))

    # ------------------------------------------------------------------ logging

    def log_terms(self, stage: str, out: Mapping[str, torch.Tensor], loss: torch.Tensor, batch_size: int) -> None:
        """Log every ``*_loss`` term of ``out`` and the total under ``<stage>/``.

        Training logs per step; validation and test per epoch, averaged over ranks.
        """
        terms = {f"{stage}/{k}": v.detach() for k, v in out.items() if k.endswith("_loss")}
        terms[f"{stage}/loss"] = loss.detach()
        if "logit_scale" in out:
            terms[f"{stage}/temperature"] = 1.0 / out["logit_scale"]
        on_step = stage == "train"
        self.log_dict(terms, on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        self.log(f"{stage}_loss", loss.detach(), prog_bar=True, on_step=on_step, on_epoch=not on_step,
                 batch_size=batch_size, sync_dist=not on_step, logger=False)

    # ------------------------------------------------------------------ optimisation

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Name prefix -> module whose parameters the optimiser updates (default: ``model``)."""
        return {"model": self.model}

    def no_weight_decay(self) -> set[str]:
        """Full names (with the :meth:`trainable_modules` prefix) excluded from weight decay."""
        names: set[str] = set()
        for prefix, module in self.trainable_modules().items():
            own = module.no_weight_decay() if hasattr(module, "no_weight_decay") else set()
            names |= {f"{prefix}.{n}" for n in own}
            names |= {f"{prefix}.{n}" for n, p in module.named_parameters() if p.ndim < 2}
        return names

    def lr_by_prefix(self) -> dict[str, float]:
        """Per-prefix learning rates (e.g. a smaller one for a pretrained encoder); none by default."""
        return {}

    def optimizes_frozen_parameters(self) -> bool:
        """Put frozen parameters in the optimiser too (a task that unfreezes them mid-run); False by default."""
        return False

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        named = [
            (f"{prefix}.{n}", p) for prefix, module in self.trainable_modules().items() for n, p in module.named_parameters()
        ]
        groups = parameter_groups(
            named, self.no_weight_decay(), hp.weight_decay, self.lr_by_prefix(),
            include_frozen=self.optimizes_frozen_parameters(),
        )
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        factor = warmup_cosine(int(self.trainer.estimated_stepping_batches), hp.warmup_steps, hp.min_lr / hp.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        value = gradient_clip_val if gradient_clip_val is not None else self.hparams.gradient_clip_val
        if value:
            self.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=gradient_clip_algorithm or "norm")
