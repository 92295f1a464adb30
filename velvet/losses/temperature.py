"""The learnable, log-parameterised and clamped logit scale of the report-level CLIP loss.

This is the one learnable piece that belongs to the losses: it lives here so the model can own it
(``self.logit_scale = LogitScale()``) while every loss module stays parameter-free.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LogitScale"]


class LogitScale(nn.Module):
    """``scale = exp(clamp(log_scale, ln min_scale, ln max_scale))``, i.e. ``1 / temperature``.

    CLIP (Radford et al. 2021) learns the temperature as a log-scale; open_clip clamps the parameter
    in its train loop, velvet clamps in ``forward`` so no caller can forget. Beyond the clamp the
    gradient is zero (the scale stays at the bound until the loss pushes it back inside); the
    parameter is 0-dimensional, so the nanoGPT ``dim() >= 2`` weight-decay rule leaves it alone.

    Args:
        init_temperature: initial temperature (0.07 in VELVET-Med, i.e. scale 1 / 0.07).
        max_scale: upper bound of the scale (100, i.e. temperature 0.01).
        min_scale: lower bound of the scale (1, i.e. temperature 1).

    Raises:
        ValueError: if the bounds are not positive, ordered, or do not contain the initial scale.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0, min_scale: float = 1.0):
        super().__init__()
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        if init_temperature <= 0 or not min_scale <= 1.0 / init_temperature <= max_scale:
            raise ValueError(
                f"init_temperature {init_temperature} gives scale outside [{min_scale}, {max_scale}]"
            )
        self.log_min = math.log(min_scale)
        self.log_max = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self) -> torch.Tensor:
        """Returns: the clamped scale, a 0-dim tensor (multiply cosine similarities by it)."""
        return self.log_scale.clamp(self.log_min, self.log_max).exp()

    @property
    def temperature(self) -> float:
        """Current (clamped) temperature as a Python float, for logging."""
        return float(1.0 / self.forward().detach())

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4f}, scale_range=[{math.exp(self.log_min):g}, {math.exp(self.log_max):g}]"
