"""The composition of the pretraining objectives, term by term, against naive formulas.

Every term ``VelvetPretrainer`` reports is recomputed here from the model's raw outputs (vision
maps, text states, projection heads, fusion layers, the objectives' heads) with loops written from
the method (``naive.py``), never with velvet's loss classes. The random draws (local view, SSL
views, MLM masks, hard negatives) are recorded by spies around the public draw functions, then
checked twice: how they were made (replayed from a fresh generator; special tokens never masked;
targets are the rotated views before cut-out; the rotation labels belong to their views) and how
they were used (which target goes with which view, which rows are the negatives).

Dropout is 0 and the models are tiny (velvet-tiny, 32^3 volumes, batches of 3-4), on one thread.
"""

from __future__ import annotations

import inspect
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import velvet.models.vision.ssl_views as ssl_views_mod
import velvet.pretraining.objectives as objectives_mod
from tests.pretraining.helpers import make_batch, make_pretrainer
from tests.pretraining.wiring import naive
from velvet.losses.itm import sample_hard_negatives
from velvet.losses.mlm import mask_tokens
from velvet.models.vision.ssl_views import make_ssl_views
from velvet.pretraining.views import random_local_view
from velvet.tasks.pretrain import _tokenizer_meta

SEED = 7
DEFAULT = SimpleNamespace(eps=0.1, temps=(4.0, 5.0, 10.0), agg="sum", tau=0.5, attention="gloria")
CUSTOM = SimpleNamespace(eps=0.3, temps=(2.0, 3.0, 7.0), agg="mean", tau=0.2, scale=25.0, attention="regions")
ATOL = RTOL = 1e-5
_DRAWS = {
    "local": (objectives_mod, "random_local_view", random_local_view),
    "views": (ssl_views_mod, "make_ssl_views", make_ssl_views),
    "mask": (objectives_mod, "mask_tokens", mask_tokens),
    "negatives": (objectives_mod, "sample_hard_negatives", sample_hard_negatives),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # the machine is shared: one thread is several times faster than two fighting for the cores
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Spy:
    """Records ``(bound arguments, result)`` of every call of the public draw functions."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[dict, object]]] = {name: [] for name in _DRAWS}

    def wrap(self, name, fn):
        signature = inspect.signature(fn)

        def spy(*args, **kwargs):
            result = fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            self.calls[name].append((dict(bound.arguments), result))
            return result

        return spy


def run_recorded(pre, batch, seed):
    """``pre(batch, generator)`` under no_grad (``seed``: an int or a generator), with the draws recorded."""
    spy = Spy()
    with pytest.MonkeyPatch.context() as patch:
        for name, (module, attr, fn) in _DRAWS.items():
            patch.setattr(module, attr, spy.wrap(name, fn))
        patch.setattr(objectives_mod, "make_ssl_views", spy.wrap("views", make_ssl_views), raising=False)
        with torch.no_grad():
            out = pre(batch, torch.Generator().manual_seed(seed) if isinstance(seed, int) else seed)
    return out, spy


def special_positions(tokenizer, batch) -> torch.Tensor:
    """Positions that MLM must never select, from the ids themselves: padding, [CLS], [SEP], [MASK], [SEN_k]."""
    ids = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id}
    ids |= {int(i) for i in tokenizer.sen_token_ids}
    special = torch.isin(batch["input_ids"], torch.tensor(sorted(ids)))
    return special | ~batch["attention_mask"].bool()


def assert_term(out, term, expected):
    got = float(out[term])
    assert math.isfinite(expected)
    assert got == pytest.approx(expected, rel=RTOL, abs=ATOL), (
        f"{term}: pretrainer {got!r}, naive formula {expected!r}"
    )


# ---------------------------------------------------------------------- naive terms of one step


@torch.no_grad()
def naive_terms(pre, batch, spy, settings, scale=None) -> dict[str, float]:
    """Every enabled term from the model's raw outputs and the recorded draws."""
    model, heads, cfg = pre.model, pre.heads, pre.model.config
    objectives = set(pre.objectives)
    image = batch["image"]
    b = image.shape[0]
    vision = model.vision(image)
    maps = vision["maps"]
    text = model.encode_text(batch)  # raw text encoder outputs: pooled report, sentences, words
    scale = float(model.logit_scale()) if scale is None else scale
    exp: dict[str, float] = {}
    if "itc_report" in objectives:
        img = model.heads["image_report"](vision["pooled"])
        txt = model.heads["text_report"](text["report"])
        exp["itc_report_loss"] = naive.clip_loss(img, txt, scale, settings.eps)
    for level, index, units, mask in (
        ("sentence", cfg.sentence_level, text["sentences"], text["sentence_mask"]),
        ("word", cfg.word_level, text["words"], text["word_mask"]),
    ):
        if f"itc_{level}" in objectives:
            regions = model.heads[f"image_{level}"](naive.flatten_map(maps[index]))
            exp[f"itc_{level}_loss"] = naive.local_loss(
                regions, model.heads[f"text_{level}"](units), mask, settings.temps, settings.agg, settings.attention
            )
    if "vis_ssl" in objectives:
        ((_, views),) = spy.calls["views"]
        top = model.vision(torch.cat([views["view1"], views["view2"]]))["maps"][-1]
        z = heads["ssl_contrast"](top)
        exp["vis_rot_loss"] = naive.ce(
            heads["ssl_rotation"](top), torch.cat([views["rot1"], views["rot2"]]).tolist()
        )
        exp["vis_contrast_loss"] = naive.nt_xent(z[:b], z[b:], settings.tau)
        exp["vis_recon_loss"] = naive.masked_l1(
            heads["ssl_recon"](top),
            torch.cat([views["target1"], views["target2"]]),
            torch.cat([views["mask1"], views["mask2"]]),
        )
    masks = iter(spy.calls["mask"])  # objectives draw in registry order: txt_mlm before mm_mlm
    if "txt_mlm" in objectives:
        _, (ids, labels) = next(masks)
        hidden = naive.text_states(model, {**batch, "input_ids": ids})
        exp["txt_mlm_loss"] = naive.mlm_loss(heads["txt_mlm"](hidden), labels)
    visual = naive.visual_tokens(model, image) if model.has_fusion else None
    if "itm" in objectives:
        ((_, (neg_text, neg_image)),) = spy.calls["negatives"]
        hidden = naive.text_states(model, batch)
        pairs = []
        for i in range(b):
            pairs.append((naive.itm_pair_logits(model, heads["itm"], batch, hidden, i, visual, i), 1))
        for i in range(b):  # image i with its hard-negative report
            pairs.append(
                (naive.itm_pair_logits(model, heads["itm"], batch, hidden, int(neg_text[i]), visual, i), 0)
            )
        for i in range(b):  # report i with its hard-negative image
            pairs.append(
                (naive.itm_pair_logits(model, heads["itm"], batch, hidden, i, visual, int(neg_image[i])), 0)
            )
        exp["itm_loss"] = naive.itm_loss(pairs)
    if "mm_mlm" in objectives:
        _, (ids, labels) = next(masks)
        masked = {**batch, "input_ids": ids}
        fused = model.fuse(masked, naive.text_states(model, masked), visual)
        exp["mm_mlm_loss"] = naive.mlm_loss(heads["mm_mlm"](fused), labels)
    return exp


@pytest.fixture(scope="module")
def full(tokenizer, reports):
    """One step of every objective, default settings, draws recorded; and the naive terms."""
    pre = naive.amplify_heads(naive.amplify_cross_attention(make_pretrainer(tokenizer, dropout=0.0)))
    batch = make_batch(tokenizer, reports, 3, seed=1)
    out, spy = run_recorded(pre, batch, SEED)
    return SimpleNamespace(
        pre=pre, batch=batch, out=out, spy=spy, expected=naive_terms(pre, batch, spy, DEFAULT)
    )


ALL_TERMS = ["itc_report_loss", "itc_sentence_loss", "itc_word_loss", "vis_rot_loss", "vis_contrast_loss",
             "vis_recon_loss", "txt_mlm_loss", "itm_loss", "mm_mlm_loss"]  # fmt: skip


@pytest.mark.parametrize("term", ALL_TERMS)
def test_every_term_equals_its_naive_formula(full, term):
    assert_term(full.out, term, full.expected[term])


# ---------------------------------------------------------------------- how the draws were made


def test_draws_come_from_the_step_generator_in_objective_order(full, tokenizer):
    """A fresh generator, the same public draw functions, the documented arguments: the same draws."""
    pre, batch, calls = full.pre, full.batch, full.spy.calls
    meta = _tokenizer_meta(tokenizer)
    g = torch.Generator().manual_seed(SEED)
    local = random_local_view(batch["image"], g, scale=(0.5, 1.0))
    views = make_ssl_views(local, g)
    mask_args = dict(mask_token_id=tokenizer.mask_token_id, vocab_size=pre.model.text.cfg.vocab_size, probability=0.15,
                     random_token_ids=torch.tensor(meta["random_token_ids"]))  # fmt: skip
    txt = mask_tokens(batch["input_ids"], batch["special_tokens_mask"], generator=g, **mask_args)
    args, _ = calls["negatives"][0]
    negs = sample_hard_negatives(args["sim_i2t"], local_offset=0, sim_t2i=args["sim_t2i"], generator=g)
    mm = mask_tokens(batch["input_ids"], batch["special_tokens_mask"], generator=g, **mask_args)

    assert torch.equal(calls["local"][0][1], local)
    for key, value in views.items():
        assert torch.equal(calls["views"][0][1][key], value), key
    recorded = (calls["mask"][0][1], calls["negatives"][0][1], calls["mask"][1][1])
    for got, want in zip(recorded, (txt, negs, mm), strict=True):
        assert all(torch.equal(a, w) for a, w in zip(got, want, strict=True))
    # the two MLM objectives mask independently
    assert not torch.equal(txt[1], mm[1])


@pytest.mark.parametrize("call", [0, 1], ids=["txt_mlm", "mm_mlm"])
def test_mlm_never_selects_special_tokens(full, tokenizer, call):
    args, (ids, labels) = full.spy.calls["mask"][call]
    batch = full.batch
    assert torch.equal(args["input_ids"], batch["input_ids"])
    special = special_positions(tokenizer, batch)
    selected = labels != naive.IGNORE
    assert not (selected & special).any(), "MLM selected [CLS]/[SEP]/[SEN_k]/[MASK]/padding positions"
    assert selected.any(dim=1).all()
    assert torch.equal(labels[selected], batch["input_ids"][selected])  # labels are the original ids
    assert torch.equal(ids[~selected], batch["input_ids"][~selected])  # nothing else is replaced
    assert not torch.isin(
        ids[selected & (ids != batch["input_ids"])],
        torch.tensor(
            sorted(
                {
                    tokenizer.pad_token_id,
                    tokenizer.cls_token_id,
                    tokenizer.sep_token_id,
                    *map(int, tokenizer.sen_token_ids),
                }
            )
        ),
    ).any()  # a random replacement is never a special token


def test_ssl_views_targets_and_rotation_labels(full):
    """Targets are the rotated crops BEFORE cut-out; each rotation label is its own view's quarter turns."""
    ((local_args, local),) = full.spy.calls["local"]
    ((view_args, views),) = full.spy.calls["views"]
    assert torch.equal(local_args["image"], full.batch["image"])
    assert tuple(local_args["scale"]) == (0.5, 1.0)
    assert torch.equal(view_args["x"], local)
    for i in (1, 2):
        target, view, mask, rot = views[f"target{i}"], views[f"view{i}"], views[f"mask{i}"], views[f"rot{i}"]
        for b in range(local.shape[0]):
            want = torch.rot90(local[b], int(rot[b]), dims=(2, 3))  # the (W, D) plane of (C, H, W, D)
            assert torch.equal(target[b], want), (i, b)
        assert torch.equal(view[~mask.expand_as(view)], target[~mask.expand_as(target)])
        assert (view != target).any(), (
            "the cut-out changed nothing: the reconstruction check would be vacuous"
        )
    assert not torch.equal(views["rot1"], views["rot2"]), (
        "equal rotations: a label swap would go unseen (seed)"
    )


def test_itm_negatives_sampled_from_the_scaled_report_similarities(full):
    model, batch = full.pre.model, full.batch
    ((args, (neg_text, neg_image)),) = full.spy.calls["negatives"]
    with torch.no_grad():
        vision = model.vision(batch["image"])
        img = nn.functional.normalize(model.heads["image_report"](vision["pooled"]), dim=-1)
        txt = nn.functional.normalize(model.heads["text_report"](model.encode_text(batch)["report"]), dim=-1)
        scale = float(model.logit_scale())
    assert torch.allclose(args["sim_i2t"], scale * img @ txt.T, atol=1e-4)  # image -> texts
    assert torch.allclose(args["sim_t2i"], scale * txt @ img.T, atol=1e-4)  # text -> images
    assert args["local_offset"] == 0
    positives = torch.arange(3)
    assert not (neg_text == positives).any() and not (neg_image == positives).any()


# ---------------------------------------------------------------------- ITM with a known similarity structure


def crafted_embeddings(b: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``i`` = e_i; text ``c`` = e_c + 0.9 e_(c-1): image i's hardest negative text is i+1, text c's
    hardest negative image is c-1 (the two directions differ), and each positive is the most similar."""
    eye = torch.eye(b, e)
    return eye, eye + 0.9 * eye.roll(1, dims=0)


def test_itm_hard_negatives_directions_rows_and_loss(tokenizer, reports):
    b = 4
    pre = naive.amplify_heads(
        naive.amplify_cross_attention(
            make_pretrainer(tokenizer, objectives=["itc_report", "itm"], dropout=0.0)
        )
    )
    model = pre.model
    batch = make_batch(tokenizer, reports[10:], b, seed=3)
    img, txt = crafted_embeddings(b, model.config.embed_dim)
    model.heads["image_report"], model.heads["text_report"] = naive.Fixed(img), naive.Fixed(txt)
    with torch.no_grad():
        model.logit_scale.log_scale.fill_(math.log(100.0))  # near one-hot softmax: 74 vs 67 vs 0
    fused_inputs = []
    real_fuse = model.fuse

    def fuse(text, hidden, visual):
        fused_inputs.append(({k: text[k] for k in naive.TEXT_KEYS if k in text}, hidden, visual))
        return real_fuse(text, hidden, visual)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "fuse", fuse)
        out, spy = run_recorded(pre, batch, SEED)
    ((args, (neg_text, neg_image)),) = spy.calls["negatives"]
    rows = torch.arange(b)
    assert neg_text.tolist() == ((rows + 1) % b).tolist(), "image -> negative text must follow sim_i2t"
    assert neg_image.tolist() == ((rows - 1) % b).tolist(), "text -> negative image must follow sim_t2i"

    ((text3, hidden3, visual3),) = fused_inputs
    with torch.no_grad():
        hidden = naive.text_states(model, batch)
        visual = naive.visual_tokens(model, batch["image"])
    want_text = torch.cat([rows, (rows + 1) % b, rows])
    want_image = torch.cat([rows, rows, (rows - 1) % b])
    assert torch.allclose(hidden3, hidden[want_text], atol=1e-5), (
        "ITM fused other text states than the reports'"
    )
    assert torch.allclose(visual3, visual[want_image], atol=1e-5)
    for k in ("attention_mask", "sentence_ids", "sentence_token_mask"):
        assert torch.equal(text3[k], batch[k][want_text]), k

    with torch.no_grad():
        pairs = [
            (naive.itm_pair_logits(model, pre.heads["itm"], batch, hidden, int(t), visual, int(i)), int(lab))
            for t, i, lab in zip(want_text, want_image, [1] * b + [0] * 2 * b, strict=True)
        ]
    assert_term(out, "itm_loss", naive.itm_loss(pairs))
    assert_term(out, "itc_report_loss", naive.clip_loss(img, txt, 100.0, DEFAULT.eps))


def test_sample_hard_negatives_follows_the_softmax_per_direction():
    """Many draws of the public sampler: softmax of each direction's own row, never the positive."""
    sim_i2t = torch.tensor([[4.0, 3.0, 1.0, 0.0, 2.0], [0.0, 5.0, 0.5, 2.5, 1.0]])
    sim_t2i = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.5], [2.0, 0.0, 6.0, 1.0, 0.0]])
    offset, draws = 2, 3000  # local rows are global 2 and 3 (a second rank's rows)
    counts = {"text": torch.zeros(2, 5), "image": torch.zeros(2, 5)}
    g = torch.Generator().manual_seed(0)
    for _ in range(draws):
        neg_text, neg_image = sample_hard_negatives(
            sim_i2t, local_offset=offset, sim_t2i=sim_t2i, generator=g
        )
        counts["text"][torch.arange(2), neg_text] += 1
        counts["image"][torch.arange(2), neg_image] += 1
    for name, sim in (("text", sim_i2t), ("image", sim_t2i)):
        for r in range(2):
            want = torch.tensor(naive.softmax_without(sim[r].tolist(), r + offset))
            freq = counts[name][r] / draws
            assert counts[name][r, r + offset] == 0, f"the positive was drawn as a negative {name}"
            assert torch.allclose(freq, want, atol=0.035), (name, r, freq.tolist(), want.tolist())


