"""Enhancing on one machine: a video, an image, or a folder of both.

The video pipeline overlaps decode, model and encode: a decode thread batches frames into a
bounded queue, the calling thread runs the model, an encode thread writes (PyAV releases the GIL
while it codes, torch while it computes).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from tqdm import tqdm

from enlighten_ray.errors import BadInputError, reason, shown
from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.infer.plan import Target, never_skip, owned_by, plan_outputs, remove_partials, skip_existing
from enlighten_ray.infer.progress import progress_bar
from enlighten_ray.infer.rows import Summary, truncation_warning
from enlighten_ray.io.atomic import atomic_output, partial_target
from enlighten_ray.io.encode import EncoderOptions, VideoWriter
from enlighten_ray.io.images import IMAGE_EXTENSIONS, media_kind, read_image, write_image
from enlighten_ray.io.storage import Location
from enlighten_ray.io.video import OUTPUT_FORMATS, VideoReader, plausible_count

__all__ = ["Job", "LocalPlan", "Summary", "enhance_image", "enhance_path", "enhance_video", "plan_jobs"]

# Decoded batches waiting for the model, and enhanced batches waiting for the encoder.
QUEUE_BATCHES = 3


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


def enhance_video(
    src: str | Path,
    dst: str | Path,
    enhancer: Enhancer,
    encoder: EncoderOptions | None = None,
    *,
    side_by_side: bool = False,
    progress: bool | None = None,
    truncated: list[str] | None = None,
) -> int:
    """Enhance a video file into `dst` (written atomically); returns the number of frames. A source
    cut short is enhanced as far as it decodes, with a warning, and its name added to `truncated`.

    Frame count, timestamps, duration, audio/subtitle packets, rotation and colour tags follow the
    source. side_by_side: each output frame is input | enhanced, twice as wide (the input as
    decoded, before the `--denoise` pre-filter: a second decoder reads it alongside).
    """
    src, dst = Path(src), Path(dst)
    with VideoReader(src, denoise=enhancer.denoise) as reader, contextlib.ExitStack() as stack:
        left_of = None
        if side_by_side and enhancer.denoise == "off":
            left_of = _same_frames
        elif side_by_side:
            left_of = _frames_from(stack.enter_context(VideoReader(src)))
        info = reader.info
        size = (info.width * 2, info.height) if side_by_side else None
        total = plausible_count(info)  # decides compiling and the ETA: a header may lie
        enhancer.prepare(total)
        with (
            atomic_output(dst) as tmp,
            VideoWriter(tmp, info, encoder or EncoderOptions(), size=size, copy_from=src) as writer,
            progress_bar(total, "frame", src.name, progress) as bar,
        ):
            count = _run_pipeline(reader, writer, enhancer, left_of, bar)
            writer.end_pts = reader.end_pts
            if reader.truncated:
                _say(truncation_warning(str(src), count, info.frame_count))
                if truncated is not None:
                    truncated.append(str(src))
            bar.total = count  # the header's count may include frames an edit list drops
            bar.refresh()
    return count


LeftHalf = Callable[[np.ndarray], np.ndarray]  # a decoded batch -> the frames shown left of its enhanced copy


def _same_frames(frames: np.ndarray) -> np.ndarray:
    return frames


def _frames_from(reader: VideoReader) -> LeftHalf:
    """Another decoder's frames, in step with the pipeline's batches."""
    frames = (frame.rgb for frame in reader.frames())
    return lambda batch: np.stack([next(frames) for _ in range(len(batch))])


def _run_pipeline(
    reader: VideoReader, writer: VideoWriter, enhancer: Enhancer, left_of: LeftHalf | None, bar: Any
) -> int:
    """Decode, enhance and encode in three threads; with `left_of`, each output frame is its left
    half | the enhanced frame."""
    p = _Pipeline()
    decoded: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    enhanced: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    count = 0

    def decode() -> None:
        for batch in reader.batches(enhancer.batch_size):
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
                if left_of is not None:
                    out = np.concatenate([left_of(frames), out], axis=2)  # (B, H, 2W, 3): input | output
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
class LocalPlan:
    todo: list[Job] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (source, "plan", error)


def plan_jobs(src: str | Path, dst: str | Path, overwrite: bool = False, image_format: str | None = None) -> LocalPlan:
    """Pair inputs with outputs. A file goes to `dst` (or into it when it is a folder); a folder's
    images and videos go to the same relative paths under `dst`, through the batch job's planner.
    Never an output on an input; existing outputs are skipped unless `overwrite`."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise BadInputError(src, "a link that loops" if _loops(src) else "no such file or folder")
    if src.is_dir():
        return _plan_folder(src, dst, overwrite, image_format)
    kind = media_kind(src)
    if kind is None:
        raise BadInputError(src, "not an image or video file (unknown extension)")
    if dst.is_dir() or str(dst).endswith(("/", "\\")):
        dst = dst / src.name
    _check_output_kind(src, dst, kind)
    if dst.resolve() == src.resolve():
        raise BadInputError(dst, "is the input itself: choose another OUTPUT")
    job = Job(src, dst, kind)
    _remove_partials_of(dst)
    return LocalPlan(skipped=[job]) if dst.exists() and not overwrite else LocalPlan(todo=[job])


