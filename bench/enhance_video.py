"""Generator-only fps on pre-decoded frames vs end-to-end fps (decode + model + encode + audio copy)
for the same clip, device and run; generator-only fps in fp32 eager beside --precision (default auto:
bf16 where the device runs it natively) and beside the torch.compile'd generator, with how many
pixels the compiled outputs keep within 1 level of eager's, and beside the previous CPU defaults (batch
4, eager) in the same run. Prints JSON. Goals: end-to-end >= 90% of generator-only; auto >= 3x fp32
where bf16 is native; compiled >= 1.3x eager; today's defaults >= 1.3x the previous ones.

    python bench/enhance_video.py --device cpu --width 4
    ENLIGHTEN_DATA=../shared/data python bench/enhance_video.py --device cuda --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.infer.local import enhance_video
from enlighten_ray.infer.settings import PRECISIONS, EnhanceSettings
from enlighten_ray.io.encode import EncoderOptions
from enlighten_ray.io.video import VideoReader
from enlighten_ray.models import EnlightenGenerator
from enlighten_ray.models.weights import load_generator


def synthetic_clip(path: Path, frames: int, width: int = 640, height: int = 360) -> Path:
    """A 30 fps H.264 clip of moving noisy gradients (compresses and decodes like real footage)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            base = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, np.full_like(xx, 40)], -1) * 0.3
            rgb = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def trimmed_copy(src: Path, dst: Path, seconds: float) -> Path:
    """The first `seconds` of a video, all streams copied packet for packet."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux(*[inp.streams[i] for i in streams]):
            if packet.size and packet.dts is not None and packet.dts * packet.time_base < Fraction(seconds):
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generator_only_fps(enhancer: Enhancer, frames: list[np.ndarray]) -> float:
    """uint8 batches in, uint8 batches out (the same Enhancer call the pipeline makes), no I/O."""
    b = enhancer.batch_size
    batches = [np.stack(frames[i : i + b]) for i in range(0, len(frames), b)]
    enhancer(batches[0])  # warm-up: kernels, allocator
    sync(enhancer.device)
    start = time.perf_counter()
    for batch in batches:
        enhancer(batch)
    sync(enhancer.device)
    return len(frames) / (time.perf_counter() - start)


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def compiled_fps(model: torch.nn.Module, settings: EnhanceSettings, device: str, frames: list[np.ndarray]) -> dict:
    """The compiled generator: compile time (its first batch), fps after it, agreement with eager."""
    eager = Enhancer(model, settings, device=device, compile="off")
    compiled = Enhancer(model, settings, device=device, compile="on")
    compiled.prepare(len(frames))
    batch = np.stack(frames[: compiled.batch_size])
    start = time.perf_counter()
    out = compiled(batch)
    compile_s = time.perf_counter() - start
    diff = np.abs(out.astype(np.int16) - eager(batch).astype(np.int16))
    return {
        "enhancer": compiled,
        "compile_seconds": round(compile_s, 1),
        "fps": generator_only_fps(compiled, frames),
        "within_1_level": float((diff <= 1).mean()),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="generator weights (default: random init at --width)")
    parser.add_argument("--width", type=int, default=32, help="generator width without --weights (32 = the paper)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N]")
    parser.add_argument("--precision", default=EnhanceSettings().precision, choices=PRECISIONS)
    parser.add_argument("--batch-size", type=int, default=EnhanceSettings().batch_size)
    parser.add_argument("--baseline-batch-size", type=int, default=4, help="the previous CPU default, run eager")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length")
    parser.add_argument("--preset", default=None, help="encoder preset (default: libx264's medium)")
    return parser.parse_args()


def bench_clip(tmp: Path, seconds: float) -> tuple[Path, str]:
    """The night dashcam's first `seconds` when ENLIGHTEN_DATA has it, else a synthetic clip."""
    data = os.environ.get("ENLIGHTEN_DATA")
    real = Path(data) / "video" / "dashcam_night.mp4" if data else None
    if real is not None and real.is_file():
        return trimmed_copy(real, tmp / "clip.mp4", seconds), str(real)
    return synthetic_clip(tmp / "clip.mp4", round(30 * seconds)), "synthetic 640x360"


def bench_model(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The generator from --weights, or a seeded random one at --width; and how to name it."""
    if args.weights:
        model, info = load_generator(args.weights)
        return model, {"weights": info.path, "width": info.config["width"]}
    torch.manual_seed(0)
    return EnlightenGenerator(width=args.width), {"weights": None, "width": args.width}


def main() -> None:
    args = parse_args()
    model, model_desc = bench_model(args)
    settings = EnhanceSettings(precision=args.precision, batch_size=args.batch_size, compile="off")
    enhancer = Enhancer(model, settings, device=args.device)

    with tempfile.TemporaryDirectory() as tmp:
        clip, source = bench_clip(Path(tmp), args.seconds)
        with VideoReader(clip) as reader:
            frames = [f.rgb for f in reader.frames()]
        gen_fps = generator_only_fps(enhancer, frames)
        fp32 = (
            enhancer
            if enhancer.precision == "fp32"
            else Enhancer(model, settings, device=args.device, precision="fp32")
        )
        fp32_fps = gen_fps if fp32 is enhancer else generator_only_fps(fp32, frames)
        comp = compiled_fps(model, settings, args.device, frames)
        baseline = Enhancer(model, settings, device=args.device, batch_size=args.baseline_batch_size)
        baseline_fps = generator_only_fps(baseline, frames)

        start = time.perf_counter()  # end to end with the compiled generator (compiled above)
        options = EncoderOptions(preset=args.preset)
        n = enhance_video(clip, Path(tmp) / "out.mp4", comp["enhancer"], options, progress=False)
        sync(enhancer.device)
        e2e_fps = n / (time.perf_counter() - start)

    print(
        json.dumps(
            {
                "clip": source,
                "frames": n,
                "size": list(frames[0].shape[1::-1]),
                "device": str(enhancer.device),
                "cpu": cpu_name(),
                "torch_threads": torch.get_num_threads(),
                "precision": enhancer.precision,
                "batch_size": enhancer.batch_size,
                **model_desc,
                "encoder": {"codec": "libx264", "crf": 18, "preset": args.preset or "medium"},
                "fp32_generator_only_fps": round(fp32_fps, 2),
                "generator_only_fps": round(gen_fps, 2),
                "speedup_over_fp32": round(gen_fps / fp32_fps, 2),
                "compiled_generator_only_fps": round(comp["fps"], 2),
                "compile_speedup": round(comp["fps"] / gen_fps, 2),
                "compile_seconds": comp["compile_seconds"],
                "compiled_pixels_within_1_level": round(comp["within_1_level"], 5),
                "baseline": f"batch {baseline.batch_size}, eager, {baseline.precision}",
                "baseline_generator_only_fps": round(baseline_fps, 2),
                "compiled_speedup_over_baseline": round(comp["fps"] / baseline_fps, 2),
                "end_to_end_fps": round(e2e_fps, 2),
                "end_to_end_ratio": round(e2e_fps / comp["fps"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
