"""Training-step throughput of one worker at the paper's model and crop size, and what Ray Data
ingestion adds over batches already in memory. Prints one JSON object.

    python bench/train_step.py                    # synthetic 480x640 JPEGs, batch 2, 3 timed steps
    python bench/train_step.py --low $ENLIGHTEN_DATA/train/low --normal $ENLIGHTEN_DATA/train/normal

Timings, all on this process's device (GPU when one is visible, with bf16 autocast):
- `step_s_in_memory`: `gan.train_step` on batches prepared before timing (the model alone);
- `ray_wait_s_per_step`: in a loop fed by the training datasets' `iter_torch_batches` (decode,
  crop and augmentation in Ray Data CPU tasks, streamed and prefetched as in training), the time
  each step waits for its batch: what Ray ingestion adds over in-memory tensors. The same loop's
  compute time is `step_s_ray_data_compute` (above `step_s_in_memory` where Ray Data's tasks
  share the CPU cores with the model, as on a small machine);
- `ingest_images_per_s`: the datasets alone, no model (what the CPU side can supply).
The VGG is untrained ("random"): same cost as the ImageNet one, no download.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ray
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.config import load_config  # noqa: E402
from enlighten_ray.examples import write_example_images  # noqa: E402
from enlighten_ray.train.data import training_datasets  # noqa: E402
from enlighten_ray.train.index import index_domain  # noqa: E402
from enlighten_ray.train.losses import EnlightenGANLoss  # noqa: E402
from enlighten_ray.train.step import build_nets, build_optimizers, build_vgg, train_step  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--low", help="low-light images (default: synthetic)")
    p.add_argument("--normal", help="well-exposed images (default: synthetic)")
    p.add_argument("--batch", type=int, default=2, help="batch per worker (default: 2)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (default: 3)")
    p.add_argument("--crop", type=int, default=320, help="crop size (default: 320, the paper's)")
    return p.parse_args()


def timed_steps(step: Callable, batches: Iterator, count: int, sync: Callable) -> tuple[float, float]:
    """(seconds waiting for a batch, seconds computing) per step, over `count` steps after a
    warm-up step (which also starts the datasets' execution)."""
    it = iter(batches)
    step(next(it))
    sync()
    wait = compute = 0.0
    for _ in range(count):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        step(batch)
        sync()
        wait, compute = wait + t1 - t0, compute + time.perf_counter() - t1
    return wait / count, compute / count


def domains(args: argparse.Namespace, tmp: str) -> tuple[str, str]:
    """--low and --normal, or synthetic scenes the size of the paper's training photos."""
    if args.low and args.normal:
        return args.low, args.normal
    write_example_images(f"{tmp}/low", 12, night=True, size=(480, 640))
    write_example_images(f"{tmp}/normal", 12, night=False, size=(480, 640), seed=1)
    return f"{tmp}/low", f"{tmp}/normal"


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        low, normal = domains(args, tmp)
        cfg = load_config(
            None,
            [f"data.low={low}", f"data.normal={normal}", f"data.crop_size={args.crop}", "loss.vgg_weights=random",
             f"train.batch_size={args.batch}", f"train.max_steps_per_epoch={args.steps + 1}"],
        )  # fmt: skip
        ray.init(include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        run_dir = str(Path(tmp) / "run")
        scans = tuple(index_domain(getattr(cfg.data, r), cfg.data, r, run_dir) for r in ("low", "normal"))

        nets = build_nets(cfg)
        for net in (nets.generator, nets.d_global, nets.d_local):
            net.to(device)
        opts = build_optimizers(nets, cfg)
        loss = EnlightenGANLoss(nets.generator, nets.d_global, nets.d_local, build_vgg(cfg).to(device), cfg.loss)
        bf16 = device.type == "cuda"
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def step(batch: dict[str, torch.Tensor]) -> None:
            train_step(nets, opts, loss, {k: v.to(device, non_blocking=True) for k, v in batch.items()}, autocast())

        def ray_batches() -> Iterator[dict[str, torch.Tensor]]:
            ds = training_datasets(*scans, cfg)
            low_it = ds["low"].iter_torch_batches(batch_size=args.batch, drop_last=True)
            normal_it = ds["normal"].iter_torch_batches(batch_size=args.batch, drop_last=True)
            for lb, nb in zip(low_it, normal_it):
                yield {"low": lb["low"], "low_input": lb["low_input"], "normal": nb["normal"]}

        fixed = next(ray_batches())
        _, in_memory = timed_steps(step, iter(lambda: fixed, None), args.steps, sync)
        ray_wait, ray_compute = timed_steps(step, ray_batches(), args.steps, sync)
        start = time.perf_counter()
        images = sum(b["low"].shape[0] for b in ray_batches())
        ingest = images / (time.perf_counter() - start)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "precision": "bf16" if bf16 else "fp32",
                "torch_threads": torch.get_num_threads(),
                "crop": args.crop,
                "batch": args.batch,
                "model_width": cfg.model.width,
                "steps": args.steps,
                "step_s_in_memory": round(in_memory, 4),
                "images_per_s": round(args.batch / in_memory, 3),
                "ray_wait_s_per_step": round(ray_wait, 4),
                "step_s_ray_data_compute": round(ray_compute, 4),
                "ingest_images_per_s": round(ingest, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
