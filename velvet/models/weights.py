"""Reading weight files safely and loading state dicts strictly, with a readable diff.

Safetensors files are read with ``safetensors``; ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` files
only with ``torch.load(weights_only=True)``, so a pickle that would run code is refused instead of
executed. A state dict that does not fit the model raises :class:`WeightsMismatchError`, whose
message lists the missing, unexpected and shape-mismatched keys.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["StateDictDiff", "WeightsMismatchError", "diff_state_dict", "load_state_dict_checked", "read_weights"]

_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


def read_weights(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a weight file without ever running code from it.

    Args:
        path: a ``.safetensors`` file, or a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` pickle holding
            tensors and plain containers (a state dict, or a checkpoint dict that contains one).
        map_location: device for the tensors.

    Returns:
        The file's top-level mapping (for safetensors, name -> tensor).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unknown suffix, a corrupt file, or a pickle that needs code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device=str(map_location)))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if suffix not in _PICKLE_SUFFIXES:
        raise ValueError(f"{path}: unknown weight format {suffix!r} (expected .safetensors, .pt, .pth, .bin or .ckpt)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused to load: the pickle needs code beyond tensors and plain containers "
            f"(torch.load(weights_only=True) said: {str(err).splitlines()[0]}). Loading it fully would run "
            "arbitrary code; if you trust the file, re-save its state dict with torch.save(model.state_dict()) "
            "or as safetensors"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: corrupt or truncated weight file ({err})") from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of tensors, found {type(data).__name__}")
    return dict(data)


@dataclass
class StateDictDiff:
    """How a state dict differs from a model's: key lists and ``key -> (given, expected)`` shapes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def format(self, limit: int = 20) -> str:
        """A readable multi-line report (at most ``limit`` keys per section)."""
        lines: list[str] = []

        def section(title: str, items: list[str]) -> None:
            if not items:
                return
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in items[:limit])
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")

        section("missing from the weights", self.missing)
        section("unexpected in the weights", self.unexpected)
        section(
            "shape mismatch (weights vs model)",
            [f"{k}: {tuple(a)} vs {tuple(b)}" for k, (a, b) in sorted(self.mismatched.items())],
        )
        return "\n".join(lines)


class WeightsMismatchError(ValueError):
    """A state dict does not fit the model; ``diff`` holds the details."""

    def __init__(self, message: str, diff: StateDictDiff) -> None:
        super().__init__(f"{message}\n{diff.format()}")
        self.diff = diff


def diff_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, ignore_missing: Iterable[str] = ()
) -> StateDictDiff:
    """Compare ``state_dict`` with ``model.state_dict()``.

    Args:
        model: the target module.
        state_dict: the weights to load.
        ignore_missing: key prefixes that may be absent (documented new parameters).
    """
    expected = model.state_dict()
    prefixes = tuple(ignore_missing)
    diff = StateDictDiff()
    diff.missing = sorted(k for k in expected if k not in state_dict and not (prefixes and k.startswith(prefixes)))
    diff.unexpected = sorted(k for k in state_dict if k not in expected)
    for key, value in state_dict.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            diff.mismatched[key] = (tuple(value.shape), tuple(expected[key].shape))
    return diff


def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    ignore_missing: Iterable[str] = (),
    source: str = "weights",
) -> StateDictDiff:
    """Load ``state_dict`` into ``model``, strictly by default.

    Args:
        model: the target module.
        state_dict: the weights.
        strict: raise on any missing / unexpected / mismatched key. With ``strict=False`` the
            matching keys are loaded, mismatched shapes are skipped, and the diff is returned.
        ignore_missing: key prefixes that may be absent even when strict.
        source: what the weights are (a file name), for the error message.

    Returns:
        The diff (empty when everything matched).

    Raises:
        WeightsMismatchError: when ``strict`` and the weights do not fit.
    """
    diff = diff_state_dict(model, state_dict, ignore_missing=ignore_missing)
    if strict and diff:
        raise WeightsMismatchError(f"{source} do not fit {type(model).__name__}:", diff)
    loadable = {k: v for k, v in state_dict.items() if k not in diff.unexpected and k not in diff.mismatched}
    model.load_state_dict(loadable, strict=False)
    return diff
