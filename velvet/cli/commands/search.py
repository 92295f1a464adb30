"""``velvet search --index index.safetensors "query text" [--top-k 5]``: find volumes by report text.

The query is embedded by the model that built the index (recorded in it; ``--model`` overrides)
and the indexed volumes are printed best first with their cosine similarity.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register the ``search`` subcommand."""
    parser = subparsers.add_parser(
        "search",
        help="rank indexed volumes against report text",
        description="Rank the volumes of an index (from `velvet embed`) by similarity to report text.",
    )
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="report text (one or more queries)")
    parser.add_argument("--index", required=True, help="index file written by `velvet embed`")
    parser.add_argument("--top-k", type=int, default=5, help="results per query (default 5)")
    parser.add_argument("--model", default=None, help="model to embed the query with (default: the index's)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Search; prints ``rank score path`` lines per query (or JSON)."""
    import json

    from velvet.index.store import read_index
    from velvet.models.velvet import VelvetModel

    if args.top_k < 1:
        print("error: --top-k must be >= 1", file=sys.stderr)
        return 2
    try:
        index = read_index(args.index)
        model = VelvetModel.from_pretrained(args.model or index.model)
        scores, rows = index.search(model.encode_text(list(args.queries)), top_k=args.top_k)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results = [
        {"query": q, "results": [{"path": index.paths[int(i)], "score": float(s)} for s, i in zip(sc, ix, strict=True)]}
        for q, sc, ix in zip(args.queries, scores, rows, strict=True)
    ]
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return 0
    for n, result in enumerate(results):
        if n:
            print()
        query = result["query"]
        print(f"query: {query if len(query) <= 100 else query[:97] + '...'}")
        for rank, hit in enumerate(result["results"], 1):
            print(f"{rank:3d}  {hit['score']:.4f}  {hit['path']}")
    return 0
