"""Evaluation cost: embedding volumes, then zero-shot scoring and bootstrap CIs over 18 findings.

What ``velvet evaluate zeroshot`` spends on a CT-RATE-sized test set, per phase:

- ``embed``: the vision encoder + projection over preprocessed volumes (the cache's tensors;
  random values at the preset's input size), volumes/s, and the time for ``--project`` volumes
  (2,000 by default, about the size of CT-RATE's validation set);
- ``prompts``: encoding the ``ctrate`` finding set's 18 positive/negative prompt pairs;
- ``scores``: the zero-shot scores of every volume for every finding;
- ``report``: AUROC, F1 and the rest per finding with seeded case-level bootstrap CIs
  (``--bootstrap`` resamples) on random labels of the same shape.

Usage::

    python benchmarks/evaluation_cost.py                           # reference config, 64 volumes, CPU
    python benchmarks/evaluation_cost.py --preset small --n 256 --device cuda --bf16
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _model(preset: str, device: str) -> tuple[Any, int]:
    import torch
    import train_step as ts  # the presets of the step benchmark, one definition

    from velvet.data.tokenization import TriBertTokenizer
    from velvet.data.tokenizer_training import train_wordpiece
    from velvet.models.config import VelvetConfig, get_model_config
    from velvet.models.velvet import VelvetModel

    spec = ts.PRESETS[preset]
    reports = ts._reports()
    tok_dir = train_wordpiece(reports, Path(tempfile.mkdtemp()) / "tok", vocab_size=spec["vocab"])
    tokenizer = TriBertTokenizer.from_pretrained(tok_dir, max_length=spec["max_length"])
    model_spec = spec["model"]
    config = (
        get_model_config(model_spec) if isinstance(model_spec, str) else VelvetConfig.from_dict(model_spec)
    )
    torch.manual_seed(0)
    model = VelvetModel(config.for_data(tokenizer=tokenizer))
    model.tokenizer = tokenizer
    return model.to(device).eval(), spec["size"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="reference", choices=["tiny", "reference", "small", "base"])
    parser.add_argument("--n", type=int, default=64, help="volumes embedded (timed)")
    parser.add_argument(
        "--project", type=int, default=2000, help="volumes the embedding time is projected to"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the encoder (GPU)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from velvet.evaluation.classification_report import classification_report
    from velvet.evaluation.embeddings import image_features
    from velvet.evaluation.findings import load_finding_set
    from velvet.evaluation.zeroshot import _prompt_features, zero_shot_scores

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or platform.machine())
    model, size = _model(args.preset, device)
    finding_set = load_finding_set("ctrate")
    print(
        f"velvet evaluation cost | {device}: {name} | preset {args.preset}, {size}^3 | torch {torch.__version__}"
    )

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    gen = torch.Generator().manual_seed(0)
    embeddings = []
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16):
        warm = torch.rand(min(args.batch_size, args.n), 1, size, size, size, generator=gen)
        image_features(model, warm.to(device), ["embedding"])  # first-call costs out of the timing
        sync()
        start = time.perf_counter()
        for lo in range(0, args.n, args.batch_size):
            batch = torch.rand(min(args.batch_size, args.n - lo), 1, size, size, size, generator=gen)
            embeddings.append(image_features(model, batch.to(device), ["embedding"])["embedding"].float())
        sync()
        embed_s = time.perf_counter() - start
    image = {"embedding": torch.cat(embeddings)}
    start = time.perf_counter()
    with torch.no_grad():
        _prompt_features(model, finding_set, "report")
    sync()
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        scores = zero_shot_scores(model, image, finding_set, level="report", rule="pair_softmax")
    sync()
    score_s = time.perf_counter() - start
    names = finding_set.names
    labels = (torch.rand(args.n, len(names), generator=gen) < 0.3).double()
    start = time.perf_counter()
    classification_report(
        scores.double().cpu(),
        labels,
        names,
        torch.full((len(names),), 0.5),
        n_resamples=args.bootstrap,
        seed=0,
    )
    report_s = time.perf_counter() - start
    per_volume = embed_s / args.n
    print(f"\n{'phase':10s} {'seconds':>9s}  notes")
    print(
        f"{'embed':10s} {embed_s:9.2f}  {args.n} volumes, batch {args.batch_size}: {args.n / embed_s:.2f} volumes/s; "
        f"{args.project} volumes: {per_volume * args.project / 60:.1f} min"
    )
    print(f"{'prompts':10s} {prompt_s:9.2f}  {len(names)} findings, positive and negative prompts")
    print(f"{'scores':10s} {score_s:9.3f}  {args.n} x {len(names)} zero-shot scores (pair softmax)")
    print(
        f"{'report':10s} {report_s:9.2f}  per-finding metrics, {args.bootstrap} bootstrap resamples over {args.n} cases"
    )


if __name__ == "__main__":
    main()
