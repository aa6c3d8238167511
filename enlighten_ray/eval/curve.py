"""The learning curve of a training run, behind `enlighten-ray eval curve`: for every checkpoint,
the held-out low images' outputs (mean luma, mean R/G/B, NIQE, colour cast over all pixels and over
near-black ones) beside the epoch's mean losses, and optionally the same brightness and casts on the
first frames of an evaluation video (`dashcam_*` keys), as JSON and a PNG plot. Checkpoints are
selected on held-out training images and that video, never on the test sets.

NIQE runs on grey and cannot see a cast, hence the casts: max/min of the R, G, B means (1 = grey).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from enlighten_ray.config import CONFIG_FILE
from enlighten_ray.errors import BadInputError
from enlighten_ray.eval.metrics import niqe
from enlighten_ray.eval.table import read_rgb
from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.models.generator import EnlightenGenerator
from enlighten_ray.models.prior import LUMA
from enlighten_ray.models.weights import GENERATOR_FILE, find_generator_file, load_generator, weights_id

__all__ = [
    "cast",
    "checkpoint_curve",
    "colour_stats",
    "holdout_images",
    "luma",
    "output_stats",
    "plot_curve",
    "video_frames",
]

LOSSES = ("g_global", "g_local", "sfp", "d_global", "d_local", "teacher_l1")
DARK_LUMA = 10  # held-out pixels whose input luma is below this count as near-black
VIDEO_DARK_LUMA = 8  # the same on the evaluation video (86 % of the night dashcam's pixels)
VIDEO_FRAMES = 60


def holdout_images(folder: str | os.PathLike, listing: str | os.PathLike) -> list[Path]:
    """The files of `folder` named in the hold-out list (as `data.holdout` reads it)."""
    from enlighten_ray.train.index import read_holdout

    paths = [Path(folder) / name for name in read_holdout(str(listing))]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BadInputError(listing, f"{len(missing)} listed images are not in {folder}, e.g. {missing[0]}")
    return paths


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec.601 luma of uint8 (..., 3) RGB, float32."""
    return rgb.astype(np.float32) @ np.asarray(LUMA, np.float32)


def cast(rgb: Sequence[float]) -> float:
    """Max/min of channel means: 1.0 is grey on average; 1.56 was the shipped model's green dark sky."""
    floor = 0.5  # means under half a code value count as that: black is grey, and no division by 0
    return float(max(max(rgb), floor) / max(min(rgb), floor))


def colour_stats(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray], dark: float) -> dict[str, float]:
    """Mean luma, mean R/G/B (0-255) and cast of uint8 RGB outputs (each image weighted alike), and
    the cast over the pixels whose input luma is below `dark` (pooled; 1.0 when there are none)."""
    rgb = np.mean([img.reshape(-1, 3).mean(axis=0) for img in outputs], axis=0)
    sums, count = np.zeros(3), 0
    for out, src in zip(outputs, inputs):
        mask = luma(src) < dark
        sums += out[mask].sum(axis=0, dtype=np.float64)
        count += int(mask.sum())
    dark_rgb = sums / count if count else np.ones(3)
    return {
        "luma": float(np.dot(rgb, LUMA)),
        "r": float(rgb[0]),
        "g": float(rgb[1]),
        "b": float(rgb[2]),
        "cast": cast(rgb),
        "dark_r": float(dark_rgb[0]),
        "dark_g": float(dark_rgb[1]),
        "dark_b": float(dark_rgb[2]),
        "dark_cast": cast(dark_rgb),
        "dark_share": count / sum(img.shape[0] * img.shape[1] for img in inputs),
    }


