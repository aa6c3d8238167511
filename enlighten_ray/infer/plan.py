"""Planning both runners: which output each input gets (never an input, never twice, finished ones
skipped by a policy), the cleanup of what a killed run left, and where the batch job cuts each
video into segments that actors enhance independently."""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pyarrow as pa

from enlighten_ray.errors import reason
from enlighten_ray.infer.ledger import Ledger
from enlighten_ray.infer.rows import OPEN, SEGMENT, segment_row
from enlighten_ray.io.atomic import partial_target
from enlighten_ray.io.storage import Location, opened
from enlighten_ray.io.video import OUTPUT_FORMATS, VideoReader, cut_short, nominal_step, scan_packets


@dataclass(frozen=True)
class Target:
    """An input and the output the planner gave it."""

    src: str  # on the input's filesystem
    rel: str  # relative to INPUT (the file's own name when INPUT is one file)
    dst: str  # on the output's filesystem
    out_rel: str  # dst relative to its output root
    kind: str  # "image" or "video"
    version: str  # size:mtime of the source, as planned
    shown: str  # src as logs and the manifest write it
    shown_dst: str  # dst likewise


@dataclass
class Plan:
    todo: list[Target] = field(default_factory=list)
    skipped: list[Target] = field(default_factory=list)  # finished by an earlier run (the skip policy says)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (source, "plan", error)

    @property
    def empty(self) -> bool:
        return not (self.todo or self.skipped or self.failed)


Skip = Callable[[Target], bool]  # the skip policy: is this target's output already complete?


def never_skip(target: Target) -> bool:
    return False


def skip_existing(existing: set[str]) -> Skip:
    """`enhance`'s policy: an output that exists is complete (`--overwrite` uses never_skip)."""
    return lambda t: t.dst in existing


def skip_recorded(ledger: Ledger, existing: set[str]) -> Skip:
    """The batch job's policy: done = recorded in the manifest with these weights and settings, from
    this very source version, and still there."""
    finished = ledger.completed()

    def skip(t: Target) -> bool:
        entry = finished.get(t.shown_dst)
        return entry is not None and entry.get("source_version") == t.version and t.dst in existing

    return skip


def output_name(rel: str, kind: str, image_format: str | None = None) -> str:
    """An input's output path relative to the output folder: the same, images in `image_format`
    when given, videos in a container we cannot write (.avi, .webm ...) as .mkv (it holds any audio)."""
    path = PurePosixPath(rel)
    if kind == "image":
        return str(path.with_suffix(f".{image_format}")) if image_format else rel
    return rel if path.suffix.lower() in OUTPUT_FORMATS else str(path.with_suffix(".mkv"))


def _list_inputs(source: Location, exclude: list[Location]) -> list[tuple[str, str, str, str]]:
    """(path on the input filesystem, path relative to the input, kind, version) of every image and video."""
    files = source.media(exclude=tuple(x.root for x in exclude))
    if len(files) == 1 and files[0].path == source.root:
        return [(source.root, PurePosixPath(source.root).name, files[0].kind, files[0].version)]
    return [(path, path[len(source.root.rstrip("/")) + 1 :], kind, version) for path, kind, version in files]


