"""One training step of every pretraining recipe's tiny variant on CUDA: bf16 runs, fp32 matches the CPU.

Run on a GPU machine with ``python -m pytest -q -m gpu tests/gpu``. Random draws (MLM masks, SSL
views, hard negatives) come from a generator on the batch's device, so CPU and CUDA draw different
numbers for the same seed: the image-text contrastive terms (no randomness) are compared across
devices, and every term is checked to be a function of the seed on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from tests.pretraining.helpers import make_batch, make_pretrainer
from velvet.pretraining.registry import OBJECTIVES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SWIN = {"vision": {"preset": "swin-tiny", "img_size": [64, 64, 64]}}
# each pretraining recipe (recipes/pretrain/*.yaml) as a tiny variant: objectives, model overrides, input
RECIPES = {
    "full_btsv": (tuple(OBJECTIVES), SWIN, (64, 64, 64)),
    "allitc": (("itc_report", "itc_sentence", "itc_word"), SWIN, (64, 64, 64)),
    "allitc_visssl": (("itc_report", "itc_sentence", "itc_word", "vis_ssl"), SWIN, (64, 64, 64)),
    "allitc_txtssl": (("itc_report", "itc_sentence", "itc_word", "txt_mlm"), SWIN, (64, 64, 64)),
    "allitc_mmssl": (("itc_report", "itc_sentence", "itc_word", "itm", "mm_mlm"), SWIN, (64, 64, 64)),
    "topitc": (("itc_report",), SWIN, (64, 64, 64)),
    "demo": (("itc_report",), {"projection_norm": "batch"}, (32, 32, 32)),
    "vit3d_clip": (("itc_report",), {"vision": {"preset": "vit3d-tiny"}}, (64, 64, 16)),
}
DETERMINISTIC = ("itc_report_loss", "itc_sentence_loss", "itc_word_loss")


def _to(batch, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _setup(recipe, tokenizer, reports):
    objectives, overrides, shape = RECIPES[recipe]
    pre = make_pretrainer(tokenizer, objectives=objectives, dropout=0.0, **overrides)
    batch = make_batch(tokenizer, reports, 4)
    batch["image"] = torch.rand(4, 1, *shape, generator=torch.Generator().manual_seed(0))
    return pre, batch


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_bf16_step_runs_on_cuda_without_leaving_the_device(recipe, tokenizer, reports):
    pre, batch = _setup(recipe, tokenizer, reports)
    pre, batch = pre.cuda(), _to(batch, "cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = pre(batch, generator)
    loss = sum(v for k, v in out.items() if k.endswith("_loss"))
    loss.backward()
    assert torch.isfinite(loss).item()
    assert all(p.grad is None or p.grad.is_cuda for p in pre.parameters())


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_fp32_cuda_matches_cpu_and_is_a_function_of_the_seed(recipe, tokenizer, reports):
    pre, batch = _setup(recipe, tokenizer, reports)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu = pre(batch, torch.Generator().manual_seed(0))
    pre = pre.cuda()
    gpu_batch = _to(batch, "cuda")
    a = pre(gpu_batch, torch.Generator(device="cuda").manual_seed(0))
    b = pre(gpu_batch, torch.Generator(device="cuda").manual_seed(0))
    for key in DETERMINISTIC:
        if key in cpu:
            assert a[key].item() == pytest.approx(cpu[key].item(), rel=1e-4, abs=1e-5), key
    for key in a:
        if key.endswith("_loss"):
            assert torch.equal(a[key], b[key]), key
