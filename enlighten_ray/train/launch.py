"""The driver side of training: check the config, scan the data, build the `TorchTrainer` and run
it (`fit`), and what `enlighten-ray train` and `jobs/train.py` print around it (`launch`)."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.data
import ray.train
import yaml

from enlighten_ray.cluster import init_ray
from enlighten_ray.config import CONFIG_FILE, Config, validate
from enlighten_ray.errors import BadInputError
from enlighten_ray.models.weights import load_generator
from enlighten_ray.train.loop import train_func

__all__ = ["check_config", "failure_message", "fit", "launch"]


def check_config(cfg: Config) -> None:
    """Reject settings that would fail (or hang) later, naming the key."""
    validate(cfg)
    s, t = cfg.scaling, cfg.train
    for role in ("low", "normal"):
        if not getattr(cfg.data, role):
            raise BadInputError(f"data.{role}", "not set: give a folder or URI of images or videos")
    if t.batch_size < s.num_workers or t.batch_size % s.num_workers:
        raise BadInputError(
            "train.batch_size", f"the global batch {t.batch_size} must split evenly over {s.num_workers} workers"
        )
    if s.sync_bn and not s.use_gpu:
        raise BadInputError("scaling.sync_bn", "SyncBatchNorm needs GPUs (scaling.use_gpu=true)")
    if cfg.data.video_every_n < 0 or (cfg.data.video_every_n == 0 and cfg.data.video_fps <= 0):
        raise BadInputError("data.video_fps", "set data.video_every_n > 0 or data.video_fps > 0")


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
    if info.config["width"] != cfg.model.width:
        raise BadInputError(
            cfg.train.init_generator, f"generator width {info.config['width']} != model.width {cfg.model.width}"
        )
    return ray.put({k: v.cpu() for k, v in model.state_dict().items()})


def fit(cfg: Config, verbose: bool = False, train_loop: Callable[[dict], Any] = train_func) -> ray.train.Result:
    """Scan both domains, then train on Ray Train. Connects to a running Ray or starts a local one.
    Fitting again with the same run.storage_path/run.name resumes from the latest checkpoint.
    `verbose` keeps Ray Train's own INFO logs (every report in full). `train_loop` wraps or
    replaces `train_func` (tests inject faults this way)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from enlighten_ray.train.data import plan_epoch, training_datasets, validation_images
    from enlighten_ray.train.index import index_domain

    check_config(cfg)
    init_ray()
    # Per-epoch progress bars of both domains from every worker would bury the training log.
    ray.data.DataContext.get_current().enable_progress_bars = False
    _check_cluster(cfg)
    run_dir = _run_dir(cfg)
    low = index_domain(cfg.data.low, cfg.data, "low", run_dir, first=cfg.data.num_val_images)
    normal = index_domain(cfg.data.normal, cfg.data, "normal", run_dir)
    for index in (low, normal):
        print(index.summary(cfg.data.max_mean), file=sys.stderr)
    steps, _ = plan_epoch(low.count, normal.count, cfg)
    print(f"enlighten-ray: config written to {_write_run_config(cfg)}", file=sys.stderr)
    print(f"enlighten-ray: {steps} steps of {cfg.train.batch_size} per epoch, {cfg.epochs} epochs", file=sys.stderr)
    ordered = DataConfig.default_ingest_options()
    ordered.preserve_order = True  # an epoch's cut of the shorter domain follows its order
    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "settings": cfg.to_dict(),
            "steps_per_epoch": steps,
            "val": validation_images(low, cfg.data.crop_size),
            "init_generator": _init_generator_state(cfg),
            "verbose": verbose,
        },
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run.name,
            storage_path=_storage_path(cfg.run.storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.num_to_keep or None),
            failure_config=FailureConfig(max_failures=cfg.failure.max_failures),
            logging_config=LoggingConfig(log_level="INFO" if verbose else "WARNING"),
        ),
        datasets=training_datasets(low, normal, cfg, _images_done(run_dir, cfg.train.batch_size)),
        dataset_config=DataConfig(execution_options=ordered),
    )
    return trainer.fit()


