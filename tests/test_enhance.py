"""The enhance engine and CLI: a tiny real generator (width 4) on tiny frames, real files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _media import assert_faithful, describe, frame_rgb, make_video, trim_copy
from PIL import Image

from enlighten_ray.cli import main
from enlighten_ray.infer.enhancer import Enhancer, _tiled
from enlighten_ray.infer.local import enhance_video
from enlighten_ray.io.encode import EncoderOptions
from enlighten_ray.models import EnlightenGenerator
from enlighten_ray.models.weights import save_generator

FAST = ["--device", "cpu", "--preset", "ultrafast"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_generator(EnlightenGenerator(width=4), tmp_path_factory.mktemp("w") / "generator.pt")


@pytest.fixture(scope="module")
def enhancer(weights: Path) -> Enhancer:
    return Enhancer.from_weights(weights, device="cpu", batch_size=3)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial" in p.name]


def test_enhancer_keeps_shape_and_dtype(enhancer: Enhancer) -> None:
    frames = np.stack([frame_rgb(i, (37, 23)) for i in range(5)])
    out = enhancer(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert not np.array_equal(out, frames)
    assert enhancer(frames[0]).shape == (23, 37, 3)


def test_strength_zero_is_unchanged(weights: Path) -> None:
    frames = np.stack([frame_rgb(i, (32, 24)) for i in range(2)])
    assert np.array_equal(Enhancer.from_weights(weights, device="cpu", strength=0.0)(frames), frames)


def test_tiles_blend_back_exactly() -> None:
    # A pointwise "model" must come back unchanged through overlapping tiles and their ramps.
    x = torch.rand(2, 3, 70, 53)
    assert torch.allclose(_tiled(lambda t: t * 2 - 1, x, tile=24, overlap=8), x * 2 - 1, atol=1e-6)


def test_tiled_and_max_side_keep_the_size_and_stay_close(weights: Path) -> None:
    frame = frame_rgb(3, (80, 64))
    full = Enhancer.from_weights(weights, device="cpu")(frame).astype(int)
    tiled = Enhancer.from_weights(weights, device="cpu", tile=48)(frame).astype(int)
    small = Enhancer.from_weights(weights, device="cpu", max_side=40)(frame).astype(int)
    assert tiled.shape == small.shape == full.shape
    assert np.abs(tiled - full).mean() < 8
    assert np.abs(small - full).mean() < 16


def test_video_round_trip_with_audio_is_faithful(tmp_path: Path, enhancer: Enhancer) -> None:
    src = make_video(tmp_path / "night.mp4", [i * 40 for i in range(12)], audio_seconds=0.5)
    out = tmp_path / "bright.mp4"
    assert enhance_video(src, out, enhancer, EncoderOptions(preset="ultrafast"), progress=False) == 12
    got = assert_faithful(src, out)
    assert got["size"] == (64, 48)
    assert not leftovers(tmp_path)


def test_cli_video_vfr_rotation_side_by_side(tmp_path: Path, weights: Path) -> None:
    pts = [0, 33, 70, 140, 150, 400, 433, 520]
    src = make_video(tmp_path / "vfr.mkv", pts, rotation=270)
    out = tmp_path / "review.mkv"
    assert main(["enhance", str(src), str(out), "--weights", str(weights), "--side-by-side", *FAST]) == 0
    got, want = describe(out), describe(src)
    assert got["times"] == want["times"]
    assert got["rotation"] == want["rotation"] and want["rotation"] % 360 == 270
    assert got["size"] == (128, 48)


def test_folder_mirrors_layout_skips_existing_and_reports_bad_files(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(frame_rgb(1, (33, 21))).save(src / "a.png")
    Image.fromarray(frame_rgb(2, (20, 16))).convert("L").save(src / "sub" / "b.jpg")
    make_video(src / "sub" / "clip.mp4", [i * 40 for i in range(6)], audio_seconds=0.3)
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "empty.mp4").write_bytes(b"")
    (src / "notes.mp4").write_text("a text file with a video name\n" * 50)

    argv = ["enhance", str(src), str(dst), "--weights", str(weights), *FAST]
    assert main(argv) == 1  # non-zero: some inputs failed
    err = capsys.readouterr().err
    for name in ("corrupt.jpg", "empty.mp4", "notes.mp4"):
        assert sum(name in line for line in err.splitlines()) == 1, err
    assert "enlighten-ray: done 3, skipped 0 (already complete), failed 3" in err  # batch's summary line
    with Image.open(dst / "a.png") as a, Image.open(dst / "sub" / "b.jpg") as b:
        assert (a.size, a.mode, b.size, b.mode) == ((33, 21), "RGB", (20, 16), "L")
    assert_faithful(src / "sub" / "clip.mp4", dst / "sub" / "clip.mp4")
    assert not (dst / "corrupt.jpg").exists() and not (dst / "empty.mp4").exists()
    assert not leftovers(dst)

    # Second run: everything that exists is skipped, not rewritten.
    before = (dst / "a.png").stat().st_mtime_ns
    assert main(argv) == 1
    assert "skipped" in capsys.readouterr().err
    assert (dst / "a.png").stat().st_mtime_ns == before
    assert main([*argv, "--overwrite"]) == 1
    assert (dst / "a.png").stat().st_mtime_ns != before


def test_refuses_to_write_over_the_input(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture) -> None:
    img = tmp_path / "x.png"
    Image.fromarray(frame_rgb(0, (16, 16))).save(img)
    data = img.read_bytes()
    assert main(["enhance", str(img), str(img), "--weights", str(weights), "--device", "cpu"]) == 2
    assert main(["enhance", str(tmp_path), str(tmp_path), "--weights", str(weights), "--device", "cpu"]) == 2
    assert img.read_bytes() == data
    assert "input" in capsys.readouterr().err


def test_missing_weights_and_bad_single_input_are_one_line_errors(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "no.pt"
    assert main(["enhance", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), "--weights", str(missing)]) == 2
    assert "no.pt" in capsys.readouterr().err
    song = tmp_path / "song.mp4"
    song.write_bytes(b"\x00" * 1000)
    assert main(["enhance", str(song), str(tmp_path / "o.mp4"), "--weights", str(weights), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("enlighten-ray: error: ") and "song.mp4" in err[0]
    assert not (tmp_path / "o.mp4").exists() and not leftovers(tmp_path)


def test_interrupt_leaves_no_output(tmp_path: Path, enhancer: Enhancer) -> None:
    src = make_video(tmp_path / "in.mp4", [i * 40 for i in range(12)])
    out = tmp_path / "out.mp4"

    class Interrupting:
        batch_size = 2
        denoise = "off"
        calls = 0

        def prepare(self, frames: int | None) -> None:  # the Enhancer's, before a video
            pass

        def __call__(self, frames: np.ndarray) -> np.ndarray:
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return enhancer(frames)

    with pytest.raises(KeyboardInterrupt):
        enhance_video(src, out, Interrupting(), progress=False)
    assert not out.exists() and not leftovers(tmp_path)


def test_real_dashcam_clip_round_trips(tmp_path: Path, enhancer: Enhancer, enlighten_data: Path) -> None:
    # Its first 2 s, cut by stream copy (edit list and AAC pre-roll packets kept), at full 640x360;
    # the tiny model sees 96 px frames (--max-side) and its change is applied at full size.
    src = trim_copy(enlighten_data / "video" / "dashcam_night.mp4", tmp_path / "night2s.mp4", 2.0)
    out = tmp_path / "night.mp4"
    fast = Enhancer(enhancer.model, device="cpu", batch_size=8, max_side=96)
    assert enhance_video(src, out, fast, EncoderOptions(preset="ultrafast"), progress=False) >= 59
    got = assert_faithful(src, out)
    assert got["size"] == (640, 360) and len(got["audio"]) > 80


def test_console_script_smoke(tmp_path: Path, weights: Path) -> None:
    img = tmp_path / "a.jpg"
    Image.fromarray(frame_rgb(0, (24, 16))).save(img)
    exe = shutil.which("enlighten-ray", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "enlighten_ray"]
    done = subprocess.run(
        [*cmd, "enhance", str(img), str(tmp_path / "b.jpg"), "--weights", str(weights), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "b.jpg") as b:
        assert b.size == (24, 16)


def test_progress_in_logs_is_lines_with_rate_and_eta(capsys: pytest.CaptureFixture) -> None:
    from enlighten_ray.infer.progress import LineProgress, progress_bar

    with LineProgress(10, "frame", "night.mp4", every=0.0) as bar:
        bar.update(3)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("night.mp4: 3/10 frames") and "ETA" in lines[0]
    assert lines[-1].endswith("(done)")
    assert isinstance(progress_bar(5, "frame", "x"), LineProgress)  # pytest's stderr is not a terminal
    quiet = progress_bar(5, "frame", "x", progress=False)
    quiet.update(5)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_unattended_video_enhance_reports_progress_and_quiet_does_not(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    src = make_video(tmp_path / "in.mp4", [0, 40, 80, 120])
    assert main(["enhance", str(src), str(tmp_path / "out.mp4"), "--weights", str(weights), "--device", "cpu"]) == 0
    assert "in.mp4: 4/4 frames" in capsys.readouterr().err
    args = ["enhance", str(src), str(tmp_path / "q.mp4"), "--weights", str(weights), "--device", "cpu", "-q"]
    assert main(args) == 0
    assert "frames" not in capsys.readouterr().err


def test_version_and_help_without_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from enlighten_ray.cli import main\n"
        "for argv in (['--version'], ['--help'], ['eval', '--help'], ['enhance', '--help'], ['batch', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        main(argv)\n"
        "    assert out.getvalue(), argv\n"
        "print(out.getvalue() and sorted(m for m in ('torch', 'ray') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # neither torch nor ray imported
    version = subprocess.run([sys.executable, "-m", "enlighten_ray", "--version"], capture_output=True, text=True)
    from enlighten_ray import __version__

    assert version.stdout.strip() == f"enlighten-ray {__version__}"


@pytest.mark.parametrize("command", ["enhance", "batch"])
def test_help_states_each_default_once(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: light)" in text and "(default: 18)" in text  # --denoise, --crf
    assert not re.search(r"\(default[^()]*\) \(default", text)


def test_a_folder_without_supported_media_says_what_it_ignored(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    for name in ("a.cr2", "b.dng", "notes.txt"):
        (src / name).write_bytes(b"x")
    assert main(["enhance", str(src), str(tmp_path / "out"), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "ignored 3 files (a.cr2, b.dng, notes.txt)" in err and ".jpg" in err
    (tmp_path / "empty").mkdir()
    assert main(["enhance", str(tmp_path / "empty"), str(tmp_path / "out"), "--weights", str(weights)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_batch_checks_input_and_output_before_starting_ray(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "missing"), str(out)]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
    assert not out.exists()  # no manifest files left behind
    (tmp_path / "in").mkdir()
    (tmp_path / "file.txt").write_text("")
    assert main(["batch", str(tmp_path / "in"), str(tmp_path / "file.txt")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_side_by_side_shows_each_frame_as_decoded_beside_its_enhanced_copy(tmp_path: Path, weights: Path) -> None:
    import av

    src = make_video(tmp_path / "in.mp4", [0, 40, 80, 120, 160, 200])
    lefts = {}
    for denoise in ("off", "strong"):
        out = tmp_path / f"pair_{denoise}.mp4"
        enhancer = Enhancer.from_weights(weights, device="cpu", denoise=denoise, batch_size=4)  # 6 = 4 + 2
        assert enhance_video(src, out, enhancer, EncoderOptions(crf=0), side_by_side=True) == 6
        with av.open(str(out)) as b:
            lefts[denoise] = [f.to_ndarray(format="rgb24")[:, :64].astype(int) for f in b.decode(video=0)]
    with av.open(str(src)) as a:
        raw = [f.to_ndarray(format="rgb24").astype(int) for f in a.decode(video=0)]
    assert all(np.abs(x - y).mean() < 2 for x, y in zip(lefts["off"], raw))  # in step with the source
    # the left half is the frame as decoded, not the one the filter made for the model
    assert all(np.array_equal(x, y) for x, y in zip(lefts["off"], lefts["strong"]))


def test_nothing_to_do_names_a_single_unsupported_file(tmp_path: Path) -> None:
    from enlighten_ray.io.storage import Location

    (tmp_path / "a.dng").write_bytes(b"x")
    assert "not an image or video file" in str(Location(str(tmp_path / "a.dng")).nothing_to_do())
    assert "ignored 1 files (a.dng)" in str(Location(str(tmp_path)).nothing_to_do())


def test_one_planner_for_both_runners_refuses_shared_outputs_and_only_the_cleanup_step_deletes(
    tmp_path: Path,
) -> None:
    from enlighten_ray.infer.local import plan_jobs
    from enlighten_ray.infer.plan import owned_by, plan_outputs, remove_partials, skip_existing
    from enlighten_ray.io.storage import Location

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(frame_rgb(1, (16, 16))).save(src / name)
    make_video(src / "clip.avi", [0, 40], audio_seconds=0)  # .avi is written as .mkv ...
    shutil.copy(src / "clip.avi", src / "clip.webm")  # ... and so is .webm: one output for two inputs
    (dst / "deep" / "er").mkdir(parents=True)
    (dst / "a.png").write_bytes(b"done earlier")
    stale = dst / ".b.x1y2z3w4.partial.png"
    stale.write_bytes(b"a killed run's half-written file")
    # not the tool's: names that merely contain ".partial", and our exact shape for an output no input maps to
    users = [dst / ".thesis.partial.docx", dst / "deep" / "er" / ".cache.partial", dst / ".notes.abcd1234.partial.txt"]
    for f in users:
        f.write_bytes(b"the user's own")

    listing = Location(str(dst)).listing()
    plan = plan_outputs(Location(str(src)), Location(str(dst)), skip_existing(listing))
    assert stale.exists()  # planning reads listings only
    assert [t.rel for t in plan.skipped] == ["a.png"]
    assert sorted(t.out_rel for t in plan.todo) == ["b.png", "clip.mkv"]
    assert len(plan.failed) == 1 and "is also the output of" in plan.failed[0][2]
    left = remove_partials(Location(str(dst)), listing, owned_by(plan))
    assert str(stale) not in left and str(dst / "a.png") in left and not stale.exists()
    assert all(f.read_bytes() == b"the user's own" for f in users)

    stale.write_bytes(b"again")
    local = plan_jobs(src, dst)  # enhance's folder planning: the same planner, then the cleanup step
    assert not stale.exists() and all(f.exists() for f in users)
    assert [j.dst for j in local.skipped] == [dst / "a.png"] and len(local.failed) == 1
    assert {j.dst for j in plan_jobs(src, dst, overwrite=True).todo} == {dst / "a.png", dst / "b.png", dst / "clip.mkv"}

    # a single file: its own output's temporary files go, a neighbour's stay
    one, other = tmp_path / ".single.abcdefgh.partial.png", tmp_path / ".other.abcdefgh.partial.png"
    one.write_bytes(b"")
    other.write_bytes(b"")
    plan_jobs(src / "a.png", tmp_path / "single.png")
    assert not one.exists() and other.exists()


def test_compiled_generator_matches_eager_and_auto_compiles_only_for_long_videos() -> None:
    from enlighten_ray.infer.enhancer import COMPILE_MIN_FRAMES

    torch.manual_seed(0)
    model = EnlightenGenerator(width=4)
    frames = np.random.default_rng(0).integers(0, 80, (2, 48, 64, 3), dtype=np.uint8)
    eager = Enhancer(model, device="cpu", precision="fp32", compile="off")
    eager.prepare(10**6)
    auto = Enhancer(model, device="cpu", precision="fp32", batch_size=4)
    auto.prepare(COMPILE_MIN_FRAMES - 1)
    auto.prepare(None)  # a video whose header has no frame count
    assert eager._forward is eager.model and auto._forward is auto.model  # nothing to repay a compile
    auto.prepare(COMPILE_MIN_FRAMES)
    assert auto._forward is not auto.model
    diff = np.abs(auto(frames).astype(np.int16) - eager(frames).astype(np.int16))
    assert (diff <= 1).mean() >= 0.999
    last = auto(frames[:1])  # shorter than the batch: padded to it, and cut back
    assert last.shape == (1, 48, 64, 3) and np.abs(last.astype(np.int16) - eager(frames[:1])).max() <= 1


def test_a_failing_compiler_falls_back_to_the_eager_generator(caplog: pytest.LogCaptureFixture) -> None:
    from enlighten_ray.infer import enhancer as enhancer_module

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    torch.manual_seed(0)
    model = EnlightenGenerator(width=4).eval()
    forward = enhancer_module._compiled(model, backend=broken_backend)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(forward(x, strength=1.0), model(x))
    assert "torch.compile failed" in caplog.text and "running the generator uncompiled" in caplog.text


def test_heic_and_avif_photos_are_enhanced_into_their_own_format(tmp_path: Path, weights: Path) -> None:
    pytest.importorskip("pillow_heif")  # the `heif` extra (in `dev`)
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rgb = frame_rgb(3, (40, 32))
    Image.fromarray(rgb).save(src / "phone.heic", quality=90)
    Image.fromarray(rgb).save(src / "web.avif", quality=90)
    assert main(["enhance", str(src), str(dst), "--weights", str(weights), "--device", "cpu", "-q"]) == 0
    for name, fmt in (("phone.heic", "HEIF"), ("web.avif", "AVIF")):
        with Image.open(dst / name) as out, Image.open(src / name) as before:
            assert (out.format, out.size) == (fmt, (40, 32))
            assert np.abs(np.asarray(out, float) - np.asarray(before, float)).mean() > 1, name


def test_without_the_heif_plugin_heic_files_are_ignored_with_the_install_hint(tmp_path: Path) -> None:
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"x")
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"  # as if the `heif` extra were not installed
        "from enlighten_ray.io.storage import Location\n"
        f"print(Location({str(tmp_path)!r}).nothing_to_do())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "ignored 1 files (IMG_0001.HEIC)" in out and "pip install 'enlighten-ray[heif]'" in out


def test_strength_outside_its_bound_is_a_one_line_error_from_the_generators_own_check(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    img = tmp_path / "x.png"
    Image.fromarray(frame_rgb(0, (16, 16))).save(img)
    assert main(["enhance", str(img), str(tmp_path / "y.png"), "--strength", "2.5"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "enlighten-ray: error: --strength: strength must be in [0, 2] (0 = unchanged, 1 = the paper), got 2.5"
    ]
    assert not (tmp_path / "y.png").exists()
