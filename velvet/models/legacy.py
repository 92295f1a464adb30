"""Reading what earlier velvet versions wrote: format-v1 pretrained directories and checkpoints.

Format v1 (velvet 0.1) kept the pretraining objectives' heads inside the model (``heads.ssl_*``,
``heads.txt_mlm``, ``heads.itm``, ``heads.mm_mlm``) and listed the objectives in the architecture.
Since format v2 the model holds only the encoders, the image-text projections, the temperature and
the visual adapter; the objective heads belong to the pretrainer. Loading v1 therefore drops those
heads from a pretrained directory, and moves them to the pretrainer in a Lightning checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from velvet.models.config import upgrade_v1_architecture

__all__ = ["V1_OBJECTIVE_HEADS", "drop_v1_objective_heads", "upgrade_checkpoint"]

# the v1 model heads that belong to the pretraining objectives
V1_OBJECTIVE_HEADS = ("ssl_rotation", "ssl_contrast", "ssl_recon", "txt_mlm", "itm", "mm_mlm")
_MODEL = "pretrainer.model."


def _objective_head(key: str, prefix: str = "") -> str | None:
    """The v1 objective head a model key belongs to, or None."""
    rest = key[len(prefix) :] if key.startswith(prefix) else None
    if rest is None or not rest.startswith("heads."):
        return None
    name = rest.split(".", 2)[1]
    return name if name in V1_OBJECTIVE_HEADS else None


def drop_v1_objective_heads(state: Mapping[str, Any]) -> dict[str, Any]:
    """A v1 model state dict without the objective heads (which a v2 model no longer has)."""
    return {k: v for k, v in state.items() if _objective_head(k) is None}


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Bring a v1 ``velvet fit`` checkpoint to the current layout, in place (and return it).

    The architecture loses its objective list (kept as ``checkpoint["velvet"]["objectives"]``), and
    ``pretrainer.model.heads.<objective head>.*`` weights move to ``pretrainer.heads.<...>.*``.
    A current checkpoint is returned unchanged.
    """
    meta = checkpoint.get("velvet")
    if not isinstance(meta, dict) or "objectives" not in meta.get("model_config", {}):
        return checkpoint
    architecture, objectives = upgrade_v1_architecture(meta["model_config"])
    meta["model_config"] = architecture
    meta.setdefault("objectives", list(objectives))
    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        for key in list(state):
            if _objective_head(key, _MODEL) is not None:
                state["pretrainer." + key[len(_MODEL) :]] = state.pop(key)
    return checkpoint
