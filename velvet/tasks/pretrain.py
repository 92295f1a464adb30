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
import warnings
from typing import Any, Literal

import torch
from torch import nn

from velvet.metrics.retrieval import retrieval_metrics
from velvet.models.config import VelvetConfig, get_model_config
from velvet.pretraining.registry import OBJECTIVES, check_objectives, levels_for
from velvet.tasks.base import VelvetTask

__all__ = ["PretrainTask"]

logger = logging.getLogger(__name__)


class PretrainTask(VelvetTask):
    """VELVET-Med pretraining.

    Args:
        model: a registered architecture (``velvet-btsv``, ``velvet-tiny`` ...; see
            :func:`velvet.list_models`) or a dict ``{"preset": name, **overrides}``
            (e.g. ``{"preset": "velvet-btsv", "text": {"preset": "bt"}}``). Its projection levels are
            those the objectives use; the token facts and the input size come from the DataModule
            (:meth:`~velvet.models.config.VelvetConfig.for_data`), so the recipe states them once.
        objectives: the pretraining objectives (:data:`velvet.pretraining.registry.OBJECTIVES`;
            default: all seven of the full method).
        loss_weights: objective -> weight; missing ones weigh 1.
        init_from: start from existing weights (:func:`velvet.models.initialize.initialize_from`): a
            source for the whole model (a pretrained directory, a registry name, a ``.ckpt``), or
            ``{"vision": source, "text": source}`` for single encoders. A text source may be a
            Hugging Face BERT / CXR-BERT folder; ``"tokenizer"`` means the folder the DataModule's
            tokenizer was loaded from (so the path is written once, in the data section).
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
        local_temperatures: GLoRIA temperatures (temp1, temp2, temp3); None: the model config's.
            Given here, they are written into the model config (``local_temperatures``), which
            evaluation and grounding read.
        local_agg: ``sum`` or ``mean`` word aggregation in the local losses; None: the model
            config's (same rule). The local attention (``gloria`` or ``regions``) is a model field:
            ``model: {local_attention: regions}``.
        local_chunk_size: bound the local losses' memory by chunking images (None: no chunks).
        ssl_temperature: vision-SSL NT-Xent temperature.
        ssl_embed_dim: width of the vision-SSL contrastive projection (512).
        mlm_probability: MLM selection rate.
        retrieval_ks: recall@k cut-offs reported at validation/test.
        bn_recalibration_batches: with batch-standardised projections (``projection_norm: batch``),
            re-estimate their statistics on this many training batches with the current weights
            before each validation during fit (:mod:`velvet.pretraining.precise_bn`); 0 disables.
        seed: base seed of the initial weights and the per-step generators.
    """

    def __init__(
        self,
        model: str | dict[str, Any] = "velvet-btsv",
        *,
        objectives: list[str] | None = None,
        loss_weights: dict[str, float] | None = None,
        init_from: str | dict[str, str] | None = None,
        lr: float = 2e-5,
        weight_decay: float = 0.02,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int | float = 0,
        min_lr: float = 1e-8,
        gradient_clip_val: float | None = None,
        negative_cache_micro_batch: int | None = None,
        grad_checkpointing: bool = False,
        label_smoothing: float = 0.1,
        local_temperatures: tuple[float, float, float] | None = None,
        local_agg: Literal["sum", "mean"] | None = None,
        local_chunk_size: int | None = None,
        ssl_temperature: float = 0.5,
        ssl_embed_dim: int = 512,
        mlm_probability: float = 0.15,
        retrieval_ks: tuple[int, ...] = (1, 5, 10),
        bn_recalibration_batches: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if isinstance(model, dict) and ("objectives" in model or "ssl_embed_dim" in model):
            # velvet 0.1 recipes and checkpoints listed the objectives inside the architecture
            from velvet.models.config import upgrade_v1_architecture

            model, legacy = upgrade_v1_architecture(model)
            model.pop("levels", None)
            model.pop("visual_adapter", None)
            if objectives is None:
                objectives = list(legacy)
            warnings.warn(
                "model: {objectives: ...} is deprecated; write PretrainTask(objectives=[...]) instead",
                DeprecationWarning,
                stacklevel=2,
            )
        self.objectives = check_objectives(objectives if objectives is not None else tuple(OBJECTIVES))
        base = get_model_config(model) if isinstance(model, str) else VelvetConfig.from_dict(model)
        # the model carries exactly the projections the objectives train; fusion as its text config says
        self.model_config = base.replace(levels=levels_for(self.objectives), visual_adapter=None)
        # the local scores' settings live in the model config, so that exports carry them
        local = {"local_temperatures": local_temperatures, "local_agg": local_agg}
        self.model_config = self.model_config.replace(**{k: v for k, v in local.items() if v is not None})
        unknown = sorted(set(loss_weights or {}) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown objective(s) in loss_weights: {unknown}; known: {list(OBJECTIVES)}")
        unused = sorted(set(loss_weights or {}) - set(self.objectives))
        if unused:
            raise ValueError(f"loss_weights names objective(s) {unused} that are not trained (objectives: {list(self.objectives)})")
        self.loss_weights = {o: float((loss_weights or {}).get(o, 1.0)) for o in self.objectives}
        if negative_cache_micro_batch is not None and negative_cache_micro_batch < 1:
            raise ValueError("negative_cache_micro_batch must be a positive batch size or None")
        if negative_cache_micro_batch is not None and self.model_config.projection_norm == "batch":
            # refused up front, before any data work (the step itself refuses it too)
            raise ValueError(
                "negative_cache_micro_batch cannot be exact with projection_norm: 'batch' (batch-norm "
                "statistics would come from each micro-batch, not the whole batch): use projection_norm: "
                "'none', or a smaller batch without the cache"
            )
        self.automatic_optimization = negative_cache_micro_batch is None
        self.pretrainer: Any = None  # built in configure_model, once the tokenizer is known
        self.tokenizer_meta: dict[str, Any] | None = None
        self._val_embeddings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    # ------------------------------------------------------------------ building

    def configure_model(self) -> None:
        """Build the model against the DataModule's tokenizer and contract (Lightning calls this after setup)."""
        if self.pretrainer is not None:
            return
        if self._trainer is None:  # load_from_checkpoint: on_load_checkpoint builds from the checkpoint
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or getattr(datamodule, "tokenizer", None) is None:
            raise RuntimeError("PretrainTask needs a DataModule with a tokenizer (VelvetDataModule)")
        tokenizer = datamodule.tokenizer
        contract = getattr(datamodule, "contract", None)
        size = getattr(contract, "spatial_size", None)
        config = self.model_config.for_data(tokenizer=tokenizer, input_size=size)
        self._build(config, _tokenizer_meta(tokenizer))
        if self.hparams.init_from is not None:
            self._initialize(self.hparams.init_from, tokenizer, getattr(datamodule, "tokenizer_path", None))

    def _initialize(self, init_from: str | dict[str, str], tokenizer: Any, tokenizer_path: Any) -> None:
        from velvet.models.initialize import INIT_PARTS, initialize_from

        sources = {"model": init_from} if isinstance(init_from, str) else dict(init_from)
        unknown = sorted(set(sources) - set(INIT_PARTS))
        if unknown:
            raise ValueError(f"init_from keys must be among {INIT_PARTS}, got {unknown}")
        for part, source in sources.items():
            if source == "tokenizer":
                if not tokenizer_path:
                    raise ValueError("init_from 'tokenizer' needs the DataModule's tokenizer to come from a folder (data tokenizer: PATH)")
                source = tokenizer_path
            logger.info("init_from: %s", initialize_from(self.model, source, part=part, tokenizer=tokenizer))

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
                objectives=self.objectives,
                tokenizer_info=tokenizer_meta,
                label_smoothing=hp.label_smoothing,
                local_chunk_size=hp.local_chunk_size,
                ssl_temperature=hp.ssl_temperature,
                ssl_embed_dim=hp.ssl_embed_dim,
                mlm_probability=hp.mlm_probability,
            )

    @property
    def model(self) -> Any:
        """The :class:`~velvet.models.velvet.VelvetModel` (after :meth:`configure_model`)."""
        return self.pretrainer.model

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "heads": self.pretrainer.heads}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # enough to rebuild the model without the DataModule (load_from_checkpoint, export)
        checkpoint["velvet"] = {
            "format_version": 2,
            "model_config": self.model_config.to_dict(),
            "objectives": list(self.objectives),
            "tokenizer": self.tokenizer_meta,
        }
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "contract"):
            checkpoint["velvet"]["preprocess"] = datamodule.contract.to_dict()
            checkpoint["velvet"]["tokenizer_dir"] = str(getattr(datamodule, "tokenizer_dir", "") or "")
            tokenizer = getattr(datamodule, "tokenizer", None)
            if tokenizer is not None:  # the vocabulary is small: carry it, so exports never lose it
                checkpoint["velvet"]["tokenizer_files"] = _tokenizer_files(tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from velvet.models.legacy import upgrade_checkpoint

        v1 = "objectives" in checkpoint.get("velvet", {}).get("model_config", {})
        upgrade_checkpoint(checkpoint)  # v1: objective heads move from the model to the pretrainer
        if v1 and self._trainer is not None and checkpoint.get("optimizer_states"):
            raise ValueError(
                "this checkpoint was written by velvet 0.1 (format v1): its weights load (export, init_from), "
                "but its optimiser state does not fit the current parameter order; start a new run with "
                "init_from: <the checkpoint> instead of resuming it"
            )
        if self.pretrainer is None and "velvet" in checkpoint:
            meta = checkpoint["velvet"]
            self._build(VelvetConfig.from_dict(meta["model_config"]), meta["tokenizer"])

    # ------------------------------------------------------------------ steps

    def _weighted(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        total = sum(
            self.loss_weights[o] * out[name] for o in self.objectives for name in OBJECTIVES[o].terms if name in out
        )
        return total  # type: ignore[return-value]

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every sample of the batch was skipped by the data error policy
            return None
        size = batch["image"].shape[0]
        if not self.automatic_optimization:
            return self._manual_step(batch, size)
        out = self.pretrainer(batch, self.step_generator(self.global_step))
        loss = self._weighted(out)
        self.log_terms("train", out, loss, size)
        return loss

    def _manual_step(self, batch: dict[str, Any], size: int) -> None:
        from torch.nn.parallel import DistributedDataParallel

        from velvet.pretraining.negative_cache import average_gradients, cached_negatives_step

        opt = self.optimizers()
        opt.zero_grad()
        step = self.global_step
        sync: dict[str, Any] = {}
        wrapper = self.trainer.strategy.model
        if isinstance(wrapper, DistributedDataParallel):
            # Lightning prepares DDP's reducer on every manual_backward, and the first of this step's
            # backward calls reaches only the temperature ("parameters that were not used"): run them
            # all without DDP's sync, then average the summed gradients over the ranks once
            sync = {
                "no_sync": wrapper.no_sync,
                "sync_gradients": lambda: average_gradients(self.parameters(), group=wrapper.process_group),
            }
        out = cached_negatives_step(
            self.pretrainer,
            batch,
            self.hparams.negative_cache_micro_batch,
            weights=self.loss_weights,
            backward=self.manual_backward,
            generator_factory=lambda i: self.step_generator(step, stage=10 + i),
            **sync,
        )
        if self.hparams.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val, gradient_clip_algorithm="norm")
        opt.step()
        self.lr_schedulers().step()
        self.log_terms("train", out, out["loss"], size)

    def _eval_step(self, batch: dict[str, Any] | None, batch_idx: int, stage: str) -> None:
        if batch is None:
            return
        out = self.pretrainer(batch, self.step_generator(batch_idx, stage=2))
        self.log_terms(stage, out, self._weighted(out), batch["image"].shape[0])
        if "image_embedding" in out:
            # the dataset index travels with the embeddings: under DDP it identifies the repeats the
            # distributed sampler pads the split with (None: a batch from a loader without indices)
            self._val_embeddings.append(
                (out["image_embedding"].float(), out["text_embedding"].float(), batch.get("index"))
            )

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
        indices = [e[2] for e in self._val_embeddings]
        index = torch.cat(indices).to(image.device) if all(i is not None for i in indices) else None
        self._val_embeddings.clear()
        if self.trainer.world_size > 1:  # the gallery is the whole split, not one rank's shard
            from velvet.metrics.retrieval import deduplicate_by_index

            image = self.all_gather(image).flatten(0, 1)
            text = self.all_gather(text).flatten(0, 1)
            if index is not None:
                # DistributedSampler repeats samples so every rank gets as many: count each case once
                # (5 cases on 2 ranks would otherwise give a gallery of 6 with a duplicated pair)
                index = self.all_gather(index).flatten(0, 1)
                image, text = deduplicate_by_index(index, image, text)
            else:
                logger.warning("%s batches carry no 'index': the gallery may count padded repeats", stage)
        metrics = retrieval_metrics(image @ text.T, ks=tuple(self.hparams.retrieval_ks), prefix=f"{stage}/")
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_end(self) -> None:
        self._retrieval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._retrieval_epoch_end("test")


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
