"""Batch enhancement at scale on Ray Data: image buckets and video fleets, resumable, nothing lost.

Images: CPU tasks read and decode (a bad file becomes an error row, never a failed dataset), a pool
of actors holds the `Enhancer` (one per GPU, or CPU actors), CPU tasks write each result under the
input's relative path. Images of different sizes are never stacked: each model call takes images of
one size.

Videos are cut at keyframes into segments of about `segment_seconds`, one Ray Data block each, so
many actors work on one video. An actor decodes its pts range, enhances it and encodes a video-only
part; when every part of a video is done the driver starts a Ray task that joins the parts with
`remux` (packets copied, no second encode) and copies the source's audio/subtitles. With
`frames_out`, segments are written as frame images or Parquet instead.

The driver only consumes small result rows (`iter_rows`) and appends `OUTPUT/_manifest.jsonl` (one
line per finished output) and `OUTPUT/_failures.jsonl`. A re-run skips outputs that have a manifest
line with the same weights id and still exist; finished video parts are reused.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
import torch
from torch import nn

from .atomic import atomic_output
from .data import media_files
from .enhance import PRECISIONS, Enhancer
from .errors import BadInputError
from .images import IMAGE_EXTENSIONS, ImageMeta, decode_image, media_kind, write_image
from .video import OUTPUT_FORMATS, EncoderOptions, VideoReader, VideoWriter, keyframe_pts, remux
from .weights import load_generator

__all__ = [
    "BatchOptions",
    "BatchSummary",
    "FRAME_SCHEMA",
    "ImagePredictor",
    "Location",
    "SegmentPredictor",
    "cut_points",
    "run",
]

MANIFEST = "_manifest.jsonl"
FAILURES = "_failures.jsonl"
PARTS = "_parts"  # OUTPUT/_parts/<weights id>/<output rel path>/<segment>.<ext>: finished video parts
FRAME_FORMATS = ("png", "jpg", "webp", "parquet")
# Images per Ray Data block: the unit one decode task, one actor call and one write task handle.
IMAGES_PER_BLOCK = 16
# A crash-looping actor gives up after this many restarts instead of retrying one bad input forever.
ACTOR_RESTARTS = 3
# Remote manifests cannot be appended to: the driver re-uploads its local copy this often (seconds).
REMOTE_LEDGER_UPLOAD_S = 30.0
OPEN = -(2**62)  # "no bound" for a segment's start/end pts (Arrow int64 columns have no None here)

IMAGE_ROW = pa.schema(
    [
        ("src", pa.string()),
        ("dst", pa.string()),
        ("error", pa.string()),
        ("stage", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("pixels", pa.large_binary()),  # (height, width, 3) uint8 RGB
        ("meta", pa.binary()),  # pickled ImageMeta (mode, alpha, ICC/EXIF) for writing back
    ]
)
RESULT = pa.schema(
    [
        ("src", pa.string()),
        ("dst", pa.string()),
        ("frames", pa.int64()),
        ("error", pa.string()),
        ("stage", pa.string()),
        ("index", pa.int32()),  # segment index (videos)
        ("count", pa.int32()),  # segments in this video (videos)
        ("reused", pa.bool_()),  # a video part finished by an earlier run
    ]
)
SEGMENT = pa.schema(
    [
        ("src", pa.string()),
        ("dst", pa.string()),
        ("part", pa.string()),  # the part file, or the frames folder with --frames-out
        ("index", pa.int32()),
        ("count", pa.int32()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("first_frame", pa.int64()),  # index of the segment's first frame in the video
        ("error", pa.string()),  # a video that cannot be planned travels as one error row
        ("stage", pa.string()),
    ]
)
# --frames-out ... --frames-format parquet: one file per segment, one row per frame.
FRAME_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("frame_index", pa.int64()),
        ("pts", pa.int64()),  # in the source stream's time base (file metadata "time_base")
        ("time_s", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("image", pa.binary()),  # PNG
    ]
)


# ------------------------------------------------------------------------------------ locations


class Location:
    """A folder (or file) as a local path or any URI pyarrow handles (s3://, gs://, hdfs://, file://).

    Pickles as its URI, so every worker builds its own filesystem from its own credentials."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri:
            self.fs, root = pafs.FileSystem.from_uri(uri)
            self.scheme = uri.split("://", 1)[0]
        else:
            self.fs, root = pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
            self.scheme = ""
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return Location, (self.uri,)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def show(self, path: str) -> str:
        """How a path on this filesystem is written in logs and the manifest."""
        return path if self.is_local or not self.scheme or self.scheme == "file" else f"{self.scheme}://{path}"

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def contains(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip("/") + "/")

    def remove_tree(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(path)


@contextlib.contextmanager
def fetched(loc: Location, path: str) -> Iterator[Path]:
    """A local path for a file on `loc` (remote files are downloaded to a temporary folder)."""
    if loc.is_local:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="enlighten-in-") as tmp:
        local = Path(tmp) / PurePosixPath(path).name
        with loc.fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


@contextlib.contextmanager
def stored(loc: Location, path: str) -> Iterator[Path]:
    """A local file to write; when the block succeeds it becomes `path` on `loc` atomically: local
    outputs by rename, object-store outputs by one upload of the finished file (S3 and GCS publish
    an object only when its upload completes). On an exception nothing appears at `path`."""
    if loc.is_local:
        with atomic_output(path) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="enlighten-out-") as tmp:
        local = Path(tmp) / PurePosixPath(path).name
        yield local
        loc.fs.create_dir(str(PurePosixPath(path).parent), recursive=True)
        data = local.read_bytes()  # one write call: no half-written object if reading fails midway
        with loc.fs.open_output_stream(path) as dst:
            dst.write(data)


