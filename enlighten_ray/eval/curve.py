"""The learning curve of a training run, behind `enlighten-ray eval curve`: for every checkpoint,
the held-out low images' outputs (mean luma, mean R/G/B, NIQE) beside the epoch's mean losses, as
JSON and a PNG plot. Checkpoints are selected on held-out training images, never on the test sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from enlighten_ray.errors import BadInputError
from enlighten_ray.eval.metrics import niqe
from enlighten_ray.eval.table import read_rgb
from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.models.generator import LUMA
from enlighten_ray.models.weights import GENERATOR_FILE, load_generator

__all__ = ["checkpoint_curve", "holdout_images", "output_stats", "plot_curve"]

LOSSES = ("g_global", "g_local", "sfp", "d_global", "d_local")


def holdout_images(folder: str | os.PathLike, listing: str | os.PathLike) -> list[Path]:
    """The files of `folder` named in the hold-out list (as `data.holdout` reads it)."""
    from enlighten_ray.train.index import read_holdout

    paths = [Path(folder) / name for name in read_holdout(str(listing))]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BadInputError(listing, f"{len(missing)} listed images are not in {folder}, e.g. {missing[0]}")
    return paths


def output_stats(images: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean luma, mean R/G/B (0-255) and mean NIQE over uint8 RGB images."""
    rgb = np.mean([img.reshape(-1, 3).mean(axis=0) for img in images], axis=0)
    return {
        "luma": float(np.dot(rgb, LUMA)),
        "r": float(rgb[0]),
        "g": float(rgb[1]),
        "b": float(rgb[2]),
        "niqe": float(np.mean([niqe(img) for img in images])),
    }


def _checkpoints(run: Path) -> list[Path]:
    found = sorted(p.parent for p in run.glob(f"checkpoint_*/{GENERATOR_FILE}"))
    if not found:
        raise BadInputError(run, "no checkpoint_*/generator.pt in this run directory")
    return found


def checkpoint_curve(
    run: str | os.PathLike, images: Sequence[Path], known: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per checkpoint (plus the inputs as epoch 0), oldest first. Rows already in `known`
    (keyed by checkpoint name, e.g. from an earlier call's JSON) are reused, so the curve of a run
    still training can be updated cheaply."""
    known = dict(known or {})
    inputs = [read_rgb(p) for p in images]
    rows = [known.get("input") or {"checkpoint": "input", "epoch": 0, "step": 0, **output_stats(inputs)}]
    for folder in _checkpoints(Path(run)):
        if folder.name in known:
            rows.append(known[folder.name])
            continue
        model, info = load_generator(folder)
        enhancer = Enhancer(model, device="cpu")
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        row = {"checkpoint": folder.name, "epoch": info["meta"].get("epoch"), "step": info["meta"].get("step")}
        row |= {k: metrics[k] for k in (*LOSSES, "lr", "images_per_s") if k in metrics}
        rows.append(row | output_stats([enhancer(x) for x in inputs]))
    return rows


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
