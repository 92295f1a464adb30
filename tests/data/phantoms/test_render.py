"""Phantom volumes: determinism, HU realism, label maps, and findings that are visible in the voxels."""

from __future__ import annotations

import numpy as np
import pytest

from velvet.data.phantoms import CLASS_NAMES, PhantomConfig, render_case, sample_case
from velvet.data.phantoms.render import grid_axes

DEMO = PhantomConfig(n_cases=60, n_val=0, n_test=0)  # 96x96x64 at 4x4x5 mm
COARSE = PhantomConfig(n_cases=80, n_val=0, n_test=0, shape=(48, 48, 32), spacing=(8.0, 8.0, 10.0))
CLS = {name: k for k, name in CLASS_NAMES.items()}
ORGAN_CLASS = {
    "liver": CLS["liver"],
    "spleen": CLS["spleen"],
    "kidney_right": CLS["kidney_right"],
    "kidney_left": CLS["kidney_left"],
    "lung_right": CLS["lung_right"],
    "lung_left": CLS["lung_left"],
}


@pytest.fixture(scope="module")
def demo_cases():
    return [render_case(DEMO, i) for i in range(12)]


@pytest.fixture(scope="module")
def coarse_cases():
    return [render_case(COARSE, i) for i in range(COARSE.n_cases)]


def test_same_seed_and_index_give_identical_cases():
    a, b = render_case(DEMO, 5), render_case(DEMO, 5)
    np.testing.assert_array_equal(a.volume, b.volume)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    assert a.report == b.report and a.vqa == b.vqa and a.labels == b.labels


def test_different_seed_or_index_give_different_cases():
    base = render_case(DEMO, 5)
    other_seed = render_case(PhantomConfig(n_cases=60, n_val=0, n_test=0, seed=1), 5)
    other_index = render_case(DEMO, 6)
    for other in (other_seed, other_index):
        assert not np.array_equal(base.volume, other.volume)
        assert base.report != other.report


def test_case_depends_only_on_seed_and_index_not_on_grid_or_count():
    small = PhantomConfig(n_cases=10, n_val=0, n_test=0, shape=(40, 50, 30), spacing=(9.6, 7.7, 10.7))
    big = PhantomConfig(n_cases=500, n_val=0, n_test=0)
    a, b = sample_case(small, 7), sample_case(big, 7)
    assert a.report == b.report and a.findings == b.findings and a.vqa == b.vqa


def test_volume_grid_dtype_and_affine():
    config = PhantomConfig(n_cases=3, n_val=0, n_test=0, shape=(40, 50, 30), spacing=(9.6, 7.7, 10.7))
    case = render_case(config, 1)
    assert case.volume.shape == case.label_map.shape == (40, 50, 30)
    assert case.volume.dtype == np.int16 and case.label_map.dtype == np.uint8
    np.testing.assert_allclose(np.diag(case.affine)[:3], (9.6, 7.7, 10.7))
    # centred grid: voxel (0,0,0) and the last voxel are symmetric about the origin
    far = case.affine @ np.array([39, 49, 29, 1.0])
    np.testing.assert_allclose(case.affine[:3, 3], -far[:3])
    as_float = render_case(
        PhantomConfig(n_cases=3, n_val=0, n_test=0, dtype="float32", shape=(40, 50, 30)), 1
    )
    assert as_float.volume.dtype == np.float32


def test_air_outside_the_body(demo_cases):
    for case in demo_cases:
        corners = case.volume[[0, 0, -1, -1], [0, -1, 0, -1], :].astype(np.float64)
        assert abs(corners.mean() + 1000) < 5
        assert corners.max() < -900
        assert case.volume.min() >= -1024 and case.volume.max() <= 3071


def test_organ_hu_in_realistic_ranges(demo_cases):
    ranges = {
        "spleen": (40, 55),
        "kidney_right": (25, 45),
        "kidney_left": (25, 45),
        "lung_right": (-900, -780),
        "lung_left": (-900, -780),
        "stomach": (5, 45),  # fluid-filled; its gas cap is not labelled stomach
        "pleural_effusion": (0, 25),
        "ascites": (-5, 25),
    }
    for case in demo_cases:
        f, vol, lab = case.findings, case.volume.astype(np.float64), case.label_map
        means = {name: vol[lab == k].mean() for name, k in CLS.items() if (lab == k).any()}
        liver = (10, 40) if f.steatosis else (50, 70)
        blood = (140, 210) if f.contrast else (30, 50)
        expected = {**ranges, "liver": liver, "heart": blood, "aorta": blood, "bone": (250, 1000)}
        for name, (lo, hi) in expected.items():
            if name in means:
                assert lo <= means[name] <= hi, (case.case_id, name, means[name])
        # soft-tissue checks that matter for reading: fatty liver is darker than the spleen
        assert (means["liver"] < means["spleen"]) == f.steatosis


