"""The preprocessing contract: how a raw volume becomes a model input, as one serialisable dataclass.

A contract is saved with every checkpoint and builds the MONAI transforms (see
:func:`velvet.data.transforms.create_transforms`), so training, evaluation and inference can
never drift apart. It describes only the *deterministic* part of preprocessing: its output is what
the on-disk cache stores. Random augmentation belongs to the tasks.

The steps, always in this order (each optional):

1. orient to ``orientation`` (default RAS);
2. map intensities to [0, 1]: an HU window (clip ``hu_window`` then scale) or 8-bit scaling
   (0..255 -> 0..1, for already-windowed images such as M3D-Cap slices);
3. crop to the foreground (voxels above ``foreground_threshold``, in [0, 1] units);
4. resample to ``spacing`` mm (with MONAI's ``min_pixdim``/``max_pixdim`` keep-ranges);
5. pad to at least ``pad_to``;
6. pick ``depth_samples`` slices uniformly along the depth axis (index rounding, method.md 1.3);
7. bring to ``spatial_size``: area-``resize`` or centred ``pad_crop``.

This module imports nothing heavy: the CLI, the hub and checkpoint configs read contracts
without loading MONAI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["PRESETS", "PreprocessContract", "list_presets"]

CONTRACT_VERSION = 1
Intensity = Literal["hu_window", "scale_8bit", "none"]
SizeMode = Literal["resize", "pad_crop"]
_INTENSITIES = ("hu_window", "scale_8bit", "none")
_SIZE_MODES = ("resize", "pad_crop")


def _triple(value: Any, name: str, cast: type) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = (value,) * 3
    items = tuple(value)
    if len(items) != 3:
        raise ValueError(f"{name} needs 3 values (H, W, D), got {value!r}")
    try:
        out = tuple(cast(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{name} values must be numbers, got {value!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{name} values must be positive, got {value!r}")
    return out


@dataclass(frozen=True)
class PreprocessContract:
    """Deterministic preprocessing from a volume file to a ``(1, H, W, D)`` float tensor in [0, 1].

    Attributes:
        name: a label for logs and checkpoints (not part of the fingerprint).
        orientation: target axis codes (``"RAS"``).
        intensity: ``"hu_window"`` (raw Hounsfield units in), ``"scale_8bit"`` (0..255 in) or ``"none"``
            (input already in [0, 1]).
        hu_window: ``(low, high)`` HU mapped to 0 and 1, clipped; used with ``hu_window``.
        crop_foreground: crop to the bounding box of voxels above ``foreground_threshold``.
        foreground_threshold: threshold in output units ([0, 1]); 0 keeps anything above the window floor.
        foreground_margin: voxels of margin kept around the foreground box.
        spacing: target voxel size in mm, or None to keep the native grid.
        min_spacing: MONAI ``min_pixdim``: input spacings within [min, max] are kept, not resampled.
        max_spacing: MONAI ``max_pixdim``.
        pad_to: pad (symmetric, with 0) to at least this size.
        depth_samples: number of slices picked uniformly along depth, or None.
        spatial_size: final ``(H, W, D)``, or None to keep the size after the steps above.
        size_mode: how ``spatial_size`` is reached: ``"resize"`` (area interpolation, the method's
            default) or ``"pad_crop"`` (centred, keeps the spacing: CT-CLIP style).
        cache_dtype: dtype of the cached tensor (``float16`` halves disk and I/O; [0, 1] values keep
            ~3 decimal digits).
    """

    name: str = "custom"
    orientation: str = "RAS"
    intensity: Intensity = "hu_window"
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    crop_foreground: bool = True
    foreground_threshold: float = 0.0
    foreground_margin: int = 0
    spacing: tuple[float, float, float] | None = None
    min_spacing: tuple[float, float, float] | None = None
    max_spacing: tuple[float, float, float] | None = None
    pad_to: tuple[int, int, int] | None = None
    depth_samples: int | None = None
    spatial_size: tuple[int, int, int] | None = (96, 96, 96)
    size_mode: SizeMode = "resize"
    cache_dtype: Literal["float16", "float32"] = "float16"
    version: int = field(default=CONTRACT_VERSION)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise lists from JSON/YAML into tuples
        if self.intensity not in _INTENSITIES:
            raise ValueError(f"intensity must be one of {_INTENSITIES}, got {self.intensity!r}")
        if self.size_mode not in _SIZE_MODES:
            raise ValueError(f"size_mode must be one of {_SIZE_MODES}, got {self.size_mode!r}")
        if self.cache_dtype not in ("float16", "float32"):
            raise ValueError(f"cache_dtype must be 'float16' or 'float32', got {self.cache_dtype!r}")
        if len(self.orientation) != 3 or set(self.orientation.upper()) - set("RASLPI"):
            raise ValueError(f"orientation must be 3 axis codes such as 'RAS', got {self.orientation!r}")
        set_(self, "orientation", self.orientation.upper())
        low, high = (float(v) for v in self.hu_window)
        if not low < high:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window!r}")
        set_(self, "hu_window", (low, high))
        for name in ("spacing", "min_spacing", "max_spacing"):
            set_(self, name, _triple(getattr(self, name), name, float))
        for name in ("pad_to", "spatial_size"):
            set_(self, name, _triple(getattr(self, name), name, int))
        if self.depth_samples is not None and int(self.depth_samples) < 1:
            raise ValueError(f"depth_samples must be positive, got {self.depth_samples!r}")
        if self.foreground_margin < 0:
            raise ValueError(f"foreground_margin must be >= 0, got {self.foreground_margin!r}")
        if (self.min_spacing or self.max_spacing) and self.spacing is None:
            raise ValueError("min_spacing/max_spacing need a target spacing")

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 2) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessContract:
        """Build from a dict; ``{"preset": name, **overrides}`` starts from a preset.

        Raises:
            ValueError: unknown keys, an unknown preset, a newer contract version, or bad values.
        """
        data = dict(data)
        preset = data.pop("preset", None)
        base = PRESETS[_check_preset(preset)].to_dict() if preset else {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing field(s) {unknown}; known: {sorted(known)}")
        if int(data.get("version", CONTRACT_VERSION)) > CONTRACT_VERSION:
            raise ValueError(
                f"preprocessing contract version {data['version']} is newer than this velvet "
                f"understands ({CONTRACT_VERSION}); upgrade velvet"
            )
        return cls(**{**base, **data})

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike[str]) -> PreprocessContract:
        """Build from a JSON string or a JSON file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    @classmethod
    def resolve(cls, spec: str | Mapping[str, Any] | PreprocessContract) -> PreprocessContract:
        """A contract from a preset name, a JSON file path, a dict, or a contract (returned as is)."""
        if isinstance(spec, PreprocessContract):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if spec in PRESETS:
            return PRESETS[spec]
        if str(spec).endswith(".json") or os.path.isfile(spec):
            return cls.from_json(Path(spec))
        raise ValueError(
            f"unknown preprocessing preset {spec!r}; presets: {list_presets()} (or give a JSON file)"
        )

    def replace(self, **changes: Any) -> PreprocessContract:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def fingerprint(self) -> str:
        """sha256 of the fields that change the output (``name`` excluded): the cache key part."""
        payload = {k: v for k, v in self.to_dict().items() if k != "name"}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def output_range(self) -> tuple[float, float]:
        """The value range of the produced tensors."""
        return (0.0, 1.0)


