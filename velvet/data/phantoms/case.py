"""One phantom case, from ``(config, index)`` alone: findings, report, VQA and (optionally) the volume.

Each part draws from its own random stream ``default_rng([seed, index, stream])``, so the report
wording does not depend on the grid, and a cheap :func:`sample_case` (no voxels) gives exactly the
findings, report and questions that :func:`render_case` renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from velvet.data.phantoms.anatomy import Anatomy, sample_anatomy
from velvet.data.phantoms.config import PhantomConfig
from velvet.data.phantoms.findings import Findings, place_lesions, sample_global_findings
from velvet.data.phantoms.render import grid_affine, render_volume
from velvet.data.phantoms.reports import write_report
from velvet.data.phantoms.vqa import make_vqa

__all__ = ["CaseSpec", "PhantomCase", "render_case", "sample_case"]

# random streams of a case
_FINDINGS, _ANATOMY, _REPORT, _VQA, _NOISE = range(5)
# enlarged organs: per-axis scale (x', y', z)
_HEPATOMEGALY = (1.2, 1.15, 1.32)
_SPLENOMEGALY = (1.3, 1.5, 1.5)
_CARDIOMEGALY = (1.3, 1.25, 1.2)


def _rng(config: PhantomConfig, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, index, stream])


@dataclass(frozen=True)
class CaseSpec:
    """Everything about a case except its voxels.

    Attributes:
        index: case number.
        case_id: ``phantom_00000`` ... .
        split: ``train`` / ``val`` / ``test``.
        anatomy: body and organ geometry, tissue HU.
        findings: what the report describes.
        report: the report text.
        vqa: question-answer items (see :mod:`velvet.data.phantoms.vqa`).
    """

    index: int
    case_id: str
    split: Literal["train", "val", "test"]
    anatomy: Anatomy
    findings: Findings
    report: str
    vqa: tuple[dict[str, Any], ...]

    @property
    def labels(self) -> dict[str, int]:
        """Binary finding labels (see :data:`~velvet.data.phantoms.findings.LABEL_NAMES`)."""
        return self.findings.labels()


@dataclass(frozen=True)
class PhantomCase:
    """A rendered case.

    Attributes:
        case_id, split, findings, report, vqa: as in :class:`CaseSpec`.
        volume: ``(H, W, D)`` HU in the config's dtype (int16 by default), RAS axes.
        label_map: ``(H, W, D)`` uint8 class ids (see
            :data:`~velvet.data.phantoms.anatomy.CLASS_NAMES`).
        affine: ``(4, 4)`` voxel -> RAS world (mm); the grid is centred on the origin.
    """

    case_id: str
    split: Literal["train", "val", "test"]
    volume: np.ndarray
    label_map: np.ndarray
    affine: np.ndarray
    findings: Findings
    report: str
    vqa: tuple[dict[str, Any], ...]

    @property
    def labels(self) -> dict[str, int]:
        """Binary finding labels (see :data:`~velvet.data.phantoms.findings.LABEL_NAMES`)."""
        return self.findings.labels()


def sample_case(config: PhantomConfig, index: int) -> CaseSpec:
    """Draw case ``index``'s findings, anatomy, report and VQA items (no voxels; ~1 ms).

    Raises:
        IndexError: ``index`` is outside ``[0, config.n_cases)``.
    """
    split = config.split_of(index)
    case_id = config.case_id(index)
    rng_f = _rng(config, index, _FINDINGS)
    findings = sample_global_findings(rng_f)
    scales = {}
    if findings.hepatomegaly:
        scales["liver"] = _HEPATOMEGALY
    if findings.splenomegaly:
        scales["spleen"] = _SPLENOMEGALY
    if findings.cardiomegaly:
        scales["heart"] = _CARDIOMEGALY
    anatomy = sample_anatomy(
        _rng(config, index, _ANATOMY),
        organ_scale=scales,
        absent=(f"kidney_{findings.nephrectomy}",) if findings.nephrectomy else (),
        steatosis=findings.steatosis,
        contrast=findings.contrast,
        ascites=findings.ascites,
    )
    findings = place_lesions(rng_f, findings, anatomy)
    return CaseSpec(
        index=index,
        case_id=case_id,
        split=split,
        anatomy=anatomy,
        findings=findings,
        report=write_report(findings, _rng(config, index, _REPORT)),
        vqa=tuple(make_vqa(case_id, findings, _rng(config, index, _VQA))),
    )


def render_case(config: PhantomConfig, index: int, spec: CaseSpec | None = None) -> PhantomCase:
    """Render case ``index`` on the config's grid, without any disk I/O.

    Args:
        config: the generator configuration (grid, seed, noise, dtype).
        index: case number in ``[0, config.n_cases)``.
        spec: the case's :func:`sample_case` result, if already drawn.

    Returns:
        The case with its ``(H, W, D)`` volume (HU, ``config.dtype``) and uint8 label map.
    """
    spec = spec if spec is not None else sample_case(config, index)
    hu, label_map = render_volume(
        spec.anatomy,
        spec.findings,
        config.shape,
        config.spacing,
        noise_hu=config.noise_hu,
        rng=_rng(config, index, _NOISE),
    )
    if config.dtype != "float32":
        np.rint(hu, out=hu)
    return PhantomCase(
        case_id=spec.case_id,
        split=spec.split,
        volume=hu.astype(config.dtype, copy=False),
        label_map=label_map,
        affine=grid_affine(config.shape, config.spacing),
        findings=spec.findings,
        report=spec.report,
        vqa=spec.vqa,
    )
