"""Bootstrap intervals for Table 1: its sets hold 8-69 images, so a difference of a few hundredths
in "All" may be noise. The resampling is stratified (images are drawn with replacement within each
set, as many as the set holds), so every resample keeps the sets' sizes, as "All" pools them.
Differences between two rows are paired: the same images, resampled together."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["RESAMPLES", "paired_difference", "pooled_interval"]

RESAMPLES = 10_000
LEVEL = 0.95


def _pooled_means(per_set: list[np.ndarray], resamples: int, seed: int) -> np.ndarray:
    """The pooled mean of each stratified resample: (resamples,)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for values in per_set:
        picks = rng.integers(0, len(values), size=(resamples, len(values)))
        total += values[picks].sum(axis=1)
    return total / sum(len(v) for v in per_set)


def _interval(per_set: list[np.ndarray], resamples: int, seed: int) -> dict[str, float]:
    per_set = [v for v in per_set if len(v)]
    mean = float(np.concatenate(per_set).mean())
    lo, hi = np.quantile(_pooled_means(per_set, resamples, seed), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return {"mean": mean, "low": float(lo), "high": float(hi)}


def pooled_interval(
    images: Mapping[str, Mapping[str, float]], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, float] | None:
    """Pooled mean of {set: {image: score}} and its 95 % percentile interval (None: no images)."""
    per_set = [np.fromiter(scores.values(), float) for scores in images.values()]
    return _interval(per_set, resamples, seed) if any(len(v) for v in per_set) else None


def paired_difference(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, float] | None:
    """Pooled mean of a - b over the images both rows scored, with its 95 % interval (None: none shared)."""
    per_set = [
        np.array([a[s][k] - b[s][k] for k in sorted(a[s].keys() & b[s].keys())], float) for s in a.keys() & b.keys()
    ]
    return _interval(per_set, resamples, seed) if any(len(v) for v in per_set) else None
