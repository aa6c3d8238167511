"""Image quality metrics: NIQE as the original MATLAB release computes it, PSNR and SSIM.

NIQE (Mittal, Soundararajan, Bovik, "Making a 'completely blind' image quality analyzer", IEEE SPL
2013) is the paper's Table-1 yardstick. Its absolute values depend on details of the MATLAB release
(`niqe_release.zip`: computequality.m, computefeature.m, estimateaggdparam.m), which we follow
line by line instead of the looser Python ports:

- grey level = MATLAB `rgb2gray` on uint8, i.e. the NTSC luma weights rounded back to uint8
  (pyiqa's `color_space='yiq'`; basicsr's default YCbCr-Y is a different, offset luma);
- 7x7 Gaussian window sigma 7/6 with replicate borders (`imfilter(..., 'replicate')`);
- 96x96 blocks, no overlap, the image cropped to whole blocks; 48x48 blocks on the second scale;
- the second scale made by MATLAB `imresize(im, 0.5)`: bicubic (a=-0.5) *with* antialiasing and
  symmetric borders, on float data (basicsr substitutes OpenCV bilinear here);
- AGGD fit by table look-up over alpha in 0.2:0.001:10, NaN features of flat blocks kept the
  MATLAB way (`nanmean` per feature, `nancov` on complete rows);
- flat areas give MSCN coefficients of exactly zero (see `niqe`), as MATLAB's numbers imply.

Only numpy is needed; NIQE of a 2-megapixel photo takes well under a second.
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import numpy as np

__all__ = ["niqe", "psnr", "ssim", "matlab_rgb2gray", "matlab_imresize"]

_FLAT_TOL = 1e-8  # |im - local mean| below this (on 0..255) is round-off of a flat area, not signal
_BLOCK = 96  # the release's recommended block size (its pristine model was fitted on 96x96 blocks)
# MATLAB rgb2gray: first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703]) (NTSC YIQ).
_GRAY_COEF = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


@functools.cache
def _pristine() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu 36, cov 36x36, 7x7 window) of the release's pristine model, shipped in enlighten_ray/assets."""
    with resources.files("enlighten_ray").joinpath("assets/niqe_pris_params.npz").open("rb") as f:
        d = np.load(f)
        return d["mu_pris_param"].ravel(), d["cov_pris_param"], d["gaussian_window"]


@functools.cache
def _aggd_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """gam = 0.2:0.001:10 with Gamma(1/g), Gamma(2/g), Gamma(3/g) and r(g) as estimateaggdparam.m."""
    gam = 0.2 + 0.001 * np.arange(9801)
    g1, g2, g3 = (np.array([math.gamma(k / g) for g in gam]) for k in (1, 2, 3))
    return gam, g1, g2, g3, g2**2 / (g1 * g3)


