"""What does the demo-pretrained encoder know about anatomy? A linear probe of its maps vs a random encoder's.

For each Swin level (patch embedding and the 4 stages), the voxel features of the 16 training
phantoms (prepared as in benchmarks/segmentation_phantoms.py) fit a ridge-regression classifier of
the label (the label map taken to the level's grid by nearest neighbour); the 32 test phantoms are
scored by the mean foreground Dice of its argmax on that grid. Frozen features, no fine-tuning: the
difference between the two encoders is what pretraining put into each level.

Usage::

    python benchmarks/segmentation_probe.py --pretrained runs/demo/export
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _features(encoder: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [h.float() for h in encoder(images, normalize=True)]


def _probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, k: int) -> float:
    """Ridge regression on one-hot targets; mean foreground Dice of the argmax on the test voxels."""
    def flat(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1]), torch.ones(x.numel() // x.shape[1], 1)], 1)

    a, b = flat(train_x).double(), flat(test_x).double()
    target = torch.nn.functional.one_hot(train_y.reshape(-1), k).double()
    w = torch.linalg.solve(a.T @ a + 1e-2 * a.shape[0] * torch.eye(a.shape[1], dtype=a.dtype), a.T @ target)
    pred = (b @ w).argmax(1)
    ref = test_y.reshape(-1)
    dices = []
    for c in range(1, k):
        p, t = pred == c, ref == c
        if p.sum() + t.sum():
            dices.append(float(2 * (p & t).sum() / (p.sum() + t.sum())))
    return sum(dices) / len(dices) if dices else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_seg_phantoms"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/segmentation_probe.json"))
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from segmentation_phantoms import _datamodule  # the same phantoms, contract and cache

    from velvet.models.segmentation import SegmentationConfig, SegmentationModel
    from velvet.models.segmentation_encoder import encoder_config, load_encoder

    dm = _datamodule(args.workdir, 0)
    dm.prepare_data()
    dm.setup("fit")
    names = dm.class_names

    def stack(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        whole = dm.build_dataset("eval", dm.datasets[split].records)  # whole volumes, no patches or augmentation
        samples = [whole[i] for i in range(len(whole))]
        return torch.stack([s["image"] for s in samples]), torch.stack([s["label_map"] for s in samples])

    (train_img, train_lab), (test_img, test_lab) = stack("train"), stack("test")
    vision = encoder_config(args.pretrained).to_dict()
    rows = {}
    for init in ("pretrained", "random"):
        torch.manual_seed(0)
        model = SegmentationModel(SegmentationConfig(tuple(names), vision=vision, roi_size=(32, 32, 32), norm_name="batch"))
        if init == "pretrained":
            load_encoder(model, args.pretrained)
        encoder = model.encoder.eval()
        tr, te = _features(encoder, train_img), _features(encoder, test_img)
        scores = []
        for fx, gx in zip(tr, te, strict=True):
            size = fx.shape[2:]
            ly = torch.nn.functional.interpolate(train_lab.float(), size=size, mode="nearest").long()
            gy = torch.nn.functional.interpolate(test_lab.float(), size=size, mode="nearest").long()
            scores.append(round(_probe(fx, ly, gx, gy, len(names)), 4))
        rows[init] = [None if s != s else s for s in scores]  # NaN (no foreground on a 1-voxel grid) -> null
        print(f"{init:10s} " + "  ".join(f"level {i} ({tuple(t.shape[1:])}): {s:.3f}" for i, (s, t) in enumerate(zip(scores, tr, strict=True))))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"mean_foreground_dice_by_level": rows, "levels": [list(t.shape[1:]) for t in tr]}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
