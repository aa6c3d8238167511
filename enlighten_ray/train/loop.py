"""Distributed EnlightenGAN training on Ray Train (`TorchTrainer`), following Ray's own examples:
`train_func(config)` runs on every worker; `launch.py` builds the trainer on the driver.

Each worker: G, D_global and D_local each under DDP (`prepare_model`), one Adam and one LambdaLR
(`gan.lr_factor`, stepped per epoch) each, its share of the global batch from the `low` and
`normal` dataset shards. Every `train.checkpoint_every` epochs rank 0 writes a checkpoint directory:

    state.pt       nets, optimisers, schedulers, G's moving average, epoch (next to run), step,
                   per-rank RNG state
    config.yaml    the resolved config
    generator.pt   the standalone generator file (`enlighten-ray enhance --weights`): G's moving
                   average where train.ema_half_life_images is set, else G
    generator_raw.pt  G itself, beside its average (for comparing the two)
    samples.png    fixed validation low inputs (top row) and generator.pt's outputs (bottom row)

With `warm.images` set, the first steps are the warm start's (`step.warm_step`: G regresses to a
classical teacher, no discriminators), then the paper's step with the decaying teacher anchor.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchvision.utils import save_image

from enlighten_ray.config import CONFIG_FILE, Config, from_dict
from enlighten_ray.devices import autocast
from enlighten_ray.io.atomic import atomic_output
from enlighten_ray.models.generator import from_model_range
from enlighten_ray.models.weights import GENERATOR_FILE, save_generator
from enlighten_ray.train.ema import BN_IMAGES, averaged_generator, build_ema
from enlighten_ray.train.log import StepLog
from enlighten_ray.train.losses import EnlightenGANLoss
from enlighten_ray.train.shards import worker_batches
from enlighten_ray.train.step import (
    Nets,
    Optimizers,
    build_nets,
    build_optimizers,
    build_vgg,
    lr_factor,
    train_step,
    warm_step,
)
from enlighten_ray.train.transforms import image_to_model

__all__ = ["state_digest", "train_func"]

NET_NAMES = ("generator", "d_global", "d_local")  # the order of `Nets`, and the checkpoint's keys
STATE_FILE = "state.pt"
SAMPLES_FILE = "samples.png"
RAW_GENERATOR_FILE = "generator_raw.pt"  # G beside its moving average
METRICS_FILE = "metrics.json"  # the epoch's mean losses, learning rate and images/s


# -------------------------------------------------------------------------------------- on workers


def state_digest(states: list[dict[str, torch.Tensor]]) -> str:
    """sha256 over state dicts (parameters and buffers, bit for bit): equal digests = equal weights."""
    h = hashlib.sha256()
    for state in states:
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _sync_buffers(bare: Nets) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank. DDP broadcasts them at the
    start of each forward, so after an epoch's last forward the ranks' copies differ."""
    if _distributed():
        for net in bare:
            for buffer in net.buffers():
                dist.broadcast(buffer, src=0)