def _write_image(loc: Location, path: str, rgb: np.ndarray, meta: ImageMeta) -> None:
    if loc.is_local:
        write_image(path, rgb, meta)  # atomic by itself
        return
    with stored(loc, path) as tmp:
        write_image(tmp, rgb, meta)


# -------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class BatchOptions:
    """What `jobs/enhance.py` takes; enhancer settings mean what they mean in `Enhancer`."""

    input: str
    output: str
    weights: str | None  # None: the shipped model
    format: str | None = None  # image output extension (png, jpg, ...); None = the input's
    frames_out: str | None = None  # videos become enhanced frames under this folder/URI
    frames_format: str = "png"  # png, jpg, webp or parquet
    segment_seconds: float = 10.0
    strength: float = 1.0
    precision: str = "auto"
    batch_size: int = 4
    tile: int | None = None
    max_side: int | None = None
    num_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else CPU actors
    concurrency: int | None = None  # actors; None: one per GPU, or half the cluster's CPUs

    def pixel_settings(self) -> dict[str, Any]:
        """The options that change output pixels (batch size does not)."""
        return {k: v for k, v in self.enhancer_kwargs().items() if k != "batch_size"}

    def enhancer_kwargs(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "batch_size": self.batch_size,
            "strength": self.strength,
            "tile": self.tile,
            "max_side": self.max_side,
        }


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, stage, error)
    reused_parts: int = 0  # video segments finished by an earlier, interrupted run

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        line = f"done {self.done}, skipped {self.skipped} (already complete), failed {len(self.failed)}"
        return line + (f"; reused {self.reused_parts} video parts of an earlier run" if self.reused_parts else "")


# ---------------------------------------------------------------------------------------- ledger


