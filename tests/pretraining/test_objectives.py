"""The composed objectives on the tiny model: every term, every gradient, determinism."""

from __future__ import annotations

import pytest
import torch

from tests.pretraining.helpers import make_batch, make_pretrainer
from velvet.pretraining.objectives import LOSS_TERMS
from velvet.pretraining.views import random_local_view


def test_every_objective_gives_its_terms_and_every_parameter_a_gradient(tokenizer, reports):
    pre = make_pretrainer(tokenizer, vision={"preset": "swin-tiny", "img_size": [64, 64, 64]})
    batch = make_batch(tokenizer, reports, 3, size=64)  # 64^3: a 2^3 top map, so cross-attention has 8 keys
    out = pre(batch, torch.Generator().manual_seed(0))
    expected = {t for terms in LOSS_TERMS.values() for t in terms}
    assert expected <= set(out)
    loss = sum(out[t] for t in expected)
    assert torch.isfinite(loss)
    loss.backward()
    no_grad = [n for n, p in pre.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    assert out["image_embedding"].shape == (3, 32) and not out["image_embedding"].requires_grad


def test_same_generator_same_losses_different_generator_differs(tokenizer, reports):
    pre = make_pretrainer(tokenizer, objectives=["itc_report", "txt_mlm", "vis_ssl"], dropout=0.0)
    batch = make_batch(tokenizer, reports, 4)
    a = pre(batch, torch.Generator().manual_seed(1))
    b = pre(batch, torch.Generator().manual_seed(1))
    c = pre(batch, torch.Generator().manual_seed(2))
    for key in ("itc_report_loss", "txt_mlm_loss", "vis_recon_loss"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["txt_mlm_loss"], c["txt_mlm_loss"])


def test_only_enabled_objectives_run(tokenizer, reports):
    pre = make_pretrainer(tokenizer, objectives=["itc_report"])
    out = pre(make_batch(tokenizer, reports, 2))
    assert {k for k in out if k.endswith("_loss")} == {"itc_report_loss"}
    # the model holds the report projections (and the adapter its fusion layers need); no objective heads
    assert set(pre.model.heads) == {"image_report", "text_report", "visual_adapter"}
    assert set(pre.heads) == set()


def test_itm_needs_report_level_itc(tokenizer):
    with pytest.raises(ValueError, match=r"'itm' needs \['itc_report'\]"):
        make_pretrainer(tokenizer, objectives=["itm"])


def test_local_view_crops_inside_the_volume():
    # a volume whose value is its H coordinate: a crop shows a sub-range, resampled to full size
    ramp = torch.linspace(0, 1, 16).view(1, 1, 16, 1, 1).expand(2, 1, 16, 8, 8).contiguous()
    crop = random_local_view(ramp, torch.Generator().manual_seed(0), scale=(0.5, 0.5))
    assert crop.shape == ramp.shape
    span = crop[:, 0, :, 0, 0]
    assert (span.diff(dim=1) >= -1e-6).all()  # orientation kept
    assert ((span.max(1).values - span.min(1).values) < 0.6).all()  # half the axis
    full = random_local_view(ramp, torch.Generator().manual_seed(0), scale=(1.0, 1.0))
    assert torch.allclose(full, ramp, atol=1e-5)  # scale 1 is the identity
