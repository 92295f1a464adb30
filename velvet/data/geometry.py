"""The geometry contract of paired volumes: a label map (or any volume paired with an image) must lie
on the image's voxel grid, in world coordinates, or the pair is refused.

Two headers describe the same grid when, after matching each image axis with the label axis that
runs along it (a label may store its axes in another order or direction: the grid is the same set
of voxel centres), they agree within :class:`GridTolerance` in

- shape,
- direction cosines (each unit axis within 1e-3),
- voxel size (1e-3 relative),
- origin (the world position of the image's first voxel, within 0.1 voxel).

:func:`check_same_grid` raises a :class:`GeometryMismatchError` naming both files and each
difference in words ("origin differs by 30.0 mm in x"); :func:`resample_nearest` then puts the
label's voxels on the image's grid by nearest neighbour in world coordinates, so both carry the
image's affine from there on. :func:`align_to_image` does both, or, with ``mode="use_image"``,
takes the label's voxels as they are on the image's grid (for labels whose header is known to be
wrong: an explicit, per-case choice, the manifest's ``label_geometry`` column).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from velvet.data.errors import VolumeShapeError

__all__ = [
    "LABEL_GEOMETRY_MODES",
    "GeometryMismatchError",
    "GridTolerance",
    "align_to_image",
    "check_same_grid",
    "grid_differences",
    "resample_nearest",
]

LabelGeometry = Literal["check", "use_image"]
LABEL_GEOMETRY_MODES: tuple[str, ...] = ("check", "use_image")
_WORLD_AXES = "xyz"  # RAS+ world axes (velvet.data.io affines)


class GeometryMismatchError(VolumeShapeError):
    """A paired volume (label map) whose header puts it on another grid than its image's."""


@dataclass(frozen=True)
class GridTolerance:
    """How far two grids may differ and still count as the same.

    Attributes:
        spacing: relative voxel-size difference per axis.
        direction: largest difference of a unit direction cosine vector.
        origin: largest origin offset, in voxels of the image along each of its axes.
    """

    spacing: float = 1e-3
    direction: float = 1e-3
    origin: float = 0.1


