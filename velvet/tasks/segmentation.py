"""The segmentation task: fine-tune SwinUNETR from a pretrained velvet encoder (or from scratch).

Training: DiceCE loss (softmax, one-hot targets) on random patches. Validation and test: sliding-window
inference over whole volumes, argmax, and Dice / NSD / HD95 per class in millimetres
(:mod:`velvet.metrics.segmentation`), reset every epoch; logged as ``val/dice`` (mean over
foreground classes; the recipe's checkpoint callback keeps the best), ``val/dice/<class>`` and the
like. At test time the per-class table and the per-case rows are written as CSV and JSON with every
choice that shapes the numbers (spacing, ROI, overlap, NSD tolerance, metric definitions, contract).

The fine-tuning plan is explicit and logged once at the start of fit: where the encoder came from,
whether it is frozen (and for how many steps), and its learning rate. Nothing overrides the recipe.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import torch

from velvet.metrics.segmentation import METRIC_DEFINITIONS, CaseScores, SegmentationMetrics
from velvet.tasks.base import VelvetTask

__all__ = ["SegmentationTask"]

logger = logging.getLogger(__name__)

_ENCODER = "model.net.swinViT."


class SegmentationTask(VelvetTask):
    """Fine-tune a :class:`~velvet.models.segmentation.SegmentationModel`.

    Args:
        init_from: the pretrained encoder (:func:`velvet.models.segmentation_encoder.load_encoder`: a
            pretrained directory, a registry name, a pretraining ``.ckpt`` or a MONAI ``model_swinvit.pt``);
            None trains from random weights (the baseline).
        vision: the encoder architecture (``{"preset": "swin-sv", ...}``); None takes the one
            ``init_from`` records (a raw MONAI file records none: then it is required).
        class_names: the classes, background first; None takes the DataModule's.
        roi_size: patch and sliding-window size; None takes the DataModule's.
        norm_name: decoder normalisation (``instance``).
        freeze_encoder: keep the encoder's weights fixed ...
        unfreeze_after_steps: ... until this optimiser step (None: for the whole run).
        encoder_lr: learning rate of the encoder (None: ``lr``).
        lr, weight_decay, betas, warmup_steps, min_lr, gradient_clip_val, seed: optimisation
            (:class:`~velvet.tasks.base.VelvetTask`).
        dice_weight, ce_weight: weights of the Dice and cross-entropy terms.
        sw_overlap, sw_batch_size, sw_mode: sliding-window inference (MONAI).
        nsd_tolerance_mm: NSD tolerance in mm (one value or one per foreground class).
        val_surface_metrics: compute NSD and HD95 at validation too (test always does).
        results_dir: where the test tables go (default: ``<log dir>/segmentation_test``).
    """

    def __init__(
        self,
        *,
        init_from: str | None = None,
        vision: str | dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        roi_size: tuple[int, int, int] | None = None,
        norm_name: str = "instance",
        freeze_encoder: bool = False,
        unfreeze_after_steps: int | None = None,
        encoder_lr: float | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int | float = 0,
        min_lr: float = 1e-6,
        gradient_clip_val: float | None = None,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        sw_overlap: float = 0.25,
        sw_batch_size: int = 4,
        sw_mode: Literal["gaussian", "constant"] = "gaussian",
        nsd_tolerance_mm: float | list[float] = 2.0,
        val_surface_metrics: bool = True,
        results_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if unfreeze_after_steps is not None and not freeze_encoder:
            raise ValueError("unfreeze_after_steps needs freeze_encoder: true (the encoder is not frozen)")
        if unfreeze_after_steps is not None and unfreeze_after_steps < 1:
            raise ValueError(f"unfreeze_after_steps must be >= 1, got {unfreeze_after_steps}")
        if freeze_encoder and unfreeze_after_steps is None and encoder_lr is not None:
            raise ValueError("encoder_lr is set but the encoder stays frozen for the whole run")
        if freeze_encoder and init_from is None:
            logger.warning("freeze_encoder with no init_from: the encoder stays at its random initial weights")
        self.segmenter: Any = None  # built in configure_model, once the classes are known
        self.model_config: Any = None
        self.preprocess: Any = None
        self.encoder_source = f"random initialisation (seed {seed})"
        self.metrics: SegmentationMetrics | None = None
        self._encoder_frozen = False
        self._test_started = 0.0

    # ------------------------------------------------------------------ building

    def configure_model(self) -> None:
        """Build the model from the DataModule's classes, ROI and contract (Lightning calls this after setup)."""
        if self.segmenter is not None or self._trainer is None:
            return
        hp = self.hparams
        datamodule = getattr(self.trainer, "datamodule", None)
        names = hp.class_names or (datamodule.class_names if datamodule is not None and hasattr(datamodule, "class_names") else None)
        roi = hp.roi_size or getattr(datamodule, "roi_size", None)
        if not names or roi is None:
            raise RuntimeError("SegmentationTask needs class_names and roi_size, or a SegmentationDataModule that has them")
        if datamodule is not None and hasattr(datamodule, "class_names") and list(names) != datamodule.class_names:
            raise ValueError(f"class_names {list(names)} differ from the data's {datamodule.class_names}")
        saved = self._checkpoint_meta()
        if saved is not None:  # velvet test / fit --ckpt_path: the model exactly as it was saved
            self._build_from_checkpoint(saved, datamodule, names)
            return
        vision = hp.vision
        if vision is None and hp.init_from is None:
            # a checkpoint may still come (velvet test --ckpt_path): on_load_checkpoint builds the
            # saved model then, and a run without one stops at _require_model with the reason
            return
        if vision is None:
            from velvet.models.segmentation_encoder import encoder_config

            vision = encoder_config(hp.init_from)
            if vision is None:
                raise ValueError(f"{hp.init_from} does not record its architecture: give vision: {{preset: ...}}")
            vision = vision.to_dict()
        from velvet.models.segmentation import SegmentationConfig

        config = SegmentationConfig(
            class_names=tuple(names), vision=vision, roi_size=tuple(roi), norm_name=hp.norm_name,
            sw_overlap=hp.sw_overlap, sw_batch_size=hp.sw_batch_size, sw_mode=hp.sw_mode,
        )
        self._build(config)
        if hp.init_from is not None:
            from velvet.models.segmentation_encoder import load_encoder

            self.encoder_source = load_encoder(self.segmenter, hp.init_from)
        self.preprocess = getattr(datamodule, "contract", None)
        self.segmenter.preprocess = self.preprocess
        if hp.freeze_encoder:
            self.segmenter.set_encoder_trainable(False)
            self._encoder_frozen = True

    def _checkpoint_meta(self) -> dict[str, Any] | None:
        """The velvet record of the segmentation checkpoint the trainer is about to load, if any."""
        path = getattr(self.trainer, "ckpt_path", None)
        if not path or not str(path).endswith(".ckpt"):
            return None
        from velvet.models.weights import read_weights

        meta = read_weights(path).get("velvet", {})
        return dict(meta) if meta.get("kind") == "segmentation" else None

    def _build_from_checkpoint(self, meta: dict[str, Any], datamodule: Any, names: Any) -> None:
        from velvet.data.contract import PreprocessContract
        from velvet.models.segmentation import SegmentationConfig

        config = SegmentationConfig.from_dict(meta["model_config"])
        if names and tuple(names) != config.class_names:
            raise ValueError(f"the checkpoint's classes {list(config.class_names)} differ from the data's {list(names)}")
        contract = getattr(datamodule, "contract", None)
        saved = PreprocessContract.from_dict(meta["preprocess"]) if meta.get("preprocess") else None
        if contract is not None and saved is not None and contract.fingerprint() != saved.fingerprint():
            raise ValueError(
                "the data's preprocessing contract differs from the one the checkpoint was trained with: "
                f"data {contract.to_dict()} vs checkpoint {saved.to_dict()}; evaluate with the training contract"
            )
        self._build(config)
        self.encoder_source = str(meta.get("encoder_source", "checkpoint"))
        self.preprocess = contract or saved
        self.segmenter.preprocess = self.preprocess

    def _build(self, config: Any) -> None:
        from velvet.models.segmentation import SegmentationModel

        self.model_config = config
        with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed alone
            torch.manual_seed(self.hparams.seed)
            self.segmenter = SegmentationModel(config)
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(
            to_onehot_y=True, softmax=True, lambda_dice=self.hparams.dice_weight, lambda_ce=self.hparams.ce_weight
        )

    @property
    def model(self) -> Any:
        """The :class:`~velvet.models.segmentation.SegmentationModel` (after :meth:`configure_model`)."""
        return self.segmenter

    def _require_model(self) -> None:
        if self.segmenter is None:
            raise ValueError(
                "no segmentation model: give vision: {preset: ...} (random initialisation), init_from (a "
                "pretrained encoder) or a segmentation checkpoint (--ckpt_path)"
            )

    def configure_optimizers(self) -> dict[str, Any]:
        self._require_model()
        return super().configure_optimizers()

    def on_validation_start(self) -> None:
        self._require_model()

    def on_test_start(self) -> None:
        self._require_model()

    def lr_by_prefix(self) -> dict[str, float]:
        return {_ENCODER: float(self.hparams.encoder_lr)} if self.hparams.encoder_lr is not None else {}

    def optimizes_frozen_parameters(self) -> bool:
        # an encoder frozen for the first N steps must already be in the optimiser (AdamW skips it
        # while its gradients are None, so it neither moves nor decays)
        return self.hparams.unfreeze_after_steps is not None

    def on_fit_start(self) -> None:
        hp = self.hparams
        if hp.freeze_encoder:
            frozen = "frozen for the whole run" if hp.unfreeze_after_steps is None else f"frozen until step {hp.unfreeze_after_steps}"
        else:
            frozen = "trained from the first step"
        lr = f"lr {hp.lr:g}" + (f", encoder lr {hp.encoder_lr:g}" if hp.encoder_lr is not None else "")
        logger.info("segmentation fine-tuning: encoder %s; %s; %s", self.encoder_source, frozen, lr)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        after = self.hparams.unfreeze_after_steps
        if self._encoder_frozen and after is not None and self.global_step >= after:
            self.segmenter.set_encoder_trainable(True)
            self._encoder_frozen = False
            logger.info("step %d: encoder unfrozen (unfreeze_after_steps=%d)", self.global_step, after)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # enough to rebuild the model without the DataModule (velvet segment, export)
        checkpoint["velvet"] = {
            "kind": "segmentation",
            "model_config": self.model_config.to_dict(),
            "preprocess": self.preprocess.to_dict() if self.preprocess is not None else None,
            "encoder_source": self.encoder_source,
            "encoder_frozen": self._encoder_frozen,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("velvet", {})
        if self.segmenter is None and meta.get("kind") == "segmentation":
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            names = getattr(datamodule, "class_names", None) if datamodule is not None else None
            self._build_from_checkpoint(meta, datamodule, names)
        self._encoder_frozen = bool(meta.get("encoder_frozen", False))
        if self._encoder_frozen and self.segmenter is not None:
            self.segmenter.set_encoder_trainable(False)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        logits = self.segmenter(batch["image"])
        loss = self.loss(logits, batch["label_map"])
        self.log_terms("train", {}, loss, batch_size=int(batch["image"].shape[0]))
        return loss

    def _start_metrics(self, surface: bool) -> None:
        self.metrics = SegmentationMetrics(self.model_config.class_names, self.hparams.nsd_tolerance_mm, surface=surface)
        self._rows: list[tuple[int, CaseScores]] = []

    def on_validation_epoch_start(self) -> None:
        self._start_metrics(self.hparams.val_surface_metrics)

    def on_test_epoch_start(self) -> None:
        self._start_metrics(True)
        self._test_started = time.perf_counter()

    def _eval_step(self, batch: dict[str, Any] | None, stage: str) -> None:
        if batch is None:
            return
        assert self.metrics is not None
        logits = self.segmenter.predict_logits(batch["image"])
        loss = self.loss(logits, batch["label_map"])
        self.log_terms(stage, {}, loss, batch_size=1)
        pred = logits.argmax(1)
        for i, case_id in enumerate(batch["ids"]):
            row = self.metrics.update(pred[i], batch["label_map"][i, 0], batch["spacing"][i].tolist(), case_id)
            self._rows.append((int(batch["index"][i]), row))

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _gathered(self) -> SegmentationMetrics:
        """Every rank's rows, each case once (DDP pads the last batch with repeats)."""
        assert self.metrics is not None
        rows = self._rows
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.trainer.world_size > 1:
            gathered: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        unique = dict(sorted(rows, key=lambda r: r[0]))
        merged = SegmentationMetrics(self.metrics.class_names, self.metrics.nsd_tolerance_mm, surface=self.metrics.surface)
        merged.extend(list(unique.values()))
        return merged

    def _log_metrics(self, stage: str) -> SegmentationMetrics | None:
        if not self._rows and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return None
        metrics = self._gathered()
        if not metrics.cases:
            return None
        summary = metrics.summary()
        values = {f"{stage}/{k}": v for k, v in summary.items() if not math.isnan(v)}  # with the number of cases
        for row in metrics.per_class():
            for key in ("dice", "nsd", "hd95"):
                if not math.isnan(row[key]):
                    values[f"{stage}/{key}/{row['class']}"] = row[key]
        # the values are already the same on every rank (gathered): no second reduction
        self.log_dict(values, on_epoch=True, sync_dist=False, rank_zero_only=False)
        self.log(f"{stage}_dice", summary["dice"], prog_bar=True, logger=False)
        return metrics

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        metrics = self._log_metrics("test")
        if metrics is not None and self.trainer.is_global_zero:
            self._write_results(metrics, time.perf_counter() - self._test_started)

    # ------------------------------------------------------------------ results

    def results_directory(self) -> Path:
        if self.hparams.results_dir:
            return Path(self.hparams.results_dir)
        base = self.trainer.log_dir or self.trainer.default_root_dir
        return Path(base) / "segmentation_test"

    def _write_results(self, metrics: SegmentationMetrics, seconds: float) -> Path:
        from velvet.metrics.segmentation_report import write_segmentation_results

        hp = self.hparams
        datamodule = getattr(self.trainer, "datamodule", None)
        settings = {
            "roi_size": list(self.model_config.roi_size),
            "sw_overlap": hp.sw_overlap,
            "sw_batch_size": hp.sw_batch_size,
            "sw_mode": hp.sw_mode,
            "nsd_tolerance_mm": hp.nsd_tolerance_mm,
            "evaluated_on": "the preprocessed grid (spacing of the contract; see preprocess)",
            "background_counted": False,
            "postprocessing": "none (argmax)",
            "preprocess": self.preprocess.to_dict() if self.preprocess is not None else None,
            "preprocess_fingerprint": self.preprocess.fingerprint() if self.preprocess is not None else None,
            "encoder": self.encoder_source,
            "manifest": str(getattr(datamodule, "manifest_path", "")),
            "seed": hp.seed,
            "wall_time_s": round(seconds, 2),
        }
        out = write_segmentation_results(metrics, self.results_directory(), settings=settings, definitions=METRIC_DEFINITIONS)
        logger.info("segmentation test results written to %s", out)
        return out

