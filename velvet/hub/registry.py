"""The registry of named pretrained weights: ``<arch>.<tag>`` -> where the files are and their sha256.

An entry names its architecture (a registered model such as ``velvet-btsv``), one source (a
Hugging Face Hub repo at a revision, or a base URL), every file of the pretrained directory with
its full sha256, and the facts a user needs before trusting the weights: licence, paper,
preprocessing contract. A third kind of source, ``packaged``, means the files travel inside the
velvet package (``velvet/hub/weights/<name>/``): ``velvet-tiny.phantoms``, a tiny model trained on
the built-in synthetic phantoms, works right after install with no network; its files are
sha256-checked on every load like downloaded ones. The paper-size weights are not published yet,
so those entries are ``available=False``; nothing here points at files that do not exist. Users
add their own entries with :func:`register_pretrained`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

__all__ = [
    "PretrainedEntry",
    "PretrainedUnavailableError",
    "get_pretrained",
    "list_pretrained",
    "register_pretrained",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# the files from_pretrained cannot do without; tokenizer files are optional
REQUIRED_FILES = ("config.json", "model.safetensors")
_PAPER = (
    "VELVET-Med: Vision and Efficient Language Pre-training for Volumetric Imaging Tasks in Medicine, "
    "arXiv:2508.12108, https://arxiv.org/abs/2508.12108"
)
_NOT_PUBLISHED = (
    "velvet has not published these weights yet. Train them with the recipe ({recipe}), export the "
    "checkpoint with `velvet export runs/.../last.ckpt DIR` and load DIR with "
    "velvet.VelvetModel.from_pretrained('DIR'), or register your own published copy with "
    "velvet.hub.register_pretrained"
)


class PretrainedUnavailableError(RuntimeError):
    """A registered entry whose weights cannot be downloaded (e.g. not published yet)."""


@dataclass(frozen=True)
class PretrainedEntry:
    """One named set of pretrained weights.

    Args:
        name: ``<arch>.<tag>``, e.g. ``velvet-btsv.m3d-cap``.
        arch: the registered architecture (``velvet.models.config.list_models()``).
        files: relative file name (POSIX, e.g. ``tokenizer/vocab.txt``) -> full sha256 hex.
        hf_repo: a Hugging Face Hub model repo id (``org/name``); exclusive with ``base_url``.
        revision: the Hub revision; pin a commit hash so the files cannot change under the hashes.
        base_url: files are fetched from ``base_url + '/' + file name``; exclusive with ``hf_repo``.
        packaged: the files ship inside the velvet package (``velvet/hub/weights/<name>/``).
        license: the weights' licence (SPDX id or a short text).
        paper: citation or URL of the method.
        preprocess: the preprocessing contract the weights expect, e.g. ``{"preset": "m3d_cap"}``.
        description: one line on what was trained on what.
        available: False for entries that cannot be downloaded; ``unavailable_reason`` says why.
        unavailable_reason: the message :func:`velvet.load_pretrained` raises for them.

    Raises:
        ValueError: a malformed name, hash, file name or source.
    """

    name: str
    arch: str
    files: Mapping[str, str] = field(default_factory=dict)
    hf_repo: str | None = None
    revision: str = "main"
    base_url: str | None = None
    packaged: bool = False
    license: str = ""
    paper: str = ""
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    available: bool = True
    unavailable_reason: str = ""

    def __post_init__(self) -> None:
        if not self.arch or not self.name.startswith(self.arch + ".") or self.name == self.arch + ".":
            raise ValueError(f"pretrained name {self.name!r} must be '<arch>.<tag>' with arch {self.arch!r}")
        files = {_check_filename(self.name, k): _check_sha256(self.name, k, v) for k, v in self.files.items()}
        # read-only copies: a frozen entry must not change through a dict the caller still holds
        object.__setattr__(self, "files", MappingProxyType(files))
        object.__setattr__(self, "preprocess", MappingProxyType(dict(self.preprocess)))
        if sum(map(bool, (self.hf_repo, self.base_url, self.packaged))) > 1:
            raise ValueError(f"{self.name}: give one source (hf_repo, base_url or packaged), not several")
        if not self.available:
            if not self.unavailable_reason:
                raise ValueError(f"{self.name}: an unavailable entry needs an unavailable_reason")
            return
        if not (self.hf_repo or self.base_url or self.packaged):
            raise ValueError(
                f"{self.name}: an available entry needs a source (hf_repo, base_url or packaged)"
            )
        missing = [f for f in REQUIRED_FILES if f not in files]
        if missing:
            raise ValueError(
                f"{self.name}: files lacks {missing} (a pretrained directory needs {REQUIRED_FILES})"
            )

    @property
    def source(self) -> str:
        """Where the files come from, for messages: ``hf://<repo>@<revision>``, the base URL, ``package://...`` or ``none``."""
        if self.packaged:
            return f"package://velvet/hub/weights/{self.name}"
        if self.hf_repo:
            return f"hf://{self.hf_repo}@{self.revision}"
        return self.base_url or "none"


