"""Finding sets for zero-shot classification: each finding's positive and negative prompts.

Built-in sets live as JSON beside this module (``finding_sets/<name>.json``): ``phantoms`` (the 11
phantom labels, prompts in the phantom report grammar) and ``ctrate`` (CT-RATE's 18 labels with the
``"{label}."`` / ``"not {label}."`` pair). A plain list of label strings becomes a set through
templates; a label that a built-in set knows (case-insensitive) keeps that set's curated prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Finding", "FindingSet", "list_finding_sets", "load_finding_set"]

_DIR = Path(__file__).with_name("finding_sets")
DEFAULT_TEMPLATES = (("{label}.",), ("No {label}.",))


@dataclass(frozen=True)
class Finding:
    """One finding and its prompts (``negative`` may be empty for positive-only scoring)."""

    name: str
    positive: tuple[str, ...]
    negative: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.positive or any(not p.strip() for p in (*self.positive, *self.negative)):
            raise ValueError(f"finding {self.name!r} needs a name and at least one non-empty positive prompt")


@dataclass(frozen=True)
class FindingSet:
    """An ordered set of findings with prompts."""

    name: str
    findings: tuple[Finding, ...]
    description: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.findings]
        if not names:
            raise ValueError(f"finding set {self.name!r} is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"finding set {self.name!r} names a finding twice: {names}")

    @property
    def names(self) -> list[str]:
        """The finding names in order."""
        return [f.name for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (also what a result records)."""
        return {
            "name": self.name,
            "description": self.description,
            "findings": [
                {"name": f.name, "positive": list(f.positive), "negative": list(f.negative)}
                for f in self.findings
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FindingSet:
        """Build from :meth:`to_dict`'s form."""
        try:
            findings = tuple(
                Finding(str(f["name"]), tuple(f["positive"]), tuple(f.get("negative", ())))
                for f in data["findings"]
            )
            return cls(str(data.get("name", "custom")), findings, str(data.get("description", "")))
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"a finding set needs 'findings': [{{'name', 'positive', 'negative'}}] ({err!r})"
            ) from None

    @classmethod
    def from_labels(
        cls,
        labels: Sequence[str],
        *,
        positive: Sequence[str] = DEFAULT_TEMPLATES[0],
        negative: Sequence[str] = DEFAULT_TEMPLATES[1],
        name: str = "custom",
    ) -> FindingSet:
        """Prompts for plain label strings; built-in sets' curated prompts win for labels they know.

        Args:
            labels: finding names, e.g. ``["pleural effusion", "ascites"]``.
            positive: templates with ``{label}`` for the positive prompts.
            negative: templates for the negative prompts (empty: positive-only scoring).
            name: the set's name in results.
        """
        if isinstance(labels, str):
            labels = [labels]
        known = {f.name.lower(): f for s in list_finding_sets() for f in load_finding_set(s).findings}
        findings = []
        for label in labels:
            if label.lower() in known:
                findings.append(Finding(label, known[label.lower()].positive, known[label.lower()].negative))
            else:
                findings.append(
                    Finding(
                        label,
                        tuple(t.format(label=label) for t in positive),
                        tuple(t.format(label=label) for t in negative),
                    )
                )
        return cls(name, tuple(findings), "prompts from templates" if labels else "")


def list_finding_sets() -> list[str]:
    """Names of the built-in finding sets."""
    return sorted(p.stem for p in _DIR.glob("*.json"))


def load_finding_set(name_or_path: str | os.PathLike[str]) -> FindingSet:
    """A built-in finding set by name, or one from a JSON file.

    Raises:
        ValueError: unknown name or malformed file.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = _DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ValueError(
                f"unknown finding set {name_or_path!r}; built in: {list_finding_sets()} (or give a JSON file)"
            )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the finding set ({err})") from None
    return FindingSet.from_dict(data)