def _gather(obj: Any) -> list[Any]:
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _accumulate(sums: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> None:
    """Add a step's metrics to per-key (sum, steps): the warm start's and the anchor's terms are
    logged by some steps of an epoch only."""
    for k, v in metrics.items():
        sums[k] = sums.get(k, 0) + torch.stack([v.float(), torch.ones((), device=v.device)])


def _mean_over_ranks(sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each metric's mean over the steps (of all ranks) that logged it."""
    if not sums:
        return {}
    keys = sorted(sums)  # every rank takes the same steps, so holds the same keys
    total = torch.stack([sums[k] for k in keys])
    if _distributed():
        dist.all_reduce(total)
    return dict(zip(keys, (total[:, 0] / total[:, 1]).tolist()))


def _save_samples(bare: nn.Module, val: np.ndarray, path: Path, device: torch.device) -> None:
    """Top row: the fixed validation inputs; bottom row: G's outputs (eval mode, like inference)."""
    if not len(val):
        return
    inputs = torch.stack([image_to_model(v) for v in val]).to(device)
    bare.eval()
    try:
        with torch.no_grad():
            outputs = bare(inputs).clamp(-1, 1)
    finally:
        bare.train()
    grid = from_model_range(torch.cat([inputs, outputs])).cpu().float().div(255)
    with atomic_output(path) as tmp:
        save_image(grid, tmp, nrow=len(val), padding=2)


def _write_checkpoint(folder: Path, trainee: Trainee, info: dict[str, Any], shipped: nn.Module) -> None:
    state = {
        "nets": {name: net.state_dict() for name, net in zip(NET_NAMES, trainee.bare)},
        "optimizers": {name: opt.state_dict() for name, opt in zip(NET_NAMES, trainee.optimizers)},
        "schedulers": [s.state_dict() for s in trainee.schedulers],
        **info,
    }
    if trainee.ema is not None:
        state["ema"] = trainee.ema.state_dict()
    torch.save(state, folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(info["config"], sort_keys=False))
    (folder / METRICS_FILE).write_text(json.dumps(info["metrics"], indent=1))
    meta = {"epoch": info["epoch"], "step": info["step"], "vgg": info["metrics"]["vgg"]}
    if trainee.ema is not None:
        save_generator(shipped, folder / GENERATOR_FILE, {**meta, "ema": True, "bn_measured": bool(trainee.recent)})
        save_generator(trainee.bare.generator, folder / RAW_GENERATOR_FILE, meta)
    else:
        save_generator(trainee.bare.generator, folder / GENERATOR_FILE, meta)


def _load_checkpoint() -> dict[str, Any] | None:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    # Each rank its own copy: ranks sharing `as_directory()`'s download of a remote checkpoint read
    # a file another rank was already removing.
    with tempfile.TemporaryDirectory(prefix="enlighten-ray-resume-") as tmp:
        folder = checkpoint.to_directory(tmp)
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


@dataclass
class Trainee:
    """What a worker trains: the nets as `prepare_model` wrapped them (DDP when distributed), the
    same nets unwrapped (for state dicts and sampling), and their optimisers, schedulers and loss."""

    nets: Nets
    bare: Nets
    optimizers: Optimizers
    schedulers: list[Any]
    loss: EnlightenGANLoss
    ema: AveragedModel | None = None  # of the bare G
    recent: deque = field(default_factory=deque)  # G's latest training inputs, for the average's BatchNorm

    def shipped(self) -> nn.Module:
        """The generator checkpoints ship: the average (its BatchNorm measured) where there is one."""
        return averaged_generator(self.ema, self.recent) if self.ema is not None else self.bare.generator


def _build(cfg: Config, state: dict[str, Any] | None, init_generator: Any, device: torch.device) -> Trainee:
    """Nets (DDP-wrapped), optimisers and schedulers, restored from `state` when resuming."""
    torch.manual_seed(cfg.train.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    nets = build_nets(cfg)
    if state is not None:
        for name, net in zip(NET_NAMES, nets):
            net.load_state_dict(state["nets"][name])
    elif init_generator is not None:
        nets.generator.load_state_dict(ray.get(init_generator))
    if cfg.scaling.use_gpu and cfg.scaling.sync_bn:
        nets = nets._replace(generator=nn.SyncBatchNorm.convert_sync_batchnorm(nets.generator))
    wrapped = Nets(*(ray.train.torch.prepare_model(m) for m in nets))
    opts = build_optimizers(wrapped, cfg)
    o = cfg.optim
    schedule = functools.partial(lr_factor, epochs_constant=o.epochs_constant, epochs_decay=o.epochs_decay)
    scheds = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in opts]
    if state is not None:
        _restore_optimizers(state, opts, scheds, schedule, o.lr)
    loss = EnlightenGANLoss(*wrapped, build_vgg(cfg).to(device), cfg.loss)
    bare = Nets(*(getattr(m, "module", m) for m in wrapped))
    ema = build_ema(bare.generator, cfg.train.ema_half_life_images, cfg.train.batch_size)
    if ema is not None and state is not None and "ema" in state:
        ema.load_state_dict(state["ema"])
    per_worker = max(1, cfg.train.batch_size // ray.train.get_context().get_world_size())
    recent = deque(maxlen=max(1, BN_IMAGES // per_worker))
    return Trainee(wrapped, bare, opts, scheds, loss, ema, recent)


def _restore_optimizers(
    state: dict[str, Any], opts: Optimizers, scheds: list[Any], schedule: Callable[[int], float], lr: float
) -> None:
    """Optimiser and scheduler states from a checkpoint, with the current config's schedule: a
    resumed run may have changed optim.lr or the epochs."""
    for name, opt, sched, saved in zip(NET_NAMES, opts, scheds, state["schedulers"]):
        opt.load_state_dict(state["optimizers"][name])
        sched.load_state_dict(saved)
        if sched.base_lrs != [lr] * len(sched.base_lrs):
            if name == "generator" and ray.train.get_context().get_world_rank() == 0:
                print(f"enlighten-ray: resuming at optim.lr {lr:g}; the checkpoint trained at {sched.base_lrs[0]:g}")
            sched.base_lrs = [lr] * len(sched.base_lrs)
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base * schedule(sched.last_epoch)


def _quiet_report_log() -> None:
    """Ray Train (2.60) logs every report in full at INFO from a logger named after its file, so
    the run's LoggingConfig level, which filters `ray.train.*` loggers, does not reach it."""
    spec = importlib.util.find_spec("ray.train.v2._internal.execution.context")
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(logging.WARNING)


def train_func(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train worker loop. `config`: {"settings": the `Config` as a dict, "steps_per_epoch",
    "val": (N, S, S, 3) uint8 validation crops, "init_generator": ObjectRef of a state dict or None,
    "verbose": keep Ray Train's INFO logs}."""
    settings = from_dict(config["settings"])
    if not config.get("verbose"):
        _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    state = _load_checkpoint()
    trainee = _build(settings, state, config.get("init_generator"), device)
    start, step = (state["epoch"], state["step"]) if state else (0, 0)

    # Patch corners for the local D: a per-rank stream, restored on resume with the same world size.
    patches = torch.Generator().manual_seed(settings.train.seed * 1009 + rank)
    if state and len(state["rng"]["patches"]) == world:
        patches.set_state(state["rng"]["patches"][rank])
        torch.set_rng_state(state["rng"]["torch"][rank])
    batch_size = settings.train.batch_size
    log = StepLog(settings.epochs, config.get("steps_per_epoch", 0), batch_size, step, enabled=rank == 0)
    precision = autocast(device, settings.scaling.precision)

    summary: dict[str, Any] = {}
    for epoch in range(start, settings.epochs):
        sums: dict[str, torch.Tensor] = {}
        count, started = 0, time.perf_counter()
        for batch in worker_batches(batch_size // world):
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
            metrics = _step(trainee, batch, precision, patches, settings, step * batch_size)
            step, count = step + 1, count + 1
            _accumulate(sums, metrics)
            if step % settings.train.log_every == 0:  # every rank takes the same number of steps
                values = {k: float(v) for k, v in metrics.items()}
                log(epoch + 1, step, values)
                ray.train.report({"epoch": epoch + 1, "step": step, **values})
        lr = trainee.optimizers.generator.param_groups[0]["lr"]  # the rate this epoch trained with
        for sched in trainee.schedulers:
            sched.step()
        # Epoch means over all ranks. `epoch` is 1-based in all reports (and = epochs done here).
        summary = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "images_per_s": count * batch_size / (time.perf_counter() - started),
            "vgg": {"source": trainee.loss.vgg.source, "file": settings.loss.vgg_weights},
            **_mean_over_ranks(sums),
        }
        if (epoch + 1) % settings.train.checkpoint_every == 0 or epoch + 1 == settings.epochs:
            _checkpoint(config, trainee, summary, patches, rank, device)
        else:
            ray.train.report(summary)
    return summary


def _step(
    trainee: Trainee,
    batch: dict[str, torch.Tensor],
    precision: Any,
    patches: torch.Generator,
    cfg: Config,
    images_seen: int,
) -> dict[str, torch.Tensor]:
    """The warm start's step while its images last, then the paper's (with the decaying anchor;
    G frozen while the Ds warm up); the moving average follows G after either."""
    if images_seen < cfg.warm.images:
        metrics = warm_step(trainee.nets.generator, trainee.optimizers.generator, batch, precision)
    else:
        anchor = cfg.warm.anchor(images_seen)
        warmed = images_seen >= cfg.train.d_warmup_images
        metrics = train_step(
            trainee.nets, trainee.optimizers, trainee.loss, batch, precision, patches, anchor, train_generator=warmed
        )
    if trainee.ema is not None:
        trainee.ema.update_parameters(trainee.bare.generator)
        prior = batch.get("prior")
        trainee.recent.append(batch["low_input"] if prior is None else (batch["low_input"], prior))
    return metrics


def _checkpoint(
    config: dict[str, Any],
    trainee: Trainee,
    summary: dict[str, Any],
    patches: torch.Generator,
    rank: int,
    device: torch.device,
) -> None:
    """Every rank: equalise buffers, gather digests and RNG states, report (a barrier); rank 0
    alone writes the directory and passes it to `report`."""
    _sync_buffers(trainee.bare)
    digests = _gather(state_digest([m.state_dict() for m in trainee.bare]))
    rng = {"patches": _gather(patches.get_state()), "torch": _gather(torch.get_rng_state())}
    metrics = {**summary, "rank_digests": digests}
    with tempfile.TemporaryDirectory(prefix="enlighten-ray-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            info = {
                "epoch": summary["epoch"],
                "step": summary["step"],
                "rng": rng,
                "config": config["settings"],
                "metrics": summary,
            }
            shipped = trainee.shipped()
            _write_checkpoint(Path(tmp), trainee, info, shipped)
            _save_samples(shipped, config["val"], Path(tmp) / SAMPLES_FILE, device)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