def matlab_rgb2gray(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float64 (H, W) grey levels exactly as MATLAB's rgb2gray on uint8
    (weighted sum rounded half away from zero; the values stay whole numbers)."""
    if img.ndim == 2:
        return img.astype(np.float64)
    y = img[..., :3].astype(np.float64) @ _GRAY_COEF
    return np.floor(y + 0.5).clip(0, 255)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5, the one in MATLAB's imresize.m."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def _contributions(n_in: int, n_out: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """imresize.m `contributions`: (n_out, P) weights and 0-based source indices, borders
    mirrored with the edge sample repeated ('symmetric'); antialiased when shrinking."""
    k = min(scale, 1.0)  # shrinking stretches the kernel by 1/scale to low-pass first
    width = 4.0 / k
    x = np.arange(1, n_out + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - width / 2)
    idx = left + np.arange(math.ceil(width) + 2)[None, :]  # (n_out, P)
    w = k * _cubic(k * (u - idx))
    w /= w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    idx = aux[np.mod(idx.astype(np.int64) - 1, 2 * n_in)]
    return w, idx


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize(img, scale)` of a float (H, W) image: bicubic, antialiased when
    shrinking, output size ceil(scale * size), rows first (MATLAB's order for equal scales)."""
    out = img
    for axis in (0, 1):
        n = out.shape[axis]
        w, idx = _contributions(n, math.ceil(n * scale), scale)
        moved = np.moveaxis(out, axis, 0)  # (n, other)
        res = np.einsum("op,opk->ok", w, moved[idx])  # (n_out, P) x (n_out, P, other)
        out = np.moveaxis(res, 0, axis)
    return out


def _filter_replicate(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """imfilter(img, window, 'replicate') for a small square window (correlation, same size)."""
    r = window.shape[0] // 2
    pad = np.pad(img, r, mode="edge")
    h, w = img.shape
    out = np.zeros_like(img)
    for i in range(window.shape[0]):
        for j in range(window.shape[1]):
            out += window[i, j] * pad[i : i + h, j : j + w]
    return out


def _aggd(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """estimateaggdparam.m for each row of v (n, N): index of alpha in the table, beta_left,
    beta_right.

    A flat block has no negative (or positive) samples; MATLAB then gets NaN stds, min() over an
    all-NaN vector picks the first entry (alpha = 0.2), and the betas stay NaN. numpy's argmin also
    returns the first NaN, so the same features come out and nanmean/nancov treat them alike."""
    _, g1, _, g3, r_gam = _aggd_table()
    neg, pos = v < 0, v > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((v**2 * neg).sum(1) / neg.sum(1))
        right = np.sqrt((v**2 * pos).sum(1) / pos.sum(1))
        gh = left / right
        rhat = np.abs(v).mean(1) ** 2 / (v**2).mean(1)
        rhatnorm = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    best = np.argmin((r_gam[None, :] - rhatnorm[:, None]) ** 2, axis=1)
    k = np.sqrt(g1[best] / g3[best])
    return best, left * k, right * k


def _block_features(structdis: np.ndarray, bs: int) -> np.ndarray:
    """computefeature.m on every (bs, bs) block of the MSCN map: (n_blocks, 18)."""
    h, w = structdis.shape
    blocks = structdis.reshape(h // bs, bs, w // bs, bs).transpose(0, 2, 1, 3).reshape(-1, bs, bs)
    gam, g1, g2, _, _ = _aggd_table()
    i, bl, br = _aggd(blocks.reshape(len(blocks), -1))
    feats = [gam[i], (bl + br) / 2]
    # circshift inside each block: horizontal, vertical, main- and anti-diagonal neighbours
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = blocks * np.roll(blocks, shift, axis=(1, 2))
        i, bl, br = _aggd(pair.reshape(len(blocks), -1))
        feats += [gam[i], (br - bl) * g2[i] / g1[i], bl, br]  # Eq. 8: mean of the AGGD
    return np.stack(feats, axis=1)


def niqe(img: np.ndarray) -> float:
    """NIQE of an image (lower = more natural), matching the MATLAB release.

    img: uint8 (H, W, 3) RGB or (H, W) grey; both sides must be at least 96 px (one block).
    With a single block the distorted-image covariance is taken as zero (only the pristine one
    is used), since a covariance of one sample is undefined. ValueError for smaller images and
    for images with no texture at all (where MATLAB returns NaN).
    """
    if img.ndim == 3:
        img = matlab_rgb2gray(img)
    im = img.astype(np.float64)
    h, w = im.shape
    if h < _BLOCK or w < _BLOCK:
        raise ValueError(f"NIQE needs an image of at least {_BLOCK}x{_BLOCK} pixels, got {w}x{h}")
    im = im[: h // _BLOCK * _BLOCK, : w // _BLOCK * _BLOCK]
    mu_p, cov_p, window = _pristine()
    feats = []
    for scale in (1, 2):
        mu = _filter_replicate(im, window)
        sigma = np.sqrt(np.abs(_filter_replicate(im * im, window) - mu * mu))
        diff = im - mu
        # In exact arithmetic a flat 7x7 neighbourhood gives diff = 0, which the AGGD fit leaves
        # out of both tails. Float round-off (the window sums to 1 - 1e-16) would turn those zeros
        # into +-1e-14 and flip them into a tail: NIQE of images with flat areas moved by up to
        # 0.4 (calibration image I19) away from the MATLAB numbers, which behave like exact zeros.
        diff[np.abs(diff) < _FLAT_TOL] = 0.0
        structdis = diff / (sigma + 1)  # MSCN coefficients, Eq. 1
        feats.append(_block_features(structdis, _BLOCK // scale))
        if scale == 1:
            im = matlab_imresize(im, 0.5)
    dist = np.concatenate(feats, axis=1)  # (n_blocks, 36)
    if np.isnan(dist).all(axis=0).any():  # MATLAB would return NaN
        raise ValueError("NIQE is undefined for an image without texture (every block is flat)")
    mu_d = np.nanmean(dist, axis=0)
    complete = dist[~np.isnan(dist).any(axis=1)]
    cov_d = np.cov(complete, rowvar=False) if len(complete) > 1 else np.zeros_like(cov_p)
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2) @ d))


def _as_float(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB over all pixels and channels: 10 log10(range^2 / MSE); inf for identical images."""
    x, y = _as_float(pred, ref)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _gaussian_valid(img: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (H, W, C) with a 1-D window (filter2(..., 'valid'))."""
    k = len(win)
    h, w = img.shape[:2]
    rows = sum(win[i] * img[i : h - k + 1 + i] for i in range(k))
    return sum(win[j] * rows[:, j : w - k + 1 + j] for j in range(k))


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM of Wang et al. 2004 (ssim_index.m): 11x11 Gaussian window sigma 1.5, K1 = 0.01,
    K2 = 0.03, population (co)variances, 'valid' windows only, no automatic downscaling;
    computed per RGB channel and averaged (the same numbers as scikit-image's
    `structural_similarity(..., channel_axis=-1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)`).

    Written out here (20 lines of numpy) rather than adding scikit-image or torchmetrics as a
    dependency for one formula. Both images need at least 11 px per side.
    """
    x, y = _as_float(pred, ref)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    if min(x.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {x.shape[1]}x{x.shape[0]}")
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _gaussian_valid(x, g), _gaussian_valid(y, g)
    vx = _gaussian_valid(x * x, g) - mx**2
    vy = _gaussian_valid(y * y, g) - my**2
    cxy = _gaussian_valid(x * y, g) - mx * my
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(smap.mean())
