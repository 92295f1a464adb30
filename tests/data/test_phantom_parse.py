"""The phantom report reader recovers every stated finding, and the clinical finding F1 is right.

Ground truth comes from the generator itself: :func:`~velvet.data.phantoms.case.sample_case`
(global findings sampled, lesions placed in a sampled anatomy, report written; no voxels) for 1,000
cases, and, since placing lesions in an anatomy is the slow part and the report only sees a
lesion's organ, side, location, size and density, the generator's own
:func:`~velvet.data.phantoms.findings.sample_global_findings` and
:func:`~velvet.data.phantoms.reports.write_report` for 2,000 more cases whose 0-5 lesions are drawn
here, of any size in any organ (combinations the anatomy rarely allows). The reader must
agree with the true labels on every single case, and on the same reports damaged the way a model
might damage them (case, spacing, punctuation, repetition, truncation, unknown sentences).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from velvet.data.phantoms import LABEL_NAMES, PhantomConfig, sample_case
from velvet.data.phantoms.anatomy import Ellipsoid
from velvet.data.phantoms.finding_f1 import FINDING_F1_DEFINITION, finding_f1, finding_f1_from_labels
from velvet.data.phantoms.findings import LESION_ORGANS, Findings, Lesion, sample_global_findings
from velvet.data.phantoms.parse import findings_from_report, lesion_words, lesions_from_report
from velvet.data.phantoms.reports import write_report

N_SAMPLED = 1000
N_DRAWN = 2000
_SHAPE = Ellipsoid(center=(0.0, 0.0, 0.0), semi_axes=(5.0, 5.0, 5.0))
_LOCATIONS = {
    "liver": ("right lobe", "left lobe"),
    "spleen": ("",),
    "kidney": ("upper pole", "lower pole", "interpolar region"),
    "lung": ("upper lobe", "lower lobe"),
}


def _truth(findings: Findings) -> dict[str, bool]:
    return {name: bool(v) for name, v in findings.labels().items()}


def _positive(labels: dict[str, bool]) -> set[str]:
    return {name for name, v in labels.items() if v}


def _lesion_keys(lesions: list[dict]) -> Counter:
    return Counter((x["organ"], x["side"], x["diameter_mm"], x["density"]) for x in lesions)


def _true_lesion_keys(findings: Findings) -> Counter:
    return Counter((x.organ.split("_")[0], x.side, x.diameter_mm, x.density) for x in findings.lesions)


def _draw_findings(rng: np.random.Generator) -> Findings:
    """Global findings from the generator's own sampler, plus 0-5 lesions of any size anywhere."""
    f = sample_global_findings(rng)
    organs = [o for o in LESION_ORGANS if o != f"kidney_{f.nephrectomy}"]
    lesions = []
    for _ in range(int(rng.integers(0, 6))):
        organ = str(rng.choice(organs))
        kind = organ.split("_")[0]
        if kind == "lung":
            density = str(rng.choice(["soft_tissue", "calcified"]))
        else:
            density = str(rng.choice(["hypodense", "hyperdense", "calcified"]))
        diameter = int(rng.integers(4, 90))
        lesions.append(
            Lesion(
                organ=organ,
                diameter_mm=diameter,
                minor_mm=int(rng.integers(3, diameter + 1)),
                density=density,  # type: ignore[arg-type]
                hu=0.0,
                shape=_SHAPE,
                location=str(rng.choice(_LOCATIONS[kind])),
            )
        )
    lesions.sort(key=lambda les: -les.diameter_mm)
    return replace(
        f,
        lesions=tuple(lesions),
        liver_span_cm=int(rng.integers(12, 26)),
        spleen_length_cm=int(rng.integers(8, 20)),
    )


@pytest.fixture(scope="module")
def cases() -> list[tuple[Findings, str]]:
    """(findings, report) of the sampled cases, then of the drawn findings."""
    config = PhantomConfig(n_cases=N_SAMPLED, n_val=0, n_test=0, seed=20240611)
    out = [(spec.findings, spec.report) for spec in (sample_case(config, i) for i in range(N_SAMPLED))]
    rng = np.random.default_rng(7)
    for _ in range(N_DRAWN):
        f = _draw_findings(rng)
        out.append((f, write_report(f, rng)))
    return out


# ----------------------------------------------------------------------------- generated reports


