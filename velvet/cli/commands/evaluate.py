"""``velvet evaluate PROTOCOL --model M --manifest F [--split S] --out results.json``: run a named protocol.

Protocols (``velvet evaluate --list``): ``retrieval``, ``phantoms-zeroshot``, ``ctrate-zeroshot``,
``zeroshot`` (with ``--set finding_set=...``) and ``probe``; ``vqa`` and ``report`` take a
volume-language model checkpoint (``velvet fit`` with a ``recipes/vqa`` or ``recipes/report_gen`` recipe). The result JSON records the protocol
version, its settings, metric definitions and the provenance of model, contract and manifest;
image features are cached (``--cache-dir``) so protocols run one after another embed each volume once.
A summary table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="run an evaluation protocol (retrieval, zero-shot, linear probe, VQA, report generation) and write a result JSON",
        description="Run a named evaluation protocol on a manifest and write a self-describing result JSON.",
    )
    parser.add_argument("protocol", nargs="?", help="protocol name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the protocols and their settings")
    parser.add_argument("--model", help="pretrained folder or registered name (e.g. velvet-tiny.phantoms)")
    parser.add_argument("--manifest", help="manifest CSV/JSONL (labels as label:<name> columns)")
    parser.add_argument("--split", default=None, help="split to score (default: the protocol's)")
    parser.add_argument("--out", default=None, help="result JSON to write")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a protocol setting; VALUE is JSON (e.g. --set bootstrap=200 --set 'weights={\"report\":1,\"word\":1}')",
    )  # fmt: skip
    parser.add_argument("--cache-dir", default=None, help="embedding cache folder (default: none)")
    parser.add_argument(
        "--volume-cache", default=None, help="preprocessed-volume cache folder to read and fill"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="volumes per forward pass (default 8)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(func=run)


def _settings(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as val_youden or a file name
    return out


def _summary(result: dict[str, Any]) -> list[str]:
    lines = [f"{result['protocol']} v{result['protocol_version']} on {result['split']} (N={result['n']})"]
    metrics = result["metrics"]
    if "macro" in metrics:
        for name, row in result["per_finding"].items():
            if "auroc" not in row:
                lines.append(f"  {name:36s} {row.get('note', '')}")
                continue
            ci = row.get("auroc_ci") or [None, None]
            ci_text = "" if ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
            auc = "  n/a" if row["auroc"] is None else f"{row['auroc']:.3f}"
            lines.append(
                f"  {name:36s} AUROC {auc}{ci_text}  F1 {row['f1']:.3f}  pos {int(row['n_positive'])}"
            )
        macro = metrics["macro"]
        ci = macro.get("auroc_ci") or [None, None]
        ci_text = "" if ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        lines.append(f"  {'macro':36s} AUROC {macro['auroc']:.3f}{ci_text}  F1 {macro['f1']:.3f}")
    else:
        for key, value in metrics.items():
            if isinstance(value, dict):
                continue
            lines.append(f"  {key:24s} {value:.4f}" if isinstance(value, float) else f"  {key:24s} {value}")
    for qt, row in (result.get("per_question_type") or {}).items():
        parts = [f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float) and k in _TYPE_COLUMNS]
        lines.append(f"  {qt:36s} n {row['n']}  " + "  ".join(parts))
    return lines


_TYPE_COLUMNS = ("accuracy_generated", "accuracy_loglik", "majority_baseline_accuracy", "yes_no_auroc", "bleu1", "rouge_l")


def run(args: argparse.Namespace) -> int:
    """Run the protocol; prints a summary, writes ``--out``."""
    from velvet.evaluation.protocols import PROTOCOLS, evaluate
    from velvet.evaluation.provenance import jsonable

    if args.list:
        for name, p in sorted(PROTOCOLS.items()):
            print(f"{name} (v{p.version}, {p.kind}): {p.description}")
            print(f"    settings: {json.dumps(p.settings)}")
        return 0
    if not args.protocol or not args.model or not args.manifest:
        print("error: give PROTOCOL, --model and --manifest (or --list)", file=sys.stderr)
        return 2
    from velvet.data.errors import DataError
    from velvet.models.velvet import VelvetModel

    try:
        settings = _settings(args.set)
        if PROTOCOLS.get(args.protocol) is not None and PROTOCOLS[args.protocol].kind in ("vqa", "report"):
            from velvet.vlm.load import load_vlm

            model = load_vlm(args.model, device=args.device)
        else:
            model = VelvetModel.from_pretrained(args.model, map_location=args.device)
        result = evaluate(
            args.protocol, model, args.manifest, split=args.split, out=args.out, seed=args.seed, settings=settings,
            cache_dir=args.cache_dir, volume_cache_dir=args.volume_cache, batch_size=args.batch_size,
            model_name=args.model,
        )  # fmt: skip
    except (DataError, OSError, ValueError, RuntimeError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(_summary(jsonable(result))))
    if args.out:
        print(f"-> {args.out}")
    return 0
