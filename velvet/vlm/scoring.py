"""Closed-question scoring without parsing: the option the LM finds most likely after the prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["OPTION_SCORE_DEFINITION", "option_scores"]

OPTION_SCORE_DEFINITION = (
    "option log-likelihood: for each option, the sum of the LM's log-probabilities of the target "
    "'<letter>. <option>' + EOS after the soft prompt and the prompt; the chosen option is the argmax "
    "(ties: the first); yes/no AUROC scores softmax over the two options' log-likelihoods"
)


@torch.no_grad()
def option_scores(model: Any, batch: Mapping[str, Any], rows: Sequence[int]) -> list[torch.Tensor]:
    """Log-likelihood of every option of the closed items ``rows`` of a collated batch.

    The prefix of each item is computed once and repeated for its options, and all (item, option)
    pairs go through the LM in one batch.

    Args:
        model: the :class:`~velvet.vlm.model.VolumeLanguageModel`.
        batch: a batch of :class:`~velvet.vlm.datamodule.VLMCollator` (``image``, ``prompts``,
            ``choices``, optional ``question``).
        rows: indices of the closed items to score.

    Returns:
        One ``(n_options,)`` float tensor per row, in ``rows`` order.
    """
    from velvet.vlm.lm_batch import training_batch
    from velvet.vlm.prompts import closed_target

    rows = list(rows)
    if not rows:
        return []
    index = torch.tensor(rows, device=batch["image"].device)
    question = batch.get("question")
    if question is not None:
        question = {k: v[index] for k, v in question.items()}
    prefix, prefix_mask = model.prefix(batch["image"][index], question)
    counts = [len(batch["choices"][i]) for i in rows]
    repeat = torch.repeat_interleave(
        torch.arange(len(rows), device=prefix.device), torch.tensor(counts, device=prefix.device)
    )
    prompts = [batch["prompts"][i] for i, n in zip(rows, counts, strict=True) for _ in range(n)]
    targets = [closed_target(batch["choices"][i], k) for i in rows for k in range(len(batch["choices"][i]))]
    cfg = model.config
    lm_batch = training_batch(
        model.lm_tokenizer, prompts, targets,
        max_prompt_tokens=cfg.max_prompt_tokens, max_answer_tokens=cfg.max_answer_tokens,
    )  # fmt: skip
    lm_batch = {k: v.to(prefix.device) for k, v in lm_batch.items()}
    scores = model.sequence_logprobs(prefix[repeat], prefix_mask[repeat], lm_batch)
    return list(torch.split(scores, counts))
