"""Report cleaning and sentence splitting: hand-written cases and the real report corpora."""

from __future__ import annotations

import csv
import re

import pytest

from velvet.data.errors import ReportError
from velvet.data.reports import MAX_REPORT_CHARS, clean_report, split_sentences


def _alnum(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "", text)


@pytest.fixture(scope="module")
def real_reports(shared_data) -> list[str]:
    with (shared_data / "reports" / "ctrate" / "reports_800.csv").open(encoding="utf-8", newline="") as fh:
        return [row["report_text"] for row in csv.DictReader(fh)]


# ------------------------------------------------------------------------------------ cleaning


def test_clean_normalises_odd_characters():
    raw = "Lungs\u00a0are\u2009clear.\r\nNo\teffusion\u200b here \u201cquoted\u201d couldn\u2019t.\x07"
    assert clean_report(raw) == 'Lungs are clear.\nNo effusion here "quoted" couldn\'t.'


def test_clean_removes_header_words_in_any_case_and_keeps_blocks():
    raw = "Title: Arachnoid cyst\n\n\n\nPRESENTATION: headache\n\n\n\npatient: Age: 45 years gender: F"
    cleaned = clean_report(raw)
    assert cleaned == "Arachnoid cyst\n\n\n\nheadache\n\n\n\n45 years F"
    # a header word inside another word is not a header
    assert clean_report("Image: normal. Dosage: 5 mg.") == "Image: normal. Dosage: 5 mg."


def test_clean_is_idempotent(real_reports):
    samples = [*real_reports[:200], "a \u00a0 b\n \n \n \nc  d", "Title: x\n\n\n\nAge: 5"]
    for text in samples:
        once = clean_report(text)
        assert clean_report(once) == once


@pytest.mark.parametrize("text", ["", "   ", "\u00a0\u2009\n\n\t", "Title: Age:", '" .. "'])
def test_clean_rejects_empty_reports_naming_the_source(text):
    with pytest.raises(ReportError) as info:
        clean_report(text, source="cases/case7.txt")
    assert str(info.value).startswith("cases/case7.txt: ")


def test_clean_rejects_huge_reports_with_their_size():
    with pytest.raises(ReportError, match=r"case9: report has 100,001 characters"):
        clean_report("a" * (MAX_REPORT_CHARS + 1), source="case9")
    assert clean_report("a" * MAX_REPORT_CHARS) == "a" * MAX_REPORT_CHARS


