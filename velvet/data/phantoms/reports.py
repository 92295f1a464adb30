"""Radiology-style reports that describe a phantom's findings, from varied templates.

Every finding is stated (organ, side, sub-organ location, size in mm with a size word, density
words); normal organs get short negative statements in a varied order; about half the reports
have ``FINDINGS:`` / ``IMPRESSION:`` sections. Positive statements never contain a negation
word (``no``, ``not``, ``without``) and negative statements never contain a measurement in mm, so
a simple reader (and a text encoder) can tell them apart. Nothing identifies the case.
"""

from __future__ import annotations

import numpy as np

from velvet.data.phantoms.findings import Findings, Lesion
from velvet.data.phantoms.statements import (
    article,
    cap,
    global_statements,
    normal_statements,
    pick,
    technique_sentence,
)

__all__ = ["MAX_SENTENCES", "describe_lesion", "lesion_location", "summarize_findings", "write_report"]

MAX_SENTENCES = 12  # normal statements are dropped beyond this (findings never are)

_ORGAN_ADJ = {"liver": "hepatic", "spleen": "splenic", "kidney": "renal", "lung": "pulmonary"}
_DENSITY_WORDS = {
    "hypodense": ("hypodense", "low-attenuation", "hypoattenuating", "cystic"),
    "hyperdense": ("hyperdense", "high-attenuation", "hyperattenuating"),
    "calcified": ("calcified", "densely calcified"),
    "soft_tissue": ("solid", "soft-tissue", "soft-tissue density"),
}
_SIZE_WORDS = {
    "small": ("small", ""),
    "medium": ("", "moderate-sized", "medium-sized"),
    "large": ("large", "sizable"),
}
_IMPRESSION_NOTE = {
    "hypodense": ("likely a simple cyst", "probably a cyst"),
    "hyperdense": ("indeterminate, further characterisation recommended", "indeterminate"),
    "calcified": ("likely benign", "consistent with a benign calcification"),
    "soft_tissue": ("follow-up CT recommended", "further evaluation recommended"),
}


def lesion_location(lesion: Lesion, rng: np.random.Generator | None = None) -> str:
    """Where a lesion is, as a noun phrase ("the lower pole of the right kidney")."""
    organ, side, where = lesion.organ.split("_")[0], lesion.side, lesion.location
    if organ == "liver":
        options = (f"the {where} of the liver", f"the {where.split()[0]} hepatic lobe", "the liver")
    elif organ == "spleen":
        options = ("the spleen", "the splenic parenchyma")
    elif organ == "kidney":
        options = (f"the {where} of the {side} kidney", f"the {side} kidney", f"the {side} renal {where}")
    else:
        options = (f"the {side} {where}", f"the {side} lung", f"the {where} of the {side} lung")
    return options[0] if rng is None else pick(rng, options)


def _noun(lesion: Lesion, density_word: str, rng: np.random.Generator | None) -> str:
    if lesion.organ.startswith("lung"):
        if lesion.density == "calcified":
            return "nodule" if rng is None else pick(rng, ("nodule", "granuloma"))
        return "nodule" if lesion.diameter_mm < 30 else "mass"
    if lesion.density == "hypodense" and density_word == "hypodense" and rng is not None:
        return pick(rng, ("lesion", "cyst"))
    return "lesion" if rng is None else pick(rng, ("lesion", "lesion", "focus"))


def describe_lesion(lesion: Lesion, *, contrast: bool = False, rng: np.random.Generator | None = None) -> str:
    """One sentence describing a lesion; canonical wording when ``rng`` is None (used as VQA answer)."""
    words = _DENSITY_WORDS[lesion.density]
    if lesion.density == "hyperdense" and contrast:
        words = (*words, "enhancing", "avidly enhancing")
    density = words[0] if rng is None else pick(rng, words)
    noun = _noun(lesion, density, rng)
    loc = lesion_location(lesion, rng)
    if rng is None:
        return f"{cap(article(str(lesion.diameter_mm)))} {lesion.diameter_mm} mm {density} {noun} in {loc}."
    size = f"{lesion.diameter_mm} mm"
    if rng.random() < 0.3:
        size = f"{lesion.diameter_mm} x {lesion.minor_mm} mm"
    sw = pick(rng, _SIZE_WORDS[lesion.size_word])
    sw_ = f"{sw} " if sw else ""
    templates = (
        f"There is {article(sw_ + size)} {sw_}{size} {density} {noun} in {loc}.",
        f"{cap(article(density))} {density} {noun} measuring {size} is seen in {loc}.",
        f"{cap(loc)} contains {article(sw_ + density)} {sw_}{density} {noun} of {size}.",
        f"{cap(article(sw_ + size))} {sw_}{size} {density} {noun} is present in {loc}.",
        f"In {loc}, there is {article(density)} {density} {noun} ({size}).",
        f"{cap(loc)} demonstrates {article(size)} {size} {density} {noun}.",
    )
    return pick(rng, templates)


