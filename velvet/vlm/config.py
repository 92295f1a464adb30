"""The architecture of a volume-language model, as data (saved next to its weights)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BRIDGES", "VLMConfig"]

# "fusion": the method's bridge (question through TriBERT fusion layers -> projection);
# "visual": the visual tokens themselves (M3D-LaMed-style); "both": visual tokens, then fusion states
BRIDGES = ("fusion", "visual", "both")


@dataclass(frozen=True)
class VLMConfig:
    """How velvet's encoders prompt a causal LM.

    Attributes:
        bridge: ``fusion``, ``visual`` or ``both`` (see :data:`BRIDGES`).
        visual_levels: vision maps that give visual tokens (indices into the encoder's maps, fine ->
            coarse; ``[-1]`` is the top map).
        visual_pool: adaptive average pooling of each such map to at most ``pool`` cells per axis
            before it becomes tokens (token reduction; None keeps every voxel).
        lm: the causal LM: ``{"path": local folder}`` (any Hugging Face causal LM) or
            ``{"config": {"model_type": "llama", ...}}`` (built from a config, random weights).
        lora: ``{"r", "alpha", "dropout", "target_modules"}`` for ``peft`` LoRA on the LM, or None
            (the LM is trained fully or frozen, as ``freeze`` says).
        freeze: part -> frozen: ``vision``, ``text`` (TriBERT below the fusion layers), ``fusion``
            (fusion layers and visual adapter), ``lm`` (the LM's own weights; LoRA stays trainable).
        question_in_prompt: also give the question (and options) to the LM as text after the
            prefix (M3D-LaMed does; the method's bridge carries the question only through TriBERT).
        expert_prompt: the prompt starts with the scan's expert line (a segmentation model's
            findings as text, :mod:`velvet.vlm.expert`); training, evaluation and generation then
            need one for every scan.
        max_prompt_tokens: LM tokens kept of the text prompt (expert line + question + options),
            cut from the left.
        max_answer_tokens: LM tokens kept of the answer or report (+ EOS).
        yes_no_head: also train the method's yes/no classifier (method.md 6.4: an MLP on the fused
            question's ``[CLS]``, BCE on the yes/no items); needs a ``fusion`` or ``both`` bridge.
        yes_no_weight: weight of its loss beside the answer loss.
    """

    bridge: str = "visual"
    visual_levels: tuple[int, ...] = (-1,)
    visual_pool: int | None = None
    lm: dict[str, Any] = field(default_factory=lambda: {"config": {"model_type": "llama"}})
    lora: dict[str, Any] | None = field(
        default_factory=lambda: {
            "r": 8,
            "alpha": 32,
            "dropout": 0.05,
            "target_modules": ["q_proj", "k_proj", "v_proj"],
        }
    )
    freeze: dict[str, bool] = field(
        default_factory=lambda: {"vision": True, "text": True, "fusion": False, "lm": True}
    )
    question_in_prompt: bool = True
    expert_prompt: bool = False
    max_prompt_tokens: int = 128
    max_answer_tokens: int = 256
    yes_no_head: bool = False
    yes_no_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.bridge not in BRIDGES:
            raise ValueError(f"bridge must be one of {BRIDGES}, got {self.bridge!r}")
        levels = (self.visual_levels,) if isinstance(self.visual_levels, int) else tuple(self.visual_levels)
        if not levels:
            raise ValueError("visual_levels needs at least one vision map index")
        object.__setattr__(self, "visual_levels", tuple(int(i) for i in levels))
        if self.visual_pool is not None and self.visual_pool < 1:
            raise ValueError(f"visual_pool must be >= 1 or None, got {self.visual_pool}")
        if set(self.lm) - {"path", "config"} or len(self.lm) != 1:
            raise ValueError(f"lm must be {{'path': folder}} or {{'config': {{...}}}}, got {self.lm!r}")
        unknown = sorted(set(self.freeze) - {"vision", "text", "fusion", "lm"})
        if unknown:
            raise ValueError(f"unknown freeze part(s) {unknown}; known: vision, text, fusion, lm")
        object.__setattr__(
            self, "freeze", {"vision": True, "text": True, "fusion": False, "lm": True, **self.freeze}
        )
        if self.lora is not None:
            missing = sorted({"r", "alpha", "target_modules"} - set(self.lora))
            if missing:
                raise ValueError(f"lora needs {missing}")
        if self.max_prompt_tokens < 1 or self.max_answer_tokens < 2:
            raise ValueError("max_prompt_tokens must be >= 1 and max_answer_tokens >= 2")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["visual_levels"] = list(self.visual_levels)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLMConfig:
        """Build from a dict (unknown keys are an error that names them)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown VLM config field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))
