"""Negative-keeping accumulation gives the gradients of one big batch."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from tests.pretraining.helpers import make_batch, make_pretrainer
from velvet.pretraining.negative_cache import cached_negatives_step, split_batch

ITC = ["itc_report", "itc_sentence", "itc_word"]


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_cached_micro_batches_equal_the_big_batch(tokenizer, reports):
    pre = make_pretrainer(tokenizer, objectives=ITC, dropout=0.0)
    batch = make_batch(tokenizer, reports, 6)
    weights = {"itc_report": 1.0, "itc_sentence": 0.5, "itc_word": 2.0}

    pre.zero_grad()
    big = pre(batch)
    total = big["itc_report_loss"] + 0.5 * big["itc_sentence_loss"] + 2.0 * big["itc_word_loss"]
    total.backward()
    reference = _grads(pre)

    pre.zero_grad()
    out = cached_negatives_step(pre, batch, 2, weights=weights)
    cached = _grads(pre)
    assert torch.allclose(out["loss"], total.detach(), atol=1e-6)
    assert set(cached) == set(reference)
    for name, g in reference.items():
        assert torch.allclose(cached[name], g, atol=1e-5, rtol=1e-4), name

    # plain accumulation (losses per micro-batch) sees fewer negatives: different gradients
    pre.zero_grad()
    for chunk in split_batch(batch, 2):
        part = pre(chunk)
        ((part["itc_report_loss"] + 0.5 * part["itc_sentence_loss"] + 2.0 * part["itc_word_loss"]) / 3).backward()
    naive = _grads(pre)
    assert not torch.allclose(naive["model.heads.image_report.linear.weight"], reference["model.heads.image_report.linear.weight"], atol=1e-5)


def test_dropout_masks_are_replayed(tokenizer, reports):
    pre = make_pretrainer(tokenizer, objectives=["itc_report"], dropout=0.3)
    batch = make_batch(tokenizer, reports, 4)
    torch.manual_seed(5)
    pre.zero_grad()
    big = pre(batch)
    big["itc_report_loss"].backward()
    # with one micro-batch the replay must reproduce the same dropout masks exactly
    reference = _grads(pre)
    torch.manual_seed(5)
    pre.zero_grad()
    cached_negatives_step(pre, batch, 4, weights={"itc_report": 1.0})
    for name, g in reference.items():
        assert torch.allclose(pre.get_parameter(name).grad, g, atol=1e-5), name


def test_other_objectives_are_weighted_by_micro_batch_share(tokenizer, reports):
    pre = make_pretrainer(tokenizer, objectives=["itc_report", "vis_ssl"], dropout=0.0)
    batch = make_batch(tokenizer, reports, 4)
    out = cached_negatives_step(
        pre, batch, 2, weights={"itc_report": 1.0, "vis_ssl": 1.0}, generator_factory=lambda i: torch.Generator().manual_seed(i)
    )
    assert {"itc_report_loss", "vis_rot_loss", "vis_contrast_loss", "vis_recon_loss", "loss"} <= set(out)
    assert all(torch.isfinite(v).all() for v in out.values())
    # the per-micro-batch objectives were backpropagated too
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pre.heads["ssl_rotation"].parameters())


def test_backward_calls_run_without_sync_then_gradients_sync_once(tokenizer, reports):
    # under DDP: the wrapper's no_sync around every backward, one gradient average at the end
    pre = make_pretrainer(tokenizer, objectives=ITC, dropout=0.0)
    batch = make_batch(tokenizer, reports, 4)
    events = []

    @contextmanager
    def no_sync():
        events.append("enter")
        yield
        events.append("exit")

    def backward(loss):
        events.append("backward")
        loss.backward()

    cached_negatives_step(
        pre, batch, 2, weights={o: 1.0 for o in ITC}, backward=backward, no_sync=no_sync,
        sync_gradients=lambda: events.append("sync"),
    )
    # the contrastive losses (temperature and cached features), then one replay per micro-batch
    assert events == ["enter", "backward", "backward", "backward", "exit", "sync"]


def test_batch_norm_projections_are_refused(tokenizer, reports):
    # batch statistics per micro-batch are not the big batch's (loss 11.79 vs 11.81, gradients off
    # by up to 38x): refused, naming the option, before any forward or backward
    pre = make_pretrainer(tokenizer, objectives=ITC, dropout=0.0, projection_norm="batch")
    batch = make_batch(tokenizer, reports, 4)
    with pytest.raises(ValueError, match="projection_norm: 'batch'.*micro-batch"):
        cached_negatives_step(pre, batch, 2, weights={o: 1.0 for o in ITC})
    assert all(p.grad is None for p in pre.parameters())
    # frozen statistics (eval mode) depend on no other sample: allowed
    pre.eval()
    cached_negatives_step(pre, batch, 2, weights={o: 1.0 for o in ITC})
