"""The `Enhancer`: a generator on one device, uint8 RGB in and out, in the precision the device runs
fastest, resized or tiled for big frames. Conversion between uint8 RGB and the model's [-1, 1]
float happens once, on the model's device."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from enlighten_ray.devices import native_bf16
from enlighten_ray.errors import BadInputError, reason
from enlighten_ray.infer.settings import PRECISIONS, EnhanceSettings
from enlighten_ray.models.generator import from_model_range, to_model_range
from enlighten_ray.models.weights import load_generator

__all__ = ["Enhancer", "PRECISIONS", "resolve_device", "resolve_precision"]

log = logging.getLogger(__name__)

# Frames with a side above this are tiled when no --tile is given, so 4K/8K fit in memory.
AUTO_TILE_SIDE = 2048
AUTO_TILE = 1024
TILE_OVERLAP = 64
# torch.compile (inductor) ran the generator 1.2x faster than eager fp32 at 640x360, batch 1, on 2
# AMD EPYC cores (1.40 vs 1.16 fps; 1.05x at batch 4), after ~26 s of compiling from a cold cache:
# auto compiles for a video of at least this many frames, where the compile pays back.
COMPILE_MIN_FRAMES = 300


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" = bf16 where the device runs it natively (GPUs, CPUs with AVX512-BF16/AMX), else fp32.
    fp16 is for GPUs; an explicit bf16 is honoured, with a warning where the CPU emulates it."""
    EnhanceSettings(precision=precision).validate()
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if device.type == "cpu" and precision == "fp16":
        log.warning("--precision fp16 is for GPUs; using fp32 on the CPU")
        return "fp32"
    if precision == "bf16" and not native_bf16(device):
        log.warning("this CPU has no native bf16: --precision bf16 runs many times slower than fp32 here")
    return precision


