"""``velvet generate --model VLM.ckpt SCAN [--question "..."] [--choices A,B]``: answer or report.

With ``--question`` the volume-language model answers it (``--choices`` makes it a closed question:
the answer names an option, and the option log-likelihoods are printed too); without, it writes the
scan's report. Generation settings: ``--beams``, ``--max-new-tokens``, ``--no-repeat-ngram``. A
model trained with expert lines in its prompt needs ``--seg-model`` (a velvet segmentation model
is run on the scan first and its findings become the line) or ``--expert "Segmentation: ..."``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``generate`` subcommand."""
    parser = subparsers.add_parser(
        "generate",
        help="answer a question about a scan, or write its report, with a volume-language model",
        description="Generate with a volume-language model checkpoint (VQA answer or report).",
    )
    parser.add_argument("scan", help="volume file or DICOM folder")
    parser.add_argument(
        "--model", required=True, help="volume-language model checkpoint (.ckpt of velvet fit)"
    )
    parser.add_argument("--question", default=None, help="question (default: write the report)")
    parser.add_argument("--choices", default=None, help="comma-separated options of a closed question")
    parser.add_argument("--beams", type=int, default=1, help="beam search width (default 1: greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 32 (answer) / 200 (report)")
    parser.add_argument(
        "--no-repeat-ngram", type=int, default=0, help="no_repeat_ngram_size (default 0: off)"
    )
    parser.add_argument(
        "--seg-model",
        default=None,
        help="segmentation model whose findings go into the prompt (expert models)",
    )
    parser.add_argument(
        "--seg-overlap",
        type=float,
        default=None,
        help="the segmentation's sliding-window overlap (default: the model's); use what `velvet expert --overlap` used",
    )
    parser.add_argument("--expert", default=None, help="the expert line itself (instead of --seg-model)")
    parser.add_argument(
        "--organs",
        default=None,
        help="comma-separated organs of the expert line, as `velvet expert --organs` wrote them for training",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(func=run)


def generate(
    model: Any,
    scan: Any,
    question: str | None = None,
    choices: list[str] | None = None,
    *,
    expert: str | None = None,
    **generation: Any,
) -> dict[str, Any]:
    """Answer ``question`` about ``scan`` (or write its report) with a volume-language model.

    Args:
        expert: the scan's expert line (:mod:`velvet.vlm.expert`), for a model trained with one.

    Returns:
        ``{"text": ...}`` plus, for a closed question, ``choice`` (the parsed option or None) and
        ``option_loglik`` (option -> log-likelihood).
    """
    import torch

    from velvet.models.inference import prepare_volumes
    from velvet.vlm.collate import VLMCollator
    from velvet.vlm.lm_batch import generation_batch
    from velvet.vlm.prompts import parse_choice
    from velvet.vlm.scoring import option_scores

    device = next(model.parameters()).device
    image = prepare_volumes(scan, model.preprocess)[:1].to(device)
    cfg = model.config
    collate = VLMCollator.for_model(model)
    sample = {"image": image[0].cpu(), "id": "scan", "case_id": "scan", "question": question,
              "choices": list(choices or []), "answer_index": 0 if choices else None, "target": "",
              "kind": "closed" if choices else "open", "question_type": "user",
              **({"expert": expert} if expert else {})}  # fmt: skip
    batch = collate([sample])
    batch["image"] = image
    if "question" in batch:
        batch["question"] = {k: v.to(device) for k, v in batch["question"].items()}
    g = generation_batch(model.lm_tokenizer, batch["prompts"], max_prompt_tokens=cfg.max_prompt_tokens)
    generation.setdefault("max_new_tokens", 32 if question else 200)
    with torch.no_grad():
        text = model.generate(image, g["input_ids"].to(device), g["attention_mask"].to(device),
                              question=batch.get("question"), **generation)[0]  # fmt: skip
    out: dict[str, Any] = {"text": text}
    if choices:
        scores = option_scores(model, batch, [0])[0]
        out["choice"] = parse_choice(text, choices)
        out["option_loglik"] = {c: float(v) for c, v in zip(choices, scores, strict=True)}
    return out


def run(args: argparse.Namespace) -> int:
    """Generate; exit 1 with a message on a bad model or scan."""
    from velvet.data.errors import DataError
    from velvet.vlm.load import load_vlm

    choices = [c.strip() for c in args.choices.split(",")] if args.choices else None
    if choices and not args.question:
        print("error: --choices needs --question", file=sys.stderr)
        return 2
    generation = {"num_beams": args.beams, "do_sample": False, "no_repeat_ngram_size": args.no_repeat_ngram}
    if args.max_new_tokens is not None:
        generation["max_new_tokens"] = args.max_new_tokens
    if args.seg_model and args.expert:
        print("error: give --seg-model or --expert, not both", file=sys.stderr)
        return 2
    try:
        model = load_vlm(args.model, device=args.device)
        expert = args.expert
        if not model.config.expert_prompt and (args.seg_model or expert):
            raise ValueError("this model was trained without expert lines: leave out --seg-model / --expert")
        if model.config.expert_prompt and not (args.seg_model or expert):
            raise ValueError(
                "this model was trained with expert lines in its prompt: give --seg-model or --expert"
            )
        if args.seg_model:
            from velvet.segmentation.inference import load_segmentation_model
            from velvet.vlm.expert import expert_text
            from velvet.vlm.expert_file import DEFAULT_ORGANS, expert_for_scan

            seg = load_segmentation_model(args.seg_model, map_location=args.device)
            organs = [o.strip() for o in args.organs.split(",")] if args.organs else list(DEFAULT_ORGANS)
            found = expert_for_scan(seg, args.scan, device=args.device, overlap=args.seg_overlap)
            expert = expert_text(found, organs)
        result = generate(model, args.scan, args.question, choices, expert=expert, **generation)
        if expert:
            result["expert"] = expert
    except (DataError, OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        if expert:
            print(expert)
        print(result["text"])
        if choices:
            picked = "none" if result["choice"] is None else choices[result["choice"]]
            print(
                f"option named: {picked}; log-likelihoods: "
                + ", ".join(f"{c} {v:.2f}" for c, v in result["option_loglik"].items())
            )
    return 0
