"""Classical low-light enhancers: two rulers for the Table-1 comparison, and the teacher the
generator's warm start regresses to (computed from each low image itself: training stays unpaired).

- `ahe`: CLAHE (Zuiderveld 1994, the variant OpenCV ships) on the luma of YCbCr; the paper's "AHE".
- `lime`: LIME-style (Guo et al., TIP 2017): illumination = max over RGB, refined by an
  edge-preserving guided filter (He et al. 2010) in place of LIME's structure-aware optimisation,
  gamma-corrected, and the image divided by it (Retinex: I = R * T).

- `teacher`: the LIME-style output with its dark regions smoothed (LIME's own advice: denoise in
  proportion to darkness), so a generator that imitates it does not learn to amplify noise.

All take and return uint8 (H, W, 3) RGB arrays and need only numpy (a leaf module).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["ahe", "lime", "teacher", "BASELINES"]

# BT.601 full-range RGB <-> YCbCr (JPEG's), so chroma is kept while the luma is equalised.
_RGB2YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC2RGB = np.linalg.inv(_RGB2YCC)


def _clahe_luts(y: np.ndarray, tiles: int, clip_limit: float) -> np.ndarray:
    """Clipped, equalising look-up tables, one per tile: (tiles, tiles, 256) float."""
    h, w = y.shape  # already a multiple of `tiles` on both sides
    th, tw = h // tiles, w // tiles
    tile_id = (np.arange(h)[:, None] // th) * tiles + np.arange(w)[None, :] // tw
    hist = np.bincount((tile_id * 256 + y).ravel(), minlength=tiles * tiles * 256)
    hist = hist.reshape(tiles * tiles, 256).astype(np.float64)
    # clip at clip_limit x the mean bin count and spread the excess evenly over all bins
    limit = max(clip_limit * th * tw / 256, 1.0)
    excess = np.maximum(hist - limit, 0).sum(axis=1, keepdims=True)
    hist = np.minimum(hist, limit) + excess / 256
    cdf = np.cumsum(hist, axis=1)
    return (cdf * 255 / (th * tw)).reshape(tiles, tiles, 256)


def _clahe(y: np.ndarray, tiles: int = 8, clip_limit: float = 2.0) -> np.ndarray:
    """CLAHE of a uint8 (H, W) channel: each pixel blends the LUTs of its 4 nearest tile centres."""
    h, w = y.shape
    ph, pw = -h % tiles, -w % tiles  # pad to whole tiles by mirroring, as OpenCV does
    luts = _clahe_luts(np.pad(y, ((0, ph), (0, pw)), mode="reflect"), tiles, clip_limit)
    th, tw = (h + ph) / tiles, (w + pw) / tiles

    def axis_weights(n: int, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = (np.arange(n) + 0.5) / t - 0.5  # position in tile-centre units
        i0 = np.clip(np.floor(f), 0, tiles - 1).astype(np.int64)
        return i0, np.minimum(i0 + 1, tiles - 1), np.clip(f - i0, 0, 1)

    y0, y1, wy = axis_weights(h, th)
    x0, x1, wx = axis_weights(w, tw)
    wy, wx = wy[:, None], wx[None, :]
    top = (1 - wx) * luts[y0[:, None], x0[None, :], y] + wx * luts[y0[:, None], x1[None, :], y]
    bot = (1 - wx) * luts[y1[:, None], x0[None, :], y] + wx * luts[y1[:, None], x1[None, :], y]
    return (1 - wy) * top + wy * bot


def ahe(img: np.ndarray, tiles: int = 8, clip_limit: float = 2.0) -> np.ndarray:
    """CLAHE on luma: 8x8 tiles and clip limit 2.0 (OpenCV's defaults); chroma unchanged."""
    ycc = img.astype(np.float64) @ _RGB2YCC.T
    y = np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.int64)
    ycc[..., 0] = _clahe(y, tiles, clip_limit)
    return np.clip(np.rint(ycc @ _YCC2RGB.T), 0, 255).astype(np.uint8)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, shrunk at the borders, via cumulative sums."""

    def along(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        c = np.cumsum(np.moveaxis(a, axis, 0), axis=0)
        c = np.concatenate([np.zeros_like(c[:1]), c])
        hi = np.minimum(np.arange(n) + r + 1, n)
        lo = np.maximum(np.arange(n) - r, 0)
        shape = (n,) + (1,) * (a.ndim - 1)
        return np.moveaxis((c[hi] - c[lo]) / (hi - lo).reshape(shape).astype(a.dtype), 0, axis)

    return along(along(x, 0), 1)


def _guided(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (grey guide): locally src ~ a * guide + b, edges of guide kept.
    `src` is (H, W) like the guide, or (H, W, C) filtered channel by channel."""
    if src.ndim == 3:
        guide = guide[..., None]
    mg, ms = _box(guide, r), _box(src, r)
    a = (_box(guide * src, r) - mg * ms) / (_box(guide * guide, r) - mg * mg + eps)
    b = ms - a * mg
    return _box(a, r) * guide + _box(b, r)


def _illumination(x: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """LIME's illumination map in [0, 1]: the brightest channel (LIME Eq. 2), refined by a
    self-guided filter of radius `radius` (0 = 2 % of the short side, at least 3 px) that flattens
    texture inside objects but keeps the illumination's edges, the job LIME's structure-aware term does."""
    t = x.max(axis=2)
    r = radius or max(3, round(0.02 * min(t.shape)))
    return np.clip(_guided(t, t, r, eps), 0, 1)


def _lime(x: np.ndarray, t: np.ndarray, gamma: float) -> np.ndarray:
    """Retinex: R = I / max(T ** gamma, 0.01), float in [0, 1]."""
    return np.clip(x / np.maximum(t**gamma, 0.01)[..., None], 0, 1)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def lime(img: np.ndarray, gamma: float = 0.8, radius: int = 0, eps: float = 1e-3) -> np.ndarray:
    """LIME-style enhancement: R = I / max(T, 0.01), T = refine(max_c I_c) ** gamma (LIME's gamma 0.8)."""
    x = img.astype(np.float64) / 255
    return _to_uint8(_lime(x, _illumination(x, radius, eps), gamma))


def teacher(img: np.ndarray, dark: float = 0.15, gamma: float = 0.8) -> np.ndarray:
    """LIME-style output whose dark regions (illumination below `dark`) are blended toward a grey
    smoothing of it that keeps the illumination map's edges (its luma guided by the map, radius 2x
    the map's): near black, sensor and codec noise and chroma offsets are what a 10x gain shows
    (the night dashcam's near-black input averages R/G/B 3.0/2.5/3.0, a violet fog once lifted)."""
    x = img.astype(np.float32) / 255  # float32: the teacher runs per training image
    t = _illumination(x, 0, 1e-3)
    out = _lime(x, t, gamma)
    r = 2 * max(3, round(0.02 * min(t.shape)))
    smooth = _guided(t, out @ _RGB2YCC[0].astype(np.float32), r, 1e-4)[..., None]
    w = np.clip(1 - t / dark, 0, 1)[..., None] if dark > 0 else 0.0
    return _to_uint8(np.clip((1 - w) * out + w * smooth, 0, 1))


# Names used as Table-1 rows and output folder names.
BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"AHE": ahe, "LIME-style": lime}