class Ledger:
    """OUTPUT/_manifest.jsonl (one line per finished output) and OUTPUT/_failures.jsonl, written
    only by the driver. Local files are appended line by line; on object stores, which cannot
    append, a local copy is uploaded every REMOTE_LEDGER_UPLOAD_S seconds and at the end."""

    def __init__(self, output: Location, weights_id: str) -> None:
        self.output = output
        self.weights_id = weights_id
        self.run = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self._tmp = None if output.is_local else tempfile.TemporaryDirectory(prefix="enlighten-ledger-")
        self._files = {name: self._open(name) for name in (MANIFEST, FAILURES)}
        self._uploaded = time.monotonic()

    def _local(self, name: str) -> Path:
        return Path(self.output.path(name)) if self._tmp is None else Path(self._tmp.name) / name

    def _open(self, name: str) -> Any:
        local = self._local(name)
        remote = self.output.path(name)
        if self._tmp is not None and self.output.exists(remote):
            with self.output.fs.open_input_stream(remote) as src:
                local.write_bytes(src.read())
        local.parent.mkdir(parents=True, exist_ok=True)
        f = open(local, "a+", encoding="utf-8")
        f.seek(0, os.SEEK_END)
        if f.tell():  # a driver killed mid-line leaves no newline: start on a fresh line
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        return f

    def completed(self) -> dict[str, dict]:
        """output -> its latest manifest entry made with these weights."""
        f = self._files[MANIFEST]
        f.flush()
        entries: dict[str, dict] = {}
        with open(self._local(MANIFEST), encoding="utf-8") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if entry.get("weights") == self.weights_id:
                    entries[entry["output"]] = entry
        return entries

    def done(self, kind: str, source: str, output: str, frames: int) -> None:
        self._append(
            MANIFEST,
            {
                "source": source,
                "output": output,
                "kind": kind,
                "frames": frames,
                "weights": self.weights_id,
                "run": self.run,
            },
        )

    def failed(self, source: str, stage: str, error: str) -> None:
        self._append(FAILURES, {"path": source, "stage": stage, "error": error, "run": self.run})
        print(f"enlighten-ray: error: {error}", file=sys.stderr)

    def _append(self, name: str, entry: dict) -> None:
        f = self._files[name]
        f.write(json.dumps(entry) + "\n")
        f.flush()
        if self._tmp is not None and time.monotonic() - self._uploaded > REMOTE_LEDGER_UPLOAD_S:
            self.upload()

    def upload(self) -> None:
        if self._tmp is None:
            return
        for name, f in self._files.items():
            f.flush()
            with stored(self.output, self.output.path(name)) as tmp:
                shutil.copyfile(self._local(name), tmp)
        self._uploaded = time.monotonic()

    def close(self) -> None:
        self.upload()
        for f in self._files.values():
            f.close()
        if self._tmp is not None:
            self._tmp.cleanup()


# -------------------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    images: list[dict] = field(default_factory=list)  # {src, dst}
    videos: list[dict] = field(default_factory=list)  # {src, dst, parts}
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def _list_inputs(source: Location, exclude: list[Location]) -> list[tuple[str, str]]:
    """(path on the input filesystem, path relative to the input) of every image and video."""
    kind = source.fs.get_file_info(source.root).type
    if kind == pafs.FileType.NotFound:
        raise BadInputError(source.uri, "no such file or folder")
    if kind == pafs.FileType.File:
        return [(source.root, PurePosixPath(source.root).name)]
    files = media_files(source.fs, source.root, exclude=tuple(x.root for x in exclude))
    return [(path, path[len(source.root.rstrip("/")) + 1 :]) for path, _ in files]


def _existing(loc: Location) -> set[str]:
    """Every file and folder under `loc`, listed once (one listing, not a request per output)."""
    if not loc.exists(loc.root):
        return set()
    return {f.path for f in loc.fs.get_file_info(pafs.FileSelector(loc.root, recursive=True))}


def output_id(weights_id: str, opts: BatchOptions) -> str:
    """What an output was made with: the weights plus the settings that change pixels, so a re-run
    with another --strength or --tile redoes outputs (and never reuses video parts) of the old one."""
    settings = hashlib.sha256(json.dumps(opts.pixel_settings(), sort_keys=True).encode()).hexdigest()[:8]
    return f"{weights_id}-{settings}"


def _plan(opts: BatchOptions, source: Location, output: Location, frames: Location | None, ledger: Ledger) -> _Plan:
    outs = [output] + ([frames] if frames else [])
    inputs = _list_inputs(source, [x for x in outs if source.contains(x.root)])
    finished = ledger.completed()
    existing = _existing(output) | (_existing(frames) if frames else set())
    plan = _Plan()
    claimed: dict[str, str] = {}
    input_names = {source.show(p) for p, _ in inputs}
    for path, rel in inputs:
        kind = media_kind(path)
        if kind == "image":
            suffix = f".{opts.format}" if opts.format else PurePosixPath(rel).suffix
            dst = output.path(str(PurePosixPath(rel).with_suffix(suffix)))
        elif frames is not None:
            dst = frames.path(rel)  # a folder named like the video: frames/cam1/night.mp4/000000.png
        else:
            suffix = PurePosixPath(rel).suffix
            dst = output.path(rel if suffix.lower() in OUTPUT_FORMATS else str(PurePosixPath(rel).with_suffix(".mkv")))
        if (frames if kind == "video" and frames else output).show(dst) in input_names:
            plan.failed.append((source.show(path), "plan", f"{source.show(path)}: its output would replace an input"))
            continue
        if dst in claimed:
            error = f"{source.show(path)}: its output {dst} is also the output of {claimed[dst]}"
            plan.failed.append((source.show(path), "plan", error))
            continue
        claimed[dst] = source.show(path)
        shown = (frames if kind == "video" and frames else output).show(dst)
        if shown in finished and dst in existing:
            plan.skipped += 1
            continue
        row = {"src": path, "dst": dst}
        if kind == "image":
            plan.images.append(row)
        else:
            row["parts"] = output.path(f"{PARTS}/{ledger.weights_id}/{rel}")
            plan.videos.append(row)
    return plan


