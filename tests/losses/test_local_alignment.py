"""LocalAlignmentLoss / local_similarity: naive loop reference, hand-computed 2x2, masks, chunks."""

from __future__ import annotations

import math

import pytest
import torch

from velvet.losses.local_alignment import LocalAlignmentLoss, local_similarity

KEY = "itc_word_loss"
F64 = torch.float64


def naive_score(regions, tokens, token_mask, region_mask, t1, t2, t3, agg, attention="gloria") -> torch.Tensor:
    """GLoRIA score of one image (R, E) and one text (T, E), token by token and region by region."""
    v = [regions[r] / regions[r].norm() for r in range(regions.shape[0]) if region_mask[r]]
    w = [tokens[k] / tokens[k].norm() for k in range(tokens.shape[0]) if token_mask[k]]
    # a[k][r]: softmax over the tokens k of <v_r, w_k>, one region at a time ("gloria"), or the
    # cosine itself ("regions": the softmax over regions below is then the only one)
    a = [[None] * len(v) for _ in w]
    for r in range(len(v)):
        col = [torch.exp(torch.dot(v[r], w[k])) for k in range(len(w))]
        for k in range(len(w)):
            a[k][r] = col[k] / sum(col) if attention == "gloria" else torch.dot(v[r], w[k])
    terms = []
    for k in range(len(w)):
        e = [torch.exp(t1 * a[k][r]) for r in range(len(v))]
        context = sum(e[r] / sum(e) * v[r] for r in range(len(v)))
        cos = torch.dot(w[k], context) / context.norm()
        terms.append(torch.exp(t2 * cos))
    total = sum(terms) if agg == "sum" else sum(terms) / len(terms)
    return t3 * torch.log(total)


def naive_loss(
    regions, tokens, token_mask, region_mask, t1=4.0, t2=5.0, t3=10.0, agg="sum", attention="gloria"
) -> torch.Tensor:
    b = regions.shape[0]
    s = [[naive_score(regions[j], tokens[i], token_mask[i], region_mask[j], t1, t2, t3, agg, attention)
          for i in range(b)] for j in range(b)]  # fmt: skip
    rows = sum(torch.log(sum(torch.exp(s[j][i]) for i in range(b))) - s[j][j] for j in range(b)) / b
    cols = sum(torch.log(sum(torch.exp(s[j][i]) for j in range(b))) - s[i][i] for i in range(b)) / b
    return 0.5 * (rows + cols)


def make_batch(seed: int, b: int = 3, r: int = 5, t: int = 4, e: int = 6):
    g = torch.Generator().manual_seed(seed)
    regions = torch.randn(b, r, e, generator=g, dtype=F64, requires_grad=True)
    tokens = torch.randn(b, t, e, generator=g, dtype=F64, requires_grad=True)
    token_mask = torch.ones(b, t, dtype=torch.bool)
    token_mask[0, 2:] = False  # texts with 2, 4 and 3 valid tokens
    token_mask[2, 3] = False
    region_mask = torch.ones(b, r, dtype=torch.bool)
    region_mask[1, 0] = False
    return regions, tokens, token_mask, region_mask


@pytest.mark.parametrize("attention", ["gloria", "regions"])
@pytest.mark.parametrize("agg", ["sum", "mean"])
@pytest.mark.parametrize("use_region_mask", [False, True])
def test_matches_naive_forward_and_grad(agg: str, use_region_mask: bool, attention: str) -> None:
    regions, tokens, token_mask, region_mask = make_batch(0)
    loss_fn = LocalAlignmentLoss(agg=agg, name="itc_word", attention=attention)
    loss = loss_fn(regions, tokens, token_mask, region_mask if use_region_mask else None)[KEY]
    full = region_mask if use_region_mask else torch.ones_like(region_mask)
    ref = naive_loss(regions, tokens, token_mask, full, agg=agg, attention=attention)
    assert torch.allclose(loss, ref, atol=1e-9), (loss, ref)
    grads = torch.autograd.grad(loss, [regions, tokens])
    ref_grads = torch.autograd.grad(ref, [regions, tokens])
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-9)