def _impression_lesion(lesion: Lesion, rng: np.random.Generator) -> str:
    organ, side = lesion.organ.split("_")[0], lesion.side
    where = f"{side} {_ORGAN_ADJ[organ]}" if side else _ORGAN_ADJ[organ]
    if organ == "lung":
        where = f"{side} {lesion.location}"
    density = _DENSITY_WORDS[lesion.density][0]
    noun = _noun(lesion, density, None)
    note = pick(rng, _IMPRESSION_NOTE[lesion.density])
    if lesion.organ.startswith("lung") and lesion.density == "soft_tissue" and noun == "mass":
        note = "suspicious for malignancy"
    return f"{lesion.diameter_mm} mm {density} {where} {noun}, {note}."


def write_report(f: Findings, rng: np.random.Generator) -> str:
    """A report describing ``f``: every finding stated, normal organs in a varied order.

    Args:
        f: the case's findings.
        rng: the case's report random stream (wording, order, sections).

    Returns:
        The report text (4-12 sentences for almost every case).
    """
    positives = global_statements(f, rng)
    for lesion in f.lesions:
        block = {"liver": "liver", "spleen": "spleen", "kidney": "kidneys", "lung": "lungs"}[
            lesion.organ.split("_")[0]
        ]
        positives[block].append(describe_lesion(lesion, contrast=f.contrast, rng=rng))
    normals = normal_statements(f, rng)
    sections = rng.random() < 0.5  # else plain sentences without headers or impression
    impression = _impression(f, rng) if sections else []
    numbered = len(impression) > 1 and rng.random() < 0.4  # "IMPRESSION:" on its own line, then "1. ..."
    technique = [] if rng.random() < 0.4 else [technique_sentence(f.contrast, rng)]
    n_fixed = sum(len(v) for v in positives.values()) + len(impression) + len(technique) + numbered
    keep = _choose_normals(normals, MAX_SENTENCES - n_fixed, rng)

    chest, abdomen = ["lungs", "pleura", "heart"], ["liver", "spleen", "kidneys", "fluid", "other"]
    for group in (chest, abdomen):
        if rng.random() < 0.5:
            rng.shuffle(group)
    blocks = chest + abdomen if rng.random() < 0.7 else abdomen + chest
    body = [s for b in blocks for s in positives.get(b, []) + keep.get(b, [])]

    if not sections:
        return " ".join(technique + body)
    head = f"TECHNIQUE: {technique[0]}\n" if technique else ""
    if numbered:
        imp = "IMPRESSION:\n" + "\n".join(f"{k}. {s}" for k, s in enumerate(impression, start=1))
    else:
        imp = "IMPRESSION: " + " ".join(impression)
    return f"{head}FINDINGS: {' '.join(body)}\n{imp}"


def _choose_normals(
    normals: dict[str, list[str]], budget: int, rng: np.random.Generator
) -> dict[str, list[str]]:
    """Keep each normal statement with p=0.85, then drop random ones beyond ``budget`` (keeping 1-3)."""
    items = [(b, s) for b, ss in normals.items() for s in ss]
    kept = [it for it in items if rng.random() < 0.85]
    left_out = [it for it in items if it not in kept]
    while len(kept) < min(3, len(items)):
        kept.append(left_out.pop(int(rng.integers(len(left_out)))))
    while len(kept) > max(budget, 1):
        kept.pop(int(rng.integers(len(kept))))
    out: dict[str, list[str]] = {}
    for b, s in kept:
        out.setdefault(b, []).append(s)
    return out


def summarize_findings(f: Findings) -> str:
    """All findings in canonical wording (the answer to "What are the main findings?")."""
    items = [describe_lesion(les, contrast=f.contrast) for les in f.lesions]
    items += _global_impression(f, spans=True)
    return " ".join(items) if items else "No significant abnormality."


def _impression(f: Findings, rng: np.random.Generator) -> list[str]:
    items = [cap(_impression_lesion(les, rng)) for les in f.lesions]
    extra = [g.rstrip(".") for g in _global_impression(f, spans=False)]
    if len(extra) > 1:  # one sentence for the global findings keeps reports short
        parts = [extra[0]] + [e[:1].lower() + e[1:] for e in extra[1:]]
        extra = [", ".join(parts[:-1]) + " and " + parts[-1]]
    items += [e + "." for e in extra]
    if not items:
        items.append(
            pick(
                rng,
                (
                    "No acute abnormality.",
                    "Normal CT of the chest and abdomen.",
                    "No significant abnormality.",
                ),
            )
        )
    return items


def _global_impression(f: Findings, *, spans: bool) -> list[str]:
    items = []
    if f.hepatomegaly:
        items.append(f"Hepatomegaly (liver span {f.liver_span_cm} cm)." if spans else "Hepatomegaly.")
    if f.steatosis:
        items.append("Hepatic steatosis.")
    if f.splenomegaly:
        items.append(f"Splenomegaly (spleen length {f.spleen_length_cm} cm)." if spans else "Splenomegaly.")
    if f.effusion is not None:
        side = (
            "bilateral pleural effusions" if f.effusion == "bilateral" else f"{f.effusion} pleural effusion"
        )
        items.append(f"{cap(f.effusion_amount or 'small')} {side}.")
    if f.ascites is not None:
        items.append(f"{cap(f.ascites)} ascites.")
    if f.cardiomegaly:
        items.append("Cardiomegaly.")
    if f.nephrectomy is not None:
        items.append(f"Status post {f.nephrectomy} nephrectomy.")
    return items
