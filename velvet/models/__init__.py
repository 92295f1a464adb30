"""Models: vision encoders (:mod:`velvet.models.vision`), the TriBERT text encoder
(:mod:`velvet.models.text`) and heads (:mod:`velvet.models.heads`).

Deliberately empty: importing ``velvet.models`` loads nothing heavy; import the subpackages you need.
"""

from __future__ import annotations

__all__: list[str] = []
