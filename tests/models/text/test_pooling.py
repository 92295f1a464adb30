"""The vectorised pooling equals a per-sample, per-token loop (forward and gradients)."""

from __future__ import annotations

import pytest
import torch

from velvet.models.text.pooling import pool_text

KEYS = ("word_ids", "sentence_ids", "sentence_token_mask", "attention_mask")


def loop_pool(hidden, word_ids, sentence_ids, sentence_token_mask, attention_mask, sentence_modeling=True):
    """Reference: walk every token of every sample in Python (the reference code's way, without its bug)."""
    batch, length, width = hidden.shape
    reports, words_all, sentences_all = [], [], []
    for b in range(batch):
        reports.append(hidden[b, 0])
        words: dict[int, torch.Tensor] = {}
        word_sentence: dict[int, int] = {}
        sen_vectors: dict[int, torch.Tensor] = {}
        for i in range(length):
            if not attention_mask[b, i]:
                continue
            w = int(word_ids[b, i])
            if w >= 0:
                words[w] = words[w] + hidden[b, i] if w in words else hidden[b, i]
                word_sentence[w] = int(sentence_ids[b, i]) if sentence_modeling else 1
            elif sentence_modeling and sentence_token_mask[b, i]:
                sen_vectors[int(sentence_ids[b, i])] = hidden[b, i]
        words_all.append([words[w] for w in sorted(words)])
        sentences = []
        for k in sorted(set(sen_vectors) | set(word_sentence.values())):
            merged = ([sen_vectors[k]] if k in sen_vectors else []) + [
                words[w] for w in sorted(words) if word_sentence[w] == k
            ]
            sentences.append(torch.stack(merged).mean(0))
        sentences_all.append(sentences)

    def pad(rows):
        size = max(len(r) for r in rows)
        out = hidden.new_zeros(batch, size, width)
        mask = torch.zeros(batch, size, dtype=torch.bool)
        for b, r in enumerate(rows):
            for j, v in enumerate(r):
                out[b, j] = v
                mask[b, j] = True
        return out, mask

    words, word_mask = pad(words_all)
    sentences, sentence_mask = pad(sentences_all)
    return {
        "report": torch.stack(reports),
        "words": words,
        "word_mask": word_mask,
        "sentences": sentences,
        "sentence_mask": sentence_mask,
    }


def _check(batch, sentence_modeling):
    gen = torch.Generator().manual_seed(1)
    shape = (*batch["input_ids"].shape, 5)
    hidden_fast = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    hidden_loop = hidden_fast.detach().clone().requires_grad_(True)
    fast = pool_text(hidden_fast, *(batch[k] for k in KEYS), sentence_modeling=sentence_modeling)
    ref = loop_pool(hidden_loop, *(batch[k] for k in KEYS), sentence_modeling=sentence_modeling)
    assert fast.keys() == ref.keys()
    for key in ref:
        assert fast[key].shape == ref[key].shape, key
        torch.testing.assert_close(fast[key], ref[key], atol=1e-6, rtol=0, msg=key)
    # Gradients: a random linear functional of every float output.
    loss_fast = loss_loop = 0
    for key in ("report", "words", "sentences"):
        weight = torch.randn(ref[key].shape, generator=gen, dtype=torch.float64)
        loss_fast = loss_fast + (fast[key] * weight).sum()
        loss_loop = loss_loop + (ref[key] * weight).sum()
    loss_fast.backward()
    loss_loop.backward()
    torch.testing.assert_close(hidden_fast.grad, hidden_loop.grad, atol=1e-6, rtol=0)
    return fast


def test_pool_matches_loop_reference(batch):
    fast = _check(batch, sentence_modeling=True)
    # The layouts' counts, independently of both implementations.
    assert fast["word_mask"].sum(1).tolist() == batch["num_words"].tolist()
    assert fast["sentence_mask"].sum(1).tolist() == batch["num_sentences"].tolist()


def test_sentence_divisor_is_one_plus_word_count(make_batch):
    # One sentence: words of 3 and 1 pieces -> mean over 3 merged vectors ([SEN], w0, w1), not over 5 pieces.
    b = make_batch([[[3, 1]]])
    hidden = torch.randn(*b["input_ids"].shape, 4, dtype=torch.float64)
    out = pool_text(hidden, *(b[k] for k in KEYS))
    expected = (hidden[0, 1] + hidden[0, 2:5].sum(0) + hidden[0, 5]) / 3
    torch.testing.assert_close(out["sentences"][0, 0], expected)
    torch.testing.assert_close(out["words"][0, 0], hidden[0, 2:5].sum(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_random_layouts(make_batch, seed):
    gen = torch.Generator().manual_seed(seed)
    reports = []
    for _ in range(4):
        n_sent = int(torch.randint(1, 5, (1,), generator=gen))
        reports.append(
            [
                [
                    int(p)
                    for p in torch.randint(
                        1, 4, (int(torch.randint(0, 5, (1,), generator=gen)),), generator=gen
                    )
                ]
                for _ in range(n_sent)
            ]
        )
    _check(make_batch(reports, seed=seed), sentence_modeling=True)


def test_pool_without_sentence_modeling(make_batch):
    b = make_batch([[[1, 2], [3]], [[1]]], sentence_modeling=False)
    fast = _check(b, sentence_modeling=False)
    assert fast["sentences"].shape[1] == 1
    assert fast["sentence_mask"].all()


def test_fixed_sizes_and_errors(batch):
    hidden = torch.randn(*batch["input_ids"].shape, 4)
    out = pool_text(hidden, *(batch[k] for k in KEYS), max_words=12, max_sentences=6)
    natural = pool_text(hidden, *(batch[k] for k in KEYS))
    assert out["words"].shape == (3, 12, 4) and out["sentences"].shape == (3, 6, 4)
    torch.testing.assert_close(out["words"][:, :8], natural["words"])
    assert not out["word_mask"][:, 8:].any() and not out["sentence_mask"][:, 3:].any()
    with pytest.raises(ValueError, match="max_words"):
        pool_text(hidden, *(batch[k] for k in KEYS), max_words=3)
