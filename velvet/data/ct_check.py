"""Do a volume's raw intensities match what its preprocessing contract expects?

:func:`judge_intensities` looks at the raw voxel values (before any windowing) and says whether
they fit the contract's input: Hounsfield units for ``hu_window`` contracts (CT-RATE-like presets),
8-bit 0..255 for ``scale_8bit`` (M3D-like presets), [0, 1] for ``intensity="none"``. The
CT-likeness heuristics are those of :func:`velvet.data.inspect.assess_ct`; this module adds only
the constant-volume case and the comparison with the expectation.

:func:`enforce` applies the policy: a mismatch is a :class:`~velvet.data.errors.NotCTWarning`
naming the file (and case), or, when strict, a :class:`NotCTError`. Strictness comes from the
``strict`` argument or the environment variable ``VELVET_CT_CHECK`` (``warn``, the default;
``strict``; ``off``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from velvet.data.errors import NotCTWarning, VolumeValueError

__all__ = [
    "CTJudgement",
    "Expected",
    "NotCTError",
    "check_policy",
    "enforce",
    "expected_input",
    "judge_intensities",
]

Expected = Literal["hu", "uint8", "unit"]
_OK_KINDS = {"hu": ("ct_hu",), "uint8": ("ct_8bit",), "unit": ("normalised",)}
_DESCRIBE = {
    "hu": "raw CT in Hounsfield units",
    "uint8": "8-bit windowed slices (0..255)",
    "unit": "values in [0, 1]",
}
ENV_VAR = "VELVET_CT_CHECK"


class NotCTError(VolumeValueError):
    """Strict policy: the intensities do not match the contract's input, so the volume is refused.

    ``transient``: the refusal depends on the policy, not on the file alone, so the cache does not
    record it (a later non-strict run warns and uses the volume).
    """

    transient = True


@dataclass(frozen=True)
class CTJudgement:
    """The verdict on one volume's raw intensities.

    Attributes:
        kind: ``"ct_hu"``, ``"ct_8bit"``, ``"normalised"``, ``"label_map"``, ``"constant"``,
            ``"no_intercept"``, ``"slope_missing"``, ``"mr_like"`` or ``"no_values"``.
        ok: the kind is what the contract expects.
        reason: the evidence in words, and what was expected when not ok.
    """

    kind: str
    ok: bool
    reason: str


def expected_input(contract: Any) -> Expected:
    """What raw input a :class:`~velvet.data.contract.PreprocessContract` expects."""
    return {"hu_window": "hu", "scale_8bit": "uint8"}.get(contract.intensity, "unit")  # type: ignore[return-value]


def judge_intensities(x: Any, expected: Expected = "hu") -> CTJudgement:
    """Judge raw intensities (an array, a tensor or a :class:`~velvet.data.io.Volume`) against ``expected``."""
    from velvet.data.inspect import _sample, assess_ct

    if expected not in _OK_KINDS:
        raise ValueError(f"expected must be one of {sorted(_OK_KINDS)}, got {expected!r}")
    values = getattr(x, "array", x)
    try:
        _, vmin, vmax, _ = _sample(values, size=1 << 12)
    except ValueError:
        return CTJudgement("no_values", False, "no finite voxel values")
    if vmin == vmax:
        kind, reason = "constant", f"every voxel is {vmin:.4g}: a constant volume, not an image"
    else:
        assessment = assess_ct(values)
        kind, reason = assessment.kind or assessment.verdict, assessment.reasons[0]
    ok = kind in _OK_KINDS[expected]
    if ok and expected == "unit" and (vmin < -1e-3 or vmax > 1 + 1e-3):
        ok, reason = False, f"{reason}; not within [0, 1]"
    if not ok:
        reason = f"{reason}; the preprocessing contract expects {_DESCRIBE[expected]}"
    return CTJudgement(kind, ok, reason)


def check_policy(strict: bool | None = None) -> str:
    """``"strict"``, ``"warn"`` or ``"off"``: the argument if given, else ``$VELVET_CT_CHECK`` (default warn)."""
    if strict is not None:
        return "strict" if strict else "warn"
    policy = os.environ.get(ENV_VAR, "warn").strip().lower() or "warn"
    if policy not in ("strict", "warn", "off"):
        raise ValueError(f"{ENV_VAR} must be 'warn', 'strict' or 'off', got {policy!r}")
    return policy


def enforce(
    judgement: CTJudgement,
    path: str | os.PathLike[str],
    *,
    case: str | None = None,
    strict: bool | None = None,
    stacklevel: int = 2,
) -> str | None:
    """Warn (or, strict, raise :class:`NotCTError`) when ``judgement`` is not ok; returns the message.

    The message names the file first, then the case id: ``"/d/c7.nii.gz: case 'c7': values 0..1500 ..."``.
    """
    if judgement.ok:
        return None
    policy = check_policy(strict)
    if policy == "off":
        return None
    where = f"case {case!r}: " if case is not None else ""
    problem = f"{where}intensities are not what the contract expects ({judgement.kind}): {judgement.reason}"
    if policy == "strict":
        raise NotCTError(path, problem + f" (refused: {ENV_VAR}=strict)")
    message = f"{os.fspath(path)}: {problem}"
    warnings.warn(message, NotCTWarning, stacklevel=stacklevel + 1)
    return message