# ---------------------------------------------------------------------- vision-conditioned MLM


def test_vision_conditioned_mlm_looks_at_the_volume(tokenizer, reports):
    pre = naive.amplify_heads(
        naive.amplify_cross_attention(make_pretrainer(tokenizer, objectives=["mm_mlm"], dropout=0.0))
    )
    batch = make_batch(tokenizer, reports, 3, seed=1)
    other = {**batch, "image": torch.rand(batch["image"].shape, generator=torch.Generator().manual_seed(9))}
    out_a, spy_a = run_recorded(pre, batch, SEED)
    out_b, spy_b = run_recorded(pre, other, SEED)
    assert torch.equal(spy_a.calls["mask"][0][1][1], spy_b.calls["mask"][0][1][1])  # same masks
    assert abs(float(out_a["mm_mlm_loss"]) - float(out_b["mm_mlm_loss"])) > 1e-3, "mm_mlm ignores the volume"
    for out, spy, data in ((out_a, spy_a, batch), (out_b, spy_b, other)):
        assert_term(out, "mm_mlm_loss", naive_terms(pre, data, spy, DEFAULT)["mm_mlm_loss"])


# ---------------------------------------------------------------------- settings read back from the loss


@pytest.fixture(scope="module")
def custom(tokenizer, reports):
    """Non-default label smoothing, GLoRIA temperatures and aggregation, NT-Xent temperature, logit scale."""
    pre = make_pretrainer(
        tokenizer,
        objectives=["itc_report", "itc_sentence", "itc_word", "vis_ssl"],
        dropout=0.0,
        pretrainer_kwargs=dict(label_smoothing=CUSTOM.eps, ssl_temperature=CUSTOM.tau),
        # the local scores' settings are the model's (evaluation and grounding read them there)
        local_temperatures=CUSTOM.temps, local_agg=CUSTOM.agg, local_attention=CUSTOM.attention,
    )  # fmt: skip
    with torch.no_grad():
        pre.model.logit_scale.log_scale.fill_(math.log(CUSTOM.scale))
    batch = make_batch(tokenizer, reports, 3, seed=1)
    out, spy = run_recorded(pre, batch, SEED)
    return SimpleNamespace(pre=pre, batch=batch, out=out, spy=spy,
                           expected=naive_terms(pre, batch, spy, CUSTOM, scale=CUSTOM.scale))  # fmt: skip


