"""What the Retinex prior (`model.prior: lime`) costs per frame, and what a half-width generator
saves: generator-only seconds per 640x360 frame (through `Enhancer`, as `enhance` runs it: auto
precision, batch 1, eager or compiled) for width 32 and 16, without and with the prior, all in one
run. Prints JSON. Goal: the prior adds <= 15 % to the generator's time per frame.

    python bench/prior_cost.py --device cpu --frames 6
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.models.generator import EnlightenGenerator


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def seconds_per_frame(enhancer: Enhancer, frames: np.ndarray) -> float:
    enhancer(frames[0])  # warm-up (and the compile, where on)
    started = time.perf_counter()
    for frame in frames:
        enhancer(frame)
    return (time.perf_counter() - started) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", default="640x360", help="WxH")
    parser.add_argument("--compile", default="off", choices=("off", "on"))
    args = parser.parse_args()
    w, h = map(int, args.size.split("x"))
    frames = np.random.default_rng(0).integers(0, 60, (args.frames, h, w, 3), dtype=np.uint8)
    rows = {}
    for width in (32, 16):
        for prior in ("none", "lime"):
            torch.manual_seed(0)
            model = EnlightenGenerator(width=width, prior=prior).eval()
            enhancer = Enhancer(model, device=args.device, compile=args.compile)
            enhancer.prepare(None)
            rows[f"width {width}, prior {prior}"] = {
                "s_per_frame": seconds_per_frame(enhancer, frames),
                "precision": enhancer.precision,
            }
    cost = {width: rows[f"width {width}, prior lime"]["s_per_frame"] for width in (32, 16)}
    base = {width: rows[f"width {width}, prior none"]["s_per_frame"] for width in (32, 16)}
    out = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "device": args.device,
        "size": args.size,
        "compile": args.compile,
        "rows": rows,
        "prior_overhead": {str(width): cost[width] / base[width] - 1 for width in (32, 16)},
        "half_width_speedup_with_prior": cost[32] / cost[16],
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
