"""Load a trained volume-language model from a ``VLMTask`` checkpoint (self-contained, offline)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["build_from_meta", "is_vlm_checkpoint", "load_vlm"]


def is_vlm_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Lightning checkpoint written by :class:`~velvet.tasks.vlm.VLMTask`."""
    p = Path(path)
    if p.suffix != ".ckpt" or not p.is_file():
        return False
    from velvet.models.weights import read_weights

    return read_weights(p).get("velvet", {}).get("kind") == "vlm"


def load_vlm(path: str | os.PathLike[str], *, device: str | None = None) -> Any:
    """The :class:`~velvet.vlm.model.VolumeLanguageModel` of a checkpoint, in eval mode.

    The checkpoint carries the architecture, both tokenizers and the preprocessing contract, so
    neither the encoder's source nor the training data is needed.

    Raises:
        ValueError: the file is not a VLM checkpoint, or its weights do not fit the architecture.
    """
    from velvet.models.weights import read_weights

    ckpt = read_weights(path)
    meta = ckpt.get("velvet", {})
    if meta.get("kind") != "vlm":
        raise ValueError(
            f"{path}: not a volume-language model checkpoint (velvet fit with VLMTask writes one)"
        )
    model = build_from_meta(meta)
    state = {k.removeprefix("vlm."): v for k, v in ckpt["state_dict"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the saved architecture: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if device is not None:
        model.to(device)
    return model.eval()


def build_from_meta(meta: dict[str, Any]) -> Any:
    """Rebuild a :class:`~velvet.vlm.model.VolumeLanguageModel` (random weights) from a checkpoint record."""
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from velvet.data.contract import PreprocessContract
    from velvet.data.tokenization import TriBertTokenizer
    from velvet.models.config import VelvetConfig
    from velvet.models.velvet import VelvetModel
    from velvet.vlm.config import VLMConfig
    from velvet.vlm.model import VolumeLanguageModel

    encoder = VelvetModel(VelvetConfig.from_dict(meta["encoder_config"]))
    with tempfile.TemporaryDirectory() as tmp:
        enc_dir, lm_dir = Path(tmp, "encoder"), Path(tmp, "lm")
        enc_dir.mkdir()
        lm_dir.mkdir()
        for folder, files in ((enc_dir, meta["tokenizer_files"]), (lm_dir, meta["lm_tokenizer_files"])):
            for name, text in files.items():
                if "/" in name or "\\" in name or name.startswith("."):
                    raise ValueError(f"checkpoint tokenizer file name {name!r} escapes its folder")
                (folder / name).write_text(text, encoding="utf-8")
        encoder.tokenizer = TriBertTokenizer.from_pretrained(enc_dir, **meta["tokenizer"]["config"])
        lm_tokenizer = PreTrainedTokenizerFast.from_pretrained(lm_dir)
    encoder.preprocess = PreprocessContract.from_dict(meta["preprocess"]) if meta.get("preprocess") else None
    lm_config = dict(meta["lm_config"])
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_config.pop("model_type"), **lm_config))
    return VolumeLanguageModel(encoder, lm, lm_tokenizer, VLMConfig.from_dict(meta["vlm_config"]))
