"""Object storage for real: a local S3 API server (moto) reached through the standard AWS_*
variables (`s3_endpoint` in conftest). The batch job from s3:// to s3:// (images, a broken object,
a segmented video), killed and re-run; training from s3:// with checkpoints and the data index in
the bucket, resumed; a remote video read by byte ranges."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from _media import REPO, SMOKE, assert_faithful, make_clip, write_images

from enlighten_ray.config import load_config
from enlighten_ray.io.storage import Location, opened
from enlighten_ray.io.video import VideoReader, scan_packets
from enlighten_ray.models.generator import EnlightenGenerator
from enlighten_ray.models.weights import save_generator
from enlighten_ray.train.launch import fit


@pytest.fixture
def bucket(s3_endpoint: str):
    """A fresh bucket (name, boto3 client)."""
    import boto3

    client = boto3.client("s3")
    name = f"fleet-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name, client


def upload(client, bucket: str, folder: Path, prefix: str) -> list[str]:
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        client.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def keys(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def read_jsonl(client, bucket: str, key: str) -> list[dict]:
    text = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _job(src: str, out: str, weights: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "jobs" / "enhance.py"), "--input", src, "--output", out]
    cmd += ["--weights", str(weights), "--num-cpus", "2", "--concurrency", "1", "--segment-seconds", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the AWS_* variables included
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def test_batch_job_from_s3_to_s3_killed_and_rerun(bucket, tmp_path: Path) -> None:
    name, client = bucket
    local = tmp_path / "in"
    images = write_images(local, 4, (32, 32))
    (local / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (local / "cam").mkdir()
    clip = make_clip(local / "cam" / "long.mp4", frames=150)  # 6 s: about six 1 s segments
    upload(client, name, local, "in")
    torch.manual_seed(0)
    weights = save_generator(EnlightenGenerator(width=4), tmp_path / "generator.pt")
    src, out = f"s3://{name}/in", f"s3://{name}/out"

    first = _job(src, out, weights)
    deadline, parts = time.monotonic() + 240, []
    while not parts and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        parts = [k for k in keys(client, name, "out/_parts/") if k.endswith(".mp4") and "/." not in k]
    running = first.poll() is None
    os.killpg(first.pid, signal.SIGKILL)
    log = first.communicate()[0]
    assert running and parts, f"the job ended before it could be killed:\n{log[-3000:]}"
    assert "out/cam/long.mp4" not in keys(client, name, "out/")
    done_before = read_jsonl(client, name, "out/_manifest.jsonl")
    assert len(done_before) == len(images)  # images ran first and are recorded in the bucket

    second = _job(src, out, weights)
    log = second.communicate(timeout=300)[0]

    assert second.returncode == 1, log[-3000:]  # bad.jpg: recorded, the rest done
    assert f"done 1, skipped {len(images)} (already complete), failed 1" in log
    assert "reused" in log  # parts finished before the kill are not encoded again
    manifest = read_jsonl(client, name, "out/_manifest.jsonl")
    assert manifest[: len(done_before)] == done_before
    outputs = sorted(m["output"] for m in manifest)
    expected = sorted([*(f"s3://{name}/out/{p.name}" for p in images), f"s3://{name}/out/cam/long.mp4"])
    assert outputs == expected  # each output once
    failures = read_jsonl(client, name, "out/_failures.jsonl")
    assert [f["path"] for f in failures] == [f"s3://{name}/in/bad.jpg"] * 2  # once per run
    got = tmp_path / "long_out.mp4"
    client.download_file(name, "out/cam/long.mp4", str(got))
    assert assert_faithful(clip, got)["count"] == 150
    assert not [k for k in keys(client, name, "out/") if k.startswith("out/_parts/")]  # joined parts removed


def test_training_from_s3_keeps_index_and_checkpoints_in_the_bucket_and_resumes(ray_cluster, bucket, tmp_path) -> None:
    name, client = bucket
    write_images(tmp_path / "low", 6, dark=True)
    write_images(tmp_path / "normal", 5, seed=1)
    upload(client, name, tmp_path / "low", "data/low")
    upload(client, name, tmp_path / "normal", "data/normal")
    sets = [
        f"data.low=s3://{name}/data/low",
        f"data.normal=s3://{name}/data/normal",
        f"run.storage_path=s3://{name}/runs",
    ]

    result = fit(load_config(SMOKE, [*sets, "optim.epochs_decay=0"]))  # 1 epoch x 2 steps on 2 workers

    assert result.error is None and (result.metrics["epoch"], result.metrics["step"]) == (1, 2)
    run = f"runs/{load_config(SMOKE).run.name}"
    stored = keys(client, name, run + "/")
    assert len([k for k in stored if k.endswith("/generator.pt")]) == 1
    assert len([k for k in stored if k.startswith(f"{run}/index/") and k.endswith("/_SUCCESS")]) == 2
    index_before = [k for k in stored if "/index/" in k]

    resumed = fit(load_config(SMOKE, sets))  # the smoke recipe's 2 epochs: one more

    assert resumed.error is None and (resumed.metrics["epoch"], resumed.metrics["step"]) == (2, 4)
    stored = keys(client, name, run + "/")
    assert len([k for k in stored if k.endswith("/generator.pt")]) == 2
    assert [k for k in stored if "/index/" in k] == index_before  # the index was reused, not rebuilt
    body = client.get_object(Bucket=name, Key=[k for k in stored if k.endswith("/generator.pt")][-1])["Body"]
    state = torch.load(io.BytesIO(body.read()), weights_only=True)
    assert state["meta"]["step"] == 4


def test_remote_video_segment_is_read_by_ranges(bucket, tmp_path: Path) -> None:
    """A segment of a remote video decodes from a random-access remote file (no download) and
    gives exactly the frames a local decode gives."""
    name, client = bucket
    clip = make_clip(tmp_path / "clip.mp4", frames=60, gop=12, audio=False)
    client.upload_file(str(clip), name, "v/clip.mp4")
    loc = Location(f"s3://{name}/v")
    path = loc.path("clip.mp4")
    with opened(loc, path) as remote:
        packets = scan_packets(remote, loc.show(path))
    assert packets.keys == scan_packets(clip).keys and len(packets.pts) == 60
    start, end = packets.keys[-2], packets.keys[-1]
    with opened(loc, path) as remote, VideoReader(remote, loc.show(path)) as reader:
        assert not isinstance(remote, (str, Path))  # a remote file object, not a local copy
        got = {f.pts: f.rgb for f in reader.frames(start, end)}
    with VideoReader(clip) as reader:
        want = {f.pts: f.rgb for f in reader.frames(start, end)}
    assert sorted(got) == sorted(want) and len(got) == 12
    assert all(np.array_equal(got[p], want[p]) for p in want)


def test_weights_info_export_and_enhance_take_uris(bucket, tmp_path: Path, capsys) -> None:
    from PIL import Image

    from enlighten_ray.cli import main
    from enlighten_ray.models.weights import load_generator, weights_id

    name, client = bucket
    run = tmp_path / "run"
    for i, stamp in enumerate(["2026-01-01_00-00-00.000000", "2026-01-02_00-00-00.000000"]):
        torch.manual_seed(i)
        save_generator(EnlightenGenerator(width=4), run / f"checkpoint_{stamp}" / "generator.pt", {"epoch": i + 1})
    upload(client, name, run, "runs/night")
    newest = run / "checkpoint_2026-01-02_00-00-00.000000" / "generator.pt"

    assert main(["info", f"s3://{name}/runs/night", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["path"] == f"s3://{name}/runs/night/checkpoint_2026-01-02_00-00-00.000000/generator.pt"
    assert shown["id"] == weights_id(newest) and shown["meta"]["epoch"] == 2

    assert main(["export", f"s3://{name}/runs/night", f"s3://{name}/models/night.pt", "--half"]) == 0
    written = [k for k in keys(client, name, "models/") if not k.endswith("/")]  # pyarrow marks folders
    assert written == ["models/night.pt"]  # no partial object left beside it
    model, info = load_generator(f"s3://{name}/models/night.pt")
    reference, _ = load_generator(newest)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-2)
    assert info.meta["exported_from"] == shown["path"]

    Image.fromarray(np.full((32, 48, 3), 20, np.uint8)).save(tmp_path / "dark.png")
    args = ["enhance", str(tmp_path / "dark.png"), str(tmp_path / "bright.png"), "-q"]
    assert main([*args, "--weights", f"s3://{name}/models/night.pt"]) == 0
    assert (tmp_path / "bright.png").is_file()
    capsys.readouterr()

    assert main(["info", f"s3://{name}/runs/missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"enlighten-ray: error: s3://{name}/runs/missing: no such weights file or directory"]
    client.put_object(Bucket=name, Key="models/notes.pt", Body=b"not weights")
    assert main(["info", f"s3://{name}/models/notes.pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"enlighten-ray: error: s3://{name}/models/notes.pt: not a PyTorch weights file "
        + "(neither a torch.save zip nor a legacy pickle)"
    ]
