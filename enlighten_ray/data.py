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

import contextlib
import functools
import io
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
import ray.data
import torch
from PIL import Image
from ray.data.expressions import col
from torchvision.transforms import v2

from .atomic import is_partial
from .config import Config, DataConfig
from .errors import BadInputError
from .images import IMAGE_EXTENSIONS, decode_image, media_kind
from .transforms import augment_low, augment_normal
from .video import VIDEO_EXTENSIONS, VideoReader

__all__ = [
    "DomainScan",
    "list_media",
    "plan_epoch",
    "sample_frame",
    "scan_domain",
    "training_datasets",
    "validation_images",
]

MAX_LISTED_ERRORS = 10  # bad files printed by name; the rest are counted


# ----------------------------------------------------------------------------------------- listing


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem and path for a local path or URI; local paths are made absolute."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (OSError, ValueError) as exc:
            raise BadInputError(uri, f"cannot open this location ({exc})") from exc
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def media_files(fs: pafs.FileSystem, root: str, exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Sorted [(path, "image" | "video")] under the folder/prefix `root`, or the one file it names.
    Hidden files and folders, our own partial outputs and anything under an `exclude` root are skipped."""
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        infos = [info]
    elif info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    else:
        raise BadInputError(root, "no such file or directory")
    prefixes = tuple(x.rstrip("/") + "/" for x in exclude)
    return sorted(
        (i.path, media_kind(i.path))
        for i in infos
        if i.type == pafs.FileType.File
        and media_kind(i.path)
        and not is_partial(i.path)
        and not i.path.startswith(prefixes)
        and not any(part.startswith(".") for part in i.path[len(root) :].split("/"))  # hidden files/folders
    )


def list_media(uri: str) -> tuple[pafs.FileSystem, list[tuple[str, str]]]:
    """(filesystem, `media_files`) of a local path or URI; no media at all is a `BadInputError`."""
    fs, root = _filesystem(uri)
    try:
        files = media_files(fs, root)
    except BadInputError as exc:
        raise BadInputError(uri, exc.reason) from exc
    except OSError as exc:
        raise BadInputError(uri, f"cannot list ({exc})") from exc
    if not files:
        exts = " ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
        raise BadInputError(uri, f"no images or videos found (looked for {exts})")
    return fs, files


# ---------------------------------------------------------------------------------------- decoding


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _encode_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # lossless; level 1 is fast
    return buf.getvalue()


def sample_frame(index: int, rate: float, every_n: int, fps: float) -> bool:
    """Keep frame `index` (0-based, presentation order)? Every N-th frame when `every_n` > 0, else
    the first frame of each 1/fps-second interval of a `rate` frames/s video."""
    if every_n > 0:
        return index % every_n == 0
    if index == 0 or fps >= rate:
        return True
    return math.floor(index * fps / rate) != math.floor((index - 1) * fps / rate)


@contextlib.contextmanager
def _local_file(fs: pafs.FileSystem, path: str) -> Iterator[str]:
    """A local path for PyAV: the file itself, or a temporary copy of a remote object."""
    if isinstance(fs, pafs.LocalFileSystem):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="enlighten-ray-") as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


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
    root = _filesystem(uri)[1].rstrip("/") + "/"
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


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, BadInputError) else (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _scan_image(fs: pafs.FileSystem, path: str, max_mean: float) -> list[dict[str, Any]]:
    data = _read_bytes(fs, path)
    rgb, _ = decode_image(data, path)
    if max_mean > 0 and rgb.mean() >= max_mean:
        return [_row(path, "bright")]
    return [_row(path, "ok", data=data)]


def _scan_video(fs: pafs.FileSystem, path: str, cfg: DataConfig, max_mean: float) -> list[dict[str, Any]]:
    """Sampled frames as PNG rows. A decode error part-way keeps the frames before it and adds one
    `bad` row, so a truncated recording still contributes what it holds."""
    rows: list[dict[str, Any]] = []
    with _local_file(fs, path) as local, VideoReader(local) as reader:
        rate = float(reader.info.rate or 25)
        try:
            for index, frame in enumerate(reader.frames()):
                if not sample_frame(index, rate, cfg.video_every_n, cfg.video_fps):
                    continue
                if max_mean > 0 and frame.rgb.mean() >= max_mean:
                    rows.append(_row(path, "bright", pts=frame.pts))
                else:
                    rows.append(_row(path, "ok", pts=frame.pts, data=_encode_png(frame.rgb)))
        except Exception as exc:  # noqa: BLE001 - any decoder error: keep what was read
            if not rows:
                raise
            rows.append(_row(path, "bad", reason=f"decoding stopped after {len(rows)} sampled frames ({_reason(exc)})"))
    return rows


def _scan_file(row: dict[str, Any], fs: pafs.FileSystem, cfg: DataConfig, max_mean: float) -> list[dict[str, Any]]:
    """Ray Data flat_map UDF. Catches every per-file error: Ray Data fails the whole dataset on one
    failed block by default, and one bad file must never stop a run."""
    path = row["path"]
    try:
        if row["kind"] == "image":
            return _scan_image(fs, path, max_mean)
        return _scan_video(fs, path, cfg, max_mean)
    except Exception as exc:  # noqa: BLE001
        return [_row(path, "bad", reason=_reason(exc))]


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
            for path, reason in self.bad[:MAX_LISTED_ERRORS]:
                text += f"\n  skipped {path}: {reason}"
            if len(self.bad) > MAX_LISTED_ERRORS:
                text += f"\n  ... and {len(self.bad) - MAX_LISTED_ERRORS} more"
        return text


def scan_domain(uri: str, cfg: DataConfig, role: str) -> DomainScan:
    """Decode, sample and filter one domain in Ray Data tasks (needs a running Ray). The darkness
    threshold applies to the low domain only. Raises `BadInputError` when nothing usable is left."""
    if not uri:
        raise BadInputError(f"data.{role}", "not set: give a folder or URI of images or videos")
    fs, files = list_media(uri)
    if role == "low" and cfg.holdout:
        files = _without_holdout(files, uri, cfg.holdout)
    max_mean = cfg.max_mean if role == "low" else 0.0
    scan_fn = functools.partial(_scan_file, fs=fs, cfg=cfg, max_mean=max_mean)
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


def _augment_batch(batch: dict[str, np.ndarray], role: str, cfg: DataConfig) -> dict[str, np.ndarray]:
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
            print(f"enlighten-ray: skipping {path}: {_reason(exc)}", file=sys.stderr)
            continue
        for k in keys:
            out[k].append(crops[k])
    size = cfg.crop_size
    return {k: torch.stack(v).numpy() if v else np.zeros((0, 3, size, size), np.float32) for k, v in out.items()}


def _epoch_dataset(scan: DomainScan, rows: int, cfg: DataConfig) -> ray.data.Dataset:
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
