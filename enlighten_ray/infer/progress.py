"""Progress for `enhance`: tqdm's bar on a terminal; in a log (stderr redirected, a job runner) a
plain line every ~10 s with what is done, the rate and the time left; nothing when silenced."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

from enlighten_ray.train.log import format_eta

__all__ = ["LineProgress", "progress_bar"]

LINE_EVERY_S = 10.0


class LineProgress:
    """The part of tqdm's interface `enhance` uses (update, total, refresh, close, with)."""

    def __init__(self, total: int | None, unit: str, desc: str, every: float = LINE_EVERY_S) -> None:
        self.total, self.unit, self.desc, self.every = total, unit, desc, every
        self.n, self.started = 0, time.monotonic()
        self.last = self.started

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        eta = f", ETA {format_eta((self.total - self.n) / rate)}" if self.total and rate > 0 else ""
        return f"{self.desc}: {done} {self.unit}s, {rate:.2f} {self.unit}/s{eta}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            print(self.line(), file=sys.stderr, flush=True)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        print(self.line() + " (done)", file=sys.stderr, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


def progress_bar(total: int | None, unit: str, desc: str, progress: bool | None = None) -> Any:
    """progress None: a bar on a terminal, lines in a log; True: a bar; False: nothing."""
    if progress is False:
        return tqdm(total=total, disable=True)
    if progress is None and not sys.stderr.isatty():
        return LineProgress(total, unit, desc)
    return tqdm(total=total, unit=unit, desc=desc)
