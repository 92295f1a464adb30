"""Start a model (or one of its encoders) from existing weights: ``init_from`` for every task.

A source is one of:

* a velvet pretrained directory or a registered ``<arch>.<tag>`` name (:func:`from_pretrained`);
* a Lightning checkpoint written by ``velvet fit`` (``.ckpt``; its ``pretrainer.model.`` weights);
* for the text encoder, a Hugging Face BERT / CXR-BERT folder (``config.json`` with
  ``"model_type": "bert"`` and its weights), converted by :func:`velvet.models.convert.load_bert_weights`
  with the ``[SEN_k]`` rows copied from ``[CLS]``;
* for a Swin vision encoder, a MONAI self-supervised ``model_swinvit.pt`` (or any SwinUNETR layout);
  for a ViT, an M3D-CLIP / MONAI ViT checkpoint (the converters in :mod:`velvet.models.convert`).

Loading is strict with a readable diff, except where a part is documented as new (TriBERT's fusion
layers when starting from BERT).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["INIT_PARTS", "initialize_from"]

logger = logging.getLogger(__name__)

INIT_PARTS = ("model", "vision", "text")
_CKPT_PREFIX = "pretrainer.model."
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _is_hf_bert(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "bert" and config.get("format") is None


def _velvet_state(source: str | os.PathLike[str], part: str) -> dict[str, Any]:
    """The weights of ``part`` (``model``, ``vision``, ``text``) from a pretrained dir, name or ckpt."""
    path = Path(source)
    if path.is_file() and path.suffix == ".ckpt":
        from velvet.models.legacy import upgrade_checkpoint
        from velvet.models.weights import read_weights

        data = upgrade_checkpoint(read_weights(path))
        state = {k[len(_CKPT_PREFIX) :]: v for k, v in data.get("state_dict", {}).items() if k.startswith(_CKPT_PREFIX)}
        if not state:
            raise ValueError(f"{path}: not a velvet pretraining checkpoint (no {_CKPT_PREFIX!r} weights)")
    else:
        from velvet.models.pretrained import from_pretrained

        state = from_pretrained(source).state_dict()
    if part == "model":
        return state
    prefix = f"{part}."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def initialize_from(
    model: nn.Module,
    source: str | os.PathLike[str],
    *,
    part: str = "model",
    tokenizer: Any = None,
    strict: bool = True,
) -> str:
    """Load ``source`` into ``model`` (a :class:`~velvet.models.velvet.VelvetModel`) or one encoder of it.

    Args:
        model: the model to initialise (its architecture must fit the source).
        source: see the module docstring.
        part: ``model`` (everything the source and the model share: a saved model carries no
            pretraining heads), ``vision`` or ``text``.
        tokenizer: the :class:`~velvet.data.tokenization.TriBertTokenizer` the model was built for;
            needed for a BERT source (its ``[CLS]`` and ``[SEN_k]`` ids; its vocabulary must be the
            checkpoint's, which is checked).
        strict: fail on any missing, unexpected or mismatched weight.

    Returns:
        A one-line summary for logs.

    Raises:
        ValueError: unknown part, or a vocabulary that is not the BERT checkpoint's.
        velvet.models.weights.WeightsMismatchError: the weights do not fit (the message lists them).
    """
    from velvet.models.weights import load_state_dict_checked

    if part not in INIT_PARTS:
        raise ValueError(f"init_from part must be one of {INIT_PARTS}, got {part!r}")
    target = model if part == "model" else getattr(model, part)
    path = Path(source)
    if part == "text" and path.is_dir() and _is_hf_bert(path):
        return _from_bert(target, path, tokenizer, strict)
    if part == "vision" and path.is_file() and path.suffix in (".pt", ".pth", ".bin"):
        from velvet.models.convert import load_swin_weights, load_vit_weights

        arch = getattr(getattr(target, "config", None), "arch", "swin")
        loader = load_swin_weights if arch == "swin" else load_vit_weights
        report = loader(target, path, strict=strict)
        return f"vision encoder from {report.summary()}"
    state = _velvet_state(source, part)
    load_state_dict_checked(target, state, strict=strict, source=f"{source} ({part})")
    return f"{part} from {source}: {len(state)} tensors"


def _from_bert(text: nn.Module, folder: Path, tokenizer: Any, strict: bool) -> str:
    from velvet.models.convert import load_bert_weights

    if tokenizer is None:
        raise ValueError(f"{folder}: starting TriBERT from a BERT checkpoint needs the tokenizer the model is built for")
    _check_same_vocabulary(folder, tokenizer)
    weights = next((folder / n for n in _HF_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{folder}: no {' or '.join(_HF_WEIGHTS)} beside its config.json")
    report = load_bert_weights(
        text, weights, cls_token_id=tokenizer.cls_token_id, sen_token_ids=tokenizer.sen_token_ids, strict=strict
    )
    return f"text encoder from {report.summary()}"


def _check_same_vocabulary(folder: Path, tokenizer: Any) -> None:
    """Refuse a tokenizer whose token ids differ from the checkpoint's: the rows would be wrong words."""
    from transformers import AutoTokenizer

    source: Mapping[str, int] = AutoTokenizer.from_pretrained(str(folder)).get_vocab()
    ours: Mapping[str, int] = tokenizer.tokenizer.get_vocab()
    differ = [t for t, i in source.items() if ours.get(t) != i]
    if differ:
        raise ValueError(
            f"the tokenizer's vocabulary is not the one of {folder} ({len(differ)} of {len(source)} tokens have "
            f"other ids, e.g. {differ[:3]}): load the tokenizer from that folder (data tokenizer: {folder})"
        )
