"""Distributed EnlightenGAN training on Ray Train (`TorchTrainer`), following Ray's own examples:
`train_func(config)` runs on every worker, `fit(cfg)` builds the trainer on the driver, and
`launch(cfg)` is what `enlighten-ray train` and `jobs/train.py` run.

Each worker: G, D_global and D_local each under DDP (`prepare_model`), one Adam and one LambdaLR
(`gan.lr_factor`, stepped per epoch) each, its share of the global batch from the `low` and
`normal` dataset shards. Every `train.checkpoint_every` epochs rank 0 writes a checkpoint directory:

    state.pt       nets, optimisers, schedulers, epoch (next to run), step, per-rank RNG state
    config.yaml    the resolved config
    generator.pt   the standalone generator file (`enlighten-ray enhance --weights`)
    samples.png    fixed validation low inputs (top row) and G's outputs (bottom row)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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
from torchvision.utils import save_image

from .atomic import atomic_output
from .config import Config, from_dict
from .devices import autocast
from .errors import BadInputError
from .gan import Nets, Optimizers, build_nets, build_optimizers, build_vgg, lr_factor, train_step
from .losses import EnlightenGANLoss
from .train_log import StepLog
from .transforms import to_model_range
from .weights import load_generator, save_generator

__all__ = ["KILL_ONCE_ENV", "check_config", "fit", "launch", "state_digest", "train_func"]

STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
SAMPLES_FILE = "samples.png"
METRICS_FILE = "metrics.json"  # the epoch's mean losses, learning rate and images/s
READ_AHEAD_BYTES = 1 << 30  # per domain and worker: a whole CPU epoch fits, a GPU epoch streams
SHUFFLE_BUFFER = 64  # augmented crops mixed on each worker, across the blocks Ray Data sends in random order
# Test hook (fault-tolerance test only): when set on the driver to a file path, the last rank
# SIGKILLs its own process once, in epoch 1 after a checkpoint exists, and creates the file so the
# restarted worker group does not do it again.
KILL_ONCE_ENV = "ENLIGHTEN_RAY_TEST_KILL_ONCE"


# ------------------------------------------------------------------------------------- validation


def check_config(cfg: Config) -> None:
    """Reject settings that would fail (or hang) later, naming the key."""
    s, t = cfg.scaling, cfg.train
    for role in ("low", "normal"):
        if not getattr(cfg.data, role):
            raise BadInputError(f"data.{role}", "not set: give a folder or URI of images or videos")
    if s.num_workers < 1:
        raise BadInputError("scaling.num_workers", f"must be >= 1, got {s.num_workers}")
    if t.batch_size < s.num_workers or t.batch_size % s.num_workers:
        raise BadInputError(
            "train.batch_size", f"the global batch {t.batch_size} must split evenly over {s.num_workers} workers"
        )
    if s.precision not in ("bf16", "fp32"):
        raise BadInputError("scaling.precision", f"must be bf16 or fp32, got {s.precision!r}")
    if s.sync_bn and not s.use_gpu:
        raise BadInputError("scaling.sync_bn", "SyncBatchNorm needs GPUs (scaling.use_gpu=true)")
    if cfg.loss.patch_size > cfg.data.crop_size:
        raise BadInputError("loss.patch_size", f"{cfg.loss.patch_size} is larger than data.crop_size")
    if cfg.epochs < 1 or t.checkpoint_every < 1:
        raise BadInputError("optim.epochs_constant", "need at least one epoch and train.checkpoint_every >= 1")
    if cfg.data.video_every_n < 0 or (cfg.data.video_every_n == 0 and cfg.data.video_fps <= 0):
        raise BadInputError("data.video_fps", "set data.video_every_n > 0 or data.video_fps > 0")


# -------------------------------------------------------------------------------------- on workers


def state_digest(states: list[dict[str, torch.Tensor]]) -> str:
    """sha256 over state dicts (parameters and buffers, bit for bit): equal digests = equal weights."""
    h = hashlib.sha256()
    for state in states:
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _bare(nets: Nets) -> list[nn.Module]:
    return [getattr(m, "module", m) for m in (nets.generator, nets.d_global, nets.d_local)]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _sync_buffers(nets: Nets) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank. DDP broadcasts them at the
    start of each forward, so after an epoch's last forward the ranks' copies differ."""
    if _distributed():
        for net in _bare(nets):
            for buffer in net.buffers():
                dist.broadcast(buffer, src=0)