def test_label_map_ids_are_documented_classes(demo_cases):
    for case in demo_cases:
        ids = set(np.unique(case.label_map).tolist())
        assert ids <= set(CLASS_NAMES)
        for organ in ("liver", "spleen", "lung_right", "lung_left", "heart", "aorta", "bone", "stomach"):
            assert CLS[organ] in ids, (case.case_id, organ)
        assert (CLS["lesion"] in ids) == bool(case.findings.lesions)


def _lesion_mask(case, config, lesion):
    xs, ys, zs = grid_axes(config.shape, config.spacing)
    grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = lesion.shape.scaled(1.15).r2(grid).reshape(config.shape) <= 1.0
    return inside & (case.label_map == CLS["lesion"])


def test_lesions_are_visible_and_differ_from_their_organ_as_stated(demo_cases):
    seen = set()
    for case in demo_cases:
        vol = case.volume.astype(np.float64)
        for lesion in case.findings.lesions:
            mask = _lesion_mask(case, DEMO, lesion)
            expected_voxels = 4 / 3 * np.pi * np.prod(lesion.shape.semi_axes) / np.prod(DEMO.spacing)
            assert mask.sum() >= 0.6 * expected_voxels, (case.case_id, lesion.organ, lesion.diameter_mm)
            organ_mean = vol[case.label_map == ORGAN_CLASS[lesion.organ]].mean()
            lesion_mean = vol[mask].mean()
            if lesion.density == "hypodense":
                assert lesion_mean < organ_mean - 25
            elif lesion.density == "hyperdense":
                assert lesion_mean > organ_mean + 60
            elif lesion.density == "calcified":
                assert lesion_mean > 350
            else:  # soft-tissue lung nodule
                assert lesion.organ.startswith("lung") and lesion_mean > organ_mean + 600
            seen.add((lesion.organ.split("_")[0], lesion.density))
    assert len(seen) >= 6  # the cases above cover several organs and densities


def test_global_findings_are_visible_in_the_label_map(coarse_cases):
    volumes: dict[str, list[tuple[bool, float]]] = {"liver": [], "spleen": [], "heart": []}
    for case in coarse_cases:
        f, lab = case.findings, case.label_map
        count = {name: int((lab == k).sum()) for name, k in CLS.items()}
        assert (count["pleural_effusion"] > 0) == (f.effusion is not None), case.case_id
        assert (count["ascites"] > 0) == (f.ascites is not None), case.case_id
        for side in ("right", "left"):
            assert (count[f"kidney_{side}"] == 0) == (f.nephrectomy == side), case.case_id
        if f.effusion is not None:
            sides = ("right", "left") if f.effusion == "bilateral" else (f.effusion,)
            fluid_x = np.nonzero(lab == CLS["pleural_effusion"])[0]
            centre = (COARSE.shape[0] - 1) / 2
            # RAS: patient right is -x (low index), left is +x
            assert ("right" in sides) == bool((fluid_x < centre).any())
            assert ("left" in sides) == bool((fluid_x > centre).any())
        volumes["liver"].append((f.hepatomegaly, count["liver"]))
        volumes["spleen"].append((f.splenomegaly, count["spleen"]))
        volumes["heart"].append((f.cardiomegaly, count["heart"]))
    for organ, rows in volumes.items():
        enlarged = [v for big, v in rows if big]
        normal = [v for big, v in rows if not big]
        assert enlarged and normal, organ
        assert np.median(enlarged) > 1.3 * np.median(normal), organ


def test_texture_field_is_smooth_unit_scale_and_defined_in_millimetres():
    from velvet.data.phantoms.noise import smooth_noise

    rng = np.random.default_rng(0)
    fine = smooth_noise(rng, (96, 96, 64), (4.0, 4.0, 5.0))
    assert fine.dtype == np.float32 and 0.8 < fine.std() < 1.2 and abs(fine.mean()) < 0.2
    # neighbouring voxels 4 mm apart are strongly correlated (texture, not white noise)
    assert np.corrcoef(fine[:-1].ravel(), fine[1:].ravel())[0, 1] > 0.8
    # on a coarser grid the same 10 mm texture decorrelates faster between neighbours
    coarse = smooth_noise(rng, (24, 24, 16), (16.0, 16.0, 20.0))
    assert np.corrcoef(coarse[:-1].ravel(), coarse[1:].ravel())[0, 1] < 0.6
    assert np.isfinite(smooth_noise(rng, (1, 1, 1), (1.0, 1.0, 1.0))).all()  # tiny grid: no blow-up
    assert abs(float(smooth_noise(rng, (1, 1, 1), (1.0, 1.0, 1.0))[0, 0, 0])) < 10
