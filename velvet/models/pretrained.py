"""The pretrained-model format: ``save_pretrained`` / ``from_pretrained``.

A pretrained directory holds::

    config.json          {"format": "velvet-pretrained", "format_version": 2, "kind": ...,
                          "model": <architecture>, "preprocess": <contract> | null,
                          "tokenizer": {"path": "tokenizer", "config": {...}} | null, "metadata": {...}}
    model.safetensors    the weights
    tokenizer/           the TriBERT vocabulary (when a tokenizer was saved with the model)

``config.json`` also records the sha256 and size of the weights
(``"files": {"model.safetensors": {"sha256": ..., "size": ...}}``); ``from_pretrained`` checks
every file listed there before loading (``verify=False`` skips it) and names the file that does
not match. Directories written before the digests were added load unchecked.

``kind`` is ``velvet`` (the whole :class:`~velvet.models.velvet.VelvetModel`: encoders, image-text
projections, temperature, visual adapter; no pretraining-objective heads), ``vision`` (a vision
encoder alone), ``text`` (TriBERT alone) or ``segmentation`` (a
:class:`~velvet.models.segmentation.SegmentationModel`: SwinUNETR with its class names). Format version 1 (velvet 0.1) also stored the
objectives' heads and listed the objectives; it still loads, without those heads
(:mod:`velvet.models.legacy`). Either encoder also loads out of a whole-model
directory. The directory is written to a temporary folder and renamed, so a reader never sees a
half-written model. Loading is strict by default and reports mismatched keys as a readable diff.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedIntegrityError",
    "from_pretrained",
    "model_kind",
    "read_pretrained_config",
    "save_pretrained",
    "verify_pretrained_files",
]

FORMAT = "velvet-pretrained"
FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
_PREFIX = {"vision": "vision.", "text": "text."}
KINDS = ("velvet", "vision", "text", "segmentation")

logger = logging.getLogger(__name__)


class PretrainedIntegrityError(ValueError):
    """A file of a pretrained directory differs from the digest its ``config.json`` records."""


def model_kind(model: nn.Module) -> str:
    """``velvet``, ``vision``, ``text`` or ``segmentation`` for the modules this format stores.

    Raises:
        TypeError: any other module.
    """
    from velvet.models.segmentation import SegmentationModel
    from velvet.models.text.tribert import TriBert
    from velvet.models.velvet import VelvetModel
    from velvet.models.vision.swin import SwinEncoder3D
    from velvet.models.vision.vit import ViTEncoder3D

    if isinstance(model, VelvetModel):
        return "velvet"
    if isinstance(model, SegmentationModel):
        return "segmentation"
    if isinstance(model, (SwinEncoder3D, ViTEncoder3D)):
        return "vision"
    if isinstance(model, TriBert):
        return "text"
    raise TypeError(f"save_pretrained stores VelvetModel, a vision encoder or TriBert, not {type(model).__name__}")


def _architecture(model: nn.Module, kind: str) -> dict[str, Any]:
    if kind == "velvet":
        architecture = model.config.to_dict()  # type: ignore[union-attr, operator]
        # the resolved encoder config, not a preset reference: presets may change between versions
        architecture["vision"] = _architecture(model.vision, "vision")  # type: ignore[arg-type]
        return architecture
    if kind == "vision":
        config = getattr(model, "config", None)
        if config is None:
            raise TypeError(
                f"{type(model).__name__} has no .config: build it with velvet.models.vision.create_vision_encoder"
            )
        return config.to_dict()
    if kind == "segmentation":
        return model.config.to_dict()  # type: ignore[union-attr, operator]
    return model.cfg.to_dict()  # type: ignore[union-attr, operator]


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    preprocess: Any = None,
    tokenizer: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a pretrained directory (replacing an existing one atomically).

    Args:
        model: a :class:`~velvet.models.velvet.VelvetModel`, a vision encoder or TriBert.
        directory: the output folder.
        preprocess: the :class:`~velvet.data.contract.PreprocessContract` (or its dict / preset name)
            the model was trained with; defaults to ``model.preprocess`` when present.
        tokenizer: the :class:`~velvet.data.tokenization.TriBertTokenizer`; defaults to
            ``model.tokenizer`` when present.
        metadata: free JSON-ready information (training run, data, licence).

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    from velvet.data.contract import PreprocessContract
    from velvet.utils.atomic import save_directory_atomically

    kind = model_kind(model)
    target = Path(directory)
    if target.exists() and (not target.is_dir() or _holds_other_files(target)):
        # the atomic swap replaces the whole folder: never let that delete unrelated files
        raise FileExistsError(
            f"{target}: exists and is not a velvet pretrained directory; refusing to replace it "
            "(choose a new or empty folder)"
        )
    preprocess = preprocess if preprocess is not None else getattr(model, "preprocess", None)
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": _architecture(model, kind),
        "preprocess": PreprocessContract.resolve(preprocess).to_dict() if preprocess is not None else None,
        "tokenizer": {"path": TOKENIZER_DIR, "config": tokenizer.config()} if tokenizer is not None else None,
        "metadata": dict(metadata or {}),
    }
    json.dumps(config)  # fail before writing anything if the metadata is not JSON-ready
    # safetensors wants contiguous tensors that share no storage
    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}

    def write(tmp: str) -> None:
        save_file(weights, str(Path(tmp) / WEIGHTS_NAME), metadata={"format": "pt", "velvet_kind": kind})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(Path(tmp) / WEIGHTS_NAME, 0o666 & ~umask)  # safetensors writes owner-only files
        if tokenizer is not None:
            tokenizer.tokenizer.save_pretrained(str(Path(tmp) / TOKENIZER_DIR))
        config["files"] = _file_digests(Path(tmp), [WEIGHTS_NAME])
        (Path(tmp) / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    return save_directory_atomically(write, directory)


def _file_digests(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256": hex digest, "size": bytes}}`` of the files ``names`` (POSIX paths) of ``folder``."""
    from velvet.utils.hashing import sha256_file

    return {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size} for name in names}


