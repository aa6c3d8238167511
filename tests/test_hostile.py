"""Hostile and broken inputs, as a careful user and a security reviewer try them: tiny crafted files,
the real CLI. Nothing outside what the tool owns is deleted or written, every error is one line
naming the file, and costly inputs stop within seconds."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _media import make_video, write_images
from PIL import Image

from enlighten_ray.cli import main
from enlighten_ray.models.generator import EnlightenGenerator
from enlighten_ray.models.weights import save_generator


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_generator(EnlightenGenerator(width=4), tmp_path_factory.mktemp("w") / "tiny.pt")


def enhance(*args: object) -> int:
    return main(["enhance", *map(str, args), "--precision", "fp32", "--compile", "off", "-q"])


def one_line_errors(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if "error" in line]


def test_a_folder_run_deletes_only_its_own_unfinished_files(tmp_path: Path, weights: Path, capsys) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_images(src, 2, (32, 32))
    mine = out / ".img_000.abcd1234.partial.jpg"  # a killed run of ours, for an output the plan makes
    theirs = [
        out / ".thesis.partial.docx",
        out / "deep" / "er" / ".cache.partial",
        out / ".report.abcd1234.partial.pdf",  # our exact shape, but no input maps to report.pdf
    ]
    for f in [mine, *theirs]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"keep me")
    assert enhance(src, out, "--weights", weights) == 0
    assert not mine.exists() and all(f.read_bytes() == b"keep me" for f in theirs)
    assert "removed 1 unfinished files" in capsys.readouterr().err


def test_a_pixel_bomb_is_refused_from_its_header_within_seconds(tmp_path: Path, weights: Path, capsys) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.new("1", (16000, 16000)).save(src / "bomb.png")  # ~31 KB, 256 Mpx
    (src / "bomb.mp4").write_bytes((src / "bomb.png").read_bytes())  # FFmpeg reads it as a video
    write_images(src, 1, (32, 32))
    started = time.perf_counter()
    assert enhance(src, out, "--weights", weights) == 1  # some inputs failed, the rest done
    assert time.perf_counter() - started < 30
    errors = one_line_errors(capsys.readouterr().err)
    assert len(errors) == 2 and all("16000x16000 pixels (256 Mpx) exceed the 179 Mpx cap" in e for e in errors)
    assert all("--max-pixels" in e for e in errors)
    assert sorted(p.name for p in out.rglob("*")) == ["img_000.jpg"]  # no output, no 0-byte temporary file
    # the cap is an option; a single bad file is an input error (2)
    assert enhance(src / "img_000.jpg", tmp_path / "x.jpg", "--weights", weights, "--max-pixels", "100") == 2
    assert "exceed the 0 Mpx cap" in capsys.readouterr().err
    os.environ.pop("ENLIGHTEN_MAX_PIXELS", None)


def test_link_loops_are_walked_once_and_links_in_output_cannot_lead_out(tmp_path: Path, weights: Path, capsys) -> None:
    src, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    write_images(src / "sub", 1, (32, 32))
    (src / "sub" / "up").symlink_to("..")
    (src / "loop").symlink_to("loop")
    elsewhere.mkdir()
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    assert enhance(src, out, "--weights", weights) == 1
    err = capsys.readouterr().err
    assert "skipped '" + str(src / "sub" / "up") + "': a link to a folder already listed" in err
    assert "a link that loops" in err and "is a link leading outside" in err
    assert not list(elsewhere.iterdir())  # nothing written through the link
    (tmp_path / "loop").symlink_to("loop")
    assert enhance(tmp_path / "loop", tmp_path / "o", "--weights", weights) == 2
    assert one_line_errors(capsys.readouterr().err) == [f"enlighten-ray: error: {tmp_path / 'loop'}: a link that loops"]


def test_broken_weights_and_configs_are_one_line_errors(tmp_path: Path, capsys) -> None:
    class Code:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Code()}, tmp_path / "code.pt")
    torch.save({"format": "enlighten-ray-generator", "config": {"width": 4}}, tmp_path / "nostate.pt")
    img = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16, 3), 20, np.uint8)).save(img)
    refused = "holds Python objects beyond tensors (code), so it was refused"
    no_state = "an enlighten-ray generator file without its state_dict or config"
    for name, reason in (("code.pt", refused), ("nostate.pt", no_state)):
        assert enhance(img, tmp_path / "o.png", "--weights", tmp_path / name) == 2
        err = capsys.readouterr().err
        assert one_line_errors(err) == [f"enlighten-ray: error: {tmp_path / name}: {reason}"]
        assert "weights_only=False" not in err and "ran" not in capsys.readouterr().out
    for override, key in (("model.width=100000", "model.width"), ("data.darken_prob=7", "data.darken_prob")):
        assert main(["train", "--set", "data.low=x", "--set", "data.normal=y", "--set", override, "--dry-run"]) == 2
        assert one_line_errors(capsys.readouterr().err)[0].startswith(f"enlighten-ray: error: {key}: must be")


def test_metrics_cap_identical_pairs_and_nothing_to_score_is_an_input_error(tmp_path: Path, capsys) -> None:
    pred, ref, empty = tmp_path / "pred", tmp_path / "ref", tmp_path / "empty"
    for d in (pred, ref, empty):
        d.mkdir()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(a).save(pred / "same.png")
    Image.fromarray(a).save(ref / "same.png")
    Image.fromarray(np.clip(a.astype(int) + 8, 0, 255).astype(np.uint8)).save(pred / "off.png")
    Image.fromarray(a).save(ref / "off.png")
    assert main(["eval", "pairs", str(pred), str(ref), "--json", str(tmp_path / "p.json")]) == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["identical"] == ["same"] and report["mean_psnr"] < 100  # finite: the identical pair counts as 100
    assert "1 identical pairs (PSNR inf) count as 100 dB" in capsys.readouterr().out
    assert main(["eval", "niqe", str(empty)]) == 2
    assert main(["eval", "pairs", str(empty), str(ref)]) == 2
    assert "no image has a namesake" in capsys.readouterr().err
    Image.fromarray(a[:16]).save(empty / "same.png")  # a pair of other sizes: reported as such
    assert main(["eval", "pairs", str(empty), str(ref)]) == 1
    out = capsys.readouterr().out
    assert "differs from the reference's" in out and "no matching file names" not in out


def test_a_video_in_a_folder_with_a_tiny_bomb_beside_it_still_gets_done(tmp_path: Path, weights: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    make_video(src / "clip.mp4", [0, 40, 80], audio_seconds=0)
    Image.new("1", (16000, 16000)).save(src / "x.png")
    assert enhance(src, out, "--weights", weights) == 1
    assert (out / "clip.mp4").is_file()


def _faststart_clip(path: Path, frames: int) -> Path:
    """An MP4 with its index first, as cameras write them: cut short, the header still lists every frame."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=10, options={"g": "1"})
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for _ in range(frames):
            rgb = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def test_a_truncated_video_is_enhanced_as_far_as_it_decodes_and_says_so(tmp_path: Path, weights: Path, capsys) -> None:
    import av

    full = _faststart_clip(tmp_path / "full.mp4", 12)
    data = full.read_bytes()
    cut = tmp_path / "in" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])  # power lost mid-file
    assert enhance(cut.parent, tmp_path / "out", "--weights", weights) == 0  # exit 0: all that exists is done
    err = capsys.readouterr().err
    match = re.search(r"warning: .*cut.mp4: truncated: (\d+) frames decoded of the 12 in its header", err)
    assert match and 0 < int(match[1]) < 12
    assert "1 truncated sources enhanced as far as they decode" in err
    with av.open(str(tmp_path / "out" / "cut.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.frames == int(match[1])
        assert stream.duration * stream.time_base < 1.0  # not stretched to the header's 1.2 s
    # the whole file is not called truncated
    assert enhance(full, tmp_path / "whole.mp4", "--weights", weights) == 0
    assert "truncated" not in capsys.readouterr().err


def test_a_newline_in_a_name_stays_one_log_line(tmp_path: Path, weights: Path, capsys) -> None:
    src = tmp_path / "in"
    write_images(src, 1, (32, 32))
    (src / "bad\nname.png").write_bytes(b"not a png")
    assert enhance(src, tmp_path / "out", "--weights", weights) == 1
    errors = one_line_errors(capsys.readouterr().err)
    assert len(errors) == 1 and "'" + str(src / "bad\\nname.png") + "'" in errors[0]
    assert main(["eval", "niqe", str(src)]) == 1
    assert "%|" not in capsys.readouterr().err  # no progress bar in a log


def _avi_claiming(path: Path, frames: int, claimed: int) -> Path:
    """An MPEG-4 AVI of `frames` frames whose headers (avih total frames, strh length) claim `claimed`."""
    import struct

    import av

    with av.open(str(path), "w") as c:
        stream = c.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            img = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 30 * i, np.uint8), format="rgb24")
            c.mux(stream.encode(img))
        c.mux(stream.encode())
    data = bytearray(path.read_bytes())
    for tag, offset in ((b"avih", 16), (b"strh", 32)):  # dwTotalFrames; dwLength (in frames at 25/s)
        at = data.index(tag) + 8 + offset
        data[at : at + 4] = struct.pack("<I", claimed)
    path.write_bytes(bytes(data))
    return path


