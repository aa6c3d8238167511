"""Choose a run's checkpoint on the held-out curve and write it as the package's shipped model.

    enlighten-ray eval curve runs/cpu --images $ENLIGHTEN_DATA/train/low \
        --holdout configs/holdout_low.txt --json docs/curve.json --plot docs/curve.png
    python jobs/release_model.py --run runs/cpu --curve docs/curve.json
    # then, with the model written: eval table / eval pairs on it, and record them in its card
    python jobs/release_model.py --run runs/cpu --curve docs/curve.json --table table.json --pairs lol.json

The choice, on 50 held-out `train/low` images and the first 60 frames of an evaluation video
(never the test sets): the lowest mean held-out NIQE among checkpoints that
- brighten the held-out images (mean luma above the inputs'),
- keep their colour: over all pixels and over near-black ones (input luma < 10), no channel's
  gain is more than MAX_SHIFT above another's (gains are output / input channel means; 1 = the
  inputs' own balance kept; the inputs themselves are warm, R/G/B 25/24/21),
- on the video (when the curve has it): are not darker than the shipped model, and keep the
  near-black pixels (input luma < 8) grey: max/min of their channel means <= MAX_CAST.
NIQE runs on grey and cannot see a cast, hence the colour terms. Writes
enlighten_ray/assets/enlightengan-cpu.pt (fp16) and its card enlightengan-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

import yaml  # noqa: E402

from enlighten_ray.models.weights import DEFAULT_WEIGHTS, load_generator, read_card, save_generator  # noqa: E402

MAX_SHIFT = 1.15
MAX_CAST = 1.15


def shift(row: dict, ref: dict, prefix: str = "") -> float:
    """Max/min over channels of output / input channel means (1 = the input's balance kept)."""
    gains = [row[f"{prefix}{c}"] / max(ref[f"{prefix}{c}"], 1e-6) for c in "rgb"]
    return max(gains) / max(min(gains), 1e-6)


def rejections(row: dict, inputs: dict, shipped_luma: float | None) -> list[str]:
    """Why a checkpoint may not ship (empty: it may)."""
    why = []
    if row["luma"] <= inputs["luma"]:
        why.append("does not brighten")
    for prefix, name in (("", "all pixels"), ("dark_", "near-black pixels")):
        if shift(row, inputs, prefix) > MAX_SHIFT:
            why.append(f"colour shift {shift(row, inputs, prefix):.2f} over {name}")
    if "dashcam_luma" in row:
        if shipped_luma is not None and row["dashcam_luma"] < shipped_luma:
            why.append(f"video luma {row['dashcam_luma']:.1f} below the shipped model's {shipped_luma:.1f}")
        if row["dashcam_dark_cast"] > MAX_CAST:
            why.append(f"video near-black cast {row['dashcam_dark_cast']:.2f}")
    return why


def choose(rows: list[dict], shipped_luma: float | None = None) -> dict:
    inputs, trained = rows[0], rows[1:]
    fair = []
    for r in trained:
        why = rejections(r, inputs, shipped_luma)
        print(f"{r['checkpoint']}: NIQE {r['niqe']:.3f} " + ("; ".join(why) if why else "eligible"))
        if not why:
            fair.append(r)
    if not fair:
        raise SystemExit("no checkpoint passes the rule (reasons above)")
    return min(fair, key=lambda r: r["niqe"])


def shipped_video_luma(video: str) -> float:
    """The shipped model's mean output luma on the video's first frames (the bar a new model meets)."""
    from enlighten_ray.eval.curve import VIDEO_DARK_LUMA, colour_stats, video_frames
    from enlighten_ray.infer.enhancer import Enhancer

    frames = video_frames(video)
    enhancer = Enhancer(load_generator(None)[0], device="cpu")
    return colour_stats([enhancer(f) for f in frames], frames, VIDEO_DARK_LUMA)["luma"]


def _started_from(config: dict) -> dict:
    """A run that started from a carded model (train.init_generator, e.g. the shipped one) continues
    it: epochs, steps and images seen add to that model's, as its card recorded them."""
    init = config["train"].get("init_generator")
    card = read_card(init) if init and Path(init).is_file() else {}
    return {k: card[k] for k in ("checkpoint", "epoch", "step", "images_seen") if k in card}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the training run directory")
    parser.add_argument("--curve", required=True, help="JSON written by `enlighten-ray eval curve`")
    parser.add_argument("--table", help="JSON written by `enlighten-ray eval table` for the chosen model")
    parser.add_argument("--pairs", help="JSON written by `enlighten-ray eval pairs` (LOL15) for the chosen model")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS), help="where to write the generator")
    parser.add_argument("--video", help="the curve's evaluation video: the shipped model's luma on it is the bar")
    parser.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    args = parser.parse_args()

    rows = json.loads(Path(args.curve).read_text())
    shipped_luma = shipped_video_luma(args.video) if args.video else None
    chosen = choose(rows, shipped_luma)
    if args.dry_run:
        print(f"would ship {chosen['checkpoint']} (held-out NIQE {chosen['niqe']:.3f})")
        return 0
    folder = Path(args.run) / chosen["checkpoint"]
    model, info = load_generator(folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    start = _started_from(config)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    card = {
        "name": Path(args.out).stem,
        "recipe": "configs/cpu.yaml",
        "data": {
            "low": "train/low of the project's shared set (914: 485 LOL train lows + 429 SICE under luma 60), "
            "less the 50 files of configs/holdout_low.txt",
            "normal": "train/normal (1016: BSDS500, Kodak24, McMaster, Sun-Hays80, Set14, Set5, SICE mid-exposure)",
        },
        "terms": "trained on research data sets (LOL, SICE: research use, SICE CC BY-NC; BSDS500: Berkeley "
        "research data): retrain on your own data before commercial use",
        "checkpoint": chosen["checkpoint"],
        "epoch": chosen["epoch"] + start.get("epoch", 0),
        "step": chosen["step"] + start.get("step", 0),
        "images_seen": chosen["step"] * config["train"]["batch_size"] + start.get("images_seen", 0),
        **({"continued_from": start} if start else {}),
        "ema_half_life_images": config["train"].get("ema_half_life_images", 0.0),  # generator.pt is the average
        "warm_start": config.get("warm", {}),
        "vgg": info.meta.get("vgg"),
        "config": config,
        "commit": commit,  # the code the run trained with (the run's worktree) and this file was written at
        "heldout": {"input": {k: rows[0][k] for k in ("niqe", "luma", "r", "g", "b")}, "chosen": chosen},
        "selection": f"lowest held-out NIQE among checkpoints that brighten, shift no channel's gain more than "
        f"{MAX_SHIFT} (all and near-black pixels), are not darker than the shipped model on the video "
        f"({shipped_luma}) and keep its near-black pixels within cast {MAX_CAST}",
    }
    if args.table:  # measured on the model this writes (a second pass, once it is written)
        table = json.loads(Path(args.table).read_text())
        card["table1"] = {name: row["niqe"] for name, row in table["rows"].items()}
    if args.pairs:
        pairs = json.loads(Path(args.pairs).read_text())
        card["lol15"] = {"psnr": pairs["mean_psnr"], "ssim": pairs["mean_ssim"], "pairs": len(pairs["pairs"])}
    out = Path(args.out)
    save_generator(model, out, {**info.meta, "checkpoint": chosen["checkpoint"]}, half=True)
    out.with_suffix(".json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    print(
        f"chose {chosen['checkpoint']} (epoch {chosen['epoch']}, held-out NIQE {chosen['niqe']:.3f}, "
        f"luma {chosen['luma']:.1f}); wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its card"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
