"""ClipLoss and LogitScale: naive loop reference, a hand-computed 2x2 case, properties."""

from __future__ import annotations

import math

import pytest
import torch

from velvet.losses.contrastive import ClipLoss
from velvet.losses.temperature import LogitScale

KEY = "itc_report_loss"


def naive_clip(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """CLIP loss with label smoothing, one pair and one row at a time."""
    b = image.shape[0]
    img = [image[i] / image[i].norm() for i in range(b)]
    txt = [text[i] / text[i].norm() for i in range(b)]

    def ce_smoothed(row: list[torch.Tensor], target: int) -> torch.Tensor:
        lse = torch.log(sum(torch.exp(x) for x in row))
        nll = [lse - x for x in row]
        return (1 - eps) * nll[target] + eps * sum(nll) / len(nll)

    i2t = sum(ce_smoothed([scale * torch.dot(img[i], txt[j]) for j in range(b)], i) for i in range(b)) / b
    t2i = sum(ce_smoothed([scale * torch.dot(txt[i], img[j]) for j in range(b)], i) for i in range(b)) / b
    return 0.5 * (i2t + t2i)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_naive_forward_and_grad(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    text = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(3.7, dtype=torch.float64, requires_grad=True)
    loss = ClipLoss(label_smoothing=eps)(image, text, scale)[KEY]
    ref = naive_clip(image, text, scale, eps)
    assert torch.allclose(loss, ref, atol=1e-10)
    grads = torch.autograd.grad(loss, [image, text, scale])
    ref_grads = torch.autograd.grad(ref, [image, text, scale])
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-10)


def test_hand_computed_2x2() -> None:
    # image = [e1, e2], text = [e1, (0.6, 0.8)], scale 2 -> logits_per_image = [[2, 1.2], [0, 1.6]]
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)

    def ce(row: list[float], target: int, eps: float = 0.1) -> float:
        lse = math.log(sum(math.exp(x) for x in row))
        return (1 - eps) * (lse - row[target]) + eps * sum(lse - x for x in row) / len(row)

    # i2t rows: [2, 1.2] -> 0, [0, 1.6] -> 1; t2i rows (transpose): [2, 0] -> 0, [1.2, 1.6] -> 1
    i2t = (ce([2.0, 1.2], 0) + ce([0.0, 1.6], 1)) / 2
    t2i = (ce([2.0, 0.0], 0) + ce([1.2, 1.6], 1)) / 2
    expected = 0.5 * (i2t + t2i)
    out = ClipLoss()(image, text, torch.tensor(2.0, dtype=torch.float64), return_logits=True)
    assert out[KEY].item() == pytest.approx(expected, abs=1e-12)
    assert torch.allclose(
        out["logits_per_image"], torch.tensor([[2.0, 1.2], [0.0, 1.6]], dtype=torch.float64)
    )
    assert torch.allclose(out["logits_per_text"], torch.tensor([[2.0, 0.0], [1.2, 1.6]], dtype=torch.float64))


def test_symmetric_in_image_and_text() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    scale = torch.tensor(10.0)
    loss = ClipLoss()
    assert torch.allclose(loss(a, b, scale)[KEY], loss(b, a, scale)[KEY], atol=1e-6)


def test_perfect_alignment_is_low_and_smoothing_sets_the_floor() -> None:
    eye = torch.eye(4)
    scale = torch.tensor(100.0)
    shuffled = eye[torch.tensor([1, 2, 3, 0])]
    assert ClipLoss(label_smoothing=0.0)(eye, eye, scale)[KEY] < 1e-6
    assert ClipLoss(label_smoothing=0.0)(eye, shuffled, scale)[KEY] > 50
    # with smoothing eps the loss is (1 - eps) * nll_target + eps * mean_k nll_k;
    # here nll_target ~ 0 and the 3 other nll ~ 100, so the floor is eps * 3 * 100 / 4
    smoothed = ClipLoss(label_smoothing=0.1)(eye, eye, scale)[KEY]
    assert smoothed.item() == pytest.approx(0.1 * 300 / 4, rel=1e-4)


def test_smoothing_is_the_expected_mix() -> None:
    g = torch.Generator().manual_seed(2)
    image, text = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    scale = torch.tensor(5.0)
    plain = ClipLoss(label_smoothing=0.0)(image, text, scale, return_logits=True)
    logits = [plain["logits_per_image"], plain["logits_per_text"]]
    uniform = 0.5 * sum(-torch.log_softmax(x, dim=1).mean() for x in logits)
    smoothed = ClipLoss(label_smoothing=0.1)(image, text, scale)[KEY]
    assert torch.allclose(smoothed, 0.9 * plain[KEY] + 0.1 * uniform, atol=1e-6)


def test_invariant_to_input_norm() -> None:
    g = torch.Generator().manual_seed(3)
    image, text = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    scale = torch.tensor(7.0)
    assert torch.allclose(ClipLoss()(image, text, scale)[KEY], ClipLoss()(5 * image, 0.1 * text, scale)[KEY])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        ClipLoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"\(B, E\)"):
        ClipLoss()(torch.randn(3, 4), torch.randn(2, 4), torch.tensor(1.0))
    with pytest.raises(ValueError, match="scalar"):
        ClipLoss()(torch.randn(3, 4), torch.randn(3, 4), torch.ones(2))


def test_logit_scale_init_clamp_and_grad() -> None:
    module = LogitScale()
    assert module().item() == pytest.approx(1 / 0.07)
    assert module.temperature == pytest.approx(0.07)
    assert [p.shape for p in module.parameters()] == [torch.Size([])]
    module().backward()
    assert module.log_scale.grad.item() == pytest.approx(1 / 0.07)  # d exp(s) / ds = exp(s)
    with torch.no_grad():
        module.log_scale.fill_(10.0)
    assert module().item() == pytest.approx(100.0)
    with torch.no_grad():
        module.log_scale.fill_(-3.0)
    assert module().item() == pytest.approx(1.0)
    module.log_scale.grad = None
    module().backward()
    assert module.log_scale.grad.item() == 0.0  # clamped: no gradient beyond the bound


def test_logit_scale_bad_arguments() -> None:
    with pytest.raises(ValueError, match="min_scale"):
        LogitScale(min_scale=10.0, max_scale=5.0)
    with pytest.raises(ValueError, match="outside"):
        LogitScale(init_temperature=0.001)
