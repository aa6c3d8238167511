"""The sheet a model is looked at before it ships: 8 test images and 2 frames of the night dashcam,
input | the model | LIME-style, one row each.

    python jobs/release_sheet.py --data $ENLIGHTEN_DATA -o docs/sheet_test.png [--weights generator.pt]

The test images only show the model: they never select it (`jobs/release_model.py` does, on
held-out training images and the video).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from enlighten_ray.classical import lime  # noqa: E402
from enlighten_ray.eval.curve import video_frames  # noqa: E402
from enlighten_ray.eval.sheet import make_sheet  # noqa: E402
from enlighten_ray.eval.table import read_rgb  # noqa: E402
from enlighten_ray.infer.enhancer import Enhancer  # noqa: E402

# Dark skies, lamps and faces: where casts, blotches and halos show.
TEST_IMAGES = (
    "MEF/Balloons.png",
    "MEF/Tower.png",
    "MEF/Venice.png",
    "LIME/1.png",
    "LIME/7.png",
    "NPE/Daybreak&Nightfall  (0).jpg",
    "VV/P1000333.jpg",
    "DICM/05.jpg",
)
DASHCAM_FRAMES = (0, 45)  # of video/dashcam_night.mp4


def collect(data: Path) -> dict[str, np.ndarray]:
    """Row name -> uint8 RGB input."""
    rows = {name.replace("/", "_").replace(" ", "_"): read_rgb(data / "eval" / name) for name in TEST_IMAGES}
    frames = video_frames(data / "video" / "dashcam_night.mp4", max(DASHCAM_FRAMES) + 1)
    rows |= {f"zz_dashcam_{i:03d}": frames[i] for i in DASHCAM_FRAMES}  # the last rows
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the shared data folder ($ENLIGHTEN_DATA)")
    parser.add_argument("-o", "--output", required=True, action="append", help="sheet .png/.jpg and/or .html")
    parser.add_argument("--weights", help="the model to show (default: the shipped one)")
    parser.add_argument("--height", type=int, default=200, help="thumbnail height")
    args = parser.parse_args()

    enhancer = Enhancer.from_weights(args.weights, device="cpu")
    with tempfile.TemporaryDirectory(prefix="enlighten-ray-sheet-") as tmp:
        columns = {name: Path(tmp) / name for name in ("input", "ours", "LIME-style")}
        for folder in columns.values():
            folder.mkdir()
        for name, rgb in collect(Path(args.data)).items():
            Image.fromarray(rgb).save(columns["input"] / f"{name}.png")
            Image.fromarray(enhancer(rgb)).save(columns["ours"] / f"{name}.png")
            Image.fromarray(lime(rgb)).save(columns["LIME-style"] / f"{name}.png")
        w, h = make_sheet(columns["input"], [columns["ours"], columns["LIME-style"]], args.output, args.height)
    print(f"sheet {w}x{h}: {', '.join(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