def _images_done(run_dir: str, batch_size: int) -> int:
    """Images the run's newest checkpoint has seen (0 for a new run): Ray Train resumes from it."""
    import json

    import pyarrow.fs as pafs

    from enlighten_ray.io.storage import Location

    loc = Location(run_dir)
    try:
        found = loc.fs.get_file_info(pafs.FileSelector(loc.root, allow_not_found=True))
        names = sorted(i.path for i in found if i.type == pafs.FileType.Directory and "/checkpoint_" in i.path)
        if not names:
            return 0
        with loc.fs.open_input_stream(f"{names[-1]}/metrics.json") as f:
            return int(json.loads(f.read())["step"]) * batch_size
    except (OSError, ValueError, KeyError):
        return 0  # unreadable: train as a new run would (the teacher kept)


def _run_dir(cfg: Config) -> str:
    """<storage_path>/<name>: the run's checkpoints, config and data index (local path or URI)."""
    return _storage_path(cfg.run.storage_path).rstrip("/") + "/" + cfg.run.name


def _write_run_config(cfg: Config) -> str:
    """The resolved config at <storage_path>/<name>/config.yaml (local path or URI)."""
    import pyarrow.fs as pafs

    root = _run_dir(cfg)
    fs, path = pafs.FileSystem.from_uri(root if "://" in root else "file://" + root)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{CONFIG_FILE}") as f:
        f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
    return f"{root}/{CONFIG_FILE}"


def launch(cfg: Config, dry_run: bool = False, verbose: bool = False) -> int:
    """`enlighten-ray train` / `jobs/train.py`: print and store the resolved config, train, and say
    where the checkpoints and generator.pt are. `dry_run` validates (config, data listing) only."""
    from enlighten_ray.train.index import domain_files

    check_config(cfg)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    if dry_run:
        for role in ("low", "normal"):
            _, files = domain_files(getattr(cfg.data, role))
            videos = sum(f.kind == "video" for f in files)
            print(f"# data.{role}: {len(files) - videos} images, {videos} videos")
        return 0
    try:
        result = fit(cfg, verbose=verbose)
        if result.error is not None:
            raise result.error
    except ray.train.TrainingFailedError as exc:
        line, details = failure_message(exc, _run_dir(cfg))
        if details and not verbose:
            print(details, file=sys.stderr)  # a fault in the training code: its traceback helps
        print(f"enlighten-ray: training failed: {line}", file=sys.stderr)
        return 1
    print(f"# run directory: {result.path}")
    if result.checkpoint is not None:
        print(f"# latest checkpoint: {result.checkpoint.path}")
        print(f"# generator: {result.checkpoint.path}/generator.pt")
    return 0


def failure_message(error: Exception, run_dir: str, wait_s: float = 60.0) -> tuple[str, str]:
    """One line for a failed run, and Ray's full message where it is more than a lost node.
    Ray reports a worker on a lost node as a failed health check naming the worker's node_id; the
    cluster's node table (asked while still connected) says whether that node is gone, some
    seconds after the workers stop answering, so it is polled for up to `wait_s`."""
    text = str(error)
    resume = (
        f"run the same command again to resume from the latest checkpoint in {run_dir} (same run.storage_path "
        "and run.name), or set failure.max_failures >= 1 to restart from it automatically"
    )
    named = list(dict.fromkeys(re.findall(r"node_id='([0-9a-f]+)'", text)))
    if not named or "health check" not in text:
        return f"{text.strip().splitlines()[0]} (details above); {resume}", text
    deadline = time.monotonic() + wait_s
    while True:
        nodes = {n["NodeID"]: n for n in ray.nodes()}
        gone = [i for i in named if i in nodes and not nodes[i]["Alive"]]
        if gone or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    shown = ", ".join(f"{i} ({nodes[i]['NodeManagerAddress']})" if i in nodes else i for i in (gone or named))
    if gone:
        return f"lost node {shown} with its training workers; {resume}", ""
    return f"training workers on node {shown} stopped answering; {resume}", ""
