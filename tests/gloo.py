"""Launching multi-process gloo tests: a free port and workers joined under a deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port nobody listens on (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(
    fn: Callable[..., Any], args: tuple, *, nprocs: int, timeout: float = 120, start_method: str = "spawn"
) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` processes; fail the test if one fails or time runs out."""
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method=start_method)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=0.5):  # raises if a worker failed
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"gloo workers did not finish within {timeout:.0f} s")
