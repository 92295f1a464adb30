"""The whole pretrainer under a real 2-process gloo run equals one process on the full batch.

Each rank tokenises its own half of the reports (so sentence and word counts, and the padded
lengths, differ between ranks) and gathers negatives for the report, sentence and word levels;
the mean of the rank losses and the rank-averaged parameter gradients (what DDP applies) must
equal the single-process loss and gradients on the concatenated batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.gloo import free_port, run_workers
from tests.pretraining.helpers import make_batch, make_pretrainer

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
WORLD, PER_RANK = 2, 3
ITC = ["itc_report", "itc_sentence", "itc_word"]


def _setup(tokenizer_dir: str, reports: list[str]):
    from velvet.data.tokenization import TriBertTokenizer

    tokenizer = TriBertTokenizer.from_pretrained(tokenizer_dir, max_length=128)
    return tokenizer, make_pretrainer(tokenizer, objectives=ITC, dropout=0.0)


def _loss(pre, batch):
    out = pre(batch)
    return {k: v for k, v in out.items() if k.endswith("_loss")}


def _worker(rank: int, port: int, tokenizer_dir: str, reports: list[str], out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        tokenizer, pre = _setup(tokenizer_dir, reports)
        full = make_batch(tokenizer, reports, WORLD * PER_RANK)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        mine = make_batch(tokenizer, reports[rows], PER_RANK)  # this rank's own padding
        mine["image"] = full["image"][rows]
        losses = _loss(pre, mine)
        sum(losses.values()).backward()
        grads = {}
        for name, p in pre.named_parameters():
            g = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g)  # DDP averages parameter gradients over ranks
            grads[name] = g / WORLD
        torch.save({"losses": {k: v.detach() for k, v in losses.items()}, "grads": grads}, Path(out_dir) / f"r{rank}.pt")
    finally:
        dist.destroy_process_group()



def test_gathered_pretrainer_matches_single_process(tokenizer, reports, tmp_path):
    tok_dir = tmp_path / "tok"
    tokenizer.save_pretrained(tok_dir)
    # reports of different lengths on the two ranks: the gathers must pad and mask
    chosen = [reports[i] for i in (0, 1, 2, 3, 4, 5)]
    run_workers(_worker, (free_port(), str(tok_dir), chosen, str(tmp_path)), nprocs=WORLD, timeout=240, start_method="spawn")
    ranks = [torch.load(tmp_path / f"r{r}.pt") for r in range(WORLD)]

    _, pre = _setup(str(tok_dir), chosen)
    from velvet.data.tokenization import TriBertTokenizer

    full = make_batch(TriBertTokenizer.from_pretrained(tok_dir, max_length=128), chosen, WORLD * PER_RANK)
    losses = _loss(pre, full)
    sum(losses.values()).backward()
    for name, ref in losses.items():
        mean = sum(r["losses"][name] for r in ranks) / WORLD
        assert torch.allclose(mean, ref.detach(), atol=1e-5), (name, float(mean), float(ref))
    for name, p in pre.named_parameters():
        ref = p.grad if p.grad is not None else torch.zeros_like(p)
        got = ranks[0]["grads"][name]
        assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4), name