def output_stats(outputs: Sequence[np.ndarray], inputs: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """`colour_stats` (over held-out inputs' near-black pixels) and mean NIQE of uint8 RGB outputs."""
    stats = colour_stats(outputs, outputs if inputs is None else inputs, DARK_LUMA)
    return stats | {"niqe": float(np.mean([niqe(img) for img in outputs]))}


def video_frames(path: str | os.PathLike, count: int = VIDEO_FRAMES) -> list[np.ndarray]:
    """The first `count` frames of a video, uint8 RGB."""
    from enlighten_ray.io.video import VideoReader

    frames = []
    with VideoReader(str(path)) as reader:
        for frame in reader.frames():
            frames.append(frame.rgb)
            if len(frames) == count:
                break
    if not frames:
        raise BadInputError(path, "no video frames")
    return frames


def _video_row(enhancer: Enhancer | None, frames: Sequence[np.ndarray]) -> dict[str, float]:
    outputs = frames if enhancer is None else [enhancer(f) for f in frames]
    stats = colour_stats(outputs, frames, VIDEO_DARK_LUMA)
    return {f"dashcam_{k}": v for k, v in stats.items() if k in ("luma", "cast", "dark_cast")}


def _checkpoints(run: Path) -> list[Path]:
    found = sorted(p.parent for p in run.glob(f"checkpoint_*/{GENERATOR_FILE}"))
    if not found:
        raise BadInputError(run, "no checkpoint_*/generator.pt in this run directory")
    return found


def checkpoint_curve(
    run: str | os.PathLike,
    images: Sequence[Path],
    known: dict[str, dict[str, Any]] | None = None,
    video: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """One row per checkpoint (plus the inputs as epoch 0, and for a run of a prior generator the
    prior alone, what its training started from), oldest first. Rows already in `known`
    (keyed by checkpoint name, e.g. from an earlier call's JSON) are reused while they hold every
    figure and were made from the same weights file (its id), so the curve of a run still training
    can be updated cheaply; a reused row gets the video's figures when it lacks that video's."""
    known = dict(known or {})
    inputs = [read_rgb(p) for p in images]
    frames = video_frames(video) if video else []
    first = known.get("input", {})
    rows = [first if _current(first) else {"checkpoint": "input", "epoch": 0, "step": 0, **output_stats(inputs)}]
    folders = _checkpoints(Path(run))
    prior = load_generator(folders[0])[0].prior
    if prior != "none":
        known_prior = known.get("prior", {})
        rows.append(known_prior if _current(known_prior) else _prior_row(prior, inputs))
    for folder in folders:
        row = known.get(folder.name, {})
        wid = weights_id(find_generator_file(folder))
        stale = not _current(row) or row.get("weights") != wid
        if stale or (frames and row.get("video") != str(video)):
            model, info = load_generator(folder)
            enhancer = Enhancer(model, device="cpu")
            if stale:
                row = _checkpoint_row(folder, info.meta, enhancer, inputs) | {"weights": wid}
            if frames and row.get("video") != str(video):
                row |= _video_row(enhancer, frames) | {"video": str(video)}
        rows.append(row)
    if frames and rows[0].get("video") != str(video):
        rows[0] |= _video_row(None, frames) | {"video": str(video)}
    if frames and prior != "none" and rows[1].get("video") != str(video):
        rows[1] |= _video_row(_prior_enhancer(prior), frames) | {"video": str(video)}
    return rows


def _prior_enhancer(prior: str) -> Enhancer:
    """A prior generator whose correction is zero: its output is the prior alone."""
    model = EnlightenGenerator(width=1, prior=prior)
    model.reset_residual()
    return Enhancer(model, device="cpu")


def _prior_row(prior: str, inputs: Sequence[np.ndarray]) -> dict[str, Any]:
    """The prior alone as a curve row (epoch 0): the bar a prior generator's checkpoints must meet."""
    enhancer = _prior_enhancer(prior)
    return {"checkpoint": "prior", "epoch": 0, "step": 0, "images": 0} | output_stats(
        [enhancer(x) for x in inputs], inputs
    )


def _current(row: dict[str, Any]) -> bool:
    """Whether a cached row holds every figure this version computes."""
    return {"niqe", "cast", "dark_cast", "dark_r"} <= set(row)


def _checkpoint_row(
    folder: Path, meta: dict[str, Any], enhancer: Enhancer, inputs: Sequence[np.ndarray]
) -> dict[str, Any]:
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    row = {"checkpoint": folder.name, "epoch": meta.get("epoch"), "step": meta.get("step")}
    row["images"] = _images_seen(folder, row)
    row |= {k: metrics[k] for k in (*LOSSES, "lr", "images_per_s") if k in metrics}
    return row | output_stats([enhancer(x) for x in inputs], inputs)


def _images_seen(folder: Path, row: dict[str, Any]) -> int | None:
    """Steps x the run's batch size, from the checkpoint's config.yaml."""
    config = folder / CONFIG_FILE
    if row["step"] is None or not config.is_file():
        return None
    return row["step"] * int(yaml.safe_load(config.read_text())["train"]["batch_size"])


def plot_curve(rows: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Three panels over epochs: held-out NIQE, held-out brightness (luma and R/G/B), losses."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BadInputError("--plot", "needs matplotlib: pip install 'enlighten-ray[plot]'") from exc
    epochs = [r["epoch"] for r in rows]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    a.plot(epochs, [r["niqe"] for r in rows], "o-", color="black")
    a.set(title="held-out NIQE (lower is better)", xlabel="epoch")
    b.plot(epochs, [r["luma"] for r in rows], "o-", color="black", label="luma")
    for key, colour in (("r", "tab:red"), ("g", "tab:green"), ("b", "tab:blue")):
        b.plot(epochs, [r[key] for r in rows], ".--", color=colour, label=key.upper())
    b.set(title="held-out output mean (0-255)", xlabel="epoch")
    b.legend()
    trained = [r for r in rows if r["epoch"]]
    for key in LOSSES:
        c.plot([r["epoch"] for r in trained], [r.get(key) for r in trained], "o-", label=key)
    c.set(title="epoch mean losses", xlabel="epoch")
    c.legend()
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