def output_id(weights_id: str, pixel_settings: dict) -> str:
    """What an output was made with: the weights plus the settings that change pixels, so a re-run
    with another --strength or --tile redoes outputs (and never reuses video parts) of the old one."""
    settings = hashlib.sha256(json.dumps(pixel_settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{weights_id}-{settings}"


def plan_outputs(
    source: Location,
    output: Location,
    skip: Skip = never_skip,
    frames: Location | None = None,
    image_format: str | None = None,
) -> Plan:
    """The one planner of both runners: every input under `source` gets its output under `output`
    (videos a frames folder under `frames` when given), never onto an input and never one output for
    two inputs; `skip` says which are complete. Reads listings only: it deletes nothing."""
    outs = [output] + ([frames] if frames else [])
    inputs = _list_inputs(source, [x for x in outs if source.contains(x.root)])
    input_names = {source.show(p) for p, _, _, _ in inputs}
    plan = Plan()
    claimed: dict[str, str] = {}
    for path, rel, kind, version in inputs:
        root = frames if kind == "video" and frames else output
        out_rel = rel if root is frames else output_name(rel, kind, image_format)
        dst = root.path(out_rel)
        target = Target(path, rel, dst, out_rel, kind, version, source.show(path), root.show(dst))
        folder = str(PurePosixPath(dst).parent)
        if root.is_local and not _stays_inside(root.root, folder):
            error = f"{target.shown}: its output folder {folder} is a link leading outside {root.uri}"
            plan.failed.append((target.shown, "plan", error))
        elif target.shown_dst in input_names:
            plan.failed.append((target.shown, "plan", f"{target.shown}: its output would replace an input"))
        elif target.dst in claimed:
            error = f"{target.shown}: its output {target.shown_dst} is also the output of {claimed[target.dst]}"
            plan.failed.append((target.shown, "plan", error))
        else:
            claimed[target.dst] = target.shown
            (plan.skipped if skip(target) else plan.todo).append(target)
    return plan


def owned_by(plan: Plan, parts: str | None = None) -> Callable[[str], bool]:
    """Which paths this run may replace or clean up: the outputs the plan maps to inputs, the
    files inside a planned video's frames folder, and under `parts` (the batch job's
    `_parts/<weights id>/`) the parts of a planned video. Nothing else in OUTPUT is the tool's."""
    targets = plan.todo + plan.skipped
    outputs = {t.dst for t in targets}
    folders = tuple(f"{t.dst.rstrip('/')}/" for t in targets if t.kind == "video")
    videos = {t.rel for t in targets if t.kind == "video"}

    def owned(path: str) -> bool:
        if path in outputs or path.startswith(folders):
            return True
        if parts is None or not path.startswith(f"{parts.rstrip('/')}/"):
            return False
        _, _, in_id = path[len(parts.rstrip("/")) + 1 :].partition("/")  # <weights id>/<video rel>/<part>
        return str(PurePosixPath(in_id).parent) in videos

    return owned


@functools.lru_cache(maxsize=4096)
def _stays_inside(root: str, folder: str) -> bool:
    """Whether a local output folder, its links resolved, is still under the output root (a
    linked folder inside OUTPUT must not carry writes elsewhere)."""
    real_root, real = os.path.realpath(root), os.path.realpath(folder)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def remove_partials(loc: Location, listing: set[str], owned: Callable[[str], bool]) -> set[str]:
    """The run's cleanup step: delete the temporary files a killed run of this tool left mid-write
    under a local output folder (object-store outputs are uploaded whole): only names of
    `atomic_output`'s exact shape whose output `owned` says is this run's. Returns `listing` less
    what it deleted. Assumes one job per output folder."""
    if not loc.is_local:
        return listing
    stale = {p for p in listing if (target := partial_target(p)) is not None and owned(target)}
    for path in sorted(stale):
        loc.fs.delete_file(path)
    if stale:
        print(
            f"enlighten-ray: removed {len(stale)} unfinished files of an earlier run under {loc.uri}", file=sys.stderr
        )
    return listing - stale


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
    """Video rows -> one row per segment (a CPU task: packet scans only; it deletes nothing), or an
    error row."""
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
        info = reader.info
    with opened(source, row["src"]) as file:
        packets = scan_packets(file, shown)
    time_base = float(info.time_base)
    truncated = bool(packets.pts) and cut_short(info, packets.pts[-1] + nominal_step(info))
    header = {"truncated": truncated, "header_frames": info.frame_count or 0}
    all_pts = packets.pts if frames_mode else []
    bounds = [OPEN, *cut_points(packets.keys, time_base, seconds), OPEN]
    count = len(bounds) - 1
    rows = []
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        suffix = PurePosixPath(row["dst"]).suffix
        name = f"{i:05d}_{_bound(start)}_{_bound(end)}"
        part = row["dst"] if frames_mode else f"{row['parts']}/{name}{suffix}"
        first = bisect.bisect_left(all_pts, start) if start != OPEN else 0
        rows.append(segment_row(row, part, i, count, start, end, first, **header))
    return rows


def _bound(pts: int) -> str:
    return "open" if pts == OPEN else str(pts)
