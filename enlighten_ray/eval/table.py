"""Evaluation behind `enlighten-ray eval`: NIQE of folders, PSNR/SSIM of pairs, the paper's
Table 1 for a model, and before/after contact sheets.

Table 1 of the paper (Jiang et al., TIP 2020) reports mean NIQE on MEF, LIME, NPE, VV and DICM and
an "All" column. "All" is the mean over every image of the five sets pooled, not the mean of the
five set means: the paper's rows fit the pooled mean (with the usual set sizes 17/10/8/24/69 the
EnlightenGAN row pools to 3.385 and the input row to 4.138, the mean of set means would be 3.443
and 4.160; the paper prints 3.385 and 4.134).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from enlighten_ray.classical import BASELINES
from enlighten_ray.errors import BadInputError
from enlighten_ray.eval.bootstrap import RESAMPLES, paired_difference, pooled_interval
from enlighten_ray.eval.metrics import niqe, psnr, ssim
from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.infer.local import enhance_path
from enlighten_ray.io.atomic import atomic_output
from enlighten_ray.io.images import ImageMeta, read_image, write_image
from enlighten_ray.io.storage import Location, relative_path

__all__ = [
    "SETS",
    "list_images",
    "niqe_report",
    "pairs_report",
    "table_report",
    "format_niqe",
    "format_pairs",
    "format_table",
    "write_json",
]

SETS = ("MEF", "LIME", "NPE", "VV", "DICM")  # Table-1 column order
PSNR_CAP = 100.0  # dB an identical pair counts as in a mean (inf would make the whole mean inf)


# --------------------------------------------------------------------------- reading


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file, upright. (MATLAB's imread ignores EXIF orientation;
    the five test sets carry none, so their NIQE is unaffected.)"""
    return read_image(path)[0]


