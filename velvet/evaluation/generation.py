"""The generative protocols: ``vqa`` (closed accuracy, yes/no AUROC, open NLG) and ``report``.

Both generate on the whole split, or on a declared seeded subset (``max_items``), with the
generation settings of the protocol (recorded). Closed questions are scored two ways: the option
a generated answer names (:func:`~velvet.vlm.prompts.parse_choice`; an answer naming no option or
several is wrong, and counted), and the option with the highest log-likelihood (no parsing;
:mod:`velvet.vlm.scoring`). Yes/no questions also get an AUROC of ``P(yes)`` from the two options'
likelihoods. Everything is given per question type beside the majority-answer baseline of the
training split. A model trained with expert lines in its prompt reads them from the ``expert``
setting's file (default: ``expert.jsonl`` beside the manifest); its name, source and sha256 are
recorded. Open answers and reports are scored by :mod:`velvet.metrics.nlg`; phantom reports
also by the finding F1 of :mod:`velvet.data.phantoms.parse`, against the "most common report"
baseline (the training report whose finding set is the most common one, first in manifest order).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_report", "run_vqa"]


def _subset(entries: list[Any], max_items: int | None, seed: int) -> list[Any]:
    if max_items is None or len(entries) <= max_items:
        return entries
    keep = sorted(random.Random(seed).sample(range(len(entries)), int(max_items)))
    return [entries[i] for i in keep]


def _expert(model: Any, path: Any, s: dict[str, Any], case_ids: Sequence[str]) -> tuple[dict[str, str], Any]:
    """The expert lines of the cases and what to record about them (None for a model without)."""
    if not getattr(model.config, "expert_prompt", False):
        if s.get("expert"):
            raise ValueError(
                f"expert={s['expert']!r} was given, but the model was trained without expert lines in its prompt"
            )
        return {}, None
    from velvet.utils.hashing import sha256_file
    from velvet.vlm.expert_file import expert_source, read_expert

    file = Path(s["expert"]) if s.get("expert") else Path(path).parent / "expert.jsonl"
    lines = read_expert(file, case_ids)
    return lines, {"file": file.name, "source": expert_source(file), "sha256": sha256_file(file)}


def _batches(
    model: Any, samples: list[dict[str, Any]], ctx: dict[str, Any]
) -> Iterator[tuple[list[int], dict]]:
    """Collated batches (indices into ``samples``) with volumes from the cache or read fresh."""
    from velvet.data.cache import UncachedVolumes, VolumeCache
    from velvet.vlm.collate import VLMCollator

    contract = model.preprocess
    source = (
        VolumeCache(ctx["volume_cache_dir"], contract)
        if ctx.get("volume_cache_dir")
        else UncachedVolumes(contract)
    )
    collate = VLMCollator.for_model(model)
    device = next(model.parameters()).device
    size = int(ctx.get("batch_size") or 8)
    images: dict[str, torch.Tensor] = {}  # several questions share a volume
    for start in range(0, len(samples), size):
        idx = list(range(start, min(start + size, len(samples))))
        chunk = []
        for i in idx:
            record = samples[i]["record"]
            if record.id not in images:
                images[record.id] = source.get_or_create(record)["image"].float()
            chunk.append({**{k: v for k, v in samples[i].items() if k != "record"}, "image": images[record.id],
                          "case_id": record.id})  # fmt: skip
        batch = collate(chunk)
        batch["image"] = batch["image"].to(device)
        if "question" in batch:
            batch["question"] = {k: v.to(device) for k, v in batch["question"].items()}
        yield idx, batch


def _generate(model: Any, batch: dict[str, Any], generation: dict[str, Any]) -> list[str]:
    from velvet.vlm.lm_batch import generation_batch

    g = generation_batch(
        model.lm_tokenizer, batch["prompts"], max_prompt_tokens=model.config.max_prompt_tokens
    )
    device = batch["image"].device
    return model.generate(
        batch["image"], g["input_ids"].to(device), g["attention_mask"].to(device), question=batch.get("question"),
        **generation,
    )  # fmt: skip


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="item", disable=not (sys.stderr.isatty() if enabled is None else enabled)
    )


def run_vqa(
    model: Any, manifest: Any, path: Any, s: dict[str, Any], ctx: dict[str, Any], seed: int, out: Any
) -> dict[str, Any]:
    """The ``vqa`` protocol body (see the module docstring)."""
    from velvet.data.vqa import majority_baseline, read_vqa
    from velvet.metrics.classification import auroc
    from velvet.metrics.nlg import NLG_DEFINITIONS, nlg_metrics
    from velvet.vlm.prompts import normalize_answer, parse_choice
    from velvet.vlm.scoring import OPTION_SCORE_DEFINITION, option_scores

    items_path = Path(s["items"]) if s.get("items") else Path(path).parent / "vqa.jsonl"
    all_items = [it for it in read_vqa(items_path, path) if it.kind in s["kinds"]]
    records = {r.id: r for r in manifest.records}
    test = [it for it in all_items if it.split == s["split"]]
    if not test:
        raise ValueError(f"{items_path}: no {s['kinds']} item on the {s['split']!r} split")
    test = _subset(test, s.get("max_items"), seed)
    expert, expert_info = _expert(model, path, s, [it.case_id for it in test])
    samples = [
        {"record": records[it.case_id], "id": it.id, "question": it.question, "choices": list(it.choices),
         "answer_index": it.answer_index, "target": it.answer, "kind": it.kind, "question_type": it.question_type,
         **({"expert": expert[it.case_id]} if expert_info else {})}
        for it in test
    ]  # fmt: skip
    rows: list[dict[str, Any]] = []
    model.eval()
    with _progress(len(samples), "vqa", ctx.get("progress")) as bar:
        for idx, batch in _batches(model, samples, ctx):
            generated = _generate(model, batch, dict(s["generation"]))
            head = None
            if getattr(model, "yes_no_head", None) is not None:
                with torch.no_grad():
                    _, _, cls = model.prefix_parts(batch["image"], batch.get("question"))
                    head = torch.sigmoid(model.yes_no_logits(cls)).tolist()
            closed = [j for j, c in enumerate(batch["choices"]) if c]
            scores = dict(zip(closed, option_scores(model, batch, closed), strict=True))
            for j, i in enumerate(idx):
                it, row = test[i], {"id": test[i].id, "question_type": test[i].question_type, "kind": test[i].kind,
                                    "answer": test[i].answer, "generated": generated[j]}  # fmt: skip
                if j in scores:
                    opt = scores[j]
                    row["parsed"] = parse_choice(generated[j], it.choices)
                    row["loglik_choice"] = int(opt.argmax())
                    row["correct_generated"] = row["parsed"] == it.answer_index
                    row["correct_loglik"] = row["loglik_choice"] == it.answer_index
                    if it.is_yes_no:
                        yes = [normalize_answer(c) for c in it.choices].index("yes")
                        row["p_yes"] = float(opt.softmax(0)[yes])
                        row["is_yes"] = normalize_answer(it.answer) == "yes"
                        if head is not None:
                            row["p_yes_head"] = head[j]
                rows.append(row)
            bar.update(len(idx))
    result: dict[str, Any] = {
        "n": len(rows),
        "items_file": items_path.name,
        "expert": expert_info,
        "metrics": {},
        "per_question_type": {},
    }
    closed_rows = [r for r in rows if "parsed" in r]
    train = [it for it in all_items if it.split == "train"]
    baseline = majority_baseline(train, [it for it in test if it.kind == "closed"]) if closed_rows else None

    def closed_metrics(sel: list[dict[str, Any]]) -> dict[str, Any]:
        m: dict[str, Any] = {
            "n_closed": len(sel),
            "accuracy_generated": sum(r["correct_generated"] for r in sel) / len(sel),
            "unparsed_rate": sum(r["parsed"] is None for r in sel) / len(sel),
            "accuracy_loglik": sum(r["correct_loglik"] for r in sel) / len(sel),
        }
        yn = [r for r in sel if "p_yes" in r]
        if yn:
            y = torch.tensor([float(r["is_yes"]) for r in yn])
            both = 0 < y.sum() < len(y)
            m["yes_no_auroc"] = auroc(torch.tensor([r["p_yes"] for r in yn]), y) if both else None
            if "p_yes_head" in yn[0]:
                m["yes_no_auroc_head"] = (
                    auroc(torch.tensor([r["p_yes_head"] for r in yn]), y) if both else None
                )
                m["yes_no_accuracy_head"] = sum((r["p_yes_head"] >= 0.5) == r["is_yes"] for r in yn) / len(yn)
        return m

    def open_metrics(sel: list[dict[str, Any]]) -> dict[str, Any]:
        return {"n_open": len(sel), **nlg_metrics([r["generated"] for r in sel], [r["answer"] for r in sel])}

    if closed_rows:
        result["metrics"].update(closed_metrics(closed_rows))
        result["metrics"]["majority_baseline_accuracy"] = baseline["overall"]["accuracy"]
    open_rows = [r for r in rows if r["kind"] == "open"]
    if open_rows:
        result["metrics"].update(open_metrics(open_rows))
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_type[r["question_type"]].append(r)
    for qt, sel in sorted(by_type.items()):
        entry: dict[str, Any] = {"n": len(sel)}
        if any("parsed" in r for r in sel):
            entry.update(closed_metrics([r for r in sel if "parsed" in r]))
            base = baseline["per_type"].get(qt) if baseline else None
            entry["majority_answer"] = base["answer"] if base else None
            entry["majority_baseline_accuracy"] = base["accuracy"] if base else None
        if any(r["kind"] == "open" for r in sel):
            entry.update(open_metrics([r for r in sel if r["kind"] == "open"]))
        result["per_question_type"][qt] = entry
    result["metric_definitions"] = {
        "accuracy_generated": "share of closed items whose generated answer names the right option "
        "(leading letter, or the option text; none or several named = wrong)",
        "accuracy_loglik": OPTION_SCORE_DEFINITION,
        "yes_no_auroc_head": "AUROC of the yes/no classification head's P(yes) (method 6.4), when the model has one; "
        "its accuracy at P(yes) >= 0.5",
        "majority_baseline": "per question type, the most frequent normalised answer of the train split's "
        "closed items (ties: alphabetical); a type unseen in train counts as wrong",
        **({k: v for k, v in NLG_DEFINITIONS.items()} if open_rows else {}),
    }
    result["subset"] = (
        {"max_items": s.get("max_items"), "seed": seed}
        if s.get("max_items") is not None
        else "the whole split"
    )
    if out is not None:
        _write_predictions(out, rows)
        result["predictions_file"] = Path(out).stem + "_predictions.jsonl"
    return result


def _write_predictions(out: Any, rows: Sequence[dict[str, Any]]) -> None:
    import json

    from velvet.data.atomic import atomic_path

    path = Path(out).with_name(Path(out).stem + "_predictions.jsonl")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run_report(
    model: Any, manifest: Any, path: Any, s: dict[str, Any], ctx: dict[str, Any], seed: int, out: Any
) -> dict[str, Any]:
    """The ``report`` protocol body (see the module docstring)."""
    from velvet.data.reports import clean_report
    from velvet.metrics.nlg import NLG_DEFINITIONS, nlg_metrics

    records = manifest.split(s["split"])
    if not records:
        raise ValueError(f"{path}: the manifest has no {s['split']!r} cases")
    records = _subset(records, s.get("max_items"), seed)
    refs = [clean_report(r.load_report() or "", source=f"report of case {r.id!r}") for r in records]
    expert, expert_info = _expert(model, path, s, [r.id for r in records])
    samples = [
        {"record": r, "id": r.id, "question": None, "choices": [], "answer_index": None, "target": t,
         "kind": "report", "question_type": "report", **({"expert": expert[r.id]} if expert_info else {})}
        for r, t in zip(records, refs, strict=True)
    ]  # fmt: skip
    generated: list[str] = []
    model.eval()
    with _progress(len(samples), "report", ctx.get("progress")) as bar:
        for idx, batch in _batches(model, samples, ctx):
            generated += _generate(model, batch, dict(s["generation"]))
            bar.update(len(idx))
    train = manifest.split("train")
    phantoms = s["findings"] == "phantoms" or (
        s["findings"] == "auto" and (Path(path).parent / "phantoms.json").is_file()
    )
    baseline_text = _most_common_report(train, phantoms)
    result: dict[str, Any] = {
        "n": len(records),
        "expert": expert_info,
        "metrics": nlg_metrics(generated, refs),
        "baseline_most_common_report": {"metrics": nlg_metrics([baseline_text] * len(refs), refs)},
        "metric_definitions": dict(NLG_DEFINITIONS),
        "subset": {"max_items": s.get("max_items"), "seed": seed}
        if s.get("max_items") is not None
        else "the whole split",
    }
    if phantoms:
        from velvet.data.phantoms.finding_f1 import FINDING_F1_DEFINITION, finding_f1

        f1 = finding_f1(generated, refs)
        base = finding_f1([baseline_text] * len(refs), refs)
        result["metrics"].update(
            finding_micro_f1=f1["micro_f1"],
            finding_macro_f1=f1["macro_f1"],
            finding_example_f1=f1["example_f1"],
        )
        result["finding_f1_per_label"] = f1["per_label"]
        result["baseline_most_common_report"]["metrics"].update(
            finding_micro_f1=base["micro_f1"],
            finding_macro_f1=base["macro_f1"],
            finding_example_f1=base["example_f1"],
        )
        result["metric_definitions"]["finding_f1"] = FINDING_F1_DEFINITION
    result["metric_definitions"]["baseline_most_common_report"] = (
        "the same text for every case: the train report whose finding set is the most common one (phantoms) "
        "or the most frequent train report text, first in manifest order"
    )
    if out is not None:
        _write_predictions(
            out,
            [
                {"id": r.id, "reference": t, "generated": g}
                for r, t, g in zip(records, refs, generated, strict=True)
            ],
        )
        result["predictions_file"] = Path(out).stem + "_predictions.jsonl"
    return result


def _most_common_report(train: Sequence[Any], phantoms: bool) -> str:
    from velvet.data.reports import clean_report

    texts = [clean_report(r.load_report() or "", source=f"report of case {r.id!r}") for r in train]
    if not texts:
        raise ValueError("the most-common-report baseline needs train reports")
    if phantoms:
        from velvet.data.phantoms.parse import findings_from_report

        keys = [tuple(sorted(k for k, v in findings_from_report(t).items() if v)) for t in texts]
    else:
        keys = [t for t in texts]
    top = Counter(keys).most_common(1)[0][0]
    return texts[keys.index(top)]
