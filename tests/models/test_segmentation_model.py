"""SegmentationModel: config checks, strict encoder loading from every source, save / load."""

from __future__ import annotations

import pytest
import torch

from velvet.models.segmentation import SegmentationConfig, SegmentationModel
from velvet.models.segmentation_encoder import encoder_config, load_encoder
from velvet.models.weights import WeightsMismatchError

TINY = {"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]}
NAMES = ("background", "liver", "spleen")


def seg_model(vision=TINY, **kw) -> SegmentationModel:
    torch.manual_seed(0)
    return SegmentationModel(SegmentationConfig(NAMES, vision=vision, roi_size=(64, 64, 64), **kw))


def velvet_model():
    import velvet

    torch.manual_seed(1)
    return velvet.create_model("velvet-tiny", vision=TINY, text={"preset": "text-tiny", "num_fusion_layers": 0})


def encoder_tensors(model: SegmentationModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.encoder.state_dict().items() if not k.endswith("relative_position_index")}


def test_config_checks():
    with pytest.raises(ValueError, match="divisible by 32"):
        SegmentationConfig(NAMES, vision=TINY, roi_size=(64, 64, 48))
    with pytest.raises(ValueError, match="1-voxel bottleneck"):
        SegmentationConfig(NAMES, vision=TINY, roi_size=(32, 32, 32))
    SegmentationConfig(NAMES, vision=TINY, roi_size=(32, 32, 32), norm_name="batch")  # allowed with batch norm
    with pytest.raises(ValueError, match="divisible by 12"):
        SegmentationConfig(NAMES, vision={"preset": "swin-tiny", "embed_dim": 16}, roi_size=(64, 64, 64))
    with pytest.raises(ValueError, match="duplicates"):
        SegmentationConfig(("background", "a", "a"), vision=TINY, roi_size=(64, 64, 64))
    with pytest.raises(ValueError, match="Swin"):
        SegmentationConfig(NAMES, vision={"preset": "vit3d-tiny"}, roi_size=(64, 64, 64))


def test_encoder_from_velvet_directory_is_the_velvet_vision_encoder(tmp_path):
    source = velvet_model()
    source.save_pretrained(tmp_path / "pre")
    model = seg_model()
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("net.swinViT.")}
    summary = load_encoder(model, tmp_path / "pre")
    assert "velvet model" in summary
    expected = {k[len("swin."):]: v for k, v in source.vision.state_dict().items()}
    got = model.encoder.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    # the decoder is untouched
    for key, value in decoder_before.items():
        assert torch.equal(model.state_dict()[key], value), key
    # the architecture travels with the source
    assert encoder_config(tmp_path / "pre").to_dict() == source.vision.config.to_dict()
    # and the encoder's features are the velvet encoder's (same forward through the same weights)
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        ours = model.net.swinViT(x, normalize=True)[1:]
        theirs = source.vision(x)["maps"]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_encoder_from_monai_ssl_layout(tmp_path):
    reference = seg_model()
    # the released model_swinvit.pt layout: "module." prefix, mlp.fc1/fc2, SSL heads beside the encoder
    raw = {}
    for key, value in reference.encoder.state_dict().items():
        if key.endswith("relative_position_index"):
            continue  # MONAI's SSL files lack this constant buffer
        raw["module." + key.replace("mlp.linear1", "mlp.fc1").replace("mlp.linear2", "mlp.fc2")] = value
    raw["module.rotation_head.weight"] = torch.zeros(4, 192)
    path = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": raw}, path)
    model = seg_model()
    load_encoder(model, path)
    for key, value in encoder_tensors(reference).items():
        assert torch.equal(model.encoder.state_dict()[key], value), key
    assert encoder_config(path) is None  # a raw state dict records no architecture


def test_mismatched_encoder_is_refused_with_a_readable_diff(tmp_path):
    velvet_model().save_pretrained(tmp_path / "pre")
    other = seg_model(vision={**TINY, "depths": [1, 1, 2, 1]})
    with pytest.raises(WeightsMismatchError) as info:
        load_encoder(other, tmp_path / "pre")
    message = str(info.value)
    assert "layers3.0.blocks.1" in message and "missing" in message.lower()
    wide = seg_model(vision={**TINY, "embed_dim": 24, "num_heads": [1, 2, 2, 4]})
    with pytest.raises(WeightsMismatchError, match=r"attn.proj.weight: \(12, 12\) vs \(24, 24\)"):
        load_encoder(wide, tmp_path / "pre")


def test_segmentation_model_saves_and_loads(tmp_path):
    import velvet
    from velvet.data.contract import PreprocessContract

    model = seg_model()
    with torch.no_grad():
        model.net.out.conv.conv.bias.add_(0.3)
    model.save_pretrained(tmp_path / "seg", preprocess=PreprocessContract.resolve("segmentation"))
    loaded = velvet.from_pretrained(tmp_path / "seg")
    assert isinstance(loaded, SegmentationModel) and loaded.class_names == NAMES
    assert loaded.preprocess == PreprocessContract.resolve("segmentation")
    x = torch.rand(1, 1, 64, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # and its encoder can start another segmentation model
    fresh = seg_model()
    load_encoder(fresh, tmp_path / "seg")
    for key, value in encoder_tensors(model).items():
        assert torch.equal(fresh.encoder.state_dict()[key], value), key


def test_sliding_window_covers_volumes_of_any_size():
    model = seg_model().eval()
    x = torch.rand(1, 1, 70, 50, 65)
    logits = model.predict_logits(x, overlap=0.5)
    assert logits.shape == (1, 3, 70, 50, 65)
    labels = model.predict_labels(x)
    assert labels.dtype == torch.uint8 and torch.equal(labels, logits.argmax(1).to(torch.uint8))
