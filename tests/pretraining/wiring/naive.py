"""Naive reference formulas for the pretraining terms, written from the method, not from velvet.

Nothing here calls a velvet loss class or loss function: each term is spelled out with loops over
samples/pairs, from the raw outputs of the model (encoders, projection heads, fusion layers) and
the objectives' own heads. The wiring tests compare :class:`VelvetPretrainer`'s terms with these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

IGNORE = -100
TEXT_KEYS = ("input_ids", "token_type_ids", "attention_mask", "sentence_ids", "sentence_token_mask")


def _log_softmax(row: torch.Tensor) -> torch.Tensor:
    row = row.double()
    return row - torch.logsumexp(row, dim=0)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.double() / x.double().norm(dim=-1, keepdim=True)


def smoothed_ce(row: torch.Tensor, target: int, eps: float) -> torch.Tensor:
    """Cross-entropy of one logit row against ``(1 - eps) * onehot(target) + eps / N``."""
    logp = _log_softmax(row)
    return -(1 - eps) * logp[target] - eps * logp.mean()


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: float, eps: float) -> float:
    """Symmetric CLIP loss with label smoothing over L2-normalised ``(B, E)`` embeddings."""
    v, t = _unit(image), _unit(text)
    b = v.shape[0]
    i2t = [smoothed_ce(torch.stack([scale * v[i] @ t[c] for c in range(b)]), i, eps) for i in range(b)]
    t2i = [smoothed_ce(torch.stack([scale * t[i] @ v[c] for c in range(b)]), i, eps) for i in range(b)]
    return float(0.5 * (sum(i2t) / b + sum(t2i) / b))


def gloria_score(
    regions: torch.Tensor, words: torch.Tensor, t1: float, t2: float, t3: float, agg: str, attention: str = "gloria"
) -> float:
    """GLoRIA score of one image (``(R, E)`` regions) and one text (``(K, E)`` valid tokens only)."""
    v, w = _unit(regions), _unit(words)
    k_count = w.shape[0]
    dots = w @ v.T  # (K, R)
    # a_kr: softmax over the tokens k, for each region r (GLoRIA); the cosine itself ("regions")
    attn = torch.softmax(dots, dim=0) if attention == "gloria" else dots
    alpha = torch.softmax(t1 * attn, dim=1)  # softmax over the regions r, for each token k
    terms = []
    for k in range(k_count):
        context = (alpha[k][:, None] * v).sum(0)
        cos = (w[k] @ context) / context.norm()
        terms.append(torch.exp(t2 * cos))
    total = sum(terms)
    if agg == "mean":
        total = total / k_count
    return float(t3 * torch.log(total))


def local_loss(
    regions: torch.Tensor,
    units: torch.Tensor,
    mask: torch.Tensor,
    temps: Sequence[float],
    agg: str,
    attention: str = "gloria",
) -> float:
    """Symmetric cross-entropy over the ``B x B`` GLoRIA scores (no label smoothing)."""
    b = regions.shape[0]
    t1, t2, t3 = temps
    s = torch.tensor(
        [
            [gloria_score(regions[j], units[i][mask[i].bool()], t1, t2, t3, agg, attention) for i in range(b)]
            for j in range(b)
        ],
        dtype=torch.float64,
    )  # s[j, i]: image j, text i
    i2t = sum(-_log_softmax(s[j])[j] for j in range(b)) / b
    t2i = sum(-_log_softmax(s[:, i])[i] for i in range(b)) / b
    return float(0.5 * (i2t + t2i))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """SimCLR NT-Xent over the 2B views; a view is compared with every OTHER view."""
    z = _unit(torch.cat([z1, z2]))
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for a in range(n):
        pos = (a + b) % n
        denom = sum(torch.exp(z[a] @ z[c] / tau) for c in range(n) if c != a)
        total += float(-(z[a] @ z[pos] / tau - torch.log(denom)))
    return total / n


def ce(logits: torch.Tensor, targets: Sequence[int]) -> float:
    """Mean cross-entropy, one row per target."""
    return float(sum(-_log_softmax(logits[i])[int(t)] for i, t in enumerate(targets)) / len(targets))


def masked_l1(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Per-sample mean |recon - target| over the masked voxels (all voxels if none), averaged over samples."""
    values = []
    for i in range(recon.shape[0]):
        err = (recon[i].double() - target[i].double()).abs()
        m = mask[i].bool()
        values.append(err[m].mean() if m.any() else err.mean())
    return float(sum(values) / len(values))


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean CE over positions with a label (``(B, L, V)`` logits, ``(B, L)`` labels, -100 ignored)."""
    terms = []
    for b in range(labels.shape[0]):
        for pos in range(labels.shape[1]):
            if int(labels[b, pos]) != IGNORE:
                terms.append(-_log_softmax(logits[b, pos])[int(labels[b, pos])])
    return float(sum(terms) / len(terms))


# ---------------------------------------------------------------------- model raw outputs


def flatten_map(feature_map: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w, d)`` -> ``(B, h*w*d, C)`` (voxels in row-major order)."""
    b, c = feature_map.shape[:2]
    return feature_map.reshape(b, c, -1).transpose(1, 2)


