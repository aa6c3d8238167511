"""The README's main job: brighten a night clip with the model that ships with the package.

    python jobs/demo.py [--out demo] [--input night.mp4] [--seconds 2]

The clip is the first seconds of `$ENLIGHTEN_DATA/video/dashcam_night.mp4` (real night dashcam)
when ENLIGHTEN_DATA is set, else a dark street clip the project draws itself. Writes
OUT/<clip>_before_after.mp4 (input | enhanced, side by side) and OUT/<clip>_before_after.png
(one frame pair), and prints frames, fps and the mean brightness before -> after.
Training is its own demo: `python jobs/train_demo.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from enlighten_ray.examples import write_dark_clip  # noqa: E402
from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.infer.local import enhance_video  # noqa: E402
from enlighten_ray.io.encode import VideoWriter  # noqa: E402
from enlighten_ray.io.video import VideoReader  # noqa: E402
from enlighten_ray.models.generator import LUMA  # noqa: E402


def first_seconds(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of `src`, re-encoded, video only: a demo-sized piece of a long clip."""
    with VideoReader(src) as reader:
        info = reader.info
        end = info.start_pts + round(seconds / info.time_base)
        with VideoWriter(dst, info) as writer:
            for frame in reader.frames(end_pts=end):
                writer.write(frame.rgb, frame.pts)
            writer.end_pts = min(end, reader.end_pts or end)
    return dst


def halves(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean RGB of the left (input) and right (enhanced) halves over all frames, and the frame count."""
    left, right, count = np.zeros(3), np.zeros(3), 0
    with VideoReader(path) as reader:
        for frame in reader.frames():
            w = frame.rgb.shape[1] // 2
            left += frame.rgb[:, :w].reshape(-1, 3).mean(axis=0)
            right += frame.rgb[:, w:].reshape(-1, 3).mean(axis=0)
            count += 1
    return left / max(count, 1), right / max(count, 1), count


def middle_frame(path: Path) -> np.ndarray:
    with VideoReader(path) as reader:
        frames = [f.rgb for f in reader.frames()]
    return frames[len(frames) // 2]


def describe(rgb: np.ndarray) -> str:
    return f"luma {float(rgb @ np.array(LUMA)):5.1f} (R/G/B {rgb[0]:.0f}/{rgb[1]:.0f}/{rgb[2]:.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo", help="folder for the outputs")
    parser.add_argument("--input", help="a night video (default: the dashcam clip or a drawn one, see above)")
    parser.add_argument("--seconds", type=float, default=2.0, help="enhance this many seconds of the clip")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    data = os.environ.get("ENLIGHTEN_DATA")
    source = Path(args.input) if args.input else Path(data or "") / "video" / "dashcam_night.mp4"
    if args.input or (data and source.is_file()):
        clip = first_seconds(source, out / f"{source.stem}_first{args.seconds:g}s.mp4", args.seconds)
    else:
        clip = write_dark_clip(out / "drawn_night_drive.mp4")
    print(f"# night clip: {clip}")

    enhancer = Enhancer.from_weights(None)  # the shipped model
    print(f"# model: the shipped generator, {enhancer.precision} on {enhancer.device}")
    pair = out / f"{clip.stem}_before_after.mp4"
    started = time.perf_counter()
    enhance_video(clip, pair, enhancer, side_by_side=True)
    seconds = time.perf_counter() - started

    before, after, frames = halves(pair)
    png = pair.with_suffix(".png")
    Image.fromarray(middle_frame(pair)).save(png)
    print(f"# {frames} frames in {seconds:.1f} s ({frames / seconds:.2f} fps)")
    print(f"# before: {describe(before)}")
    print(f"# after:  {describe(after)}")
    print(f"# side by side (input | enhanced): {pair}")
    print(f"# one frame pair: {png}")
    print(f"# next: enlighten-ray enhance {source if source.is_file() else clip} bright.mp4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
