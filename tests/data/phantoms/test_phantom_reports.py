"""Reports, labels and VQA agree with the findings, and reports pin down their volumes.

The report reader below is written here, from the report *words* only (organ names, sides,
"<n> mm", density words, global-finding words, negations); it does not use the generator's
templates or internals. If it can recover every case's findings, the reports state them; if an
oracle using it retrieves volumes from reports, the pairing is learnable.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter

import pytest

from velvet.data.phantoms import LABEL_NAMES, PhantomConfig, sample_case

NEGATION = re.compile(r"\b(no|not|without)\b")
MEASURE = re.compile(r"\b(\d+)(?:\s*x\s*\d+)?\s*mm\b")


# ----------------------------------------------------------------------------- a reader of reports


def _sentences(report: str) -> list[str]:
    findings = re.split(r"IMPRESSION:", report)[0]  # the impression repeats the findings
    findings = re.sub(r"\b(TECHNIQUE|FINDINGS):", " ", findings)
    return [s.strip().lower() for s in re.split(r"(?<=\.)\s+", findings) if s.strip()]


def _side(text: str) -> str:
    if "bilateral" in text or "both" in text:
        return "bilateral"
    return "right" if "right" in text else "left"


def _organ(text: str) -> str:
    if "liver" in text or "hepatic" in text:
        return "liver"
    if "spleen" in text or "splenic" in text:
        return "spleen"
    if "kidney" in text or "renal" in text:
        return f"kidney_{_side(text)}"
    if "lung" in text or "lobe" in text or "pulmonary" in text:
        return f"lung_{_side(text)}"
    raise AssertionError(f"no organ named in lesion sentence {text!r}")


def _density(text: str) -> str:
    if "calcif" in text:
        return "calcified"
    if "hypo" in text or "low-attenuation" in text or "cyst" in text:
        return "hypodense"
    if "hyper" in text or "high-attenuation" in text or "enhancing" in text:
        return "hyperdense"
    if "solid" in text or "soft-tissue" in text:
        return "soft_tissue"
    raise AssertionError(f"no density stated in lesion sentence {text!r}")


def parse_report(report: str) -> tuple[Counter, set[str]]:
    """(lesions as a multiset of (organ, diameter mm, density), set of global findings)."""
    lesions: Counter = Counter()
    globals_: set[str] = set()
    for s in _sentences(report):
        if NEGATION.search(s):
            continue
        size = MEASURE.search(s)
        if size:
            lesions[(_organ(s), int(size.group(1)), _density(s))] += 1
            continue
        if "hepatomegaly" in s or ("liver" in s and "enlarged" in s):
            globals_.add("hepatomegaly")
        if "steatosis" in s or "fatty" in s:
            globals_.add("steatosis")
        if "splenomegaly" in s or ("spleen" in s and "enlarged" in s):
            globals_.add("splenomegaly")
        if "cardiomegaly" in s or ("heart" in s and "enlarged" in s):
            globals_.add("cardiomegaly")
        if "effusion" in s:
            globals_.add(f"effusion_{_side(s)}")
        if "ascites" in s or "free fluid" in s:
            globals_.add("ascites")
        if "nephrectomy" in s:
            globals_.add(f"nephrectomy_{_side(s)}")
    return lesions, globals_


def labels_from_parse(lesions: Counter, globals_: set[str]) -> dict[str, int]:
    organs = {organ for organ, _, _ in lesions}
    has = lambda prefix: any(g.startswith(prefix) for g in globals_)  # noqa: E731
    return {
        "Liver lesion": int("liver" in organs),
        "Splenic lesion": int("spleen" in organs),
        "Renal lesion": int(bool(organs & {"kidney_right", "kidney_left"})),
        "Lung nodule": int(bool(organs & {"lung_right", "lung_left"})),
        "Hepatomegaly": int("hepatomegaly" in globals_),
        "Hepatic steatosis": int("steatosis" in globals_),
        "Splenomegaly": int("splenomegaly" in globals_),
        "Pleural effusion": int(has("effusion")),
        "Ascites": int("ascites" in globals_),
        "Cardiomegaly": int("cardiomegaly" in globals_),
        "Nephrectomy": int(has("nephrectomy")),
    }


def truth(findings) -> tuple[Counter, set[str]]:
    """What the oracle knows about a volume: its findings, in the reader's vocabulary."""
    lesions = Counter((les.organ, les.diameter_mm, les.density) for les in findings.lesions)
    g = {
        name
        for name in ("hepatomegaly", "steatosis", "splenomegaly", "cardiomegaly")
        if getattr(findings, name)
    }
    if findings.effusion:
        g.add(f"effusion_{findings.effusion}")
    if findings.ascites:
        g.add("ascites")
    if findings.nephrectomy:
        g.add(f"nephrectomy_{findings.nephrectomy}")
    return lesions, g


# ----------------------------------------------------------------------------- consistency


@pytest.fixture(scope="module")
def specs():
    config = PhantomConfig(n_cases=400, n_val=50, n_test=100)
    return [sample_case(config, i) for i in range(config.n_cases)]


