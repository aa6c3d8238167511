"""The enhancement runs' shared types, a leaf that `local`, `plan`, `stages` and `ray_job` import
(never the reverse): the batch job's options, its segment rows' schema and their one builder, and
the one summary (and exit-code rule) both runners print."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from enlighten_ray.infer.settings import EnhanceSettings
from enlighten_ray.io.encode import EncoderOptions

__all__ = ["OPEN", "PARTS", "SEGMENT", "BatchOptions", "Summary", "segment_row", "truncation_warning"]

PARTS = "_parts"  # OUTPUT/_parts/<weights id>/<output rel path>/<segment>.<ext>: finished video parts
OPEN = -(2**62)  # "no bound" for a segment's start/end pts (Arrow int64 columns have no None here)


@dataclass(frozen=True)
class BatchOptions:
    """What `enlighten-ray batch` and `jobs/enhance.py` take."""

    input: str
    output: str
    weights: str | None  # None: the shipped model
    format: str | None = None  # image output extension (png, jpg, ...); None = the input's
    frames_out: str | None = None  # videos become enhanced frames under this folder/URI
    frames_format: str = "png"  # png, jpg, webp or parquet
    segment_seconds: float = 10.0
    settings: EnhanceSettings = field(default_factory=EnhanceSettings)
    encoder: EncoderOptions = field(default_factory=EncoderOptions)  # video outputs' segments
    num_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else CPU actors
    concurrency: int | None = None  # actors; None: one per GPU, or half the cluster's CPUs
    progress: bool | None = None  # None: a bar on a terminal, a line every ~10 s in a log; False: none
    verbose: bool = False  # Ray Data's own progress bars and logs as well


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
        ("truncated", pa.bool_()),  # the source ends before its header says (cut short)
        ("header_frames", pa.int64()),  # the header's frame count (0: not given)
        ("error", pa.string()),  # a video that cannot be planned travels as one error row
        ("stage", pa.string()),
    ]
)


def segment_row(
    video: dict,
    part: str,
    index: int,
    count: int,
    start: int,
    end: int,
    first_frame: int,
    error: str = "",
    stage: str = "",
    truncated: bool = False,
    header_frames: int = 0,
) -> dict:
    """A SEGMENT row of `video` (a planned video row: src, dst, parts): `index` of `count`, pts
    [start, end), or an error row (`error`, `stage`) for a video that cannot be planned."""
    return {
        **video,
        "part": part,
        "index": index,
        "count": count,
        "start": start,
        "end": end,
        "first_frame": first_frame,
        "truncated": truncated,
        "header_frames": header_frames,
        "error": error,
        "stage": stage,
    }


@dataclass
class Summary:
    """What a run did: outputs written, outputs already complete, failures (path, stage, error)."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (path, stage, error)
    reused_parts: int = 0  # video segments finished by an earlier, interrupted run
    truncated: list[str] = field(default_factory=list)  # sources cut short: enhanced as far as they decode

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def line(self) -> str:
        line = f"done {self.done}, skipped {self.skipped} (already complete), failed {len(self.failed)}"
        if self.truncated:
            line += f"; {len(self.truncated)} truncated sources enhanced as far as they decode"
        return line + (f"; reused {self.reused_parts} video parts of an earlier run" if self.reused_parts else "")


def truncation_warning(src: str, decoded: int, listed: int | None) -> str:
    """The line for a source cut short, in `enhance` and `batch` alike (`listed`: its header's count)."""
    return f"enlighten-ray: warning: {src}: truncated: {decoded} frames decoded of the {listed or '?'} in its header"
