"""The vision-SSL "local" view: a random sub-volume of each global view, resized back.

The reference crops a random 96^3 block from the volume before its final resize (method.md 1.3).
velvet caches only the final global view, so the local view is a random axis-aligned box covering
``scale`` of each axis, resampled to the full size with one batched ``grid_sample``: a zoomed-in
region at the same input size, as the reference's crop is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_local_view"]


def random_local_view(
    image: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.5, 1.0),
) -> torch.Tensor:
    """A random zoomed-in crop of each volume, at the input size.

    Args:
        image: ``(B, C, H, W, D)`` volumes.
        generator: random source (None = the global RNG of ``image``'s device); the draws are made
            on the generator's device and the crop on ``image``'s.
        scale: range of the crop edge as a fraction of each axis, drawn per sample and axis.

    Returns:
        ``(B, C, H, W, D)`` crops, trilinearly resampled.
    """
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    b = image.shape[0]
    device = generator.device if generator is not None else image.device
    size = scale[0] + (scale[1] - scale[0]) * torch.rand(b, 3, generator=generator, device=device)  # (B, 3) edge fractions
    centre = (torch.rand(b, 3, generator=generator, device=device) * 2 - 1) * (1 - size)  # keep the box inside [-1, 1]
    theta = torch.zeros(b, 3, 4, device=device)
    # affine_grid's output coordinates are ordered (x, y, z) = (D, W, H) for a (B, C, H, W, D) input
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 2, 2] = size[:, 2], size[:, 1], size[:, 0]
    theta[:, :, 3] = centre.flip(1)
    grid = F.affine_grid(theta.to(image), list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
