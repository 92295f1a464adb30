"""Text features for evaluation: report embeddings and projected sentences / words, batched."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["encode_texts"]


@torch.no_grad()
def encode_texts(
    model: Any, texts: Sequence[str], levels: Sequence[str] = ("report",), batch_size: int = 64
) -> dict[str, Any]:
    """Encode texts with the model's tokenizer.

    Args:
        model: a :class:`~velvet.models.velvet.VelvetModel` with a ``tokenizer``.
        texts: the strings.
        levels: ``report`` (embedding), ``sentence`` and/or ``word`` (projected units).
        batch_size: texts per forward pass.

    Returns:
        ``embedding`` ``(N, E)`` L2-normalised when ``report`` is asked; ``<level>`` ``(N, T, E)``
        projected units padded to the longest text and ``<level>_mask`` ``(N, T)`` bool for the
        local levels; all on the CPU.
    """
    if model.tokenizer is None:
        raise RuntimeError("the model has no tokenizer (load it with from_pretrained)")
    if not texts:
        raise ValueError("no texts to encode")
    missing = [lv for lv in levels if f"text_{lv}" not in model.heads]
    if missing:
        raise ValueError(f"the model has no {missing} projection (its levels: {list(model.config.levels)})")
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(texts), batch_size):
        batch = model.tokenizer(list(texts[start : start + batch_size]))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        encoded = model.encode_text(batch)
        if "report" in levels:
            parts.setdefault("embedding", []).append(encoded["embedding"].float().cpu())
        for level in ("sentence", "word"):
            if level in levels:
                units, mask = model.text_units(encoded, level)
                parts.setdefault(level, []).append(units.float().cpu())
                parts.setdefault(f"{level}_mask", []).append(mask.bool().cpu())
    out: dict[str, Any] = {}
    for key, chunks in parts.items():
        if chunks[0].ndim == 2 and key == "embedding":
            out[key] = torch.cat(chunks)
            continue
        longest = max(c.shape[1] for c in chunks)
        # pad every batch to the longest text; padded units are masked out
        pad = [
            F.pad(c, (0, 0, 0, longest - c.shape[1])) if c.ndim == 3 else F.pad(c, (0, longest - c.shape[1]))
            for c in chunks
        ]
        out[key] = torch.cat(pad)
    return out
