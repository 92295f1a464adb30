"""Load a trained volume-language model from a ``VLMTask`` checkpoint (self-contained, offline)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["is_vlm_checkpoint", "load_vlm"]


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
    from velvet.tasks.vlm import build_from_meta

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