def cut_points(keyframes: list[int], time_base: float, segment_seconds: float) -> list[int]:
    """Keyframe pts to cut at: the first keyframe at least `segment_seconds` after the previous cut.
    The first segment starts at the video's start (frames before the first keyframe included)."""
    cuts: list[int] = []
    if not keyframes:
        return cuts
    last = keyframes[0]
    for pts in keyframes[1:]:
        if (pts - last) * time_base >= segment_seconds:
            cuts.append(pts)
            last = pts
    return cuts


def _packet_pts(path: Path) -> list[int]:
    """Sorted pts of every video packet: a frame's index in the video, without decoding.
    (Belongs next to `video.keyframe_pts`; see the issue 5 report.)"""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)


def _plan_segments(batch: pa.Table, source: Location, output: Location, frames_mode: bool, seconds: float) -> pa.Table:
    """Video rows -> one row per segment (a CPU task: packet scans only), or an error row."""
    segments = []
    for row in batch.to_pylist():
        try:
            segments.extend(_segments_of(row, source, output, frames_mode, seconds))
        except Exception as exc:  # noqa: BLE001 - any failure becomes a failure record, not a failed job
            error = _message(source.show(row["src"]), exc)
            segments.append(
                {
                    **row,
                    "part": "",
                    "index": 0,
                    "count": 1,
                    "start": OPEN,
                    "end": OPEN,
                    "first_frame": 0,
                    "error": error,
                    "stage": "plan",
                }
            )
    return pa.Table.from_pylist(segments, schema=SEGMENT)


def _segments_of(row: dict, source: Location, output: Location, frames_mode: bool, seconds: float) -> list[dict]:
    with fetched(source, row["src"]) as path:
        with VideoReader(path) as reader:
            time_base = float(reader.info.time_base)
        keys = keyframe_pts(path)
        all_pts = _packet_pts(path) if frames_mode else []
    bounds = [OPEN, *cut_points(keys, time_base, seconds), OPEN]
    if frames_mode:
        output.remove_tree(row["dst"])  # frames of an unfinished earlier run: redone from scratch
    count = len(bounds) - 1
    rows = []
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        suffix = PurePosixPath(row["dst"]).suffix
        name = f"{i:05d}_{_bound(start)}_{_bound(end)}"
        part = row["dst"] if frames_mode else f"{row['parts']}/{name}{suffix}"
        first = bisect.bisect_left(all_pts, start) if start != OPEN else 0
        rows.append(
            {
                **row,
                "part": part,
                "index": i,
                "count": count,
                "start": start,
                "end": end,
                "first_frame": first,
                "error": "",
                "stage": "",
            }
        )
    return rows


def _bound(pts: int) -> str:
    return "open" if pts == OPEN else str(pts)


# ---------------------------------------------------------------------------------------- stages


def _result(
    src: str,
    dst: str,
    frames: int = 0,
    error: str = "",
    stage: str = "",
    index: int = 0,
    count: int = 1,
    reused: bool = False,
) -> dict:
    """A result row (RESULT schema): what the driver records."""
    return {
        "src": src,
        "dst": dst,
        "frames": frames,
        "error": error,
        "stage": stage,
        "index": index,
        "count": count,
        "reused": reused,
    }


def _message(path: str, exc: BaseException) -> str:
    """One line naming the file and the reason."""
    if isinstance(exc, BadInputError):
        reason = exc.reason
    else:
        text = str(exc).splitlines()[0][:200] if str(exc) else ""
        reason = f"{type(exc).__name__}: {text}"
    return f"{path}: {reason}"