def list_images(root: Path) -> list[Path]:
    """Image files under `root` (recursed, sorted), or [root] for a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise BadInputError(root, "no such file or directory")
    return [Path(p) for p, kind, _ in Location(str(root)).media() if kind == "image"]


def image_key(path: Path, root: Path) -> str:
    """Name used to match files across folders: relative path without extension, since an
    enhanced copy may change the format (a.jpg -> a.png)."""
    rel = relative_path(path, root) if path != root else Path(path.name)
    return rel.with_suffix("").as_posix()


def _scores(files: dict[str, Path], errors: dict[str, str], desc: str) -> dict[str, float]:
    """NIQE for each named file; unreadable, too small or flat images go to `errors`, skipped."""
    out: dict[str, float] = {}
    # disable=None: no bar when stderr is not a terminal (a log gets no "0%|" lines)
    for name, path in tqdm(files.items(), desc=desc, unit="img", leave=False, disable=True if len(files) < 2 else None):
        try:
            out[name] = niqe(read_rgb(path))
        except BadInputError as exc:
            errors[name] = exc.reason
        except ValueError as exc:  # from niqe: too small or no texture
            errors[name] = str(exc)
    return out


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- eval niqe


def niqe_report(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """NIQE per image and the mean per PATH (a folder or one image file).

    Returns one entry per PATH: {"path", "images": {relative name: niqe}, "mean", "errors":
    {relative name: reason}}."""
    report = []
    for p in map(Path, paths):
        files = list_images(p)
        base = p if p.is_dir() else p.parent
        errors: dict[str, str] = {}
        scores = _scores({relative_path(f, base).as_posix(): f for f in files}, errors, desc=p.name or str(p))
        report.append({"path": str(p), "images": scores, "mean": _mean(scores.values()), "errors": errors})
    return report


def format_niqe(report: list[dict[str, Any]]) -> str:
    """Plain-text table: one line per image, then the folder mean."""
    lines = []
    for entry in report:
        width = max([len(n) for n in entry["images"]] + [len(entry["path"]), 4])
        lines.append(f"{entry['path']}")
        lines += [f"  {name:<{width}}  {v:7.3f}" for name, v in entry["images"].items()]
        lines += [f"  {name:<{width}}  error: {why}" for name, why in entry["errors"].items()]
        mean = entry["mean"]
        lines.append(
            f"  {'mean':<{width}}  {mean:7.3f}  ({len(entry['images'])} images)"
            if mean is not None
            else f"  {'mean':<{width}}      n/a  (no images)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- eval pairs


def pairs_report(pred_dir: str | os.PathLike, ref_dir: str | os.PathLike) -> dict[str, Any]:
    """PSNR (dB) and SSIM for files with the same name (extension aside) in both folders.

    Files present in only one folder are listed in "only_in_pred" / "only_in_ref"; pairs that
    cannot be compared (unreadable, different sizes) in "errors"."""
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    preds = {image_key(p, pred_dir): p for p in list_images(pred_dir)}
    refs = {image_key(p, ref_dir): p for p in list_images(ref_dir)}
    pairs, errors = {}, {}
    for name in tqdm(sorted(preds.keys() & refs.keys()), desc="pairs", unit="pair", leave=False, disable=None):
        try:
            a, b = read_rgb(preds[name]), read_rgb(refs[name])
            if a.shape != b.shape:
                raise BadInputError(
                    preds[name],
                    f"size {a.shape[1]}x{a.shape[0]} differs from the reference's {b.shape[1]}x{b.shape[0]}",
                )
            pairs[name] = {"psnr": psnr(a, b), "ssim": ssim(a, b)}
        except BadInputError as exc:
            errors[name] = str(exc)
        except ValueError as exc:  # smaller than one SSIM window
            errors[name] = f"{preds[name]}: {exc}"
    return {
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "pairs": pairs,
        # the mean of per-image PSNR, as LOL papers report it; an identical pair (inf) counts as PSNR_CAP
        "mean_psnr": _mean(min(v["psnr"], PSNR_CAP) for v in pairs.values()),
        "psnr_cap": PSNR_CAP,
        "identical": sorted(n for n, v in pairs.items() if math.isinf(v["psnr"])),
        "mean_ssim": _mean(v["ssim"] for v in pairs.values()),
        "only_in_pred": sorted(preds.keys() - refs.keys()),
        "only_in_ref": sorted(refs.keys() - preds.keys()),
        "errors": errors,
    }


def format_pairs(report: dict[str, Any]) -> str:
    """One line per pair, the means, then what could not be paired or compared."""
    names = list(report["pairs"]) or ["mean"]
    width = max(len(n) for n in names + ["mean"])
    lines = [f"{'image':<{width}}  {'PSNR':>7}  {'SSIM':>6}"]
    lines += [f"{n:<{width}}  {v['psnr']:7.3f}  {v['ssim']:6.4f}" for n, v in report["pairs"].items()]
    if report["pairs"]:
        lines.append(
            f"{'mean':<{width}}  {report['mean_psnr']:7.3f}  {report['mean_ssim']:6.4f}  ({len(report['pairs'])} pairs)"
        )
        if report["identical"]:
            lines.append(f"{len(report['identical'])} identical pairs (PSNR inf) count as {PSNR_CAP:g} dB in the mean")
    elif not report["errors"]:
        lines.append("no matching file names")
    lines += [f"only in {report['pred_dir']}: {n}" for n in report["only_in_pred"]]
    lines += [f"only in {report['ref_dir']}: {n}" for n in report["only_in_ref"]]
    lines += [f"error: {why}" for why in report["errors"].values()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- eval table


def _row(per_set: dict[str, dict[str, float]], errors: dict[str, dict[str, str]], missing: list[str]) -> dict[str, Any]:
    """Table row: mean per set and "All" = mean over every image pooled (None if a set is missing)."""
    means: dict[str, float | None] = {s: _mean(per_set[s].values()) if s in per_set else None for s in SETS}
    pooled = [v for s in SETS if s in per_set for v in per_set[s].values()]
    means["All"] = None if missing else _mean(pooled)
    return {
        "niqe": means,
        "counts": {s: len(per_set.get(s, {})) for s in SETS},
        "images": per_set,
        "errors": errors,
        "missing_sets": missing,
    }


def _held_rows(folder: Path) -> str:
    """What an `--out` folder holds, for an error: its rows are named after the weights file
    (`t5/prior_only.pt`), which is easy to mistake for `t5/ours`."""
    rows = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return f" ({folder} holds: {', '.join(rows)})" if rows else ""


def table_report(
    weights: str | os.PathLike | None,
    data: str | os.PathLike,
    compare: dict[str, str | os.PathLike] | None = None,
    baselines: bool = False,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Table 1 for a model: enhance DATA/{MEF,LIME,NPE,VV,DICM} with WEIGHTS and score NIQE.

    Rows: "Input", the model (named after the weights file; "ours" for the shipped model), "AHE"
    and "LIME-style" when `baselines`, then each `compare` NAME whose DIR holds the same five set folders of saved
    outputs. Enhanced images go to OUT/<row>/<set>/ under the inputs' names as PNG (a temporary folder
    when `out` is None); the model's are always rewritten, so stale files are never scored.
    """
    data = Path(data)
    sets = [s for s in SETS if (data / s).is_dir()]
    if not sets:
        raise BadInputError(data, f"none of the test-set folders {', '.join(SETS)} is here")
    missing = [s for s in SETS if s not in sets]
    model_name = Path(weights).name if weights else "ours"
    taken = {"Input", model_name, *(BASELINES if baselines else ())}
    for name, folder in (compare or {}).items():  # checked before the long part
        if name in taken:
            raise BadInputError(f"--compare {name}={folder}", f"the table already has a row named {name!r}")
        if not Path(folder).is_dir():
            raise BadInputError(folder, f"--compare {name}: no such directory{_held_rows(Path(folder).parent)}")
    rows: dict[str, dict[str, Any]] = {}
    with _workdir(out) as work:
        rows["Input"] = _score_dir(data, sets, missing, "Input")
        enhancer = Enhancer.from_weights(weights)
        # PNG, as the baselines: a JPEG re-encode of the model's output alone would cost it NIQE
        # (measured: VV 3.19 written as JPEG q95 against 2.93 as PNG, for the same pixels)
        failed = {
            s: enhance_path(data / s, work / model_name / s, enhancer, overwrite=True, image_format="png").failed
            for s in sets
        }
        rows[model_name] = _score_dir(work / model_name, sets, missing, model_name)
        for s in sets:  # inputs the model could not enhance: listed with the row's errors
            for src, why in failed[s]:
                rows[model_name]["errors"].setdefault(s, {})[image_key(src, data / s)] = why.removeprefix(f"{src}: ")
        for name, method in BASELINES.items() if baselines else ():
            for s in sets:
                _run_baseline(method, data / s, work / name / s, f"{name} {s}")
            rows[name] = _score_dir(work / name, sets, missing, name)
        for name, folder in (compare or {}).items():
            have = [s for s in sets if (Path(folder) / s).is_dir()]
            rows[name] = _score_dir(Path(folder), have, [s for s in SETS if s not in have], name)
    return {
        "data": str(data),
        "weights": str(weights or "shipped model"),
        "out": str(out) if out else None,
        "sets": list(SETS),
        "all": "mean over all images pooled",
        "rows": rows,
        **_intervals(rows),
    }


