"""Training batches on Ray Data, from the domains' indexes (`train.index`): per epoch, a fresh
order of the index rows (cheap: a few numbers per item), then Ray Data CPU tasks read and decode
each item (image bytes, or a video frame by seeking to the keyframe before its pts) and augment it
(random crop, flips, darkening) into fixed-size float crops. Object-store use follows the rows in
flight, not the size of the data set.

Epochs are exact: the longer domain is visited once per epoch in a new order; the shorter one runs
through whole reshuffled permutations to the same length (no item twice before every item once).
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
import ray
import ray.data
import torch
from torchvision.transforms import v2

from enlighten_ray import classical
from enlighten_ray.config import Config, DataSettings
from enlighten_ray.errors import reason
from enlighten_ray.io.images import decode_image
from enlighten_ray.io.storage import Location, opened
from enlighten_ray.io.video import VideoReader
from enlighten_ray.models.prior import prior_function
from enlighten_ray.train.index import DomainIndex
from enlighten_ray.train.transforms import augment_low, augment_normal

__all__ = ["epoch_order", "load_rgb", "plan_epoch", "training_datasets", "validation_images"]

ROWS_PER_PARTITION = 100_000  # index rows per sorted block of an epoch's order (~100 bytes each)


# ------------------------------------------------------------------------------------------ epochs


def plan_epoch(n_low: int, n_normal: int, cfg: Config) -> tuple[int, int]:
    """(steps, rows) per epoch: a pass over the longer domain in global batches, rounded up,
    capped by train.max_steps_per_epoch; each domain yields `rows` = steps * batch_size items."""
    batch = cfg.train.batch_size
    steps = max(1, math.ceil(max(n_low, n_normal) / batch))  # as the release's DataLoader: no drop_last
    if cfg.train.max_steps_per_epoch > 0:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    return steps, steps * batch


def _ordered_copies(batch: dict[str, np.ndarray], copies: int) -> dict[str, np.ndarray]:
    """map_batches UDF: each row `copies` times, keyed copy number + a uniform draw, so sorting
    by the key gives whole permutations one after another. Fresh entropy on every execution: each
    epoch sorts differently."""
    n = len(batch["path"])
    rng = np.random.default_rng()
    out = {k: np.tile(v, copies) for k, v in batch.items()}
    out["order"] = np.repeat(np.arange(copies, dtype=np.float64), n) + rng.random(n * copies)
    return out


def epoch_order(index: DomainIndex, rows: int) -> ray.data.Dataset:
    """The index rows one epoch visits, `rows` long, in visiting order (every item of a domain with
    at least `rows` items at most once; a shorter domain in whole permutations and a part of one).
    Order matters for the cut, so the dataset keeps it (`preserve_order`)."""
    copies = math.ceil(rows / index.count)
    table = index.rows  # from the driver's memory: reading the Parquet per epoch cost ~10-25 s on 2 cores
    ds = ray.data.from_arrow([table.slice(i, ROWS_PER_PARTITION) for i in range(0, table.num_rows, ROWS_PER_PARTITION)])
    ds = ds.map_batches(functools.partial(_ordered_copies, copies=copies), batch_format="numpy")
    # Fixed sort boundaries: a few partitions per permutation instead of Ray's sampled 200 (which
    # cost ~40 s per epoch on 2 cores for a few hundred rows).
    parts = math.ceil(index.count / ROWS_PER_PARTITION)
    bounds = [c + j / parts for c in range(copies) for j in range(parts)][1:] + [copies]
    ds = ds.sort("order", boundaries=bounds).limit(rows)
    ds.context.execution_options.preserve_order = True
    return ds


def load_rgb(loc: Location, path: str, kind: str, pts: int) -> np.ndarray:
    """One indexed item as (H, W, 3) uint8: an image from its bytes, a video frame by seeking."""
    shown = loc.show(path)
    if kind == "image":
        with loc.fs.open_input_stream(path) as f:
            return decode_image(f.read(), shown)[0]
    with opened(loc, path) as file, VideoReader(file, shown) as reader:
        for frame in reader.frames(pts, pts + 1):
            return frame.rgb
    raise ValueError(f"{shown}: no frame at pts {pts}")


def _augment_batch(
    batch: dict[str, np.ndarray],
    loc: Location,
    role: str,
    cfg: DataSettings,
    teacher_dark: float | None = None,
    prior: str = "none",
) -> dict[str, np.ndarray]:
    """map_batches UDF: index rows -> augmented (B, 3, S, S) float32 crops in [-1, 1] (`low` +
    `low_input`, `teacher` when `teacher_dark` is set and `prior` for a prior generator, for the
    low domain; `normal` for the other). Items that fail to read are reported and dropped instead
    of failing the block."""
    rng = np.random.default_rng()  # fresh entropy per batch: pooled Ray workers share torch's default seed
    torch.manual_seed(int(rng.integers(2**62)))  # torchvision's RandomCrop/flips draw from torch
    keys = ("low", "low_input") if role == "low" else ("normal",)
    if role == "low" and teacher_dark is not None:
        keys += ("teacher",)
    base = prior_function(prior)
    if role == "low" and base is not None:
        keys += ("prior",)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for path, kind, pts in zip(batch["path"], batch["kind"], batch["pts"]):
        try:
            image = load_rgb(loc, path, kind, int(pts))
            if role == "low":
                guide = None if teacher_dark is None else classical.teacher(image, dark=teacher_dark)
                crops = augment_low(image, cfg, rng, guide, base)
            else:
                crops = {"normal": augment_normal(image, cfg)}
        except Exception as exc:  # noqa: BLE001
            print(f"enlighten-ray: skipping {loc.show(path)}: {reason(exc)}", file=sys.stderr)
            continue
        for k in keys:
            out[k].append(crops[k])
    size = cfg.crop_size
    return {k: torch.stack(v).numpy() if v else np.zeros((0, 3, size, size), np.float32) for k, v in out.items()}


def training_datasets(
    low: DomainIndex, normal: DomainIndex, cfg: Config, images_done: int = 0
) -> dict[str, ray.data.Dataset]:
    """The `datasets=` for TorchTrainer: {"low": ..., "normal": ...}, equally long per epoch. The
    low crops carry the warm start's teacher while a run that has seen `images_done` still needs it."""
    _, rows = plan_epoch(low.count, normal.count, cfg)
    teacher = cfg.warm.needs_teacher and images_done < cfg.warm.images + cfg.warm.anchor_images
    out = {}
    for index in (low, normal):
        dark = cfg.warm.dark if teacher else None
        augment = functools.partial(
            _augment_batch,
            loc=index.location,
            role=index.role,
            cfg=cfg.data,
            teacher_dark=dark,
            prior=cfg.model.prior,
        )
        out[index.role] = epoch_order(index, rows).map_batches(augment, batch_size=8, batch_format="numpy")
    return out


def validation_images(index: DomainIndex, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8: the index's first usable items (sorted by path, then frame time), short
    side resized to S and centre-cropped, so every checkpoint's grid shows the same scenes."""
    crops = []
    for row in index.first:
        rgb = load_rgb(index.location, row["path"], row["kind"], row["pts"])
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1)  # (3, H, W)
        image = v2.functional.center_crop(v2.functional.resize(image, size, antialias=True), size)
        crops.append(image.permute(1, 2, 0).numpy())
    return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
