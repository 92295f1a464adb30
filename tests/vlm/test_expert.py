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


def test_sides_follow_the_affine_and_hu_and_sided_volumes_by_hand():
    """A left-right flipped file (LAS storage) flips every side; mean HU and effusion per side by hand."""
    classes = {0: "background", 1: "liver", 12: "pleural_effusion", 11: "lesion"}
    lab = np.zeros((10, 4, 4), dtype=np.int64)
    lab[0:5] = 1  # liver at low index
    lab[1, 1, 1] = 11  # one lesion voxel inside it
    lab[8:10, 0, 0] = 12  # 2 effusion voxels at high index
    lab[0, 3, 3] = 12  # 1 at low index
    hu = np.full(lab.shape, -900.0)
    hu[lab == 1] = 60.0
    hu[1, 1, 1] = 200.0
    ras = expert_findings(lab, (1.0, 1.0, 1.0), classes, image=hu)
    assert ras["mean_hu"] == {"liver": 60} and ras["lesions"][0]["hu"] == 200
    assert ras["lesions"][0]["side"] == "right"  # low RAS x = the patient's right
    # 10 mm voxels: 1 mL each, so the side volumes count voxels
    big = expert_findings(lab, None, classes, affine=np.diag([10.0, 10.0, 10.0, 1.0]))
    assert big["sided_ml"] == {"pleural_effusion": {"right": 1.0, "left": 2.0}}
    las = np.diag([-10.0, 10.0, 10.0, 1.0])  # index 0 is now the patient's left
    flipped = expert_findings(lab, None, classes, affine=las)
    assert flipped["sided_ml"] == {"pleural_effusion": {"right": 2.0, "left": 1.0}}
    assert (
        flipped["lesions"][0]["side"] == "left"
        and flipped["volumes_ml"]["liver"] == big["volumes_ml"]["liver"]
    )
    assert flipped["lesions"][0]["size_mm"] == 10  # spacing from the affine's columns


def test_text_lists_requested_organs_and_caps_lesions():
    findings = {
        "volumes_ml": {"liver": 1650.4, "kidney_right": 150.0},
        "mean_hu": {"liver": 52},
        "sided_ml": {"pleural_effusion": {"right": 120.2, "left": 0.0}},
        "lesions": [
            {"size_mm": s, "organ": "kidney_right", "side": "right", "voxels": s} for s in (30, 20, 10, 5)
        ],
    }
    text = expert_text(findings, ["liver", "kidney_left", "ascites"], max_lesions=2)
    assert text == (
        "Segmentation: liver 1650 mL 52 HU, left kidney 0 mL, ascites 0 mL; pleural effusion right 120 mL, "
        "left 0 mL; 4 lesions: 30 mm in the right kidney (right); 20 mm in the right kidney (right)."
    )


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    from velvet.data.phantoms import PhantomConfig
    from velvet.data.phantoms.generate import generate_phantoms

    config = PhantomConfig(
        n_cases=10, n_val=0, n_test=0, seed=3, shape=(64, 64, 48), spacing=(6.0, 6.0, 6.67)
    )
    return generate_phantoms(tmp_path_factory.mktemp("expert") / "data", config, progress=False)


