"""Choose a run's checkpoint on the held-out curve and write it as the package's shipped model.

    enlighten-ray eval curve runs/cpu --images $ENLIGHTEN_DATA/train/low \
        --holdout configs/holdout_low.txt --json docs/curve.json --plot docs/curve.png
    python jobs/release_model.py --run runs/cpu --curve docs/curve.json
    # then, with the model written: eval table / eval pairs on it, and record them in its card
    python jobs/release_model.py --run runs/cpu --curve docs/curve.json --table table.json --pairs lol.json

The choice: the lowest mean held-out NIQE among checkpoints whose outputs are brighter than the
inputs and keep the inputs' colour balance (no channel mean more than 25 % above or below the grey
mean, relative to the inputs' own balance). Never the test sets. Writes
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

MAX_CAST = 0.25


def balance(row: dict) -> list[float]:
    grey = (row["r"] + row["g"] + row["b"]) / 3
    return [row[c] / grey for c in "rgb"]


def choose(rows: list[dict]) -> dict:
    inputs, trained = rows[0], rows[1:]
    ref = balance(inputs)
    fair = [
        r
        for r in trained
        if r["luma"] > inputs["luma"] and all(abs(b / a - 1) <= MAX_CAST for a, b in zip(ref, balance(r)))
    ]
    if not fair:
        raise SystemExit("no checkpoint both brightens the held-out images and keeps their colour balance")
    return min(fair, key=lambda r: r["niqe"])


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
    args = parser.parse_args()

    rows = json.loads(Path(args.curve).read_text())
    chosen = choose(rows)
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
        "vgg": info["meta"].get("vgg"),
        "config": config,
        "commit": commit,  # the code the run trained with (the run's worktree) and this file was written at
        "heldout": {"input": {k: rows[0][k] for k in ("niqe", "luma", "r", "g", "b")}, "chosen": chosen},
        "selection": f"lowest held-out NIQE among brightening checkpoints with colour balance within {MAX_CAST:.0%}",
    }
    if args.table:  # measured on the model this writes (a second pass, once it is written)
        table = json.loads(Path(args.table).read_text())
        card["table1"] = {name: row["niqe"] for name, row in table["rows"].items()}
    if args.pairs:
        pairs = json.loads(Path(args.pairs).read_text())
        card["lol15"] = {"psnr": pairs["mean_psnr"], "ssim": pairs["mean_ssim"], "pairs": len(pairs["pairs"])}
    out = Path(args.out)
    save_generator(model, out, {**info["meta"], "checkpoint": chosen["checkpoint"]}, half=True)
    out.with_suffix(".json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    print(
        f"chose {chosen['checkpoint']} (epoch {chosen['epoch']}, held-out NIQE {chosen['niqe']:.3f}, "
        f"luma {chosen['luma']:.1f}); wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its card"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
