"""Lazy package attributes (PEP 562), shared by every package ``__init__`` that re-exports heavy code.

``import velvet`` and its subpackages stay light: MONAI, transformers and Lightning are imported only
when an attribute that needs them is first used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, targets: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package with lazy attributes.

    Args:
        package: the package's ``__name__``.
        targets: public name -> ``"module"`` (the attribute has the same name there) or
            ``"module:attribute"``.

    Returns:
        ``(__getattr__, __dir__)`` to assign at module level. A resolved attribute is cached in
        the package's namespace, so later lookups skip ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module_name), attr or name)
        vars(sys.modules[package])[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(targets))

    return __getattr__, __dir__
