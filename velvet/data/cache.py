"""A content-addressed on-disk cache of preprocessed volumes.

Loading and resampling a 512x512x200 CT takes seconds; reading its preprocessed 96^3 float16
tensor takes milliseconds. The cache stores the output of the deterministic pipeline of a
:class:`~velvet.data.contract.PreprocessContract` under a key made of

- the *content* digest (sha256) of the source file(s) (a moved or copied file keeps its key, an
  edited one gets a new key), remembered per (path, size, mtime, inode) so unchanged files are
  hashed once, not on every run;
- the contract's fingerprint and the manifest's header overrides (spacing, rescale);
- :data:`CACHE_FORMAT`, bumped whenever the reader or the pipeline changes its output.

Entries are single ``.safetensors`` files written atomically (temp + rename): several DataLoader
workers, DDP ranks on one machine and later runs can share one cache folder; concurrent writers of
the same key write identical bytes and the last rename wins. A volume that fails with a data error
(corrupt, NaN, wrong rank ...) gets a small ``.error.json`` entry instead, so a warm-up reports it
once and the dataset can skip it by policy without re-reading it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from velvet.data import errors as _errors
from velvet.data.contract import PreprocessContract
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord
from velvet.utils.atomic import atomic_path, atomic_write
from velvet.utils.hashing import sha256_file, sha256_text, update_from_file
from velvet.utils.paths import velvet_cache_root

__all__ = [
    "CACHE_FORMAT",
    "UncachedVolumes",
    "VolumeCache",
    "WarmReport",
    "content_digest",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``volumes/`` under :func:`velvet.utils.paths.velvet_cache_root` (the hub's root too).

    That is ``$VELVET_CACHE/volumes``, else ``$XDG_CACHE_HOME/velvet/volumes``, else
    ``~/.cache/velvet/volumes``.
    """
    return velvet_cache_root() / "volumes"


def _stat_signature(path: Path) -> str:
    """Cheap identity of a file or folder: real path, sizes, mtimes and inodes."""
    real = path.resolve()
    if real.is_dir():
        parts = [
            f"{p.relative_to(real)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
            for p in sorted(real.rglob("*"))
            if p.is_file() and (st := p.stat())
        ]
        return f"dir:{real}\n" + "\n".join(parts)
    st = real.stat()
    return f"file:{real}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def content_digest(path: str | os.PathLike[str], memo_dir: str | os.PathLike[str] | None = None) -> str:
    """sha256 of a file's bytes (or of a folder's files and relative names, for DICOM series).

    Args:
        path: file or folder.
        memo_dir: folder remembering digests by stat signature, so an unchanged file is hashed once.

    Raises:
        velvet.data.errors.VolumeReadError: the path does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise _errors.VolumeReadError(p, "file does not exist")
    signature = _stat_signature(p)
    memo: Path | None = None
    if memo_dir is not None:
        memo = Path(memo_dir) / sha256_text(signature)
        try:
            return memo.read_text().strip()
        except OSError:
            pass
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            update_from_file(h, f)
        digest = h.hexdigest()
    else:
        digest = sha256_file(p)
    if memo is not None:
        atomic_write(memo, digest)
    return digest


@dataclass
class WarmReport:
    """Outcome of :meth:`VolumeCache.warm`.

    Attributes:
        created: entries computed now.
        cached: entries that were already there.
        failures: ``(case id, error message)`` of volumes that failed with a data error.
    """

    created: int = 0
    cached: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.created + self.cached + len(self.failures)


class VolumeCache:
    """Preprocessed volumes of one contract, on disk.

    Args:
        root: cache folder (shared by any number of contracts; default :func:`default_cache_dir`).
        contract: the preprocessing contract whose outputs are cached.
        label_map: cache the label map too (records without one are cached image-only).

    Example:
        >>> cache = VolumeCache("/tmp/cache", PreprocessContract.resolve("ct_rate"))  # doctest: +SKIP
        >>> sample = cache.get_or_create(record)  # {"image": (1, 96, 96, 96) float16, ...}
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        contract: PreprocessContract,
        *,
        label_map: bool = False,
    ) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.contract = contract
        self.label_map = label_map
        self._compute = UncachedVolumes(contract, label_map=label_map)

    # ------------------------------------------------------------------ keys and paths

    def _digest(self, path: str) -> str:
        # no in-process memo: a file edited while training must get a new key
        return content_digest(path, self.root / "digests")

    def _with_label(self, record: ManifestRecord) -> bool:
        return self.label_map and record.label_map is not None

    def key(self, record: ManifestRecord) -> str:
        """The cache key of a record under this contract (hashes the source on first use)."""
        payload = {
            "format": CACHE_FORMAT,
            "contract": self.contract.fingerprint(),
            "volume": self._digest(record.volume),
            "label_map": self._digest(record.label_map) if self._with_label(record) else None,
            "spacing": record.spacing,
            "rescale": record.rescale,
        }
        return sha256_text(json.dumps(payload, sort_keys=True))

    def path(self, key: str) -> Path:
        """Where the entry of ``key`` lives."""
        return self.root / f"v{CACHE_FORMAT}" / key[:2] / f"{key}.safetensors"

    # ------------------------------------------------------------------ read / write

    def load(self, record: ManifestRecord) -> dict[str, Any] | None:
        """The cached entry, or None if absent. Re-raises a cached data error.

        A damaged entry (unreadable safetensors) is deleted and treated as absent.
        """
        from safetensors import SafetensorError, safe_open

        key = self.key(record)
        target = self.path(key)
        error_file = target.with_suffix(".error.json")
        if error_file.exists():
            _raise_cached_error(error_file)
        if not target.exists():
            return None
        try:
            with safe_open(str(target), framework="pt") as fh:
                meta = fh.metadata() or {}
                out: dict[str, Any] = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            logger.warning("damaged cache entry %s (%s): recomputing", target, exc)
            target.unlink(missing_ok=True)
            return None
        out["affine"] = (
            torch.tensor(json.loads(meta["affine"]), dtype=torch.float64)
            if "affine" in meta
            else torch.eye(4)
        )
        return out

    def get_or_create(self, record: ManifestRecord) -> dict[str, Any]:
        """The preprocessed sample of ``record``: from the cache, else computed and stored.

        Returns:
            ``{"image": (1, H, W, D) cache dtype, "affine": (4, 4)[, "label_map": (1, H, W, D) uint8/int16]}``.

        Raises:
            velvet.data.errors.DataError: the volume cannot be used (also cached, see module doc).
        """
        cached = self.load(record)
        if cached is not None:
            return cached
        return self._create(record)

    def _create(self, record: ManifestRecord) -> dict[str, Any]:
        from safetensors.torch import save_file

        target = self.path(self.key(record))
        try:
            out = self._compute.get_or_create(record)
        except DataError as exc:
            atomic_write(
                target.with_suffix(".error.json"),
                json.dumps({"type": type(exc).__name__, "path": exc.path, "problem": exc.problem}),
            )
            raise
        tensors = {k: v.contiguous() for k, v in out.items() if k != "affine"}
        meta = {
            "affine": json.dumps(out["affine"].tolist()),
            "id": record.id,
            "source": record.volume,
            "contract": self.contract.name,
        }
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return out

    # ------------------------------------------------------------------ warm-up

    def warm(
        self,
        records: Sequence[ManifestRecord],
        *,
        workers: int = 0,
        progress: bool = True,
    ) -> WarmReport:
        """Fill the cache for ``records`` ahead of training, in ``workers`` processes.

        Data errors are collected (and cached), not raised: the report lists them.
        """
        from torch.utils.data import DataLoader
        from tqdm import tqdm  # not tqdm.auto: its asyncio mixin calls iter() eagerly (a 2nd DataLoader pass)

        loader = DataLoader(
            _WarmDataset(self, list(records)),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
        )
        report = WarmReport()
        bar = tqdm(loader, total=len(records), desc="caching volumes", unit="vol", disable=not progress)
        for rid, status, message in bar:
            if status == "created":
                report.created += 1
            elif status == "cached":
                report.cached += 1
            else:
                report.failures.append((rid, message))
            bar.set_postfix(failed=len(report.failures), refresh=False)
        return report


