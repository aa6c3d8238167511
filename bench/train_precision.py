"""Training-step images/s in fp32 and bf16 on one device, at the paper's crop and a smaller one, and
how a step splits between G, the two Ds and the VGG. Batches are in memory (the model alone; see
bench/train_step.py for what Ray Data adds). Prints one JSON object.

    python bench/train_precision.py [--crops 320 128] [--batch 4] [--steps 3] [--vgg-weights FILE]

bf16 is measured only where the device runs it natively (GPUs, CPUs with AVX512-BF16/AMX): on an
AVX2-only CPU bf16 autocast ran the generator ~350x slower than fp32, so it is reported as skipped.
The split times each part alone (forward + backward) on the same batch: `generator` (G), `vgg`
(the self feature preserving loss), `d_global` and `d_local` (their D steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.config import load_config  # noqa: E402
from enlighten_ray.devices import autocast, cpu_name, native_bf16  # noqa: E402
from enlighten_ray.train.losses import EnlightenGANLoss, crop_patches, sfp_loss  # noqa: E402
from enlighten_ray.train.step import build_nets, build_optimizers, build_vgg, train_step  # noqa: E402


def seconds(fn: Callable[[], object], steps: int, device: torch.device) -> float:
    fn()  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def measure(crop: int, precision: str, args: argparse.Namespace, device: torch.device) -> dict:
    cfg = load_config(None, [f"data.crop_size={crop}", f"loss.vgg_weights={args.vgg_weights}"])
    torch.manual_seed(0)
    nets = build_nets(cfg)
    for net in (nets.generator, nets.d_global, nets.d_local):
        net.to(device)
    opts = build_optimizers(nets, cfg)
    loss = EnlightenGANLoss(nets.generator, nets.d_global, nets.d_local, build_vgg(cfg).to(device), cfg.loss)
    shape = (args.batch, 3, crop, crop)
    batch = {k: (torch.rand(shape, device=device) * 2 - 1).contiguous(memory_format=torch.channels_last)
             for k in ("low", "low_input", "normal")}  # fmt: skip
    ctx = lambda: autocast(device, precision)  # noqa: E731
    offsets = [(0, 0)] * (1 + cfg.loss.num_patches)

    def step() -> None:
        train_step(nets, opts, loss, batch, ctx())

    def g() -> None:
        with ctx():
            out = nets.generator(batch["low_input"])
        out.float().mean().backward()

    def vgg() -> None:
        fake = batch["low"].clone().requires_grad_(True)
        with ctx():
            size = cfg.loss.patch_size
            value = sfp_loss(loss.vgg, fake, batch["low"]) + sfp_loss(
                loss.vgg, crop_patches(fake, offsets, size), crop_patches(batch["low"], offsets, size)
            )
        value.backward()

    def d_global() -> None:
        with ctx():
            value = loss.d_global_loss(batch["normal"], batch["low"])
        value.backward()

    def d_local() -> None:
        with ctx():
            value = loss.d_local_loss(batch["normal"], batch["low"], offsets)
        value.backward()

    step_s = seconds(step, args.steps, device)
    split = {name: round(seconds(fn, args.steps, device), 3) for name, fn in
             (("generator", g), ("vgg", vgg), ("d_global", d_global), ("d_local", d_local))}  # fmt: skip
    return {"step_s": round(step_s, 3), "images_per_s": round(args.batch / step_s, 3), "split_s": split}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", type=int, nargs="+", default=[320, 128])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--vgg-weights", default="random", help="VGG file (same cost as random; default: random)")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict = {}
    for crop in args.crops:
        results[str(crop)] = {"fp32": measure(crop, "fp32", args, device)}
        if native_bf16(device):
            results[str(crop)]["bf16"] = measure(crop, "bf16", args, device)
            results[str(crop)]["bf16_speedup"] = round(
                results[str(crop)]["bf16"]["images_per_s"] / results[str(crop)]["fp32"]["images_per_s"], 2
            )
        else:
            results[str(crop)]["bf16"] = "skipped: no native bf16 on this device (AVX512-BF16/AMX)"
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()
    print(json.dumps({"device": name, "torch_threads": torch.get_num_threads(), "batch": args.batch,
                      "steps": args.steps, "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
