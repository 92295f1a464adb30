"""VolumeLanguageModel: the batched loss, generation and option scores against one-at-a-time references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

QUESTIONS = [
    "Is there a focal lesion in the liver?",
    "Is the spleen enlarged and is there a very long question here?",
]
CHOICES = [["Yes", "No"], ["No", "Yes", "Unclear"]]


def _batch(vlm, questions=QUESTIONS, choices=CHOICES, answers=(0, 2)):
    from velvet.vlm.lm_batch import training_batch
    from velvet.vlm.prompts import closed_target, prompt_text

    prompts = [prompt_text(q, c) for q, c in zip(questions, choices, strict=True)]
    targets = [closed_target(c, a) for c, a in zip(choices, answers, strict=True)]
    batch = training_batch(vlm.lm_tokenizer, prompts, targets, max_prompt_tokens=200, max_answer_tokens=16)
    batch["image"] = torch.rand(len(questions), 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    batch["question"] = dict(vlm.encoder.tokenizer(questions))
    batch.update(prompts=prompts, choices=choices)
    return batch, prompts, targets


def _reference_loss(vlm, batch, prompts, targets):
    """Per sample, unpadded: valid prefix tokens, BOS prompt target EOS; CE on target + EOS only."""
    tok = vlm.lm_tokenizer
    total, count = 0.0, 0
    for i in range(len(prompts)):
        question = {k: v[i : i + 1] for k, v in batch["question"].items()}
        prefix, mask = vlm.prefix(batch["image"][i : i + 1], question)
        prefix = prefix[0][mask[0]]  # drop padded question positions entirely
        p = tok(prompts[i], add_special_tokens=False)["input_ids"]
        t = tok(" " + targets[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([tok.bos_token_id, *p, *t])
        embeds = torch.cat([prefix, vlm.lm.get_input_embeddings()(ids)])[None]
        logits = vlm.lm(inputs_embeds=embeds).logits[0]
        start = prefix.shape[0] + 1 + len(p)  # first target position
        pred = logits[start - 1 : start - 1 + len(t)]
        total = total + F.cross_entropy(pred, torch.tensor(t), reduction="sum")
        count += len(t)
    return total / count


@pytest.mark.parametrize("bridge", ["visual", "fusion", "both"])
def test_batched_loss_equals_unpadded_samples(make_vlm, bridge):
    # float64: the batched path (masks, padding) and the reference run different kernels
    vlm = make_vlm(bridge=bridge, visual_levels=[-3, -1], visual_pool=2).eval().double()
    batch, prompts, targets = _batch(vlm)
    batch["image"] = batch["image"].double()
    with torch.no_grad():
        got = vlm(batch)
        want = _reference_loss(vlm, batch, prompts, targets)
    torch.testing.assert_close(got["loss"], want.to(got["loss"].dtype), atol=1e-10, rtol=1e-10)
    assert int(got["n_tokens"]) == sum(
        len(vlm.lm_tokenizer(" " + t, add_special_tokens=False)["input_ids"]) + 1 for t in targets
    )


def test_generation_equals_greedy_decoding_by_hand(make_vlm):
    from velvet.vlm.lm_batch import generation_batch

    vlm = make_vlm(bridge="both", visual_levels=[-1]).eval()
    batch, prompts, _ = _batch(vlm)
    g = generation_batch(vlm.lm_tokenizer, prompts, max_prompt_tokens=200)
    got = vlm.generate(batch["image"], g["input_ids"], g["attention_mask"], question=batch["question"],
                       max_new_tokens=6, do_sample=False, num_beams=1)  # fmt: skip
    tok = vlm.lm_tokenizer
    for i, prompt in enumerate(prompts):  # one sample, no padding, no cache
        question = {k: v[i : i + 1] for k, v in batch["question"].items()}
        prefix, mask = vlm.prefix(batch["image"][i : i + 1], question)
        prefix = prefix[0][mask[0]]
        ids = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
        new = []
        for _ in range(6):
            embeds = torch.cat([prefix, vlm.lm.get_input_embeddings()(torch.tensor(ids + new))])[None]
            nxt = int(vlm.lm(inputs_embeds=embeds).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
        assert got[i] == tok.decode(new, skip_special_tokens=True).strip()


def test_option_scores_equal_one_option_at_a_time(make_vlm):
    from velvet.vlm.scoring import option_scores

    vlm = make_vlm(bridge="fusion").eval()
    batch, _, _ = _batch(vlm)
    scores = option_scores(vlm, batch, [1, 0])
    for row, got in zip([1, 0], scores, strict=True):
        assert got.shape == (len(CHOICES[row]),)
        for k in range(len(CHOICES[row])):
            one, p, t = _batch(vlm, [QUESTIONS[row]], [CHOICES[row]], [k])
            with torch.no_grad():
                # sum of log-probabilities = -(mean CE * target tokens)
                ref = -_reference_loss(vlm, one, p, t) * (
                    len(vlm.lm_tokenizer(" " + t[0], add_special_tokens=False)["input_ids"]) + 1
                )
            torch.testing.assert_close(got[k], ref, atol=1e-4, rtol=1e-5)


def test_freezing_and_lora(make_vlm):
    vlm = make_vlm(bridge="visual", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    counts = vlm.trainable_parameter_count()
    assert counts["vision"] == counts["text"] == counts["fusion"] == counts["lm"] == 0
    # q and v of 2 layers: A (r x 32) + B (out x r); v_proj is 16 wide (2 kv heads x 8)
    assert counts["lora"] == 2 * (4 * 32 + 32 * 4) + 2 * (4 * 32 + 16 * 4)
    with pytest.raises(ValueError, match=r"dense.*match no module.*q_proj"):
        make_vlm(bridge="visual", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "dense"]})


def test_fusion_bridge_needs_fusion_layers(encoder, lm_tokenizer):
    from velvet.models.config import get_model_config
    from velvet.models.velvet import VelvetModel
    from velvet.vlm.config import VLMConfig
    from velvet.vlm.language_model import load_causal_lm
    from velvet.vlm.model import VolumeLanguageModel

    from .conftest import LLAMA

    text = {**encoder.config.text, "num_fusion_layers": 0}
    plain = VelvetModel(encoder.config.replace(text=text, visual_adapter=None))
    lm, tok = load_causal_lm({"config": dict(LLAMA)}, lm_tokenizer)
    with pytest.raises(ValueError, match="fusion layers"):
        VolumeLanguageModel(plain, lm, tok, VLMConfig(bridge="fusion"))
    assert get_model_config("velvet-tiny")  # the preset the fixture uses has fusion layers


def test_yes_no_head_bce_on_the_fused_cls_of_yes_no_items_only(make_vlm):
    """Method 6.4: the head reads the fused question's [CLS]; only yes/no rows enter the BCE."""
    from velvet.vlm.collate import _yes_no

    vlm = make_vlm(bridge="both", visual_levels=[-1], yes_no_head=True, yes_no_weight=0.5).eval()
    questions = [QUESTIONS[0], QUESTIONS[1], "Is the liver enlarged?"]
    choices = [["Yes", "No"], ["No", "Yes", "Unclear"], ["No", "Yes"]]
    batch, _, _ = _batch(vlm, questions, choices, answers=(0, 1, 0))
    batch["yes_no"] = torch.tensor(
        [_yes_no({"choices": c, "answer_index": a}) for c, a in zip(choices, (0, 1, 0), strict=True)]
    )
    assert batch["yes_no"].tolist() == [1, -1, 0]  # the 3-option item is not a yes/no item
    with torch.no_grad():
        out = vlm(batch)
        enc = vlm.encoder
        maps = enc.vision(batch["image"])["maps"]
        states = enc.text.forward_text(*(batch["question"][k] for k in
                                         ("input_ids", "token_type_ids", "attention_mask", "sentence_ids",
                                          "sentence_token_mask")), output_all=True)  # fmt: skip
        fused = enc.fuse(batch["question"], states["last_hidden_state"], enc.visual_tokens(maps))
        logits = vlm.yes_no_head(fused[:, 0]).squeeze(-1)
        want = F.binary_cross_entropy_with_logits(logits[[0, 2]], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(out["yes_no_loss"], want)
    torch.testing.assert_close(out["loss"], out["answer_loss"] + 0.5 * want)
    with pytest.raises(ValueError, match="yes/no head"):
        make_vlm(bridge="visual", yes_no_head=True)
