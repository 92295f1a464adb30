"""ITM hard negatives under a real 2-process gloo run: which rows, which rank, which direction.

Each rank holds 3 pairs (global rows 0-2 on rank 0, 3-5 on rank 1). The report heads are replaced
by fixed embeddings: image g is e_g; text h is e_h + 0.9 e_(partner). The partner structure puts the
hardest negative of every image, and of every text, on the OTHER rank, and makes the two
directions differ: image (r, b) -> text (1-r, b+1); text (r, b) -> image (1-r, b-1). Every positive
is more similar than any negative, so a sampler that forgot to exclude it would draw it.

At logit scale 100 the softmax is one-hot and the drawn rows are checked exactly, together with
the rows the fusion layers received and the ITM loss (naive, pair by pair, texts of the other
rank included). At logit scale 5 the sampler's arguments are checked against the naive
similarities and its draw frequencies against the naive softmax.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.gloo import free_port, run_workers
from tests.pretraining.wiring import naive

pytestmark = pytest.mark.distributed
WORLD, B = 2, 3
N = WORLD * B
SCALES = {"onehot": 100.0, "soft": 5.0}
DRAWS = 2000


def crafted() -> tuple[torch.Tensor, torch.Tensor]:
    """Global ``(N, E)`` image and text embeddings (E = 32, velvet-tiny's shared width)."""
    img = torch.eye(N, 32)
    txt = torch.eye(N, 32)
    for r in range(WORLD):
        for b in range(B):
            h = r * B + b
            partner = (1 - r) * B + (b - 1) % B  # the image whose hardest negative is text h
            txt[h, partner] = 0.9
    return img, txt


def hardest_text(r: int, b: int) -> int:
    return (1 - r) * B + (b + 1) % B


def hardest_image(r: int, b: int) -> int:
    return (1 - r) * B + (b - 1) % B


def _worker(rank: int, port: int, pre, batches: list[dict], out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        import velvet.pretraining.objectives as objectives_mod
        from velvet.losses.itm import sample_hard_negatives

        model, batch = pre.model, batches[rank]
        img, txt = crafted()
        rows = slice(rank * B, (rank + 1) * B)
        model.heads["image_report"], model.heads["text_report"] = (
            naive.Fixed(img[rows]),
            naive.Fixed(txt[rows]),
        )
        results = {}
        for name, scale in SCALES.items():
            with torch.no_grad():
                model.logit_scale.log_scale.fill_(math.log(scale))
            record: dict = {}
            real_fuse = model.fuse

            def spy_negatives(*args, record=record, **kwargs):
                record["args"] = (args, kwargs)
                record["negatives"] = sample_hard_negatives(*args, **kwargs)
                return record["negatives"]

            def spy_fuse(text, hidden3, visual3, record=record, real_fuse=real_fuse):
                record["fuse"] = (text["attention_mask"], hidden3, visual3)
                return real_fuse(text, hidden3, visual3)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(objectives_mod, "sample_hard_negatives", spy_negatives)
                patch.setattr(model, "fuse", spy_fuse)
                with torch.no_grad():
                    out = pre(batch, torch.Generator().manual_seed(11 + rank))
            args, kwargs = record["args"]
            # how often the sampler, given exactly these arguments, draws each column
            counts_text, counts_image = torch.zeros(B, N), torch.zeros(B, N)
            g = torch.Generator().manual_seed(100 + rank)
            for _ in range(DRAWS):
                t, i = sample_hard_negatives(*args, **{**kwargs, "generator": g})
                counts_text[torch.arange(B), t] += 1
                counts_image[torch.arange(B), i] += 1
            results[name] = {
                "sim_i2t": args[0] if args else kwargs["sim_i2t"],
                "sim_t2i": kwargs.get("sim_t2i"),
                "local_offset": kwargs.get("local_offset"),
                "neg_text": record["negatives"][0],
                "neg_image": record["negatives"][1],
                "fuse": record["fuse"],
                "itm_loss": float(out["itm_loss"]),
                "freq_text": counts_text / DRAWS,
                "freq_image": counts_image / DRAWS,
            }
        torch.save(results, Path(out_dir) / f"r{rank}.pt")
    finally:
        dist.destroy_process_group()



@pytest.fixture(scope="module")
def ranks(tokenizer, reports, tmp_path_factory):
    """Per rank: the sampler's arguments and draws, the fused rows, the reported and the naive ITM loss."""
    from tests.pretraining.helpers import make_batch, make_pretrainer

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tmp = tmp_path_factory.mktemp("itm_gloo")
        pre = naive.amplify_heads(naive.amplify_cross_attention(
            make_pretrainer(tokenizer, objectives=["itc_report", "itm"], dropout=0.0)
        ))  # fmt: skip
        # different reports, hence different padded lengths, on the two ranks
        batches = [make_batch(tokenizer, reports[r * B : (r + 1) * B], B, seed=r) for r in range(WORLD)]
        # fork: the workers inherit the imported modules and the model (spawn re-imports torch and
        # transformers in each worker, ~10 s each on a busy 2-core machine)
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        run_workers(_worker, (free_port(), pre, batches, str(tmp)), nprocs=WORLD, timeout=240, start_method=method)
        out = [torch.load(tmp / f"r{r}.pt") for r in range(WORLD)]
        # the naive ITM loss of the pairs each rank drew, each pair fused on its own
        model = pre.model
        with torch.no_grad():
            hidden = [naive.text_states(model, b) for b in batches]
            visual = [naive.visual_tokens(model, b["image"]) for b in batches]

            def logits(text_global: int, image_global: int) -> torch.Tensor:
                (tr, ti), (vr, vi) = divmod(text_global, B), divmod(image_global, B)
                return naive.itm_pair_logits(
                    model, pre.heads["itm"], batches[tr], hidden[tr], ti, visual[vr], vi
                )

            for rank, results in enumerate(out):
                for res in results.values():
                    own = [rank * B + b for b in range(B)]
                    pairs = [(logits(g, g), 1) for g in own]
                    pairs += [(logits(int(t), g), 0) for t, g in zip(res["neg_text"], own, strict=True)]
                    pairs += [(logits(g, int(i)), 0) for g, i in zip(own, res["neg_image"], strict=True)]
                    res["itm_loss_naive"] = naive.itm_loss(pairs)
                results["hidden"], results["visual"] = hidden, torch.cat(visual)
    finally:
        torch.set_num_threads(n)
    return out


@pytest.mark.parametrize("rank", range(WORLD))
def test_sampler_gets_the_gathered_similarities_of_each_direction(ranks, rank):
    img, txt = crafted()
    img, txt = img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)
    rows = slice(rank * B, (rank + 1) * B)
    for name, scale in SCALES.items():
        res = ranks[rank][name]
        assert res["local_offset"] == rank * B, "the positives are this rank's rows of the global batch"
        assert res["sim_i2t"].shape == (B, N), "negatives must be drawn from the whole gathered batch"
        assert torch.allclose(res["sim_i2t"], scale * img[rows] @ txt.T, atol=1e-4), "image -> all texts"
        assert torch.allclose(res["sim_t2i"], scale * txt[rows] @ img.T, atol=1e-4), "text -> all images"


@pytest.mark.parametrize("rank", range(WORLD))
def test_one_hot_negatives_come_from_the_other_rank_in_the_right_direction(ranks, rank):
    res = ranks[rank]["onehot"]
    assert res["neg_text"].tolist() == [hardest_text(rank, b) for b in range(B)]
    assert res["neg_image"].tolist() == [hardest_image(rank, b) for b in range(B)]
    for b in range(B):
        assert res["freq_text"][b, hardest_text(rank, b)] > 0.99
        assert res["freq_image"][b, hardest_image(rank, b)] > 0.99


@pytest.mark.parametrize("rank", range(WORLD))
def test_fused_rows_are_the_drawn_rows_of_the_gathered_batch(ranks, rank):
    res = ranks[rank]["onehot"]
    attention_mask, hidden3, visual3 = res["fuse"]
    hidden, visual = ranks[rank]["hidden"], ranks[rank]["visual"]
    for b in range(B):
        own = hidden[rank][b]
        assert torch.allclose(hidden3[b, : own.shape[0]], own, atol=1e-5)  # positive pair
        assert torch.allclose(
            hidden3[2 * B + b, : own.shape[0]], own, atol=1e-5
        )  # report b with a negative image
        tr, ti = divmod(hardest_text(rank, b), B)
        neg = hidden[tr][ti]
        assert torch.allclose(hidden3[B + b, : neg.shape[0]], neg, atol=1e-5), (
            "image b with the wrong negative report"
        )
        assert not attention_mask[B + b, neg.shape[0] :].any()  # padding stays masked
        assert torch.allclose(visual3[b], visual[rank * B + b], atol=1e-5)
        assert torch.allclose(visual3[B + b], visual[rank * B + b], atol=1e-5)
        assert torch.allclose(visual3[2 * B + b], visual[hardest_image(rank, b)], atol=1e-5), (
            "wrong negative image"
        )


@pytest.mark.parametrize("name", list(SCALES))
@pytest.mark.parametrize("rank", range(WORLD))
def test_itm_loss_equals_the_naive_pairwise_loss(ranks, rank, name):
    res = ranks[rank][name]
    assert float(res["itm_loss"]) == pytest.approx(res["itm_loss_naive"], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("rank", range(WORLD))
def test_soft_negatives_follow_the_softmax_of_the_gathered_row(ranks, rank):
    """At scale 5 the other rank's hardest candidate takes ~88 %, every other non-positive ~3 %."""
    img, txt = crafted()
    img, txt = img / img.norm(dim=1, keepdim=True), txt / txt.norm(dim=1, keepdim=True)
    res = ranks[rank]["soft"]
    scale = SCALES["soft"]
    for b in range(B):
        g = rank * B + b
        want_text = torch.tensor(naive.softmax_without((scale * img[g] @ txt.T).tolist(), g))
        want_image = torch.tensor(naive.softmax_without((scale * txt[g] @ img.T).tolist(), g))
        assert res["freq_text"][b, g] == 0 and res["freq_image"][b, g] == 0, "the positive was drawn"
        assert torch.allclose(res["freq_text"][b], want_text, atol=0.04), (b, res["freq_text"][b], want_text)
        assert torch.allclose(res["freq_image"][b], want_image, atol=0.04), (
            b,
            res["freq_image"][b],
            want_image,
        )
        other = slice((1 - rank) * B, (2 - rank) * B)
        assert res["freq_text"][b, other].sum() > 0.85  # mostly from the other rank, as the softmax says
