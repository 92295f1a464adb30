"""Grounding: where each word or sentence of a report points in the scan (local-alignment attention).

``velvet.grounding.ground(model, scan, text)`` returns heat maps per word (or sentence);
``save_grounding_png`` draws them over the scan. ``velvet ground`` is the command-line form.
"""

from __future__ import annotations

from velvet._lazy import lazy_exports

_LAZY = {
    "Grounding": "velvet.grounding.attention:Grounding",
    "ground": "velvet.grounding.attention:ground",
    "unit_heat": "velvet.grounding.attention:unit_heat",
    "save_grounding_png": "velvet.grounding.draw:save_grounding_png",
    "grounding_image": "velvet.grounding.draw:grounding_image",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
