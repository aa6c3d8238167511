"""Ray Train end to end on CPU with 2 workers: checkpoints with generator.pt, identical weights on
every rank, export/info on the run, resume, a killed worker survived, video input, bad input."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import ray
import ray.cloudpickle
import torch
from _media import SMOKE, write_images, write_video
from PIL import Image

from enlighten_ray.cli import main
from enlighten_ray.config import Config, load_config
from enlighten_ray.errors import BadInputError
from enlighten_ray.models.generator import EnlightenGenerator
from enlighten_ray.models.weights import save_generator
from enlighten_ray.train import loop
from enlighten_ray.train.launch import check_config, fit
from enlighten_ray.train.loop import state_digest

# Ray workers cannot import this module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def killed_once(marker: str):
    """`train_func` whose last rank SIGKILLs its own process once, in a step of epoch 2 (so a
    checkpoint exists), creating `marker` first so the restarted worker group runs normally."""

    def train_loop(config: dict) -> dict:
        ctx = ray.train.get_context()
        if ctx.get_world_rank() == ctx.get_world_size() - 1 and not os.path.exists(marker):
            real, steps = loop.train_step, itertools.count(1)

            def train_step(*args, **kwargs):
                out = real(*args, **kwargs)
                if next(steps) > config["steps_per_epoch"]:
                    Path(marker).touch()
                    # Ray Train's controller collects reports when it polls the workers (every 2 s):
                    # dying sooner after a checkpoint report can lose that checkpoint.
                    time.sleep(5)
                    os.kill(os.getpid(), signal.SIGKILL)  # a hard kill, no Python cleanup
                return out

            loop.train_step = train_step
        return loop.train_func(config)

    return train_loop


def smoke_config(tmp_path: Path, low: Path, normal: Path, *overrides: str) -> Config:
    """The smoke recipe on these folders, in its own storage path (a shared one would resume)."""
    sets = [f"data.low={low}", f"data.normal={normal}", f"run.storage_path={tmp_path / 'runs'}", *overrides]
    return load_config(SMOKE, sets)


def checkpoint_dirs(run: Path) -> list[Path]:
    return sorted(p for p in run.glob("checkpoint_*") if p.is_dir())


def test_two_workers_checkpoint_identical_ranks_export_and_resume(ray_cluster, tmp_path: Path, capsys) -> None:
    low, normal = tmp_path / "low", tmp_path / "normal"
    write_images(low, 8, dark=True)
    good = (low / "img_000.jpg").read_bytes()
    (low / "truncated.jpg").write_bytes(good[: len(good) // 3])  # counted and skipped, run goes on
    write_images(normal, 6, seed=1)
    # 2 epochs x 2 steps, global batch 4 on 2 workers: a warm step, then GAN steps with the anchor.
    warm = ["train.ema_half_life_images=8", "warm.images=4", "warm.anchor_weight=1.0", "warm.anchor_images=8"]
    cfg = smoke_config(tmp_path, low, normal, *warm)

    result = fit(cfg)
    assert result.error is None
    run = Path(result.path)
    assert (result.metrics["epoch"], result.metrics["step"]) == (2, 4)
    assert "truncated.jpg" in capsys.readouterr().err

    # Every rank holds the same parameters and buffers, and that is what the checkpoint saved.
    digests = result.metrics["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    ckpts = checkpoint_dirs(run)
    assert len(ckpts) == 2
    for ckpt in ckpts:
        assert {"generator.pt", "generator_raw.pt", "state.pt", "config.yaml", "samples.png", "metrics.json"} <= {
            p.name for p in ckpt.iterdir()
        }
    epoch_means = json.loads((ckpts[-1] / "metrics.json").read_text())
    assert epoch_means["epoch"] == 2 and epoch_means["images_per_s"] > 0 and "d_local" in epoch_means
    assert "teacher_l1" in epoch_means  # the anchor still weighs in epoch 2
    assert epoch_means["vgg"] == {"source": "random", "file": "random"}
    state = torch.load(ckpts[-1] / "state.pt", weights_only=True)
    nets = state["nets"]
    assert state_digest([nets["generator"], nets["d_global"], nets["d_local"]]) == digests[0]
    assert (state["epoch"], state["step"]) == (2, 4) and state["config"]["model"]["width"] == 4
    assert len(state["rng"]["patches"]) == 2
    assert int(state["ema"]["n_averaged"]) == 4  # the average followed G after every step
    average = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    grid = Image.open(ckpts[-1] / "samples.png")
    assert grid.height > 2 * 32 and grid.width > 2 * 32  # 2 inputs over 2 outputs
    assert (run / "config.yaml").is_file()

    # export from the run directory (newest checkpoint) -> a file `info` reads.
    out = tmp_path / "exported.pt"
    assert main(["export", str(run), str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["origin"] == "ours" and info["config"]["width"] == 4 and info["meta"]["step"] == 4
    exported = torch.load(out, weights_only=True)["state_dict"]
    weights = [k for k in nets["generator"] if "running_" not in k and "num_batches" not in k]
    assert all(torch.equal(exported[k], average[k]) for k in weights)  # generator.pt is the average ...
    assert not torch.equal(exported["bn1_1.running_var"], average["bn1_1.running_var"])  # ... its BN re-measured
    raw = torch.load(ckpts[-1] / "generator_raw.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(raw[k], nets["generator"][k]) for k in nets["generator"])
    assert not all(torch.equal(raw[k], average[k]) for k in raw)

    # Same run, one more epoch and a new rate: continues at epoch 3 / step 6 instead of starting
    # over, at the new optim.lr rather than the one the checkpoint's optimiser state holds.
    more = smoke_config(tmp_path, low, normal, *warm, "optim.epochs_decay=2", "optim.lr=2e-4")
    resumed = fit(more)
    assert resumed.error is None
    assert (resumed.metrics["epoch"], resumed.metrics["step"]) == (3, 6)
    assert len(checkpoint_dirs(run)) == 3
    resumed_state = torch.load(checkpoint_dirs(run)[-1] / "state.pt", weights_only=True)
    assert int(resumed_state["ema"]["n_averaged"]) == 6  # the average resumed, not restarted
    epochs = sorted(int(m["epoch"]) for _, m in resumed.best_checkpoints)
    assert epochs == [1, 2, 3]
    # 1 constant + 2 decaying epochs, as released: epochs 1-2 at the full rate, epoch 3 at 1 - 1/2.
    assert resumed.metrics["lr"] == pytest.approx(2e-4 / 2)


def test_video_low_domain_survives_a_killed_worker(ray_cluster, tmp_path: Path, monkeypatch) -> None:
    clip = write_video(tmp_path / "night" / "drive.mp4", [25 + i for i in range(20)])
    normal = tmp_path / "normal"
    write_images(normal, 6, seed=2)
    marker = tmp_path / "killed"
    torch.manual_seed(123)  # starting weights unlike the seed-0 initialisation training would use
    init = save_generator(EnlightenGenerator(width=4), tmp_path / "init.pt")
    cfg = smoke_config(
        tmp_path, clip.parent, normal, "data.video_every_n=2", "data.max_mean=45", f"train.init_generator={init}",
        "optim.epochs_decay=2", "failure.max_failures=1", "train.log_every=100",
    )  # fmt: skip

    result = fit(cfg, train_loop=killed_once(str(marker)))
    assert marker.exists()  # a worker was SIGKILLed in epoch 2 ...
    assert result.error is None  # ... and the restarted group finished from the epoch-1 checkpoint
    assert (result.metrics["epoch"], result.metrics["step"]) == (3, 6)
    ckpts = checkpoint_dirs(Path(result.path))
    assert len(ckpts) == 3 and all((c / "generator.pt").is_file() for c in ckpts)
    digests = result.metrics["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # Training started from init.pt: 6 Adam steps of lr <= 1e-4 move no weight far from it.
    final = torch.load(ckpts[-1] / "generator.pt", weights_only=True)["state_dict"]
    start = torch.load(init, weights_only=True)["state_dict"]
    torch.manual_seed(0)
    fresh = dict(EnlightenGenerator(width=4).named_parameters())  # parameters: BN running stats move more
    assert max((final[k] - start[k]).abs().max().item() for k in fresh) < 0.01
    assert max((fresh[k].detach() - start[k]).abs().max().item() for k in fresh) > 0.05


def test_bad_input_fails_before_training(ray_cluster, tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "normal", 2)
    cfg = smoke_config(tmp_path, tmp_path / "empty", tmp_path / "normal")
    with pytest.raises(BadInputError, match="empty: no images or videos found"):
        fit(cfg)
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written

    args = ["train", "--config", SMOKE, "--set", f"data.low={tmp_path / 'empty'}", "--set", f"data.normal={tmp_path}"]
    assert main(args) == 2
    assert "no images or videos found" in capsys.readouterr().err
    with pytest.raises(BadInputError, match="split evenly over 2 workers"):
        check_config(smoke_config(tmp_path, tmp_path, tmp_path, "train.batch_size=5"))
    with pytest.raises(BadInputError, match="SyncBatchNorm needs GPUs"):
        check_config(smoke_config(tmp_path, tmp_path, tmp_path, "scaling.sync_bn=true"))


def test_dry_run_prints_config_and_data(tmp_path: Path, capsys) -> None:
    write_images(tmp_path / "low", 3, dark=True)
    write_images(tmp_path / "normal", 2)
    args = ["train", "--config", SMOKE, "--set", f"data.low={tmp_path / 'low'}"]
    assert main([*args, "--set", f"data.normal={tmp_path / 'normal'}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "width: 4" in out and "# data.low: 3 images, 0 videos" in out and "# data.normal: 2 images" in out


def test_read_ahead_keeps_order_and_raises_the_readers_error() -> None:
    from enlighten_ray.train.shards import read_ahead

    batches = [{"x": torch.full((2,), float(i))} for i in range(5)]
    assert [int(b["x"][0]) for b in read_ahead(iter(batches))] == [0, 1, 2, 3, 4]

    def broken():
        yield batches[0]
        raise OSError("shard lost")

    got = read_ahead(broken())
    assert int(next(got)["x"][0]) == 0
    with pytest.raises(OSError, match="shard lost"):
        next(got)


def test_step_log_line_has_losses_rate_and_eta(capsys) -> None:
    from enlighten_ray.train.log import StepLog, format_eta

    log = StepLog(epochs=2, steps_per_epoch=10, batch_size=8, first_step=0, enabled=True)
    log.last_time -= 8.0  # 8 steps of 8 images in 8 s: 8 img/s
    line = log(1, 8, {"g_total": 2.5, "d_global": 0.25, "rank_digests": 0.0})
    assert line.startswith("epoch 1/2 step 8/20 g_total 2.500 d_global 0.250 |") and "rank_digests" not in line
    rate = float(line.split("|")[1].split()[0])
    assert 7.5 < rate <= 8.0 and line.endswith("ETA 0h00m")  # 12 steps x 8 images at 8 img/s: 12 s
    assert capsys.readouterr().err.strip() == line
    assert format_eta(3 * 3600 + 25 * 60) == "3h25m"


def test_images_done_reads_the_newest_checkpoint(tmp_path: Path) -> None:
    from enlighten_ray.train.launch import _images_done

    assert _images_done(str(tmp_path / "new"), 8) == 0
    for name, step in (("checkpoint_2026-01-01_00-00-00.000000", 3), ("checkpoint_2026-01-02_00-00-00.000000", 10)):
        (tmp_path / "run" / name).mkdir(parents=True)
        (tmp_path / "run" / name / "metrics.json").write_text(json.dumps({"step": step}))
    assert _images_done(str(tmp_path / "run"), 8) == 80  # past warm.images + anchor_images: no teacher
