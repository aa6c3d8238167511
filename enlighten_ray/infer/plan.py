"""Planning the batch job: which output each input gets (never an input, never twice, finished
ones skipped), and where each video is cut into segments that actors enhance independently."""

from __future__ import annotations

import bisect
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pyarrow as pa

from enlighten_ray.errors import reason
from enlighten_ray.infer.ledger import Ledger
from enlighten_ray.infer.rows import OPEN, PARTS, SEGMENT, BatchOptions, segment_row
from enlighten_ray.io.atomic import is_partial
from enlighten_ray.io.images import media_kind
from enlighten_ray.io.storage import Location, opened
from enlighten_ray.io.video import OUTPUT_FORMATS, VideoReader, scan_packets


@dataclass
class Plan:
    images: list[dict] = field(default_factory=list)  # {src, dst}
    videos: list[dict] = field(default_factory=list)  # {src, dst, parts}
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def output_name(rel: str, kind: str, image_format: str | None = None) -> str:
    """An input's output path relative to the output folder: the same, images in `image_format`
    when given, videos in a container we cannot write (.avi, .webm ...) as .mkv (it holds any audio)."""
    path = PurePosixPath(rel)
    if kind == "image":
        return str(path.with_suffix(f".{image_format}")) if image_format else rel
    return rel if path.suffix.lower() in OUTPUT_FORMATS else str(path.with_suffix(".mkv"))


def _list_inputs(source: Location, exclude: list[Location]) -> list[tuple[str, str, str]]:
    """(path on the input filesystem, path relative to the input, version) of every image and video."""
    files = source.media(exclude=tuple(x.root for x in exclude))
    if len(files) == 1 and files[0].path == source.root:
        return [(source.root, PurePosixPath(source.root).name, files[0].version)]
    return [(path, path[len(source.root.rstrip("/")) + 1 :], version) for path, _, version in files]


def output_id(weights_id: str, pixel_settings: dict) -> str:
    """What an output was made with: the weights plus the settings that change pixels, so a re-run
    with another --strength or --tile redoes outputs (and never reuses video parts) of the old one."""
    settings = hashlib.sha256(json.dumps(pixel_settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{weights_id}-{settings}"


def plan_outputs(
    opts: BatchOptions, source: Location, output: Location, frames: Location | None, ledger: Ledger
) -> Plan:
    outs = [output] + ([frames] if frames else [])
    inputs = _list_inputs(source, [x for x in outs if source.contains(x.root)])
    finished = ledger.completed()
    existing = set()
    for loc in outs:
        listing = loc.listing()
        existing |= listing - _remove_partials(loc, listing)
    plan = Plan()
    claimed: dict[str, str] = {}
    input_names = {source.show(p) for p, _, _ in inputs}
    for path, rel, version in inputs:
        kind = media_kind(path)
        if kind == "video" and frames is not None:
            dst = frames.path(rel)  # a folder named like the video: frames/cam1/night.mp4/000000.png
        else:
            dst = output.path(output_name(rel, kind, opts.format))
        if (frames if kind == "video" and frames else output).show(dst) in input_names:
            plan.failed.append((source.show(path), "plan", f"{source.show(path)}: its output would replace an input"))
            continue
        if dst in claimed:
            error = f"{source.show(path)}: its output {dst} is also the output of {claimed[dst]}"
            plan.failed.append((source.show(path), "plan", error))
            continue
        claimed[dst] = source.show(path)
        ledger.versions[source.show(path)] = version
        shown = (frames if kind == "video" and frames else output).show(dst)
        # Done = recorded with these weights and settings, from this very source, and still there.
        if shown in finished and finished[shown].get("source_version") == version and dst in existing:
            plan.skipped += 1
            continue
        row = {"src": path, "dst": dst}
        if kind == "image":
            plan.images.append(row)
        else:
            row["parts"] = output.path(f"{PARTS}/{ledger.weights_id}/{rel}")
            plan.videos.append(row)
    return plan


def _remove_partials(loc: Location, listing: set[str]) -> set[str]:
    """Delete the temporary files a killed run left mid-write (local outputs only: object-store
    outputs are uploaded whole). Assumes one job per output folder."""
    stale = {p for p in listing if is_partial(p)} if loc.is_local else set()
    for path in sorted(stale):
        loc.fs.delete_file(path)
    if stale:
        print(
            f"enlighten-ray: removed {len(stale)} unfinished files of an earlier run under {loc.uri}", file=sys.stderr
        )
    return stale


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


def plan_segments(batch: pa.Table, source: Location, output: Location, frames_mode: bool, seconds: float) -> pa.Table:
    """Video rows -> one row per segment (a CPU task: packet scans only), or an error row."""
    segments = []
    for row in batch.to_pylist():
        try:
            segments.extend(_segments_of(row, source, output, frames_mode, seconds))
        except Exception as exc:  # noqa: BLE001 - any failure becomes a failure record, not a failed job
            error = f"{source.show(row['src'])}: {reason(exc)}"
            segments.append(segment_row(row, "", 0, 1, OPEN, OPEN, 0, error=error, stage="plan"))
    return pa.Table.from_pylist(segments, schema=SEGMENT)


def _segments_of(row: dict, source: Location, output: Location, frames_mode: bool, seconds: float) -> list[dict]:
    shown = source.show(row["src"])
    with opened(source, row["src"]) as file, VideoReader(file, shown) as reader:
        time_base = float(reader.info.time_base)
    with opened(source, row["src"]) as file:
        packets = scan_packets(file, shown)
    all_pts = packets.pts if frames_mode else []
    bounds = [OPEN, *cut_points(packets.keys, time_base, seconds), OPEN]
    if frames_mode:
        output.remove_tree(row["dst"])  # frames of an unfinished earlier run: redone from scratch
    count = len(bounds) - 1
    rows = []
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        suffix = PurePosixPath(row["dst"]).suffix
        name = f"{i:05d}_{_bound(start)}_{_bound(end)}"
        part = row["dst"] if frames_mode else f"{row['parts']}/{name}{suffix}"
        first = bisect.bisect_left(all_pts, start) if start != OPEN else 0
        rows.append(segment_row(row, part, i, count, start, end, first))
    return rows


def _bound(pts: int) -> str:
    return "open" if pts == OPEN else str(pts)
