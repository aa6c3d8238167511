"""The training demo on a built-in example: draw small night/day street scenes and a dark clip,
run the smoke training on Ray Train (2 CPU workers), then enhance the clip and the night images
with the generator that training produced.

    python jobs/train_demo.py [--out demo-train]

The smoke model trains for seconds, so it shows the pipeline, not a good enhancement: for that,
see `python jobs/demo.py`, which uses the model that ships with the package.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from enlighten_ray.config import load_config  # noqa: E402
from enlighten_ray.examples import write_dark_clip, write_example_images  # noqa: E402
from enlighten_ray.infer.enhancer import Enhancer  # noqa: E402
from enlighten_ray.infer.local import enhance_path  # noqa: E402
from enlighten_ray.io.images import read_image  # noqa: E402
from enlighten_ray.io.video import VideoReader  # noqa: E402
from enlighten_ray.models.weights import find_generator_file  # noqa: E402
from enlighten_ray.train.launch import fit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def mean_brightness(path: Path) -> float:
    if path.suffix == ".mp4":
        with VideoReader(path) as reader:
            return float(np.mean([f.rgb.mean() for f in reader.frames()]))
    return float(np.mean([read_image(p)[0].mean() for p in sorted(path.glob("*.jpg"))]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo-train", help="folder for the example data, the run and the outputs")
    args = parser.parse_args()
    out = Path(args.out).resolve()

    low = out / "data" / "low"
    normal = out / "data" / "normal"
    write_example_images(low, 16, night=True, seed=1)
    write_example_images(normal, 16, night=False, seed=2)
    clip = write_dark_clip(out / "night_drive.mp4", size=(96, 128))
    print(f"# example data in {out / 'data'}, dark clip {clip}")

    # A run name per invocation: the same name would resume (and here, find finished) the last run.
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    overrides = [f"data.low={low}", f"data.normal={normal}", f"run.storage_path={out / 'runs'}", f"run.name={name}"]
    result = fit(load_config(ROOT / "configs" / "smoke.yaml", overrides))
    if result.error is not None or result.checkpoint is None:
        print(f"demo: training failed: {result.error}", file=sys.stderr)
        return 1
    weights = find_generator_file(result.checkpoint.path)
    print(f"# trained generator: {weights}")

    enhancer = Enhancer.from_weights(weights, device="cpu")
    bright = out / "night_drive_enhanced.mp4"
    enhance_path(clip, bright, enhancer, overwrite=True, progress=False)
    enhance_path(low, out / "enhanced", enhancer, overwrite=True, progress=False)
    print(f"# enhanced clip: {bright}  (mean brightness {mean_brightness(clip):.1f} -> {mean_brightness(bright):.1f})")
    print(f"# enhanced images: {out / 'enhanced'}")
    print("# (the smoke model trains for seconds: it shows the pipeline, not a good enhancement)")
    print(f"# next: enlighten-ray info {weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
