"""Sliding-window segmentation of a 512 x 512 x 200 CT: wall time and peak memory per setting.

The scan is the real DICOM series of ``../shared/data/ct/dicom_series`` (512 x 512 x 20, 0.98 mm
in-plane, 2 mm slices) repeated along z to 200 slices and written as NIfTI, so the whole
``velvet segment`` path runs: reading, the ``segmentation`` contract (HU window, foreground crop,
1.5 x 1.5 x 2 mm), SwinUNETR sliding windows of 96^3, argmax, labels back on the 512 x 512 x 200
grid. The model is a randomly initialised SwinUNETR of the chosen size with 14 classes (weights do
not change the cost). Each setting runs in a fresh process, so its peak RSS is its own.

Usage::

    python benchmarks/segmentation_inference.py                      # swin-tv, overlap 0.25 and 0.5
    python benchmarks/segmentation_inference.py --encoder swin-sv --overlaps 0.5 --device cuda --bf16
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path


def _scan(data: Path, out: Path, slices: int) -> Path:
    import nibabel as nib
    import numpy as np

    from velvet.data.io import read_volume

    if out.is_file():
        return out
    volume = read_volume(data / "ct" / "dicom_series" / "series")
    reps = -(-slices // volume.shape[2])
    array = np.concatenate([volume.array] * reps, axis=2)[:, :, :slices].astype(np.int16)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, volume.affine), out)
    return out


def _measure(job: dict) -> dict:
    import torch

    from velvet.data.contract import PreprocessContract
    from velvet.models.segmentation import SegmentationConfig, SegmentationModel
    from velvet.segmentation.inference import segment_file

    torch.manual_seed(0)
    config = SegmentationConfig(
        tuple(["background", *[f"class_{i}" for i in range(1, 14)]]), vision={"preset": job["encoder"]},
        roi_size=(96, 96, 96), sw_overlap=job["overlap"], sw_batch_size=job["sw_batch_size"],
    )
    model = SegmentationModel(config).eval().to(job["device"])
    model.preprocess = PreprocessContract.resolve("segmentation")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if job["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = segment_file(model, job["scan"], device=job["device"], autocast=job["bf16"])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() / 2**30 if job["device"].startswith("cuda") else None
    windows = 1
    for size, roi in zip(result.model_grid["shape"], config.roi_size, strict=True):
        step = max(1, int(roi * (1 - job["overlap"])))
        windows *= max(1, -(-(max(size, roi) - roi) // step) + 1)
    return {**job, "seconds": seconds, "peak_rss_gib": peak / 2**20, "rss_before_gib": before / 2**20, "gpu_peak_gib": gpu,
            "model_grid": result.model_grid["shape"], "windows": windows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("VELVET_TEST_DATA", "../shared/data")))
    parser.add_argument("--encoder", default="swin-tv", help="vision preset of the SwinUNETR encoder")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_seg_inference"))
    args = parser.parse_args()
    scan = _scan(args.data, args.workdir / f"ct_512x512x{args.slices}.nii.gz", args.slices)
    import torch

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"# scan {scan} (512 x 512 x {args.slices}, 0.98 x 0.98 x 2 mm); contract 'segmentation'; ROI 96^3; encoder {args.encoder}")
    print("| overlap | sw batch | model grid | windows | seconds | peak RSS (GiB) | GPU peak (GiB) |")
    print("|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")
    for overlap in args.overlaps:
        job = {"scan": str(scan), "encoder": args.encoder, "overlap": overlap, "sw_batch_size": args.sw_batch_size,
               "device": args.device, "bf16": args.bf16}
        with ctx.Pool(1) as pool:
            r = pool.apply(_measure, (job,))
        gpu = f"{r['gpu_peak_gib']:.2f}" if r["gpu_peak_gib"] is not None else "-"
        print(f"| {overlap} | {r['sw_batch_size']} | {'x'.join(map(str, r['model_grid']))} | {r['windows']} | {r['seconds']:.1f} | "
              f"{r['peak_rss_gib']:.2f} | {gpu} |", flush=True)


if __name__ == "__main__":
    main()
