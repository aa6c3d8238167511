"""Single-machine enhancement: the `Enhancer` (generator on one device, uint8 RGB in and out) and
the drivers for a video, an image, or a folder of both.

The video pipeline overlaps decode, model and encode: a decode thread batches frames into a
bounded queue, the calling thread runs the model, an encode thread writes (PyAV releases the GIL
while it codes, torch while it computes). Conversion between uint8 RGB and the model's [-1, 1]
float happens once, on the model's device.
"""

from __future__ import annotations

import copy
import logging
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .atomic import atomic_output
from .devices import native_bf16
from .errors import BadInputError
from .images import IMAGE_EXTENSIONS, list_media, media_kind, read_image, write_image
from .models.generator import check_strength
from .video import OUTPUT_FORMATS, EncoderOptions, VideoReader, VideoWriter
from .weights import load_generator

__all__ = [
    "Enhancer",
    "Job",
    "PRECISIONS",
    "Summary",
    "enhance_image",
    "enhance_path",
    "enhance_video",
    "plan_jobs",
    "resolve_device",
]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Frames with a side above this are tiled when no --tile is given, so 4K/8K fit in memory.
AUTO_TILE_SIDE = 2048
AUTO_TILE = 1024
TILE_OVERLAP = 64
# Decoded batches waiting for the model, and enhanced batches waiting for the encoder.
QUEUE_BATCHES = 3


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" = bf16 where the device runs it natively (GPUs, CPUs with AVX512-BF16/AMX), else fp32.
    fp16 is for GPUs; an explicit bf16 is honoured, with a warning where the CPU emulates it."""
    if precision not in PRECISIONS:
        raise BadInputError("--precision", f"'{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if device.type == "cpu" and precision == "fp16":
        log.warning("--precision fp16 is for GPUs; using fp32 on the CPU")
        return "fp32"
    if precision == "bf16" and not native_bf16(device):
        log.warning("this CPU has no native bf16: --precision bf16 runs many times slower than fp32 here")
    return precision


def resolve_device(spec: str) -> torch.device:
    """"auto" = the first CUDA GPU if there is one, else the CPU; or "cpu", "cuda", "cuda:N"."""
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
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int = 4,
        strength: float = 1.0,
        max_side: int | None = None,
        tile: int | None = None,
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        precision = resolve_precision(precision, self.device)
        if batch_size < 1:
            raise BadInputError("--batch-size", f"must be at least 1, got {batch_size}")
        for name, value in (("--max-side", max_side), ("--tile", tile)):
            if value is not None and value < 0:
                raise BadInputError(name, f"must be positive, got {value}")
        try:
            self.strength = check_strength(strength)
        except ValueError as exc:
            raise BadInputError("--strength", str(exc)) from exc
        self.precision = precision
        self.batch_size = batch_size
        self.max_side = max_side or None
        self.tile = tile
        # bf16: weights and activations in bf16, faster than autocast on CPU and GPU. A copy, so the
        # caller's model keeps its own dtype.
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if next(model.parameters()).dtype != dtype:
            model = copy.deepcopy(model).to(dtype=dtype)
        self.model = model.to(self.device).eval().requires_grad_(False)

    @classmethod
    def from_weights(cls, weights: str | Path | None, **kwargs: Any) -> Enhancer:
        """Load a generator file, checkpoint/run directory or the authors' *_net_G_A.pth (None: the shipped model)."""
        model, _ = load_generator(weights)
        return cls(model, **kwargs)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        single = frames.ndim == 3
        batch = frames[None] if single else frames
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected uint8 (B, H, W, 3) or (H, W, 3) RGB, got {batch.dtype} {batch.shape}")
        if self.strength == 0.0:
            out = batch.copy()  # 0 = unchanged, exactly
        else:
            out = self._enhance(torch.from_numpy(np.require(batch, requirements=["C", "W"])))
        return out[0] if single else out

    @torch.inference_mode()
    def _enhance(self, batch: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
        x = x.float().div_(127.5).sub_(1.0)  # [-1, 1], the networks' range
        if self.precision == "bf16":
            x = x.to(torch.bfloat16)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.precision == "fp16"):
            y = self._run_scaled(x)
        y = y.float().clamp_(-1.0, 1.0).add_(1.0).mul_(127.5).round_().to(torch.uint8)
        return y.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)

    def _run_scaled(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.max_side is None or max(h, w) <= self.max_side:
            return self._run_tiled(x)
        scale = self.max_side / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        change = self._run_tiled(small) - small
        return x + F.interpolate(change, size=(h, w), mode="bilinear", align_corners=False)

    def _run_tiled(self, x: torch.Tensor) -> torch.Tensor:
        tile = self.tile
        if tile is None:
            tile = AUTO_TILE if max(x.shape[-2:]) > AUTO_TILE_SIDE else 0
        if not tile or max(x.shape[-2:]) <= tile:
            return self.model(x, strength=self.strength)
        return _tiled(lambda t: self.model(t, strength=self.strength), x, tile, min(TILE_OVERLAP, tile // 4))


def _tiled(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """Apply `run` to overlapping tiles of x (B, C, H, W); overlaps are blended with linear ramps."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x, dtype=torch.float32)
    weight = torch.zeros((1, 1, h, w), device=x.device)
    for top in _starts(h, tile, overlap):
        for left in _starts(w, tile, overlap):
            bottom, right = min(top + tile, h), min(left + tile, w)
            piece = run(x[..., top:bottom, left:right]).float()
            ramp = _ramp(bottom - top, overlap, top > 0, bottom < h, x.device)[:, None] * _ramp(
                right - left, overlap, left > 0, right < w, x.device
            )[None, :]
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


# ---------------------------------------------------------------------------------------- video


class _Stop(Exception):
    """Raised in a pipeline thread when another thread failed or the user interrupted."""


@dataclass
class _Pipeline:
    """Bounded queues between the decode thread, the model (caller's thread) and the encode thread."""

    stop: threading.Event = field(default_factory=threading.Event)
    error: list[BaseException] = field(default_factory=list)

    def put(self, q: queue.Queue, item: object) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    def get(self, q: queue.Queue) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        raise _Stop

    def thread(self, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except _Stop:
                pass
            except BaseException as exc:  # handed to the caller's thread, which re-raises it
                self.error.append(exc)
                self.stop.set()

        t = threading.Thread(target=guarded, daemon=True)
        t.start()
        return t


_END = object()


def _batches(reader: VideoReader, size: int) -> Iterator[tuple[np.ndarray, list[int]]]:
    shape = (reader.info.height, reader.info.width, 3)
    frames: list[np.ndarray] = []
    pts: list[int] = []
    for frame in reader.frames():
        if frame.rgb.shape != shape:
            raise BadInputError(reader.path, f"frame size changes mid-stream at pts {frame.pts}: not supported")
        frames.append(frame.rgb)
        pts.append(frame.pts)
        if len(frames) == size:
            yield np.stack(frames), pts
            frames, pts = [], []
    if frames:
        yield np.stack(frames), pts


def enhance_video(
    src: str | Path,
    dst: str | Path,
    enhancer: Enhancer,
    encoder: EncoderOptions | None = None,
    *,
    side_by_side: bool = False,
    progress: bool | None = None,
) -> int:
    """Enhance a video file into `dst` (written atomically); returns the number of frames.

    Frame count, timestamps, duration, audio/subtitle packets, rotation and colour tags follow the
    source. side_by_side: each output frame is input | enhanced, twice as wide.
    """
    src, dst = Path(src), Path(dst)
    with VideoReader(src) as reader:
        info = reader.info
        size = (info.width * 2, info.height) if side_by_side else None
        total = info.frame_count
        with (
            atomic_output(dst) as tmp,
            VideoWriter(tmp, info, encoder or EncoderOptions(), size=size, copy_from=src) as writer,
            tqdm(total=total, unit="frame", desc=src.name, disable=_no_bar(progress)) as bar,
        ):
            count = _run_pipeline(reader, writer, enhancer, side_by_side, bar)
            writer.end_pts = reader.end_pts
            bar.total = count  # the header's count may include frames an edit list drops
            bar.refresh()
    return count


def _no_bar(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # None: tqdm shows a bar on terminals only


def _run_pipeline(reader: VideoReader, writer: VideoWriter, enhancer: Enhancer, side_by_side: bool, bar: tqdm) -> int:
    p = _Pipeline()
    decoded: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    enhanced: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    count = 0

    def decode() -> None:
        for batch in _batches(reader, enhancer.batch_size):
            p.put(decoded, batch)
        p.put(decoded, _END)

    def encode() -> None:
        while (item := p.get(enhanced)) is not _END:
            for rgb, pts in zip(*item):
                writer.write(rgb, pts)
            bar.update(len(item[1]))

    threads = [p.thread(decode), p.thread(encode)]
    try:
        try:
            while (item := p.get(decoded)) is not _END:
                frames, pts = item
                out = enhancer(frames)
                if side_by_side:
                    out = np.concatenate([frames, out], axis=2)  # (B, H, 2W, 3): input | output
                p.put(enhanced, (out, pts))
                count += len(pts)
            p.put(enhanced, _END)
            for t in threads:
                while t.is_alive():  # join in slices so Ctrl-C still reaches this thread
                    t.join(timeout=0.1)
        finally:
            p.stop.set()  # on any exit, threads waiting on a queue give up
            for t in threads:
                t.join()
    except _Stop:
        pass  # a pipeline thread failed: its error is raised below
    if p.error:
        raise p.error[0]
    return count


# ---------------------------------------------------------------------------------------- images


def enhance_image(src: str | Path, dst: str | Path, enhancer: Enhancer) -> None:
    """Enhance one image into `dst` (written atomically) in a mode like the input's."""
    rgb, meta = read_image(src)
    write_image(dst, enhancer(rgb), meta)


# ---------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    kind: str  # "image" or "video"


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def plan_jobs(src: str | Path, dst: str | Path) -> list[Job]:
    """Pair inputs with outputs. A file goes to `dst` (or into it when it is a folder); a folder's
    images and videos go to the same relative paths under `dst`. Never an output on an input."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise BadInputError(src, "no such file or folder")
    if src.is_dir():
        return _plan_folder(src, dst)
    kind = media_kind(src)
    if kind is None:
        raise BadInputError(src, "not an image or video file (unknown extension)")
    if dst.is_dir() or str(dst).endswith(("/", "\\")):
        dst = dst / src.name
    _check_output_kind(src, dst, kind)
    if dst.resolve() == src.resolve():
        raise BadInputError(dst, "is the input itself: choose another OUTPUT")
    return [Job(src, dst, kind)]


def _check_output_kind(src: Path, dst: Path, kind: str) -> None:
    suffix = dst.suffix.lower()
    if kind == "image" and suffix not in IMAGE_EXTENSIONS:
        raise BadInputError(dst, f"an image needs an image OUTPUT ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if kind == "video" and suffix not in OUTPUT_FORMATS:
        raise BadInputError(dst, f"a video needs a video OUTPUT ({', '.join(sorted(OUTPUT_FORMATS))})")


def _plan_folder(src: Path, dst: Path) -> list[Job]:
    if dst.exists() and not dst.is_dir():
        raise BadInputError(dst, "INPUT is a folder, so OUTPUT must be a folder")
    if dst.resolve() == src.resolve():
        raise BadInputError(dst, "is the input folder: outputs would replace the inputs")
    media = list_media(src, exclude=dst)
    jobs = [Job(p, dst / p.relative_to(src), "image") for p in media.images]
    for p in media.videos:
        out = dst / p.relative_to(src)
        if out.suffix.lower() not in OUTPUT_FORMATS:  # e.g. .avi/.webm sources: mkv holds any audio
            out = out.with_suffix(".mkv")
        jobs.append(Job(p, out, "video"))
    return sorted(jobs, key=lambda j: j.src)


def enhance_path(
    src: str | Path,
    dst: str | Path,
    enhancer: Enhancer,
    encoder: EncoderOptions | None = None,
    *,
    overwrite: bool = False,
    side_by_side: bool = False,
    progress: bool | None = None,
) -> Summary:
    """Enhance a file or a folder. Existing outputs are skipped unless `overwrite`. In a folder a bad
    file is reported on one line and the rest still done; a single bad file raises BadInputError."""
    jobs = plan_jobs(src, dst)
    single = Path(src).is_file()
    summary = Summary()
    images = sum(j.kind == "image" for j in jobs)
    with tqdm(total=images, unit="img", desc="images", disable=_no_bar(progress) or images < 2) as bar:
        for job in jobs:
            if job.dst.exists() and not overwrite:
                summary.skipped.append(job.dst)
                _say(f"skipped {job.src}: {job.dst} exists (use --overwrite to replace it)")
                continue
            try:
                if job.kind == "image":
                    enhance_image(job.src, job.dst, enhancer)
                    bar.update()
                else:
                    enhance_video(job.src, job.dst, enhancer, encoder, side_by_side=side_by_side, progress=progress)
            except (BadInputError, av.FFmpegError, OSError, torch.OutOfMemoryError) as exc:
                error = exc if isinstance(exc, BadInputError) else BadInputError(job.src, _describe(exc))
                if single:
                    raise error from exc
                message = str(error)
                summary.failed.append((job.src, message))
                _say(f"enlighten-ray: error: {message}")
                continue
            summary.done.append(job.dst)
    return summary


def _describe(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory (try --tile 512, --max-side or a smaller --batch-size)"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _say(line: str) -> None:
    tqdm.write(line, file=sys.stderr)
