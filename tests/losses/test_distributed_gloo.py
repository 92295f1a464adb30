"""A real 2-process gloo run: gathered losses and gradients equal the single-process ones.

Convention checked (see velvet.losses.distributed): the mean of the per-rank losses equals the
single-process loss on the concatenated batch; the gradient reaching a rank's inputs is
``world_size`` times the matching slice of the single-process gradient (the gather's backward sums
over ranks), and averaging parameter gradients over ranks, as DDP does, gives exactly the
single-process parameter gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.gloo import free_port, run_workers
from velvet.losses.contrastive import ClipLoss
from velvet.losses.local_alignment import LocalAlignmentLoss
from velvet.losses.ntxent import NTXentLoss

pytestmark = pytest.mark.distributed

WORLD, B, R, RAW, E = 2, 3, 4, 5, 6
WORDS = (3, 5)  # words per text on rank 0 / rank 1: the gathered tokens need padding
LEAVES = ("img", "txt", "regions", "tokens", "z1", "z2")


def full_inputs() -> dict[str, torch.Tensor]:
    """The concatenated batch (tokens padded to max(WORDS)) and the shared projection ``w``."""
    g = torch.Generator().manual_seed(0)
    n, t = WORLD * B, max(WORDS)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    token_mask = torch.ones(n, t, dtype=torch.bool)
    token_mask[:B, WORDS[0] :] = False  # rank 0 has fewer words
    token_mask[1, 2] = False  # and a padded word inside its own length
    token_mask[B + 2, 4] = False
    region_mask = torch.ones(n, R, dtype=torch.bool)
    region_mask[0, 1] = region_mask[B + 1, 3] = False  # exercises the gather of bool masks
    return {
        "w": rand(RAW, E), "scale": torch.tensor(4.0, dtype=torch.float64),
        "img": rand(n, RAW), "txt": rand(n, RAW), "regions": rand(n, R, RAW), "tokens": rand(n, t, RAW),
        "token_mask": token_mask, "region_mask": region_mask, "z1": rand(n, RAW), "z2": rand(n, RAW),
    }  # fmt: skip


def rank_inputs(data: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """This rank's slice (its own word count), as fresh leaves; ``w``/``scale`` replicated."""
    rows = slice(rank * B, (rank + 1) * B)
    out = {k: data[k][rows].clone() for k in LEAVES if k != "tokens"}
    out["tokens"] = data["tokens"][rows, : WORDS[rank]].clone()
    out["token_mask"] = data["token_mask"][rows, : WORDS[rank]].clone()
    out["region_mask"] = data["region_mask"][rows].clone()
    out.update(w=data["w"].clone(), scale=data["scale"].clone())
    return out


def compute_losses(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """All gathered losses on inputs projected by the shared ``w`` (which plays the model)."""
    w = x["w"]
    return {
        **ClipLoss()(x["img"] @ w, x["txt"] @ w, x["scale"]),
        **LocalAlignmentLoss(name="itc_word")(
            x["regions"] @ w, x["tokens"] @ w, x["token_mask"], x["region_mask"]
        ),
        **NTXentLoss(0.5)(x["z1"] @ w, x["z2"] @ w),
    }


def backward(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for k in (*LEAVES, "w", "scale"):
        x[k].requires_grad_(True)
    losses = compute_losses(x)
    sum(losses.values()).backward()
    return losses


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        x = rank_inputs(full_inputs(), rank)
        losses = backward(x)
        param_grads = {}
        for k in ("w", "scale"):  # what DDP does with parameter gradients: average over ranks
            grad = x[k].grad.clone()
            dist.all_reduce(grad)
            param_grads[k] = grad / WORLD
        result = {
            "losses": {k: v.detach() for k, v in losses.items()},
            "grads": {k: x[k].grad for k in LEAVES},
            "param_grads": param_grads,
        }
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()



def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    run_workers(_worker, (free_port(), str(tmp_path)), nprocs=WORLD, timeout=120, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    full = full_inputs()
    assert not dist.is_initialized()  # the reference runs as a single process
    ref_losses = backward(full)
    for name, ref in ref_losses.items():
        mean = sum(r["losses"][name] for r in ranks) / WORLD
        assert torch.allclose(mean, ref.detach(), atol=1e-10), name
        assert not torch.allclose(ranks[0]["losses"][name], ref.detach()), name  # ranks really differ
    for rank, result in enumerate(ranks):
        rows = slice(rank * B, (rank + 1) * B)
        for k in LEAVES:
            want = full[k].grad[rows]
            if k == "tokens":
                want = want[:, : WORDS[rank]]
            assert torch.allclose(result["grads"][k], WORLD * want, atol=1e-10), (rank, k)
        for k in ("w", "scale"):
            assert torch.allclose(result["param_grads"][k], full[k].grad, atol=1e-10), (rank, k)
