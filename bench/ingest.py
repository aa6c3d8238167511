"""Training ingestion at fleet scale: a synthetic fleet of night videos plus photos through the
index scan (`train.index`) and one epoch of training batches (`train.data`), on a local Ray.
Prints one JSON object.

    python bench/ingest.py                              # 40 videos x 60 s at 640x360 + 2,000 images
    python bench/ingest.py --videos 8 --seconds 30 --images 500 --epoch-rows 256

- `scan`: seconds and index rows/s (video frames sampled at data.video_fps, 1/s by default; with
  `--max-mean` the low domain's darkness filter decodes the sampled frames in keyframe ranges);
- `epoch`: training batches/s and images/s of the low domain's first `--epoch-rows` rows (each
  an image read from its bytes or a video frame found by seeking to the keyframe before it);
- `object_store`: the peak of Ray's object-store use while each phase ran (sampled from Ray's
  memory summary every 0.2 s), in total and per indexed row. The index holds a few numbers per
  item, never pixels, so it stays far below a PNG per frame.

The fleet is one encoded clip and one set of photos, copied: the scan and decode costs are those
of distinct files of that size.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.config import load_config  # noqa: E402
from enlighten_ray.devices import cpu_name  # noqa: E402
from enlighten_ray.examples import write_example_images  # noqa: E402
from enlighten_ray.train.data import training_datasets  # noqa: E402
from enlighten_ray.train.index import index_domain  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--seconds", type=int, default=60, help="length of each video (25 fps, 640x360)")
    p.add_argument("--images", type=int, default=2000, help="640x360 JPEG photos beside the videos")
    p.add_argument("--epoch-rows", type=int, default=512, help="rows of the timed epoch (0: a whole epoch)")
    p.add_argument("--max-mean", type=float, default=0.0, help="data.max_mean for the scan (0: no decode)")
    p.add_argument("--num-cpus", type=int, default=2)
    return p.parse_args()


def write_clip(path: Path, seconds: int, fps: int = 25) -> None:
    """A dark moving gradient, H.264 with a keyframe every 2 s (as dashcams write)."""
    h, w = 360, 640
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(2 * fps)})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(seconds * fps):
            base = (xx + 3 * i) % w / w * 40 + yy / h * 20
            rgb = np.repeat(base[..., None], 3, -1).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))


def make_fleet(root: Path, args: argparse.Namespace) -> Path:
    fleet = root / "fleet"
    (fleet / "cams").mkdir(parents=True)
    clip = root / "clip.mp4"
    write_clip(clip, args.seconds)
    for i in range(args.videos):
        shutil.copyfile(clip, fleet / "cams" / f"cam{i:03d}.mp4")
    photos = root / "photos"
    write_example_images(str(photos), min(args.images, 50), night=True, size=(360, 640))
    sources = sorted(photos.iterdir())
    (fleet / "photos").mkdir()
    for i in range(args.images):
        shutil.copyfile(sources[i % len(sources)], fleet / "photos" / f"p{i:05d}{sources[0].suffix}")
    return fleet


class StorePeak:
    """The peak of Ray's object-store use while the block runs, from Ray's memory summary."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()

    def _used_mib(self) -> float:
        from ray._private.internal_api import memory_summary

        text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
        found = re.search(r"Plasma memory usage (\d+(?:\.\d+)?) MiB", text)
        return float(found[1]) if found else 0.0

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._used_mib())
            self._stop.wait(0.2)

    def __enter__(self) -> StorePeak:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self._used_mib())


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fleet = make_fleet(Path(tmp), args)
        made_s = time.perf_counter() - t0
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = args.epoch_rows or 0
        cfg = load_config(None, [f"data.max_mean={args.max_mean}", f"train.max_steps_per_epoch={rows // 32}"])

        with StorePeak() as scan_peak:
            t0 = time.perf_counter()
            index = index_domain(str(fleet), cfg.data, "low", f"{tmp}/run")
            scan_s = time.perf_counter() - t0
        datasets = training_datasets(index, index, cfg)
        with StorePeak() as epoch_peak:
            t0 = time.perf_counter()
            batches = images = 0
            for batch in datasets["low"].iter_batches(batch_size=cfg.train.batch_size, batch_format="numpy"):
                batches, images = batches + 1, images + len(batch["low"])
            epoch_s = time.perf_counter() - t0
        ray.shutdown()

    per_row = lambda mib: round(mib * 2**20 / max(index.count, 1), 1)  # noqa: E731
    print(json.dumps({
        "cpu": cpu_name(),
        "num_cpus": args.num_cpus,
        "fleet": {"videos": args.videos, "seconds": args.seconds, "images": args.images, "made_s": round(made_s, 1)},
        "scan": {"rows": index.count, "frames": index.frames, "images": index.images, "seconds": round(scan_s, 2),
                 "rows_per_s": round(index.count / scan_s, 1), "max_mean": args.max_mean},
        "epoch": {"batches": batches, "images": images, "batch_size": cfg.train.batch_size,
                  "seconds": round(epoch_s, 2), "batches_per_s": round(batches / epoch_s, 3),
                  "images_per_s": round(images / epoch_s, 2)},
        "object_store": {"scan_peak_mib": scan_peak.peak_mib, "epoch_peak_mib": epoch_peak.peak_mib,
                         "scan_peak_bytes_per_row": per_row(scan_peak.peak_mib),
                         "epoch_peak_bytes_per_row": per_row(epoch_peak.peak_mib)},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
