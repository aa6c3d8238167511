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
line with the same weights id and source version (size, mtime) and still exist; finished video
parts are reused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import pyarrow.fs as pafs
import ray
import ray.data

from enlighten_ray.errors import BadInputError, reason
from enlighten_ray.infer.ledger import Ledger
from enlighten_ray.infer.plan import (
    Plan,
    output_id,
    owned_by,
    plan_outputs,
    plan_segments,
    remove_partials,
    skip_recorded,
)
from enlighten_ray.infer.progress import progress_bar
from enlighten_ray.infer.rows import PARTS, BatchOptions, Summary, truncation_warning
from enlighten_ray.infer.settings import FRAME_FORMATS
from enlighten_ray.infer.stages import (
    FRAME_SCHEMA,
    ImagePredictor,
    SegmentPredictor,
    decode_images,
    join_video,
    result,
    write_images,
)
from enlighten_ray.io.images import IMAGE_EXTENSIONS
from enlighten_ray.io.storage import Location
from enlighten_ray.models.weights import load_generator

__all__ = ["BatchOptions", "Summary", "FRAME_FORMATS", "FRAME_SCHEMA", "check", "run"]

# Images per Ray Data block: the unit one decode task, one actor call and one write task handle.
IMAGES_PER_BLOCK = 16


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
    }
    return args, actor


def _map_actors(ds: ray.data.Dataset, fn: type, **kwargs: Any) -> ray.data.Dataset:
    """map_batches on the actor pool. Fault tolerance is Ray Data's default for actor pools: a dead
    actor is restarted and its in-flight batches are retried on the pool (Ray 2.60 offers no
    supported argument to bound it; the deprecated **ray_remote_args go in Ray 2.64)."""
    return ds.map_batches(fn, batch_format="pyarrow", **kwargs)


def check(opts: BatchOptions) -> None:
    """Bad settings and a missing INPUT fail here, once, before Ray starts, rather than in every actor."""
    opts.settings.validate()
    source = Location(opts.input)
    if not source.exists(source.root):
        raise BadInputError(opts.input, "no such file or folder")
    output = Location(opts.output)
    if output.is_file(output.root):
        raise BadInputError(opts.output, "is a file: OUTPUT is a folder (or bucket prefix) the outputs mirror INPUT in")
    if opts.format is not None and f".{opts.format.lower()}" not in IMAGE_EXTENSIONS:
        known = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise BadInputError("--format", f"'{opts.format}' is not an image format ({known})")
    if opts.frames_format not in FRAME_FORMATS:
        raise BadInputError("--frames-format", f"'{opts.frames_format}' is not one of {', '.join(FRAME_FORMATS)}")
    if not opts.segment_seconds > 0:
        raise BadInputError("--segment-seconds", f"must be positive, got {opts.segment_seconds}")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise BadInputError("--concurrency", f"must be at least 1, got {opts.concurrency}")


def run(opts: BatchOptions) -> Summary:
    """Enhance every image and video under `opts.input` into `opts.output` on the connected Ray
    cluster (call `ray.init` first). Bad inputs are recorded, never fatal; see `Summary`."""
    check(opts)
    source, output = Location(opts.input), Location(opts.output)
    frames = Location(opts.frames_out) if opts.frames_out else None
    if any(x.root == source.root and x.fs.type_name == source.fs.type_name for x in [output, frames] if x):
        raise BadInputError(opts.output, "is the input: outputs would replace the inputs")
    model, info = load_generator(opts.weights)
    # Outputs made with other pixel or encoder settings are not "already complete".
    ledger = Ledger(output, output_id(info.id, {**opts.settings.pixel_settings(), "encoder": asdict(opts.encoder)}))
    ctx = ray.data.DataContext.get_current()
    data_log = logging.getLogger("ray.data")
    saved = ctx.max_errored_blocks, ctx.enable_progress_bars, data_log.level
    # Without --verbose: the job's own progress lines (infer.progress), not Ray Data's bars and plans.
    ctx.enable_progress_bars = opts.verbose
    data_log.setLevel(data_log.level if opts.verbose else logging.ERROR)
    # A block whose task fails for good is dropped instead of failing the job; the driver reports
    # its rows as lost (and a re-run retries them).
    ctx.max_errored_blocks = -1
    try:
        plan = _plan(opts, source, output, frames, ledger)
        if plan.empty:
            raise source.nothing_to_do()
        summary = Summary(skipped=len(plan.skipped))
        for path, stage, error in plan.failed:
            ledger.failed(path, stage, error)
            summary.failed.append((path, stage, error))
        model_ref = ray.put(model)
        images = [{"src": t.src, "dst": t.dst} for t in plan.todo if t.kind == "image"]
        videos = [
            {"src": t.src, "dst": t.dst, "parts": output.path(f"{PARTS}/{ledger.weights_id}/{t.rel}")}
            for t in plan.todo
            if t.kind == "video"
        ]
        if images:
            _run_images(opts, images, model_ref, source, output, ledger, summary)
            ledger.upload()  # on object stores: the images' record lands before the long video phase
        if videos:
            _run_videos(opts, videos, model_ref, source, output, frames, ledger, summary)
    finally:
        ctx.max_errored_blocks, ctx.enable_progress_bars, level = saved
        data_log.setLevel(level)
        ledger.close()
    _prune_empty(output, output.path(PARTS))
    print(f"enlighten-ray: {summary.line()}", file=sys.stderr)
    return summary