def test_a_header_claiming_two_billion_frames_is_a_hint_not_a_plan(tmp_path: Path, weights: Path, capsys) -> None:
    import av

    from enlighten_ray.io.video import VideoReader, plausible_count

    src = _avi_claiming(tmp_path / "liar.avi", 6, 2**31 - 1)
    with VideoReader(src) as reader:
        assert reader.info.frame_count == 2**31 - 1  # the header says so, with a duration to match
        assert plausible_count(reader.info) is None  # 6 KB cannot hold them: no compile, no ETA from it
    with VideoReader(_avi_claiming(tmp_path / "honest.avi", 6, 6)) as reader:
        assert plausible_count(reader.info) == 6

    out = tmp_path / "out.mp4"
    assert main(["enhance", str(src), str(out), "--weights", str(weights), "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and not re.search(r"ETA \d{3,}h", err), err
    assert "truncated: 6 frames decoded of the 2147483647 in its header" in err
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == 6


def test_a_truncated_video_in_a_batch_is_recorded_as_such(ray_cluster: object, tmp_path: Path, weights: Path) -> None:
    """The Ray Data job enhances what decodes, and its manifest and summary say the source was cut short."""
    import av

    from enlighten_ray.infer.ray_job import BatchOptions, run

    src = tmp_path / "in"
    src.mkdir()
    data = _faststart_clip(tmp_path / "full.mp4", 12).read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])
    (src / "whole.mp4").write_bytes(data)
    summary = run(BatchOptions(input=str(src), output=str(tmp_path / "out"), weights=str(weights), segment_seconds=0.5))
    assert (summary.done, summary.failed, summary.exit_code) == (2, [], 0)
    assert [Path(s).name for s in summary.truncated] == ["cut.mp4"]
    assert "1 truncated sources" in summary.line()
    entries = {Path(e["source"]).name: e for e in map(json.loads, (tmp_path / "out" / "_manifest.jsonl").open())}
    cut, whole = entries["cut.mp4"], entries["whole.mp4"]
    assert (cut["truncated"], cut["header_frames"], whole["truncated"], whole["frames"]) == (True, 12, False, 12)
    assert "header_frames" not in whole
    with av.open(str(tmp_path / "out" / "cut.mp4")) as c:
        stream = c.streams.video[0]
        assert 0 < stream.frames == cut["frames"] < 12
        assert stream.duration * stream.time_base < 1.0  # not stretched to the header's 1.2 s


def test_ctrl_c_while_ray_shuts_down_after_the_summary_is_no_crash(tmp_path: Path, weights: Path) -> None:
    """Ctrl-C pressed (three times) just as the summary appears, while the job's own Ray shuts down."""
    import signal
    import subprocess
    import sys

    write_images(tmp_path / "in", 2, (32, 32))
    cmd = [sys.executable, "-m", "enlighten_ray", "batch", str(tmp_path / "in"), str(tmp_path / "out")]
    cmd += ["--weights", str(weights), "--num-cpus", "1", "-q"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    job = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines = []
    for line in job.stderr:
        lines.append(line)
        if line.startswith("enlighten-ray: done"):
            for _ in range(3):
                job.send_signal(signal.SIGINT)
                time.sleep(0.2)
            break
    lines += job.stderr.read().splitlines(keepends=True)
    job.wait(timeout=120)
    log = "".join(lines)
    assert "enlighten-ray: done 2, skipped 0" in log, log[-3000:]
    assert job.returncode in (0, 130) and "Traceback" not in log, (job.returncode, log[-3000:])