def test_expert_file_from_labels_agrees_with_the_phantom_ground_truth(phantom_data, tmp_path):
    """The expert lines of the phantoms' own label maps say what the generator put there: lesion
    organs, effusion sides, a missing kidney; the file reads back for every case."""
    import json

    from velvet.cli.main import main
    from velvet.vlm.expert_file import read_expert

    out = tmp_path / "expert.jsonl"
    assert main(["expert", "--manifest", str(phantom_data), "--from-labels", "--out", str(out)]) == 0
    rows = {r["case_id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    truth = {
        d["id"]: d["findings"]
        for d in map(json.loads, (phantom_data.parent / "findings.jsonl").read_text("utf-8").splitlines())
    }
    assert set(rows) == set(truth) and read_expert(out, truth) == {k: r["text"] for k, r in rows.items()}
    for case, f in truth.items():
        got = rows[case]["findings"]
        assert sorted({d["organ"] for d in got["lesions"]}) == sorted({d["organ"] for d in f["lesions"]}), (
            case
        )
        sides = {s for s, ml in got["sided_ml"]["pleural_effusion"].items() if ml > 0}
        want = {None: set(), "right": {"right"}, "left": {"left"}, "bilateral": {"right", "left"}}[
            f["effusion"]
        ]
        assert sides == want, case
        kidneys = {k for k in ("kidney_right", "kidney_left") if got["volumes_ml"].get(k, 0) > 0}
        if f["nephrectomy"]:
            assert kidneys == {"kidney_right", "kidney_left"} - {f"kidney_{f['nephrectomy']}"}, case
        assert rows[case]["source"] == "labels" and rows[case]["text"].startswith("Segmentation: liver ")


def test_read_expert_errors_name_line_and_case(tmp_path):
    from velvet.data.errors import DataError
    from velvet.vlm.expert_file import read_expert

    p = tmp_path / "expert.jsonl"
    p.write_text('{"case_id": "a", "text": "Segmentation: x."}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: not JSON"):
        read_expert(p)
    p.write_text('{"case_id": "a", "text": "x"}\n{"case_id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: case 'a' appears twice"):
        read_expert(p)
    p.write_text('{"case_id": "a", "text": "x"}\n{"case_id": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: needs string fields"):
        read_expert(p)
    p.write_text('{"case_id": "a", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"no expert line for 1 case\(s\), e.g. \['b'\]"):
        read_expert(p, ["a", "b"])
    with pytest.raises(DataError, match="expert file not found"):
        read_expert(tmp_path / "none.jsonl")


def test_prompt_puts_the_expert_line_first_and_requires_it():
    from velvet.vlm.collate import sample_texts
    from velvet.vlm.prompts import prompt_text

    line = "Segmentation: liver 1650 mL;  no lesion."
    assert prompt_text("Is there ascites?", ["Yes", "No"], context=line) == (
        "Segmentation: liver 1650 mL; no lesion.\nQuestion: Is there ascites?\nOptions: A. Yes B. No\nAnswer:"
    )
    assert prompt_text(None, context=line).splitlines()[0] == "Segmentation: liver 1650 mL; no lesion."
    assert prompt_text("q", with_question=False, context=line).endswith("lesion.\nAnswer:")
    sample = {"id": "q1", "question": "Is there ascites?", "choices": ["Yes", "No"], "answer_index": 1}
    assert sample_texts(sample)[0].startswith("Question:")  # without expert the line is not used
    with pytest.raises(ValueError, match="sample 'q1' has no expert line"):
        sample_texts(sample, expert=True)
    assert sample_texts({**sample, "expert": line}, expert=True) == (
        prompt_text("Is there ascites?", ["Yes", "No"], context=line),
        "B. No",
    )


class _BodyAndLesion:
    """A stand-in segmentation model with a known answer: body where the windowed scan is above 0.3,
    lesion where it is above 0.7."""

    class_names = ("background", "body", "lesion")

    def __init__(self, contract):
        self.preprocess = contract

    def predict_labels(self, x, **_):
        import torch

        return (x[:, 0] > 0.3).to(torch.uint8) + (x[:, 0] > 0.7).to(torch.uint8)


def test_expert_for_scan_reads_a_las_file_in_world_coordinates(tmp_path):
    """A LAS, anisotropic scan: the lesion at low voxel x is at high RAS x, the patient's left; its
    size, HU and the body volume are in the file's own millimetres."""
    import nibabel as nib

    from velvet.data.contract import PreprocessContract
    from velvet.vlm.expert_file import expert_for_scan

    hu = np.full((60, 50, 24), -1000, np.int16)
    hu[5:55, 5:45, 2:22] = 0
    hu[8:20, 30:42, 4:12] = 250  # 12 x 12 x 8 voxels = 18 x 24 x 24 mm
    affine = np.array([[-1.5, 0, 0, 40.0], [0, 2.0, 0, -30.0], [0, 0, 3.0, 15.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(hu, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    nib.save(image, tmp_path / "scan.nii.gz")
    contract = PreprocessContract(
        name="t", hu_window=(-200.0, 300.0), crop_foreground=True, spacing=(1.5, 2.0, 3.0), spatial_size=None
    )
    f = expert_for_scan(_BodyAndLesion(contract), tmp_path / "scan.nii.gz", min_lesion_voxels=1)
    assert f["lesions"] == [
        {"size_mm": 24, "organ": "body", "side": "left", "voxels": 12 * 12 * 8, "hu": 250}
    ]
    assert f["volumes_ml"] == {"body": round((50 * 40 * 20 - 12 * 12 * 8) * 9.0 / 1000, 1)}
    assert f["mean_hu"] == {"body": 0}


def test_expert_cli_with_a_segmentation_model(phantom_data, tmp_path):
    """`velvet expert --seg-model DIR`: one line per case, the source recorded, errors as exit 1."""
    import json

    import torch

    from velvet.cli.main import main
    from velvet.data.contract import PreprocessContract
    from velvet.models.segmentation import SegmentationConfig, SegmentationModel

    torch.manual_seed(0)
    names = ("background", "liver", "lesion")
    model = SegmentationModel(
        SegmentationConfig(
            names,
            vision={"preset": "swin-tiny", "window_size": 4, "depths": [1, 1, 1, 1]},
            roi_size=(32, 32, 32),
            norm_name="batch",
        )
    )
    contract = PreprocessContract(
        name="t", hu_window=(-200.0, 300.0), spacing=None, spatial_size=(32, 32, 32)
    )
    model.save_pretrained(tmp_path / "seg", preprocess=contract)
    out = tmp_path / "expert.jsonl"
    args = ["expert", "--manifest", str(phantom_data), "--out", str(out), "--split", "train"]
    assert main([*args, "--seg-model", str(tmp_path / "seg"), "--overlap", "0", "--organs", "liver"]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 10 and {r["source"] for r in rows} == {f"segmentation model {tmp_path / 'seg'}"}
    assert all(r["text"].startswith("Segmentation: liver ") for r in rows)
    assert main([*args, "--seg-model", str(tmp_path / "nowhere")]) == 1
