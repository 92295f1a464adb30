"""A content-addressed on-disk cache of preprocessed volumes.

Loading and resampling a 512x512x200 CT takes seconds; reading its preprocessed 96^3 float16
tensor takes milliseconds. The cache stores the output of the deterministic pipeline of a
:class:`~velvet.data.contract.PreprocessContract` under a key made of

- the *content* digest (sha256) of the source file(s) (a moved or copied file keeps its key, an
  edited one gets a new key), remembered per (path, size, mtime, inode) so unchanged files are
  hashed once, not on every run;
- the file-name ending that picks the reader (:func:`velvet.data.io.reader_suffix`: a ``.png``
  never shares an entry with its ``.nii.gz`` twin);
- the contract's fingerprint and the manifest's per-case options (spacing, rescale,
  label_geometry);
- :data:`CACHE_FORMAT`, bumped whenever the reader or the pipeline changes its output.

Entries are single ``.safetensors`` files written atomically (temp + rename): several DataLoader
workers, DDP ranks on one machine and later runs can share one cache folder; concurrent writers of
the same key write identical bytes and the last rename wins. A volume that fails with a data error
(corrupt, NaN, wrong rank ...) gets a small ``.error.json`` entry instead, so a warm-up reports it
once and the dataset can skip it by policy without re-reading it. The record stores the paths of
the case as placeholders: whichever case hits it later (another zero-byte file, a copy) is
reported under its *own* paths. Errors that depend on the machine rather than the file (over the
voxel budget, out of memory: ``transient``) are not recorded.

Damage is repaired, never fatal: an unreadable entry, ``.error.json`` or digest memo is logged
with its path, removed and recomputed. Temporaries of killed writers (``.tmp-*``, possibly tens of
MB each) are removed by :meth:`VolumeCache.warm` once older than :data:`STALE_TEMP_SECONDS`, and
never counted by :func:`cache_stats`.

The cache folder's defaults and housekeeping (:func:`default_cache_dir`, :data:`CACHE_FORMAT`,
:func:`cache_stats`, :func:`clean_stale_temporaries`) live in :mod:`velvet.data.cache_maintenance`
and are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from velvet.data import errors as _errors
from velvet.data.cache_maintenance import (
    CACHE_FORMAT,
    STALE_TEMP_SECONDS,
    CacheStats,
    cache_stats,
    clean_stale_temporaries,
    default_cache_dir,
)
from velvet.data.contract import PreprocessContract
from velvet.data.errors import DataError
from velvet.data.manifest import ManifestRecord
from velvet.utils.atomic import atomic_path, atomic_write
from velvet.utils.hashing import sha256_file, sha256_text, update_from_file

__all__ = [
    "CACHE_FORMAT",
    "STALE_TEMP_SECONDS",
    "CacheStats",
    "UncachedVolumes",
    "VolumeCache",
    "WarmReport",
    "cache_stats",
    "clean_stale_temporaries",
    "content_digest",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

_DIGEST = re.compile(r"[0-9a-f]{64}")


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
            remembered = memo.read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            remembered = None
        if remembered is not None:
            if _DIGEST.fullmatch(remembered):
                return remembered
            logger.warning("damaged digest memo %s (for %s): recomputing it", memo, p)
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
        failures: ``(case id, error message)`` of volumes that failed with a data error; the
            message starts with the case id (``"case 'c7': /data/c7.nii.gz: empty file"``).
        stale_removed: temporaries of killed writers removed before warming.
        not_ct: ``(case id, message)`` of cases cached although their raw intensities do not match
            the contract's input (:mod:`velvet.data.ct_check`: MR, label maps, 8-bit images for an HU
            contract ...); each is also a :class:`~velvet.data.errors.NotCTWarning`. Under
            ``VELVET_CT_CHECK=strict`` such cases are refused and appear in ``failures`` instead.
    """

    created: int = 0
    cached: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    stale_removed: int = 0
    not_ct: list[tuple[str, str]] = field(default_factory=list)

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
        from velvet.data.io import reader_suffix

        with_label = self._with_label(record)
        payload = {
            "format": CACHE_FORMAT,
            "contract": self.contract.fingerprint(),
            "volume": self._digest(record.volume),
            "volume_reader": reader_suffix(record.volume),
            "label_map": self._digest(record.label_map) if with_label else None,  # type: ignore[arg-type]
            "label_reader": reader_suffix(record.label_map) if with_label else None,  # type: ignore[arg-type]
            "label_geometry": getattr(record, "label_geometry", "check") if with_label else None,
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
            cached_error = _cached_error(error_file, record)
            if cached_error is not None:
                raise cached_error
        if not target.exists():
            return None
        try:
            with safe_open(str(target), framework="pt") as fh:
                meta = fh.metadata() or {}
                out: dict[str, Any] = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
            affine = torch.tensor(json.loads(meta["affine"]), dtype=torch.float64)
            if affine.shape != (4, 4) or "image" not in out:
                raise ValueError(f"affine of shape {tuple(affine.shape)}, tensors {sorted(out)}")
        except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            if not target.exists():  # removed meanwhile (another process cleaning up): just absent
                return None
            logger.warning("damaged cache entry %s (%s): recomputing", target, exc)
            target.unlink(missing_ok=True)
            return None
        out["affine"] = affine
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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = self._compute.get_or_create(record)
            except DataError as exc:
                if not getattr(exc, "transient", False):  # a machine's limits are not the file's fault
                    atomic_write(target.with_suffix(".error.json"), _error_record(exc, record))
                raise
            finally:
                caught_now = list(caught)
        for w in caught_now:  # passed on to the caller's filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        not_ct = [str(w.message) for w in caught_now if issubclass(w.category, _errors.NotCTWarning)]
        tensors = {k: v.contiguous() for k, v in out.items() if k != "affine"}
        meta = {
            "affine": json.dumps(out["affine"].tolist()),
            "id": record.id,
            "source": record.volume,
            "contract": self.contract.name,
        }
        if not_ct:  # remembered, so a later warm-up still counts the case
            meta["not_ct"] = not_ct[0]
        if "label_map" in out and record.label_map is not None:
            meta["label_source"] = record.label_map  # on the image's grid: the one affine is both's
            meta["label_geometry"] = getattr(record, "label_geometry", "check")
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

        Data errors are collected (and cached), not raised: the report lists them, each message
        starting with the case id. Temporaries that killed writers left in the cache (older than
        :data:`STALE_TEMP_SECONDS`) are removed first.
        """
        from torch.utils.data import DataLoader
        from tqdm import tqdm  # not tqdm.auto: its asyncio mixin calls iter() eagerly (a 2nd DataLoader pass)

        removed, freed = clean_stale_temporaries(self.root)
        if removed:
            logger.warning(
                "removed %d temporary file(s) (%.1f MiB) that killed writers left in %s",
                removed,
                freed / 2**20,
                self.root,
            )

        loader = DataLoader(
            _WarmDataset(self, list(records)),
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
        )
        report = WarmReport(stale_removed=removed)
        bar = tqdm(loader, total=len(records), desc="caching volumes", unit="vol", disable=not progress)
        for rid, status, message, not_ct in bar:
            if status == "created":
                report.created += 1
            elif status == "cached":
                report.cached += 1
            else:
                report.failures.append((rid, message))
            if not_ct:  # warned here: a worker's warnings never reach this process
                report.not_ct.append((rid, not_ct))
                warnings.warn(not_ct, _errors.NotCTWarning, stacklevel=2)
            bar.set_postfix(failed=len(report.failures), refresh=False)
        return report


class _WarmDataset(torch.utils.data.Dataset):
    def __init__(self, cache: VolumeCache, records: list[ManifestRecord]) -> None:
        self.cache, self.records = cache, records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[str, str, str, str]:
        record = self.records[i]
        try:
            key = self.cache.key(record)
            target = self.cache.path(key)
            if target.exists():
                return record.id, "cached", "", _recorded_not_ct(target)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.cache.get_or_create(record)
            not_ct = ""
            for w in caught:
                if issubclass(w.category, _errors.NotCTWarning):
                    not_ct = not_ct or str(w.message)  # warned by warm(), in the main process
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            return record.id, "created", "", not_ct
        except DataError as exc:
            return record.id, "failed", f"case {record.id!r}: {exc}", ""
        except (MemoryError, OSError) as exc:  # not the file's fault (not cached), but not fatal either
            return (
                record.id,
                "failed",
                f"case {record.id!r}: {record.volume}: {type(exc).__name__}: {exc}",
                "",
            )


def _recorded_not_ct(target: Path) -> str:
    """The not-CT message stored with a cache entry ("" if none, or unreadable: load() repairs it)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(target), framework="pt") as fh:
            return (fh.metadata() or {}).get("not_ct", "")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return ""


