"""Synthetic CT phantoms with reports, label maps, finding labels and VQA items.

The built-in data set of the demo recipe, the tests and the benchmarks. Each case is a torso in
Hounsfield units (air, fat, muscle, spine and ribs, lungs, heart, aorta, liver, spleen, kidneys,
stomach, bowel gas) with 0-3 focal lesions (organ, side, size, density) and global findings
(organ enlargement, steatosis, pleural effusion, ascites, nephrectomy), and a varied
radiology-style report that states all of them, so that image-text retrieval and zero-shot
classification on held-out phantoms measure something real.

Example:
    >>> from velvet.data.phantoms import PhantomConfig, generate_phantoms, render_case
    >>> case = render_case(PhantomConfig(n_cases=10, n_val=0, n_test=0), 3)  # doctest: +SKIP
    >>> case.volume.shape, case.report  # doctest: +SKIP
    >>> generate_phantoms("data/phantoms", PhantomConfig(n_cases=400))  # doctest: +SKIP

Modules: :mod:`~.config` (:class:`PhantomConfig`), :mod:`~.anatomy` (tissues, classes, organ
geometry), :mod:`~.findings` (what a case shows), :mod:`~.render` (voxels), :mod:`~.reports`,
:mod:`~.statements`, :mod:`~.vqa`, :mod:`~.noise`, :mod:`~.case` (one case from ``(config, index)``), :mod:`~.generate` (a folder).
"""

from __future__ import annotations

from velvet.data.phantoms.anatomy import CLASS_NAMES
from velvet.data.phantoms.case import CaseSpec, PhantomCase, render_case, sample_case
from velvet.data.phantoms.config import GENERATOR_VERSION, PhantomConfig
from velvet.data.phantoms.findings import LABEL_NAMES, Findings, Lesion
from velvet.data.phantoms.generate import MANIFEST_NAME, generate_phantoms

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "LABEL_NAMES",
    "MANIFEST_NAME",
    "CaseSpec",
    "Findings",
    "Lesion",
    "PhantomCase",
    "PhantomConfig",
    "generate_phantoms",
    "render_case",
    "sample_case",
]