def verify_pretrained_files(folder: str | os.PathLike[str], config: Mapping[str, Any]) -> int:
    """Check the files of a pretrained directory against the digests in its ``config.json``.

    Sizes are compared first (free), then sha256 digests (reads every listed file once).

    Args:
        folder: the pretrained directory.
        config: its ``config.json`` (:func:`read_pretrained_config`).

    Returns:
        The number of files checked; 0 for a directory written without digests (logged at debug level).

    Raises:
        PretrainedIntegrityError: a listed file is missing, has another size or another sha256; the
            message names the file and both digests.
        ValueError: the ``files`` field is malformed or names a path outside the directory.
    """
    from velvet.utils.hashing import sha256_file

    root = Path(folder)
    files = config.get("files")
    if files is None:
        logger.debug("%s: config.json lists no file digests (written by an older velvet): files not verified", root)
        return 0
    if not isinstance(files, Mapping):
        raise ValueError(f"{root / CONFIG_NAME}: 'files' must map file names to {{sha256, size}}")
    for name, expected in files.items():
        path = (root / name).resolve()
        if root.resolve() not in path.parents or not isinstance(expected, Mapping) or "sha256" not in expected:
            raise ValueError(f"{root / CONFIG_NAME}: bad 'files' entry {name!r}")
        if not path.is_file():
            raise PretrainedIntegrityError(
                f"{root / name}: missing (config.json lists it with sha256 {expected['sha256']})"
            )
        size = path.stat().st_size
        if "size" in expected and size != int(expected["size"]):
            raise PretrainedIntegrityError(
                f"{root / name}: {size} bytes, config.json records {expected['size']}: the file is truncated "
                "or was replaced; copy the model directory again (or load with verify=False at your own risk)"
            )
        actual = sha256_file(path)
        if actual != str(expected["sha256"]).lower():
            raise PretrainedIntegrityError(
                f"{root / name}: sha256 {actual} does not match {expected['sha256']} recorded in config.json: "
                "the file is corrupt or was modified; copy the model directory again (or load with "
                "verify=False at your own risk)"
            )
    return len(files)


def _holds_other_files(folder: Path) -> bool:
    """True if ``folder`` is non-empty and not a previous pretrained directory."""
    if not any(folder.iterdir()):
        return False
    try:
        return json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("format") != FORMAT
    except (OSError, ValueError, AttributeError):
        return True


