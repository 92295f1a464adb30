"""Forward + backward time and peak memory of the vision encoder presets.

Each configuration runs in its own process (so its peak RSS is its own), ``--warmup`` steps then the
median of ``--steps``. A step is ``encoder(x)`` and a backward of a random linear functional of all
maps and the pooled feature; the no-grad row times the forward alone. Times are wall clock and, on
CPU, process CPU time divided by the threads (what an idle machine gives when others share it).

``--compare-monai`` adds, per Swin preset, the same encoder with MONAI's own window attention
(``fused_attention=False``): the reference's speed on identical weights.

Usage::

    python benchmarks/vision_encoder.py                       # every preset, CPU-friendly sizes
    python benchmarks/vision_encoder.py --presets swin-tv --size 64 --batch-size 2 --compare-monai
    python benchmarks/vision_encoder.py --presets swin-sv --size 96 --checkpointing both
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import resource
import statistics
import time

import torch

# CPU-friendly default input sizes (H, W, D) per preset; --size overrides the Swin ones.
DEFAULT_SIZES = {
    "swin-tiny": (32, 32, 32),
    "swin-tv": (64, 64, 64),
    "swin-sv": (64, 64, 64),
    "swin-bv": (64, 64, 64),
    "vit3d-tiny": (64, 64, 16),
    "vit3d-b16": (128, 128, 32),  # the paper's 256x256x32 takes ~10 s per step on 2 cores
}


def _measure(job: dict) -> dict:
    """Runs in a child process: build, warm up, time; returns timings and peak memory."""
    from velvet.models.vision import create_vision_encoder, get_vision_config

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    device = torch.device(job["device"])
    cfg = get_vision_config(job["preset"])
    overrides = {"fused_attention": job["fused"], "use_checkpoint": job["checkpointing"]}
    if cfg.arch == "vit":
        overrides["img_size"] = job["size"]
    enc = create_vision_encoder(cfg, **overrides).to(device)
    x = torch.rand(job["batch_size"], cfg.in_chans, *job["size"], device=device)
    weights = None

    def step() -> None:
        nonlocal weights
        out = enc(x)
        tensors = [*out["maps"], out["pooled"]]
        if weights is None:
            gen = torch.Generator(device=device).manual_seed(1)
            weights = [torch.randn(t.shape, generator=gen, device=device) for t in tensors]
        sum((t * w).sum() for t, w in zip(tensors, weights, strict=True)).backward()
        enc.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad():
            enc(x)

    rows = {}
    for name, fn in (("fwd+bwd", step), ("fwd no-grad", forward)):
        for _ in range(job["warmup"]):
            fn()
        walls, cpus = [], []
        for _ in range(job["steps"]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - t0)
            cpus.append((time.process_time() - c0) / job["threads"])
        rows[name] = (statistics.median(walls), statistics.median(cpus))
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {"rows": rows, "peak_gib": peak, "params": sum(p.numel() for p in enc.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default=",".join(DEFAULT_SIZES), help="comma-separated preset names")
    parser.add_argument("--size", type=int, default=None, help="cubic input edge for the Swin presets")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compare-monai", action="store_true", help="also time MONAI's window attention")
    parser.add_argument("--checkpointing", choices=("off", "on", "both"), default="off")
    args = parser.parse_args()

    import monai

    print(f"python {platform.python_version()}  torch {torch.__version__}  monai {monai.__version__}")
    print(f"device {args.device}  threads {args.threads}  dtype float32  batch {args.batch_size}")
    print(f"median of {args.steps} steps after {args.warmup} warm-up; each configuration in its own process")
    header = f"{'preset':11} {'input':13} {'attention':9} {'ckpt':4} {'params':>8} "
    print(header + f"{'fwd+bwd s':>10} {'(cpu s)':>8} {'fwd s':>7} {'(cpu s)':>8} {'peak GiB':>9}")
    ctx = mp.get_context("spawn")
    ckpts = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    for preset in args.presets.split(","):
        size = DEFAULT_SIZES.get(preset, (96, 96, 96))
        if args.size and preset.startswith("swin"):
            size = (args.size,) * 3
        fused_opts = [True, False] if args.compare_monai and preset.startswith("swin") else [True]
        for ckpt in ckpts:
            for fused in fused_opts:
                job = {**vars(args), "preset": preset, "size": size, "fused": fused, "checkpointing": ckpt}
                with ctx.Pool(1) as pool:
                    res = pool.apply(_measure, (job,))
                (fb, fb_cpu), (fw, fw_cpu) = res["rows"]["fwd+bwd"], res["rows"]["fwd no-grad"]
                attn = "fused" if fused else "monai"
                print(
                    f"{preset:11} {'x'.join(map(str, size)):13} {attn:9} {'on' if ckpt else 'off':4} "
                    f"{res['params'] / 1e6:7.2f}M {fb:10.2f} {fb_cpu:8.2f} {fw:7.2f} {fw_cpu:8.2f} "
                    f"{res['peak_gib']:9.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