def _gather(obj: Any) -> list[Any]:
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _mean_over_ranks(sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    if not sums:
        return {}
    keys = sorted(sums)
    total = torch.stack([sums[k].float() for k in keys]) / max(count, 1)
    if _distributed():
        dist.all_reduce(total)
        total /= dist.get_world_size()
    return dict(zip(keys, total.tolist()))


def _read_ahead(batches: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """Pull a shard's batches in a thread, up to READ_AHEAD_BYTES ahead of the trainer. While its
    consumer is slower than its tasks, Ray Data's scheduling loop spins on a CPU core (measured: a
    core of a 2-core machine for a whole epoch); reading ahead lets the epoch's execution finish
    and stop early."""
    ahead: queue.Queue = queue.Queue()
    room = threading.Semaphore(0)  # free places, set from the first batch's size
    done = object()

    def pull() -> None:
        try:
            for i, batch in enumerate(batches):
                if i == 0:
                    size = sum(t.numel() * t.element_size() for t in batch.values())
                    room.release(max(2, READ_AHEAD_BYTES // max(size, 1)))
                room.acquire()
                ahead.put(batch)
            ahead.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the trainer's thread
            ahead.put(exc)

    threading.Thread(target=pull, daemon=True, name="enlighten-ray-read-ahead").start()
    while (item := ahead.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        room.release()
        yield item


def _batches(per_worker: int) -> Iterator[dict[str, torch.Tensor]]:
    """Zip this worker's shards of the two (unpaired, equally long) domains into training batches.
    Both iterators are run to their end so each shard finishes its epoch cleanly."""
    # iter(): each iter() of an iter_torch_batches result starts a new epoch, so the drain below
    # must continue these very iterators, not restart the shards.
    def shard(name: str) -> Iterator[dict[str, torch.Tensor]]:
        batches = ray.train.get_dataset_shard(name).iter_torch_batches(
            batch_size=per_worker, drop_last=True, local_shuffle_buffer_size=SHUFFLE_BUFFER
        )
        return _read_ahead(iter(batches))

    low, normal = shard("low"), shard("normal")
    for lb, nb in zip(low, normal):
        yield {"low": lb["low"], "low_input": lb["low_input"], "normal": nb["normal"]}
    for rest in (low, normal):  # an item that failed to decode can leave one domain a batch longer
        for _ in rest:
            pass


def _save_samples(generator: nn.Module, val: np.ndarray, path: Path, device: torch.device) -> None:
    """Top row: the fixed validation inputs; bottom row: G's outputs (eval mode, like inference)."""
    if not len(val):
        return
    bare = getattr(generator, "module", generator)
    inputs = torch.stack([to_model_range(v) for v in val]).to(device)
    bare.eval()
    try:
        with torch.no_grad():
            outputs = bare(inputs).clamp(-1, 1)
    finally:
        bare.train()
    grid = torch.cat([inputs, outputs]).add(1).div(2).cpu()
    with atomic_output(path) as tmp:
        save_image(grid, tmp, nrow=len(val), padding=2)


def _write_checkpoint(folder: Path, nets: Nets, opts: Optimizers, scheds: list[Any], info: dict[str, Any]) -> None:
    g, dg, dl = _bare(nets)
    state = {
        "nets": {"generator": g.state_dict(), "d_global": dg.state_dict(), "d_local": dl.state_dict()},
        "optimizers": {k: getattr(opts, k).state_dict() for k in ("generator", "d_global", "d_local")},
        "schedulers": [s.state_dict() for s in scheds],
        **info,
    }
    torch.save(state, folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(info["config"], sort_keys=False))
    (folder / METRICS_FILE).write_text(json.dumps(info["metrics"], indent=1))
    meta = {"epoch": info["epoch"], "step": info["step"], "vgg": info["metrics"]["vgg"]}
    save_generator(g, folder / "generator.pt", meta)


def _load_checkpoint() -> dict[str, Any] | None:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def _maybe_kill(marker: str, epoch: int, rank: int, world: int) -> None:
    """The fault-tolerance test hook (see KILL_ONCE_ENV): a hard kill, no Python cleanup."""
    if marker and epoch >= 1 and rank == world - 1 and not os.path.exists(marker):
        Path(marker).touch()
        # Ray Train's controller collects reports when it polls the workers (every 2 s): a worker
        # dying sooner after a checkpoint report can lose that checkpoint, and the restart would
        # begin from the one before. Real epochs take longer; the test's take milliseconds.
        time.sleep(5)
        os.kill(os.getpid(), signal.SIGKILL)


def _build(cfg: Config, state: dict[str, Any] | None, init_generator: Any, device: torch.device) -> tuple:
    """Nets (DDP-wrapped), optimisers and schedulers, restored from `state` when resuming."""
    torch.manual_seed(cfg.train.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    nets = build_nets(cfg)
    if state is not None:
        for name, net in zip(("generator", "d_global", "d_local"), (nets.generator, nets.d_global, nets.d_local)):
            net.load_state_dict(state["nets"][name])
    elif init_generator is not None:
        nets.generator.load_state_dict(ray.get(init_generator))
    if cfg.scaling.use_gpu and cfg.scaling.sync_bn:
        nets.generator = nn.SyncBatchNorm.convert_sync_batchnorm(nets.generator)
    nets = Nets(*(ray.train.torch.prepare_model(m) for m in (nets.generator, nets.d_global, nets.d_local)))
    opts = build_optimizers(nets, cfg)
    o = cfg.optim
    schedule = functools.partial(lr_factor, epochs_constant=o.epochs_constant, epochs_decay=o.epochs_decay)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in (opts.generator, opts.d_global, opts.d_local)]
    if state is not None:
        for name, sched, saved in zip(("generator", "d_global", "d_local"), scheds, state["schedulers"]):
            opt = getattr(opts, name)
            opt.load_state_dict(state["optimizers"][name])
            sched.load_state_dict(saved)
            # The saved lr followed the saved schedule; a resumed run may have changed the epochs.
            for group, base in zip(opt.param_groups, sched.base_lrs):
                group["lr"] = base * schedule(sched.last_epoch)
    loss = EnlightenGANLoss(nets.generator, nets.d_global, nets.d_local, build_vgg(cfg).to(device), cfg.loss)
    return nets, opts, scheds, loss


def train_func(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train worker loop. `config`: {"config": asdict(Config), "val": (N, S, S, 3) uint8,
    "init_generator": ObjectRef of a generator state dict or None, "kill_once": test hook path}."""
    cfg = from_dict(config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    state = _load_checkpoint()
    nets, opts, scheds, loss = _build(cfg, state, config.get("init_generator"), device)
    start, step = (state["epoch"], state["step"]) if state else (0, 0)

    # Patch corners for the local D: a per-rank stream, restored on resume with the same world size.
    patches = torch.Generator().manual_seed(cfg.train.seed * 1009 + rank)
    if state and len(state["rng"]["patches"]) == world:
        patches.set_state(state["rng"]["patches"][rank])
        torch.set_rng_state(state["rng"]["torch"][rank])
    per_worker = cfg.train.batch_size // world
    log = StepLog(cfg.epochs, config.get("steps_per_epoch", 0), cfg.train.batch_size, step, enabled=rank == 0)

    summary: dict[str, Any] = {}
    for epoch in range(start, cfg.epochs):
        sums: dict[str, torch.Tensor] = {}
        count, started = 0, time.perf_counter()
        for batch in _batches(per_worker):
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
            metrics = train_step(nets, opts, loss, batch, autocast(device, cfg.scaling.precision), generator=patches)
            step, count = step + 1, count + 1
            sums = {k: sums.get(k, 0) + v.float() for k, v in metrics.items()}
            _maybe_kill(config.get("kill_once", ""), epoch, rank, world)
            if step % cfg.train.log_every == 0:  # every rank takes the same number of steps
                values = {k: float(v) for k, v in metrics.items()}
                log(epoch + 1, step, values)
                ray.train.report({"epoch": epoch + 1, "step": step, **values})
        lr = opts.generator.param_groups[0]["lr"]  # the rate this epoch trained with
        for sched in scheds:
            sched.step()
        # Epoch means over all ranks. `epoch` is 1-based in all reports (and = epochs done here).
        summary = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "images_per_s": count * cfg.train.batch_size / (time.perf_counter() - started),
            "vgg": {"source": loss.vgg.source, "file": cfg.loss.vgg_weights},
            **_mean_over_ranks(sums, count),
        }
        if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            _checkpoint(cfg, config, nets, opts, scheds, summary, patches, rank, device)
        else:
            ray.train.report(summary)
    return summary


def _checkpoint(
    cfg: Config,
    config: dict[str, Any],
    nets: Nets,
    opts: Optimizers,
    scheds: list[Any],
    summary: dict[str, Any],
    patches: torch.Generator,
    rank: int,
    device: torch.device,
) -> None:
    """Every rank: equalise buffers, gather digests and RNG states, report (a barrier); rank 0
    alone writes the directory and passes it to `report`."""
    _sync_buffers(nets)
    digests = _gather(state_digest([m.state_dict() for m in _bare(nets)]))
    rng = {"patches": _gather(patches.get_state()), "torch": _gather(torch.get_rng_state())}
    metrics = {**summary, "rank_digests": digests}
    with tempfile.TemporaryDirectory(prefix="enlighten-ray-ckpt-") as tmp:
        checkpoint = None
        if rank == 0:
            info = {
                "epoch": summary["epoch"],
                "step": summary["step"],
                "rng": rng,
                "config": config["config"],
                "metrics": summary,
            }
            _write_checkpoint(Path(tmp), nets, opts, scheds, info)
            _save_samples(nets.generator, config["val"], Path(tmp) / SAMPLES_FILE, device)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


# ---------------------------------------------------------------------------------------- driver


def _storage_path(path: str) -> str:
    """Ray wants an absolute local path or a URI."""
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _check_cluster(cfg: Config) -> None:
    """Warn where the trainer would wait forever: Ray Data needs a CPU the workers do not hold."""
    total = ray.cluster_resources()
    s = cfg.scaling
    if total.get("CPU", 0) < s.num_workers * s.cpus_per_worker + 1:
        print(
            f"enlighten-ray: warning: the cluster has {total.get('CPU', 0):g} CPUs; {s.num_workers} workers x "
            f"{s.cpus_per_worker:g} leave none for Ray Data, so training waits (lower scaling.cpus_per_worker, "
            "or add CPUs, unless an autoscaler will)",
            file=sys.stderr,
        )
    if s.use_gpu and total.get("GPU", 0) < s.num_workers:
        print(
            f"enlighten-ray: warning: {s.num_workers} GPU workers asked for, the cluster has {total.get('GPU', 0):g} "
            "GPUs now (use --set scaling.use_gpu=false to train on CPU)",
            file=sys.stderr,
        )


def _init_generator_state(cfg: Config) -> Any:
    """Read train.init_generator on the driver (a clear error before training) and ship it to
    the workers through the object store, so the file need not exist on worker nodes."""
    if not cfg.train.init_generator:
        return None
    model, info = load_generator(cfg.train.init_generator)
    if info["config"]["width"] != cfg.model.width:
        raise BadInputError(
            cfg.train.init_generator, f"generator width {info['config']['width']} != model.width {cfg.model.width}"
        )
    return ray.put({k: v.cpu() for k, v in model.state_dict().items()})


def fit(cfg: Config, verbose: bool = False) -> ray.train.Result:
    """Scan both domains, then train on Ray Train. Connects to a running Ray or starts a local one.
    Fitting again with the same run.storage_path/run.name resumes from the latest checkpoint.
    `verbose` keeps Ray Train's own INFO logs (every report in full)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .data import plan_epoch, scan_domain, training_datasets, validation_images

    check_config(cfg)
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS / a `ray start` cluster on this node / else a new local one
    # Per-epoch progress bars of both domains from every worker would bury the training log.
    ray.data.DataContext.get_current().enable_progress_bars = False
    _check_cluster(cfg)
    low = scan_domain(cfg.data.low, cfg.data, "low")
    normal = scan_domain(cfg.data.normal, cfg.data, "normal")
    for scan in (low, normal):
        print(scan.summary(cfg.data.max_mean), file=sys.stderr)
    steps, _ = plan_epoch(low.count, normal.count, cfg)
    print(f"enlighten-ray: config written to {_write_run_config(cfg)}", file=sys.stderr)
    print(f"enlighten-ray: {steps} steps of {cfg.train.batch_size} per epoch, {cfg.epochs} epochs", file=sys.stderr)
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})}
    trainer = TorchTrainer(
        train_func,
        train_loop_config={
            "config": cfg.to_dict(),
            "steps_per_epoch": steps,
            "val": validation_images(low, cfg.data.num_val_images, cfg.data.crop_size),
            "init_generator": _init_generator_state(cfg),
            "kill_once": os.environ.get(KILL_ONCE_ENV, ""),
        },
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=_storage_path(cfg.run.storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.num_to_keep or None),
            failure_config=FailureConfig(max_failures=cfg.failure.max_failures),
            logging_config=LoggingConfig(log_level="INFO" if verbose else "WARNING"),
        ),
        datasets=training_datasets(low, normal, cfg),
    )
    return trainer.fit()


def _write_run_config(cfg: Config) -> str:
    """The resolved config at <storage_path>/<name>/config.yaml (local path or URI)."""
    import pyarrow.fs as pafs

    root = _storage_path(cfg.run.storage_path).rstrip("/") + "/" + cfg.run.name
    fs, path = pafs.FileSystem.from_uri(root if "://" in root else "file://" + root)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{CONFIG_FILE}") as f:
        f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    return f"{root}/{CONFIG_FILE}"


def launch(cfg: Config, dry_run: bool = False, verbose: bool = False) -> int:
    """`enlighten-ray train` / `jobs/train.py`: print and store the resolved config, train, and say
    where the checkpoints and generator.pt are. `dry_run` validates (config, data listing) only."""
    from .data import list_media

    check_config(cfg)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    if dry_run:
        for role in ("low", "normal"):
            _, files = list_media(getattr(cfg.data, role))
            videos = sum(kind == "video" for _, kind in files)
            print(f"# data.{role}: {len(files) - videos} images, {videos} videos")
        return 0
    result = fit(cfg, verbose=verbose)
    if result.error is not None:
        print(f"enlighten-ray: training failed: {result.error}", file=sys.stderr)
        return 1
    print(f"# run directory: {result.path}")
    if result.checkpoint is not None:
        print(f"# latest checkpoint: {result.checkpoint.path}")
        print(f"# generator: {result.checkpoint.path}/generator.pt")
    return 0
