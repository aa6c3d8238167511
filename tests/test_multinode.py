"""Losing a whole node: `ray.cluster_utils.Cluster` runs a head and worker raylets on 127.0.0.1, and
a node is removed mid-job by killing its processes (what a reclaimed spot instance does), not by a
polite stop. The job's driver runs in a subprocess joined to that cluster; this process never
connects to it (the session's own local Ray may be running beside it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _media import REPO, assert_faithful, make_clip
from conftest import free_port
from PIL import Image

from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.models.generator import EnlightenGenerator
from enlighten_ray.models.weights import load_generator, save_generator


@pytest.fixture
def cluster() -> Iterator[object]:
    """A head (the drivers' node, never removed: one CPU for Ray Data and its own dashboard, which
    Ray Train's placement-group cleaner asks) and two worker nodes of 2 CPUs."""
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_port": free_port()}
    )
    for _ in range(2):
        nodes.add_node(num_cpus=2)
    nodes.wait_for_nodes()
    yield nodes
    nodes.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_generator(EnlightenGenerator(width=4), tmp_path_factory.mktemp("weights") / "generator.pt")


def _batch(cluster: object, src: Path, out: Path, weights: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "jobs" / "enhance.py"), "--input", str(src), "--output", str(out)]
    cmd += ["--weights", str(weights), "--concurrency", "2", "--segment-seconds", "1"]
    env = os.environ | {"RAY_ADDRESS": cluster.address}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _actor_node(cluster: object, class_name: str) -> object | None:
    """The worker node (a `ray._private.node.Node`) that holds a live actor of `class_name`."""
    by_id = {node.node_id: node for node in cluster.worker_nodes}
    for actor in cluster.global_state.actor_table(None).values():
        if actor["State"] == "ALIVE" and class_name in actor["ActorClassName"]:
            node = by_id.get(actor["Address"]["NodeID"])
            if node is not None:
                return node
    return None


def _remove_actor_node_once_parts_appear(cluster: object, out: Path, job: subprocess.Popen, removed: list) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        parts = [p for p in (out / "_parts").rglob("*.mp4") if not p.name.startswith(".")]
        node = _actor_node(cluster, "SegmentPredictor") if parts else None
        if node is not None:
            cluster.remove_node(node, allow_graceful=False)
            removed.append((node.node_id, len(parts), job.poll() is None))
            return
        time.sleep(0.05)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_node_lost_mid_batch_loses_nothing_and_writes_nothing_twice(
    cluster: object, weights: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    images = {f"img_{i}.png": rng.integers(0, 90, (40, 56, 3), dtype=np.uint8) for i in range(4)}
    for name, pixels in images.items():
        Image.fromarray(pixels).save(src / name)
    clips = [make_clip(src / f"cam{i}.mp4", frames=100, audio=i == 0) for i in range(2)]  # 4 s each

    job = _batch(cluster, src, out, weights)
    removed: list = []
    remover = threading.Thread(target=_remove_actor_node_once_parts_appear, args=(cluster, out, job, removed))
    remover.start()
    log = job.communicate(timeout=600)[0]
    remover.join()

    assert removed and removed[0][2], f"no node was lost while the job ran:\n{log[-3000:]}"
    assert job.returncode == 0, log[-3000:]
    assert f"done {len(images) + len(clips)}, skipped 0" in log, log[-3000:]
    manifest = _read_jsonl(out / "_manifest.jsonl")
    assert sorted(Path(m["output"]).name for m in manifest) == sorted([*images, "cam0.mp4", "cam1.mp4"])  # once each
    for clip in clips:
        assert assert_faithful(clip, out / clip.name)["count"] == 100  # every frame once, in order, same pts
    enhance = Enhancer(load_generator(weights)[0], device="cpu")
    for name, pixels in images.items():
        got = np.asarray(Image.open(out / name).convert("RGB")).astype(int)
        assert np.abs(got - enhance(pixels).astype(int)).max() <= 1, name  # as one machine makes it

    again = _batch(cluster, src, out, weights)
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log[-3000:]
    assert re.search(rf"done 0, skipped {len(images) + len(clips)} \(already complete\)", log), log[-3000:]
    assert len(_read_jsonl(out / "_manifest.jsonl")) == len(manifest)


def _train(cluster: object, tmp_path: Path, *sets: str) -> subprocess.Popen:
    """jobs/train.py on the smoke recipe: 2 workers of 2 CPUs, so one per worker node."""
    from _media import SMOKE, write_images

    write_images(tmp_path / "low", 8, seed=1)
    write_images(tmp_path / "normal", 8, seed=2)
    cmd = [sys.executable, str(REPO / "jobs" / "train.py"), "--config", SMOKE]
    for s in (
        f"data.low={tmp_path / 'low'}", f"data.normal={tmp_path / 'normal'}", f"run.storage_path={tmp_path / 'runs'}",
        "scaling.cpus_per_worker=2", "optim.epochs_constant=3", "optim.epochs_decay=3", "train.log_every=100", *sets,
    ):  # fmt: skip
        cmd += ["--set", s]
    env = os.environ | {"RAY_ADDRESS": cluster.address}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _registered(run: Path) -> list[dict]:
    """The checkpoints Ray Train has registered (what a restore can use), oldest first: a folder on
    disk whose report the controller had not yet collected when the node died is not one."""
    try:
        snapshot = json.loads((run / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return []
    return [c["metrics"] for c in snapshot["checkpoint_results"]]


def _replace_a_worker_node_after_a_checkpoint(cluster: object, run: Path, job: subprocess.Popen) -> list:
    """Once a checkpoint is registered, remove a node holding a training worker and add a fresh
    one, as an autoscaler replaces a reclaimed spot instance. In the main thread: a raylet's start
    sets signal handlers. Returns [(lost node id, the step of the checkpoint to restore)]."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and job.poll() is None:
        done = _registered(run)
        node = _actor_node(cluster, "RayTrainWorker") if done else None
        if node is not None:
            cluster.remove_node(node, allow_graceful=False)
            cluster.add_node(num_cpus=2)
            return [(node.node_id, done[-1]["step"])]
        time.sleep(0.1)
    return []


@pytest.mark.parametrize("max_failures", [1, 0])
def test_a_node_lost_mid_training(cluster: object, tmp_path: Path, max_failures: int) -> None:
    """With failure.max_failures >= 1 the run restores its checkpoint on the replacement node and
    finishes, its step count continuing; without, it stops with a line naming the lost node and
    how to resume."""
    run = tmp_path / "runs" / "smoke"
    job = _train(cluster, tmp_path, f"failure.max_failures={max_failures}")
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(job.communicate(timeout=900)[0]))
    reader.start()
    lost = _replace_a_worker_node_after_a_checkpoint(cluster, run, job)
    reader.join()
    log = output[0]

    assert lost, f"no node was lost while training ran:\n{log[-3000:]}"
    steps = [m["step"] for m in _registered(run)]
    if max_failures:
        assert job.returncode == 0, log[-3000:]
        assert steps == [2 * (i + 1) for i in range(6)], steps  # every epoch once, counted on from the restore
        assert lost[0][1] < 12  # the node was lost before the last epoch
    else:
        assert job.returncode == 1, log[-3000:]
        message = [line for line in log.splitlines() if line.startswith("enlighten-ray: training failed")]
        assert len(message) == 1 and lost[0][0] in message[0], log[-3000:]
        assert "run the same command again" in message[0] and "failure.max_failures" in message[0]
        assert steps and steps == [2 * (i + 1) for i in range(len(steps))]
