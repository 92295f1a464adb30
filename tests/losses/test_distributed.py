"""velvet.losses.distributed without a process group, and ranks simulated with a fake gather."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from velvet.losses import distributed as vdist
from velvet.losses.contrastive import ClipLoss
from velvet.losses.ntxent import NTXentLoss


def test_helpers_without_process_group() -> None:
    x = torch.randn(3, 4, 5)
    assert not vdist.is_dist()
    assert (vdist.world_size(), vdist.rank(), vdist.rank_offset(7), vdist.max_over_ranks(9)) == (1, 0, 0, 9)
    assert vdist.all_gather_with_grad(x) is x
    assert vdist.all_gather_padded(x, dim=1) is x
    with pytest.raises(ValueError, match="dim must not be 0"):
        vdist.all_gather_padded(x, dim=0)


class FakeWorld:
    """Rank ``rank`` of 2: the k-th gather returns ``[rank 0's part, rank 1's part]`` where this
    rank's part is the tensor passed in and the other rank's part is ``sources[k][other]``,
    normalised as the other rank's loss would (the losses normalise before gathering). The
    other parts are live leaves, so backward reaches them as the real collective's backward does.
    """

    def __init__(self, rank: int, sources: list[list[torch.Tensor]]):
        self.rank, self.sources, self.calls = rank, sources, 0

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x if k == self.rank else F.normalize(self.sources[self.calls][k], dim=-1) for k in range(2)]
        self.calls += 1
        return torch.cat(parts)


def simulate(monkeypatch, loss_fn, sources: list[list[torch.Tensor]], *extra) -> list[torch.Tensor]:
    """Per-rank losses of ``loss_fn(*[s[r] for s in sources], *extra)`` under a fake 2-rank world."""
    losses = []
    for r in range(2):
        world = FakeWorld(r, sources)
        monkeypatch.setattr(vdist, "world_size", lambda: 2)
        monkeypatch.setattr(vdist, "rank", lambda r=r: r)
        monkeypatch.setattr(vdist, "all_gather_with_grad", world.gather)
        (value,) = loss_fn(*[s[r] for s in sources], *extra).values()
        assert world.calls == len(sources)
        losses.append(value)
    monkeypatch.undo()
    return losses


@pytest.mark.parametrize("make_loss", [lambda: ClipLoss(label_smoothing=0.1), lambda: NTXentLoss(0.5)])
def test_simulated_two_ranks_match_single_process(monkeypatch, make_loss) -> None:
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    b = [torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    extra = (torch.tensor(3.0, dtype=torch.float64),) if isinstance(make_loss(), ClipLoss) else ()
    loss_fn = make_loss()
    per_rank = simulate(monkeypatch, loss_fn, [a, b], *extra)
    (full,) = loss_fn(torch.cat(a), torch.cat(b), *extra).values()
    assert torch.allclose(0.5 * (per_rank[0] + per_rank[1]), full, atol=1e-12)
    # the collective sums every rank's gradient into each slice: sum of rank losses = 2 * full
    leaves = a + b
    got = torch.autograd.grad(per_rank[0] + per_rank[1], leaves)
    want = torch.autograd.grad(2 * full, leaves)
    for x, y in zip(got, want, strict=True):
        assert torch.allclose(x, y, atol=1e-12)
    # a rank's loss alone is not the full loss: the offsets matter
    assert not torch.allclose(per_rank[0], full)
