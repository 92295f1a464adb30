"""Train a volume-language model (VQA or report generation): ``velvet fit --config recipes/vqa/...``.

The task builds, in ``configure_model`` (after the DataModule's setup):

1. the encoder from a pretrained velvet model (``encoder``: a registry name or folder); for a
   fusion bridge on an encoder without fusion layers, ``fusion_layers: N`` adds N new ones (random
   weights, trained here) on top of the pretrained text layers;
2. the causal LM (``vlm.lm``: a local Hugging Face folder, or a config with a byte-level BPE
   vocabulary trained on the training split's texts);
3. the :class:`~velvet.vlm.model.VolumeLanguageModel` (bridge, projections, LoRA, freezing),

checks that the data's preprocessing contract is the encoder's, and hands the tokenizers to the
DataModule. Validation logs the answer-token loss and, for closed items, the accuracy of choosing
the option with the highest log-likelihood (no generation; ``velvet evaluate vqa`` generates).
Checkpoints carry everything needed to rebuild the model without the encoder's source or the data.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from velvet.tasks.base import VelvetTask

__all__ = ["VLMTask"]

logger = logging.getLogger(__name__)


class VLMTask(VelvetTask):
    """Fine-tune a :class:`~velvet.vlm.model.VolumeLanguageModel`.

    Args:
        encoder: the pretrained velvet model (registry name, folder).
        vlm: :class:`~velvet.vlm.config.VLMConfig` fields (bridge, visual levels / pooling, lm,
            lora, freeze, prompt limits).
        fusion_layers: add this many fusion layers (and a visual adapter) to an encoder that has
            none, for the ``fusion`` / ``both`` bridges; None: use the encoder as it is.
        lm_vocab_size: vocabulary size of the BPE trained for a config-built LM.
        lr, weight_decay, betas, warmup_steps, min_lr, gradient_clip_val, seed: optimisation.
    """

    def __init__(
        self,
        *,
        encoder: str = "velvet-tiny.phantoms",
        vlm: dict[str, Any] | None = None,
        fusion_layers: int | None = None,
        lm_vocab_size: int = 2000,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int | float = 0.05,
        min_lr: float = 1e-5,
        gradient_clip_val: float | None = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from velvet.vlm.config import VLMConfig

        self.vlm_config = VLMConfig.from_dict(vlm or {})
        self.vlm: Any = None
        self._meta: dict[str, Any] | None = None

    # ------------------------------------------------------------------ building

    @property
    def model(self) -> Any:
        """The :class:`~velvet.vlm.model.VolumeLanguageModel` (after :meth:`configure_model`)."""
        return self.vlm

    def configure_model(self) -> None:
        if self.vlm is not None or self._trainer is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "set_collator"):
            raise RuntimeError("VLMTask needs a VLMDataModule")
        has_expert = getattr(datamodule, "expert", None) is not None
        if has_expert != self.vlm_config.expert_prompt:
            raise ValueError(
                "vlm.expert_prompt is "
                f"{self.vlm_config.expert_prompt} but the data {'gives' if has_expert else 'gives no'} expert "
                "file: set both (data expert: expert.jsonl and vlm expert_prompt: true) or neither"
            )
        from velvet.models.pretrained import from_pretrained

        hp = self.hparams
        encoder = from_pretrained(hp.encoder)
        if (
            encoder.preprocess is not None
            and encoder.preprocess.fingerprint() != datamodule.contract.fingerprint()
        ):
            raise ValueError(
                f"the data's preprocessing contract differs from the encoder's ({hp.encoder}): data "
                f"{datamodule.contract.to_dict()} vs encoder {encoder.preprocess.to_dict()}; set the data's "
                "preprocess to the encoder's"
            )
        encoder = _with_fusion(encoder, hp.fusion_layers, seed=hp.seed)
        lm_tokenizer = None
        if "config" in self.vlm_config.lm:
            from velvet.vlm.language_model import train_lm_tokenizer

            lm_tokenizer = train_lm_tokenizer(datamodule.training_texts(), vocab_size=hp.lm_vocab_size)
        self._build(encoder, lm_tokenizer, datamodule.contract)
        from velvet.vlm.collate import VLMCollator

        datamodule.set_collator(VLMCollator.for_model(self.vlm))
        logger.info("volume-language model: trainable parameters %s", self.vlm.trainable_parameter_count())

    def _build(self, encoder: Any, lm_tokenizer: Any, contract: Any) -> None:
        from velvet.vlm.language_model import load_causal_lm
        from velvet.vlm.model import VolumeLanguageModel

        with torch.random.fork_rng(devices=[]):  # new weights depend on the seed alone
            torch.manual_seed(self.hparams.seed)
            lm, lm_tokenizer = load_causal_lm(self.vlm_config.lm, lm_tokenizer)
            self.vlm = VolumeLanguageModel(encoder, lm, lm_tokenizer, self.vlm_config)
        self.vlm.encoder.preprocess = contract
        from velvet.vlm.load import model_meta

        self._meta = model_meta(self.vlm, str(self.hparams.encoder))

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.vlm}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["velvet"] = dict(self._meta or {})

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from velvet.vlm.load import build_from_meta

        if self.vlm is None and checkpoint.get("velvet", {}).get("kind") == "vlm":
            self.vlm = build_from_meta(checkpoint["velvet"])
            self._meta = dict(checkpoint["velvet"])

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.vlm(batch)
        self.log_terms("train", _terms(out), out["loss"], batch_size=len(batch["ids"]))
        return out["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self.vlm(batch)
        n = len(batch["ids"])
        self.log_terms("val", _terms(out), out["loss"], batch_size=n)
        closed = [i for i, c in enumerate(batch["choices"]) if c]
        if closed:
            from velvet.vlm.scoring import option_scores

            picks = [int(s.argmax()) for s in option_scores(self.vlm, batch, closed)]
            right = sum(int(p == batch["answer_index"][i]) for p, i in zip(picks, closed, strict=True))
            self.log("val/closed_accuracy_loglik", right / len(closed), batch_size=len(closed), on_epoch=True,
                     sync_dist=True, prog_bar=True)  # fmt: skip


def _terms(out: dict[str, Any]) -> dict[str, Any]:
    return {k: out[k] for k in ("answer_loss", "yes_no_loss") if k in out}


def _with_fusion(encoder: Any, n_layers: int | None, *, seed: int) -> Any:
    """``encoder`` with ``n_layers`` new fusion layers when it has none (pretrained weights kept)."""
    if n_layers is None or encoder.has_fusion:
        if n_layers is not None:
            logger.info("fusion_layers=%d ignored: the encoder has fusion layers of its own", n_layers)
        return encoder
    from velvet.models.velvet import VelvetModel

    config = encoder.config.replace(
        text={**encoder.config.text, "num_fusion_layers": int(n_layers)}, visual_adapter=True
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        grown = VelvetModel(config)
    missing, unexpected = grown.load_state_dict(encoder.state_dict(), strict=False)
    new = [
        k
        for k in missing
        if not (k.startswith("text.fusion_layers.") or k.startswith("heads.visual_adapter."))
    ]
    if new or unexpected:
        raise RuntimeError(
            f"adding fusion layers changed other weights: missing {new}, unexpected {unexpected}"
        )
    grown.tokenizer, grown.preprocess = encoder.tokenizer, encoder.preprocess
    return grown
