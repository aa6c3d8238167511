"""Issue 5: the Ray Data batch job. Real Ray (the session's local cluster, or the job's own in a
subprocess), real PyAV files, a tiny generator (width 4) and images of at most 64 px."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _media import REPO, assert_faithful, describe, frame_rgb, make_clip, write_images
from PIL import Image

from enlighten_ray.infer.plan import cut_points, plan_segments
from enlighten_ray.infer.ray_job import BatchOptions, run
from enlighten_ray.infer.settings import EnhanceSettings
from enlighten_ray.io.encode import EncoderOptions
from enlighten_ray.io.storage import Location
from enlighten_ray.io.video import scan_packets
from enlighten_ray.models.generator import EnlightenGenerator
from enlighten_ray.models.weights import save_generator


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_generator(EnlightenGenerator(width=4), tmp_path_factory.mktemp("weights") / "generator.pt")


def mixed_folder(root: Path) -> dict[str, tuple[tuple[int, int], str]]:
    """Good images of several sizes and modes (rel path -> (size, mode)), a corrupt and an empty file."""
    write_images(root, 2, (48, 64))
    write_images(root / "day" / "cam2", 2, (32, 40), seed=1)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 90, (20, 30), dtype=np.uint8)).save(root / "day" / "grey.png")
    Image.fromarray(rng.integers(0, 90, (24, 24, 4), dtype=np.uint8)).save(root / "rgba.png")
    good = {}
    for path in sorted(root.rglob("*.*")):
        with Image.open(path) as img:
            good[path.relative_to(root).as_posix()] = (img.size, img.mode)
    (root / "corrupt.jpg").write_bytes((root / "img_000.jpg").read_bytes()[:300])  # truncated JPEG
    (root / "empty.png").write_bytes(b"")
    return good


def video_bytes(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(p.size for p in c.demux(c.streams.video[0]))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_images_enhanced_bad_ones_recorded_and_rerun_redoes_nothing(
    ray_cluster: object, weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    good = mixed_folder(src)
    assert len(good) == 6
    opts = BatchOptions(
        input=str(src), output=str(out), weights=str(weights), settings=EnhanceSettings(batch_size=2), concurrency=1
    )

    summary = run(opts)

    assert (summary.done, summary.skipped, summary.exit_code) == (6, 0, 1)
    assert re.search(r"^images: 8/8 images, .* \(done\)$", capsys.readouterr().err, re.M)  # stderr is a log here
    for rel, (size, mode) in good.items():
        with Image.open(out / rel) as img, Image.open(src / rel) as before:
            assert (img.size, img.mode) == (size, mode), rel
            assert np.abs(np.asarray(img, float) - np.asarray(before, float)).mean() > 1, f"{rel} not enhanced"
    failures = read_jsonl(out / "_failures.jsonl")
    assert sorted((Path(f["path"]).name, f["stage"]) for f in failures) == [
        ("corrupt.jpg", "read"),
        ("empty.png", "read"),
    ]
    assert all(f["path"] in f["error"] and "\n" not in f["error"] for f in failures)
    manifest = read_jsonl(out / "_manifest.jsonl")
    assert sorted(Path(m["output"]).relative_to(out).as_posix() for m in manifest) == sorted(good)
    assert {m["frames"] for m in manifest} == {1} and len({m["weights"] for m in manifest}) == 1
    assert not (out / "corrupt.jpg").exists() and not (out / "empty.png").exists()

    before, lines = mtimes(out), (out / "_manifest.jsonl").read_text()
    stale = out / "day" / "cam2" / ".img_001.k1ll3d00.partial.jpg"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half a jpeg")
    users = out / "sub" / ".img_009.k1ll3d00.partial.png"  # the same shape, but no input maps to sub/img_009.png
    users.parent.mkdir(exist_ok=True)
    users.write_bytes(b"not ours")
    again = run(dataclasses.replace(opts, progress=False))

    assert (again.done, again.skipped, len(again.failed), again.exit_code) == (0, 6, 2, 1)
    assert "images:" not in capsys.readouterr().err  # -q
    assert not stale.exists() and users.read_bytes() == b"not ours"
    assert (out / "_manifest.jsonl").read_text() == lines
    after = mtimes(out)
    assert {k: after[k] for k in good} == {k: before[k] for k in good}


def test_an_input_is_never_overwritten_and_new_settings_redo_outputs(
    ray_cluster: object, weights: Path, tmp_path: Path
) -> None:
    src = tmp_path / "photos"
    (image,) = write_images(src, 1, (32, 40))
    original = image.read_bytes()
    # A single file whose output folder is its own folder would land on the input itself.
    same = run(BatchOptions(input=str(image), output=str(src), weights=str(weights), concurrency=1))
    assert same.exit_code == 1 and "would replace an input" in same.failed[0][2]
    assert image.read_bytes() == original

    out = tmp_path / "out"
    first = run(BatchOptions(input=str(src), output=str(out), weights=str(weights), concurrency=1))
    enhanced = (out / image.name).read_bytes()
    # Same weights, another strength: the finished output is stale, not "already complete".
    half = run(
        BatchOptions(
            input=str(src), output=str(out), weights=str(weights), concurrency=1, settings=EnhanceSettings(strength=0.5)
        )
    )
    assert (first.done, half.done, half.skipped) == (1, 1, 0)
    assert (out / image.name).read_bytes() != enhanced
    assert len({m["weights"] for m in read_jsonl(out / "_manifest.jsonl")}) == 2

    # The same settings again: done. The source replaced under the same name: redone.
    opts = BatchOptions(input=str(src), output=str(out), weights=str(weights), settings=EnhanceSettings(strength=0.5))
    again = run(opts)
    assert (again.done, again.skipped) == (0, 1)
    half_output = (out / image.name).read_bytes()
    (new,) = write_images(tmp_path / "other", 1, (32, 40), seed=7)
    image.write_bytes(new.read_bytes())
    replaced = run(opts)
    assert (replaced.done, replaced.skipped) == (1, 0)
    assert (out / image.name).read_bytes() != half_output


def test_video_split_into_segments_keeps_frames_pts_and_audio(
    ray_cluster: object, weights: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    clip = make_clip(src / "drive.mp4", frames=75)  # 3 s, keyframes every 0.48 s
    with av.open(str(clip)) as c:
        tb = float(c.streams.video[0].time_base)
    assert len(cut_points(scan_packets(clip).keys, tb, 1.0)) == 2  # three segments, the job's own cut rule

    summary = run(BatchOptions(input=str(src), output=str(out), weights=str(weights), segment_seconds=1.0))

    assert (summary.done, summary.exit_code) == (1, 0)
    got = assert_faithful(clip, out / "drive.mp4")  # frame count, every pts, duration, audio packets
    assert got["count"] == 75 and len(got["audio"]) > 100
    assert np.abs(got["first_rgb"].astype(int) - frame_rgb(0, (64, 48)).astype(int)).mean() > 5  # enhanced
    (entry,) = read_jsonl(out / "_manifest.jsonl")
    assert entry["frames"] == 75 and entry["kind"] == "video"
    assert not (out / "_parts").exists()  # joined parts are cleaned up

    # Another crf is another output: redone, and at crf 28 smaller than at the default 18.
    size_18 = video_bytes(out / "drive.mp4")
    opts = BatchOptions(input=str(src), output=str(out), weights=str(weights), segment_seconds=1.0)
    smaller = run(dataclasses.replace(opts, encoder=EncoderOptions(crf=28, preset="veryfast")))
    assert (smaller.done, smaller.skipped) == (1, 0)
    assert video_bytes(out / "drive.mp4") < 0.8 * size_18  # the audio is copied either way
    assert assert_faithful(clip, out / "drive.mp4")["count"] == 75


def test_frames_out_writes_parquet_rows_with_index_and_pts(ray_cluster: object, weights: Path, tmp_path: Path) -> None:
    src, out, frames = tmp_path / "in", tmp_path / "out", tmp_path / "frames"
    (src / "cam").mkdir(parents=True)
    clip = make_clip(src / "cam" / "night.mp4", frames=40, audio=False)
    stale = frames / "cam" / "night.mp4" / "99999_killed_run.parquet"  # left by a killed run
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a parquet file")
    opts = BatchOptions(
        input=str(src),
        output=str(out),
        weights=str(weights),
        frames_out=str(frames),
        frames_format="parquet",
        segment_seconds=0.5,
    )

    assert run(opts).exit_code == 0
    assert not stale.exists()  # the cleanup step redid the unfinished video whole

    files = sorted((frames / "cam" / "night.mp4").glob("*.parquet"))
    assert len(files) > 1  # one per segment
    table = pq.read_table(files).sort_by("frame_index")
    assert table.column("frame_index").to_pylist() == list(range(40))
    tb = Fraction(table.schema.metadata[b"time_base"].decode())  # the source stream's, which mp4 chose
    assert [p * tb for p in table.column("pts").to_pylist()] == describe(clip)["times"]
    assert set(table.column("source").to_pylist()) == {str(clip)}
    import io

    with Image.open(io.BytesIO(table.column("image")[0].as_py())) as img:
        assert img.size == (64, 48)
    assert read_jsonl(out / "_manifest.jsonl")[0]["frames"] == 40


def test_planning_segments_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "night.mp4", frames=40, audio=False)
    kept = tmp_path / "frames" / "night.mp4" / "00000_open_open.png"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"a frame of an earlier run")
    source, frames = Location(str(tmp_path / "in")), Location(str(tmp_path / "frames"))
    video = {"src": str(clip), "dst": frames.path("night.mp4"), "parts": ""}

    rows = plan_segments(pa.Table.from_pylist([video]), source, frames, True, 0.5).to_pylist()

    assert len(rows) > 1 and not any(r["error"] for r in rows)
    assert {r["part"] for r in rows} == {frames.path("night.mp4")}
    assert kept.read_bytes() == b"a frame of an earlier run"


def finished_parts(out: Path) -> list[Path]:
    """Video parts a run has completed (files under OUTPUT/_parts, not the hidden temporary ones)."""
    return [p for p in (out / "_parts").rglob("*.mp4") if p.is_file() and not p.name.startswith(".")]


def _job(src: Path, out: Path, weights: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "jobs" / "enhance.py"), "--input", str(src), "--output", str(out)]
    cmd += ["--weights", str(weights), "--num-cpus", "2", "--concurrency", "1", "--segment-seconds", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )


def test_killed_job_finishes_on_rerun_without_redoing_finished_work(weights: Path, tmp_path: Path) -> None:
    """SIGKILL the whole job (driver and its local Ray) once a video part is written, then re-run."""
    src, out = tmp_path / "in", tmp_path / "out"
    images = write_images(src, 4, (32, 32))
    (src / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    clip = make_clip(src / "long.mp4", frames=150)  # 6 s: five or six segments of about 1 s

    first = _job(src, out, weights)
    deadline = time.monotonic() + 240
    parts: list[Path] = []
    while not parts and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        parts = finished_parts(out)
    running = first.poll() is None
    os.killpg(first.pid, signal.SIGKILL)
    log = first.communicate()[0]
    assert running and parts, f"the job ended before it could be killed:\n{log[-3000:]}"
    assert not (out / "long.mp4").exists()
    killed = finished_parts(out)
    done_before = read_jsonl(out / "_manifest.jsonl")
    assert len(done_before) == len(images)  # images ran first and are recorded
    image_times = {p.name: (out / p.name).stat().st_mtime_ns for p in images}

    second = _job(src, out, weights)
    log = second.communicate(timeout=300)[0]

    assert second.returncode == 1, log[-3000:]  # bad.jpg: recorded, the rest done
    assert f"done 1, skipped {len(images)} (already complete), failed 1" in log
    assert re.search(r"video segments: (\d+)/\1 segments, .* \(done\)", log), log[-3000:]  # a log, not a tty
    assert "Execution plan of Dataset" not in log  # Ray Data's own logs only with --verbose
    # Parts finished before the kill are reused, not encoded again (an orphaned actor may finish one
    # more before Ray's fate-sharing stops it: that part is whole too, written atomically).
    reused = re.search(r"reused (\d+) video parts", log)
    assert reused and int(reused[1]) >= len(killed), log[-3000:]
    assert {p.name: (out / p.name).stat().st_mtime_ns for p in images} == image_times
    manifest = read_jsonl(out / "_manifest.jsonl")
    assert manifest[: len(done_before)] == done_before
    assert sorted(Path(m["output"]).name for m in manifest) == sorted([*(p.name for p in images), "long.mp4"])
    assert_faithful(clip, out / "long.mp4")
    assert [f["stage"] for f in read_jsonl(out / "_failures.jsonl")] == ["read", "read"]  # once per run


def _kill_one_actor_once_parts_appear(out: Path, killed: list[int], deadline: float) -> None:
    """SIGKILL the segment actor's process once the first video part is written."""
    import ray
    from ray.util.state import list_actors

    cluster = ray.get_runtime_context().gcs_address  # this session's cluster, not another one here
    while time.monotonic() < deadline and not killed:
        if finished_parts(out):
            for actor in list_actors(address=cluster, filters=[("state", "=", "ALIVE")], detail=True):
                if "SegmentPredictor" in actor.class_name and actor.pid:
                    os.kill(actor.pid, signal.SIGKILL)
                    killed.append(actor.pid)
                    return
        time.sleep(0.05)