def test_labels_of_every_generated_report_are_recovered(cases):
    assert len(cases) == N_SAMPLED + N_DRAWN
    readings = [(report, _truth(f), findings_from_report(report)) for f, report in cases]
    wrong = [(report, _positive(t) ^ _positive(r)) for report, t, r in readings if r != t]
    assert not wrong, f"{len(wrong)} of {len(cases)} reports misread, e.g. {wrong[:3]}"
    # the check means something: every label is positive and negative in many cases
    for name in LABEL_NAMES:
        n_pos = sum(t[name] for _, t, _ in readings)
        assert 100 <= n_pos <= len(cases) - 100, name
    assert list(findings_from_report(cases[0][1])) == list(LABEL_NAMES)


def test_lesions_of_every_generated_report_are_recovered(cases):
    for f, report in cases:
        lesions = lesions_from_report(report)
        assert _lesion_keys(lesions) == _true_lesion_keys(f), report
        true_minor = Counter((x.diameter_mm, x.minor_mm) for x in f.lesions)
        for lesion in lesions:  # a stated second diameter is the lesion's
            if lesion["minor_mm"] is not None:
                assert true_minor[(lesion["diameter_mm"], lesion["minor_mm"])] > 0, report


def _words(text: str) -> list[str]:
    """Words and punctuation marks, as a BERT tokenizer's pre-tokenizer cuts them."""
    return re.findall(r"\w+|[^\w\s]", text)


def test_lesion_words_of_every_generated_report_are_stated_lesions(cases):
    negation = {"no", "not", "without", "none", "neither", "nor"}
    nouns = re.compile(r"(nodule|granuloma|mass|cyst|lesion|focus)e?s?")
    for f, report in cases:
        words = _words(report)
        found = lesion_words(words)
        assert len(found) >= len(f.lesions), report  # each lesion is named at least once
        assert (not found) == (not f.lesions), report
        for k in found:
            assert nouns.fullmatch(words[k].lower()), (words[k], report)
            # its sentence (between full stops) denies nothing
            start = max((i for i in range(k) if words[i] in ".;"), default=-1) + 1
            stop = next((i for i in range(k, len(words)) if words[i] in ".;"), len(words))
            assert not negation & {w.lower() for w in words[start:stop]}, (words[start:stop], report)


def test_lesion_words_skip_denied_lesions():
    text = "No focal liver lesion. There is a 24 mm cyst in the left kidney. No splenic lesion or mass."
    words = _words(text)
    assert [(k, words[k]) for k in lesion_words(words)] == [(10, "cyst")]
    assert lesion_words(_words("IMPRESSION: 1. 15 mm solid left upper lobe nodule")) == [10]
    assert lesion_words(_words("A 20 mm lesion.")) == []  # no organ: not a lesion the reader can place
    assert lesion_words([]) == []


def test_damaged_reports_keep_their_labels_and_lesions(cases):
    """What a model's decoder may do to a report: the labels and lesions must not change."""
    rng = np.random.default_rng(3)
    garbage = [
        "The patient tolerated the procedure well.",
        "Lorem ipsum dolor sit amet.",
        "Comparison: none.",
    ]
    for f, report in cases[:150] + cases[N_SAMPLED : N_SAMPLED + 150]:
        truth = _truth(f)
        sentences = re.split(r"(?<=\.)\s+", report)
        variants = {
            "upper": report.upper(),
            "lower": report.lower(),
            "spaces": re.sub(r"\s", lambda m: m.group() * int(rng.integers(1, 4)), report),
            "decoder": re.sub(r"([(),.:-])", r" \1 ", report.lower()),  # WordPiece-style spacing
            "repeated": " ".join(s for s in sentences for _ in range(2)),
            "unknown": " ".join([garbage[int(rng.integers(3))], *sentences, garbage[int(rng.integers(3))]]),
            # no punctuation, no line breaks: statements are only separated by their openers
            "unpunctuated": " ".join(re.sub(r"[^\w\s-]", " ", report).lower().split()),
        }
        lesions = _true_lesion_keys(f)
        for name, text in variants.items():
            assert findings_from_report(text) == truth, (name, text)
            assert _lesion_keys(lesions_from_report(text)) == lesions, (name, text)


