"""Does pretraining help segmentation? Demo-pretrained encoder vs random init on few labelled phantoms.

Fine-tunes SwinUNETR (recipes/segmentation/phantoms.yaml settings) on 16 labelled phantom volumes,
once from the encoder the demo recipe pretrains and once from random weights, with the same steps
and seeds, and tests each run on 32 held-out phantoms (whole-volume sliding window, Dice / NSD in
mm). Prints the mean-Dice table with every seed's value and writes it as JSON and Markdown.

Usage::

    velvet fit --config recipes/pretrain/demo.yaml              # once: the demo encoder
    velvet export runs/demo/checkpoints/last.ckpt runs/demo/export
    python benchmarks/segmentation_phantoms.py --pretrained runs/demo/export --seeds 0 1 2 --steps 200

Each run is a separate ``Trainer`` in this process; the phantom set and its cache are made once
under ``--workdir``. On 2 CPU cores a run of 200 steps takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

PHANTOMS = {"n_cases": 56, "n_val": 8, "n_test": 32, "seed": 1, "shape": [64, 64, 48], "spacing": [6.0, 6.0, 6.67]}
# the demo's pretraining contract: body crop resized to 32^3 (recipes/segmentation/phantoms.yaml)
PREPROCESS = {"preset": "ct_rate", "hu_window": [-200, 300], "crop_foreground": True, "spacing": None,
              "spatial_size": [32, 32, 32], "size_mode": "resize"}
AUGMENT = [
    {"class_path": "RandFlipd", "init_args": {"spatial_axis": [0], "prob": 0.1}},
    {"class_path": "RandFlipd", "init_args": {"spatial_axis": [1], "prob": 0.1}},
    {"class_path": "RandFlipd", "init_args": {"spatial_axis": [2], "prob": 0.1}},
    {"class_path": "RandRotate90d", "init_args": {"prob": 0.1, "max_k": 3}},
    {"class_path": "RandShiftIntensityd", "init_args": {"keys": ["image"], "offsets": 0.1, "prob": 0.5}},
]


def _datamodule(workdir: Path, seed: int):
    from velvet.data.datamodule_segmentation import SegmentationDataModule

    return SegmentationDataModule(
        phantoms=PHANTOMS, data_dir=str(workdir / "data"), cache_dir=str(workdir / "cache"),
        preprocess=PREPROCESS, roi_size=(32, 32, 32), samples_per_volume=1, batch_size=8,
        num_workers=0, augment=AUGMENT, seed=seed,
    )


def run_one(workdir: Path, init: str | None, vision: dict, seed: int, args: argparse.Namespace) -> dict:
    """Fine-tune one model and test it; returns the test summary and per-class Dice."""
    import lightning.pytorch as pl

    from velvet.tasks.segmentation import SegmentationTask

    pl.seed_everything(seed, workers=True, verbose=False)
    name = f"{'pretrained' if init else 'random'}_seed{seed}"
    task = SegmentationTask(
        init_from=init, vision=vision, norm_name="batch", lr=args.lr, encoder_lr=args.encoder_lr, weight_decay=1e-5,
        warmup_steps=20, min_lr=1e-5, nsd_tolerance_mm=10.0, seed=seed, results_dir=str(workdir / "results" / name),
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    dm = _datamodule(workdir, seed)
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    fit_s = time.perf_counter() - start
    trainer.test(task, datamodule=dm, verbose=False)
    result = json.loads((workdir / "results" / name / "results.json").read_text(encoding="utf-8"))
    return {
        "init": "pretrained" if init else "random",
        "seed": seed,
        "dice": result["summary"]["dice"],
        "nsd": result["summary"]["nsd"],
        "hd95": result["summary"]["hd95"],
        "per_class_dice": {r["class"]: r["dice"] for r in result["per_class"]},
        "fit_seconds": round(fit_s, 1),
    }


def _table(rows: list[dict]) -> str:
    lines = ["| init | mean Dice | NSD (10 mm) | HD95 (mm) | per-seed Dice |", "|---|---|---|---|---|"]
    for init in ("pretrained", "random"):
        runs = [r for r in rows if r["init"] == init]
        if not runs:
            continue
        dice = [r["dice"] for r in runs]
        spread = statistics.stdev(dice) if len(dice) > 1 else 0.0
        lines.append(
            f"| {init} | {statistics.mean(dice):.3f} ± {spread:.3f} | {statistics.mean(r['nsd'] for r in runs):.3f} | "
            f"{statistics.mean(r['hd95'] for r in runs):.1f} | " + ", ".join(f"{d:.3f} (seed {r['seed']})" for d, r in zip(dice, runs, strict=True)) + " |"
        )
    classes = list(rows[0]["per_class_dice"])
    lines += ["", "| class | " + " | ".join(i for i in ("pretrained", "random") if any(r["init"] == i for r in rows)) + " |",
              "|---|" + "---|" * len({r["init"] for r in rows})]
    for c in classes:
        cells = []
        for init in ("pretrained", "random"):
            values = [r["per_class_dice"][c] for r in rows if r["init"] == init and r["per_class_dice"][c] is not None]
            if any(r["init"] == init for r in rows):
                cells.append(f"{statistics.mean(values):.3f}" if values else "n/a")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True, help="the demo's exported encoder (pretrained dir or .ckpt)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--encoder-lr", type=float, default=None, help="encoder learning rate (default: --lr)")
    parser.add_argument("--only", choices=["pretrained", "random"], help="run one arm only")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_seg_phantoms"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/segmentation_phantoms"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from velvet.models.segmentation_encoder import encoder_config

    torch.set_num_threads(max(1, torch.get_num_threads()))
    vision = encoder_config(args.pretrained)
    if vision is None:
        raise SystemExit(f"{args.pretrained} records no encoder architecture")
    vision_dict = vision.to_dict()
    _datamodule(args.workdir, 0).prepare_data()
    rows = []
    for seed in args.seeds:
        for init in ("pretrained", "random"):
            if args.only and args.only != init:
                continue
            row = run_one(args.workdir, args.pretrained if init == "pretrained" else None, vision_dict, seed, args)
            rows.append(row)
            print(f"{init:10s} seed {seed}: mean Dice {row['dice']:.3f}  NSD {row['nsd']:.3f}  ({row['fit_seconds']} s fit)", flush=True)
    table = _table(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"phantoms": PHANTOMS, "preprocess": PREPROCESS, "steps": args.steps, "lr": args.lr,
                "encoder_lr": args.encoder_lr, "batch": "8 volumes of 32^3", "pretrained": str(args.pretrained),
                "encoder": vision_dict, "torch_threads": torch.get_num_threads()}
    args.out.with_suffix(".json").write_text(json.dumps({"settings": settings, "runs": rows}, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(
        "# Segmentation on phantoms: demo-pretrained encoder vs random init\n\n"
        f"16 training / 8 validation (unused) / 32 test phantoms, {args.steps} steps, seeds {args.seeds}; "
        "`python benchmarks/segmentation_phantoms.py` (settings in the JSON beside this file).\n\n" + table + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