def test_a_killed_actor_is_replaced_and_nothing_is_lost_or_written_twice(
    ray_cluster: object, weights: Path, tmp_path: Path
) -> None:
    import threading

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    clips = [make_clip(src / f"cam{i}.mp4", frames=100, audio=i == 0) for i in range(2)]  # 4 s each
    killed: list[int] = []
    killer = threading.Thread(target=_kill_one_actor_once_parts_appear, args=(out, killed, time.monotonic() + 240))
    killer.start()

    summary = run(BatchOptions(input=str(src), output=str(out), weights=str(weights), segment_seconds=1.0))
    killer.join()

    assert killed, "no actor was killed: the job finished first"
    assert (summary.done, summary.failed, summary.exit_code) == (2, [], 0)
    manifest = read_jsonl(out / "_manifest.jsonl")
    assert sorted(Path(m["output"]).name for m in manifest) == ["cam0.mp4", "cam1.mp4"]  # each once
    for clip in clips:
        assert assert_faithful(clip, out / clip.name)["count"] == 100  # every frame once, in order


def test_a_pixel_bomb_is_refused_in_the_ray_data_path(ray_cluster: object, weights: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_images(src, 1, (32, 40))
    Image.new("1", (16000, 16000)).save(src / "bomb.png")  # 31 KB declaring 256 Mpx
    (src / "bomb.mp4").write_bytes((src / "bomb.png").read_bytes())
    started = time.monotonic()
    summary = run(BatchOptions(input=str(src), output=str(out), weights=str(weights), concurrency=1, progress=False))
    assert time.monotonic() - started < 120
    assert (summary.done, summary.exit_code) == (1, 1)
    errors = sorted(error for _, _, error in summary.failed)
    assert len(errors) == 2 and all("16000x16000 pixels (256 Mpx) exceed the 179 Mpx cap" in e for e in errors)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("_")) == ["img_000.jpg"]
