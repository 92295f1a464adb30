"""Forward + backward time of the TriBERT presets on synthetic reports.

Each step runs the text layers with the tri-level mask, pools words/sentences/report, and (for the
``-mm`` presets) the fusion layers cross-attending to 27 visual tokens (the 3x3x3 top map), then
backpropagates a random linear functional of all of them.

Usage:
    python benchmarks/text_encoder.py --presets st,bt,st-mm,bt-mm --batch-size 2 --seq-len 512
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
from contextlib import nullcontext

import torch

from velvet.models.text import TriBert, text_encoder_config

VOCAB = 30572  # CXR-BERT's 30,522 pieces + 50 [SEN_k] tokens
SEN_ID = 30522  # first [SEN_k] id in that layout
VISUAL_TOKENS = 27


def synthetic_batch(batch_size: int, length: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Reports filling ``length`` tokens: sentences of 4-20 words of 1-3 pieces, the last one padded."""
    gen = torch.Generator().manual_seed(seed)

    def rand(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    keys = (
        "input_ids",
        "token_type_ids",
        "sentence_ids",
        "sentence_token_mask",
        "word_ids",
        "attention_mask",
    )
    out: dict[str, list] = {k: [] for k in keys}
    for b in range(batch_size):
        # Half the rows are full (no padding), half stop at about 70%.
        budget = length if b % 2 == 0 else int(length * 0.7)
        row = {k: [v] for k, v in zip(keys, (2, 1, 0, False, -1, True), strict=True)}
        sentence, word = 0, 0
        while len(row["input_ids"]) < budget and sentence < 50:
            sentence += 1
            pieces = [(SEN_ID + sentence - 1, True, -1)]
            for _ in range(rand(4, 20)):
                pieces += [(rand(1000, 30000), False, word)] * rand(1, 3)
                word += 1
            for tok, is_sen, wid in pieces[: budget - len(row["input_ids"])]:
                for k, v in zip(keys, (tok, sentence, sentence, is_sen, wid, True), strict=True):
                    row[k].append(v)
        pad = length - len(row["input_ids"])
        for k, v in zip(keys, (0, 0, -1, False, -1, False), strict=True):
            out[k].append(row[k] + [v] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


def bench(name: str, args: argparse.Namespace, device: torch.device) -> None:
    cfg = text_encoder_config(name, vocab_size=VOCAB, max_position_embeddings=max(512, args.seq_len))
    model = TriBert(cfg).to(device).train()
    model.set_grad_checkpointing(args.grad_checkpointing)
    params = sum(p.numel() for p in model.parameters())
    batch = {k: v.to(device) for k, v in synthetic_batch(args.batch_size, args.seq_len).items()}
    visual = torch.randn(args.batch_size, VISUAL_TOKENS, cfg.vision_width, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast:
            out = model.forward_text(*(batch[k] for k in TriBert.TEXT_KEYS), output_all=True)
            pooled = model.pool(out["itc"], batch["word_ids"], batch["sentence_ids"],
                                batch["sentence_token_mask"], batch["attention_mask"])  # fmt: skip
            loss = pooled["report"].float().square().mean() + pooled["sentences"].float().square().mean()
            loss = loss + pooled["words"].float().square().mean()
            if cfg.num_fusion_layers:
                fused = model.forward_fusion(
                    out["last_hidden_state"], *(batch[k] for k in TriBert.TEXT_KEYS[2:]), visual
                )
                loss = loss + fused[:, 0].float().square().mean()
        loss.backward()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / args.steps
    tokens = int(batch["attention_mask"].sum())
    if device.type == "cuda":
        memory = f"peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB (CUDA)"
    else:
        memory = f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    print(
        f"{name:10s} layers {cfg.num_text_layers}+{cfg.num_fusion_layers}  params {params / 1e6:7.2f} M  "
        f"{per_step * 1e3:9.1f} ms/step  {tokens / per_step:9.0f} real tokens/s  {memory}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="st,bt,st-mm,bt-mm")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast")
    parser.add_argument("--grad-checkpointing", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    import transformers

    print(
        f"torch {torch.__version__}  transformers {transformers.__version__}  python {platform.python_version()}"
    )
    gpu = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    print(f"device {device} ({gpu}), threads {torch.get_num_threads()}, dtype {args.dtype}, "
          f"batch {args.batch_size} x {args.seq_len} tokens, vocab {VOCAB}, "
          f"grad checkpointing {args.grad_checkpointing}, {args.steps} timed steps after {args.warmup} warm-up")  # fmt: skip
    for name in args.presets.split(","):
        bench(name.strip(), args, device)


if __name__ == "__main__":
    main()