def _decode_images(batch: pa.Table, source: Location) -> pa.Table:
    """Read and decode (CPU task). A bad file becomes an error row so the dataset never fails."""
    import pickle

    rows = []
    for row in batch.to_pylist():
        out = {**row, "error": "", "stage": "", "height": 0, "width": 0, "pixels": b"", "meta": b""}
        try:
            with source.fs.open_input_stream(row["src"]) as f:  # bytes: no temporary copy for buckets
                rgb, meta = decode_image(f.read(), source.show(row["src"]))
            out.update(height=rgb.shape[0], width=rgb.shape[1], pixels=rgb.tobytes(), meta=pickle.dumps(meta))
        except Exception as exc:  # noqa: BLE001
            out.update(error=_message(source.show(row["src"]), exc), stage="read")
        rows.append(out)
    return pa.Table.from_pylist(rows, schema=IMAGE_ROW)


def _get_model(model: nn.Module | ray.ObjectRef, threads: int | None) -> nn.Module:
    if threads:
        torch.set_num_threads(threads)
    return ray.get(model) if isinstance(model, ray.ObjectRef) else model


class ImagePredictor:
    """Actor UDF: decoded image rows in, enhanced rows out. Images are grouped by size, so a model
    call never stacks different sizes; each group goes through in chunks of `batch_size`.
    threads: torch intra-op threads for CPU actors. Callable without Ray: `ImagePredictor(model)(table)`."""

    def __init__(
        self, model: nn.Module | ray.ObjectRef, device: str = "auto", threads: int | None = None, **enhancer: Any
    ) -> None:
        self.enhancer = Enhancer(_get_model(model, threads), device=device, **enhancer)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        groups: dict[tuple[int, int], list[dict]] = {}
        for row in rows:
            if not row["error"]:
                groups.setdefault((row["height"], row["width"]), []).append(row)
        size = self.enhancer.batch_size
        for (h, w), group in groups.items():
            for i in range(0, len(group), size):
                chunk = group[i : i + size]
                frames = np.stack([np.frombuffer(r["pixels"], np.uint8).reshape(h, w, 3) for r in chunk])
                try:
                    enhanced = self.enhancer(frames)
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory on one huge image
                    for r in chunk:
                        r.update(error=_message(r["src"], exc), stage="enhance", pixels=b"")
                    continue
                for r, out in zip(chunk, enhanced):
                    r["pixels"] = out.tobytes()
        return pa.Table.from_pylist(rows, schema=IMAGE_ROW)


def _write_images(batch: pa.Table, output: Location, source: Location) -> pa.Table:
    """Write enhanced images (CPU task), atomically, and return small result rows."""
    import pickle

    results = []
    for row in batch.to_pylist():
        shown = source.show(row["src"])
        if row["error"]:
            results.append(_result(shown, row["dst"], error=row["error"], stage=row["stage"]))
            continue
        try:
            rgb = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
            _write_image(output, row["dst"], rgb, pickle.loads(row["meta"]))
            results.append(_result(shown, row["dst"], frames=1))
        except Exception as exc:  # noqa: BLE001
            results.append(_result(shown, row["dst"], error=_message(output.show(row["dst"]), exc), stage="write"))
    return pa.Table.from_pylist(results, schema=RESULT)


