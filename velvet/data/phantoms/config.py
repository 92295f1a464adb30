"""The phantom generator's configuration: everything that determines the written files."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["GENERATOR_VERSION", "PhantomConfig"]

# Bump whenever the same config would produce different files (new anatomy, templates, RNG use):
# a folder written by another version is then refused instead of silently mixed.
GENERATOR_VERSION = 1

_DTYPES = ("int16", "int32", "float32")


@dataclass(frozen=True)
class PhantomConfig:
    """How many phantoms, on which grid, with which seed.

    Case ``i`` depends only on ``(seed, i)`` (and the grid), so any subset of cases can be
    generated in any order, by any number of workers, with identical results.

    Attributes:
        n_cases: number of cases; ids are ``phantom_00000`` ... .
        seed: non-negative base seed.
        shape: ``(H, W, D)`` voxels (RAS axes, slices last).
        spacing: voxel size in mm along the three axes. The torso is ~330 x 230 mm in-plane
            and fills z, so the field of view ``shape * spacing`` should be about 380 x 380 x 300 mm.
        n_val: cases in the ``val`` split (after the test cases).
        n_test: cases in the ``test`` split (the first ``n_test`` ids).
        dtype: on-disk volume dtype (HU values; int16 like scanners write).
        compress: write ``.nii.gz`` (else ``.nii``).
        noise_hu: white-noise standard deviation in HU (typical CT: 10-20).
    """

    n_cases: int = 200
    seed: int = 0
    shape: tuple[int, int, int] = (96, 96, 64)
    spacing: tuple[float, float, float] = (4.0, 4.0, 5.0)
    n_val: int = 50
    n_test: int = 100
    dtype: Literal["int16", "int32", "float32"] = "int16"
    compress: bool = True
    noise_hu: float = 12.0

    def __post_init__(self) -> None:
        # accept lists (YAML, JSON) and normalise, so equal configs compare and serialise equal
        object.__setattr__(self, "shape", _triple(self.shape, "shape", int))
        object.__setattr__(self, "spacing", _triple(self.spacing, "spacing", float))
        if any(n < 1 for n in self.shape):
            raise ValueError(f"shape must be three positive voxel counts, got {self.shape}")
        if not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"spacing must be three positive numbers (mm), got {self.spacing}")
        for name in ("n_cases", "seed", "n_val", "n_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.n_cases < 1:
            raise ValueError("n_cases must be at least 1")
        if self.n_val + self.n_test > self.n_cases:
            raise ValueError(
                f"n_val + n_test ({self.n_val} + {self.n_test}) must not exceed n_cases ({self.n_cases})"
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if not (math.isfinite(self.noise_hu) and self.noise_hu >= 0):
            raise ValueError(f"noise_hu must be a non-negative number, got {self.noise_hu!r}")

    @property
    def n_train(self) -> int:
        """Cases in the ``train`` split."""
        return self.n_cases - self.n_val - self.n_test

    def case_id(self, index: int) -> str:
        """The id of case ``index``."""
        return f"phantom_{index:05d}"

    def split_of(self, index: int) -> Literal["train", "val", "test"]:
        """The split of case ``index``: test first, then val, then train, so that growing
        ``n_cases`` keeps the evaluation cases."""
        if not 0 <= index < self.n_cases:
            raise IndexError(f"case index {index} out of range [0, {self.n_cases})")
        if index < self.n_test:
            return "test"
        return "val" if index < self.n_test + self.n_val else "train"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _triple(value: Any, name: str, kind: type) -> tuple[Any, Any, Any]:
    try:
        items = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three numbers, got {value!r}") from None
    if len(items) != 3:
        raise ValueError(f"{name} must be three numbers, got {value!r}")
    if kind is int and any(float(v) != i for v, i in zip(value, items, strict=True)):
        raise ValueError(f"{name} must be whole voxel counts, got {value!r}")
    return items  # type: ignore[return-value]
