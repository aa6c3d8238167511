"""Choose a run's checkpoint on the held-out curve and write it as the package's shipped model.

    enlighten-ray eval curve runs/prior --images $ENLIGHTEN_DATA/train/low \
        --holdout configs/holdout_low.txt --json docs/curve.json --plot docs/curve.png
    python jobs/release_model.py --run runs/prior --curve docs/curve.json
    # then, with the model written: eval table / eval pairs on it, and record them in its card
    python jobs/release_model.py --run runs/prior --curve docs/curve.json --table table.json --pairs lol.json

The choice, on 50 held-out `train/low` images and the first 60 frames of an evaluation video
(never the test sets): the lowest mean held-out NIQE among checkpoints that
- brighten the held-out images (mean luma above the inputs'),
- keep their colour: no channel's gain more than MAX_SHIFT above another's (gains are output /
  input channel means; 1 = the inputs' own balance kept; the inputs themselves are warm, R/G/B
  25/24/21),
- keep their near-black pixels (input luma < 10) grey: max/min of the outputs' channel means
  there <= MAX_CAST (near black, the inputs' own balance is noise: 1.43 on the held-out set),
- on the video (when the curve has it): are not darker than the model shipped before (the bar,
  `--bar-weights`), and keep its near-black pixels (input luma < 8) grey the same way,
- score a held-out NIQE no worse than the prior alone (the curve's "prior" row, for a prior
  generator's run) and than the model shipped before (its card's held-out NIQE): a model that
  cannot beat its own starting point or its predecessor is not shipped. If none passes, nothing is.
Then Table 1, LOL15 and the sheet (`jobs/release_sheet.py`) are looked at before shipping.
NIQE runs on grey and cannot see a cast, hence the colour terms. Writes
enlighten_ray/assets/enlightengan-cpu.pt (fp16) and its card enlightengan-cpu.json (atomically).
The second pass (--table/--pairs) re-chooses: pass the same --bar-weights (the previous model,
kept aside), not the model the first pass wrote.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

import yaml  # noqa: E402

from enlighten_ray.config import CONFIG_FILE  # noqa: E402
from enlighten_ray.io.atomic import atomic_output  # noqa: E402
from enlighten_ray.models.weights import DEFAULT_WEIGHTS, load_generator, read_card, save_generator  # noqa: E402

MAX_SHIFT = 1.15
MAX_CAST = 1.15


def shift(row: dict, ref: dict) -> float:
    """Max/min over channels of output / input channel means (1 = the input's balance kept);
    means under half a code value count as 0.5, as in `eval.curve.cast`."""
    gains = [max(row[c], 0.5) / max(ref[c], 0.5) for c in "rgb"]
    return max(gains) / min(gains)


def rejections(
    row: dict, inputs: dict, shipped_luma: float | None, niqe_bars: dict[str, float] | None = None
) -> list[str]:
    """Why a checkpoint may not ship (empty: it may). `niqe_bars`: held-out NIQEs it must not exceed."""
    why = [f"held-out NIQE above {name}'s {bar:.3f}" for name, bar in (niqe_bars or {}).items() if row["niqe"] > bar]
    if row["luma"] <= inputs["luma"]:
        why.append("does not brighten")
    if shift(row, inputs) > MAX_SHIFT:
        why.append(f"colour shift {shift(row, inputs):.2f}")
    if row["dark_cast"] > MAX_CAST:
        why.append(f"near-black cast {row['dark_cast']:.2f}")
    if "dashcam_luma" in row:
        if shipped_luma is None:
            raise SystemExit("the curve has video figures: give --video (the bar is the shipped model's luma on it)")
        if row["dashcam_luma"] < shipped_luma:
            why.append(f"video luma {row['dashcam_luma']:.1f} below the shipped model's {shipped_luma:.1f}")
        if row["dashcam_dark_cast"] > MAX_CAST:
            why.append(f"video near-black cast {row['dashcam_dark_cast']:.2f}")
    return why


def choose(rows: list[dict], shipped_luma: float | None = None, shipped_niqe: float | None = None) -> dict:
    inputs = rows[0]
    bars = {r["checkpoint"]: r["niqe"] for r in rows[1:] if r["checkpoint"] == "prior"}
    if shipped_niqe is not None:
        bars["the shipped model"] = shipped_niqe
    fair = []
    for r in rows[1:]:
        if r["checkpoint"] == "prior":
            continue
        why = rejections(r, inputs, shipped_luma, bars)
        print(f"{r['checkpoint']}: NIQE {r['niqe']:.3f} " + ("; ".join(why) if why else "eligible"))
        if not why:
            fair.append(r)
    if not fair:
        raise SystemExit("no checkpoint passes the rule (reasons above): nothing to ship")
    return min(fair, key=lambda r: r["niqe"])


def shipped_video_luma(video: str, weights: str | None = None) -> float:
    """A model's (default: the shipped one's) mean output luma on the video's first frames, as
    `eval curve --video` measures it: the bar a new model meets."""
    from enlighten_ray.eval.curve import VIDEO_DARK_LUMA, colour_stats, video_frames
    from enlighten_ray.infer.enhancer import Enhancer

    frames = video_frames(video)
    enhancer = Enhancer(load_generator(weights)[0], device="cpu")
    return colour_stats([enhancer(f) for f in frames], frames, VIDEO_DARK_LUMA)["luma"]


def shipped_heldout_niqe(weights: str | None = None) -> float | None:
    """The held-out NIQE the previous model's card recorded when it was chosen (None: no card)."""
    card = read_card(weights or DEFAULT_WEIGHTS)
    return card.get("heldout", {}).get("chosen", {}).get("niqe")