def _intervals(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """95 % bootstrap intervals of each row's All, and of each row's paired difference to every
    row above it (Input, the model, the baselines, in the table's order)."""
    names = list(rows)
    return {
        "intervals": {n: pooled_interval(rows[n]["images"]) for n in names},
        "differences": {
            n: {m: paired_difference(rows[n]["images"], rows[m]["images"]) for m in names[:i]}
            for i, n in enumerate(names)
            if i
        },
        "bootstrap": f"{RESAMPLES} stratified resamples (images drawn within each set), percentile intervals",
    }


@contextlib.contextmanager
def _workdir(out: str | os.PathLike | None) -> Iterator[Path]:
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        yield Path(out)
    else:
        with tempfile.TemporaryDirectory(prefix="enlighten-eval-") as tmp:
            yield Path(tmp)


def _score_dir(folder: Path, sets: list[str], missing: list[str], label: str) -> dict[str, Any]:
    return _score_sets(
        {s: {image_key(f, folder / s): f for f in list_images(folder / s)} for s in sets}, missing, label
    )


def _score_sets(files: dict[str, dict[str, Path]], missing: list[str], label: str) -> dict[str, Any]:
    per_set, errors = {}, {}
    for s, named in files.items():
        errors[s] = {}
        per_set[s] = _scores(named, errors[s], desc=f"NIQE {label} {s}")
    return _row(per_set, {s: e for s, e in errors.items() if e}, missing)


def _run_baseline(method: Callable[[np.ndarray], np.ndarray], src: Path, dst: Path, desc: str) -> None:
    """Apply a classical method to every image of `src`, written as PNG under `dst`."""
    for f in tqdm(list_images(src), desc=desc, unit="img", leave=False, disable=None):
        with contextlib.suppress(BadInputError):  # unreadable inputs are already reported in "Input"
            write_image((dst / image_key(f, src)).with_suffix(".png"), method(read_rgb(f)), ImageMeta("RGB"))


def format_table(report: dict[str, Any]) -> str:
    """Table-1 layout: rows = methods, columns = MEF LIME NPE VV DICM All (mean NIQE)."""
    cols = list(SETS) + ["All"]
    width = max(len(n) for n in [*report["rows"], "Method"])
    lines = [f"{'Method':<{width}}" + "".join(f"{c:>8}" for c in cols)]
    for name, row in report["rows"].items():
        cells = "".join(f"{row['niqe'][c]:8.3f}" if row["niqe"][c] is not None else f"{'n/a':>8}" for c in cols)
        lines.append(f"{name:<{width}}{cells}")
    first = next(iter(report["rows"].values()))
    counts = "".join(f"{first['counts'][s]:8d}" for s in SETS) + f"{sum(first['counts'].values()):8d}"
    lines.append(f"{'(images)':<{width}}{counts}")
    lines.append("NIQE, lower is better; All = mean over all images pooled.")
    lines += _format_intervals(report, width)
    for name, row in report["rows"].items():
        if row["missing_sets"]:
            lines.append(f"{name}: no folder for {', '.join(row['missing_sets'])}")
        for s, errs in row["errors"].items():
            lines += [f"{name} {s}/{n}: {why}" for n, why in errs.items()]
    return "\n".join(lines)


def _format_intervals(report: dict[str, Any], width: int) -> list[str]:
    """One line per row: All's 95 % interval, then its paired difference to each row above it."""
    if "intervals" not in report:
        return []

    def cell(iv: dict[str, float] | None, sign: bool = False) -> str:
        f = "+.3f" if sign else ".3f"
        return "n/a" if iv is None else f"{iv['mean']:{f}} [{iv['low']:{f}}, {iv['high']:{f}}]"

    lines = ["95 % bootstrap intervals (images resampled within each set); a difference below 0 = fewer NIQE:"]
    for name, iv in report["intervals"].items():
        diffs = "; ".join(f"- {m} {cell(d, True)}" for m, d in report["differences"].get(name, {}).items())
        lines.append(f"{name:<{width}} All {cell(iv)}" + (f"; {diffs}" if diffs else ""))
    return lines


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write `obj` as JSON atomically (inf -> null, which JSON lacks)."""

    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(clean(obj), indent=2) + "\n", encoding="utf-8")