class _WarmDataset(torch.utils.data.Dataset):
    def __init__(self, cache: VolumeCache, records: list[ManifestRecord]) -> None:
        self.cache, self.records = cache, records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[str, str, str]:
        record = self.records[i]
        try:
            key = self.cache.key(record)
            if self.cache.path(key).exists():
                return record.id, "cached", ""
            self.cache.get_or_create(record)
            return record.id, "created", ""
        except DataError as exc:
            return record.id, "failed", str(exc)


def _identity(x: Any) -> Any:
    return x


def _plain(t: Any) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


def _label_tensor(t: torch.Tensor) -> torch.Tensor:
    t = t.round().to(torch.int64)
    if t.numel() and (t.min() < 0 or t.max() > 255):
        return t.to(torch.int16)
    return t.to(torch.uint8)


def _raise_cached_error(error_file: Path) -> None:
    info = json.loads(error_file.read_text())
    cls = getattr(_errors, info.get("type", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, DataError)):
        cls = DataError
    raise cls(info.get("path", "?"), info.get("problem", "unknown error") + " (cached failure)")


class UncachedVolumes:
    """Same interface as :class:`VolumeCache`, but preprocesses every time (no disk).

    For one-off inference, benchmarks of the raw path, and read-only environments.
    """

    def __init__(self, contract: PreprocessContract, *, label_map: bool = False) -> None:
        self.contract = contract
        self.label_map = label_map
        self._transforms: dict[bool, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    def get_or_create(self, record: ManifestRecord) -> dict[str, Any]:
        """The preprocessed sample of ``record`` (see :meth:`VolumeCache.get_or_create`)."""
        with_label = self.label_map and record.label_map is not None
        if with_label not in self._transforms:
            from velvet.data.transforms import create_transforms

            self._transforms[with_label] = create_transforms(self.contract, label_map=with_label)
        data: dict[str, Any] = {"image": record.volume, "spacing": record.spacing, "rescale": record.rescale}
        if with_label:
            data["label_map"] = record.label_map
        out = self._transforms[with_label](data)
        image = out["image"]
        dtype = torch.float16 if self.contract.cache_dtype == "float16" else torch.float32
        result = {
            "image": _plain(image).to(dtype),
            "affine": torch.as_tensor(image.affine, dtype=torch.float64),
        }
        if with_label:
            result["label_map"] = _label_tensor(_plain(out["label_map"]))
        return result

    def __getstate__(self) -> dict[str, Any]:
        # rebuilding the MONAI pipeline in each worker is cheaper than pickling it across
        state = dict(self.__dict__)
        state["_transforms"] = {}
        return state
