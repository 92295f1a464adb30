"""Masked-language-modelling head (method.md 4.2): Linear, GELU, LayerNorm, Linear to the vocabulary."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLMHead"]


class MLMHead(nn.Module):
    """Token logits for MLM; the decoder is NOT tied to the word embeddings (as in the reference).

    Args:
        hidden_size: width ``E`` of the text states.
        vocab_size: number of token ids ``V`` (from the tokenizer).
        layer_norm_eps: LayerNorm epsilon (BERT's 1e-12).
    """

    def __init__(self, hidden_size: int, vocab_size: int, *, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        if hidden_size < 1 or vocab_size < 1:
            raise ValueError(f"hidden_size and vocab_size must be >= 1, got {hidden_size}, {vocab_size}")
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        for linear in (self.dense, self.decoder):
            nn.init.normal_(linear.weight, std=0.02)  # BERT's initializer_range
            nn.init.zeros_(linear.bias)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Predict token logits.

        Args:
            hidden: ``(B, L, E)`` text states.
            positions: optional ``(B, L)`` bool, True where a prediction is needed (the masked tokens).
                Only those rows go through the ``E x V`` decoder, which at ~15% masking saves most of
                the head's time and memory.

        Returns:
            ``(B, L, V)`` logits, or ``(M, V)`` for the ``M`` selected positions (row-major order).
        """
        if positions is not None:
            hidden = hidden[positions]  # (M, E)
        return self.decoder(self.norm(self.act(self.dense(hidden))))
