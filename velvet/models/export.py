"""Export a Lightning pretraining checkpoint to the pretrained-model format."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["export_checkpoint"]

_MODEL_PREFIX = "pretrainer.model."


def _tokenizer(
    meta: Mapping[str, Any], ckpt: Path, tokenizer_dir: str | os.PathLike[str] | None, scratch: Path
) -> Any:
    """The run's tokenizer: from ``tokenizer_dir``, the checkpoint's files, or the run's folder.

    Args:
        meta: the checkpoint's ``velvet`` record.
        ckpt: the checkpoint (for messages).
        tokenizer_dir: a folder given by the user (first choice).
        scratch: an empty temporary folder the caller removes, for the files carried in the checkpoint.

    Returns:
        A :class:`~velvet.data.tokenization.TriBertTokenizer`.

    Raises:
        ValueError: no tokenizer can be found, or a carried file name escapes its folder.
    """
    from velvet.data.tokenization import TriBertTokenizer

    options = dict(meta.get("tokenizer", {}).get("config", {}))
    if tokenizer_dir is not None:
        return TriBertTokenizer.from_pretrained(tokenizer_dir, **options)
    files = meta.get("tokenizer_files")
    if files:  # the vocabulary travels inside the checkpoint
        folder = scratch
        for name, text in files.items():
            target = (folder / name).resolve()
            if folder.resolve() not in target.parents:
                raise ValueError(f"{ckpt}: tokenizer file name {name!r} escapes its folder")
            target.write_text(text, encoding="utf-8")
        return TriBertTokenizer.from_pretrained(folder, **options)
    stored = meta.get("tokenizer_dir")
    if stored and Path(stored).is_dir():
        return TriBertTokenizer.from_pretrained(stored, **options)
    raise ValueError(
        f"{ckpt}: the checkpoint carries no tokenizer files and its tokenizer folder {stored!r} is gone; "
        "pass the tokenizer folder the run used (velvet export CKPT OUT --tokenizer DIR)"
    )


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tokenizer_dir: str | os.PathLike[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a pretraining or segmentation checkpoint as a pretrained directory.

    The checkpoint is read with ``weights_only=True`` (it never runs code), the model is rebuilt
    from the architecture stored in it and loaded strictly, and the preprocessing contract and the
    vocabulary stored beside the weights go with it.

    Args:
        checkpoint: a Lightning ``.ckpt`` written by ``velvet fit``.
        out_dir: the pretrained directory to write.
        tokenizer_dir: the run's tokenizer folder, for checkpoints that do not carry one.
        metadata: extra JSON-ready information for ``config.json``.

    Returns:
        The directory.

    Raises:
        ValueError: not a velvet pretraining checkpoint, or weights that do not fit.
    """
    from velvet.data.contract import PreprocessContract
    from velvet.models.config import VelvetConfig
    from velvet.models.legacy import upgrade_checkpoint
    from velvet.models.velvet import VelvetModel
    from velvet.models.weights import load_state_dict_checked, read_weights

    ckpt = Path(checkpoint)
    data = upgrade_checkpoint(read_weights(ckpt))  # v1: objective heads move out of the model
    meta = data.get("velvet")
    if isinstance(meta, Mapping) and meta.get("kind") == "segmentation":
        from velvet.models.segmentation import SegmentationModel

        segmenter = SegmentationModel.from_checkpoint(ckpt)
        info = {"exported_from": ckpt.name, "epoch": data.get("epoch"), "global_step": data.get("global_step"),
                "encoder": meta.get("encoder_source"), **dict(metadata or {})}
        return segmenter.save_pretrained(out_dir, preprocess=segmenter.preprocess, metadata=info)
    if not isinstance(meta, Mapping) or "model_config" not in meta or "state_dict" not in data:
        raise ValueError(f"{ckpt}: not a velvet pretraining checkpoint (no 'velvet' model record)")
    state = {k[len(_MODEL_PREFIX) :]: v for k, v in data["state_dict"].items() if k.startswith(_MODEL_PREFIX)}
    model = VelvetModel(VelvetConfig.from_dict(meta["model_config"]))
    load_state_dict_checked(model, state, source=f"{ckpt} (state_dict)")
    preprocess = meta.get("preprocess")
    info = {
        "exported_from": ckpt.name,
        "epoch": data.get("epoch"),
        "global_step": data.get("global_step"),
        **dict(metadata or {}),
    }
    # the vocabulary carried in the checkpoint is written to a temporary folder for the tokenizer to
    # load, removed again (errors included) once the pretrained directory is written
    with tempfile.TemporaryDirectory(prefix="velvet-tokenizer-") as scratch:
        return model.save_pretrained(
            out_dir,
            preprocess=PreprocessContract.from_dict(preprocess) if preprocess else None,
            tokenizer=_tokenizer(meta, ckpt, tokenizer_dir, Path(scratch)),
            metadata=info,
        )
