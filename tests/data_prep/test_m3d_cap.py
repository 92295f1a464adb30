"""M3D-Cap converter on a fabricated raw tree in the real layout (datasets.md 2 and 5)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from data_prep import m3d_cap
from velvet.data.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]
TEXT = (
    "Title: Hepatic hydatid cyst\n\n"
    "presentation: Right upper quadrant pain.\n\n"
    "patient: Age: 40 years Gender: Female\n\n"
    "study_findings: Large multiloculated cystic lesion in segment 7\nof the liver with daughter cysts.\n\n"
    "discussion: Appearances are typical of hydatid disease.\n"
)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=array.ndim == 3), str(path))


def _series(folder: Path, depth: int, *, size: int = 16, step: int = 10, suffix: str = ".png") -> None:
    """Slice ``i`` is the constant ``i * step``, so the stacking order is visible in the volume."""
    for i in range(depth):
        _png(folder / f"{i}{suffix}", np.full((size, size), i * step % 256, np.uint8))


@pytest.fixture
def raw_tree(tmp_path: Path) -> Path:
    """``ct_case/ct_case_00/000001`` (12 slices, one odd-sized, one RGB; a short series) + 000002 (deep)."""
    root = tmp_path / "M3D_Cap"
    case1 = root / "ct_case" / "ct_case_00" / "000001"
    axial = case1 / "Axial_non_contrast"
    _series(axial, 12)
    _png(axial / "5.png", np.full((20, 16), 50, np.uint8))  # odd size: dropped
    _png(axial / "7.png", np.stack([np.full((16, 16), 70, np.uint8)] * 3, axis=-1))  # RGB grey 70
    (axial / "._3.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS junk
    (axial / "Thumbs.db").write_bytes(b"junk")
    _series(case1 / "Coronal_bone_window", 3)  # below the depth threshold
    (case1 / "text.txt").write_text(TEXT, encoding="utf-8")
    case2 = root / "ct_case" / "ct_case_00" / "000002"
    _series(case2 / "Axial_C__portal_venous_phase", 96, size=4, step=1, suffix=".jpeg")
    (case2 / "text.txt").write_text("study_findings: Normal liver.\n", encoding="utf-8")
    (root / "ct_case" / "__MACOSX").mkdir()
    _series(root / "ct_case" / "__MACOSX" / "000001" / "x", 2)
    return root


def _convert(root: Path, out: Path, **kwargs) -> Path:
    kwargs.setdefault("depth_threshold", 5)
    kwargs.setdefault("val_fraction", 0.0)
    return m3d_cap.convert_m3d_cap(root, out, **kwargs)


def _skipped(out: Path) -> list[dict[str, str]]:
    with (out / "skipped.csv").open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_volumes_reports_and_manifest(raw_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = read_manifest(_convert(raw_tree, out))
    ids = sorted(r.id for r in manifest)
    assert ids == ["ct_case-000001-Axial_non_contrast", "ct_case-000002-Axial_C__portal_venous_phase"]

    img = nib.load(out / "volumes" / "ct_case-000001-Axial_non_contrast.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and data.shape == (8, 8, 11)  # 16x16 halved; slice 5 dropped
    # integer order (2 before 10), the odd slice 5 gone, the RGB slice 7 turned to its grey value
    expected = [i * 10 for i in range(12) if i != 5]
    assert data[0, 0, :].tolist() == expected
    assert np.allclose(img.affine, np.eye(4))

    deep = nib.load(out / "volumes" / "ct_case-000002-Axial_C__portal_venous_phase.nii.gz")
    assert deep.shape == (2, 2, 96)
    assert np.allclose(np.diag(deep.affine), [1.0, 1.0, 0.5, 1.0])

    record = next(r for r in manifest if r.id.startswith("ct_case-000001"))
    assert Path(record.report_file).name == "ct_case-000001.txt"
    report = record.load_report()
    assert "Title:" not in report and "study_findings" not in report and "Age:" not in report
    assert "Large multiloculated cystic lesion in segment 7" in report
    assert "40 years Female" in report

    skipped = _skipped(out)
    assert [(s["item"], s["reason"]) for s in skipped] == [
        ("ct_case-000001-Coronal_bone_window", "depth below threshold")
    ]
    assert skipped[0]["detail"] == "3 < 5"
    assert not list(out.rglob(".tmp-*"))


def test_read_grey_slice_uses_bt601_luma(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 50, 200
    _png(tmp_path / "0.png", rgb)
    grey = m3d_cap.read_grey_slice(tmp_path / "0.png")
    # 0.299 * 100 + 0.587 * 50 + 0.114 * 200 = 82.05
    assert grey.shape == (4, 6) and grey.dtype == np.uint8 and np.all(grey == 82)


def test_halve_equals_bilinear_at_half_scale() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 14), dtype=np.uint8)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(image.astype(np.float32))[None, None],
        scale_factor=0.5,
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    assert m3d_cap.halve(image).shape == ref.shape == (4, 7)
    assert np.array_equal(m3d_cap.halve(image), np.floor(ref + 0.5).astype(np.uint8))


def test_clean_report_modes() -> None:
    full = m3d_cap.clean_report(TEXT + "\u00a0\n", mode="full")
    assert full.splitlines() == [
        "Hepatic hydatid cyst",
        "Right upper quadrant pain.",
        "40 years Female",
        "Large multiloculated cystic lesion in segment 7",
        "of the liver with daughter cysts.",
        "Appearances are typical of hydatid disease.",
    ]
    findings = m3d_cap.clean_report(TEXT, mode="findings")
    assert findings == "Large multiloculated cystic lesion in segment 7\nof the liver with daughter cysts."
    no_findings = "Title: X\nstudy_findings: \ndiscussion: Typical appearance of a cyst."
    assert m3d_cap.clean_report(no_findings, mode="findings") == "Typical appearance of a cyst."
    assert m3d_cap.clean_report("Title:\n\n  \n") == ""
    with pytest.raises(ValueError, match="mode"):
        m3d_cap.clean_report(TEXT, mode="both")  # type: ignore[arg-type]


def test_unusable_inputs_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "ct_quizze"
    _series(root / "000010" / "Axial", 6)
    (root / "000010" / "Axial" / "2.png").write_bytes(b"not a png")  # unreadable: dropped
    (root / "000010" / "text.txt").write_text("study_findings: Fine.\n", encoding="utf-8")
    _series(root / "000011" / "Axial", 6)  # no text.txt
    _series(root / "000012" / "Axial", 6)
    (root / "000012" / "text.txt").write_text("Title:\n\n", encoding="utf-8")  # empty after cleaning
    broken = root / "000013" / "Axial"
    broken.mkdir(parents=True)
    (root / "000013" / "text.txt").write_text("study_findings: Fine.\n", encoding="utf-8")
    for i in range(6):
        (broken / f"{i}.png").write_bytes(b"garbage")
    out = tmp_path / "out"
    manifest = read_manifest(_convert(root, out))
    assert [r.id for r in manifest] == ["ct_quizze-000010-Axial"]
    assert nib.load(out / "volumes" / "ct_quizze-000010-Axial.nii.gz").shape == (8, 8, 5)
    reasons = sorted(s["reason"] for s in _skipped(out))
    assert reasons == ["empty report", "no readable slices", "no text.txt in the case folder"]


def test_split_is_by_case_and_seeded(tmp_path: Path) -> None:
    root = tmp_path / "ct_case"
    for c in range(8):
        for series in ("Axial", "Coronal"):
            _series(root / f"{c:06d}" / series, 2, size=4)
        (root / f"{c:06d}" / "text.txt").write_text(f"study_findings: Case {c}.\n", encoding="utf-8")
    splits = []
    for run in ("a", "b"):
        manifest = read_manifest(_convert(root, tmp_path / run, depth_threshold=2, val_fraction=0.25, seed=3))
        by_case: dict[str, set[str]] = {}
        for r in manifest:
            by_case.setdefault(r.id.rsplit("-", 1)[0], set()).add(r.split)
        assert all(len(s) == 1 for s in by_case.values())  # both series of a case share a split
        splits.append({case: s.pop() for case, s in by_case.items()})
    assert splits[0] == splits[1]
    assert sorted(splits[0].values()).count("val") == 2  # round(8 * 0.25) cases
    other = read_manifest(_convert(root, tmp_path / "c", depth_threshold=2, val_fraction=0.25, seed=4))
    assert {r.id.rsplit("-", 1)[0] for r in other if r.split == "val"} != {
        c for c, s in splits[0].items() if s == "val"
    }


def test_max_cases_and_workers(raw_tree: Path, tmp_path: Path) -> None:
    one = read_manifest(_convert(raw_tree, tmp_path / "one", max_cases=1))
    assert [r.id for r in one] == ["ct_case-000001-Axial_non_contrast"]
    serial = tmp_path / "serial"
    parallel = tmp_path / "parallel"
    _convert(raw_tree, serial)
    _convert(raw_tree, parallel, workers=2)
    for f in sorted((serial / "volumes").iterdir()):
        a = np.asarray(nib.load(f).dataobj)
        b = np.asarray(nib.load(parallel / "volumes" / f.name).dataobj)
        assert np.array_equal(a, b)
    assert (serial / "manifest.csv").read_text() == (parallel / "manifest.csv").read_text()


def _check_complete(out: Path, expected: dict[str, tuple[int, int, int]]) -> None:
    manifest = read_manifest(out / "manifest.csv")
    assert {r.id: nib.load(r.volume).shape for r in manifest} == expected
    for r in manifest:
        np.asarray(nib.load(r.volume).dataobj)  # decompresses fully: a truncated file raises
    assert not list(out.rglob(".tmp-*"))


def _many_series(tmp_path: Path, n: int = 6) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    root = tmp_path / "ct_case"
    for c in range(n):
        _series(root / f"{c:06d}" / "Axial", 6 + c, size=8)
        (root / f"{c:06d}" / "text.txt").write_text(f"study_findings: Case {c}.\n", encoding="utf-8")
    return root, {f"ct_case-{c:06d}-Axial": (4, 4, 6 + c) for c in range(n)}


def test_restart_after_a_crash_mid_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, expected = _many_series(tmp_path)
    out = tmp_path / "out"
    real_save = m3d_cap.save_nifti
    calls = []

    def crashing_save(*args, **kwargs):
        if len(calls) == 3:
            raise OSError("simulated crash (disk full)")
        calls.append(args[2])
        return real_save(*args, **kwargs)

    monkeypatch.setattr(m3d_cap, "save_nifti", crashing_save)
    with pytest.raises(OSError, match="simulated crash"):
        _convert(root, out)
    assert not (out / "manifest.csv").exists()
    first = {Path(p).name: Path(p).stat().st_mtime_ns for p in calls}
    assert len(first) == 3

    monkeypatch.setattr(m3d_cap, "save_nifti", real_save)
    _convert(root, out)
    _check_complete(out, expected)
    # complete outputs of the first run were reused, not rewritten
    assert {name: (out / "volumes" / name).stat().st_mtime_ns for name in first} == first


def test_restart_after_sigkill_mid_write(tmp_path: Path) -> None:
    """A real SIGKILL while the third volume is half-written, then ``python -m data_prep.m3d_cap``."""
    root, expected = _many_series(tmp_path)
    out = tmp_path / "out"
    # The driver runs the real converter; only nibabel's save is wrapped so that, on the third file,
    # half of the bytes reach the temporary file and the process then kills itself (no cleanup runs).
    driver = textwrap.dedent(
        f"""
        import os, signal, sys
        import nibabel as nib
        from data_prep import m3d_cap
        real_save, count = nib.save, [0]
        def save(img, path):
            count[0] += 1
            if count[0] == 3:
                real_save(img, path)
                data = open(path, "rb").read()
                open(path, "wb").write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            real_save(img, path)
        nib.save = save
        m3d_cap.convert_m3d_cap({str(root)!r}, {str(out)!r}, depth_threshold=5, val_fraction=0.0)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run(
        [sys.executable, "-c", driver], cwd=REPO, env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert len(list(out.rglob(".tmp-*"))) == 1  # the half-written temporary survived the kill
    assert len([p for p in (out / "volumes").glob("*.nii.gz") if not p.name.startswith(".")]) == 2
    assert not (out / "manifest.csv").exists()

    args = [str(root), "--out", str(out), "--depth-threshold", "5", "--val-fraction", "0"]
    rerun = subprocess.run(
        [sys.executable, "-m", "data_prep.m3d_cap", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert "removed 1 stale temporary file" in rerun.stderr.decode()
    _check_complete(out, expected)


def test_runs_as_a_script_file(raw_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = REPO / "data_prep" / "m3d_cap.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script), str(raw_tree), "--out", str(out), "--depth-threshold", "5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "converted 2 series, skipped 1" in done.stderr.decode()
    assert len(read_manifest(out / "manifest.csv")) == 2
    missing = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "nope"), "--out", str(out)], env=env, capture_output=True
    )
    assert missing.returncode == 2 and b"not a folder" in missing.stderr