def _check_preset(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {name!r}; presets: {list_presets()}")
    return name


def list_presets() -> list[str]:
    """Names of the built-in contracts."""
    return sorted(PRESETS)


def _presets() -> dict[str, PreprocessContract]:
    cube96: Sequence[int] = (96, 96, 96)
    return {
        # M3D-Cap volumes are 8-bit windowed slices (method.md 1.3): no HU window. Series under 96
        # slices (z spacing 1.0) are upsampled 2x in depth by the min_pixdim rule.
        "m3d_cap": PreprocessContract(
            name="m3d_cap",
            intensity="scale_8bit",
            spacing=(1.0, 1.0, 0.5),
            min_spacing=(1.0, 1.0, 1.0),
            crop_foreground=True,
            pad_to=cube96,
            depth_samples=96,
            spatial_size=cube96,
            size_mode="resize",
        ),
        # Raw-HU chest CT (CT-RATE): CT-CLIP's field of view (480x480x240 voxels at 0.75x0.75x1.5 mm,
        # a 360 mm cube) at 96^3, i.e. 3.75 mm isotropic, centred pad/crop, HU [-1000, 1000].
        "ct_rate": PreprocessContract(
            name="ct_rate",
            intensity="hu_window",
            hu_window=(-1000.0, 1000.0),
            crop_foreground=False,
            spacing=(3.75, 3.75, 3.75),
            spatial_size=cube96,
            size_mode="pad_crop",
        ),
        # Segmentation (SwinUNETR recipe, method.md 6.1): soft-tissue window, 1.5x1.5x2 mm, pad to
        # the 96^3 patch size; patches are sampled by the task, so no final size.
        "segmentation": PreprocessContract(
            name="segmentation",
            intensity="hu_window",
            hu_window=(-175.0, 250.0),
            crop_foreground=True,
            spacing=(1.5, 1.5, 2.0),
            pad_to=cube96,
            spatial_size=None,
        ),
    }


PRESETS: dict[str, PreprocessContract] = _presets()
