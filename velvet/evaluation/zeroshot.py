"""Zero-shot finding classification from text prompts.

For finding ``f`` with positive prompts ``P`` and negative prompts ``Q``, image ``j`` gets the
prompt-averaged logits ``pos = mean_{p in P} s(j, p)`` and ``neg = mean_{q in Q} s(j, q)``, where
``s`` is the chosen level's score (:mod:`velvet.evaluation.scores`). Rules:

- ``pair_softmax`` (CT-CLIP): ``softmax([pos, neg])[0] = sigmoid(pos - neg)``, a probability;
- ``positive`` (a list of label strings, COLIPRI-like, or sets without negatives): ``pos`` itself,
  a ranking score that is not a probability (choose thresholds on validation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from velvet.evaluation.findings import FindingSet

__all__ = ["RULES", "zero_shot", "zero_shot_scores"]

RULES = ("pair_softmax", "positive")


def _prompt_features(
    model: Any, finding_set: FindingSet, level: str
) -> tuple[dict[str, Any], list[tuple[list[int], list[int]]]]:
    from velvet.evaluation.text import encode_texts

    prompts: list[str] = []
    index: list[tuple[list[int], list[int]]] = []
    for finding in finding_set.findings:
        pos = list(range(len(prompts), len(prompts) + len(finding.positive)))
        prompts += finding.positive
        neg = list(range(len(prompts), len(prompts) + len(finding.negative)))
        prompts += finding.negative
        index.append((pos, neg))
    return encode_texts(model, prompts, levels=(level,)), index


@torch.no_grad()
def zero_shot_scores(
    model: Any,
    image: Mapping[str, torch.Tensor],
    finding_set: FindingSet,
    *,
    level: str = "report",
    rule: str = "pair_softmax",
) -> torch.Tensor:
    """``(N, F)`` zero-shot scores of ``N`` images for the ``F`` findings of ``finding_set``.

    Args:
        model: the :class:`~velvet.models.velvet.VelvetModel`.
        image: image features (``embedding`` for level ``report``, ``<level>_regions`` otherwise).
        finding_set: the findings and their prompts.
        level: the alignment level scoring image-prompt pairs.
        rule: see the module docstring.
    """
    from velvet.evaluation.scores import level_scores

    if rule not in RULES:
        raise ValueError(f"unknown zero-shot rule {rule!r}; known: {list(RULES)}")
    if rule == "pair_softmax":
        lacking = [f.name for f in finding_set.findings if not f.negative]
        if lacking:
            raise ValueError(
                f"rule pair_softmax needs negative prompts; {lacking} have none (use rule='positive')"
            )
    text, index = _prompt_features(model, finding_set, level)
    logits = level_scores(model, image, text, level)  # (N, n_prompts)
    columns = []
    for pos, neg in index:
        p = logits[:, pos].mean(dim=1)
        if rule == "pair_softmax":
            columns.append(torch.sigmoid(p - logits[:, neg].mean(dim=1)))
        else:
            columns.append(p)
    return torch.stack(columns, dim=1)


def zero_shot(
    model: Any,
    scans: Any,
    findings: Sequence[str] | FindingSet | str,
    *,
    level: str = "report",
    rule: str | None = None,
    preprocess: bool | None = None,
    batch_size: int = 4,
) -> dict[str, torch.Tensor]:
    """Classify findings in scans from text alone: ``velvet.zero_shot(model, scans, ["ascites"])``.

    Args:
        model: a :class:`~velvet.models.velvet.VelvetModel`, or a name / folder for
            :func:`velvet.load_pretrained` (e.g. ``"velvet-tiny.phantoms"``).
        scans: what :meth:`~velvet.models.velvet.VelvetModel.encode_volume` takes: file paths,
            DICOM folders, volumes, tensors.
        findings: label strings (prompts from templates, or a built-in set's curated prompts for
            labels it knows), a :class:`~velvet.evaluation.findings.FindingSet`, or a built-in set's
            name (``"phantoms"``, ``"ctrate"``).
        level: ``report`` (global embeddings) or ``sentence`` / ``word`` (local alignment).
        rule: ``pair_softmax`` (default when every finding has negative prompts) or ``positive``.
        preprocess: for tensors, whether they hold raw scanner values.
        batch_size: volumes per forward pass.

    Returns:
        finding name -> ``(N,)`` scores (probabilities under ``pair_softmax``), in the set's order.
    """
    from velvet.evaluation.embeddings import image_features
    from velvet.evaluation.findings import list_finding_sets, load_finding_set
    from velvet.models.inference import prepare_volumes

    if isinstance(model, str):
        from velvet.models.pretrained import from_pretrained

        model = from_pretrained(model)
    if isinstance(findings, FindingSet):
        finding_set = findings
    elif isinstance(findings, str) and findings in list_finding_sets():
        finding_set = load_finding_set(findings)  # a built-in set's name such as "phantoms"
    else:
        finding_set = FindingSet.from_labels([findings] if isinstance(findings, str) else list(findings))
    if rule is None:
        rule = "pair_softmax" if all(f.negative for f in finding_set.findings) else "positive"
    model.eval()
    device = next(model.parameters()).device
    items = list(scans) if isinstance(scans, (list, tuple)) else [scans]
    feature = "embedding" if level == "report" else f"{level}_regions"
    chunks: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            part = items[start : start + batch_size]
            image = prepare_volumes(
                part if len(part) > 1 else part[0], model.preprocess, preprocess=preprocess
            )
            # a MetaTensor from the transforms would make every output a MetaTensor: plain tensors out
            image = image.as_tensor() if hasattr(image, "as_tensor") else image
            chunks.append(image_features(model, image.to(device), [feature])[feature].cpu())
    image_feats = {feature: torch.cat(chunks)}
    scores = zero_shot_scores(model, image_feats, finding_set, level=level, rule=rule)
    return {name: scores[:, i] for i, name in enumerate(finding_set.names)}
