"""``velvet.create_model``: an encoders-only model from a registered architecture name."""

from __future__ import annotations

from typing import Any

__all__ = ["create_model"]


def create_model(
    name: str,
    *,
    tokenizer: Any = None,
    input_size: tuple[int, int, int] | None = None,
    **overrides: Any,
) -> Any:
    """Build a :class:`~velvet.models.velvet.VelvetModel` from an architecture of :func:`velvet.list_models`.

    The model has the encoders, the image-text projections of its levels, the temperature and (with
    fusion layers) the visual adapter: no pretraining head. Weights are freshly initialised; load
    trained ones with :func:`velvet.from_pretrained` instead.

    Args:
        name: a registered architecture (``velvet-tiny``, ``velvet-btsv`` ...).
        tokenizer: the :class:`~velvet.data.tokenization.TriBertTokenizer` to build the text side for;
            None uses the architecture's (or BERT's) vocabulary size.
        input_size: the vision input ``(H, W, D)`` (the contract's ``spatial_size``).
        **overrides: :class:`~velvet.models.config.VelvetConfig` fields; ``vision``/``text`` dicts
            merge into the preset's (``create_model("velvet-tiny", levels=["report"])``).

    Returns:
        The model in eval mode, with ``tokenizer`` set when one was given.
    """
    from velvet.models.config import VelvetConfig
    from velvet.models.velvet import VelvetModel

    config = VelvetConfig.from_dict({"preset": name, **overrides}).for_data(tokenizer=tokenizer, input_size=input_size)
    model = VelvetModel(config).eval()
    model.tokenizer = tokenizer
    return model