def _loops(path: Path) -> bool:
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python 3.11: "Symlink loop from ..."
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _remove_partials_of(dst: Path) -> None:
    """A single file's cleanup step: the temporary files a killed run left for this very output."""
    stale = [p for p in dst.parent.glob(f".{glob.escape(dst.stem)}.*.partial*") if partial_target(p.name) == dst.name]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        print(f"enlighten-ray: removed {len(stale)} unfinished files of an earlier run of {dst}", file=sys.stderr)


def _check_output_kind(src: Path, dst: Path, kind: str) -> None:
    suffix = dst.suffix.lower()
    if kind == "image" and suffix not in IMAGE_EXTENSIONS:
        raise BadInputError(dst, f"an image needs an image OUTPUT ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    if kind == "video" and suffix not in OUTPUT_FORMATS:
        raise BadInputError(dst, f"a video needs a video OUTPUT ({', '.join(sorted(OUTPUT_FORMATS))})")


def _plan_folder(src: Path, dst: Path, overwrite: bool, image_format: str | None = None) -> LocalPlan:
    if dst.exists() and not dst.is_dir():
        raise BadInputError(dst, "INPUT is a folder, so OUTPUT must be a folder")
    if dst.resolve() == src.resolve():
        raise BadInputError(dst, "is the input folder: outputs would replace the inputs")
    source, output = Location(str(src)), Location(str(dst))
    existing = output.listing()
    skip = never_skip if overwrite else skip_existing(existing)
    plan = plan_outputs(source, output, skip, image_format=image_format)
    remove_partials(output, existing, owned_by(plan))
    if plan.empty:
        raise source.nothing_to_do()

    def job(t: Target) -> Job:  # the user's own spelling of the folders, relative paths included
        return Job(src / t.rel, dst / t.out_rel, t.kind)

    return LocalPlan([job(t) for t in plan.todo], [job(t) for t in plan.skipped], plan.failed)


def enhance_path(
    src: str | Path,
    dst: str | Path,
    enhancer: Enhancer,
    encoder: EncoderOptions | None = None,
    *,
    overwrite: bool = False,
    side_by_side: bool = False,
    progress: bool | None = None,
    image_format: str | None = None,
) -> Summary:
    """Enhance a file or a folder. Existing outputs are skipped unless `overwrite`. A folder's images
    are written as `image_format` (png, jpg ...) when given, else in their own format. In a folder a bad
    file is reported on one line and the rest still done; a single bad file raises BadInputError."""
    plan = plan_jobs(src, dst, overwrite, image_format)
    single = Path(src).is_file()
    summary = Summary(skipped=len(plan.skipped), failed=list(plan.failed))
    for job in plan.skipped:
        _say(f"skipped {shown(job.src)}: {shown(job.dst)} exists (use --overwrite to replace it)")
    for _, _, error in plan.failed:
        _say(f"enlighten-ray: error: {error}")
    images = sum(j.kind == "image" for j in plan.todo)
    with progress_bar(images, "image", "images", progress if images > 1 else False) as bar:
        for job in plan.todo:
            try:
                if job.kind == "image":
                    enhance_image(job.src, job.dst, enhancer)
                    bar.update()
                else:
                    enhance_video(
                        job.src, job.dst, enhancer, encoder, side_by_side=side_by_side, progress=progress,
                        truncated=summary.truncated,
                    )  # fmt: skip
            except (BadInputError, av.FFmpegError, OSError, torch.OutOfMemoryError) as exc:
                error = exc if isinstance(exc, BadInputError) else BadInputError(job.src, _describe(exc))
                if single:
                    raise error from exc
                summary.failed.append((str(job.src), "enhance", str(error)))
                _say(f"enlighten-ray: error: {error}")
                continue
            summary.done += 1
    return summary


def _describe(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory (try --tile 512, --max-side or a smaller --batch-size)"
    return reason(exc)


def _say(line: str) -> None:
    tqdm.write(line, file=sys.stderr)  # above a running bar, not through it
