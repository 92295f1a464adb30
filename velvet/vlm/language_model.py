"""The causal LM of a volume-language model: from a local folder or built from a config, offline.

Any Hugging Face causal LM works (Llama, Qwen2, GPT-2, ...): velvet only needs its input embeddings,
``inputs_embeds`` in ``forward`` and ``generate``. Nothing is downloaded: a folder is read with
``local_files_only=True``; a config builds random weights (the CPU path and tests), with a byte-level
BPE vocabulary trained on the data's own texts by :func:`train_lm_tokenizer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SPECIAL_TOKENS", "load_causal_lm", "train_lm_tokenizer"]

# the special tokens of a vocabulary trained here; a folder's tokenizer keeps its own
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_lm_tokenizer(texts: Iterable[str], vocab_size: int = 2000, *, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE vocabulary on ``texts`` (reports, questions, answers).

    Byte-level BPE decodes back to the exact text (spaces and punctuation included), which the
    NLG metrics then score; no text is out of vocabulary.

    Args:
        texts: the training texts.
        vocab_size: vocabulary size, special tokens included.
        min_frequency: least count of a merged pair.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``<s>``, ``</s>``, ``<pad>``, ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def load_causal_lm(spec: Mapping[str, Any], tokenizer: Any = None) -> tuple[Any, Any]:
    """Load or build the causal LM and its tokenizer.

    Args:
        spec: ``{"path": folder}`` (a saved Hugging Face causal LM with its tokenizer) or
            ``{"config": {"model_type": "llama", "hidden_size": ..., ...}}`` (random weights; the
            vocabulary size and special-token ids come from ``tokenizer``).
        tokenizer: the LM tokenizer for a config-built LM (required there); ignored for a folder.

    Returns:
        ``(lm, tokenizer)``; the tokenizer has a pad token (EOS when the folder's has none).

    Raises:
        FileNotFoundError: the folder does not exist or holds no model.
        ValueError: a config without ``model_type`` or without a tokenizer, or a model that is
            not a causal LM.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if "path" in spec:
        folder = Path(spec["path"]).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: not a Hugging Face model folder (no config.json)")
        try:
            lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        except ValueError as err:  # e.g. an encoder-only model: say which folder and why
            raise ValueError(f"{folder}: not a causal LM ({err})") from err
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if tokenizer.pad_token is None:  # Llama-style vocabularies have none; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        return lm, tokenizer
    fields = dict(spec["config"])
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise ValueError("lm config needs a model_type (llama, qwen2, gpt2, ...)")
    if tokenizer is None:
        raise ValueError("a config-built LM needs the LM tokenizer (train one with train_lm_tokenizer)")
    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = AutoConfig.for_model(model_type, **{**fields, **ids})
    lm = AutoModelForCausalLM.from_config(config)
    return lm, tokenizer