@pytest.mark.parametrize(
    "term", ["itc_report_loss", "itc_sentence_loss", "itc_word_loss", "vis_contrast_loss"]
)
def test_settings_are_read_back_from_the_composed_loss(custom, term):
    assert_term(custom.out, term, custom.expected[term])
    assert float(custom.out["logit_scale"]) == pytest.approx(CUSTOM.scale, rel=1e-6)


@pytest.mark.parametrize("which", ["full", "custom"])
def test_report_label_smoothing_and_scale_on_separated_embeddings(full, custom, which):
    """At initialisation the report embeddings nearly coincide, so smoothing moves the loss by ~1e-4 only;
    with well-separated embeddings in the report heads the smoothing (and the scale) must show exactly."""
    run, eps, scale = (full, DEFAULT.eps, 1 / 0.07) if which == "full" else (custom, CUSTOM.eps, CUSTOM.scale)
    g = torch.Generator().manual_seed(4)
    img = torch.randn(3, run.pre.model.config.embed_dim, generator=g)
    txt = img + 0.7 * torch.randn(img.shape, generator=g)
    heads = run.pre.model.heads
    saved = heads["image_report"], heads["text_report"]
    heads["image_report"], heads["text_report"] = naive.Fixed(img), naive.Fixed(txt)
    try:
        with torch.no_grad():
            out = run.pre.contrastive_losses(run.pre.contrastive_features(run.batch))
    finally:
        heads["image_report"], heads["text_report"] = saved
    assert_term(out, "itc_report_loss", naive.clip_loss(img, txt, scale, eps))
    assert (
        abs(naive.clip_loss(img, txt, scale, eps) - naive.clip_loss(img, txt, scale, 0.0)) > 0.05
    )  # not vacuous


