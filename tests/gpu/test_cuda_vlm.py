"""One LoRA training step of the volume-language model on CUDA in bf16, and fp32 CUDA = CPU.

Run on a GPU machine with ``python -m pytest -q -m gpu tests/gpu``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.vlm.conftest import encoder, lm_tokenizer, make_vlm  # noqa: F401  (fixtures)
from tests.vlm.test_vlm_model import _batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _to(batch, device):
    out = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out["question"] = {k: v.to(device) for k, v in batch["question"].items()}
    return out


@pytest.mark.parametrize("bridge", ["visual", "fusion"])
def test_vlm_step_bf16_on_cuda_and_fp32_matches_cpu(make_vlm, bridge):  # noqa: F811 (the fixture)
    vlm = make_vlm(bridge=bridge, visual_levels=[-3, -1]).eval()
    batch, _, _ = _batch(vlm)
    with torch.no_grad():
        cpu = vlm(batch)["loss"]
    gpu = copy.deepcopy(vlm).cuda()
    with torch.no_grad():
        torch.testing.assert_close(gpu(_to(batch, "cuda"))["loss"].cpu(), cpu, atol=1e-4, rtol=1e-4)
    gpu.train()
    params = [p for p in gpu.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = gpu(_to(batch, "cuda"))["loss"]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and loss.dtype == torch.float32  # the loss is taken in float32
    lora = [(n, p) for n, p in gpu.named_parameters() if "lora_B" in n]
    assert lora and all(float(p.abs().sum()) > 0 for _, p in lora)  # LoRA B left zero: it learned
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))