def resolve_device(spec: str) -> torch.device:
    """ "auto" = the first CUDA GPU if there is one, else the CPU; or "cpu", "cuda", "cuda:N"."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise BadInputError("--device", f"'{spec}' is not a device (auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError("--device", f"'{spec}' asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInputError("--device", f"'{spec}': only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise BadInputError("--device", f"'{spec}' is not supported (auto, cpu, cuda, cuda:N)")
    return device


class Enhancer:
    """The generator on one device: uint8 RGB (B, H, W, 3) or (H, W, 3) in, the same shape out.

    max_side: frames whose longer side exceeds it are enhanced at that size (the authors' fallback
    for big photos); the *change* the model makes is upscaled and added to the full-size frame, so
    detail is kept. tile: frames are enhanced in overlapping tile x tile pieces blended with linear
    ramps (None = automatic for sides above 2048 px, 0 = never).
    """

    def __init__(
        self,
        model: nn.Module,
        settings: EnhanceSettings | None = None,
        *,
        device: str | torch.device = "auto",
        **overrides: Any,
    ) -> None:
        """`overrides` replace single fields of `settings` (precision=, batch_size=, ...)."""
        settings = replace(settings or EnhanceSettings(), **overrides).validate()
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.precision = precision = resolve_precision(settings.precision, self.device)
        self.strength = settings.strength
        # One frame per call measured faster than four on 2 AMD EPYC cores (1.16 vs 0.97 fps at 640x360).
        self.batch_size = settings.batch_size or (1 if self.device.type == "cpu" else 4)
        self.max_side = settings.max_side or None
        self.tile = settings.tile
        self.denoise = settings.denoise  # for the video readers that feed this enhancer
        # bf16: weights and activations in bf16, faster than autocast on CPU and GPU. A copy, so the
        # caller's model keeps its own dtype.
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if next(model.parameters()).dtype != dtype:
            model = copy.deepcopy(model).to(dtype=dtype)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.compile = settings.compile
        self._forward: Callable[..., torch.Tensor] = self.model

    def prepare(self, frames: int | None) -> None:
        """Before `frames` frames of one size (a video; None: a count its header does not give):
        compile the generator when `compile` is on, or auto and the frames are known to be enough
        to repay the compile. Idempotent."""
        if self._forward is self.model and self.strength != 0.0:
            enough = frames is not None and frames >= COMPILE_MIN_FRAMES
            if self.compile == "on" or (self.compile == "auto" and enough):
                self._forward = _compiled(self.model)

    @classmethod
    def from_weights(
        cls, weights: str | Path | None, settings: EnhanceSettings | None = None, **kwargs: Any
    ) -> Enhancer:
        """Load a generator file, checkpoint/run directory or the authors' *_net_G_A.pth (None: the shipped model)."""
        model, _ = load_generator(weights)
        return cls(model, settings, **kwargs)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        single = frames.ndim == 3
        batch = frames[None] if single else frames
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected uint8 (B, H, W, 3) or (H, W, 3) RGB, got {batch.dtype} {batch.shape}")
        if self.strength == 0.0:
            out = batch.copy()  # 0 = unchanged, exactly
        else:
            short = self.batch_size - len(batch) if self._forward is not self.model else 0
            if short > 0:  # a video's last, shorter batch: padded, so the compiled graph is reused
                batch = np.concatenate([batch, np.repeat(batch[-1:], short, axis=0)])
            out = self._enhance(torch.from_numpy(np.require(batch, requirements=["C", "W"])))
            out = out[: len(out) - short] if short > 0 else out
        return out[0] if single else out

    @torch.inference_mode()
    def _enhance(self, batch: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
        x = to_model_range(x)
        if self.precision == "bf16":
            x = x.to(torch.bfloat16)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.precision == "fp16"):
            y = self._run_scaled(x)
        y = from_model_range(y)
        return y.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)

    def _run_scaled(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.max_side is None or max(h, w) <= self.max_side:
            return self._run_tiled(x)
        scale = self.max_side / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        # resized in fp32: CPU bilinear with antialias has no bf16 kernel
        small = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True).to(x.dtype)
        change = (self._run_tiled(small) - small).float()
        return x + F.interpolate(change, size=(h, w), mode="bilinear", align_corners=False).to(x.dtype)

    def _run_tiled(self, x: torch.Tensor) -> torch.Tensor:
        tile = self.tile
        if tile is None:
            tile = AUTO_TILE if max(x.shape[-2:]) > AUTO_TILE_SIDE else 0
        if not tile or max(x.shape[-2:]) <= tile:
            return self._forward(x, strength=self.strength)
        overlap = min(TILE_OVERLAP, tile // 4)
        if getattr(self.model, "prior", "none") == "none":
            return _tiled(lambda t: self._forward(t, strength=self.strength), x, tile, overlap)
        # The prior's radius follows the frame: computed once on the whole frame, tiled with it.
        both = torch.cat([x.float(), self.model.base(x)], dim=1)  # the prior is float32
        run = lambda t: self._forward(t[:, :3].to(x.dtype), strength=self.strength, prior=t[:, 3:])  # noqa: E731
        return _tiled(run, both, tile, overlap)


def _compiled(model: nn.Module, backend: str | Callable = "inductor") -> Callable[..., torch.Tensor]:
    """`torch.compile(model)`, falling back to `model` for good if compiling fails (inductor needs a
    C++ compiler on CPUs, Triton on GPUs)."""
    compiled = torch.compile(model, dynamic=False, backend=backend)
    current = [compiled]

    def forward(x: torch.Tensor, strength: float, prior: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {} if prior is None else {"prior": prior}
        try:
            return current[0](x, strength=strength, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager model still works
            if current[0] is model:
                raise
            log.warning("torch.compile failed (%s): running the generator uncompiled", reason(exc))
            current[0] = model
            return model(x, strength=strength, **kwargs)

    return forward


def _tiled(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Apply `run` to overlapping tiles of x (B, C, H, W), which returns (B, 3, h, w) per tile;
    overlaps are blended with linear ramps."""
    h, w = x.shape[-2:]
    out = torch.zeros((x.shape[0], 3, h, w), dtype=torch.float32, device=x.device)
    weight = torch.zeros((1, 1, h, w), device=x.device)
    for top in _starts(h, tile, overlap):
        for left in _starts(w, tile, overlap):
            bottom, right = min(top + tile, h), min(left + tile, w)
            piece = run(x[..., top:bottom, left:right]).float()
            ramp = (
                _ramp(bottom - top, overlap, top > 0, bottom < h, x.device)[:, None]
                * _ramp(right - left, overlap, left > 0, right < w, x.device)[None, :]
            )
            out[..., top:bottom, left:right] += piece * ramp
            weight[..., top:bottom, left:right] += ramp
    return out / weight


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def _ramp(n: int, overlap: int, fade_in: bool, fade_out: bool, device: torch.device) -> torch.Tensor:
    """1 in the middle, rising over `overlap` pixels on edges shared with a neighbouring tile."""
    r = torch.ones(n, device=device)
    k = min(overlap, n)
    ramp = torch.arange(1, k + 1, device=device, dtype=torch.float32) / (k + 1)
    if fade_in:
        r[:k] = torch.minimum(r[:k], ramp)
    if fade_out:
        r[n - k :] = torch.minimum(r[n - k :], ramp.flip(0))
    return r
