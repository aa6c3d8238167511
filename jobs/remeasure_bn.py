"""Re-measure the BatchNorm statistics of checkpoints' averaged generators on training crops.

    python jobs/remeasure_bn.py runs/cpu/checkpoint_* --low $ENLIGHTEN_DATA/train/low \
        --holdout configs/holdout_low.txt

Checkpoints written before `train.loop` measured them kept the running statistics averaged with
the weights, which do not match the averaged weights (their outputs: a grey wash with dark contour
lines). This measures them as training now does (`train.ema.averaged_generator`), on BN_IMAGES
random crops of the low images outside the hold-out list, augmented as the run's config says, and
rewrites each checkpoint's generator.pt (its state.pt keeps the average itself). Checkpoints whose
generator.pt is already measured (meta `bn_measured`) are left alone. Their samples.png is not
redrawn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch.optim.swa_utils import AveragedModel  # noqa: E402

from enlighten_ray.config import CONFIG_FILE, from_dict  # noqa: E402
from enlighten_ray.errors import BadInputError  # noqa: E402
from enlighten_ray.eval.table import read_rgb  # noqa: E402
from enlighten_ray.io.images import media_kind  # noqa: E402
from enlighten_ray.models.weights import GENERATOR_FILE, load_generator, save_generator  # noqa: E402
from enlighten_ray.train.ema import BN_IMAGES, averaged_generator  # noqa: E402
from enlighten_ray.train.index import read_holdout  # noqa: E402
from enlighten_ray.train.transforms import augment_low  # noqa: E402


def training_batches(low: Path, holdout: str, config: dict, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """BN_IMAGES augmented low crops (what G sees in training), in batches of `batch`."""
    cfg = from_dict(config)
    held = set(read_holdout(holdout))
    files = sorted(p for p in low.rglob("*") if media_kind(p) == "image" and p.relative_to(low).as_posix() not in held)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    crops = [
        augment_low(read_rgb(p), cfg.data, rng)["low_input"]
        for p in rng.choice(files, min(BN_IMAGES, len(files)), replace=False)
    ]
    return list(torch.stack(crops).contiguous(memory_format=torch.channels_last).split(batch))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint directories")
    parser.add_argument("--low", required=True, help="the run's data.low folder")
    parser.add_argument("--holdout", required=True, help="the run's hold-out list (never measured on)")
    args = parser.parse_args()
    for folder in map(Path, args.checkpoints):
        try:
            model, info = load_generator(folder / GENERATOR_FILE)
        except BadInputError as exc:
            print(f"{folder}: skipped: {exc.reason}", file=sys.stderr)
            continue
        if not info.meta.get("ema") or info.meta.get("bn_measured"):
            print(f"{folder.name}: left alone ({'not an average' if not info.meta.get('ema') else 'measured'})")
            continue
        config = yaml.safe_load((folder / CONFIG_FILE).read_text())
        batches = training_batches(Path(args.low), args.holdout, config, config["train"]["batch_size"])
        average = AveragedModel(model, use_buffers=True)
        shipped = averaged_generator(average, batches)
        save_generator(shipped, folder / GENERATOR_FILE, {**info.meta, "bn_measured": True})
        print(f"{folder.name}: BatchNorm statistics measured on {BN_IMAGES} training crops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
