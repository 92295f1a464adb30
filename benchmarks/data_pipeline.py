"""Data pipeline throughput: raw volume files through the transforms vs the preprocessed cache.

Writes realistic phantom CTs (default 512x512x200 int16 at 0.75x0.75x1.5 mm, gzip NIfTI), then
measures, each phase in its own process so its peak memory is its own:

- ``raw``: read + orient + window + resample + resize (``UncachedVolumes``), per sample;
- ``cache-create``: the same, plus writing the cache entry;
- ``cache-load``: reading the cached tensor (key lookup included);
- ``loader``: the full training DataLoader on the cache (batching + tokenisation, 2 workers).

Usage::

    python benchmarks/data_pipeline.py                      # 6 volumes, 512x512x200
    python benchmarks/data_pipeline.py --n 4 --shape 256 256 120 --spacing 1.5 1.5 2.5
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREPROCESS = "ct_rate"


def _peak_rss_mb() -> float:
    # VmHWM resets at exec; ru_maxrss would carry the launching process's peak over (Linux)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(args: argparse.Namespace) -> dict:
    import torch

    from velvet.data.cache import UncachedVolumes, VolumeCache
    from velvet.data.contract import PreprocessContract
    from velvet.data.manifest import read_manifest

    torch.set_num_threads(args.threads)
    records = read_manifest(args.manifest).records
    contract = PreprocessContract.resolve(PREPROCESS)
    if args.phase == "loader":
        return _loader_phase(args, contract)
    source = UncachedVolumes(contract) if args.phase == "raw" else VolumeCache(args.cache_dir, contract)
    times = []
    for _ in range(args.repeats if args.phase == "cache-load" else 1):
        for record in records:
            start = time.perf_counter()
            out = source.get_or_create(record)
            times.append(time.perf_counter() - start)
    times.sort()
    return {
        "phase": args.phase,
        "samples": len(times),
        "median_s": times[len(times) // 2],
        "samples_per_s": len(times) / sum(times),
        "peak_rss_mb": _peak_rss_mb(),
        "output": f"{tuple(out['image'].shape)} {out['image'].dtype}",
    }


def _loader_phase(args: argparse.Namespace, contract) -> dict:
    from velvet.data.datamodule import VelvetDataModule

    dm = VelvetDataModule(
        args.manifest,
        data_dir=args.work,
        preprocess=contract.to_dict(),
        cache_dir=args.cache_dir,
        batch_size=2,
        num_workers=2,
        vocab_size=500,
    )
    dm.prepare_data()
    dm.setup("fit")
    start, n = time.perf_counter(), 0
    for _ in range(args.repeats):
        for batch in dm._loader("train", train=False):
            n += batch["image"].shape[0]
    elapsed = time.perf_counter() - start
    return {"phase": "loader", "samples": n, "samples_per_s": n / elapsed, "peak_rss_mb": _peak_rss_mb()}


def _run_phase(phase: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--manifest",
        str(args.manifest),
        "--cache-dir",
        str(args.cache_dir),
        "--work",
        str(args.work),
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"phase {phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6, help="number of volumes")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.75, 0.75, 1.5))
    parser.add_argument("--work", type=Path, default=None, help="folder for the volumes and cache (default: temp)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the cached data")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args)))
        return

    import monai
    import nibabel
    import torch

    from velvet.data.phantoms import PhantomConfig, generate_phantoms

    work = args.work or Path(tempfile.mkdtemp(prefix="velvet-bench-"))
    args.work, args.cache_dir = work, work / "cache"
    shutil.rmtree(args.cache_dir, ignore_errors=True)  # "cache-create" must really create
    config = PhantomConfig(n_cases=args.n, shape=tuple(args.shape), spacing=tuple(args.spacing), n_val=0, n_test=0)
    start = time.perf_counter()
    args.manifest = generate_phantoms(work / "phantoms", config, progress=False)
    size_mb = sum(p.stat().st_size for p in (work / "phantoms" / "volumes").iterdir()) / args.n / 2**20
    print(f"velvet data pipeline benchmark | {platform.processor() or platform.machine()}, {args.threads} threads")
    print(f"torch {torch.__version__}, monai {monai.__version__}, nibabel {nibabel.__version__}")
    print(
        f"{args.n} phantom CTs {'x'.join(map(str, args.shape))} int16 at {args.spacing} mm, "
        f"{size_mb:.1f} MB .nii.gz each (written in {time.perf_counter() - start:.1f} s); "
        f"preprocessing '{PREPROCESS}' -> 96^3"
    )
    rows = [_run_phase(p, args) for p in ("raw", "cache-create", "cache-load", "loader")]
    print(f"\n{'phase':14s} {'samples':>8s} {'median s':>10s} {'samples/s':>10s} {'peak RSS MB':>12s}")
    for r in rows:
        median = f"{r['median_s']:.4f}" if "median_s" in r else "-"
        print(f"{r['phase']:14s} {r['samples']:8d} {median:>10s} {r['samples_per_s']:10.1f} {r['peak_rss_mb']:12.0f}")
    speedup = rows[2]["samples_per_s"] / rows[0]["samples_per_s"]
    print(f"\ncached load is {speedup:.0f}x faster than raw loading (output {rows[0]['output']})")


if __name__ == "__main__":
    main()
