"""LM token layouts of a batch: prompt + target with answer-only labels, and prompts for generation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["IGNORE", "generation_batch", "training_batch"]

IGNORE = -100  # label of positions that take no loss (prompt, padding), as Hugging Face expects


def _ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def training_batch(
    tokenizer: Any,
    prompts: Sequence[str],
    targets: Sequence[str],
    *,
    max_prompt_tokens: int,
    max_answer_tokens: int,
) -> dict[str, torch.Tensor]:
    """``BOS prompt target EOS`` per row, right-padded; labels on ``target EOS`` only.

    A long prompt loses its *start* (the question's end and the answer cue stay); a long target
    loses its end but keeps EOS, so the LM still learns to stop.

    Returns:
        ``input_ids`` ``(B, L)`` int64, ``attention_mask`` ``(B, L)`` bool, ``labels`` ``(B, L)``
        int64 (:data:`IGNORE` off the targets).
    """
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, labels = [], []
    for p, t in zip(
        _ids(tokenizer, prompts), _ids(tokenizer, [" " + t.strip() for t in targets]), strict=True
    ):
        head = ([bos] if bos is not None else []) + p[-max_prompt_tokens:]
        tail = t[: max_answer_tokens - 1] + [eos]
        rows.append(head + tail)
        labels.append([IGNORE] * len(head) + tail)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    lab = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lb)] = torch.tensor(lb)
    mask = torch.arange(length)[None] < torch.tensor([len(r) for r in rows])[:, None]
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def generation_batch(
    tokenizer: Any, prompts: Sequence[str], *, max_prompt_tokens: int
) -> dict[str, torch.Tensor]:
    """``BOS prompt`` per row, LEFT-padded (generation appends on the right).

    Returns:
        ``input_ids`` ``(B, L)`` int64 and ``attention_mask`` ``(B, L)`` bool.
    """
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    rows = [([bos] if bos is not None else []) + p[-max_prompt_tokens:] for p in _ids(tokenizer, prompts)]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = torch.tensor(r)
        mask[i, length - len(r) :] = True
    return {"input_ids": ids, "attention_mask": mask}
