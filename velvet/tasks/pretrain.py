"""The pretraining task: weights, logs and optimises the VELVET-Med objectives.

The model math lives in :class:`velvet.pretraining.VelvetPretrainer`; this LightningModule adds
what training needs: per-term weights from the recipe, AdamW with decoupled weight decay (none on
norms, biases, position tables and the temperature), linear warm-up + cosine decay per step,
gradient clipping, negative-keeping accumulation, validation retrieval metrics, and exact resume.

Exact resume: every random choice of a step (dropout, MLM masks, SSL views, hard negatives) is
drawn from generators seeded by ``(seed, global_step, rank)``, and the training order by
``(seed, epoch)``; a run restarted from a checkpoint therefore repeats the uninterrupted run.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from velvet.metrics.retrieval import retrieval_metrics
from velvet.models.config import VelvetConfig, get_model_config
from velvet.pretraining.objectives import LOSS_TERMS

__all__ = ["PretrainTask"]

logger = logging.getLogger(__name__)


class PretrainTask(pl.LightningModule):
    """VELVET-Med pretraining.

    Args:
        model: a registered architecture (``velvet-btsv``, ``velvet-tiny`` ...; see
            ``velvet.models.config.list_models``) or a dict ``{"preset": name, **overrides}``
            (e.g. ``{"preset": "velvet-btsv", "objectives": ["itc_report"]}``).
        loss_weights: objective -> weight (``itc_report``, ``itc_sentence``, ``itc_word``, ``vis_ssl``,
            ``txt_mlm``, ``itm``, ``mm_mlm``); missing ones weigh 1.
        lr: peak learning rate of AdamW.
        weight_decay: decoupled weight decay (not on 1-D parameters, position tables, temperature).
        betas: AdamW betas ((0.9, 0.98) in the reference).
        warmup_steps: linear warm-up steps (int) or fraction of all steps (float < 1).
        min_lr: learning rate at the end of the cosine decay.
        gradient_clip_val: clip the gradient norm to this (None: no clipping).
        negative_cache_micro_batch: encode the batch in micro-batches of this size while keeping
            every contrastive negative (:mod:`velvet.pretraining.negative_cache`); None: one pass.
        grad_checkpointing: recompute activations in backward to save memory.
        label_smoothing: report-level CLIP loss label smoothing.
        local_temperatures: GLoRIA temperatures (temp1, temp2, temp3).
        local_agg: ``sum`` or ``mean`` word aggregation in the local losses.
        local_chunk_size: bound the local losses' memory by chunking images (None: no chunks).
        ssl_temperature: vision-SSL NT-Xent temperature.
        mlm_probability: MLM selection rate.
        retrieval_ks: recall@k cut-offs reported at validation/test.
        bn_recalibration_batches: with batch-standardised projections (``projection_norm: batch``),
            re-estimate their statistics on this many training batches with the current weights
            before each validation during fit (:mod:`velvet.pretraining.precise_bn`); 0 disables.
        seed: base seed of the per-step generators.
    """

    def __init__(
        self,
        model: str | dict[str, Any] = "velvet-btsv",
        *,
        loss_weights: dict[str, float] | None = None,
        lr: float = 2e-5,
        weight_decay: float = 0.02,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int | float = 0,
        min_lr: float = 1e-8,
        gradient_clip_val: float | None = None,
        negative_cache_micro_batch: int | None = None,
        grad_checkpointing: bool = False,
        label_smoothing: float = 0.1,
        local_temperatures: tuple[float, float, float] = (4.0, 5.0, 10.0),
        local_agg: Literal["sum", "mean"] = "sum",
        local_chunk_size: int | None = None,
        ssl_temperature: float = 0.5,
        mlm_probability: float = 0.15,
        retrieval_ks: tuple[int, ...] = (1, 5, 10),
        bn_recalibration_batches: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_config = (
            get_model_config(model) if isinstance(model, str) else VelvetConfig.from_dict(model)
        )
        unknown = sorted(set(loss_weights or {}) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown objective(s) in loss_weights: {unknown}; known: {list(LOSS_TERMS)}")
        self.loss_weights = {o: float((loss_weights or {}).get(o, 1.0)) for o in self.model_config.objectives}
        if negative_cache_micro_batch is not None and negative_cache_micro_batch < 1:
            raise ValueError("negative_cache_micro_batch must be a positive batch size or None")
        self.automatic_optimization = negative_cache_micro_batch is None
        self.pretrainer: Any = None  # built in configure_model, once the tokenizer is known
        self.tokenizer_meta: dict[str, Any] | None = None
        self._val_embeddings: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ------------------------------------------------------------------ building

    def configure_model(self) -> None:
        """Build the model against the DataModule's tokenizer (Lightning calls this after setup)."""
        if self.pretrainer is not None:
            return
        if self._trainer is None:  # load_from_checkpoint: on_load_checkpoint builds from the checkpoint
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "tokenizer", None) is None:
            raise RuntimeError("PretrainTask needs a DataModule with a tokenizer (VelvetDataModule)")
        tokenizer = datamodule.tokenizer
        self._build(self.model_config.for_tokenizer(tokenizer), _tokenizer_meta(tokenizer))

    def _build(self, config: VelvetConfig, tokenizer_meta: dict[str, Any]) -> None:
        from velvet.models.velvet import VelvetModel
        from velvet.pretraining.objectives import VelvetPretrainer

        hp = self.hparams
        self.model_config, self.tokenizer_meta = config, tokenizer_meta
        with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed alone
            torch.manual_seed(hp.seed)
            model = VelvetModel(config)
        if hp.grad_checkpointing:
            model.set_grad_checkpointing(True)
        self.pretrainer = VelvetPretrainer(
            model,
            tokenizer_info=tokenizer_meta,
            label_smoothing=hp.label_smoothing,
            local_temperatures=tuple(hp.local_temperatures),
            local_agg=hp.local_agg,
            local_chunk_size=hp.local_chunk_size,
            ssl_temperature=hp.ssl_temperature,
            mlm_probability=hp.mlm_probability,
        )

    @property
    def model(self) -> Any:
        """The :class:`~velvet.models.velvet.VelvetModel` (after :meth:`configure_model`)."""
        return self.pretrainer.model

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # enough to rebuild the model without the DataModule (load_from_checkpoint, export)
        checkpoint["velvet"] = {"model_config": self.model_config.to_dict(), "tokenizer": self.tokenizer_meta}
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "contract"):
            checkpoint["velvet"]["preprocess"] = datamodule.contract.to_dict()
            checkpoint["velvet"]["tokenizer_dir"] = str(getattr(datamodule, "tokenizer_dir", "") or "")
            tokenizer = getattr(datamodule, "tokenizer", None)
            if tokenizer is not None:  # the vocabulary is small: carry it, so exports never lose it
                checkpoint["velvet"]["tokenizer_files"] = _tokenizer_files(tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.pretrainer is None and "velvet" in checkpoint:
            meta = checkpoint["velvet"]
            self._build(VelvetConfig.from_dict(meta["model_config"]), meta["tokenizer"])

    # ------------------------------------------------------------------ randomness

    def _step_seed(self, step: int, stage: int = 0) -> int:
        return (self.hparams.seed * 1_000_003 + step * 7_919 + stage * 104_729 + self.global_rank) % (2**63 - 1)

    def _generator(self, step: int, stage: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self._step_seed(step, stage))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # dropout draws from the global RNG: make it a function of the step, like everything else
        torch.manual_seed(self._step_seed(self.global_step, stage=1))

    # ------------------------------------------------------------------ steps

    def _weighted(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        total = sum(
            self.loss_weights[o] * out[name] for o, names in LOSS_TERMS.items() if o in self.loss_weights
            for name in names if name in out
        )
        return total  # type: ignore[return-value]

    def _log_terms(self, stage: str, out: dict[str, torch.Tensor], loss: torch.Tensor, batch_size: int) -> None:
        terms = {f"{stage}/{k}": v.detach() for k, v in out.items() if k.endswith("_loss")}
        terms[f"{stage}/loss"] = loss.detach()
        if "logit_scale" in out:
            terms[f"{stage}/temperature"] = 1.0 / out["logit_scale"]
        on_step = stage == "train"
        self.log_dict(terms, on_step=on_step, on_epoch=not on_step, batch_size=batch_size, sync_dist=not on_step)
        self.log(f"{stage}_loss", loss.detach(), prog_bar=True, on_step=on_step, on_epoch=not on_step,
                 batch_size=batch_size, sync_dist=not on_step, logger=False)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every sample of the batch was skipped by the data error policy
            return None
        size = batch["image"].shape[0]
        if not self.automatic_optimization:
            return self._manual_step(batch, size)
        out = self.pretrainer(batch, self._generator(self.global_step))
        loss = self._weighted(out)
        self._log_terms("train", out, loss, size)
        return loss

    def _manual_step(self, batch: dict[str, Any], size: int) -> None:
        from velvet.pretraining.negative_cache import cached_negatives_step

        opt = self.optimizers()
        opt.zero_grad()
        step = self.global_step
        out = cached_negatives_step(
            self.pretrainer,
            batch,
            self.hparams.negative_cache_micro_batch,
            weights=self.loss_weights,
            backward=self.manual_backward,
            generator_factory=lambda i: self._generator(step, stage=10 + i),
        )
        if self.hparams.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val, gradient_clip_algorithm="norm")
        opt.step()
        self.lr_schedulers().step()
        self._log_terms("train", out, out["loss"], size)

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None) -> None:
        value = gradient_clip_val if gradient_clip_val is not None else self.hparams.gradient_clip_val
        if value:
            self.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    def _eval_step(self, batch: dict[str, Any] | None, batch_idx: int, stage: str) -> None:
        if batch is None:
            return
        out = self.pretrainer(batch, self._generator(batch_idx, stage=2))
        self._log_terms(stage, out, self._weighted(out), batch["image"].shape[0])
        if "image_embedding" in out:
            self._val_embeddings.append((out["image_embedding"].float(), out["text_embedding"].float()))

    def on_validation_epoch_start(self) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        from velvet.pretraining.precise_bn import batch_norms, recalibrate_batch_norm

        n = self.hparams.bn_recalibration_batches
        trainer = self.trainer
        if not n or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not batch_norms(self.model):
            return
        # a fresh pass over the training split: the epoch-seeded sampler gives the same order without
        # touching any RNG the training loop depends on
        datamodule = getattr(trainer, "datamodule", None)
        loader = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
        batches = (self.transfer_batch_to_device(b, self.device, 0) for b in loader if b is not None)
        with trainer.precision_plugin.forward_context():
            used = recalibrate_batch_norm(self.model, batches, self.model.forward_projections, max_batches=n)
        logger.debug("re-estimated batch-norm statistics on %d training batches", used)

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _retrieval_epoch_end(self, stage: str) -> None:
        if not self._val_embeddings:
            return
        image = torch.cat([e[0] for e in self._val_embeddings])
        text = torch.cat([e[1] for e in self._val_embeddings])
        self._val_embeddings.clear()
        if self.trainer.world_size > 1:  # the gallery is the whole split, not one rank's shard
            image = self.all_gather(image).flatten(0, 1)
            text = self.all_gather(text).flatten(0, 1)
        metrics = retrieval_metrics(image @ text.T, ks=tuple(self.hparams.retrieval_ks), prefix=f"{stage}/")
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_end(self) -> None:
        self._retrieval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._retrieval_epoch_end("test")

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        no_decay = self.model.no_weight_decay()
        decay, plain = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (plain if name in no_decay else decay).append(p)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": plain, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(hp.warmup_steps * total) if isinstance(hp.warmup_steps, float) and hp.warmup_steps < 1 else int(hp.warmup_steps)
        floor = hp.min_lr / hp.lr

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _tokenizer_files(tokenizer: Any) -> dict[str, str]:
    """The tokenizer's saved files as ``{name: text}`` (all of them are JSON or plain text)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def _tokenizer_meta(tokenizer: Any) -> dict[str, Any]:
    """What the objectives need from the tokenizer (kept in checkpoints)."""
    specials = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id}
    specials |= {int(i) for i in tokenizer.sen_token_ids}
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        specials.add(int(unk))
    return {
        "mask_token_id": int(tokenizer.mask_token_id),
        "random_token_ids": [i for i in range(tokenizer.vocab_size) if i not in specials],
        "config": tokenizer.config(),
    }