def test_a_truncated_report_states_no_more_than_the_whole(cases):
    for f, report in cases[:15] + cases[N_SAMPLED : N_SAMPLED + 15]:
        whole = _positive(findings_from_report(report))
        assert whole == _positive(_truth(f))
        words = report.split(" ")
        for k in range(len(words) + 1):
            prefix = " ".join(words[:k])
            assert _positive(findings_from_report(prefix)) <= whole, (prefix, report)
            if k % 4 == 0:
                lesions_from_report(prefix)  # never raises on a cut sentence


# ----------------------------------------------------------------------------- hand cases

HAND_CASES = [
    ("", set()),
    ("   \n  ", set()),
    ("asdf qwerty 123 ??? ... mm cm", set()),
    ("The patient is a 54 year old male. Comparison none.", set()),
    # negated statements assert absence
    ("No pleural effusion. No ascites. The heart is not enlarged. No splenic lesion.", set()),
    ("The lungs are clear without focal consolidation or nodule.", set()),
    ("The liver is normal in size and density without focal lesion.", set()),
    ("No hepatomegaly or splenomegaly.", set()),
    ("No significant cardiomegaly.", set()),
    ("The heart isn't enlarged.", set()),
    ("No free fluid in the abdomen or pelvis.", set()),
    # positives, with synonyms
    ("Cardiomegaly is present.", {"Cardiomegaly"}),
    ("The heart is enlarged.", {"Cardiomegaly"}),
    ("The liver and spleen are enlarged.", {"Hepatomegaly", "Splenomegaly"}),
    ("Hepatosplenomegaly.", {"Hepatomegaly", "Splenomegaly"}),
    ("Diffuse fatty infiltration of the liver.", {"Hepatic steatosis"}),
    ("Small free fluid in the pelvis and around the liver, consistent with ascites.", {"Ascites"}),
    ("Status post right nephrectomy.", {"Nephrectomy"}),
    ("The left kidney is surgically absent.", {"Nephrectomy"}),
    ("Absent right kidney.", {"Nephrectomy"}),
    ("Postsurgical absence of the left kidney after nephrectomy.", {"Nephrectomy"}),
    ("The solitary right kidney is unremarkable.", {"Nephrectomy"}),
    ("Pericardial effusion.", set()),
    ("Large bilateral pleural effusions.", {"Pleural effusion"}),
    ("A 12 mm calcified granuloma in the left lower lobe.", {"Lung nodule"}),
    ("30 mm solid right upper lobe mass, suspicious for malignancy.", {"Lung nodule"}),
    ("There is a 20 mm cyst in the spleen.", {"Splenic lesion"}),
    ("The right renal upper pole demonstrates a 15 mm hyperdense focus.", {"Renal lesion"}),
    ("In the left hepatic lobe, there is a hypodense lesion (22 mm).", {"Liver lesion"}),
    ("A hepatic lesion.", {"Liver lesion"}),
    ("A 20 mm lesion.", set()),  # no organ named: nothing can be scored
    ("The liver is unremarkable.", set()),
    ("The liver is diffusely hypoattenuating relative to the spleen.", set()),
    # the impression repeats, or alone states, findings
    (
        "FINDINGS: The lungs are clear.\nIMPRESSION: Cardiomegaly and small ascites.",
        {"Cardiomegaly", "Ascites"},
    ),
    (
        "IMPRESSION:\n1. 24 mm hyperdense left renal lesion, indeterminate.\n2. Hepatic steatosis.",
        {"Renal lesion", "Hepatic steatosis"},
    ),
    ("impression: no acute abnormality.", set()),
    # a negation stays in its sentence
    ("No pleural effusion. Cardiomegaly is present.", {"Cardiomegaly"}),
    ("no pleural effusion cardiomegaly is present", {"Cardiomegaly"}),
    ("no ascites the spleen is enlarged measuring 16 cm", {"Splenomegaly"}),
    ("the heart is not enlarged there is a small right pleural effusion", {"Pleural effusion"}),
    ("no focal liver lesion a 30 mm hypodense lesion in the spleen", {"Splenic lesion"}),
    ("no aortic aneurysm in the right hepatic lobe there is a cystic lesion 41 mm", {"Liver lesion"}),
    ("NO PLEURAL EFFUSION OR PNEUMOTHORAX MODERATE ASCITES IS PRESENT", {"Ascites"}),
    # a decoder's spacing, repetition, a cut last sentence
    ("a 17 x 14 mm low - attenuation lesion is seen in the right kidney .", {"Renal lesion"}),
    ("Cardiomegaly is present. Cardiomegaly is present. Cardiomegaly is present.", {"Cardiomegaly"}),
    ("Cardiomegaly is present. There is a 20 mm hypodense lesion in the", {"Cardiomegaly"}),
    ("There is no pleu", set()),
]


