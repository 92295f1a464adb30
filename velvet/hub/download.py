"""Verified downloads of registered pretrained weights into the velvet cache.

Every file is streamed into a uniquely named temporary file beside its destination
(:func:`velvet.utils.atomic.atomic_path`), hashed (sha256) on the way, checked against the
registry and only then fsynced and renamed into place with ``os.replace``, so the cache never
holds a half-written or tampered file, even with several processes downloading at once. Cached
files are re-hashed before every use. Offline mode (``VELVET_OFFLINE`` or ``HF_HUB_OFFLINE`` set
to 1/true/yes/on) never opens a connection.

Layout: ``<cache>/pretrained/<arch>.<tag>/<relative file name>``, where ``<cache>`` is
``$VELVET_CACHE``, else ``$XDG_CACHE_HOME/velvet``, else ``~/.cache/velvet``
(:func:`velvet.utils.paths.velvet_cache_root`, shared with the volume cache).

This module never imports ``velvet.models``: loading a registered name is
``velvet.load_pretrained`` (``velvet.models.pretrained.from_pretrained``), which calls
:func:`download_pretrained`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from velvet.hub.registry import PretrainedEntry, PretrainedUnavailableError, get_pretrained
from velvet.utils.atomic import atomic_path
from velvet.utils.hashing import CHUNK_SIZE, sha256_file
from velvet.utils.paths import velvet_cache_root as cache_root

__all__ = [
    "ChecksumError",
    "DownloadError",
    "OfflineError",
    "cache_root",
    "download_pretrained",
    "fetch_verified",
    "file_url",
    "is_offline",
    "packaged_folder",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_TRUTHY = {"1", "true", "yes", "on"}
_PROGRESS_MIN_BYTES = 1 << 20  # no bar for config and tokenizer files


class ChecksumError(RuntimeError):
    """A file's sha256 differs from the registry's; a cached file has been deleted (a packaged one is kept)."""

    def __init__(
        self, path: Path | str, expected: str, actual: str, what: str, *, deleted: bool = True
    ) -> None:
        tail = "; the file was deleted" if deleted else ""
        super().__init__(f"{path}: sha256 mismatch ({what}): expected {expected}, got {actual}{tail}")
        self.path, self.expected, self.actual = Path(path), expected, actual


class DownloadError(OSError):
    """An HTTP error, a refused connection, a timeout or a truncated transfer."""


class OfflineError(FileNotFoundError):
    """Offline mode is on and a file is not in the cache."""


def is_offline() -> bool:
    """True when ``VELVET_OFFLINE`` or ``HF_HUB_OFFLINE`` is 1, true, yes or on (any case)."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUTHY for var in ("VELVET_OFFLINE", "HF_HUB_OFFLINE")
    )


def file_url(entry: PretrainedEntry, filename: str) -> str:
    """The download URL of one of ``entry``'s files.

    Hub URLs come from ``huggingface_hub.hf_hub_url``. huggingface_hub reads ``HF_ENDPOINT`` once,
    when it is imported, so the variable is passed explicitly here to honour a later change.
    """
    if entry.hf_repo:
        from huggingface_hub import hf_hub_url

        endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
        return hf_hub_url(entry.hf_repo, filename, revision=entry.revision, endpoint=endpoint)
    if entry.base_url:
        return entry.base_url.rstrip("/") + "/" + filename
    raise PretrainedUnavailableError(f"{entry.name}: no download source")


