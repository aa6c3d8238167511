"""`enlighten-ray eval video INPUT OUTPUT`: what an enhancement did to a clip over time, frame by
frame in lockstep: brightness, flicker (how much frame means vary), temporal noise (frame-to-frame
change relative to brightness), compression blocks made visible, and the colour of near-black areas.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from enlighten_ray.errors import BadInputError
from enlighten_ray.eval.curve import VIDEO_DARK_LUMA, cast, luma
from enlighten_ray.io.video import VideoReader

__all__ = ["VideoReport", "blockiness", "compare_videos"]

BLOCK = 16  # H.264's macroblock: the grid a codec's blocks show on
NIQE_EVERY = 10  # NIQE on every 10th frame pair (~0.2 s per 640x360 frame)


def _grid_steps(y: np.ndarray, axis: int, block: int) -> tuple[float, float]:
    """Mean |step| between neighbours across the block grid, and inside blocks, along `axis`."""
    steps = np.abs(np.diff(y, axis=axis))
    on_grid = (np.arange(steps.shape[axis]) + 1) % block == 0
    across = np.compress(on_grid, steps, axis=axis).mean()
    inside = np.compress(~on_grid, steps, axis=axis).mean()
    return float(across), float(inside)


def blockiness(y: np.ndarray, block: int = BLOCK) -> float:
    """Mean luma step across the block grid over the mean step inside blocks, both axes pooled:
    1.0 when the grid is invisible, above 1 where blocks show."""
    (ah, ih), (av, iv) = _grid_steps(y, 1, block), _grid_steps(y, 0, block)
    return (ah + av) / max(ih + iv, 1e-6)


@dataclass
class VideoReport:
    frames: int
    luma_in: float
    luma_out: float
    flicker_in: float  # coefficient of variation of frame mean luma (%)
    flicker_out: float
    frame_diff_ratio: float  # mean |frame - previous| / mean luma, output over input (1 = as stable)
    blockiness_in: float
    blockiness_out: float
    dark_cast_out: float  # max/min of the output's channel means where the input's luma < 8
    dark_share: float  # fraction of input pixels that count as near-black
    niqe_in: float | None  # mean NIQE of every NIQE_EVERY-th frame (None: frames too small)
    niqe_out: float | None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def lines(self) -> list[str]:
        return [
            f"frames compared       {self.frames}",
            f"mean luma             {self.luma_in:.1f} -> {self.luma_out:.1f}",
            f"flicker (CV of means) {self.flicker_in:.1f} % -> {self.flicker_out:.1f} %",
            f"frame difference      {self.frame_diff_ratio:.2f} x the input's, relative to brightness",
            f"16-px block grid      {self.blockiness_in:.2f} -> {self.blockiness_out:.2f} (1 = invisible)",
            f"near-black cast       {self.dark_cast_out:.2f} over {self.dark_share:.0%} of pixels (1 = grey)",
            f"NIQE (every {NIQE_EVERY}th frame) {_show(self.niqe_in)} -> {_show(self.niqe_out)}",
        ]


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _niqe(frames: list[np.ndarray]) -> float | None:
    from enlighten_ray.eval.metrics import niqe

    try:
        return float(np.mean([niqe(f) for f in frames])) if frames else None
    except ValueError:  # too small or flat for NIQE
        return None


def _pairs(
    src: str | os.PathLike, out: str | os.PathLike, limit: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    with VideoReader(str(src)) as a, VideoReader(str(out)) as b:
        if (a.info.width, a.info.height) != (b.info.width, b.info.height):
            raise BadInputError(
                out, f"{b.info.width}x{b.info.height} frames, the input's are {a.info.width}x{a.info.height}"
            )
        for i, (fa, fb) in enumerate(zip(a.frames(), b.frames())):
            if limit is not None and i >= limit:
                return
            yield fa.rgb, fb.rgb


def compare_videos(src: str | os.PathLike, out: str | os.PathLike, limit: int | None = None) -> VideoReport:
    """The report over the first `limit` frames (all by default) both videos have."""
    means: list[tuple[float, float]] = []
    diffs: list[tuple[float, float]] = []
    blocks: list[tuple[float, float]] = []
    dark_sum, dark_count, pixels = np.zeros(3), 0, 0
    previous: tuple[np.ndarray, np.ndarray] | None = None
    sampled: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for a, b in _pairs(src, out, limit):
        if len(means) % NIQE_EVERY == 0:
            sampled[0].append(a)
            sampled[1].append(b)
        ya, yb = luma(a), luma(b)
        means.append((float(ya.mean()), float(yb.mean())))
        blocks.append((blockiness(ya), blockiness(yb)))
        if previous is not None:
            diffs.append((float(np.abs(ya - previous[0]).mean()), float(np.abs(yb - previous[1]).mean())))
        previous = (ya, yb)
        mask = ya < VIDEO_DARK_LUMA
        dark_sum += b[mask].sum(axis=0, dtype=np.float64)
        dark_count, pixels = dark_count + int(mask.sum()), pixels + mask.size
    if not means:
        raise BadInputError(src, "no frames to compare")
    m = np.asarray(means)
    d = np.asarray(diffs) if diffs else np.ones((1, 2))
    relative = d.mean(axis=0) / np.maximum(m.mean(axis=0), 1e-6)
    return VideoReport(
        frames=len(means),
        luma_in=float(m[:, 0].mean()),
        luma_out=float(m[:, 1].mean()),
        flicker_in=float(100 * m[:, 0].std() / max(m[:, 0].mean(), 1e-6)),
        flicker_out=float(100 * m[:, 1].std() / max(m[:, 1].mean(), 1e-6)),
        frame_diff_ratio=float(relative[1] / max(relative[0], 1e-9)),
        blockiness_in=float(np.mean([x for x, _ in blocks])),
        blockiness_out=float(np.mean([y for _, y in blocks])),
        dark_cast_out=cast(dark_sum / dark_count) if dark_count else 1.0,
        dark_share=dark_count / pixels,
        niqe_in=_niqe(sampled[0]),
        niqe_out=_niqe(sampled[1]),
    )