def _started_from(config: dict) -> dict:
    """A run that started from a carded model (train.init_generator, e.g. the shipped one) continues
    it: epochs, steps and images seen add to that model's, as its card recorded them."""
    init = config["train"].get("init_generator")
    card = read_card(init) if init and Path(init).is_file() else {}
    return {k: card[k] for k in ("checkpoint", "epoch", "step", "images_seen") if k in card}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="the training run directory")
    parser.add_argument("--curve", required=True, help="JSON written by `enlighten-ray eval curve`")
    parser.add_argument("--recipe", default="configs/prior.yaml", help="the config file the run was started with")
    parser.add_argument("--table", help="JSON written by `enlighten-ray eval table` for the chosen model")
    parser.add_argument("--pairs", help="JSON written by `enlighten-ray eval pairs` (LOL15) for the chosen model")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS), help="where to write the generator")
    parser.add_argument("--video", help="the curve's evaluation video: the shipped model's luma on it is the bar")
    parser.add_argument("--bar-weights", help="the model whose video luma is the bar (default: the shipped one)")
    parser.add_argument("--dry-run", action="store_true", help="print the choice, write nothing")
    return parser.parse_args()


def model_card(args: argparse.Namespace, rows: list[dict], chosen: dict, shipped_luma: float | None, vgg: Any) -> dict:
    """What the shipped model is: its run, recipe, images seen, selection rule and scores."""
    folder = Path(args.run) / chosen["checkpoint"]
    config = yaml.safe_load((folder / CONFIG_FILE).read_text())
    start = _started_from(config)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    card = {
        "name": Path(args.out).stem,
        "recipe": args.recipe,
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
        "vgg": vgg,
        "config": config,
        "commit": commit,  # the code the run trained with (the run's worktree) and this file was written at
        "heldout": {"input": {k: rows[0][k] for k in ("niqe", "luma", "r", "g", "b")}, "chosen": chosen},
        "selection": f"lowest held-out NIQE among checkpoints that brighten, shift no channel's gain more than "
        f"{MAX_SHIFT}, keep near-black pixels within cast {MAX_CAST} (held-out and video), and are not darker "
        f"on the video than the previous model (luma {shipped_luma})",
    }
    if args.table:  # measured on the model this writes (a second pass, once it is written)
        table = json.loads(Path(args.table).read_text())
        card["table1"] = {name: row["niqe"] for name, row in table["rows"].items()}
    if args.pairs:
        pairs = json.loads(Path(args.pairs).read_text())
        card["lol15"] = {"psnr": pairs["mean_psnr"], "ssim": pairs["mean_ssim"], "pairs": len(pairs["pairs"])}
    return card


def main() -> int:
    args = parse_args()
    rows = json.loads(Path(args.curve).read_text())
    shipped_luma = shipped_video_luma(args.video, args.bar_weights) if args.video else None
    chosen = choose(rows, shipped_luma, shipped_heldout_niqe(args.bar_weights))
    if args.dry_run:
        print(f"would ship {chosen['checkpoint']} (held-out NIQE {chosen['niqe']:.3f})")
        return 0
    model, info = load_generator(Path(args.run) / chosen["checkpoint"])
    card = model_card(args, rows, chosen, shipped_luma, info.meta.get("vgg"))
    out = Path(args.out)
    save_generator(model, out, {**info.meta, "checkpoint": chosen["checkpoint"]}, half=True)
    with atomic_output(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=1, default=str) + "\n")
    print(
        f"chose {chosen['checkpoint']} (epoch {chosen['epoch']}, held-out NIQE {chosen['niqe']:.3f}, "
        f"luma {chosen['luma']:.1f}); wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its card"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
