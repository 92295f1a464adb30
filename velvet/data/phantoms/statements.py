"""Sentence templates of phantom reports: global findings, normal organs, technique.

Positive statements never contain a negation word (``no``, ``not``, ``without``) and negative
statements never contain a measurement in mm, so a simple reader (and a text encoder) can tell
them apart. Statements are grouped by organ block (``lungs``, ``pleura``, ``heart``, ``liver``,
``spleen``, ``kidneys``, ``fluid``, ``other``) so the report can order blocks freely.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from velvet.data.phantoms.findings import Findings

__all__ = ["article", "cap", "global_statements", "normal_statements", "pick", "technique_sentence"]


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def article(phrase: str) -> str:
    """The indefinite article for ``phrase`` ("an 18 mm", "an enhancing", "a 32 mm")."""
    number = re.match(r"\d+", phrase)
    if number:  # eight, eleven, eighteen, eighty... are read with a vowel sound
        digits = number.group()
        vowel_sound = digits.startswith("8") or digits in ("11", "18")
    else:
        vowel_sound = phrase[:1].lower() in "aeiou"
    return "an" if vowel_sound else "a"


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def global_statements(f: Findings, rng: np.random.Generator) -> dict[str, list[str]]:
    """Positive sentences of the global findings, grouped by organ block."""
    out: dict[str, list[str]] = {
        k: [] for k in ("lungs", "pleura", "heart", "liver", "spleen", "kidneys", "fluid")
    }
    if f.hepatomegaly:
        n = f.liver_span_cm
        out["liver"].append(
            pick(
                rng,
                (
                    f"The liver is enlarged, measuring {n} cm in craniocaudal span.",
                    f"Hepatomegaly, with a craniocaudal liver span of {n} cm.",
                    f"The liver is enlarged ({n} cm).",
                ),
            )
        )
    if f.steatosis:
        out["liver"].append(
            pick(
                rng,
                (
                    "There is diffuse hepatic steatosis.",
                    "The liver is diffusely hypoattenuating relative to the spleen, consistent with hepatic steatosis.",
                    "Diffuse fatty infiltration of the liver.",
                ),
            )
        )
    if f.splenomegaly:
        n = f.spleen_length_cm
        out["spleen"].append(
            pick(
                rng,
                (
                    f"The spleen is enlarged, measuring {n} cm.",
                    f"Splenomegaly ({n} cm).",
                    f"There is splenomegaly, with a splenic length of {n} cm.",
                ),
            )
        )
    if f.effusion is not None:
        amount = f.effusion_amount or "small"
        if f.effusion == "bilateral":
            options = (
                f"There are {amount} bilateral pleural effusions.",
                f"{cap(amount)} bilateral pleural effusions.",
            )
        else:
            side = pick(rng, (f.effusion, f"{f.effusion}-sided"))
            options = (
                f"There is {article(amount)} {amount} {side} pleural effusion.",
                f"{cap(amount)} {side} pleural effusion with adjacent compressive atelectasis.",
                f"{cap(article(amount))} {amount} pleural effusion is present on the {f.effusion}.",
            )
        out["pleura"].append(pick(rng, options))
    if f.ascites == "small":
        out["fluid"].append(
            pick(
                rng,
                (
                    "There is a small amount of ascites.",
                    "Small-volume ascites, mainly perihepatic and pelvic.",
                    "Small free fluid in the pelvis and around the liver, consistent with ascites.",
                ),
            )
        )
    elif f.ascites == "moderate":
        out["fluid"].append(
            pick(
                rng,
                (
                    "Moderate ascites is present.",
                    "There is moderate free fluid throughout the abdomen and pelvis, consistent with ascites.",
                ),
            )
        )
    if f.cardiomegaly:
        out["heart"].append(
            pick(rng, ("The heart is enlarged.", "Cardiomegaly is present.", "There is cardiomegaly."))
        )
    if f.nephrectomy is not None:
        s = f.nephrectomy
        out["kidneys"].append(
            pick(
                rng,
                (
                    f"The {s} kidney is surgically absent, consistent with prior nephrectomy.",
                    f"Status post {s} nephrectomy.",
                    f"Postsurgical absence of the {s} kidney after nephrectomy.",
                ),
            )
        )
    return out


def normal_statements(f: Findings, rng: np.random.Generator) -> dict[str, list[str]]:
    """Negative / normal sentences for organs without the corresponding finding."""
    out: dict[str, list[str]] = {}
    lung_sides = {les.side for les in f.lesions_in("lung_right", "lung_left")}
    if not lung_sides:
        options = ["No pulmonary nodules or masses.", "No suspicious pulmonary nodule or mass is identified."]
        if f.effusion is None:
            options += ["The lungs are clear.", "The lungs are clear without focal consolidation or nodule."]
        out["lungs"] = [pick(rng, options)]
    elif len(lung_sides) == 1 and f.effusion is None:
        other = "left" if "right" in lung_sides else "right"
        out["lungs"] = [f"The {other} lung is clear."]
    if f.effusion is None:
        out["pleura"] = [
            pick(
                rng,
                (
                    "No pleural effusion.",
                    "There is no pleural effusion.",
                    "No pleural effusion or pneumothorax.",
                ),
            )
        ]
    if not f.cardiomegaly:
        out["heart"] = [
            pick(rng, ("Heart size is normal.", "The heart is normal in size.", "The heart is not enlarged."))
        ]
    liver_lesion = bool(f.lesions_in("liver"))
    if not (liver_lesion or f.hepatomegaly or f.steatosis):
        out["liver"] = [
            pick(
                rng,
                (
                    "The liver is normal in size and attenuation.",
                    "The liver is unremarkable.",
                    "No focal liver lesion.",
                    "The liver is normal in size and density without focal lesion.",
                ),
            )
        ]
    elif not liver_lesion:
        out["liver"] = [pick(rng, ("No focal hepatic lesion.", "No focal liver lesion is seen."))]
    spleen_lesion = bool(f.lesions_in("spleen"))
    if not (spleen_lesion or f.splenomegaly):
        out["spleen"] = [
            pick(rng, ("The spleen is normal in size.", "The spleen is unremarkable.", "No splenic lesion."))
        ]
    elif not spleen_lesion:
        out["spleen"] = ["No focal splenic lesion."]
    out["kidneys"] = _normal_kidneys(f, rng)
    if f.ascites is None:
        out["fluid"] = [
            pick(rng, ("No ascites.", "No free fluid in the abdomen or pelvis.", "There is no ascites."))
        ]
    out["other"] = [
        pick(rng, ("The osseous structures are intact.", "No aggressive osseous lesion.")),
        pick(rng, ("The abdominal aorta is normal in caliber.", "No aortic aneurysm.")),
    ]
    return out


def _normal_kidneys(f: Findings, rng: np.random.Generator) -> list[str]:
    present = [s for s in ("right", "left") if s != f.nephrectomy]
    normal = [s for s in present if not f.lesions_in(f"kidney_{s}")]
    if len(normal) == 2:
        return [
            pick(
                rng,
                ("Both kidneys are unremarkable.", "The kidneys are normal in size without focal lesion."),
            )
        ]
    if len(normal) == 1 and f.nephrectomy is not None:
        return [
            pick(
                rng,
                (
                    f"The remaining {normal[0]} kidney is normal.",
                    f"The solitary {normal[0]} kidney is unremarkable.",
                ),
            )
        ]
    if len(normal) == 1:
        return [f"The {normal[0]} kidney is unremarkable."]
    return []


def technique_sentence(contrast: bool, rng: np.random.Generator) -> str:
    if contrast:
        options = (
            "CT of the chest, abdomen and pelvis with intravenous contrast.",
            "Contrast-enhanced CT of the chest and abdomen.",
            "Axial CT images of the chest and abdomen were obtained after intravenous contrast.",
        )
    else:
        options = (
            "CT of the chest, abdomen and pelvis without intravenous contrast.",
            "Non-contrast CT of the chest and abdomen.",
            "Axial CT images of the chest and abdomen were obtained without intravenous contrast.",
        )
    return pick(rng, options)
