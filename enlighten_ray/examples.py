"""A small built-in example the project draws itself (no downloaded or copied data): night and day
street scenes for the README's smoke training, and a short dark clip to enhance."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from enlighten_ray.io.encode import VideoWriter
from enlighten_ray.io.video import VideoInfo

__all__ = ["scene", "write_dark_clip", "write_example_images"]


def scene(height: int, width: int, rng: np.random.Generator, night: bool, phase: float = 0.0) -> np.ndarray:
    """A street-like uint8 RGB picture: sky gradient, buildings, road, lamps. `phase` in [0, 1)
    slides the lamps and buildings sideways, which turns a sequence of scenes into a drive."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = 0.55 * height
    sky = np.stack([0.35 + 0.2 * yy / height, 0.5 + 0.2 * yy / height, 0.85 - 0.1 * yy / height], -1)
    road = np.stack([0.35, 0.35, 0.37]) * (0.7 + 0.3 * (yy / height))[..., None]
    img = np.where((yy < horizon)[..., None], sky, road)
    # Buildings: rectangles of random colour standing on the horizon.
    shift = phase * width
    for _ in range(6):
        x0 = (rng.uniform(0, width) - shift) % width
        w, h = rng.uniform(0.08, 0.2) * width, rng.uniform(0.15, 0.45) * height
        inside = (xx >= x0) & (xx < x0 + w) & (yy >= horizon - h) & (yy < horizon)
        img[inside] = rng.uniform(0.25, 0.8, 3)
    # Lane marking and lamps.
    img[(np.abs(xx - width / 2) < max(1, width // 80)) & (yy > horizon) & ((yy // 6) % 2 == 0)] = 0.95
    lamps = [((i + 0.5) / 4 * width - shift) % width for i in range(4)]
    if night:
        img = img * 0.12  # a dark scene: the low-light domain
        for lx in lamps:
            glow = np.exp(-((xx - lx) ** 2 + (yy - horizon * 0.6) ** 2) / (2 * (0.04 * width) ** 2))
            img = img + glow[..., None] * np.array([1.0, 0.85, 0.55])
    img = img + rng.normal(0, 0.015 if not night else 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_example_images(
    folder: str | Path, count: int, night: bool, size: tuple[int, int] = (96, 128), seed: int = 0
) -> list[Path]:
    """`count` JPEG scenes in `folder` (night = the low domain, day = the normal domain)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{'night' if night else 'day'}_{i:03d}.jpg"
        Image.fromarray(scene(*size, rng, night)).save(path, quality=92)
        paths.append(path)
    return paths


def write_dark_clip(path: Path, frames: int = 36, size: tuple[int, int] = (180, 320), fps: int = 12) -> Path:
    """A few seconds of a night drive: the lamps and buildings slide past."""
    info = VideoInfo(
        path=str(path), codec="h264", width=size[1], height=size[0], pix_fmt="yuv420p",
        time_base=Fraction(1, fps), rate=Fraction(fps), start_pts=0, duration=frames, frame_count=frames,
    )  # fmt: skip
    with VideoWriter(path, info) as writer:
        for i in range(frames):
            writer.write(scene(*size, np.random.default_rng(7), night=True, phase=i / frames / 2), pts=i)
        writer.end_pts = frames
    return path