class SegmentPredictor:
    """Actor UDF: one video segment per row -> decode its pts range, enhance, and encode a
    video-only part (reused when a finished part exists), or write its frames (`frames_format`)."""

    def __init__(
        self,
        model: nn.Module | ray.ObjectRef,
        source: Location,
        output: Location,
        frames_format: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        **enhancer: Any,
    ) -> None:
        self.enhancer = Enhancer(_get_model(model, threads), device=device, **enhancer)
        self.source, self.output, self.frames_format = source, output, frames_format

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = []
        for row in batch.to_pylist():
            shown = self.source.show(row["src"])
            if row["error"]:  # planning failed: passed through
                results.append(_result(shown, row["dst"], error=row["error"], stage=row["stage"]))
                continue
            try:
                reused = self.frames_format is None and self.output.exists(row["part"])
                frames = self._reused(row) if reused else self._segment(row)
                results.append(
                    _result(shown, row["dst"], frames, index=row["index"], count=row["count"], reused=reused)
                )
            except Exception as exc:  # noqa: BLE001
                error = _message(f"{shown} (segment {row['index']})", exc)
                results.append(
                    _result(shown, row["dst"], error=error, stage="segment", index=row["index"], count=row["count"])
                )
        return pa.Table.from_pylist(results, schema=RESULT)

    def _reused(self, row: dict) -> int:
        """Frames in a part an earlier run finished (parts are written atomically: existing = whole)."""
        with fetched(self.output, row["part"]) as part:
            return len(_packet_pts(part))

    def _segment(self, row: dict) -> int:
        start = None if row["start"] == OPEN else row["start"]
        end = None if row["end"] == OPEN else row["end"]
        with fetched(self.source, row["src"]) as path, VideoReader(path) as reader:
            if self.frames_format is None:
                with stored(self.output, row["part"]) as tmp, VideoWriter(tmp, reader.info, EncoderOptions()) as writer:
                    count = 0
                    for out, pts in self._enhanced(reader, start, end):
                        for rgb, p in zip(out, pts):
                            writer.write(rgb, p)
                        count += len(pts)
                    writer.end_pts = reader.end_pts  # the next segment's first pts, or the video's end
                return count
            return self._frames(row, reader, start, end)

    def _enhanced(self, reader: VideoReader, start: int | None, end: int | None) -> Iterator[tuple[np.ndarray, list]]:
        frames, pts = [], []
        for frame in reader.frames(start, end):
            frames.append(frame.rgb)
            pts.append(frame.pts)
            if len(frames) == self.enhancer.batch_size:
                yield self.enhancer(np.stack(frames)), pts
                frames, pts = [], []
        if frames:
            yield self.enhancer(np.stack(frames)), pts

    def _frames(self, row: dict, reader: VideoReader, start: int | None, end: int | None) -> int:
        index = row["first_frame"]
        folder = row["part"]
        if self.frames_format != "parquet":
            for out, _ in self._enhanced(reader, start, end):
                for rgb in out:
                    _write_image(self.output, f"{folder}/{index:06d}.{self.frames_format}", rgb, ImageMeta("RGB"))
                    index += 1
            return index - row["first_frame"]
        time_base = reader.info.time_base
        schema = FRAME_SCHEMA.with_metadata({"time_base": str(time_base), "source": self.source.show(row["src"])})
        with stored(self.output, f"{folder}/{row['index']:05d}.parquet") as tmp, pq.ParquetWriter(tmp, schema) as pw:
            for out, pts in self._enhanced(reader, start, end):
                rows = []
                for rgb, p in zip(out, pts):
                    rows.append(
                        {
                            "source": self.source.show(row["src"]),
                            "frame_index": index,
                            "pts": p,
                            "time_s": float(p * time_base),
                            "width": rgb.shape[1],
                            "height": rgb.shape[0],
                            "image": _png(rgb),
                        }
                    )
                    index += 1
                pw.write_table(pa.Table.from_pylist(rows, schema=schema))
        return index - row["first_frame"]


