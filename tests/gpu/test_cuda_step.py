"""One training step of every objective on CUDA: bf16 runs, fp32 matches the CPU (skipped without CUDA).

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

# the objectives of each pretraining recipe (recipes/pretrain/*.yaml), on the tiny model
RECIPE_OBJECTIVES = {
    "full_btsv": tuple(OBJECTIVES),
    "allitc": ("itc_report", "itc_sentence", "itc_word"),
    "allitc_visssl": ("itc_report", "itc_sentence", "itc_word", "vis_ssl"),
    "allitc_txtssl": ("itc_report", "itc_sentence", "itc_word", "txt_mlm"),
    "allitc_mmssl": ("itc_report", "itc_sentence", "itc_word", "itm", "mm_mlm"),
    "topitc": ("itc_report",),
}
DETERMINISTIC = ("itc_report_loss", "itc_sentence_loss", "itc_word_loss")


def _to(batch, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _pretrainer(tokenizer, objectives):
    return make_pretrainer(tokenizer, objectives=objectives, dropout=0.0,
                           vision={"preset": "swin-tiny", "img_size": [64, 64, 64]})


@pytest.mark.parametrize("recipe", sorted(RECIPE_OBJECTIVES))
def test_bf16_step_runs_on_cuda_without_leaving_the_device(recipe, tokenizer, reports):
    pre = _pretrainer(tokenizer, RECIPE_OBJECTIVES[recipe]).cuda()
    batch = _to(make_batch(tokenizer, reports, 4, size=64), "cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = pre(batch, generator)
    loss = sum(v for k, v in out.items() if k.endswith("_loss"))
    loss.backward()
    assert torch.isfinite(loss).item()
    assert all(p.grad is None or p.grad.is_cuda for p in pre.parameters())


@pytest.mark.parametrize("recipe", sorted(RECIPE_OBJECTIVES))
def test_fp32_cuda_matches_cpu_and_is_a_function_of_the_seed(recipe, tokenizer, reports):
    pre = _pretrainer(tokenizer, RECIPE_OBJECTIVES[recipe])
    batch = make_batch(tokenizer, reports, 4, size=64)
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
