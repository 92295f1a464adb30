"""Load a trained volume-language model from a ``VLMTask`` checkpoint (self-contained, offline)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["VLM_FILE", "build_from_meta", "is_vlm_checkpoint", "load_vlm", "model_meta", "save_vlm"]

VLM_FILE = "vlm.json"  # marks a saved volume-language model folder


def is_vlm_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Lightning checkpoint written by :class:`~velvet.tasks.vlm.VLMTask`."""
    p = Path(path)
    if p.suffix != ".ckpt" or not p.is_file():
        return False
    from velvet.models.weights import read_weights

    return read_weights(p).get("velvet", {}).get("kind") == "vlm"


def load_vlm(path: str | os.PathLike[str], *, device: str | None = None) -> Any:
    """The :class:`~velvet.vlm.model.VolumeLanguageModel` of a checkpoint or a saved folder, in eval mode.

    A ``VLMTask`` checkpoint and a :func:`save_vlm` folder both carry the architecture, both
    tokenizers and the preprocessing contract, so neither the encoder's source nor the training
    data is needed.

    Raises:
        ValueError: not a VLM checkpoint or folder, or weights that do not fit the architecture.
    """
    from velvet.models.weights import read_weights

    if Path(path).is_dir():
        return _load_folder(Path(path), device)
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
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
        lm_tokenizer = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    encoder.preprocess = PreprocessContract.from_dict(meta["preprocess"]) if meta.get("preprocess") else None
    lm_config = dict(meta["lm_config"])
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_config.pop("model_type"), **lm_config))
    return VolumeLanguageModel(encoder, lm, lm_tokenizer, VLMConfig.from_dict(meta["vlm_config"]))


def model_meta(model: Any, encoder_source: str) -> dict[str, Any]:
    """Everything :func:`build_from_meta` needs to rebuild ``model`` (checkpoints and folders store it)."""
    enc = model.encoder
    return {
        "kind": "vlm",
        "vlm_config": model.config.to_dict(),
        "encoder_source": encoder_source,
        "encoder_config": enc.config.to_dict(),
        "preprocess": enc.preprocess.to_dict() if enc.preprocess is not None else None,
        "tokenizer": {"config": enc.tokenizer.config()},
        "tokenizer_files": tokenizer_files(enc.tokenizer.tokenizer),
        "lm_config": _base_lm(model.lm).config.to_dict(),
        "lm_tokenizer_files": tokenizer_files(model.lm_tokenizer),
    }


def tokenizer_files(hf_tokenizer: Any) -> dict[str, str]:
    """A Hugging Face tokenizer's saved files as ``{name: text}``."""
    with tempfile.TemporaryDirectory() as tmp:
        hf_tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def _base_lm(lm: Any) -> Any:
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def save_vlm(
    model: Any, folder: str | os.PathLike[str], *, merge_lora: bool = False, encoder_source: str = ""
) -> Path:
    """Save a volume-language model as a folder: ``vlm.json`` + ``model.safetensors``.

    With ``merge_lora`` the LoRA updates are folded into the LM's weights (a plain LM that any
    code can use; ``vlm.json`` then records ``lora: merged`` and no adapter config); otherwise the
    adapters stay separate tensors (``lora: separate``), so the base LM weights are unchanged.
    The folder appears atomically.
    """
    import copy
    import json

    from safetensors.torch import save_file

    from velvet.utils.atomic import atomic_directory

    meta = model_meta(model, encoder_source)
    lora = model.config.lora
    model_to_save = model
    if lora is not None and merge_lora:
        model_to_save = copy.deepcopy(model)
        model_to_save.lm = model_to_save.lm.merge_and_unload()
        meta["vlm_config"] = {**meta["vlm_config"], "lora": None}
    meta["lora"] = None if lora is None else ("merged" if merge_lora else "separate")
    state = {k: v.detach().cpu().contiguous() for k, v in model_to_save.state_dict().items()}
    with atomic_directory(folder) as tmp:
        tmp = Path(tmp)
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / VLM_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return Path(folder)


def _load_folder(folder: Path, device: str | None) -> Any:
    import json

    from safetensors.torch import load_file

    if not (folder / VLM_FILE).is_file():
        raise ValueError(f"{folder}: not a saved volume-language model (no {VLM_FILE})")
    meta = json.loads((folder / VLM_FILE).read_text(encoding="utf-8"))
    model = build_from_meta(meta)
    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: weights do not fit vlm.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if device is not None:
        model.to(device)
    return model.eval()