def _plan(opts: BatchOptions, source: Location, output: Location, frames: Location | None, ledger: Ledger) -> Plan:
    """Plan with the manifest's skip policy, then clean up what a killed run left of this plan's outputs."""
    listings = {x: x.listing() for x in (output, frames) if x}
    existing = set().union(*listings.values())
    plan = plan_outputs(source, output, skip_recorded(ledger, existing), frames, opts.format)
    owned = owned_by(plan, output.path(PARTS))
    for loc, listing in listings.items():
        remove_partials(loc, listing, owned)
    for t in plan.todo + plan.skipped:
        ledger.versions[t.shown] = t.version  # recorded with the output when it is done
    return plan


def _prune_empty(loc: Location, folder: str) -> None:
    """Remove the empty folders joins leave under OUTPUT/_parts (on object stores: the empty
    folder markers); unfinished parts stay for the next run."""
    if not loc.exists(folder):
        return
    if not loc.is_local:
        entries = loc.fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        if all(e.type == pafs.FileType.Directory for e in entries):
            loc.fs.delete_dir(folder)
        return
    for here, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(here)  # only succeeds on empty folders


def _record(ledger: Ledger, summary: Summary, row: dict, kind: str, shown_dst: str, plan: dict | None = None) -> None:
    """Record a result row; `plan` (a video's planned segment row) says whether its source was cut short."""
    if row["error"]:
        ledger.failed(row["src"], row["stage"], row["error"])
        summary.failed.append((row["src"], row["stage"], row["error"]))
        return
    header = plan["header_frames"] if plan and plan["truncated"] else None
    if header is not None:
        print(truncation_warning(row["src"], row["frames"], header), file=sys.stderr)
        summary.truncated.append(row["src"])
    ledger.done(kind, row["src"], shown_dst, row["frames"], header)
    summary.done += 1


def _lost(ledger: Ledger, summary: Summary, sources: Iterable[str]) -> None:
    for src in sources:
        error = f"{src}: lost: its Ray task failed (see the Ray logs); re-run to retry"
        ledger.failed(src, "lost", error)
        summary.failed.append((src, "lost", error))


def _run_images(
    opts: BatchOptions,
    rows: list[dict],
    model_ref: ray.ObjectRef,
    source: Location,
    output: Location,
    ledger: Ledger,
    summary: Summary,
) -> None:
    actor_args, actor = _actor_args(opts)
    blocks = max(1, math.ceil(len(rows) / IMAGES_PER_BLOCK))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(decode_images, fn_kwargs={"source": source}, batch_format="pyarrow", batch_size=None)
    ds = _map_actors(
        ds,
        ImagePredictor,
        fn_constructor_kwargs={"model": model_ref, **actor, "settings": opts.settings},
        batch_size=IMAGES_PER_BLOCK,
        **actor_args,
    )
    ds = ds.map_batches(
        write_images, fn_kwargs={"output": output, "source": source}, batch_format="pyarrow", batch_size=None
    )
    pending = {source.show(r["src"]) for r in rows}
    with progress_bar(len(rows), "image", "images", opts.progress) as bar:
        for row in ds.iter_rows():
            pending.discard(row["src"])
            _record(ledger, summary, row, "image", output.show(row["dst"]))
            bar.update()
    _lost(ledger, summary, sorted(pending))