def _check_filename(name: str, filename: str) -> str:
    # the file name becomes a path under the cache: refuse anything that could escape it
    parts = PurePosixPath(filename).parts
    if (
        not filename
        or "\\" in filename
        or filename.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or str(PurePosixPath(*parts)) != filename
    ):
        raise ValueError(
            f"{name}: file name {filename!r} must be a plain relative POSIX path (no '..', no '/' start)"
        )
    return filename


def _check_sha256(name: str, filename: str, digest: str) -> str:
    digest = digest.lower()
    if not _SHA256.match(digest):
        raise ValueError(f"{name}: sha256 of {filename!r} must be 64 hex digits, got {digest!r}")
    return digest


_REGISTRY: dict[str, PretrainedEntry] = {}


def register_pretrained(entry: PretrainedEntry, *, overwrite: bool = False) -> PretrainedEntry:
    """Add ``entry`` to the registry (e.g. your own Hub repo or URL).

    Args:
        entry: the entry.
        overwrite: replace an existing entry of the same name instead of raising.

    Returns:
        The entry.

    Raises:
        ValueError: the name is taken and ``overwrite`` is False.
    """
    if entry.name in _REGISTRY and not overwrite:
        raise ValueError(f"pretrained entry {entry.name!r} already exists; pass overwrite=True to replace it")
    _REGISTRY[entry.name] = entry
    return entry


def list_pretrained(*, available_only: bool = False) -> list[PretrainedEntry]:
    """Every registered entry, sorted by name (only the downloadable ones with ``available_only``)."""
    return [e for _, e in sorted(_REGISTRY.items()) if e.available or not available_only]


def get_pretrained(name: str) -> PretrainedEntry:
    """The entry called ``name``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown pretrained weights {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


# sha256 of the files shipped in velvet/hub/weights/velvet-tiny.phantoms (written by
# `velvet export runs/tiny/checkpoints/last.ckpt velvet/hub/weights/velvet-tiny.phantoms`)
_TINY_PHANTOMS_FILES = {
    "config.json": "a09a28da7f129d1ac905b0b96e5a6b9621864491aa2f2951baa6afbdff5309a8",
    "model.safetensors": "e94d68d19a4eb2201f8eec8782f0042061b142a384337d8573fc3413528f6e87",
    "tokenizer/tokenizer.json": "32c9e39295f864ccc460dd6ac9b358c47e0fc9d80bdf212afed0063e6207fb10",
    "tokenizer/tokenizer_config.json": "86edfbd1d109094d4ea6a04c83822681bd05e495ced8de2cbcd6fea518da3440",
}


def _builtin() -> list[PretrainedEntry]:
    return [
        PretrainedEntry(
            name="velvet-tiny.phantoms",
            arch="velvet-tiny",
            files=_TINY_PHANTOMS_FILES,
            packaged=True,
            license="Apache-2.0",
            paper=_PAPER,
            preprocess={
                "preset": "ct_rate",
                "hu_window": [-200, 300],
                "crop_foreground": True,
                "spacing": None,
                "spatial_size": [32, 32, 32],
                "size_mode": "resize",
            },  # fmt: skip
            description=(
                "a tiny VELVET model (0.5 M parameters, 32^3 input) trained on velvet's SYNTHETIC phantom CTs with "
                "report, sentence and word alignment (recipes/pretrain/phantoms_tiny.yaml); it ships inside the "
                "package to try embed / search / evaluate / ground / zero_shot offline. Not for clinical use: "
                "it has never seen a real scan"
            ),
        ),
        PretrainedEntry(
            name="velvet-btsv.m3d-cap",
            arch="velvet-btsv",
            license="Apache-2.0",
            paper=_PAPER,
            preprocess={"preset": "m3d_cap"},
            description=(
                "the full VELVET-Med model (TriBERT + Swin-SV, every objective) pretrained on M3D-Cap "
                "(recipes/pretrain/full_btsv.yaml)"
            ),
            available=False,
            unavailable_reason=_NOT_PUBLISHED.format(
                recipe="velvet fit --config recipes/pretrain/full_btsv.yaml"
            ),
        ),
        PretrainedEntry(
            name="velvet-tiny.demo",
            arch="velvet-tiny",
            license="Apache-2.0",
            paper=_PAPER,
            preprocess={"preset": "ct_rate"},
            description=(
                "a tiny VELVET model pretrained on the built-in phantom CTs, for smoke tests and demos "
                "(recipes/pretrain/demo.yaml)"
            ),
            available=False,
            unavailable_reason=_NOT_PUBLISHED.format(recipe="velvet fit --config recipes/pretrain/demo.yaml"),
        ),
    ]


for _entry in _builtin():
    register_pretrained(_entry)
