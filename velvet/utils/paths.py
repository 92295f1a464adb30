"""Where velvet keeps its caches: one rule for every user.

``velvet_cache_root()`` is ``$VELVET_CACHE``, else ``$XDG_CACHE_HOME/velvet``, else
``~/.cache/velvet``. Its users take one subfolder each, so they never collide:

- ``pretrained/``: verified downloads of registered weights (:mod:`velvet.hub.download`);
- ``volumes/``: preprocessed volumes (:mod:`velvet.data.cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["velvet_cache_root"]


def velvet_cache_root() -> Path:
    """The root of velvet's caches, read from the environment on every call.

    Returns:
        ``$VELVET_CACHE`` if set and non-empty, else ``$XDG_CACHE_HOME/velvet`` if that is set and
        non-empty, else ``~/.cache/velvet``; ``~`` is expanded in all three.
    """
    # read at call time, not import time: tests and launchers set the variables after importing velvet
    env = os.environ.get("VELVET_CACHE")
    if env:
        return Path(env).expanduser()
    # an empty XDG_CACHE_HOME counts as unset, as the XDG base directory specification says
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "velvet"
