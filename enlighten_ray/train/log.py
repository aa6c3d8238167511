"""The training console: one line per logging step (epoch, step, losses, images/s, ETA) printed
by rank 0, instead of Ray Train's raw report dumps (kept for `--verbose`)."""

from __future__ import annotations

import sys
import time

__all__ = ["StepLog", "format_eta"]

SHOWN = ("g_total", "g_global", "g_local", "sfp", "d_global", "d_local", "teacher_l1")


def format_eta(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


class StepLog:
    """Images/s is measured since the previous line, so start-up and checkpoints fade out of it."""

    def __init__(self, epochs: int, steps_per_epoch: int, batch_size: int, first_step: int, enabled: bool) -> None:
        self.epochs, self.steps_per_epoch, self.batch_size, self.enabled = epochs, steps_per_epoch, batch_size, enabled
        self.last_step, self.last_time = first_step, time.perf_counter()

    def __call__(self, epoch: int, step: int, metrics: dict[str, float]) -> str:
        now = time.perf_counter()
        rate = (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        left = max(0, self.epochs * self.steps_per_epoch - step) * self.batch_size / max(rate, 1e-9)
        losses = " ".join(f"{k} {metrics[k]:.3f}" for k in SHOWN if k in metrics)
        line = (
            f"epoch {epoch}/{self.epochs} step {step}/{self.epochs * self.steps_per_epoch} {losses} | "
            f"{rate:.2f} img/s | ETA {format_eta(left)}"
        )
        if self.enabled:
            # Not print(): on Ray Train workers it is patched to log and also print, so twice.
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        return line
