"""Vision-SSL views: rotation, cut-out, the view dict; determinism with a generator."""

from __future__ import annotations

import pytest
import torch

from velvet.models.vision.ssl_views import cutout, make_ssl_views, rotate, rotate_views


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_rotation_matches_rot90_per_sample_and_inverts() -> None:
    x = torch.rand(6, 2, 8, 10, 10)
    rotated, k = rotate_views(x, _gen(0))
    assert k.dtype == torch.int64 and k.shape == (6,) and set(k.tolist()) <= {0, 1, 2, 3}
    for b in range(6):  # the reference's per-sample rot90 in the (W, D) plane
        torch.testing.assert_close(rotated[b], torch.rot90(x[b], int(k[b]), dims=(2, 3)), rtol=0, atol=0)
    torch.testing.assert_close(rotate(rotated, -k), x, rtol=0, atol=0)


def test_rotation_covers_all_angles_and_hw_plane() -> None:
    x = torch.rand(64, 1, 6, 6, 3)  # M3D-like: only H == W
    rotated, k = rotate_views(x, _gen(1), plane=(2, 3))
    assert set(k.tolist()) == {0, 1, 2, 3}
    torch.testing.assert_close(rotate(rotated, -k, plane=(2, 3)), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not square"):
        rotate_views(x, _gen(1))  # (W, D) = (6, 3)
    with pytest.raises(ValueError, match="plane"):
        rotate(x, k, plane=(1, 2))


@pytest.mark.parametrize("paste_other", [False, True])
def test_cutout_mask_marks_exactly_the_changed_voxels(paste_other: bool) -> None:
    x = torch.rand(4, 2, 24, 20, 16) * 0.5 + 2.0  # outside the noise range [0, 1]: any replacement shows
    out, mask = cutout(x, _gen(3), paste_other=paste_other)
    assert mask.shape == (4, 1, 24, 20, 16) and mask.dtype == torch.bool
    assert mask.any()
    # pasted voxels come from another sample, whose values differ from this one's everywhere
    assert torch.equal(out != x, mask.expand_as(x))
    if not paste_other:
        noise = out[mask.expand_as(x)]
        assert noise.min() >= 0 and noise.max() <= 1  # min-max normalised noise


def test_cutout_boxes_are_cuboids_within_size_bounds() -> None:
    x = torch.rand(1, 1, 40, 40, 40)
    for seed in range(20):
        _, mask = cutout(x, _gen(seed), max_drop=0.02, paste_other=False)  # usually a single box
        idx = torch.nonzero(mask[0, 0])
        if idx.numel() == 0:
            continue
        extent = idx.max(0).values - idx.min(0).values + 1
        if int(extent.prod()) == idx.shape[0]:  # one box: check the edge range [2, 10) of 40
            assert bool((extent >= 2).all()) and bool((extent < 10).all()), extent


def test_cutout_fraction_within_bounds_over_many_seeds() -> None:
    x = torch.rand(8, 1, 32, 32, 32)
    max_box = 0.25**3  # one box can overshoot the target
    fractions = []
    for seed in range(40):
        _, mask = cutout(x, _gen(seed), max_drop=0.3, paste_other=False)
        fractions += mask.float().mean(dim=(1, 2, 3, 4)).tolist()
    assert min(fractions) >= 0.0 and max(fractions) <= 0.3 + max_box
    mean = sum(fractions) / len(fractions)
    assert 0.08 < mean < 0.16, mean  # targets average 0.15; overlaps make the union a little smaller


def test_views_are_deterministic_with_a_generator() -> None:
    x = torch.rand(3, 1, 16, 16, 16)
    a, b, c = make_ssl_views(x, _gen(7)), make_ssl_views(x, _gen(7)), make_ssl_views(x, _gen(8))
    assert set(a) == {"view1", "view2", "target1", "target2", "mask1", "mask2", "rot1", "rot2"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ssl_view_targets_are_the_rotated_input() -> None:
    x = torch.rand(4, 1, 16, 16, 16)
    views = make_ssl_views(x, _gen(0), max_drop=0.5)
    for i in (1, 2):
        target, view, mask = views[f"target{i}"], views[f"view{i}"], views[f"mask{i}"]
        torch.testing.assert_close(rotate(target, -views[f"rot{i}"]), x, rtol=0, atol=0)
        torch.testing.assert_close(view[~mask], target[~mask], rtol=0, atol=0)
    assert not torch.equal(views["view1"], views["view2"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="B, C, H, W, D"):
        cutout(torch.rand(1, 16, 16, 16))
    with pytest.raises(ValueError, match="max_drop"):
        cutout(torch.rand(1, 1, 8, 8, 8), max_drop=1.5)