def _identity(x: Any) -> Any:
    return x


def _plain(t: Any) -> torch.Tensor:
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


def _label_tensor(t: torch.Tensor) -> torch.Tensor:
    t = t.round().to(torch.int64)
    if t.numel() and (t.min() < 0 or t.max() > 255):
        return t.to(torch.int16)
    return t.to(torch.uint8)


# placeholders for a case's own paths in a recorded failure (see _error_record)
_ROLES = ("label_map", "volume")


def _role_paths(record: ManifestRecord) -> list[tuple[str, str]]:
    """``(placeholder, path)`` pairs of a record, longest path first (no path eats another's part)."""
    pairs: list[tuple[str, str]] = []
    for role in _ROLES:
        value = getattr(record, role, None)
        if value:
            for form in {os.fspath(value), os.fspath(Path(value))}:
                pairs.append((f"<<{role}>>", form))
    return sorted(pairs, key=lambda pair: len(pair[1]), reverse=True)


def _error_record(exc: DataError, record: ManifestRecord) -> str:
    """The ``.error.json`` text of a failure, with the case's paths as placeholders."""

    def template(text: str) -> str:
        for marker, path in _role_paths(record):
            text = text.replace(path, marker)
        return text

    return json.dumps(
        {
            "format": CACHE_FORMAT,
            "type": type(exc).__name__,
            "path": template(exc.path),
            "problem": template(exc.problem),
            "first_case": record.id,
        }
    )


