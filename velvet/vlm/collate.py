"""Batch assembly for volume-language models: volumes stacked, LM and TriBERT text tokenised batch-wise.

Lightning-free, so that training (:mod:`velvet.vlm.datamodule`), evaluation and ``velvet
generate`` build batches the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["VLMCollator", "sample_texts"]


def sample_texts(
    sample: dict[str, Any], *, with_question: bool = True, expert: bool = False
) -> tuple[str, str]:
    """``(prompt, target)`` of a sample dict (keys ``question``, ``choices``, ``answer_index``,
    ``target``, and ``expert`` (the expert line) when ``expert``).

    Raises:
        ValueError: ``expert`` and the sample has no expert line (names the sample).
    """
    from velvet.vlm.prompts import closed_target, prompt_text

    context = None
    if expert:
        context = sample.get("expert")
        if not context:
            raise ValueError(
                f"sample {sample.get('id')!r} has no expert line, and the model was trained with one in "
                "its prompt (give the expert file, or run a segmentation model: `velvet expert`)"
            )
    choices = sample.get("choices") or ()
    prompt = prompt_text(sample.get("question"), choices, with_question=with_question, context=context)
    if choices:
        return prompt, closed_target(choices, int(sample["answer_index"]))
    return prompt, sample["target"]


class VLMCollator:
    """Stack volumes; tokenise prompts + targets for the LM and questions for TriBERT, batch-wise.

    Args:
        lm_tokenizer: the LM's tokenizer.
        question_tokenizer: the encoder's :class:`~velvet.data.tokenization.TriBertTokenizer` for
            fusion bridges, or None.
        with_question: write the question into the LM prompt (``VLMConfig.question_in_prompt``).
        expert: put each sample's expert line first in the prompt (``VLMConfig.expert_prompt``).
        max_prompt_tokens, max_answer_tokens: LM token limits (``VLMConfig``).
    """

    def __init__(
        self,
        lm_tokenizer: Any,
        question_tokenizer: Any = None,
        *,
        with_question: bool = True,
        expert: bool = False,
        max_prompt_tokens: int = 128,
        max_answer_tokens: int = 256,
    ) -> None:
        self.lm_tokenizer = lm_tokenizer
        self.question_tokenizer = question_tokenizer
        self.with_question = with_question
        self.expert = expert
        self.max_prompt_tokens = max_prompt_tokens
        self.max_answer_tokens = max_answer_tokens

    @classmethod
    def for_model(cls, model: Any) -> VLMCollator:
        """The collator a :class:`~velvet.vlm.model.VolumeLanguageModel` reads: its tokenizers, its
        prompt settings, TriBERT questions only for the fusion bridges."""
        cfg = model.config
        return cls(
            model.lm_tokenizer,
            model.encoder.tokenizer if model.bridge_proj is not None else None,
            with_question=cfg.question_in_prompt,
            expert=cfg.expert_prompt,
            max_prompt_tokens=cfg.max_prompt_tokens,
            max_answer_tokens=cfg.max_answer_tokens,
        )

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        from velvet.vlm.lm_batch import training_batch
        from velvet.vlm.prompts import REPORT_INSTRUCTION

        texts = [sample_texts(s, with_question=self.with_question, expert=self.expert) for s in samples]
        batch: dict[str, Any] = {
            "image": torch.stack([s["image"] for s in samples]),
            "ids": [s["id"] for s in samples],
            "case_ids": [s["case_id"] for s in samples],
            "questions": [s.get("question") for s in samples],
            "choices": [list(s.get("choices") or ()) for s in samples],
            "answer_index": [s.get("answer_index") for s in samples],
            "targets": [s["target"] for s in samples],
            "kinds": [s["kind"] for s in samples],
            "question_types": [s["question_type"] for s in samples],
            "prompts": [p for p, _ in texts],
        }
        batch.update(
            training_batch(
                self.lm_tokenizer,
                batch["prompts"],
                [t for _, t in texts],
                max_prompt_tokens=self.max_prompt_tokens,
                max_answer_tokens=self.max_answer_tokens,
            )
        )
        # yes/no items for the classification head: 1 yes, 0 no, -1 any other item
        batch["yes_no"] = torch.tensor([_yes_no(s) for s in samples], dtype=torch.long)
        if self.question_tokenizer is not None:
            # TriBERT reads the question (and its options); a report's "question" is the instruction
            questions = [
                _question_with_choices(s.get("question") or REPORT_INSTRUCTION, s.get("choices") or ())
                for s in samples
            ]
            batch["question"] = dict(self.question_tokenizer(questions))
        return batch


def _question_with_choices(question: str, choices: Sequence[str]) -> str:
    # the reference appends ", choice_A: ..., choice_B: ..." for closed questions
    if not choices:
        return question
    return question + " " + " ".join(f"Option {chr(65 + i)}: {c}." for i, c in enumerate(choices))


def _yes_no(sample: dict[str, Any]) -> int:
    choices = [c.strip().lower() for c in sample.get("choices") or ()]
    if sorted(choices) != ["no", "yes"] or sample.get("answer_index") is None:
        return -1
    return int(choices[int(sample["answer_index"])] == "yes")
