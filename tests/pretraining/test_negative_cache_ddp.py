"""Negative-keeping accumulation under DDP: real 2-process gloo runs.

The cached step backpropagates several times per optimiser step (first to the temperature alone,
then once per micro-batch); DDP's reducer, which Lightning prepares on every ``manual_backward``,
would report the other parameters as unused. The step runs its backward calls without DDP's
gradient sync and averages the gradients over the ranks once at the end, which must give exactly
what a single process computes on the whole global batch.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist

from tests.gloo import free_port, run_workers
from velvet.data.datamodule import VelvetDataModule
from velvet.tasks.pretrain import PretrainTask

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORLD = 2
# 8 training cases: 2 steps of a global batch of 4 (2 per rank under DDP)
PHANTOMS = {"n_cases": 12, "n_val": 2, "n_test": 2, "shape": [40, 40, 32], "spacing": [10, 10, 10]}
PREPROCESS = {"preset": "ct_rate", "spacing": [12, 12, 12], "spatial_size": [32, 32, 32]}
# contrastive objectives only, no dropout: nothing random differs between ranks and one process
TEXT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
MODEL = {"preset": "velvet-tiny", "text": TEXT}
OBJECTIVES = ["itc_report", "itc_sentence", "itc_word"]


def _datamodule(root, batch_size: int) -> VelvetDataModule:
    return VelvetDataModule(
        phantoms=PHANTOMS,
        data_dir=str(root / "data"),
        cache_dir=str(root / "cache"),
        preprocess=PREPROCESS,
        batch_size=batch_size,
        num_workers=0,
        vocab_size=300,
        tokenizer_options={"max_length": 256},
    )


class _Record(pl.Callback):
    """Saves, per rank, the gradients the optimiser steps with, the step losses and the final weights."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.grads: list[dict[str, torch.Tensor]] = []
        self.losses: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}
        self.grads.append(grads)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        record = {"grads": self.grads, "losses": self.losses, "weights": weights}
        torch.save(record, Path(self.out_dir) / f"rank{trainer.global_rank}.pt")


class _SGDTask(PretrainTask):
    """The task with plain SGD, whose update is linear in the gradient: equal weights mean equal gradients.

    (AdamW's first steps move each weight by about +-lr whatever its gradient's size, so they would
    hide a gradient off by the world size, and they turn float noise in gradients that are zero in
    exact arithmetic, such as those of attention key biases, into +-lr weight differences.)
    """

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> bool:
    """Equal up to float noise relative to the tensor's scale (sums over many tokens reach ~5)."""
    return float((got - want).abs().max()) <= tol * max(1.0, float(want.abs().max()))


def _fit(root, out_dir, *, batch_size: int, micro_batch: int, **trainer_args) -> None:
    out_dir.mkdir()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_Record(str(out_dir))],
        **trainer_args,
    )
    # no gradient clipping: it would hide a gradient off by the world size
    task = _SGDTask(model=MODEL, objectives=OBJECTIVES, lr=1e-2, negative_cache_micro_batch=micro_batch)
    trainer.fit(task, datamodule=_datamodule(root, batch_size))


def test_lightning_ddp_negative_cache_equals_one_process(tmp_path):
    _datamodule(tmp_path, 4).prepare_data()  # phantoms, vocabulary and cache once, before any rank starts
    # the same first 8 cases of the epoch-0 order (EpochSeededSampler / Lightning's DistributedSampler,
    # both seeded 0): one process takes cases [0:4] per step, rank r the cases r and r + 2 of them
    _fit(tmp_path, tmp_path / "single", batch_size=4, micro_batch=2, devices=1)
    _fit(tmp_path, tmp_path / "ddp", batch_size=2, micro_batch=1, devices=WORLD, strategy="ddp_spawn")

    single = torch.load(tmp_path / "single" / "rank0.pt")
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in range(WORLD)]
    assert len(single["grads"]) == 2 and all(len(r["grads"]) == 2 for r in ranks)
    for step in range(2):
        # each rank's loss counts its own rows against the gathered negatives: their mean is the batch's
        mean = sum(r["losses"][step] for r in ranks) / WORLD
        assert mean == pytest.approx(single["losses"][step], abs=1e-5), step
        reference = single["grads"][step]
        for r in ranks:
            assert set(r["grads"][step]) == set(reference)
            for name, g in reference.items():
                assert _close(r["grads"][step][name], g), (step, name)
    for r in ranks:
        for name, w in single["weights"].items():
            assert _close(r["weights"][name], w), name


# ---------------------------------------------------------------------- average_gradients alone



def _average_worker(rank: int, port: int, out_dir: str) -> None:
    from velvet.pretraining.negative_cache import average_gradients

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        params = [torch.nn.Parameter(torch.zeros(shape)) for shape in [(3, 4), (5,), (2,), (7,), (1,)]]
        params[0].grad = torch.full((3, 4), float(rank + 1))  # 1 and 2: mean 1.5
        params[1].grad = torch.arange(5.0) * (rank + 1)  # mean 1.5 * arange
        if rank == 1:
            params[2].grad = torch.tensor([4.0, -2.0])  # used on one rank: DDP counts zeros elsewhere
        # params[3]: no gradient anywhere, stays None (as DDP leaves globally unused parameters)
        params[4].requires_grad_(False)  # frozen: not reduced
        params[4].grad = torch.tensor([float(rank)])
        calls = 0
        reduce = dist.all_reduce

        def counting(*args, **kwargs):
            nonlocal calls
            calls += 1
            return reduce(*args, **kwargs)

        dist.all_reduce = counting
        try:
            average_gradients(params)
        finally:
            dist.all_reduce = reduce
        grads = [p.grad for p in params]
        torch.save({"grads": grads, "calls": calls}, Path(out_dir) / f"avg{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_average_gradients_is_ddps_mean_in_one_call(tmp_path):
    run_workers(_average_worker, (free_port(), str(tmp_path)), nprocs=WORLD, timeout=120, start_method="spawn")
    for rank in range(WORLD):
        out = torch.load(tmp_path / f"avg{rank}.pt")
        g = out["grads"]
        assert out["calls"] == 1  # flattened: one all-reduce for every gradient (and the used flags)
        assert torch.equal(g[0], torch.full((3, 4), 1.5))
        assert torch.equal(g[1], torch.arange(5.0) * 1.5)
        assert torch.equal(g[2], torch.tensor([2.0, -1.0]))
        assert g[3] is None
        assert torch.equal(g[4], torch.tensor([float(rank)]))  # untouched