def _download(url: str, dest: Path, sha256: str, *, timeout: float, progress: bool) -> None:
    """Stream ``url`` into a temp file beside ``dest``, verify, then rename it to ``dest``.

    Any failure (a bad hash, a cut transfer, Ctrl-C) leaves ``dest`` untouched and no temp file.
    """
    with atomic_path(dest) as tmp:
        # hashed while streaming, so the file is read once; sha256_file re-checks it on later use
        digest, size, expected_size = hashlib.sha256(), 0, None
        with open(tmp, "wb") as out, _open(url, timeout) as response:
            length = response.headers.get("Content-Length")
            expected_size = int(length) if length and length.isdigit() else None
            show = progress and (expected_size is None or expected_size >= _PROGRESS_MIN_BYTES)
            with tqdm(
                total=expected_size, unit="B", unit_scale=True, desc=dest.name, disable=None if show else True
            ) as bar:
                for chunk in iter(lambda: _read(response, url), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
        if expected_size is not None and size != expected_size:
            raise DownloadError(f"{url}: transfer cut short ({size} of {expected_size} bytes)")
        actual = digest.hexdigest()
        if actual != sha256:
            raise ChecksumError(dest, sha256, actual, f"downloaded from {url}")


def _open(url: str, timeout: float) -> Any:
    from velvet import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"velvet/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise DownloadError(f"{url}: could not connect ({err.reason})") from err
    except (TimeoutError, OSError) as err:
        raise DownloadError(f"{url}: could not connect ({err})") from err


def _read(response: Any, url: str) -> bytes:
    try:
        return response.read(CHUNK_SIZE)
    except (TimeoutError, OSError, http.client.HTTPException) as err:  # HTTPException: IncompleteRead
        raise DownloadError(f"{url}: connection lost while downloading ({err})") from err


def fetch_verified(
    url: str, dest: str | os.PathLike[str], sha256: str, *, timeout: float = 60.0, progress: bool = True
) -> Path:
    """``dest`` with verified content: from the cache if it is there and intact, else downloaded.

    A cached file whose hash is wrong is deleted; online it is downloaded again (once), offline
    the mismatch is raised.

    Args:
        url: where to download the file from (not touched when the cache is intact or offline).
        dest: the cache path.
        sha256: the expected full sha256 hex digest.
        timeout: seconds to wait for the server, per connection and per read.
        progress: show a tqdm bar for large files on a terminal.

    Returns:
        ``dest`` as a Path.

    Raises:
        ChecksumError: the cached file (offline) or the downloaded file does not match.
        OfflineError: offline mode and ``dest`` is not cached (the message names ``dest``).
        DownloadError: an HTTP or connection error (the message names ``url``).
    """
    dest, sha256 = Path(dest), sha256.lower()
    if dest.is_file():
        actual = sha256_file(dest)
        if actual == sha256:
            return dest
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        if is_offline():
            raise ChecksumError(
                dest, sha256, actual, "cached file corrupt, offline mode so not downloaded again"
            )
        logger.warning(
            "%s: cached file corrupt (sha256 %s, expected %s); downloading it again", dest, actual, sha256
        )
    elif is_offline():
        raise OfflineError(
            f"{dest}: not in the cache and offline mode is on (VELVET_OFFLINE / HF_HUB_OFFLINE); "
            f"download it while online, or place the verified file there"
        )
    logger.info("downloading %s -> %s", url, dest)
    _download(url, dest, sha256, timeout=timeout, progress=progress)
    return dest


def packaged_folder(entry: PretrainedEntry) -> Path:
    """The folder of a packaged entry, every file checked against the registry's sha256.

    Raises:
        ChecksumError: a file differs (the installation is damaged or was edited).
        FileNotFoundError: a file is missing from the installation.
    """
    folder = Path(__file__).with_name("weights") / entry.name
    for filename, digest in entry.files.items():
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: file of the packaged weights {entry.name} is missing; reinstall velvet"
            )
        actual = sha256_file(path)
        if actual != digest:
            raise ChecksumError(
                path,
                digest,
                actual,
                "packaged file differs from the registry; reinstall velvet",
                deleted=False,
            )
    return folder


def download_pretrained(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """Every file of a registered entry, verified, in its cache folder.

    Args:
        name: a registered ``<arch>.<tag>`` (see :func:`velvet.hub.list_pretrained`).
        cache_dir: the cache root (default :func:`cache_root`).
        progress: show tqdm bars for large files on a terminal.

    Returns:
        The local pretrained directory, ready for ``velvet.models.pretrained.from_pretrained``.

    Raises:
        ValueError: unknown name.
        PretrainedUnavailableError: the entry cannot be downloaded (e.g. not published yet).
        ChecksumError, OfflineError, DownloadError: see :func:`fetch_verified`.
    """
    entry = get_pretrained(name)
    if not entry.available:
        raise PretrainedUnavailableError(f"{name}: not available: {entry.unavailable_reason}")
    if entry.packaged:
        return packaged_folder(entry)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = folder / "pretrained" / name
    for filename, digest in entry.files.items():
        fetch_verified(file_url(entry, filename), folder / filename, digest, progress=progress)
    return folder