def _split(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit direction columns and voxel sizes of an affine."""
    linear = np.asarray(affine, np.float64)[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    return linear / np.where(sizes > 0, sizes, 1.0), sizes


def _axis_match(ref_units: np.ndarray, units: np.ndarray) -> tuple[list[int], list[float]] | None:
    """For each reference axis, the other grid's axis running along it and +1/-1; None if oblique."""
    dots = ref_units.T @ units
    perm = [int(np.argmax(np.abs(dots[j]))) for j in range(3)]
    if sorted(perm) != [0, 1, 2]:
        return None
    return perm, [1.0 if dots[j, perm[j]] >= 0 else -1.0 for j in range(3)]


def _codes(affine: np.ndarray) -> str:
    from nibabel.orientations import aff2axcodes

    return "".join(str(c) for c in aff2axcodes(np.asarray(affine, np.float64)))


def _mm(values: Sequence[float] | np.ndarray) -> str:
    return " x ".join(f"{v:.4g}" for v in values) + " mm"


def _world_offsets(delta: np.ndarray) -> str:
    """``"30.0 mm in x"`` / ``"12.0 mm in x and -5.0 mm in z"`` for a world (RAS) offset."""
    big = [i for i in range(3) if abs(delta[i]) >= max(1e-3, 1e-3 * float(np.abs(delta).max()))]
    parts = [f"{delta[i]:+.1f} mm in {_WORLD_AXES[i]}".lstrip("+") for i in big] or ["0.0 mm"]
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def _mirrored_axes(ref_units: np.ndarray, perm: list[int], signs: list[float]) -> str:
    names = [_WORLD_AXES[int(np.argmax(np.abs(ref_units[:, j])))] for j in range(3) if signs[j] < 0]
    return " and ".join(names)


def grid_differences(
    ref_affine: np.ndarray,
    ref_shape: Sequence[int],
    affine: np.ndarray,
    shape: Sequence[int],
    *,
    tolerance: GridTolerance | None = None,
) -> list[str]:
    """How a grid differs from a reference grid, in words; empty when they are the same grid.

    Args:
        ref_affine, ref_shape: the reference (image) grid: voxel -> RAS mm, and its shape.
        affine, shape: the other (label) grid.
        tolerance: see :class:`GridTolerance`.

    Returns:
        One phrase per difference, e.g. ``"origin differs by 30.0 mm in x (10.0 voxels)"``.
    """
    tol = tolerance or GridTolerance()
    ref_units, ref_sizes = _split(ref_affine)
    units, sizes = _split(affine)
    ref_shape = tuple(int(s) for s in ref_shape)
    shape = tuple(int(s) for s in shape)
    match = _axis_match(ref_units, units)
    if match is None:
        return [
            f"orientation {_codes(affine)} is oblique to the image's {_codes(ref_affine)} "
            "(no axis of one runs along an axis of the other)"
        ]
    perm, signs = match
    out: list[str] = []
    # direction cosines (after matching axes)
    deviation = max(float(np.linalg.norm(ref_units[:, j] - signs[j] * units[:, perm[j]])) for j in range(3))
    if deviation > tol.direction:
        angle = math.degrees(2 * math.asin(min(deviation / 2, 1.0)))
        out.append(f"direction cosines differ by up to {deviation:.3g} ({angle:.2f} degrees)")
    # shape, in the image's axis order
    matched_shape = tuple(shape[perm[j]] for j in range(3))
    if matched_shape != ref_shape:
        out.append(f"label map shape {shape} does not match the volume's {ref_shape}")
    # voxel size
    matched_sizes = np.array([sizes[perm[j]] for j in range(3)])
    rel = np.abs(matched_sizes - ref_sizes) / np.maximum(ref_sizes, 1e-12)
    if np.any(rel > tol.spacing):
        ratio = matched_sizes / np.maximum(ref_sizes, 1e-12)
        factor = f" ({ratio[0]:.3g}x)" if np.allclose(ratio, ratio[0], rtol=1e-3) else ""
        out.append(f"voxel size {_mm(sizes)} differs from the image's {_mm(ref_sizes)}{factor}")
    # origin: where the label puts the voxel that the image calls (0, 0, 0)
    corner = np.zeros(3)
    for j in range(3):
        corner[perm[j]] = 0 if signs[j] > 0 else shape[perm[j]] - 1
    delta = (np.asarray(affine, np.float64) @ [*corner, 1.0])[:3] - np.asarray(ref_affine, np.float64)[:3, 3]
    in_voxels = np.linalg.solve(np.asarray(ref_affine, np.float64)[:3, :3], delta)
    if float(np.abs(in_voxels).max()) > tol.origin:
        out.append(f"origin differs by {_world_offsets(delta)} ({float(np.abs(in_voxels).max()):.3g} voxels)")
    if out and (perm != [0, 1, 2] or min(signs) < 0):
        mirrored = _mirrored_axes(ref_units, perm, signs)
        how = f"{mirrored} run the other way" if mirrored else "axes stored in another order"
        if perm != [0, 1, 2] and mirrored:
            how += ", axes stored in another order"
        out.insert(0, f"orientation {_codes(affine)} differs from the image's {_codes(ref_affine)} ({how})")
    return out


def check_same_grid(
    image_path: str | os.PathLike[str],
    image_affine: np.ndarray,
    image_shape: Sequence[int],
    other_path: str | os.PathLike[str],
    other_affine: np.ndarray,
    other_shape: Sequence[int],
    *,
    what: str = "label map",
    tolerance: GridTolerance | None = None,
) -> None:
    """Refuse a paired volume that does not lie on its image's grid.

    Raises:
        GeometryMismatchError: names ``other_path`` first, then the image and every difference.
    """
    differences = grid_differences(image_affine, image_shape, other_affine, other_shape, tolerance=tolerance)
    if differences:
        raise GeometryMismatchError(
            other_path,
            f"{what} does not lie on the grid of its image {os.fspath(image_path)}: "
            + "; ".join(differences)
            + ". Fix the header, or, if its voxels are known to match the image's voxel for voxel, set "
            "label_geometry to use_image for this case in the manifest",
        )


def resample_nearest(
    array: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: Sequence[int]
) -> np.ndarray:
    """``array`` (on ``affine``'s grid) sampled on another grid by nearest neighbour in world mm.

    Indices that fall just outside the source (rounding at the edges of grids that agree within
    tolerance) take the nearest edge voxel. Grids related by axis flips, permutations and whole
    voxel shifts (the usual case) are handled by indexing, without per-voxel arithmetic.

    Args:
        array: ``(H, W, D)`` source voxels.
        affine: the source's voxel -> world matrix.
        target_affine, target_shape: the grid to sample on.

    Returns:
        An array of ``target_shape`` and ``array``'s dtype.
    """
    target_shape = tuple(int(s) for s in target_shape)
    # target voxel index -> source voxel index
    t = np.linalg.solve(np.asarray(affine, np.float64), np.asarray(target_affine, np.float64))
    linear, shift = t[:3, :3], t[:3, 3]
    src_shape = array.shape[:3]
    perm = [int(np.argmax(np.abs(linear[:, j]))) for j in range(3)]  # source axis of target axis j
    separable = sorted(perm) == [0, 1, 2] and all(
        abs(linear[k, j]) < 1e-6 for j in range(3) for k in range(3) if k != perm[j]
    )
    if separable:
        index = [
            np.clip(
                np.rint(linear[perm[j], j] * np.arange(target_shape[j]) + shift[perm[j]]).astype(np.int64),
                0,
                src_shape[perm[j]] - 1,
            )
            for j in range(3)
        ]
        moved = np.transpose(array, perm)
        return np.ascontiguousarray(moved[np.ix_(*index)])
    out = np.empty(target_shape, dtype=array.dtype)
    ii, jj = np.meshgrid(np.arange(target_shape[0]), np.arange(target_shape[1]), indexing="ij")
    plane = np.stack([ii.ravel(), jj.ravel()]).astype(np.float64)
    for k in range(target_shape[2]):  # one target slice at a time: memory stays one slice of indices
        src = linear[:, :2] @ plane + (linear[:, 2] * k + shift)[:, None]
        idx = [np.clip(np.rint(src[a]).astype(np.int64), 0, src_shape[a] - 1) for a in range(3)]
        out[:, :, k] = array[idx[0], idx[1], idx[2]].reshape(target_shape[:2])
    return out


def align_to_image(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    image_affine: np.ndarray,
    image_shape: Sequence[int],
    image_path: str | os.PathLike[str],
    *,
    mode: str = "check",
    what: str = "label map",
    tolerance: GridTolerance | None = None,
) -> np.ndarray:
    """A paired volume's voxels on its image's grid (it then shares the image's affine).

    Args:
        array, affine, path: the label map as read.
        image_affine, image_shape, image_path: the image it belongs to.
        mode: ``"check"``: the two headers must describe the same grid (:func:`check_same_grid`),
            and the label is resampled onto the image's grid by nearest neighbour in world
            coordinates. ``"use_image"``: the label's header is ignored; its voxels are taken as
            they are, on the image's grid (same shape required).
        what: how the paired volume is called in errors.
        tolerance: see :class:`GridTolerance`.

    Returns:
        The label's voxels, ``image_shape``.

    Raises:
        GeometryMismatchError: the grids differ (``check``), or the shapes differ (``use_image``).
        ValueError: an unknown ``mode``.
    """
    if mode not in LABEL_GEOMETRY_MODES:
        raise ValueError(f"label_geometry must be one of {LABEL_GEOMETRY_MODES}, got {mode!r}")
    image_shape = tuple(int(s) for s in image_shape)
    if mode == "use_image":
        if tuple(array.shape) != image_shape:
            raise GeometryMismatchError(
                path,
                f"label_geometry=use_image takes the {what}'s voxels as they are on the grid of its image "
                f"{os.fspath(image_path)}, but its shape {tuple(array.shape)} differs from the image's {image_shape}",
            )
        return array
    check_same_grid(
        image_path, image_affine, image_shape, path, affine, array.shape, what=what, tolerance=tolerance
    )
    return resample_nearest(array, affine, image_affine, image_shape)
