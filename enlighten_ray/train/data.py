"""Training data on Ray Data: the `low` and `normal` domains, each from a folder or URI of images or
videos (local paths, s3://, gs://, anything `pyarrow.fs` opens).

Two stages, both Ray Data CPU tasks:

1. `scan_domain` (once, before training): decode every file, sample video frames (every N-th or N
   per second), drop frames/images not darker than `data.max_mean` (low domain only), count and
   report unreadable files. The usable items' encoded bytes (the image file's own bytes, PNG for a
   sampled video frame) stay in Ray's object store, so epochs never re-read or re-decode videos.
   An empty domain is a `BadInputError` here, before any training worker starts.
2. `training_datasets`: per epoch, reshuffle, cycle the shorter domain to the longer one's length,
   decode and augment (random crop, flips, darkening) into fixed-size float crops.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
import torch
from ray.data.expressions import col
from torchvision.transforms import v2

from enlighten_ray.config import Config, DataSettings
from enlighten_ray.errors import BadInputError, reason
from enlighten_ray.io.images import IMAGE_EXTENSIONS, decode_image, encode_png
from enlighten_ray.io.storage import Location, fetched
from enlighten_ray.io.video import VIDEO_EXTENSIONS, VideoReader
from enlighten_ray.train.transforms import augment_low, augment_normal

__all__ = [
    "DomainScan",
    "domain_files",
    "plan_epoch",
    "sample_frame",
    "scan_domain",
    "training_datasets",
    "validation_images",
]

MAX_LISTED_ERRORS = 10  # bad files printed by name; the rest are counted


# ----------------------------------------------------------------------------------------- listing


def domain_files(uri: str) -> tuple[Location, list[tuple[str, str]]]:
    """(location, its media) of a training domain; no media at all is a `BadInputError`."""
    loc = Location(uri)
    files = [(f.path, f.kind) for f in loc.media()]
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


def _without_holdout(files: list[tuple[str, str]], uri: str, holdout: str) -> list[tuple[str, str]]:
    """Leave out the low files named in the hold-out list (paths relative to data.low). A name that
    matches nothing is an error: a silently ignored hold-out would leak into training."""
    names = set(read_holdout(holdout))
    root = Location(uri).root.rstrip("/") + "/"
    kept = [(p, k) for p, k in files if p.removeprefix(root) not in names]
    if len(files) - len(kept) != len(names):
        found = {p.removeprefix(root) for p, _ in files}
        raise BadInputError(holdout, f"names not under {uri}: {sorted(names - found)[:3]}")
    return kept


# -------------------------------------------------------------------------------------------- scan


def _row(path: str, status: str, *, pts: int = -1, reason: str = "", data: bytes = b"") -> dict[str, Any]:
    """One scan row. status: ok (usable, `data` holds the encoded image), bad (unreadable file,
    `reason` says why), bright (not darker than data.max_mean)."""
    return {"path": path, "pts": pts, "status": status, "reason": reason, "data": data}


def _scan_image(loc: Location, path: str, max_mean: float) -> list[dict[str, Any]]:
    with loc.fs.open_input_stream(path) as f:
        data = f.read()
    rgb, _ = decode_image(data, path)
    if max_mean > 0 and rgb.mean() >= max_mean:
        return [_row(path, "bright")]
    return [_row(path, "ok", data=data)]


def _scan_video(loc: Location, path: str, cfg: DataSettings, max_mean: float) -> list[dict[str, Any]]:
    """Sampled frames as PNG rows. A decode error part-way keeps the frames before it and adds one
    `bad` row, so a truncated recording still contributes what it holds."""
    rows: list[dict[str, Any]] = []
    with fetched(loc, path) as local, VideoReader(local) as reader:
        rate = float(reader.info.rate or 25)
        try:
            for index, frame in enumerate(reader.frames()):
                if not sample_frame(index, rate, cfg.video_every_n, cfg.video_fps):
                    continue
                if max_mean > 0 and frame.rgb.mean() >= max_mean:
                    rows.append(_row(path, "bright", pts=frame.pts))
                else:
                    rows.append(_row(path, "ok", pts=frame.pts, data=encode_png(frame.rgb)))
        except Exception as exc:  # noqa: BLE001 - any decoder error: keep what was read
            if not rows:
                raise
            rows.append(_row(path, "bad", reason=f"decoding stopped after {len(rows)} sampled frames ({reason(exc)})"))
    return rows


def _scan_file(row: dict[str, Any], loc: Location, cfg: DataSettings, max_mean: float) -> list[dict[str, Any]]:
    """Ray Data flat_map UDF. Catches every per-file error: Ray Data fails the whole dataset on one
    failed block by default, and one bad file must never stop a run."""
    path = row["path"]
    try:
        if row["kind"] == "image":
            return _scan_image(loc, path, max_mean)
        return _scan_video(loc, path, cfg, max_mean)
    except Exception as exc:  # noqa: BLE001
        return [_row(path, "bad", reason=reason(exc))]


@dataclass
class DomainScan:
    """What one domain holds after the scan; `dataset` has the usable rows (path, pts, data)."""

    uri: str
    role: str
    dataset: ray.data.Dataset
    count: int  # usable images + sampled frames
    files: int
    images: int
    frames: int
    bright: int
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    keys: list[tuple[str, int]] = field(default_factory=list)  # (path, pts) of usable items, sorted

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


def scan_domain(uri: str, cfg: DataSettings, role: str) -> DomainScan:
    """Decode, sample and filter one domain in Ray Data tasks (needs a running Ray). The darkness
    threshold applies to the low domain only. Raises `BadInputError` when nothing usable is left."""
    if not uri:
        raise BadInputError(f"data.{role}", "not set: give a folder or URI of images or videos")
    loc, files = domain_files(uri)
    if role == "low" and cfg.holdout:
        files = _without_holdout(files, uri, cfg.holdout)
    max_mean = cfg.max_mean if role == "low" else 0.0
    scan_fn = functools.partial(_scan_file, loc=loc, cfg=cfg, max_mean=max_mean)
    items = [{"path": p, "kind": k} for p, k in files]
    scanned = ray.data.from_items(items, override_num_blocks=min(len(items), 200)).flat_map(scan_fn).materialize()
    meta = scanned.select_columns(["path", "pts", "status", "reason"]).take_all()
    ok = [m for m in meta if m["status"] == "ok"]
    scan = DomainScan(
        uri=uri,
        role=role,
        dataset=scanned.filter(expr=col("status") == "ok"),
        count=len(ok),
        files=len(files),
        images=sum(m["pts"] < 0 for m in ok),
        frames=sum(m["pts"] >= 0 for m in ok),
        bright=sum(m["status"] == "bright" for m in meta),
        bad=sorted((m["path"], m["reason"]) for m in meta if m["status"] == "bad"),
        keys=sorted((m["path"], m["pts"]) for m in ok),
    )
    if not scan.count:
        raise BadInputError(uri, f"no usable {role} images or frames left: {scan.summary(max_mean)}")
    return scan


# ------------------------------------------------------------------------------------------ epochs


def plan_epoch(n_low: int, n_normal: int, cfg: Config) -> tuple[int, int]:
    """(steps, rows) per epoch: a pass over the longer domain in global batches, rounded up,
    capped by train.max_steps_per_epoch; each domain yields `rows` = steps * batch_size items."""
    batch = cfg.train.batch_size
    steps = max(1, math.ceil(max(n_low, n_normal) / batch))  # as the release's DataLoader: no drop_last
    if cfg.train.max_steps_per_epoch > 0:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    return steps, steps * batch


def _augment_batch(batch: dict[str, np.ndarray], role: str, cfg: DataSettings) -> dict[str, np.ndarray]:
    """Ray Data map_batches UDF: encoded images -> augmented (B, 3, S, S) float32 crops in [-1, 1]
    (`low` + `low_input` for the low domain, `normal` for the other). Items that fail to decode
    are reported and dropped instead of failing the block."""
    rng = np.random.default_rng()  # fresh entropy per batch: pooled Ray workers share torch's default seed
    torch.manual_seed(int(rng.integers(2**62)))  # torchvision's RandomCrop/flips draw from torch
    keys = ("low", "low_input") if role == "low" else ("normal",)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for path, data in zip(batch["path"], batch["data"]):
        try:
            image, _ = decode_image(data, path)
            crops = augment_low(image, cfg, rng) if role == "low" else {"normal": augment_normal(image, cfg)}
        except Exception as exc:  # noqa: BLE001
            print(f"enlighten-ray: skipping {path}: {reason(exc)}", file=sys.stderr)
            continue
        for k in keys:
            out[k].append(crops[k])
    size = cfg.crop_size
    return {k: torch.stack(v).numpy() if v else np.zeros((0, 3, size, size), np.float32) for k, v in out.items()}


def _epoch_dataset(scan: DomainScan, rows: int, cfg: DataSettings) -> ray.data.Dataset:
    """Each execution (= each epoch) visits the blocks (a few items each) in a new order; the
    trainer's local shuffle buffer mixes items across blocks. A global `random_shuffle` of the
    encoded images held a core for minutes per epoch on a 2-core machine. The shorter domain is
    repeated to reach `rows`."""
    copies = math.ceil(rows / scan.count)
    ds = scan.dataset.union(*[scan.dataset] * (copies - 1)) if copies > 1 else scan.dataset
    augment = functools.partial(_augment_batch, role=scan.role, cfg=cfg)
    return ds.randomize_block_order().limit(rows).map_batches(augment, batch_size=8, batch_format="numpy")


def training_datasets(low: DomainScan, normal: DomainScan, cfg: Config) -> dict[str, ray.data.Dataset]:
    """The `datasets=` for TorchTrainer: {"low": ..., "normal": ...}, equally long per epoch."""
    _, rows = plan_epoch(low.count, normal.count, cfg)
    return {"low": _epoch_dataset(low, rows, cfg.data), "normal": _epoch_dataset(normal, rows, cfg.data)}


def validation_images(scan: DomainScan, count: int, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8: the first `count` usable items (sorted by path, then frame time), short
    side resized to S and centre-cropped, so every checkpoint's grid shows the same scenes."""
    keys = set(scan.keys[:count])
    rows = scan.dataset.filter(lambda r: (r["path"], r["pts"]) in keys).take_all()
    rows.sort(key=lambda r: (r["path"], r["pts"]))
    crops = []
    for row in rows:
        image = torch.from_numpy(decode_image(row["data"], row["path"])[0].copy()).permute(2, 0, 1)  # (3, H, W)
        image = v2.functional.center_crop(v2.functional.resize(image, size, antialias=True), size)
        crops.append(image.permute(1, 2, 0).numpy())
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