def _error_class(name: str) -> type[DataError]:
    # the modules defining DataError subclasses, so that __subclasses__ finds them by name
    import velvet.data.geometry
    import velvet.data.io  # noqa: F401

    stack: list[type[DataError]] = [DataError]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            return cls
        stack.extend(cls.__subclasses__())
    return DataError


def _cached_error(error_file: Path, record: ManifestRecord) -> DataError | None:
    """The recorded failure, under ``record``'s own paths; None (and the file removed) if damaged."""
    try:
        info = json.loads(error_file.read_text(encoding="utf-8"))
        if not (
            isinstance(info, dict)
            and isinstance(info.get("path"), str)
            and isinstance(info.get("problem"), str)
        ):
            raise ValueError("not a failure record")
    except FileNotFoundError:  # removed meanwhile (another worker repaired it)
        return None
    except (OSError, ValueError) as exc:  # truncated, garbled, not UTF-8 ...
        logger.warning(
            "damaged cache failure record %s (%s): removed, the case is recomputed", error_file, exc
        )
        error_file.unlink(missing_ok=True)
        return None

    def fill(text: str) -> str:
        for role in _ROLES:
            value = getattr(record, role, None)
            text = text.replace(f"<<{role}>>", os.fspath(Path(value)) if value else f"<{role}>")
        return text

    cls = _error_class(str(info.get("type", "")))
    return cls(fill(info["path"]), fill(info["problem"]) + " (cached failure)")


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
        data: dict[str, Any] = {
            "image": record.volume,
            "spacing": record.spacing,
            "rescale": record.rescale,
            "case_id": record.id,  # named by the intensity check (velvet.data.ct_check)
        }
        if with_label:
            data["label_map"] = record.label_map
            data["label_geometry"] = getattr(record, "label_geometry", "check")
        out = self._transforms[with_label](data)
        image = out["image"]
        if with_label:  # the pipeline keeps them on one grid; never store a pair that is not
            label = out["label_map"]
            same_affine = torch.allclose(
                torch.as_tensor(label.affine, dtype=torch.float64),
                torch.as_tensor(image.affine, dtype=torch.float64),
                atol=1e-4,
            )
            if tuple(label.shape) != tuple(image.shape) or not same_affine:
                from velvet.data.geometry import GeometryMismatchError

                raise GeometryMismatchError(
                    record.label_map,  # type: ignore[arg-type]
                    f"label map ended up on another grid than its image {record.volume} after "
                    f"preprocessing ({tuple(label.shape)} vs {tuple(image.shape)})",
                )
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
