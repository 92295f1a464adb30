"""Image-text score matrices at each alignment level, as the pretraining losses saw them.

- ``report``: ``logit_scale * cos(image embedding, text embedding)``, the report-level ITC logit.
- ``sentence`` / ``word``: the local score of :func:`velvet.losses.local_alignment.local_similarity`
  between the projected regions of the image's sentence / word map and the text's projected units,
  with the model's own local settings (:func:`local_settings`: attention, temperatures and
  aggregation from its config, i.e. what its local losses used).

The multi-level score of a pair is ``sum_level weight_level * score_level``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["LEVELS", "level_scores", "local_settings", "multi_level_scores"]

LEVELS = ("report", "sentence", "word")


def local_settings(model: Any) -> dict[str, Any]:
    """The local-score settings of ``model`` (from its config): ``attention``, ``temperatures``, ``agg``."""
    cfg = model.config
    return {
        "attention": cfg.local_attention,
        "temperatures": [float(t) for t in cfg.local_temperatures],
        "agg": cfg.local_agg,
    }


@torch.no_grad()
def level_scores(
    model: Any,
    image: Mapping[str, torch.Tensor],
    text: Mapping[str, torch.Tensor],
    level: str,
    *,
    chunk_size: int = 8,
) -> torch.Tensor:
    """``(N_image, N_text)`` scores of one level.

    Args:
        model: the :class:`~velvet.models.velvet.VelvetModel` (its logit scale and local settings).
        image: features from :func:`~velvet.evaluation.embeddings.compute_features`
            (``embedding`` and/or ``<level>_regions``).
        text: features from :func:`~velvet.evaluation.text.encode_texts`.
        level: ``report``, ``sentence`` or ``word``.
        chunk_size: images scored at a time (bounds memory: chunk * R * N_text * T floats).
    """
    if level == "report":
        scale = float(model.logit_scale())
        return scale * (image["embedding"].float() @ text["embedding"].float().T)
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; known: {list(LEVELS)}")
    from velvet.losses.local_alignment import local_similarity

    local = local_settings(model)
    t1, t2, t3 = local["temperatures"]
    return local_similarity(
        image[f"{level}_regions"].float(), text[level].float(), text[f"{level}_mask"].bool(),
        temp1=t1, temp2=t2, temp3=t3, agg=local["agg"], attention=local["attention"], chunk_size=chunk_size,
    )  # fmt: skip


def multi_level_scores(
    model: Any,
    image: Mapping[str, torch.Tensor],
    text: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    **kwargs: Any,
) -> torch.Tensor:
    """``sum_level weights[level] * level_scores(level)`` over the levels with a non-zero weight."""
    used = {lv: float(w) for lv, w in weights.items() if float(w) != 0.0}
    if not used:
        raise ValueError("at least one level needs a non-zero weight")
    total: torch.Tensor | None = None
    for level, weight in used.items():
        part = weight * level_scores(model, image, text, level, **kwargs)
        total = part if total is None else total + part
    return total  # type: ignore[return-value]
