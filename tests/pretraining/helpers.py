"""Builders shared by the pretraining tests."""

from __future__ import annotations

import torch

from velvet.models.config import get_model_config
from velvet.models.velvet import VelvetModel
from velvet.pretraining.objectives import VelvetPretrainer
from velvet.pretraining.registry import OBJECTIVES, levels_for
from velvet.tasks.pretrain import _tokenizer_meta


def make_batch(tokenizer, reports, n: int, size: int = 32, seed: int = 0) -> dict:
    batch = dict(tokenizer(reports[:n]))
    batch["image"] = torch.rand(n, 1, size, size, size, generator=torch.Generator().manual_seed(seed))
    return batch


def make_pretrainer(
    tokenizer, *, objectives=None, dropout: float | None = None, pretrainer_kwargs=None, **overrides
) -> VelvetPretrainer:
    objectives = tuple(objectives) if objectives is not None else tuple(OBJECTIVES)
    config = get_model_config("velvet-tiny").replace(levels=levels_for(objectives))
    if dropout is not None:
        text = {**config.text, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        config = config.replace(text=text)
    if overrides:
        config = config.replace(**overrides)
    torch.manual_seed(0)
    model = VelvetModel(config.for_data(tokenizer=tokenizer))
    kwargs = {"ssl_embed_dim": 32, **(pretrainer_kwargs or {})}
    return VelvetPretrainer(model, objectives=objectives, tokenizer_info=_tokenizer_meta(tokenizer), **kwargs)
