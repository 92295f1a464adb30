"""mask_tokens and MLMLoss: special tokens, 15 % / 80-10-10 statistics, determinism, naive CE."""

from __future__ import annotations

import math

import pytest
import torch

from velvet.losses.mlm import IGNORE_INDEX, MLMLoss, mask_tokens

PAD, CLS, MASK = 0, 2, 4
SEN_IDS = (5, 6, 7, 8, 9)
FIRST_WORD_ID, VOCAB = 10, 1010


def make_batch(b: int = 200, length: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS], words with a [SEN_k] about every 10 tokens, then padding of random length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_WORD_ID, VOCAB, (b, length), generator=g)
    sen = torch.rand(b, length, generator=g) < 0.1
    ids[sen] = torch.tensor(SEN_IDS)[torch.randint(len(SEN_IDS), (int(sen.sum()),), generator=g)]
    ids[:, 0] = CLS
    lengths = torch.randint(length // 2, length + 1, (b,), generator=g)
    ids[torch.arange(length)[None, :] >= lengths[:, None]] = PAD
    special = (ids == PAD) | (ids == CLS) | (ids >= SEN_IDS[0]) & (ids <= SEN_IDS[-1])
    return ids, special


def run_mask(ids, special, seed=0, **kw):
    kw.setdefault("random_token_ids", torch.arange(FIRST_WORD_ID, VOCAB))
    g = torch.Generator().manual_seed(seed)
    return mask_tokens(ids, special, mask_token_id=MASK, vocab_size=VOCAB, generator=g, **kw)


def test_special_tokens_untouched_and_labels_consistent() -> None:
    ids, special = make_batch()
    masked, labels = run_mask(ids, special)
    assert torch.equal(masked[special], ids[special])
    assert torch.all(labels[special] == IGNORE_INDEX)
    selected = labels != IGNORE_INDEX
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])


def test_selection_ratio_and_80_10_10_split() -> None:
    ids, special = make_batch()
    masked, labels = run_mask(ids, special)
    maskable, selected = ~special, labels != IGNORE_INDEX
    # ~67k maskable tokens: the std of the ratio is ~0.0014, allow ~4 sigma
    assert abs(selected.sum().item() / maskable.sum().item() - 0.15) < 0.006
    n = selected.sum().item()
    to_mask = (masked[selected] == MASK).float().mean().item()
    unchanged = (masked[selected] == ids[selected]).float().mean().item()
    replaced = masked[selected][(masked[selected] != MASK) & (masked[selected] != ids[selected])]
    # ~10k selected tokens: std of a 10 % share ~0.003, of the 80 % share ~0.004
    assert n > 9_000
    assert abs(to_mask - 0.8) < 0.02
    assert abs(unchanged - (0.1 + 0.1 / 1000)) < 0.015  # a random draw can hit the original id
    assert abs(replaced.numel() / n - 0.1 * 999 / 1000) < 0.015
    # random replacements come from the given pool only (never [SEN_k], [CLS], [PAD])
    assert replaced.min() >= FIRST_WORD_ID and replaced.max() < VOCAB


def test_uniform_random_ids_without_pool() -> None:
    ids, special = make_batch(b=50)
    masked, labels = run_mask(ids, special, random_token_ids=None, probability=1.0)
    selected = labels != IGNORE_INDEX
    other = masked[selected & (masked != MASK) & (masked != ids)]
    assert other.numel() > 0 and other.min() >= 0 and other.max() < VOCAB
    assert torch.all(selected == ~special)  # probability 1 selects every maskable token


def test_deterministic_with_generator() -> None:
    ids, special = make_batch(b=20)
    a = run_mask(ids, special, seed=5)
    b = run_mask(ids, special, seed=5)
    c = run_mask(ids, special, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_at_least_one_token_per_row() -> None:
    # 300 rows: [CLS] one word [PAD]...; without the guarantee ~85 % of them would select nothing
    ids = torch.full((300, 6), PAD)
    ids[:, 0], ids[:, 1] = CLS, 42
    ids[-1, 1] = PAD  # one row with no maskable token at all
    special = ids != 42
    masked, labels = run_mask(ids, special)
    assert torch.all(labels[:-1, 1] == 42)
    assert torch.all(labels[:, [0, 2, 3, 4, 5]] == IGNORE_INDEX)
    assert torch.all(labels[-1] == IGNORE_INDEX) and torch.equal(masked[-1], ids[-1])


def test_mask_tokens_bad_arguments() -> None:
    ids, special = make_batch(b=2, length=8)
    with pytest.raises(ValueError, match="probability"):
        run_mask(ids, special, probability=0.0)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        run_mask(ids, special[:, :4])
    with pytest.raises(ValueError, match="empty"):
        run_mask(ids, special, random_token_ids=torch.tensor([], dtype=torch.long))


def naive_mlm(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    total, count = 0, 0
    for b in range(labels.shape[0]):
        for pos in range(labels.shape[1]):
            if labels[b, pos] == IGNORE_INDEX:
                continue
            denom = sum(torch.exp(logits[b, pos, v]) for v in range(logits.shape[2]))
            total = total - torch.log(torch.exp(logits[b, pos, labels[b, pos]]) / denom)
            count += 1
    return total / count


def test_mlm_loss_matches_naive_forward_and_grad() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(7, (2, 5), generator=g)
    labels[0, :3] = IGNORE_INDEX
    labels[1, 4] = IGNORE_INDEX
    loss = MLMLoss()(logits, labels)["txt_mlm_loss"]
    ref = naive_mlm(logits, labels)
    assert torch.allclose(loss, ref, atol=1e-10)
    assert torch.allclose(
        torch.autograd.grad(loss, logits)[0], torch.autograd.grad(ref, logits)[0], atol=1e-10
    )


def test_mlm_loss_hand_computed_2x2() -> None:
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 3.0], [0.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1], [IGNORE_INDEX, 1]])
    # -log softmax: [1,0]->0: log(e+1)-1; [0,2]->1: log(1+e^2)-2; [0,0]->1: log 2; [3,3] ignored
    expected = (math.log(math.e + 1) - 1 + math.log(1 + math.exp(2)) - 2 + math.log(2)) / 3
    out = MLMLoss(name="mm_mlm")(logits, labels)
    assert list(out) == ["mm_mlm_loss"]
    assert out["mm_mlm_loss"].item() == pytest.approx(expected, abs=1e-12)


def test_mlm_loss_without_labels_is_zero_with_a_graph() -> None:
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = MLMLoss()(logits, torch.full((2, 3), IGNORE_INDEX))["txt_mlm_loss"]
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)
    with pytest.raises(ValueError, match=r"\(B, L, V\)"):
        MLMLoss()(logits, torch.zeros(2, 4, dtype=torch.long))