def read_pretrained_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a pretrained directory's ``config.json``.

    Raises:
        FileNotFoundError: no directory or no ``config.json`` / weights in it.
        ValueError: not a velvet pretrained config, or a newer format version.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such pretrained directory")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_NAME} (not a velvet pretrained directory)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: not a velvet pretrained config (no \"format\": \"{FORMAT}\")")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: format version {config['format_version']} is newer than this velvet "
            f"understands ({FORMAT_VERSION}); upgrade velvet"
        )
    if config.get("kind") not in KINDS:
        raise ValueError(f"{config_path}: unknown model kind {config.get('kind')!r}")
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME}")
    return config


def _resolve_location(name_or_path: str | os.PathLike[str]) -> Path:
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if "." in name and os.sep not in name and "/" not in name:
        from velvet.hub import download_pretrained

        return download_pretrained(name)
    raise FileNotFoundError(f"{path}: no such pretrained directory (nor a registered '<arch>.<tag>' name)")


def _build(kind: str, architecture: Mapping[str, Any]) -> nn.Module:
    if kind == "velvet":
        from velvet.models.config import VelvetConfig
        from velvet.models.velvet import VelvetModel

        return VelvetModel(VelvetConfig.from_dict(architecture))
    if kind == "segmentation":
        from velvet.models.segmentation import SegmentationConfig, SegmentationModel

        return SegmentationModel(SegmentationConfig.from_dict(architecture))
    if kind == "vision":
        from velvet.models.vision.factory import create_vision_encoder

        return create_vision_encoder(dict(architecture))
    from velvet.models.text.config import TextEncoderConfig
    from velvet.models.text.tribert import TriBert

    return TriBert(TextEncoderConfig.from_dict(dict(architecture)))


def from_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    verify: bool = True,
) -> nn.Module:
    """Load a pretrained directory (or a registered ``<arch>.<tag>`` name).

    Args:
        name_or_path: a directory written by :func:`save_pretrained`, or a name from
            :func:`velvet.hub.list_pretrained` (downloaded and verified into the cache).
        kind: ``vision`` or ``text`` to take one encoder out of a whole-model directory; default:
            what the directory holds.
        strict: fail on any missing / unexpected / mismatched weight (the error lists them).
        map_location: device for the weights.
        verify: check the files against the sha256 digests in ``config.json`` first
            (:func:`verify_pretrained_files`); False skips reading them twice.

    Returns:
        The model in eval mode. A whole model or TriBERT gets ``.tokenizer`` (when saved) and every
        kind gets ``.preprocess`` (the :class:`~velvet.data.contract.PreprocessContract`, or None).

    Raises:
        FileNotFoundError, ValueError: see :func:`read_pretrained_config`;
        PretrainedIntegrityError: a file differs from its recorded digest (a ``ValueError``);
        velvet.models.weights.WeightsMismatchError: the weights do not fit the architecture.
    """
    from velvet.data.contract import PreprocessContract
    from velvet.models.weights import load_state_dict_checked, read_weights

    folder = _resolve_location(name_or_path)
    config = read_pretrained_config(folder)
    stored = config["kind"]
    kind = kind or stored
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != stored and stored != "velvet":
        raise ValueError(f"{folder} holds a {stored} model; it has no {kind} part")
    if verify:
        verify_pretrained_files(folder, config)
    weights = read_weights(folder / WEIGHTS_NAME, map_location=map_location)
    architecture = config["model"]
    if stored == "velvet" and int(config.get("format_version", 1)) < 2:
        from velvet.models.config import upgrade_v1_architecture
        from velvet.models.legacy import drop_v1_objective_heads

        architecture = upgrade_v1_architecture(architecture)[0]
        weights = drop_v1_objective_heads(weights)
    if kind != stored:  # one encoder out of a whole model
        architecture = architecture[kind]
        prefix = _PREFIX[kind]
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    model = _build(kind, architecture)
    load_state_dict_checked(model, weights, strict=strict, source=str(folder / WEIGHTS_NAME))
    model.to(map_location)
    model.eval()
    preprocess = config.get("preprocess")
    model.preprocess = PreprocessContract.from_dict(preprocess) if preprocess else None  # type: ignore[assignment]
    if kind in ("velvet", "text"):
        model.tokenizer = _load_tokenizer(folder, config.get("tokenizer"))  # type: ignore[assignment]
    return model


def _load_tokenizer(folder: Path, info: Mapping[str, Any] | None) -> Any:
    if not info:
        return None
    from velvet.data.tokenization import TriBertTokenizer

    return TriBertTokenizer.from_pretrained(folder / info.get("path", TOKENIZER_DIR), **dict(info.get("config", {})))