def _png(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def join_video(source: Location, output: Location, src: str, dst: str, parts: list[str], folder: str) -> None:
    """Join finished parts in order (packets copied, not re-encoded) with the source's audio and
    subtitles into `dst` atomically, then delete the parts."""
    with contextlib.ExitStack() as stack:
        local_parts = [stack.enter_context(fetched(output, p)) for p in parts]
        local_src = stack.enter_context(fetched(source, src))
        with stored(output, dst) as tmp:
            remux(local_parts, local_src, tmp)
    output.remove_tree(folder)


# ------------------------------------------------------------------------------------------ driver


def _actor_args(opts: BatchOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """map_batches arguments for the actor pool, and the actors' device and torch threads."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), int(resources.get("CPU", 1))
    per_actor = opts.num_gpus_per_actor if opts.num_gpus_per_actor is not None else (1 if gpus else 0)
    if per_actor:
        size = opts.concurrency or max(1, int(gpus // per_actor))
        actor = {"device": "cuda", "threads": None}
    else:
        # CPU actors reserve one CPU each, so actors never hold every CPU and starve the decode and
        # write tasks (the Ray 2.60 hang), but compute with the CPUs the pool shares: Ray would pin
        # torch to 1 thread (OMP_NUM_THREADS=num_cpus), half the speed of a plain loop on 2 cores.
        size = opts.concurrency or max(1, cpus // 2)
        actor = {"device": "cpu", "threads": max(1, cpus // size)}
    args = {
        "compute": ray.data.ActorPoolStrategy(size=size),
        "num_gpus": per_actor,
        "num_cpus": 1,
        "max_restarts": ACTOR_RESTARTS,
        "max_task_retries": ACTOR_RESTARTS,
    }
    return args, actor


def _map_actors(ds: ray.data.Dataset, fn: type, **kwargs: Any) -> ray.data.Dataset:
    """map_batches on the actor pool. Ray 2.60 has no named parameter for max_restarts /
    max_task_retries (its default, -1, retries a crash-looping input forever), so they go through
    the deprecated **ray_remote_args; revisit before Ray 2.64 removes it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
        return ds.map_batches(fn, batch_format="pyarrow", **kwargs)


def _check(opts: BatchOptions) -> None:
    if opts.format is not None and f".{opts.format.lower()}" not in IMAGE_EXTENSIONS:
        known = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise BadInputError("--format", f"'{opts.format}' is not an image format ({known})")
    if opts.frames_format not in FRAME_FORMATS:
        raise BadInputError("--frames-format", f"'{opts.frames_format}' is not one of {', '.join(FRAME_FORMATS)}")
    if not opts.segment_seconds > 0:
        raise BadInputError("--segment-seconds", f"must be positive, got {opts.segment_seconds}")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise BadInputError("--concurrency", f"must be at least 1, got {opts.concurrency}")


def run(opts: BatchOptions) -> BatchSummary:
    """Enhance every image and video under `opts.input` into `opts.output` on the connected Ray
    cluster (call `ray.init` first). Bad inputs are recorded, never fatal; see `BatchSummary`."""
    _check(opts)
    source, output = Location(opts.input), Location(opts.output)
    frames = Location(opts.frames_out) if opts.frames_out else None
    if any(x.root == source.root and x.fs.type_name == source.fs.type_name for x in [output, frames] if x):
        raise BadInputError(opts.output, "is the input: outputs would replace the inputs")
    model, info = load_generator(opts.weights)
    # Bad settings fail here, once, rather than in every actor (precision is checked on the actors' device).
    Enhancer(model, device="cpu", **{**opts.enhancer_kwargs(), "precision": "fp32"})
    if opts.precision not in PRECISIONS:
        raise BadInputError("--precision", f"'{opts.precision}' is not one of {', '.join(PRECISIONS)}")
    ledger = Ledger(output, output_id(info["id"], opts))
    ctx = ray.data.DataContext.get_current()
    saved = ctx.max_errored_blocks
    # Rows that crash an actor ACTOR_RESTARTS times drop their block instead of failing the job;
    # the driver reports them as lost (and a re-run retries them).
    ctx.max_errored_blocks = -1
    try:
        plan = _plan(opts, source, output, frames, ledger)
        summary = BatchSummary(skipped=plan.skipped)
        for path, stage, error in plan.failed:
            ledger.failed(path, stage, error)
            summary.failed.append((path, stage, error))
        model_ref = ray.put(model)
        if plan.images:
            _run_images(opts, plan.images, model_ref, source, output, ledger, summary)
        if plan.videos:
            _run_videos(opts, plan.videos, model_ref, source, output, frames, ledger, summary)
    finally:
        ctx.max_errored_blocks = saved
        ledger.close()
    _prune_empty(output, output.path(PARTS))
    print(f"enlighten-ray: {summary.line()}", file=sys.stderr)
    return summary


def _prune_empty(loc: Location, folder: str) -> None:
    """Remove the empty folders joins leave under OUTPUT/_parts (object stores have none)."""
    if not loc.is_local or not os.path.isdir(folder):
        return
    for here, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(here)  # only succeeds on empty folders: unfinished parts stay for the next run


def _record(ledger: Ledger, summary: BatchSummary, row: dict, kind: str, shown_dst: str) -> None:
    if row["error"]:
        ledger.failed(row["src"], row["stage"], row["error"])
        summary.failed.append((row["src"], row["stage"], row["error"]))
    else:
        ledger.done(kind, row["src"], shown_dst, row["frames"])
        summary.done += 1


def _lost(ledger: Ledger, summary: BatchSummary, sources: Iterable[str]) -> None:
    for src in sources:
        error = f"{src}: lost: its task or actor crashed {ACTOR_RESTARTS + 1} times (see the Ray logs); re-run to retry"
        ledger.failed(src, "lost", error)
        summary.failed.append((src, "lost", error))


def _run_images(
    opts: BatchOptions,
    rows: list[dict],
    model_ref: ray.ObjectRef,
    source: Location,
    output: Location,
    ledger: Ledger,
    summary: BatchSummary,
) -> None:
    actor_args, actor = _actor_args(opts)
    blocks = max(1, math.ceil(len(rows) / IMAGES_PER_BLOCK))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(_decode_images, fn_kwargs={"source": source}, batch_format="pyarrow", batch_size=None)
    ds = _map_actors(
        ds,
        ImagePredictor,
        fn_constructor_kwargs={"model": model_ref, **actor, **opts.enhancer_kwargs()},
        batch_size=IMAGES_PER_BLOCK,
        **actor_args,
    )
    ds = ds.map_batches(
        _write_images, fn_kwargs={"output": output, "source": source}, batch_format="pyarrow", batch_size=None
    )
    pending = {source.show(r["src"]) for r in rows}
    for row in ds.iter_rows():
        pending.discard(row["src"])
        _record(ledger, summary, row, "image", output.show(row["dst"]))
    _lost(ledger, summary, sorted(pending))


def _run_videos(
    opts: BatchOptions,
    videos: list[dict],
    model_ref: ray.ObjectRef,
    source: Location,
    output: Location,
    frames: Location | None,
    ledger: Ledger,
    summary: BatchSummary,
) -> None:
    """Plan segments (CPU tasks), enhance them (actor pool, one segment per block so they spread over
    the actors), and join each video once all its parts are in (one Ray task per video)."""
    frames_mode = frames is not None
    target = frames or output
    shown = {source.show(v["src"]): v for v in videos}
    plans = ray.data.from_items(videos, override_num_blocks=len(videos)).map_batches(
        _plan_segments,
        fn_kwargs={"source": source, "output": target, "frames_mode": frames_mode, "seconds": opts.segment_seconds},
        batch_format="pyarrow",
        batch_size=None,
    )
    segments: dict[str, list[dict]] = {}  # shown source -> its segments
    for row in plans.iter_rows():
        src = source.show(row["src"])
        if row["error"]:
            _record(ledger, summary, _result(src, row["dst"], error=row["error"], stage=row["stage"]), "video", "")
        segments.setdefault(src, []).append(row)
    _lost(ledger, summary, sorted(set(shown) - set(segments)))
    todo = [s for rows in segments.values() for s in rows if not s["error"]]
    if not todo:
        return
    actor_args, actor = _actor_args(opts)
    ds = _map_actors(
        ray.data.from_items(todo, override_num_blocks=len(todo)),
        SegmentPredictor,
        fn_constructor_kwargs={
            "model": model_ref,
            "source": source,
            "output": target,
            **actor,
            "frames_format": opts.frames_format if frames_mode else None,
            **opts.enhancer_kwargs(),
        },
        batch_size=1,
        **actor_args,
    )
    expected = {src: rows[0]["count"] for src, rows in segments.items() if not rows[0]["error"]}
    got: dict[str, list[dict]] = {}
    joins: dict[ray.ObjectRef, tuple[str, str, int]] = {}
    join = ray.remote(join_video).options(num_cpus=1, max_retries=2)

    def finish(ref: ray.ObjectRef) -> None:
        src, dst, count = joins.pop(ref)
        try:
            ray.get(ref)
        except Exception as exc:  # noqa: BLE001
            cause = getattr(exc, "cause", None) or exc
            _record(ledger, summary, _result(src, dst, error=_message(src, cause), stage="join"), "video", "")
            return
        _record(ledger, summary, _result(src, dst, count), "video", output.show(dst))

    for row in ds.iter_rows():
        summary.reused_parts += row["reused"]
        parts = got.setdefault(row["src"], [])
        parts.append(row)
        if len(parts) < expected[row["src"]]:
            continue
        failed = [p for p in parts if p["error"]]
        total = sum(p["frames"] for p in parts)
        if failed:
            _record(ledger, summary, failed[0], "video", "")
        elif frames_mode:
            _record(ledger, summary, _result(row["src"], row["dst"], total), "video", target.show(row["dst"]))
        else:
            video = shown[row["src"]]
            ordered = [s["part"] for s in sorted(segments[row["src"]], key=lambda s: s["index"])]
            ref = join.remote(source, output, video["src"], video["dst"], ordered, video["parts"])
            joins[ref] = (row["src"], video["dst"], total)
        if joins:  # record joins that have finished, without waiting for the others
            ready, _ = ray.wait(list(joins), num_returns=len(joins), timeout=0)
            for ref in ready:
                finish(ref)
    for ref in list(joins):
        finish(ref)
    _lost(ledger, summary, sorted(s for s, n in expected.items() if len(got.get(s, [])) < n))
