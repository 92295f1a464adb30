"""Named pretrained weights: the registry and verified, cached, offline-aware downloads.

>>> import velvet.hub
>>> [e.name for e in velvet.hub.list_pretrained()]  # doctest: +SKIP
['velvet-btsv.m3d-cap', 'velvet-tiny.demo']
>>> folder = velvet.hub.download_pretrained("<arch>.<tag>")  # doctest: +SKIP
>>> model = velvet.load_pretrained("<arch>.<tag>")  # doctest: +SKIP

Importing this package is light (standard library and tqdm). It never imports ``velvet.models``:
loading a model is ``velvet.load_pretrained`` (``velvet.models.pretrained.from_pretrained``),
which resolves registered names through :func:`download_pretrained`.
"""

from __future__ import annotations

from velvet.hub.download import (
    ChecksumError,
    DownloadError,
    OfflineError,
    cache_root,
    download_pretrained,
    fetch_verified,
    is_offline,
    sha256_file,
)
from velvet.hub.registry import (
    PretrainedEntry,
    PretrainedUnavailableError,
    get_pretrained,
    list_pretrained,
    register_pretrained,
)

__all__ = [
    "ChecksumError",
    "DownloadError",
    "OfflineError",
    "PretrainedEntry",
    "PretrainedUnavailableError",
    "cache_root",
    "download_pretrained",
    "fetch_verified",
    "get_pretrained",
    "is_offline",
    "list_pretrained",
    "register_pretrained",
    "sha256_file",
]
