"""Joining or starting Ray, once for the training launcher, the batch job and the tests."""

from __future__ import annotations

import os
import signal
from typing import Any

import ray

__all__ = ["WARM_IDLE_WORKERS", "init_ray", "shutdown_ray"]

# Idle Ray workers a cluster started here keeps. Ray's default keeps as many as there are free
# CPUs, so while training workers and Ray Data's coordinators hold a small node's CPUs every idle
# worker is killed after a second, and each Ray Data task of the next stage or epoch starts a new
# process that imports torch again (measured on 2 cores: 50 worker processes in a 2-epoch smoke
# run, ~40 s per epoch per domain; with 8 kept warm, 36 and ~10 s).
WARM_IDLE_WORKERS = 8


def init_ray(**kwargs: Any) -> None:
    """`ray.init(**kwargs)` unless connected already: RAY_ADDRESS, a `ray start` cluster on this
    node, or a new local one (`address="local"`), which keeps WARM_IDLE_WORKERS idle workers
    unless RAY_num_workers_soft_limit says otherwise. A cluster from `ray start` takes the same
    variable at its start."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_num_workers_soft_limit", str(WARM_IDLE_WORKERS))
    ray.init(**kwargs)


def shutdown_ray() -> None:
    """`ray.shutdown()` with Ctrl-C held off until it is done: Ray's own shutdown at interpreter
    exit, interrupted, printed a KeyboardInterrupt traceback and then crashed (exit 139)."""
    if not ray.is_initialized():
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ray.shutdown()
    finally:
        signal.signal(signal.SIGINT, previous)
