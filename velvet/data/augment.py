"""Train-time augmentation from the recipe: MONAI dictionary transforms (``Rand*d``) by name.

A recipe lists transforms as ``class_path`` / ``init_args`` pairs, as LightningCLI writes classes::

    augment:
      - class_path: RandFlipd                      # or monai.transforms.RandFlipd
        init_args: {spatial_axis: [0], prob: 0.5}
      - class_path: RandScaleIntensityd
        init_args: {factors: 0.1, prob: 0.5}

``keys`` default to the volume keys a sample has (``image``, and ``label_map`` for segmentation:
spatial transforms move both). Each sample draws its own seed from the torch RNG of the process
that loads it (DataLoader workers are seeded by Lightning's ``seed_everything``), so runs repeat;
a resume in the middle of an epoch does not replay the same augmentations.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["Augmentation", "build_transform"]

# keys a spatial transform must move together; intensity transforms take only the image
VOLUME_KEYS = ("image", "label_map")


def build_transform(spec: Mapping[str, Any] | str, keys: Sequence[str]) -> Any:
    """One MONAI dictionary transform from ``{"class_path": name, "init_args": {...}}`` (or a bare name).

    Raises:
        ValueError: an unknown class, a transform that is not a dictionary transform, or bad arguments.
    """
    from monai.transforms import MapTransform

    if isinstance(spec, str):
        spec = {"class_path": spec}
    unknown = sorted(set(spec) - {"class_path", "init_args"})
    if unknown or "class_path" not in spec:
        raise ValueError(f"an augmentation is {{class_path: ..., init_args: {{...}}}}, got {dict(spec)}")
    path = str(spec["class_path"])
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module or "monai.transforms"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"augmentation {path!r}: no such transform ({err})") from err
    if not (isinstance(cls, type) and issubclass(cls, MapTransform)):
        raise ValueError(f"augmentation {path!r} is not a MONAI dictionary transform (use the '...d' variant)")
    args = {"keys": list(keys), "allow_missing_keys": True, **dict(spec.get("init_args") or {})}
    try:
        return cls(**args)
    except TypeError as err:
        raise ValueError(f"augmentation {path!r}: {err}") from err


class Augmentation:
    """A MONAI ``Compose`` of recipe transforms, applied to one sample dict.

    Args:
        specs: the recipe's list (see the module docstring).
        keys: default ``keys`` of each transform.
    """

    def __init__(self, specs: Sequence[Mapping[str, Any] | str], keys: Sequence[str] = VOLUME_KEYS) -> None:
        from monai.transforms import Compose

        self.specs = [dict(s) if isinstance(s, Mapping) else s for s in specs]
        self.compose = Compose([build_transform(s, keys) for s in specs])

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        # a seed per sample from this process's torch RNG: repeatable runs, independent samples
        self.compose.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        out = self.compose({k: v for k, v in sample.items()})
        for key in VOLUME_KEYS:  # MONAI returns MetaTensors; the batch holds plain tensors
            if key in out and isinstance(out[key], torch.Tensor):
                out[key] = out[key].as_tensor() if hasattr(out[key], "as_tensor") else out[key]
        if "label_map" in out:
            out["label_map"] = out["label_map"].long()
        if "image" in out:
            out["image"] = out["image"].float().contiguous()
        return out

    def __repr__(self) -> str:
        return f"Augmentation({self.specs})"
