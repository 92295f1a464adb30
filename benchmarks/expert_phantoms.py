"""How much an expert file (``velvet expert``) knows: its findings against the phantoms' ground truth.

For each expert file (a segmentation model's, or ``--from-labels``), on one split of a phantom data
set: how often the line gets each discrete finding right (effusion side, ascites, a missing
kidney, the number and organs of the lesions), and how well its numbers separate the diffuse
findings (AUROC of the organ volume for an enlarged organ, of minus the liver's mean HU for
steatosis, of the ascites volume for ascites). That bounds what the prompt can add to VQA and
report generation.

Usage::

    python benchmarks/expert_phantoms.py runs/demo/data/phantoms expert_labels.jsonl expert.jsonl --split test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SIDES = {None: set(), "right": {"right"}, "left": {"left"}, "bilateral": {"right", "left"}}
# finding of the generator -> (field of the expert findings, organ, sign: higher value = finding)
SCORES = {
    "hepatomegaly": ("volumes_ml", "liver", 1),
    "splenomegaly": ("volumes_ml", "spleen", 1),
    "cardiomegaly": ("volumes_ml", "heart", 1),
    "steatosis": ("mean_hu", "liver", -1),
    "ascites": ("volumes_ml", "ascites", 1),
}


def agreement(truth: dict, got: dict) -> dict[str, bool]:
    """Which discrete findings of one case the expert findings get right."""
    sides = {s for s, ml in got["sided_ml"].get("pleural_effusion", {}).items() if ml > 0}
    missing = {k for k in ("kidney_right", "kidney_left") if got["volumes_ml"].get(k, 0) == 0}
    lesions = truth["lesions"]
    largest = max(lesions, key=lambda d: d["diameter_mm"])["organ"] if lesions else None
    return {
        "effusion side": sides == SIDES[truth["effusion"]],
        "ascites present (> 0 mL)": (got["volumes_ml"].get("ascites", 0) > 0) == bool(truth["ascites"]),
        "missing kidney": missing == ({f"kidney_{truth['nephrectomy']}"} if truth["nephrectomy"] else set()),
        "lesion count": len(got["lesions"]) == len(lesions),
        "lesion organs": {d["organ"] for d in got["lesions"]} == {d["organ"] for d in lesions},
        "largest lesion's organ": (got["lesions"][0]["organ"] if got["lesions"] else None) == largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="the phantom folder (manifest.csv, findings.jsonl)")
    parser.add_argument("files", nargs="+", help="expert files in that folder")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    import torch

    from velvet.metrics.classification import auroc

    root = Path(args.data)
    truth = {
        d["id"]: d["findings"]
        for d in map(json.loads, (root / "findings.jsonl").read_text(encoding="utf-8").splitlines())
        if d["split"] == args.split
    }
    print(f"{len(truth)} {args.split} phantoms of {root}")
    for name in args.files:
        rows = {
            r["case_id"]: r
            for r in map(json.loads, (root / name).read_text(encoding="utf-8").splitlines())
            if r["case_id"] in truth
        }
        source = next(iter(rows.values()))["source"]
        checks = [agreement(truth[c], rows[c]["findings"]) for c in truth]
        print(f"\n{name} ({source})")
        for key in checks[0]:
            print(f"  {key:28s} {sum(c[key] for c in checks):4d} / {len(checks)}")
        for finding, (field, organ, sign) in SCORES.items():
            y = torch.tensor([float(bool(truth[c][finding])) for c in truth])
            x = torch.tensor([sign * float(rows[c]["findings"].get(field, {}).get(organ, 0)) for c in truth])
            value = auroc(x, y) if 0 < y.sum() < len(y) else float("nan")
            print(
                f"  AUROC {finding:13s} by {'-' if sign < 0 else ''}{organ} {field:10s} {value:.3f} ({int(y.sum())} positive)"
            )


if __name__ == "__main__":
    main()
