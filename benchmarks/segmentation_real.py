"""Segmentation on real CT: train on one abdomen scan, segment a scan from another scanner.

Trains SwinUNETR on ``../shared/data/ct/abdomen_ct`` (3 mm, RAS) against its TotalSegmentator
reference labels for liver, spleen, kidneys and aorta, then runs ``velvet segment``'s code path on
the DICOM series ``../shared/data/ct/dicom_series/series`` (another scanner, 0.98 x 0.98 x 2 mm,
LPS voxel order, contrast-enhanced, a 40 mm slab) and scores it against that series' own label map
**on the series' original grid** (Dice, NSD at 2 mm, HD95 in mm). The label map and an overlay PNG
are written so the geometry can be checked by eye. One training scan is a tiny data set: the point
is the full real-data path (reading, geometry, resampling, metrics in mm) within a CPU budget.

Usage::

    python benchmarks/segmentation_real.py --minutes 25 --max-steps 1200 [--init-from runs/demo/export]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

CLASSES = ["liver", "spleen", "kidney_right", "kidney_left", "aorta"]
# CPU-sized: a 12-wide Swin, 4 mm voxels, 32^3 patches (128 mm) with batch norm (a 32^3 patch
# leaves a 1-voxel bottleneck that instance norm cannot normalise)
VISION = {"preset": "swin-tiny", "window_size": 4}
PREPROCESS = {"preset": "segmentation", "spacing": [4.0, 4.0, 4.0], "pad_to": [32, 32, 32]}
ROI = (32, 32, 32)


def _data(root: Path, work: Path) -> Path:
    """A one-scan manifest (train; the same scan as val for the loaders) and the TotalSegmentator class map."""
    work.mkdir(parents=True, exist_ok=True)
    names = json.loads((root / "ct" / "class_map_total_v2.json").read_text(encoding="utf-8"))["labels"]
    classes = {"0": "background", **{str(k): v for k, v in names.items()}}
    (work / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
    scan = root / "ct" / "abdomen_ct"
    rows = ["id,volume,split,label_map"]
    rows += [f"abdomen_{split},{scan / 'ct.nii.gz'},{split},{scan / 'seg.nii.gz'}" for split in ("train", "val")]
    (work / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return work / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("VELVET_TEST_DATA", "../shared/data")))
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=1200)
    parser.add_argument("--init-from", default=None, help="encoder to start from (default: random)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_seg_real"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/segmentation_real"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import lightning.pytorch as pl
    import nibabel as nib
    import numpy as np

    from velvet.data.classes import ClassMap, read_class_names
    from velvet.data.datamodule_segmentation import SegmentationDataModule
    from velvet.data.geometry import align_to_image
    from velvet.metrics.segmentation import SegmentationMetrics
    from velvet.segmentation.inference import segment_file
    from velvet.segmentation.output import write_segmentation
    from velvet.segmentation.overlay import save_overlay
    from velvet.tasks.segmentation import SegmentationTask

    if not (args.data / "ct" / "abdomen_ct").is_dir():
        raise SystemExit(f"no real CT data under {args.data} (set --data or VELVET_TEST_DATA)")
    args.data = args.data.resolve()  # the manifest holds absolute paths (relative ones are read from its folder)
    manifest = _data(args.data, args.workdir)
    pl.seed_everything(0, workers=True, verbose=False)
    dm = SegmentationDataModule(
        str(manifest), select_classes=CLASSES, preprocess=PREPROCESS, roi_size=ROI, samples_per_volume=8,
        pos_neg=(3.0, 1.0), batch_size=1, num_workers=0, cache_dir=str(args.workdir / "cache"),
        augment=[
            {"class_path": "RandShiftIntensityd", "init_args": {"keys": ["image"], "offsets": 0.1, "prob": 0.5}},
            {"class_path": "RandScaleIntensityd", "init_args": {"keys": ["image"], "factors": 0.1, "prob": 0.5}},
        ],
    )
    task = SegmentationTask(
        init_from=args.init_from, vision=None if args.init_from else VISION, norm_name="batch", lr=args.lr, warmup_steps=50,
        min_lr=1e-5, weight_decay=1e-5, sw_overlap=0.5,
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=args.max_steps, max_time={"minutes": args.minutes}, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=dm)
    fit_s = time.perf_counter() - start
    model = task.segmenter.eval()

    def score(scan: Path, label_file: Path, name: str) -> dict:
        t0 = time.perf_counter()
        result = segment_file(model, scan)
        seconds = time.perf_counter() - t0
        out, _ = write_segmentation(result, args.workdir / f"{name}_seg.nii.gz", metadata={"benchmark": __file__})
        ref_img = nib.load(label_file)
        reference = align_to_image(
            np.asarray(ref_img.dataobj).astype(np.int16), ref_img.affine, label_file, result.affine, result.labels.shape, scan
        )
        source = ClassMap.create(read_class_names(args.workdir / "classes.json"), CLASSES)
        reference = source.apply(reference)
        import torch

        metrics = SegmentationMetrics(["background", *CLASSES], nsd_tolerance_mm=2.0)
        spacing = np.linalg.norm(result.affine[:3, :3], axis=0)
        metrics.update(torch.as_tensor(result.labels.astype(np.int64)), torch.as_tensor(reference.astype(np.int64)), spacing.tolist(), name)
        picture = args.out.parent / f"segmentation_real_{name}.png"
        picture.parent.mkdir(parents=True, exist_ok=True)
        save_overlay(picture, result.image, result.labels, result.affine, result.class_names)
        save_overlay(picture.with_name(picture.stem + "_reference.png"), result.image, reference, result.affine, result.class_names)
        return {
            "scan": str(scan), "grid": list(result.labels.shape), "spacing_mm": spacing.round(4).tolist(),
            "orientation": "".join(nib.aff2axcodes(result.affine)), "segment_seconds": round(seconds, 1),
            "label_map": str(out), "affine_equals_input": bool(np.allclose(nib.load(out).affine, result.affine, atol=1e-4)),
            "summary": metrics.summary(), "per_class": metrics.per_class(),
        }

    results = {
        "settings": {"classes": CLASSES, "vision": VISION if not args.init_from else args.init_from, "preprocess": PREPROCESS,
                     "steps": int(trainer.global_step), "fit_seconds": round(fit_s, 1), "lr": args.lr, "roi": list(ROI),
                     "sw_overlap": 0.5, "nsd_tolerance_mm": 2.0, "evaluated_on": "each scan's original grid"},
        "train_scan": score(args.data / "ct" / "abdomen_ct" / "ct.nii.gz", args.data / "ct" / "abdomen_ct" / "seg.nii.gz", "abdomen_ct"),
        "other_scanner": score(args.data / "ct" / "dicom_series" / "series", args.data / "ct" / "dicom_series" / "seg.nii.gz", "dicom_series"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"trained {trainer.global_step} steps in {fit_s / 60:.1f} min")
    for key in ("train_scan", "other_scanner"):
        r = results[key]
        print(f"\n{key}: {r['scan']}  grid {r['grid']} spacing {r['spacing_mm']} {r['orientation']}  ({r['segment_seconds']} s)")
        print("| class | Dice | NSD (2 mm) | HD95 (mm) |\n|---|---|---|---|")
        for row in r["per_class"]:
            cells = ["n/a" if v != v else f"{v:.3f}" if k != "hd95" else f"{v:.1f}" for k, v in ((k, row[k]) for k in ("dice", "nsd", "hd95"))]
            print(f"| {row['class']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
