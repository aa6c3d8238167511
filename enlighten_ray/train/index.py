"""The training data's index: one small row per usable image or sampled video frame (path, kind,
frame pts, file size, mean intensity where `data.max_mean` asks for it), never the pixels.

Built once per domain by Ray Data tasks and kept as Parquet in the run directory, so a resumed or
restarted run reuses it:

1. per file: images are listed from their header (no decode unless a darkness filter needs the
   mean); videos are demuxed (packets only, no decode), their frames sampled by index, and the
   sampled frames grouped into keyframe ranges;
2. per range (spread over tasks, so one long video is measured by many): decode only when the
   mean is needed, and emit the index rows.

Epochs then shuffle the index and decode from it (`train.data`).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray
import ray.data
from PIL import Image, UnidentifiedImageError

from enlighten_ray.config import DataSettings
from enlighten_ray.errors import BadInputError, first_line, reason
from enlighten_ray.io.images import IMAGE_EXTENSIONS, decode_image
from enlighten_ray.io.storage import Location, MediaFile, opened
from enlighten_ray.io.video import VIDEO_EXTENSIONS, VideoReader, scan_packets

__all__ = ["DomainIndex", "domain_files", "index_domain", "read_holdout", "sample_frame"]

MAX_LISTED_ERRORS = 10  # bad files printed by name; the rest are counted
RANGE_FRAMES = 32  # sampled frames per keyframe range: the unit of work when a video is decoded
ROWS_PER_FILE = 100_000  # index rows per Parquet file: a resumed run reads a few files, not one per scan block
DONE = "_SUCCESS"  # written after the index: a folder without it is an interrupted scan


def domain_files(uri: str) -> tuple[Location, list[MediaFile]]:
    """(location, its media) of a training domain; no media at all is a `BadInputError`."""
    loc = Location(uri)
    files = loc.media()
    if not files:
        exts = " ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
        raise BadInputError(uri, f"no images or videos found (looked for {exts})")
    return loc, files


def sample_frame(index: int, rate: float, every_n: int, fps: float) -> bool:
    """Keep frame `index` (0-based, presentation order)? Every N-th frame when `every_n` > 0, else
    the first frame of each 1/fps-second interval of a `rate` frames/s video."""
    if every_n > 0:
        return index % every_n == 0
    if index == 0 or fps >= rate:
        return True
    return math.floor(index * fps / rate) != math.floor((index - 1) * fps / rate)


def read_holdout(path: str) -> list[str]:
    """The file names listed in `path`, one per line (# comments and blank lines ignored)."""
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as exc:
        raise BadInputError(path, f"cannot read the hold-out list ({exc.strerror})") from exc
    return [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")]


def _without_holdout(files: list[MediaFile], uri: str, holdout: str) -> list[MediaFile]:
    """Leave out the low files named in the hold-out list (paths relative to data.low). A name that
    matches nothing is an error: a silently ignored hold-out would leak into training."""
    names = set(read_holdout(holdout))
    root = Location(uri).root.rstrip("/") + "/"
    kept = [f for f in files if f.path.removeprefix(root) not in names]
    if len(files) - len(kept) != len(names):
        found = {f.path.removeprefix(root) for f in files}
        raise BadInputError(holdout, f"names not under {uri}: {sorted(names - found)[:3]}")
    return kept


# ------------------------------------------------------------------------------- stage 1: files


def _range(row: dict[str, Any], status: str, *, pts: list[int], start: int = -1, end: int = -1, why: str = ""):
    """A stage-1 row: the sampled frames `pts` of one keyframe range [start, end) (end -1: to the
    end of the video); images have one `pts` of -1."""
    return {**row, "status": status, "pts": pts, "start": start, "end": end, "reason": why}


def _list_image(loc: Location, row: dict[str, Any]) -> dict[str, Any]:
    """Is it an image at all? From its header, parsed without decoding the pixels. (PIL is given
    the bytes: on a pyarrow file object it failed with UnsupportedOperation in pooled workers.)"""
    try:
        with loc.fs.open_input_stream(row["path"]) as f, Image.open(io.BytesIO(f.read())):
            pass
    except UnidentifiedImageError as exc:
        raise BadInputError(loc.show(row["path"]), "not a recognised image file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(loc.show(row["path"]), f"cannot read the image header ({first_line(exc)})") from exc
    return _range(row, "ok", pts=[-1])


def _list_video(loc: Location, row: dict[str, Any], cfg: DataSettings) -> list[dict[str, Any]]:
    """Sampled frames grouped into keyframe ranges of about RANGE_FRAMES, from the packets."""
    path = row["path"]
    with opened(loc, path) as file:
        packets = scan_packets(file, loc.show(path))
    if not packets.pts:
        raise BadInputError(loc.show(path), "no video frames")
    rate = float(packets.rate or 25)
    sampled = [p for i, p in enumerate(packets.pts) if sample_frame(i, rate, cfg.video_every_n, cfg.video_fps)]
    keys = sorted(set(packets.keys) | {packets.pts[0]})
    ranges: list[dict[str, Any]] = []
    for pts in sampled:
        start = keys[bisect.bisect_right(keys, pts) - 1]  # the keyframe at or before pts
        # A range is cut only at a keyframe after its last frame: [start, end) holds all of its frames.
        if ranges and (len(ranges[-1]["pts"]) < RANGE_FRAMES or start <= ranges[-1]["pts"][-1]):
            ranges[-1]["pts"].append(pts)
            continue
        if ranges:
            ranges[-1]["end"] = start
        ranges.append(_range(row, "ok", pts=[pts], start=start))
    return ranges


def _list_file(row: dict[str, Any], loc: Location, cfg: DataSettings) -> list[dict[str, Any]]:
    """flat_map UDF: one file -> its ranges. Every per-file error becomes a `bad` row: Ray Data
    fails the dataset on one failed block, and one bad file must never stop a run."""
    try:
        if row["size"] == 0:
            raise BadInputError(loc.show(row["path"]), "empty file (0 bytes)")
        return [_list_image(loc, row)] if row["kind"] == "image" else _list_video(loc, row, cfg)
    except Exception as exc:  # noqa: BLE001
        return [_range(row, "bad", pts=[], why=reason(exc))]


# ------------------------------------------------------------------------------ stage 2: ranges


def _frame_means(loc: Location, row: dict[str, Any]) -> dict[int, float]:
    """Mean intensity (0-255) of each listed frame of one range, decoding only that range."""
    wanted = set(row["pts"])
    means: dict[int, float] = {}
    with opened(loc, row["path"]) as file, VideoReader(file, loc.show(row["path"])) as reader:
        end = None if row["end"] < 0 else row["end"]
        try:
            for frame in reader.frames(row["start"], end):
                if frame.pts in wanted:
                    means[frame.pts] = float(frame.rgb.mean())
        except Exception:  # a decoder error part-way: keep the frames before it
            if not means:
                raise
    return means


def _index_range(row: dict[str, Any], loc: Location, max_mean: float) -> list[dict[str, Any]]:
    """flat_map UDF: one range -> index rows (one per image or sampled frame)."""
    path, kind = row["path"], row["kind"]

    def out(pts: int, status: str, mean: float = -1.0, why: str = "") -> dict[str, Any]:
        return {
            "path": path,
            "kind": kind,
            "pts": pts,
            "size": row["size"],
            "mean": mean,
            "status": status,
            "reason": why,
        }

    if row["status"] != "ok":
        return [out(-1, row["status"], why=row["reason"])]
    if max_mean <= 0:
        return [out(p, "ok") for p in row["pts"]]
    try:
        if kind == "image":
            with loc.fs.open_input_stream(path) as f:
                means = {-1: float(decode_image(f.read(), loc.show(path))[0].mean())}
        else:
            means = _frame_means(loc, row)
    except Exception as exc:  # noqa: BLE001
        return [out(-1, "bad", why=reason(exc))]
    rows = [out(p, "ok" if means[p] < max_mean else "bright", means[p]) for p in row["pts"] if p in means]
    # A frame's pts nudged by the reader (non-increasing timestamps) is not found: counted as short.
    if len(rows) < len(row["pts"]):  # a decode that stopped short: keep what was read, say so
        rows.append(out(-1, "bad", why=f"decoding stopped after {len(rows)} of {len(row['pts'])} sampled frames"))
    return rows


# ---------------------------------------------------------------------------------------- index


@dataclass
class DomainIndex:
    """One domain's index: `folder` (Parquet, in the run directory) holds every row; `rows` the
    usable ones' (path, kind, pts), which epochs order (about 100 bytes each); `first` the first
    usable rows (sorted by path, then frame time) for the validation grid."""

    uri: str
    role: str
    folder: str
    count: int  # usable images + sampled frames
    files: int
    images: int
    frames: int
    bright: int
    rows: pa.Table = field(repr=False)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    first: list[dict[str, Any]] = field(default_factory=list)

    @property
    def location(self) -> Location:
        return Location(self.uri)

    def summary(self, max_mean: float = 0.0) -> str:
        text = f"{self.role}: {self.count} usable ({self.images} images, {self.frames} video frames)"
        text += f" from {self.files} files"
        if self.bright:
            text += f"; {self.bright} not darker than data.max_mean={max_mean:g} left out"
        if self.bad:
            text += f"; {len(self.bad)} unreadable, skipped"
            for path, why in self.bad[:MAX_LISTED_ERRORS]:
                text += f"\n  skipped {path}: {why}"
            if len(self.bad) > MAX_LISTED_ERRORS:
                text += f"\n  ... and {len(self.bad) - MAX_LISTED_ERRORS} more"
        return text


def _index_key(uri: str, role: str, cfg: DataSettings, max_mean: float, files: list[MediaFile]) -> str:
    """Names an index by what decides its rows: the files (and their versions) and the sampling."""
    spec = [uri, role, cfg.video_every_n, cfg.video_fps, max_mean, [tuple(f) for f in files]]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def _build_index(loc: Location, files: list[MediaFile], cfg: DataSettings, max_mean: float, folder: str) -> None:
    """Scan `files` into Parquet under `folder` (on the run directory's filesystem), then mark it done."""
    store = Location(folder)
    items = [{"path": f.path, "kind": f.kind, "size": int(f.version.split(":")[0])} for f in files]
    ranges = ray.data.from_items(items, override_num_blocks=min(len(items), 200))
    ranges = ranges.flat_map(functools.partial(_list_file, loc=loc, cfg=cfg))
    if max_mean > 0:  # decoding ahead: spread one video's ranges over many tasks
        ranges = ranges.repartition(target_num_rows_per_block=1)
    rows = ranges.flat_map(functools.partial(_index_range, loc=loc, max_mean=max_mean))
    store.remove_tree(store.root)  # an interrupted earlier scan
    rows.write_parquet(folder, min_rows_per_file=ROWS_PER_FILE)
    with store.fs.open_output_stream(f"{store.root}/{DONE}") as f:
        f.write(b"")


def _read_index(loc: Location, store: Location, folder: str, role: str, files: int, first: int) -> DomainIndex:
    """The summary of a written index (a few columns read on the driver)."""
    table = pads.dataset(folder, filesystem=store.fs, format="parquet").to_table(
        columns=["path", "kind", "pts", "status", "reason"]
    )
    status = table["status"]
    ok = table.filter(pc.equal(status, "ok"))
    bad = table.filter(pc.equal(status, "bad"))
    head = ok.sort_by([("path", "ascending"), ("pts", "ascending")]).slice(0, first)
    return DomainIndex(
        uri=loc.uri,
        role=role,
        folder=folder,
        count=ok.num_rows,
        files=files,
        images=pc.sum(pc.equal(ok["kind"], "image")).as_py() or 0,
        frames=pc.sum(pc.equal(ok["kind"], "video")).as_py() or 0,
        bright=pc.sum(pc.equal(status, "bright")).as_py() or 0,
        rows=ok.select(["path", "kind", "pts"]),
        bad=sorted((loc.show(p), r) for p, r in zip(bad["path"].to_pylist(), bad["reason"].to_pylist())),
        first=head.to_pylist(),
    )


def index_domain(uri: str, cfg: DataSettings, role: str, run_dir: str, first: int = 0) -> DomainIndex:
    """The index of one domain under `run_dir`/index (local path or URI), reused when the files and
    the sampling settings are unchanged, else built in Ray Data tasks (needs a running Ray). The
    darkness threshold applies to the low domain only. Raises `BadInputError` when nothing usable
    is left."""
    if not uri:
        raise BadInputError(f"data.{role}", "not set: give a folder or URI of images or videos")
    loc, files = domain_files(uri)
    if role == "low" and cfg.holdout:
        files = _without_holdout(files, uri, cfg.holdout)
    max_mean = cfg.max_mean if role == "low" else 0.0
    store = Location(run_dir)
    folder = store.path(f"index/{role}-{_index_key(uri, role, cfg, max_mean, files)}")
    if not store.exists(f"{folder}/{DONE}"):
        _build_index(loc, files, cfg, max_mean, store.show(folder))
    index = _read_index(loc, store, folder, role, len(files), first)
    if not index.count:
        raise BadInputError(uri, f"no usable {role} images or frames left: {index.summary(max_mean)}")
    return index