def _run_videos(
    opts: BatchOptions,
    videos: list[dict],
    model_ref: ray.ObjectRef,
    source: Location,
    output: Location,
    frames: Location | None,
    ledger: Ledger,
    summary: Summary,
) -> None:
    """Plan segments (CPU tasks), enhance them (actor pool, one segment per block so they spread over
    the actors), and join each video once all its parts are in (one Ray task per video)."""
    target = frames or output
    if frames is not None:
        remove_unfinished_frames(frames, videos)
    segments = _segments(opts, videos, source, target, frames is not None, ledger, summary)
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
            "frames_format": opts.frames_format if frames is not None else None,
            "settings": opts.settings,
            "encoder": opts.encoder,
        },
        batch_size=1,
        **actor_args,
    )
    joiner = _Joiner(source, output, ledger, summary, {source.show(v["src"]): v for v in videos}, segments)
    with progress_bar(len(todo), "segment", "video segments", opts.progress) as bar:
        for row in ds.iter_rows():
            summary.reused_parts += row["reused"]
            joiner.add(row, frames)
            bar.update()
    joiner.finish_all()


def remove_unfinished_frames(frames: Location, videos: list[dict]) -> None:
    """The frames-mode cleanup step: a video still to do may have a frames folder from a killed
    run (or from an older version of the source, with other frame counts); it is redone whole."""
    for video in videos:
        if frames.exists(video["dst"]):
            frames.remove_tree(video["dst"])
            print(f"enlighten-ray: removed the unfinished frames of {frames.show(video['dst'])}", file=sys.stderr)


def _segments(
    opts: BatchOptions,
    videos: list[dict],
    source: Location,
    target: Location,
    frames_mode: bool,
    ledger: Ledger,
    summary: Summary,
) -> dict[str, list[dict]]:
    """shown source -> its segments; videos that cannot be planned are recorded as failed."""
    plans = ray.data.from_items(videos, override_num_blocks=len(videos)).map_batches(
        plan_segments,
        fn_kwargs={"source": source, "output": target, "frames_mode": frames_mode, "seconds": opts.segment_seconds},
        batch_format="pyarrow",
        batch_size=None,
    )
    segments: dict[str, list[dict]] = {}
    for row in plans.iter_rows():
        src = source.show(row["src"])
        if row["error"]:
            _record(ledger, summary, result(src, row["dst"], error=row["error"], stage=row["stage"]), "video", "")
        segments.setdefault(src, []).append(row)
    _lost(ledger, summary, sorted({source.show(v["src"]) for v in videos} - set(segments)))
    return segments


class _Joiner:
    """Collects segment results per video; when a video's last part is in, records it (frames) or
    starts its join task, and records joins as they finish."""

    def __init__(
        self,
        source: Location,
        output: Location,
        ledger: Ledger,
        summary: Summary,
        videos: dict[str, dict],
        segments: dict[str, list[dict]],
    ) -> None:
        self.source, self.output, self.ledger, self.summary = source, output, ledger, summary
        self.videos, self.segments = videos, segments
        self.expected = {src: rows[0]["count"] for src, rows in segments.items() if not rows[0]["error"]}
        self.got: dict[str, list[dict]] = {}
        self.joins: dict[ray.ObjectRef, tuple[str, str, int]] = {}
        self.join = ray.remote(join_video).options(num_cpus=1, max_retries=2)

    def add(self, row: dict, frames: Location | None) -> None:
        parts = self.got.setdefault(row["src"], [])
        parts.append(row)
        if len(parts) == self.expected[row["src"]]:
            failed = [p for p in parts if p["error"]]
            total = sum(p["frames"] for p in parts)
            if failed:
                _record(self.ledger, self.summary, failed[0], "video", "")
            elif frames is not None:
                done = result(row["src"], row["dst"], total)
                _record(self.ledger, self.summary, done, "video", frames.show(row["dst"]), self.segments[row["src"]][0])
            else:
                video = self.videos[row["src"]]
                ordered = [s["part"] for s in sorted(self.segments[row["src"]], key=lambda s: s["index"])]
                ref = self.join.remote(self.source, self.output, video["src"], video["dst"], ordered, video["parts"])
                self.joins[ref] = (row["src"], video["dst"], total)
        if self.joins:  # record joins that have finished, without waiting for the others
            ready, _ = ray.wait(list(self.joins), num_returns=len(self.joins), timeout=0)
            for ref in ready:
                self._finish(ref)

    def _finish(self, ref: ray.ObjectRef) -> None:
        src, dst, count = self.joins.pop(ref)
        try:
            ray.get(ref)
        except Exception as exc:  # noqa: BLE001
            cause = getattr(exc, "cause", None) or exc
            _record(
                self.ledger, self.summary, result(src, dst, error=f"{src}: {reason(cause)}", stage="join"), "video", ""
            )
            return
        done = result(src, dst, count)
        _record(self.ledger, self.summary, done, "video", self.output.show(dst), self.segments[src][0])

    def finish_all(self) -> None:
        for ref in list(self.joins):
            self._finish(ref)
        missing = sorted(s for s, n in self.expected.items() if len(self.got.get(s, [])) < n)
        _lost(self.ledger, self.summary, missing)
