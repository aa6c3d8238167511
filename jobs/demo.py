"""The README's main job on a built-in example: draw small night/day street scenes and a dark
clip, run the smoke training on Ray Train (2 CPU workers), then enhance the clip and the night
images with the generator that training produced.

    python jobs/demo.py [--out demo]

The smoke model trains for seconds, so it shows the pipeline, not a good enhancement.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from enlighten_ray.config import load_config
from enlighten_ray.enhance import Enhancer, enhance_path
from enlighten_ray.examples import scene, write_example_images
from enlighten_ray.images import read_image
from enlighten_ray.train import fit
from enlighten_ray.video import VideoInfo, VideoReader, VideoWriter
from enlighten_ray.weights import find_generator_file

ROOT = Path(__file__).resolve().parent.parent


def write_dark_clip(path: Path, frames: int = 36, size: tuple[int, int] = (96, 128), fps: int = 12) -> Path:
    """A few seconds of a night drive: the lamps and buildings slide past."""
    info = VideoInfo(
        path=str(path), codec="h264", width=size[1], height=size[0], pix_fmt="yuv420p",
        time_base=Fraction(1, fps), rate=Fraction(fps), start_pts=0, duration=frames, frame_count=frames,
    )  # fmt: skip
    with VideoWriter(path, info) as writer:
        for i in range(frames):
            writer.write(scene(*size, np.random.default_rng(7), night=True, phase=i / frames / 2), pts=i)
        writer.end_pts = frames
    return path


def mean_brightness(path: Path) -> float:
    if path.suffix == ".mp4":
        with VideoReader(path) as reader:
            return float(np.mean([f.rgb.mean() for f in reader.frames()]))
    return float(np.mean([read_image(p)[0].mean() for p in sorted(path.glob("*.jpg"))]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo", help="folder for the example data, the run and the outputs")
    args = parser.parse_args()
    out = Path(args.out).resolve()

    low = out / "data" / "low"
    normal = out / "data" / "normal"
    write_example_images(low, 16, night=True, seed=1)
    write_example_images(normal, 16, night=False, seed=2)
    clip = write_dark_clip(out / "night_drive.mp4")
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
