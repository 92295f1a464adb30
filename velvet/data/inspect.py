"""Is this CT in Hounsfield units? Heuristics on intensities, and a summary of a volume file.

:func:`assess_ct` looks only at voxel values (a numpy array or a torch tensor of any shape), so
it serves both ``velvet inspect`` and the checks that warn when a model's input does not have the
intensities its preprocessing contract expects. The facts it relies on:

- raw CT in HU has air (lungs, bowel gas, the air around the patient) at about -1000 HU and
  outside-the-field-of-view padding at -1024, -2048 or -3024; tissue and bone stay below about
  3071 HU (metal can go higher but fills few voxels);
- an image exported for viewing is windowed to 8 bits (integers 0..255): no longer HU;
- a model input is usually scaled to [0, 1] (or z-scored): small floats;
- MR and other modalities have no air at -1000: at most slightly negative noise.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["CTAssessment", "CTVerdict", "assess_ct", "format_inspection", "inspect_volume"]

logger = logging.getLogger(__name__)

CTVerdict = Literal["ct_hu", "ct_8bit", "normalised", "not_ct"]

# about this many voxels are looked at (a strided subsample): percentiles converge long before
_SAMPLE_SIZE = 1 << 18
_AIR_THRESHOLD = -500.0  # halfway between air (-1000 HU) and fat (-100 HU)
_CT_MAX_HU = 4000.0  # tissue and bone < 3071 HU; metal exceeds this but in few voxels
_LABEL_MAP_MAX_VALUES = 128  # fewer distinct non-negative integers than this: a label map


@dataclass
class CTAssessment:
    """What the intensities of an image look like.

    Attributes:
        verdict: ``"ct_hu"`` (CT in Hounsfield units), ``"ct_8bit"`` (an 8-bit windowed image,
            0..255), ``"normalised"`` (small floats, e.g. [0, 1] or z-scored) or ``"not_ct"``.
        reasons: human sentences giving the evidence.
        is_hounsfield: ``verdict == "ct_hu"``.
        kind: a finer label for the checks of :mod:`velvet.data.ct_check`: the verdict, or for
            ``"not_ct"`` one of ``"label_map"`` (a mask or few integers), ``"slope_missing"``,
            ``"no_intercept"`` (CT stored without its -1024 intercept) or ``"mr_like"`` (no air).
    """

    verdict: CTVerdict
    reasons: list[str] = field(default_factory=list)
    is_hounsfield: bool = False
    kind: str = ""


def assess_ct(x: Any) -> CTAssessment:
    """Guess whether ``x`` holds CT intensities in HU, from robust statistics of its values.

    Percentiles come from a strided subsample of about 260k voxels, so a 512 x 512 x 200 volume
    takes a few milliseconds; the exact minimum and maximum are taken over all voxels. NaN and
    infinite values are ignored.

    Args:
        x: any-shaped numpy array or torch tensor (e.g. ``(H, W, D)`` or ``(B, 1, H, W, D)``).

    Returns:
        The :class:`CTAssessment`.

    Raises:
        ValueError: ``x`` has no (finite) values.

    Example:
        >>> assess_ct(np.full((4, 4, 4), -1000, np.int16)).verdict
        'ct_hu'
    """
    sample, vmin, vmax, is_float = _sample(x)
    lo, p1, hi = (float(v) for v in np.percentile(sample, [0.1, 1.0, 99.5]))
    integral = not is_float or bool(np.all(sample == np.round(sample)))
    rng = f"values {vmin:.4g}..{vmax:.4g}"

    if lo <= _AIR_THRESHOLD:
        if hi > _CT_MAX_HU:
            return _verdict(
                "not_ct",
                kind="slope_missing",
                reason=f"air-like values ({lo:.4g} at the 0.1th percentile) but the 99.5th percentile is {hi:.4g}, "
                f"above any tissue or bone in HU (<= about 3071); is a rescale slope missing?",
            )
        return _verdict(
            "ct_hu",
            f"{rng}: air or outside-field-of-view values ({lo:.4g} at the 0.1th percentile; CT air is "
            f"about -1000 HU) and a plausible upper range ({hi:.4g} at the 99.5th percentile)",
        )
    if is_float and max(abs(lo), abs(hi)) <= 10.0:
        if vmin >= -1e-3 and vmax <= 1 + 1e-3:
            return _verdict("normalised", f"{rng}: floats within [0, 1], already scaled (not HU)")
        return _verdict("normalised", f"{rng}: small floats, already scaled or standardised (not HU)")
    if vmin >= 0 and integral:
        n_values = len(np.unique(sample))
        if n_values <= 2:
            return _verdict(
                "not_ct", f"{rng}: only {n_values} distinct values, a binary mask", kind="label_map"
            )
        if n_values <= _LABEL_MAP_MAX_VALUES and vmax <= 1000:
            return _verdict(
                "not_ct",
                f"{rng}: only {n_values} distinct integers, a label map, not an image",
                kind="label_map",
            )
        if vmax <= 255:
            return _verdict("ct_8bit", f"{rng}: integers within 0..255, an 8-bit (windowed) image, not HU")
    if vmin >= 0:
        if integral and vmax <= 4095 + 1024 and _tissue_peak_at_1024(sample):
            hint = " (CT stored without its rescale intercept of -1024 would look like this: pass rescale)"
            return _verdict(
                "not_ct", f"{rng}: no voxel below 0; CT air is about -1000 HU{hint}", kind="no_intercept"
            )
        return _verdict(
            "not_ct",
            f"{rng}: no voxel below 0 and no soft-tissue peak near 1024 (MR?); CT air is about -1000 HU",
            kind="mr_like",
        )
    return _verdict(
        "not_ct",
        kind="mr_like",
        reason=f"{rng}: nothing air-like (0.1th percentile {lo:.4g}, 1st percentile {p1:.4g}); CT air is about -1000 HU",
    )


def inspect_volume(
    path: str | os.PathLike[str],
    *,
    spacing: tuple[float, float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    series_uid: str | None = None,
) -> dict[str, Any]:
    """Read a volume and summarise it: geometry, intensities, CT check and warnings.

    Args:
        path: a volume file or DICOM folder (see :func:`velvet.data.io.read_volume`).
        spacing, rescale, series_uid: passed to :func:`~velvet.data.io.read_volume`.

    Returns:
        A JSON-ready dict: ``path``, ``format``, ``shape``, ``spacing`` (mm), ``orientation``,
        ``dtype``, ``intensity`` (``min``, ``max``, ``p1``, ``p99``, ``mean``; the percentiles
        from a subsample), ``ct`` (``verdict``, ``is_hounsfield``, ``reasons``), ``warnings``
        (the reader's warnings, plus one when the intensities are not HU) and ``meta``.

    Raises:
        velvet.data.errors.DataError: the file cannot be read as a 3D volume.
    """
    from velvet.data.io import read_volume

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = read_volume(path, spacing=spacing, rescale=rescale, series_uid=series_uid)
    messages = [str(w.message) for w in caught]
    for w in caught:
        logger.debug("%s: %s", w.category.__name__, w.message)
    sample, vmin, vmax, _ = _sample(vol.array)
    p1, p99 = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    ct = assess_ct(vol.array)
    if not ct.is_hounsfield:
        messages.append(
            f"{vol.path}: intensities are not CT in Hounsfield units ({ct.verdict}): {ct.reasons[0]}"
        )
    return {
        "path": vol.path,
        "format": vol.format,
        "shape": list(vol.shape),
        "spacing": list(vol.spacing),
        "orientation": vol.orientation,
        "dtype": str(vol.dtype),
        "intensity": {
            "min": vmin,
            "max": vmax,
            "p1": p1,
            "p99": p99,
            "mean": float(np.mean(vol.array, dtype=np.float64)),
        },
        "ct": asdict(ct),
        "warnings": messages,
        "meta": {k: v for k, v in vol.meta.items() if k != "warnings"},
    }


def format_inspection(info: dict[str, Any]) -> str:
    """Render an :func:`inspect_volume` dict for people, one fact per line.

    Example:
        ``spacing      0.977 x 0.977 x 2.0 mm``
    """
    i = info["intensity"]
    ct = info["ct"]
    kind = "CT in Hounsfield units" if ct["is_hounsfield"] else ct["verdict"]
    lines = [
        info["path"],
        f"  format       {info['format']}",
        f"  shape        {' x '.join(str(s) for s in info['shape'])}",
        f"  spacing      {' x '.join(_mm(s) for s in info['spacing'])} mm",
        f"  orientation  {info['orientation']}",
        f"  dtype        {info['dtype']}",
        f"  intensity    min {i['min']:.6g}, p1 {i['p1']:.6g}, mean {i['mean']:.1f}, "
        f"p99 {i['p99']:.6g}, max {i['max']:.6g}",
        f"  intensities  {kind}: {'; '.join(ct['reasons'])}",
    ]
    for key in ("modality", "series_uid", "n_files"):
        if info.get("meta", {}).get(key) not in (None, ""):
            lines.append(f"  {key:<12} {info['meta'][key]}")
    lines += [f"warning: {w}" for w in info.get("warnings", [])]
    return "\n".join(lines)


def _mm(value: float) -> str:
    """3 significant digits, at least one decimal: 3.0, 0.977, 0.57, 68.3."""
    text = f"{value:.3g}"
    if "e" in text:  # 1234.5 -> "1.23e+03": show the plain number instead
        text = f"{value:.1f}"
    return text if "." in text else f"{text}.0"


def _verdict(verdict: CTVerdict, reason: str, kind: str | None = None) -> CTAssessment:
    return CTAssessment(
        verdict=verdict, reasons=[reason], is_hounsfield=verdict == "ct_hu", kind=kind or verdict
    )


def _tissue_peak_at_1024(sample: np.ndarray) -> bool:
    """Most voxels above -500 HU + 1024 lie within -200..300 HU + 1024: soft tissue of a CT shifted by 1024."""
    body = sample[sample >= 1024 + _AIR_THRESHOLD]
    if body.size == 0:
        return False
    return float(np.mean((body >= 1024 - 200) & (body <= 1024 + 300))) >= 0.6


def _sample(x: Any, size: int = _SAMPLE_SIZE) -> tuple[np.ndarray, float, float, bool]:
    """A strided float64 subsample of the finite values, the exact finite min/max, is-float."""
    if hasattr(x, "detach"):  # a torch tensor: subsample on its device, copy only the sample
        t = x.detach()
        if str(t.dtype) == "torch.bool":
            t = t.byte()
        is_float = bool(t.is_floating_point())
        sample = t[_strides(tuple(t.shape), size)].cpu().double().numpy().ravel()
        # torch reduces a permuted layout (e.g. from a Fortran-order numpy array) ~50x slower:
        # min/max do not care about axis order, so reduce over the memory-order view
        t = t.permute(*sorted(range(t.ndim), key=lambda d: -t.stride(d))) if t.ndim else t
        vmin, vmax = np.nan, np.nan
        if t.numel():
            vmin, vmax = float(t.min()), float(t.max())  # NaN propagates: finite here means all finite
            if is_float and not (np.isfinite(vmin) and np.isfinite(vmax)):
                finite = t[t.isfinite()]
                vmin, vmax = (
                    (float(finite.min()), float(finite.max())) if finite.numel() else (np.nan, np.nan)
                )
    else:
        a = np.asarray(x)
        is_float = bool(np.issubdtype(a.dtype, np.floating))
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        sample = a[_strides(a.shape, size)].astype(np.float64).ravel()
        vmin, vmax = np.nan, np.nan
        if a.size:
            vmin, vmax = float(np.min(a)), float(np.max(a))
            if is_float and not (np.isfinite(vmin) and np.isfinite(vmax)):
                finite = a[np.isfinite(a)]
                vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0 or not np.isfinite(vmin):
        raise ValueError("cannot assess intensities: no finite values")
    return sample, vmin, vmax, is_float


def _strides(shape: tuple[int, ...], size: int) -> tuple[slice, ...]:
    """One step per axis so that the strided view has about ``size`` elements."""
    n = int(np.prod(shape)) if shape else 1
    big = [s > 1 for s in shape]
    if n <= size or not any(big):
        return tuple(slice(None) for _ in shape)
    step = int(np.ceil((n / size) ** (1.0 / sum(big))))
    return tuple(slice(None, None, step) if b else slice(None) for b in big)
