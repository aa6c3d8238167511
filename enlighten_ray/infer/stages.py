"""The batch job's Ray Data stages: decode, enhance (actor classes) and write; each turns a
failure into an error row, so one bad input never fails the dataset."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from torch import nn

from enlighten_ray.errors import reason
from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.infer.rows import OPEN
from enlighten_ray.infer.settings import EnhanceSettings
from enlighten_ray.io.encode import EncoderOptions, VideoWriter, remux
from enlighten_ray.io.images import ImageMeta, decode_image, encode_png
from enlighten_ray.io.storage import Location, fetched, opened, put_image, stored
from enlighten_ray.io.video import VideoReader, plausible_count, scan_packets

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


def result(
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
    return f"{path}: {reason(exc)}"


def decode_images(batch: pa.Table, source: Location) -> pa.Table:
    """Read and decode (CPU task). A bad file becomes an error row so the dataset never fails."""
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
        self,
        model: nn.Module | ray.ObjectRef,
        device: str = "auto",
        threads: int | None = None,
        settings: EnhanceSettings | None = None,
    ) -> None:
        self.enhancer = Enhancer(_get_model(model, threads), settings, device=device)

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


def write_images(batch: pa.Table, output: Location, source: Location) -> pa.Table:
    """Write enhanced images (CPU task), atomically, and return small result rows."""
    results = []
    for row in batch.to_pylist():
        shown = source.show(row["src"])
        if row["error"]:
            results.append(result(shown, row["dst"], error=row["error"], stage=row["stage"]))
            continue
        try:
            rgb = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
            put_image(output, row["dst"], rgb, pickle.loads(row["meta"]))
            results.append(result(shown, row["dst"], frames=1))
        except Exception as exc:  # noqa: BLE001
            results.append(result(shown, row["dst"], error=_message(output.show(row["dst"]), exc), stage="write"))
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
        settings: EnhanceSettings | None = None,
        encoder: EncoderOptions | None = None,
    ) -> None:
        self.enhancer = Enhancer(_get_model(model, threads), settings, device=device)
        self.source, self.output, self.frames_format = source, output, frames_format
        self.encoder = encoder or EncoderOptions()

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = []
        for row in batch.to_pylist():
            shown = self.source.show(row["src"])
            if row["error"]:  # planning failed: passed through
                results.append(result(shown, row["dst"], error=row["error"], stage=row["stage"]))
                continue
            try:
                reused = self.frames_format is None and self.output.exists(row["part"])
                frames = self._reused(row) if reused else self._segment(row)
                results.append(result(shown, row["dst"], frames, index=row["index"], count=row["count"], reused=reused))
            except Exception as exc:  # noqa: BLE001
                error = _message(f"{shown} (segment {row['index']})", exc)
                results.append(
                    result(shown, row["dst"], error=error, stage="segment", index=row["index"], count=row["count"])
                )
        return pa.Table.from_pylist(results, schema=RESULT)

    def _reused(self, row: dict) -> int:
        """Frames in a part an earlier run finished (parts are written atomically: existing = whole)."""
        with opened(self.output, row["part"]) as part:
            return len(scan_packets(part, self.output.show(row["part"])).pts)

    def _segment(self, row: dict) -> int:
        start = None if row["start"] == OPEN else row["start"]
        end = None if row["end"] == OPEN else row["end"]
        shown = self.source.show(row["src"])
        with opened(self.source, row["src"]) as file, VideoReader(file, shown, self.enhancer.denoise) as reader:
            if self.frames_format is None:
                with stored(self.output, row["part"]) as tmp, VideoWriter(tmp, reader.info, self.encoder) as writer:
                    count = 0
                    for out, pts in self._enhanced(reader, start, end):
                        for rgb, p in zip(out, pts):
                            writer.write(rgb, p)
                        count += len(pts)
                    writer.end_pts = reader.end_pts  # the next segment's first pts, or the video's end
                return count
            return self._frames(row, reader, start, end)

    def _enhanced(self, reader: VideoReader, start: int | None, end: int | None) -> Iterator[tuple[np.ndarray, list]]:
        self.enhancer.prepare(plausible_count(reader.info))  # this actor enhances segments of such videos
        for frames, pts in reader.batches(self.enhancer.batch_size, start, end):
            yield self.enhancer(frames), pts

    def _frames(self, row: dict, reader: VideoReader, start: int | None, end: int | None) -> int:
        index = row["first_frame"]
        folder = row["part"]
        if self.frames_format != "parquet":
            for out, _ in self._enhanced(reader, start, end):
                for rgb in out:
                    put_image(self.output, f"{folder}/{index:06d}.{self.frames_format}", rgb, ImageMeta("RGB"))
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
                            "image": encode_png(rgb),
                        }
                    )
                    index += 1
                pw.write_table(pa.Table.from_pylist(rows, schema=schema))
        return index - row["first_frame"]


def join_video(source: Location, output: Location, src: str, dst: str, parts: list[str], folder: str) -> None:
    """Join finished parts in order (packets copied, not re-encoded) with the source's audio and
    subtitles into `dst` atomically, then delete the parts."""
    with contextlib.ExitStack() as stack:
        local_parts = [stack.enter_context(fetched(output, p)) for p in parts]
        local_src = stack.enter_context(fetched(source, src))
        with stored(output, dst) as tmp:
            remux(local_parts, local_src, tmp)
    output.remove_tree(folder)