@pytest.mark.parametrize(("text", "expected"), HAND_CASES)
def test_hand_written_reports(text, expected):
    labels = findings_from_report(text)
    assert list(labels) == list(LABEL_NAMES)
    assert all(isinstance(v, bool) for v in labels.values())
    assert _positive(labels) == expected


def test_a_report_must_be_text():
    with pytest.raises(TypeError):
        findings_from_report(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        lesions_from_report(b"cardiomegaly")  # type: ignore[arg-type]


def test_lesions_of_hand_written_reports():
    report = (
        "FINDINGS: There is a large 45 x 40 mm hypoattenuating lesion in the right lobe of the liver. "
        "The upper lobe of the left lung contains a solid nodule of 15 mm. No splenic lesion.\n"
        "IMPRESSION:\n1. 45 mm hypodense hepatic lesion, probably a cyst.\n"
        "2. 15 mm solid left upper lobe nodule, follow-up CT recommended.\n"
        "3. 12 mm calcified right renal lesion, likely benign."
    )
    lesions = lesions_from_report(report)
    assert [
        (x["organ"], x["side"], x["diameter_mm"], x["minor_mm"], x["density"], x["section"]) for x in lesions
    ] == [
        ("liver", None, 45, 40, "hypodense", "findings"),
        ("lung", "left", 15, None, "soft_tissue", "findings"),
        ("kidney", "right", 12, None, "calcified", "impression"),  # only in the impression
    ]
    # a generation loop repeats a sentence: still one lesion; two distinct sentences: two
    assert len(lesions_from_report("A 2 cm cyst in the spleen. A 2 cm cyst in the spleen.")) == 1
    assert lesions_from_report("A 2 cm cyst in the spleen.")[0]["diameter_mm"] == 20
    assert len(lesions_from_report("A 20 mm cyst in the spleen. A 21 mm cyst in the spleen.")) == 2
    assert lesions_from_report("No focal liver lesion. A 20 mm lesion.") == []
    assert lesions_from_report("") == []


# ----------------------------------------------------------------------------- finding F1


def _random_labels(rng: np.random.Generator, n: int, p: np.ndarray) -> np.ndarray:
    return (rng.random((n, len(LABEL_NAMES))) < p).astype(int)


def _as_dicts(matrix: np.ndarray) -> list[dict[str, int]]:
    return [dict(zip(LABEL_NAMES, map(int, row), strict=True)) for row in matrix]


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_finding_f1_matches_scikit_learn(seed):
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    p = rng.uniform(0, 0.6, len(LABEL_NAMES))
    p[rng.random(len(LABEL_NAMES)) < 0.25] = 0.0  # some labels never occur
    ref = _random_labels(rng, n, p)
    pred = np.where(rng.random(ref.shape) < 0.3, 1 - ref, ref)  # a noisy model
    pred[:, rng.random(len(LABEL_NAMES)) < 0.2] = 0  # that never predicts some labels
    out = finding_f1_from_labels(_as_dicts(pred), _as_dicts(ref))

    precision, recall, f1, support = precision_recall_fscore_support(
        ref, pred, average=None, zero_division=np.nan
    )
    for k, name in enumerate(LABEL_NAMES):
        row = out["per_label"][name]
        assert _close(row["precision"], precision[k]) and _close(row["recall"], recall[k]), name
        assert _close(row["f1"], f1[k]) and row["support"] == support[k], name
    micro = precision_recall_fscore_support(ref, pred, average="micro", zero_division=np.nan)
    assert _close(out["micro_precision"], micro[0]) and _close(out["micro_recall"], micro[1])
    assert _close(out["micro_f1"], micro[2])
    used = [k for k in range(len(LABEL_NAMES)) if ref[:, k].any() or pred[:, k].any()]
    assert out["macro_labels"] == [LABEL_NAMES[k] for k in used]
    macro = precision_recall_fscore_support(ref, pred, average="macro", labels=used, zero_division=0.0)
    assert _close(out["macro_f1"], macro[2])
    samples = precision_recall_fscore_support(ref, pred, average="samples", zero_division=1.0)
    assert _close(out["example_f1"], samples[2])
    assert out["n_cases"] == n and out["definition"] == FINDING_F1_DEFINITION


def _report_with(labels: dict[str, int], rng: np.random.Generator) -> str:
    """A generator report whose findings have exactly ``labels``."""
    lesions = []
    for organ, name in (
        ("liver", "Liver lesion"),
        ("spleen", "Splenic lesion"),
        ("kidney_right", "Renal lesion"),
        ("lung_left", "Lung nodule"),
    ):
        if labels[name]:
            density = "soft_tissue" if organ.startswith("lung") else "hypodense"
            location = _LOCATIONS[organ.split("_")[0]][0]
            lesions.append(Lesion(organ, 25, 20, density, 0.0, _SHAPE, location))  # type: ignore[arg-type]
    f = Findings(
        lesions=tuple(lesions),
        hepatomegaly=bool(labels["Hepatomegaly"]),
        steatosis=bool(labels["Hepatic steatosis"]),
        splenomegaly=bool(labels["Splenomegaly"]),
        cardiomegaly=bool(labels["Cardiomegaly"]),
        effusion="right" if labels["Pleural effusion"] else None,
        effusion_amount="small" if labels["Pleural effusion"] else None,
        ascites="small" if labels["Ascites"] else None,
        nephrectomy="left" if labels["Nephrectomy"] else None,
        liver_span_cm=20,
        spleen_length_cm=15,
    )
    assert f.labels() == labels
    return write_report(f, rng)


def test_finding_f1_of_reports_equals_finding_f1_of_their_labels():
    rng = np.random.default_rng(11)
    ref = _random_labels(rng, 80, np.full(len(LABEL_NAMES), 0.3))
    pred = np.where(rng.random(ref.shape) < 0.2, 1 - ref, ref)
    ref_reports = [_report_with(d, rng) for d in _as_dicts(ref)]
    pred_reports = [_report_with(d, rng) for d in _as_dicts(pred)]
    from_text = finding_f1(pred_reports, ref_reports)
    from_labels = finding_f1_from_labels(_as_dicts(pred), _as_dicts(ref))
    assert from_text["per_label"] == from_labels["per_label"]
    for key in ("micro_f1", "macro_f1", "example_f1"):
        assert _close(from_text[key], from_labels[key]), key
    assert 0.5 < from_text["micro_f1"] < 1.0

    same = finding_f1(ref_reports, ref_reports)
    assert same["micro_f1"] == same["macro_f1"] == same["example_f1"] == 1.0
    swapped = finding_f1(ref_reports, pred_reports)  # precision and recall trade places
    assert _close(swapped["micro_precision"], from_text["micro_recall"])


def test_finding_f1_edge_cases():
    normal = "The lungs are clear. No pleural effusion. The liver is unremarkable."
    out = finding_f1([normal, ""], [normal, "No ascites."])
    assert out["example_f1"] == 1.0  # both reports call both cases normal
    assert out["macro_labels"] == [] and math.isnan(out["macro_f1"]) and math.isnan(out["micro_f1"])
    out = finding_f1(["Cardiomegaly."], ["Ascites."])
    assert out["micro_f1"] == 0.0 and out["example_f1"] == 0.0
    assert out["macro_labels"] == ["Ascites", "Cardiomegaly"] and out["macro_f1"] == 0.0
    assert (
        math.isnan(out["per_label"]["Ascites"]["precision"]) and out["per_label"]["Ascites"]["recall"] == 0.0
    )
    assert "macro" in FINDING_F1_DEFINITION.lower() and "at least one positive" in FINDING_F1_DEFINITION


def test_finding_f1_rejects_bad_input():
    with pytest.raises(ValueError):
        finding_f1([], [])
    with pytest.raises(ValueError):
        finding_f1(["Cardiomegaly."], ["Cardiomegaly.", "Ascites."])
    with pytest.raises(ValueError):
        finding_f1_from_labels([], [])
    labels = findings_from_report("Ascites.")
    with pytest.raises(ValueError):
        finding_f1_from_labels([labels], [labels, labels])
    with pytest.raises(ValueError, match="missing"):
        finding_f1_from_labels([{k: v for k, v in labels.items() if k != "Ascites"}], [labels])
    with pytest.raises(ValueError, match="unknown"):
        finding_f1_from_labels([labels], [{**labels, "Fracture": True}])