def test_reports_state_exactly_the_findings(specs):
    for spec in specs:
        lesions, globals_ = parse_report(spec.report)
        assert (lesions, globals_) == truth(spec.findings), spec.report
        # each label that is 1 is described, and no 0 label is claimed
        assert labels_from_parse(lesions, globals_) == spec.labels, spec.report
        assert list(spec.labels) == list(LABEL_NAMES)


def test_reports_are_varied_multi_sentence_and_anonymous(specs):
    def count(report: str) -> int:
        text = re.sub(r"\b(TECHNIQUE|FINDINGS|IMPRESSION):", " ", report)
        text = re.sub(r"^\d+\.\s", "", text, flags=re.M)  # enumerated impression items
        return len([s for s in re.split(r"(?<=\.)\s+", text) if s.strip()])

    counts = [count(s.report) for s in specs]
    assert statistics.median(counts) >= 6 and min(counts) >= 4
    assert sum(c <= 12 for c in counts) >= 0.95 * len(counts)
    assert len({s.report for s in specs}) == len(specs)
    # the same finding is worded in several ways across cases
    openings = Counter(s.report.split(".")[0].split()[0] for s in specs)
    assert len(openings) >= 8
    for s in specs:
        assert "phantom" not in s.report.lower() and s.case_id.split("_")[1] not in s.report


def test_each_label_is_common_and_normal_cases_are_rare(specs):
    n = len(specs)
    for name in LABEL_NAMES:
        prevalence = sum(s.labels[name] for s in specs) / n
        assert 0.04 <= prevalence <= 0.6, (name, prevalence)
    assert sum(not any(s.labels.values()) for s in specs) / n < 0.12


def test_vqa_items_are_well_formed_and_true(specs):
    for spec in specs[:100]:
        ids = [item["id"] for item in spec.vqa]
        assert len(ids) == len(set(ids)) and len(ids) >= 4
        kinds = {item["type"] for item in spec.vqa}
        assert kinds == {"closed", "open"}
        for item in spec.vqa:
            assert item["case_id"] == spec.case_id and item["question"] and item["answer"]
            if item["type"] == "closed":
                letter = item["answer_choice"]
                assert item["choices"]["ABCDEFGH".index(letter)] == item["answer"]
                assert len(set(item["choices"])) == len(item["choices"])
            else:
                assert "choices" not in item
        by_question = {item["question"]: item["answer"] for item in spec.vqa}
        assert by_question["How many focal lesions are seen?"] == str(len(spec.findings.lesions))
        for question, answer in by_question.items():
            m = re.fullmatch(r"Is there a focal lesion in the (.+)\?", question)
            if m:
                organ = m.group(1).replace("right ", "").replace("left ", "")
                side = "right" if "right" in m.group(1) else "left" if "left" in m.group(1) else None
                has = any(
                    les.organ.split("_")[0] == organ and les.side == side for les in spec.findings.lesions
                )
                assert answer == ("Yes" if has else "No"), (question, spec.report)


# ----------------------------------------------------------------------------- learnability


def _recall_at_k(scores: list[list[float]], k: int) -> float:
    """Text -> image recall@k with random tie-breaking (its expectation), true pair on the diagonal."""
    total = 0.0
    for i, row in enumerate(scores):
        higher = sum(s > row[i] for s in row)
        ties = sum(s == row[i] for s in row) - 1
        total += min(1.0, max(0.0, (k - higher) / (ties + 1)))
    return total / len(scores)


def _distance(a: tuple[Counter, set[str]], b: tuple[Counter, set[str]]) -> int:
    return sum(((a[0] - b[0]) + (b[0] - a[0])).values()) + len(a[1] ^ b[1])


def _coarse(sig: tuple[Counter, set[str]]) -> tuple:
    size = lambda mm: "small" if mm < 20 else "medium" if mm < 40 else "large"  # noqa: E731
    return tuple(sorted((o, size(mm), d) for (o, mm, d), n in sig[0].items() for _ in range(n))), tuple(
        sorted(sig[1])
    )


def test_reports_pin_down_their_volumes_on_the_test_split(specs):
    test = [s for s in specs if s.split == "test"]
    assert len(test) == 100
    parsed = [parse_report(s.report) for s in test]  # from the words
    known = [truth(s.findings) for s in test]  # the oracle's knowledge of each volume
    scores = [[-_distance(p, v) for v in known] for p in parsed]
    recall5 = _recall_at_k(scores, 5)
    assert recall5 >= 0.9, recall5
    # even reading sizes only as small / medium / large, groups of look-alike cases stay small
    groups = Counter(_coarse(p) for p in parsed)
    median_group = statistics.median(groups[_coarse(p)] for p in parsed)
    assert median_group <= 2, median_group
    coarse_scores = [[0.0 if _coarse(p) == _coarse(v) else -1.0 for v in known] for p in parsed]
    assert _recall_at_k(coarse_scores, 5) >= 0.85
