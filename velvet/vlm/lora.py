"""LoRA on the causal LM through ``peft``, refusing targets that adapt nothing."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["apply_lora", "matching_modules"]


def matching_modules(model: nn.Module, target: str) -> list[str]:
    """Names of the ``nn.Linear``-like leaf modules that ``peft`` would adapt for ``target``.

    ``peft`` matches a plain name against the last name component(s) (``q_proj`` matches
    ``model.layers.0.self_attn.q_proj``) and a name with a regex character as a full regex.
    """
    names = [name for name, module in model.named_modules() if name and not list(module.children())]
    if re.search(r"[\\^$*+?()\[\]{}|]", target):
        return [n for n in names if re.fullmatch(target, n)]
    return [n for n in names if n == target or n.endswith(f".{target}")]


def apply_lora(lm: nn.Module, spec: Mapping[str, Any]) -> Any:
    """Wrap ``lm`` with LoRA adapters (``r``, ``alpha``, ``dropout``, ``target_modules``).

    Every target must match at least one module of the LM: the reference targeted "dense", which a
    Llama model does not have, and so silently adapted fewer layers than its config said.

    Returns:
        The ``peft`` model; only the adapters require gradients (freeze rules apply on top).

    Raises:
        ValueError: a target that matches no module (the message lists the LM's linear layer names).
    """
    from peft import LoraConfig, get_peft_model

    targets = list(spec["target_modules"])
    unmatched = [t for t in targets if not matching_modules(lm, t)]
    if unmatched:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"LoRA target(s) {unmatched} match no module of the LM; its linear layers are named {leaves}"
        )
    config = LoraConfig(
        r=int(spec["r"]),
        lora_alpha=float(spec["alpha"]),
        lora_dropout=float(spec.get("dropout", 0.0)),
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(lm, config)
