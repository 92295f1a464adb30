"""Expert findings from a hand-built label map: volumes in mL, lesion size, organ and side."""

from __future__ import annotations

import numpy as np
import pytest

from velvet.vlm.expert import expert_findings, expert_text

CLASSES = {0: "background", 1: "liver", 2: "spleen", 11: "lesion"}


def test_volumes_and_lesions_by_hand():
    lab = np.zeros((20, 10, 10), dtype=np.int64)
    lab[2:8, :, :] = 1  # liver on the low-x side = the patient's right (RAS)
    lab[12:18, 2:6, 2:6] = 2  # spleen on the patient's left
    lab[4:7, 3:5, 3:4] = 11  # a lesion inside the liver: 3 x 2 x 1 voxels
    lab[15, 3, 3] = 11  # a one-voxel lesion in the spleen
    f = expert_findings(lab, (2.0, 1.0, 1.0), CLASSES)
    # liver: 6*10*10 voxels less the 6 lesion voxels, 2 mm^3 each
    assert f["volumes_ml"] == {
        "liver": round((600 - 6) * 2 / 1000, 1),  # mL to one decimal
        "spleen": round((96 - 1) * 2 / 1000, 1),
    }
    assert f["lesions"] == [
        {"size_mm": 6, "organ": "liver", "side": "right", "voxels": 6},
        {"size_mm": 2, "organ": "spleen", "side": "left", "voxels": 1},
    ]
    assert (
        expert_findings(lab, (2.0, 1.0, 1.0), CLASSES, min_lesion_voxels=2)["lesions"][0]["organ"] == "liver"
    )
    text = expert_text(f, organs=["liver"])
    assert (
        text == "Segmentation: liver 1 mL; 2 lesions: 6 mm in the liver (right); 2 mm in the spleen (left)."
    )


def test_no_lesion_and_bad_input():
    lab = np.ones((4, 4, 4), dtype=np.int64)
    assert (
        expert_text(expert_findings(lab, (10.0, 10.0, 10.0), CLASSES))
        == "Segmentation: liver 64 mL; no lesion."
    )
    with pytest.raises(ValueError, match="H, W, D"):
        expert_findings(lab[0], (1.0, 1.0, 1.0), CLASSES)


def test_sides_on_a_preprocessed_phantom(tmp_path):
    """The side rule on velvet's input grid: the liver is on the patient's right, the spleen on the left."""
    import json

    from velvet.data.cache import UncachedVolumes
    from velvet.data.manifest import read_manifest
    from velvet.data.phantoms import PhantomConfig
    from velvet.data.phantoms.generate import generate_phantoms
    from velvet.models.pretrained import from_pretrained

    config = PhantomConfig(n_cases=1, n_val=0, n_test=0, seed=5, shape=(64, 64, 48), spacing=(6.0, 6.0, 6.67))
    manifest = generate_phantoms(tmp_path / "data", config, progress=False)
    classes = {
        int(k): v for k, v in json.loads((manifest.parent / "classes.json").read_text("utf-8")).items()
    }
    contract = from_pretrained("velvet-tiny.phantoms").preprocess
    lab = UncachedVolumes(contract, label_map=True).get_or_create(read_manifest(manifest).records[0])[
        "label_map"
    ][0]
    lab = lab.numpy()
    liver, spleen = (next(i for i, n in classes.items() if n == name) for name in ("liver", "spleen"))
    # relabel each organ as a "lesion" in turn: the side the rule gives it
    for organ, side in ((liver, "right"), (spleen, "left")):
        fake = np.where(lab == organ, 99, lab)
        found = expert_findings(fake, (1.0, 1.0, 1.0), {**classes, 99: "lesion"})["lesions"]
        assert found[0]["side"] == side
