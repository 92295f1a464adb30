"""Train-time augmentation from recipe specs: which keys move together, errors, seeding."""

from __future__ import annotations

import pytest
import torch

from velvet.data.augment import Augmentation, build_transform


def _sample():
    image = torch.arange(4 * 4 * 4, dtype=torch.float32).reshape(1, 4, 4, 4) / 64
    label = (torch.arange(4 * 4 * 4).reshape(1, 4, 4, 4) % 3).long()
    return {"image": image, "label_map": label, "report": "r", "id": "c1"}


def test_a_flip_moves_image_and_label_map_together():
    aug = Augmentation([{"class_path": "RandFlipd", "init_args": {"spatial_axis": [0], "prob": 1.0}}])
    sample = _sample()
    out = aug(dict(sample))
    assert torch.equal(out["image"], sample["image"].flip(1))
    assert torch.equal(out["label_map"], sample["label_map"].flip(1))
    assert out["label_map"].dtype == torch.int64 and type(out["image"]) is torch.Tensor
    assert out["report"] == "r" and out["id"] == "c1"


def test_intensity_transform_leaves_the_label_map_alone_when_keyed_to_the_image():
    aug = Augmentation([{"class_path": "monai.transforms.RandShiftIntensityd",
                         "init_args": {"keys": ["image"], "offsets": (0.5, 0.5), "prob": 1.0}}])
    sample = _sample()
    out = aug(dict(sample))
    assert torch.allclose(out["image"], sample["image"] + 0.5)
    assert torch.equal(out["label_map"], sample["label_map"])


def test_samples_are_seeded_from_the_torch_rng():
    aug = Augmentation([{"class_path": "RandFlipd", "init_args": {"spatial_axis": [0], "prob": 0.5}}])
    torch.manual_seed(3)
    a = [aug(_sample())["image"] for _ in range(8)]
    torch.manual_seed(3)
    b = [aug(_sample())["image"] for _ in range(8)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    flipped = sum(not torch.equal(x, _sample()["image"]) for x in a)
    assert 0 < flipped < 8  # independent draws per sample, not one shared decision


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"class_path": "RandFlipX"}, "no such transform"),
        ({"class_path": "RandFlip"}, "not a MONAI dictionary transform"),
        ({"class_path": "RandFlipd", "init_args": {"nonsense": 1}}, "RandFlipd"),
        ({"transform": "RandFlipd"}, "class_path"),
    ],
)
def test_bad_specs_are_refused_clearly(spec, message):
    with pytest.raises(ValueError, match=message):
        build_transform(spec, ["image"])
