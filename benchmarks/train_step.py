"""Pretraining step throughput: forward + backward + AdamW, per model size and objective set.

Each configuration runs in its own process (so its peak memory is its own): a few warm-up steps,
then the median of the timed steps. Reports are real CT-RATE reports when the shared data is
found (``$VELVET_TEST_DATA`` or ``../shared/data``), else phantom reports; volumes are random in
[0, 1] at each preset's input size.

Presets:

- ``tiny``: velvet-tiny (Swin C=12, 32^3; TriBERT 32-wide, 2+1 layers), batch 4;
- ``reference``: the configuration of ``reference_figures.md`` (Swin C=24 depths 2x4 at 64^3,
  batch 4; TriBERT 4 layers, 256 wide, 2 fusion layers, 256 tokens, a ~4k vocabulary trained on the
  800 reports), to compare with the reference code's 62.7 s (full) / 19.7 s (report ITC) per step;
- ``small``: velvet-btsv (Swin Sv at 96^3 + 12 text + 6 fusion BERT-base layers);
- ``base``: velvet-btbv (Swin Bv at 96^3 + the same text encoder).

Usage::

    python benchmarks/train_step.py                         # all presets, CPU (or the GPU if present)
    python benchmarks/train_step.py --presets tiny reference --steps 5
    # side by side with another commit (a git worktree of it), runs interleaved, with the ratio:
    python benchmarks/train_step.py --presets reference --steps 5 --warmup 2 --grad-checkpointing on --against 8e76e96

Steps on a shared 2-core machine vary by 10-20 % from one minute to the next, and by more between
sessions: only figures of one run (``--against``) compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ALL = ("itc_report", "itc_sentence", "itc_word", "vis_ssl", "txt_mlm", "itm", "mm_mlm")
PRESETS: dict[str, dict] = {
    "tiny": {
        "model": "velvet-tiny",
        "batch": 4,
        "size": 32,
        "max_length": 256,
        "vocab": 4000,
        "ssl_embed_dim": 32,
    },
    "reference": {
        "model": {
            "preset": "velvet-tiny",
            "embed_dim": 256,
            "vision": {
                "preset": "swin-tiny",
                "img_size": [64, 64, 64],
                "embed_dim": 24,
                "window_size": 7,
                "depths": [2, 2, 2, 2],
                "num_heads": [3, 6, 12, 24],
            },
            "text": {
                "preset": "text-tiny",
                "hidden_size": 256,
                "num_text_layers": 4,
                "num_fusion_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 1024,
                "vision_width": 256,
                "max_position_embeddings": 512,
            },
        },
        "batch": 4,
        "size": 64,
        "max_length": 256,
        "vocab": 4300,
        "ssl_embed_dim": 256,
    },
    # the paper-size presets run with gradient checkpointing, as their recipes do (without it the
    # full objective at 96^3 outgrows a 24 GB machine)
    "small": {
        "model": "velvet-btsv",
        "batch": 2,
        "size": 96,
        "max_length": 512,
        "vocab": 30000,
        "grad_ckpt": True,
    },
    "base": {
        "model": "velvet-btbv",
        "batch": 2,
        "size": 96,
        "max_length": 512,
        "vocab": 30000,
        "grad_ckpt": True,
    },
}


def _reports() -> list[str]:
    import csv

    root = Path(os.environ.get("VELVET_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = root / "reports" / "ctrate" / "reports_800.csv"
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            return [row["report_text"] for row in csv.DictReader(fh)]
    from velvet.data.phantoms import PhantomConfig, sample_case

    config = PhantomConfig(n_cases=800, n_val=0, n_test=0)
    return [sample_case(config, i).report for i in range(800)]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# Allocators that fragment less than glibc's malloc on this workload (Debian/Ubuntu: apt install
# libtcmalloc-minimal4 / libjemalloc2); the names torch.backends.xeon.run_cpu also preloads.
_ALLOCATORS = {
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
    "jemalloc": ("libjemalloc.so.2",),
}


def _preload_library(name: str) -> str:
    """The path of allocator ``name`` (``tcmalloc``, ``jemalloc``) or ``name`` itself when it is a file."""
    if Path(name).is_file():
        return str(Path(name).resolve())
    if name not in _ALLOCATORS:
        raise SystemExit(f"--preload: {name!r} is neither a file nor one of {sorted(_ALLOCATORS)}")
    dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ]
    dirs += [str(Path(sys.prefix) / "lib")]
    for lib in _ALLOCATORS[name]:
        for d in dirs:
            if (Path(d) / lib).is_file():
                return str(Path(d) / lib)
    raise SystemExit(
        f"--preload {name}: none of {_ALLOCATORS[name]} found in {dirs} (install it, or give a path)"
    )


# Dense bf16 peak (no sparsity) of the accelerators the product runs on, for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def _peak_tflops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return peak
    return None


def _count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one real training step (forward, backward, checkpoint recompute) by torch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:  # the fused CPU kernel has no formula in torch's registry

        def _cpu_flash_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(query_shape, key_shape, value_shape)

        with contextlib.suppress(RuntimeError):  # registered already
            register_flop_formula(cpu_flash)(_cpu_flash_flop)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _run_one(preset: str, objectives: str, args: argparse.Namespace) -> dict:
    import torch

    from velvet.data.tokenization import TriBertTokenizer
    from velvet.data.tokenizer_training import train_wordpiece
    from velvet.models.config import VelvetConfig, get_model_config
    from velvet.models.velvet import VelvetModel
    from velvet.pretraining.objectives import VelvetPretrainer
    from velvet.pretraining.registry import levels_for
    from velvet.tasks.pretrain import _tokenizer_meta

    spec = PRESETS[preset]
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    reports = _reports()
    tok_dir = train_wordpiece(reports, Path(tempfile.mkdtemp()) / "tok", vocab_size=spec["vocab"])
    tokenizer = TriBertTokenizer.from_pretrained(tok_dir, max_length=spec["max_length"])
    model_spec = spec["model"]
    config = (
        get_model_config(model_spec) if isinstance(model_spec, str) else VelvetConfig.from_dict(model_spec)
    )
    chosen = ("itc_report",) if objectives == "report_itc" else ALL
    config = config.replace(levels=levels_for(chosen)).for_data(tokenizer=tokenizer)
    torch.manual_seed(0)
    model = VelvetModel(config)
    grad_ckpt = {"auto": spec.get("grad_ckpt", False), "on": True, "off": False}[args.grad_checkpointing]
    if grad_ckpt:
        model.set_grad_checkpointing(True)
    ssl_embed_dim = spec.get("ssl_embed_dim", 512)
    pre = VelvetPretrainer(
        model, objectives=chosen, tokenizer_info=_tokenizer_meta(tokenizer), ssl_embed_dim=ssl_embed_dim
    ).to(device)
    opt = torch.optim.AdamW(pre.parameters(), lr=1e-4)
    batch_size = args.batch_size or spec["batch"]
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in tokenizer(reports[:batch_size]).items()}
    size = spec["size"]
    batch["image"] = torch.rand(batch_size, 1, size, size, size, device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[args.dtype]
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def train_step(step: int) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            # the step's random draws are made on the device, as in training
            out = pre(batch, torch.Generator(device=device).manual_seed(step))
            loss = sum(v for k, v in out.items() if k.endswith("_loss"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    median = (
        times[len(times) // 2]
        if len(times) % 2
        else (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2
    )
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _peak_rss_mb()
    # counted after the timed steps (the counter slows a step down), on one more real step
    flops = _count_flops(lambda: train_step(args.warmup + args.steps)) if args.flops else None
    peak_tflops = args.peak_tflops or (
        _peak_tflops(torch.cuda.get_device_name()) if device.type == "cuda" else None
    )
    return {
        "preset": preset,
        "objectives": objectives,
        "batch": batch_size,
        "input": f"{size}^3",
        "tokens": int(batch["input_ids"].shape[1]),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "grad_ckpt": grad_ckpt,
        "median_s": median,
        "min_s": times[0],
        "max_s": times[-1],
        "steps": len(times),
        "samples_per_s": batch_size / median,
        "peak_mb": peak,
        "tflop_per_step": flops / 1e12 if flops is not None else None,
        "tflops": flops / 1e12 / median if flops is not None else None,
        # FLOP utilisation: counted FLOPs per second over the peak; with checkpointing the recompute is
        # counted too, so it prints as HFU (hardware), not MFU (model FLOPs only)
        "mfu": flops / 1e12 / median / peak_tflops if flops is not None and peak_tflops else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument(
        "--objectives", nargs="+", default=["full", "report_itc"], choices=["full", "report_itc"]
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="override every preset's batch size")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--dtype", default=None, choices=["fp32", "bf16"], help="default: bf16 on GPU, fp32 on CPU"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--grad-checkpointing",
        default="auto",
        choices=["auto", "on", "off"],
        help="auto: on for the paper-size presets (small, base), as in their recipes",
    )
    parser.add_argument(
        "--flops",
        action="store_true",
        help="count one step's FLOPs (torch.utils.flop_counter): TFLOP/s and MFU",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="dense bf16 peak for MFU (default: from the GPU's name)",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="also run this git revision's velvet (a temporary worktree), interleaved, and print the ratio",
    )
    parser.add_argument(
        "--glibc-tunables",
        default=None,
        metavar="TUNABLES",
        help="GLIBC_TUNABLES for the measured processes, e.g. "
        "'glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=8388608' (less peak RSS, see README)",
    )
    parser.add_argument(
        "--preload",
        default=None,
        metavar="LIB",
        help="LD_PRELOAD for the measured processes: 'tcmalloc', 'jemalloc' or a library path (a malloc "
        "that fragments less than glibc's: less peak RSS, see README)",
    )
    parser.add_argument(
        "--preload-this-only",
        action="store_true",
        help="with --against: preload only in this tree's processes (the other commit runs as it would by default)",
    )
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "OBJECTIVES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3: a median and a spread need them")

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.one:
        print(json.dumps(_run_one(*args.one, args)))
        return

    import monai
    import transformers

    device = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else (platform.processor() or platform.machine())
    )
    print(
        f"velvet train-step benchmark | {args.device}: {device} | {args.dtype} | {args.threads} CPU threads"
    )
    print(f"torch {torch.__version__}, monai {monai.__version__}, transformers {transformers.__version__}")
    print(
        f"median (and min-max spread) of {args.steps} steps after {args.warmup} warm-up; peak = "
        + ("max GPU memory allocated" if args.device == "cuda" else "peak RSS of the process")
    )
    if args.glibc_tunables:
        print(f"GLIBC_TUNABLES={args.glibc_tunables}")
    env = dict(os.environ, **({"GLIBC_TUNABLES": args.glibc_tunables} if args.glibc_tunables else {}))
    preload = _preload_library(args.preload) if args.preload else None
    if preload:
        print(f"LD_PRELOAD={preload}" + (" (this tree only)" if args.preload_this_only else ""))
    # every tree reads the same reports: resolved here, not beside a temporary worktree
    env.setdefault("VELVET_TEST_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    trees = {"this": Path(__file__).resolve().parents[1]}
    tmp = None
    if args.against:
        tmp = Path(tempfile.mkdtemp(prefix="velvet-against-"))
        subprocess.run(
            ["git", "-C", str(trees["this"]), "worktree", "add", "--detach", "-q", str(tmp), args.against],
            check=True,
        )
        trees[args.against] = tmp
        print(f"side by side: this tree and {args.against} (worktree {tmp}), runs interleaved")
    label = "tree" if args.against else ""
    print(
        f"\n{label:10s} {'preset':10s} {'objectives':11s} {'batch':>5s} {'input':>6s} {'tokens':>6s} {'params M':>9s} "
        f"{'ckpt':>4s} {'s/step':>8s} {'min-max':>13s} {'samples/s':>10s} {'peak MB':>8s}"
    )
    try:
        for preset in args.presets:
            for objectives in args.objectives:
                rows = {}
                for name, root in trees.items():
                    cmd = [
                        sys.executable,
                        str(root / "benchmarks" / "train_step.py"),
                        "--one",
                        preset,
                        objectives,
                        "--steps",
                        str(args.steps),
                        "--warmup",
                        str(args.warmup),
                        "--device",
                        args.device,
                        "--dtype",
                        args.dtype,
                        "--threads",
                        str(args.threads),
                        "--grad-checkpointing",
                        args.grad_checkpointing,
                    ]
                    if args.batch_size:
                        cmd += ["--batch-size", str(args.batch_size)]
                    if args.flops and name == "this":  # an older tree may not know the flag
                        cmd += ["--flops"] + (
                            ["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []
                        )
                    # the child imports the velvet of its own tree, not the installed one
                    child_env = dict(env, PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]))
                    if preload and (name == "this" or not args.preload_this_only):
                        child_env["LD_PRELOAD"] = preload
                    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env, cwd=root)
                    if out.returncode != 0:
                        lines = out.stderr.strip().splitlines()
                        why = lines[-1] if lines else f"exit status {out.returncode} (killed: out of memory?)"
                        print(f"{name[:10]:10s} {preset:10s} {objectives:11s} failed: {why}", flush=True)
                        continue
                    r = rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
                    print(
                        f"{name[:10] if args.against else '':10s} {r['preset']:10s} {r['objectives']:11s} {r['batch']:5d} "
                        f"{r['input']:>6s} {r['tokens']:6d} {r['params_m']:9.2f} {'on' if r['grad_ckpt'] else 'off':>4s} "
                        f"{r['median_s']:8.2f} {r['min_s']:6.2f}-{r['max_s']:<6.2f} {r['samples_per_s']:10.3f} "
                        f"{r['peak_mb']:8.0f}"
                        + (f" {r['tflops']:7.2f} TFLOP/s" if r.get("tflops") is not None else "")
                        + (
                            f" {'HFU' if r['grad_ckpt'] else 'MFU'} {100 * r['mfu']:.1f} %"
                            if r.get("mfu") is not None
                            else ""
                        ),
                        flush=True,
                    )
                if len(rows) == 2:
                    new, old = rows["this"], rows[args.against]
                    print(
                        f"{'ratio':10s} {preset:10s} {objectives:11s} this tree: {old['median_s'] / new['median_s']:.2f}x "
                        f"the speed, {new['peak_mb'] / old['peak_mb']:.2f}x the peak memory of {args.against}",
                        flush=True,
                    )
    finally:
        if tmp is not None:
            subprocess.run(
                ["git", "-C", str(trees["this"]), "worktree", "remove", "--force", str(tmp)], check=False
            )
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