def test_sentence_and_word_levels_follow_the_config(tokenizer, reports):
    """Levels swapped in the config (sentence on the 4^3 map, word on the 2^3 map): the losses follow."""
    pre = make_pretrainer(tokenizer, objectives=["itc_sentence", "itc_word"], dropout=0.0, sentence_level=-3,
                          word_level=-2)  # fmt: skip
    batch = make_batch(tokenizer, reports, 3, seed=1)
    out, spy = run_recorded(pre, batch, SEED)
    expected = naive_terms(pre, batch, spy, DEFAULT)
    for term in ("itc_sentence_loss", "itc_word_loss"):
        assert_term(out, term, expected[term])


def test_loss_weights_scale_every_term_of_their_objective(custom, tokenizer):
    """The task's total is sum(weight[objective] * term), for each term of each objective, and the
    task hands its label smoothing / temperatures to the pretrainer; the negative cache weighs alike."""
    from velvet.pretraining.negative_cache import cached_negatives_step
    from velvet.tasks.pretrain import PretrainTask

    weights = {"itc_report": 0.5, "itc_sentence": 2.0, "itc_word": 3.0, "vis_ssl": 0.25}
    # written out here, not read from the registry: a term missing there must show up as a wrong total
    terms_of = {"itc_report": ["itc_report_loss"], "itc_sentence": ["itc_sentence_loss"],
                "itc_word": ["itc_word_loss"], "vis_ssl": ["vis_rot_loss", "vis_contrast_loss", "vis_recon_loss"]}  # fmt: skip
    task = PretrainTask(
        model={"preset": "velvet-tiny", "local_attention": CUSTOM.attention}, objectives=list(weights),
        loss_weights=weights, label_smoothing=CUSTOM.eps,
        local_temperatures=CUSTOM.temps, local_agg=CUSTOM.agg, ssl_temperature=CUSTOM.tau, ssl_embed_dim=32, seed=0,
    )  # fmt: skip
    task._build(task.model_config.for_data(tokenizer=tokenizer), _tokenizer_meta(tokenizer))
    pre = task.pretrainer
    with torch.no_grad():
        pre.model.logit_scale.log_scale.fill_(math.log(CUSTOM.scale))
    pre.eval()  # the task's text config has dropout; eval makes the step deterministic
    batch = custom.batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a trainer
        with torch.no_grad():
            loss = task.training_step(batch, 0)
        terms, spy = run_recorded(pre, batch, task.step_generator(0))
    expected = naive_terms(pre, batch, spy, CUSTOM, scale=CUSTOM.scale)
    for term in ("itc_report_loss", "itc_sentence_loss", "itc_word_loss", "vis_contrast_loss"):
        assert_term(terms, term, expected[term])  # the task's settings reached the losses
    want = sum(weights[o] * float(terms[t]) for o, ts in terms_of.items() for t in ts)
    assert float(loss) == pytest.approx(want, rel=1e-5)

    cached = cached_negatives_step(
        pre, batch, 3, weights=weights, generator_factory=lambda i: torch.Generator().manual_seed(i)
    )
    want = sum(weights[o] * float(cached[t]) for o, ts in terms_of.items() for t in ts)
    assert float(cached["loss"]) == pytest.approx(want, rel=1e-5)
    # what checkpoints and exports store: the local settings training used
    saved = task.model_config.to_dict()
    assert (saved["local_temperatures"], saved["local_agg"], saved["local_attention"]) == (
        list(CUSTOM.temps), CUSTOM.agg, CUSTOM.attention
    )


def test_pretrainer_refuses_local_settings_that_differ_from_the_model(tokenizer):
    """Temperatures given to the pretrainer but not to the model would make evaluation score differently."""
    with pytest.raises(ValueError, match="local_temperatures.*model config"):
        make_pretrainer(tokenizer, objectives=["itc_word"], pretrainer_kwargs=dict(local_temperatures=(2.0, 3.0, 7.0)))
    with pytest.raises(ValueError, match="local_agg.*model config"):
        make_pretrainer(tokenizer, objectives=["itc_word"], pretrainer_kwargs=dict(local_agg="mean"))
    same = make_pretrainer(
        tokenizer, objectives=["itc_word"], pretrainer_kwargs=dict(local_agg="mean"), local_agg="mean"
    )
    assert same.losses["itc_word"].agg == "mean"