def test_hand_computed_2x2() -> None:
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    regions = torch.tensor([[e1, e2], [e1, e1]], dtype=F64)  # image 0: e1, e2; image 1: e1 twice
    tokens = torch.tensor([[e1, e2], [e1, [0.3, -0.9]]], dtype=F64)  # text 1: one word + padding
    token_mask = torch.tensor([[True, True], [True, False]])
    # S(0,0): dots [[1,0],[0,1]] (token k x region r); softmax over k per region gives
    #   a[k=1] = [sig, 1-sig], a[k=2] = [1-sig, sig] with sig = e/(e+1);
    #   softmax over r of 4a: token 1 -> [p, 1-p], p = 1/(1+exp(4(1-2 sig))); c_1 = p e1 + (1-p) e2,
    #   cos(w1, c1) = p / sqrt(p^2 + (1-p)^2) = q, and token 2 gives the same q by symmetry.
    sig = math.e / (math.e + 1)
    p = 1 / (1 + math.exp(4 * (1 - 2 * sig)))
    q = p / math.sqrt(p**2 + (1 - p) ** 2)
    s00 = 10 * math.log(2 * math.exp(5 * q))
    # S(0,1): one token, a = 1 for both regions, alpha uniform, c = (e1+e2)/2, cos = 1/sqrt(2)
    s01 = 10 * 5 / math.sqrt(2)
    # S(1,0) and S(1,1): both regions are e1 so c_k = e1; cos = 1 (word e1) or 0 (word e2)
    s10 = 10 * math.log(math.exp(5) + math.exp(0))
    s11 = 10 * 5.0
    s = [[s00, s01], [s10, s11]]  # S[image j][text i]

    def ce(row: list[float], target: int) -> float:
        return math.log(sum(math.exp(x) for x in row)) - row[target]

    expected = 0.5 * ((ce(s[0], 0) + ce(s[1], 1)) / 2 + (ce([s00, s10], 0) + ce([s01, s11], 1)) / 2)
    scores = local_similarity(regions, tokens, token_mask)
    assert torch.allclose(scores, torch.tensor(s, dtype=F64), atol=1e-10)
    loss = LocalAlignmentLoss(name="itc_word")(regions, tokens, token_mask)[KEY]
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def test_padding_does_not_change_the_loss() -> None:
    regions, tokens, token_mask, region_mask = make_batch(1)
    loss_fn = LocalAlignmentLoss(name="itc_word")
    base = loss_fn(regions, tokens, token_mask, region_mask)[KEY]
    # different garbage under the masked tokens and regions
    tokens2 = torch.where(token_mask[..., None], tokens, torch.randn_like(tokens) * 50)
    regions2 = torch.where(region_mask[..., None], regions, torch.randn_like(regions) * 50)
    assert torch.allclose(base, loss_fn(regions2, tokens2, token_mask, region_mask)[KEY], atol=1e-12)
    # more padding columns
    pad = torch.randn(3, 2, tokens.shape[-1], dtype=F64)
    tokens3 = torch.cat([tokens, pad], dim=1)
    mask3 = torch.cat([token_mask, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    assert torch.allclose(base, loss_fn(regions, tokens3, mask3, region_mask)[KEY], atol=1e-12)
    # padded tokens get no gradient
    grad = torch.autograd.grad(loss_fn(regions, tokens3, mask3, region_mask)[KEY], tokens3)[0]
    assert torch.all(grad[~mask3] == 0)


@pytest.mark.parametrize("chunk_size", [1, 2, 5])
def test_chunked_equals_unchunked(chunk_size: int) -> None:
    regions, tokens, token_mask, region_mask = make_batch(2, b=4)
    token_mask = torch.ones(4, 4, dtype=torch.bool)
    region_mask = torch.ones(4, 5, dtype=torch.bool)
    region_mask[3, 1] = False
    full = LocalAlignmentLoss(name="itc_word")(regions, tokens, token_mask, region_mask)[KEY]
    chunked = LocalAlignmentLoss(name="itc_word", chunk_size=chunk_size)(
        regions, tokens, token_mask, region_mask
    )
    assert torch.allclose(full, chunked[KEY], atol=1e-12)
    g_full = torch.autograd.grad(full, [regions, tokens])
    g_chunk = torch.autograd.grad(chunked[KEY], [regions, tokens])
    for a, b in zip(g_full, g_chunk, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(
            local_similarity(regions, tokens, token_mask, chunk_size=chunk_size),
            local_similarity(regions, tokens, token_mask),
        )


def test_perfect_alignment_is_lower_than_shuffled() -> None:
    # each text's words are exactly the regions of its image, and images are mutually distinct
    basis = torch.eye(8, dtype=F64)
    regions = basis.reshape(4, 2, 8)
    mask = torch.ones(4, 2, dtype=torch.bool)
    loss_fn = LocalAlignmentLoss(name="itc_word")
    aligned = loss_fn(regions, regions.clone(), mask)[KEY]
    shuffled = loss_fn(regions, regions[torch.tensor([1, 2, 3, 0])], mask)[KEY]
    assert aligned < 0.05
    assert shuffled > 10 * aligned + 1


def test_mean_agg_removes_the_length_bias() -> None:
    regions, tokens, token_mask, _ = make_batch(3)
    s_sum = local_similarity(regions, tokens, token_mask, agg="sum")
    s_mean = local_similarity(regions, tokens, token_mask, agg="mean")
    lengths = token_mask.sum(1).to(F64)
    assert torch.allclose(s_mean, s_sum - 10 * lengths.log()[None, :])


def test_bad_arguments_raise() -> None:
    regions, tokens, token_mask, _ = make_batch(4)
    with pytest.raises(ValueError, match="agg"):
        LocalAlignmentLoss(agg="max")
    with pytest.raises(ValueError, match="chunk_size"):
        LocalAlignmentLoss(chunk_size=0)
    empty = token_mask.clone()
    empty[1] = False
    with pytest.raises(ValueError, match="at least one valid token"):
        LocalAlignmentLoss()(regions, tokens, empty)
    with pytest.raises(ValueError, match="bool"):
        LocalAlignmentLoss()(regions, tokens, token_mask.long())
    with pytest.raises(ValueError, match="paired"):
        LocalAlignmentLoss()(regions[:2], tokens, token_mask)
    with pytest.raises(ValueError, match="valid region"):
        LocalAlignmentLoss()(regions, tokens, token_mask, torch.zeros(3, 5, dtype=torch.bool))


def test_regions_attention_can_point_where_gloria_cannot() -> None:
    """One region matches the word: the regions attention puts most weight there, GLoRIA's cannot
    on a long text (its alpha varies by at most exp(temp1 * e^2 / (e^2 + T - 1)) over regions)."""
    from velvet.grounding.attention import unit_heat

    e, n_reg, n_tok = 16, 64, 100
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(n_tok, e, generator=g)
    regions = torch.randn(n_reg, e, generator=g)
    regions[7] = tokens[0] * 3  # region 7 is the word's
    mask = torch.ones(n_tok, dtype=torch.bool)
    sharp = unit_heat(regions, tokens, mask, temp1=10.0, attention="regions")[0]
    flat = unit_heat(regions, tokens, mask, temp1=10.0, attention="gloria")[0]
    assert int(sharp.argmax()) == 7 and float(sharp[7]) > 0.5
    bound = math.exp(10.0 * math.e**2 / (math.e**2 + n_tok - 1))
    assert float(flat.max() / flat.min()) <= bound + 1e-6