def visual_tokens(model: Any, image: torch.Tensor) -> torch.Tensor:
    """The fusion memory of the volumes: the top vision map's voxels through the visual adapter."""
    return model.heads["visual_adapter"](flatten_map(model.vision(image)["maps"][-1]))


def text_states(model: Any, text: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Last text-only layer's states ``(B, L, E)`` of (possibly masked) text."""
    return model.text.forward_text(*(text[k] for k in TEXT_KEYS), output_all=True)["last_hidden_state"]


def row(text: Mapping[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: text[k][i : i + 1] for k in TEXT_KEYS}


def itm_pair_logits(
    model: Any,
    head: Any,
    text: Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    i_text: int,
    visual: torch.Tensor,
    i_image: int,
) -> torch.Tensor:
    """Match logits ``(2,)`` of one (image, text) pair, fused on its own (batch of one)."""
    fused = model.fuse(row(text, i_text), hidden[i_text : i_text + 1], visual[i_image : i_image + 1])
    return head(fused[0, 0])


def itm_loss(pairs: Sequence[tuple[torch.Tensor, int]]) -> float:
    """Mean CE of ``(logits (2,), label)`` pairs."""
    return float(sum(-_log_softmax(lg)[lab] for lg, lab in pairs) / len(pairs))


def softmax_without(row_logits: Sequence[float], positive: int) -> list[float]:
    """The ALBEF sampling distribution: softmax of the row with the positive column left out."""
    top = max(x for c, x in enumerate(row_logits) if c != positive)
    weights = [0.0 if c == positive else math.exp(x - top) for c, x in enumerate(row_logits)]
    total = sum(weights)
    return [w / total for w in weights]


# ---------------------------------------------------------------------- test-model adjustments


class Fixed(nn.Module):
    """A projection head that ignores its input and returns fixed embeddings."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, x, mask=None):
        return self.value.clone()


def amplify_cross_attention(pre, factor: float = 30.0):
    """Make the fusion layers listen to the volume: at initialisation (std 0.02 weights) the visual
    tokens move the MLM/ITM logits by ~1e-5 only, too little to tell a wiring mistake from rounding."""
    with torch.no_grad():
        for name, p in pre.model.text.named_parameters():
            if "crossattention" in name and name.endswith(("value.weight", "output.dense.weight")):
                p.mul_(factor)
    return pre


def amplify_heads(pre, factor: float = 20.0):
    """Sharpen the objectives' classifiers (rotation, MLM decoders, ITM): at initialisation their
    logits are nearly uniform, so a wrong label or position would move a loss by rounding only."""
    with torch.no_grad():
        for name in ("ssl_rotation", "txt_mlm", "mm_mlm", "itm"):
            if name in pre.heads:
                layer = pre.heads[name]
                layer = getattr(layer, "fc", None) or getattr(layer, "decoder", None) or layer
                layer.weight.mul_(factor)
    return pre
