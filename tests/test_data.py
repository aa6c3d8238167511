"""Training data: decoding odd images, video frame sampling, the darkness filter, bad files counted
and skipped, empty domains refused, and equally long epochs for unpaired domains (real Ray Data)."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _media import SMOKE, make_clip, write_images, write_video
from PIL import Image

from enlighten_ray.config import load_config
from enlighten_ray.errors import BadInputError
from enlighten_ray.io.images import decode_image as decode_with_meta
from enlighten_ray.io.storage import Location
from enlighten_ray.io.video import VideoReader, scan_packets
from enlighten_ray.train import index as index_module
from enlighten_ray.train.data import epoch_order, load_rgb, plan_epoch, training_datasets, validation_images
from enlighten_ray.train.index import domain_files, index_domain, sample_frame


def decode_image(data: bytes) -> np.ndarray:
    """Training reads images as bytes (buckets, Ray's object store): the same decoder as files."""
    return decode_with_meta(data, "bytes.img")[0]


def _encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def test_decode_image_converts_modes_and_orientation() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (10, 20, 3), dtype=np.uint8)
    cases = {
        "L": _encode(Image.fromarray(rgb[..., 0]), "PNG"),
        "RGBA": _encode(Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"),
        "P": _encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "CMYK": _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "1": _encode(Image.fromarray(rgb[..., 0]).convert("1"), "PNG"),
    }
    for mode, data in cases.items():
        out = decode_image(data)
        assert out.shape == (10, 20, 3) and out.dtype == np.uint8, mode
    # 16-bit grey keeps its brightness: 257 * v -> v, not clipped to white.
    grey16 = (np.arange(200, dtype=np.uint16).reshape(10, 20) * 257).astype(np.uint16)
    out = decode_image(_encode(Image.fromarray(grey16), "PNG"))
    assert np.array_equal(out[..., 1], np.arange(200).reshape(10, 20))
    # EXIF orientation 6 (rotate 90 degrees) is applied.
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(_encode(Image.fromarray(rgb), "JPEG", exif=exif.tobytes()))
    assert out.shape == (20, 10, 3)


def test_decode_image_bad_bytes_say_why() -> None:
    good = _encode(Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90), "JPEG")
    with pytest.raises(ValueError, match="empty file"):
        decode_image(b"")
    with pytest.raises(ValueError, match="not a recognised image"):
        decode_image(b"definitely not an image")
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(good[: len(good) // 2])


def test_sample_frame_every_n_and_per_second() -> None:
    assert [i for i in range(20) if sample_frame(i, 10.0, 5, 1.0)] == [0, 5, 10, 15]
    assert [i for i in range(90) if sample_frame(i, 30.0, 0, 1.0)] == [0, 30, 60]
    assert sum(sample_frame(i, 25.0, 0, 10.0) for i in range(25)) == 10
    assert all(sample_frame(i, 10.0, 0, 30.0) for i in range(10))  # asking more than the rate: all


def test_list_media_errors_and_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images or videos found"):
        domain_files(str(tmp_path / "empty"))
    with pytest.raises(BadInputError, match="no such file"):
        domain_files(str(tmp_path / "missing"))
    write_images(tmp_path / "imgs", 2)
    write_images(tmp_path / "imgs" / ".cache", 2)
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    _, files = domain_files(str(tmp_path / "imgs"))
    assert [Path(f.path).name for f in files] == ["img_000.jpg", "img_001.jpg"]


def test_scan_skips_bad_files_and_handles_odd_images(ray_cluster, tmp_path: Path) -> None:
    folder = tmp_path / "low"
    write_images(folder, 3, dark=True)
    rgb = np.random.default_rng(1).integers(0, 80, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep16.png")
    Image.fromarray(rgb[:12, :20]).save(folder / "tiny.png")  # smaller than the crop: resized up
    good = (folder / "img_000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: good.index(b"\xff\xda") + 40])  # header whole, body cut
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_bytes(b"not an image at all")

    cfg = load_config(SMOKE, [f"data.low={folder}", f"data.normal={folder}"])
    scan = index_domain(cfg.data.low, cfg.data, "low", str(tmp_path / "run"), first=2)
    # The index reads headers only: a truncated body is found when its batch decodes it.
    assert scan.files == 11 and scan.count == 9 and scan.images == 9 and scan.frames == 0
    assert sorted(Path(p).name for p, _ in scan.bad) == ["text.png", "zero.png"]
    assert "empty file" in dict((Path(p).name, r) for p, r in scan.bad)["zero.png"]
    assert "2 unreadable, skipped" in scan.summary() and "text.png" in scan.summary()

    rows = training_datasets(scan, scan, cfg)["low"].take_all()
    _, expected = plan_epoch(9, 9, cfg)
    assert expected <= 9 and len(rows) in (expected, expected - 1)  # truncated.jpg at most once, dropped
    for row in rows:
        assert row["low"].shape == (3, 32, 32) and row["low_input"].shape == (3, 32, 32)
        assert -1.0 <= row["low"].min() and row["low"].max() <= 1.0
        assert row["low_input"].max() <= row["low"].max() + 1e-6  # darkened or equal, never brighter
    val = validation_images(scan, 32)
    assert val.shape == (2, 32, 32, 3) and val.dtype == np.uint8


def test_scan_video_samples_frames_and_filters_bright_ones(ray_cluster, tmp_path: Path) -> None:
    means = [20 if i % 4 else 200 for i in range(20)]  # every 4th frame is bright
    write_video(tmp_path / "clips" / "night.mp4", means)
    (tmp_path / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    cfg = load_config(SMOKE, ["data.video_every_n=2", "data.max_mean=100"])
    run = str(tmp_path / "run")
    scan = index_domain(str(tmp_path / "clips"), cfg.data, "low", run, first=10)
    # 10 sampled frames (0, 2, ..., 18); 0, 4, 8, 12, 16 are bright.
    assert (scan.count, scan.frames, scan.bright) == (5, 5, 5)
    assert [Path(p).name for p, _ in scan.bad] == ["broken.mp4"]
    pts = [row["pts"] for row in scan.first]
    assert pts == sorted(pts) and len(set(pts)) == 5
    # The darkness threshold is for the low domain only.
    assert index_domain(str(tmp_path / "clips"), cfg.data, "normal", run).count == 10
    cfg_fps = load_config(SMOKE, ["data.video_fps=5.0"])
    assert index_domain(str(tmp_path / "clips" / "night.mp4"), cfg_fps.data, "low", run).count == 10


def test_empty_domain_after_filtering_is_an_error(ray_cluster, tmp_path: Path) -> None:
    write_images(tmp_path / "bright", 2)
    cfg = load_config(SMOKE, ["data.max_mean=5"])
    with pytest.raises(BadInputError, match="no usable low images or frames left.*2 not darker"):
        index_domain(str(tmp_path / "bright"), cfg.data, "low", str(tmp_path / "run"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"junk")
    with pytest.raises(BadInputError, match="no usable normal.*1 unreadable"):
        index_domain(str(tmp_path / "junk"), cfg.data, "normal", str(tmp_path / "run"))


def test_shorter_domain_cycles_to_the_longer_one(ray_cluster, tmp_path: Path) -> None:
    write_images(tmp_path / "low", 3, dark=True)
    write_images(tmp_path / "normal", 11)
    cfg = load_config(SMOKE, ["train.max_steps_per_epoch=0"])
    low = index_domain(str(tmp_path / "low"), cfg.data, "low", str(tmp_path / "run"))
    normal = index_domain(str(tmp_path / "normal"), cfg.data, "normal", str(tmp_path / "run"))
    assert plan_epoch(3, 11, cfg) == (3, 12)  # rounded up, as the release's DataLoader without drop_last
    paper = load_config(None, ["train.batch_size=32"])
    assert plan_epoch(914, 1016, paper) == (32, 1024)
    datasets = training_datasets(low, normal, cfg)
    assert datasets["low"].count() == datasets["normal"].count() == 12
    # Exact epochs: the shorter domain in whole permutations, the longer one each item once.
    low_paths = [r["path"] for r in epoch_order(low, 12).take_all()]
    assert sorted(Counter(low_paths).values()) == [4, 4, 4]
    assert all(len(set(low_paths[i : i + 3])) == 3 for i in range(0, 12, 3))
    normal_paths = [r["path"] for r in epoch_order(normal, 11).take_all()]
    assert len(set(normal_paths)) == 11
    assert normal_paths != [r["path"] for r in epoch_order(normal, 11).take_all()]  # a new order per epoch
    assert sorted(Counter(r["path"] for r in epoch_order(normal, 12).take_all()).values()) == [1] * 10 + [2]
    capped = load_config(SMOKE, ["train.max_steps_per_epoch=1"])
    assert plan_epoch(3, 11, capped) == (1, 4)
    assert plan_epoch(1, 2, capped) == (1, 4)  # fewer items than one batch: still one step


def test_holdout_files_never_reach_training(ray_cluster, tmp_path: Path) -> None:
    write_images(tmp_path / "low" / "sub", 5, dark=True)
    listing = tmp_path / "holdout.txt"
    listing.write_text("# kept for checkpoint selection\nsub/img_001.jpg\n\nsub/img_003.jpg\n")
    cfg = load_config(SMOKE, [f"data.holdout={listing}"])
    run = str(tmp_path / "run")
    scan = index_domain(str(tmp_path / "low"), cfg.data, "low", run, first=10)
    assert sorted(Path(row["path"]).name for row in scan.first) == ["img_000.jpg", "img_002.jpg", "img_004.jpg"]
    assert index_domain(str(tmp_path / "low"), cfg.data, "normal", run).count == 5  # the low domain's list only
    listing.write_text("sub/img_001.jpg\nsub/missing.jpg\n")
    with pytest.raises(BadInputError, match="missing.jpg"):
        index_domain(str(tmp_path / "low"), cfg.data, "low", run)


def test_index_is_kept_in_the_run_and_reused(ray_cluster, tmp_path: Path) -> None:
    write_images(tmp_path / "low", 3, dark=True)
    cfg = load_config(SMOKE)
    run = tmp_path / "run"
    first = index_domain(str(tmp_path / "low"), cfg.data, "low", str(run))
    marker = next((run / "index").glob("low-*/_SUCCESS"))
    stamp = marker.stat().st_mtime_ns
    again = index_domain(str(tmp_path / "low"), cfg.data, "low", str(run))
    assert again.folder == first.folder and marker.stat().st_mtime_ns == stamp  # read, not rebuilt
    write_images(tmp_path / "low" / "more", 1, dark=True)
    grown = index_domain(str(tmp_path / "low"), cfg.data, "low", str(run))
    assert grown.folder != first.folder and grown.count == 4  # new files: a new index


def test_video_ranges_start_at_keyframes_and_measure_like_a_full_decode(tmp_path: Path, monkeypatch) -> None:
    """Long videos are measured in keyframe ranges (here 4 sampled frames each): every sampled
    frame lands in exactly one range, each range decodes from a keyframe, and the means match."""
    clip = make_clip(tmp_path / "clip.mp4", 60, gop=12, audio=False)
    monkeypatch.setattr(index_module, "RANGE_FRAMES", 4)
    cfg = load_config(SMOKE, ["data.video_every_n=3"])
    loc = Location(str(tmp_path))
    row = {"path": str(clip), "kind": "video", "size": clip.stat().st_size}
    ranges = index_module._list_file(row, loc, cfg.data)
    packets = scan_packets(clip)
    assert [p for r in ranges for p in r["pts"]] == packets.pts[::3]
    assert len(ranges) == 5 and all(r["start"] in packets.keys and r["start"] <= r["pts"][0] for r in ranges)
    with VideoReader(clip) as reader:
        full = {f.pts: float(f.rgb.mean()) for f in reader.frames()}
    rows = [out for r in ranges for out in index_module._index_range(r, loc, max_mean=256.0)]
    assert {r["pts"]: r["mean"] for r in rows} == {p: full[p] for p in packets.pts[::3]}
    with VideoReader(clip) as reader:
        frames = {f.pts: f.rgb for f in reader.frames()}
    for pts in (packets.pts[0], packets.pts[31], packets.pts[-1]):  # reading one frame seeks to it
        assert np.array_equal(load_rgb(loc, str(clip), "video", pts), frames[pts])