def test_clean_rejects_non_text():
    with pytest.raises(ReportError, match="must be a string"):
        clean_report(None, source="row 3")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # decimals, dates and abbreviations never end a sentence
        ("Nodule of 3.5 cm in segment 6. No effusion.", ["Nodule of 3.5 cm in segment 6.", "No effusion."]),
        ("Compared with 19.06.2020 exam. Stable.", ["Compared with 19.06.2020 exam.", "Stable."]),
        (
            "Seen e.g. in the apex, i.e. upper lobe. Next.",
            ["Seen e.g. in the apex, i.e. upper lobe.", "Next."],
        ),
        ("Approx. 3 cm lesion vs. cyst. Next.", ["Approx. 3 cm lesion vs. cyst.", "Next."]),
        ("Reviewed by Dr. J. Smith today. Next.", ["Reviewed by Dr. J. Smith today.", "Next."]),
        ("See No. 5 above. Next.", ["See No. 5 above.", "Next."]),
        ("Assist.Prof.Dr.Rukiye signed. Next.", ["Assist.Prof.Dr.Rukiye signed.", "Next."]),
        # a unit ends a sentence only before an upper-case word
        ("Mass of 3 cm. in diameter. The liver.", ["Mass of 3 cm. in diameter.", "The liver."]),
        ("Mass of 5mm. The liver.", ["Mass of 5mm.", "The liver."]),
        # the reference rule is kept: a lower-case start after ". " is still a new sentence
        ("Iliac arteries. abdominal branches are open.", ["Iliac arteries.", "abdominal branches are open."]),
        # ! and ?, and terminators with closing brackets
        ("Pneumonia? Correlate! Done.", ["Pneumonia?", "Correlate!", "Done."]),
        ("Lesion (cyst?) in the liver. Next.", ["Lesion (cyst?) in the liver.", "Next."]),
        ("Pattern (airway disease ? vascular?). Next.", ["Pattern (airway disease ? vascular?).", "Next."]),
        ('Stable lungs." More text.', ['Stable lungs."', "More text."]),
        # ellipsis before a lower-case word is not an end
        ("Laceration ..... posteriorly seen. End", ["Laceration ..... posteriorly seen.", "End"]),
        # a missing space after the full stop (M3D-Cap)
        ("Midline structures.No fracture.", ["Midline structures.", "No fracture."]),
        # list numbering stays with its item, inline or per line
        ("1. Normal liver. 2. No lesion.", ["1. Normal liver.", "2. No lesion."]),
        ("Impression:\n1) Normal liver\n2) No lesion", ["Impression:", "1) Normal liver", "2) No lesion"]),
        ("Findings:\n- liver ok\n- spleen ok", ["Findings:", "- liver ok", "- spleen ok"]),
        # bullets start sentences and are removed; a middle dot inside a word is not a bullet
        ("Cyst. • Hernia • Steatosis", ["Cyst.", "Hernia", "Steatosis"]),
        ("Sequela ·A node. Dose 5 kg·m", ["Sequela", "A node.", "Dose 5 kg·m"]),
        ('Normal. " Hepatosteatosis. " Hernia', ["Normal.", "Hepatosteatosis.", "Hernia"]),
        # a trailing punctuation-only chunk joins the previous sentence
        ('Normal limits. "', ["Normal limits."]),
        ("... Lungs clear. Heart ok.", ["... Lungs clear.", "Heart ok."]),
        ("No terminator at all", ["No terminator at all"]),
        # NBSP and header words
        ("Lesion\u00a0seen.\u00a0 Next.", ["Lesion seen.", "Next."]),
        ("Title: Cyst\n\n\n\nstudy_findings: Large cyst.", ["Cyst", "Large cyst."]),
    ],
)
def test_split_cases(text, expected):
    assert split_sentences(text) == expected


def test_split_blocks_at_three_newlines_only():
    assert split_sentences("Lungs clear\n\n\nHeart normal") == ["Lungs clear", "Heart normal"]
    assert split_sentences("Lungs clear\n\nHeart normal") == ["Lungs clear Heart normal"]


def test_split_long_chunks_with_newlines_at_newlines():
    first = " ".join(["word"] * 20)
    second = " ".join(["more"] * 15)
    # 35 words with a newline and no terminator: split at the newline (reference rule)
    assert split_sentences(f"{first}\n{second}") == [first, second]
    # 30 words or fewer: the newline becomes a space
    short = " ".join(["more"] * 10)
    assert split_sentences(f"{first}\n{short}") == [f"{first} {short}"]


def test_split_empty_text():
    assert split_sentences("") == []
    assert split_sentences(" \n\u00a0") == []


def test_every_real_report_splits_without_losing_text(real_reports):
    for text in real_reports:
        cleaned = clean_report(text)
        sentences = split_sentences(text)
        assert sentences, text
        assert all(s == s.strip() and "  " not in s and "\n" not in s for s in sentences)
        # only whitespace, bullets and the CT-RATE ' " ' separators may disappear
        assert _alnum("".join(sentences)) == _alnum(cleaned)
    counts = [len(split_sentences(t)) for t in real_reports]
    assert sum(counts) / len(counts) > 10  # reports are split, not kept whole


def test_real_m3d_captions(shared_data):
    files = sorted((shared_data / "reports" / "m3dcap_captions").glob("*.txt"))
    assert files
    for file in files:
        text = file.read_text(encoding="utf-8")
        sentences = split_sentences(text)
        assert sentences and _alnum("".join(sentences)) == _alnum(clean_report(text))
    caption = (shared_data / "reports" / "m3dcap_captions" / "001480.txt").read_text(encoding="utf-8")
    assert "No significant mass effect on the midline structures." in split_sentences(caption)
