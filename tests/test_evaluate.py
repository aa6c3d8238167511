"""`enlighten-ray eval` end to end on small synthetic folders: niqe, pairs, table, sheet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _media import write_video
from PIL import Image

from enlighten_ray.cli import main
from enlighten_ray.eval.metrics import niqe, psnr, ssim
from enlighten_ray.eval.table import SETS
from enlighten_ray.examples import scene

# eval-set file names have spaces, '&' and brackets (NPE's "Daybreak&Nightfall  (0).jpg")
ODD_NAMES = ["Daybreak&Nightfall  (0).jpg", "night (3).png"]


def photo(size: tuple[int, int], seed: int, night: bool = True) -> np.ndarray:
    h, w = size
    img = scene(h, w, np.random.default_rng(seed), night=night)
    noisy = img.astype(float) + np.random.default_rng(seed).normal(0, 3, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def save(img: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95)
    return path


def test_eval_niqe_scores_each_image_reports_a_bad_one_and_writes_json(tmp_path, capsys):
    folder = tmp_path / "my set"
    imgs = [photo((192, 200), i) for i in range(2)]
    for img, name in zip(imgs, ODD_NAMES, strict=True):
        save(img, folder / name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    save(imgs[0][:64], folder / "tiny.png")  # smaller than one NIQE block

    code = main(["eval", "niqe", str(folder), "--json", str(tmp_path / "n.json")])
    out = capsys.readouterr()
    assert code == 1  # two files could not be scored; the rest was
    report = json.loads((tmp_path / "n.json").read_text())[0]
    assert set(report["images"]) == set(ODD_NAMES)
    want = [niqe(np.asarray(Image.open(folder / n).convert("RGB"))) for n in ODD_NAMES]
    assert [report["images"][n] for n in ODD_NAMES] == pytest.approx(want)
    assert report["mean"] == pytest.approx(np.mean(want))
    assert set(report["errors"]) == {"broken.jpg", "tiny.png"}
    assert "Daybreak&Nightfall  (0).jpg" in out.out and "broken.jpg" in out.out


def test_eval_pairs_matches_names_and_lists_the_unmatched(tmp_path, capsys):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    a, b = photo((48, 64), 0, night=False), photo((48, 64), 1, night=False)
    save(a, ref / "a & b.png")
    save(b, ref / "only ref.png")
    brighter = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    save(brighter, pred / "a & b.png")
    save(b, pred / "only pred.png")

    code = main(["eval", "pairs", str(pred), str(ref), "--json", str(tmp_path / "p.json")])
    assert code == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert list(report["pairs"]) == ["a & b"]
    assert report["pairs"]["a & b"]["psnr"] == pytest.approx(psnr(brighter, a))
    assert report["pairs"]["a & b"]["ssim"] == pytest.approx(ssim(brighter, a))
    assert report["only_in_pred"] == ["only pred"] and report["only_in_ref"] == ["only ref"]
    assert "only in" in capsys.readouterr().out


def test_eval_sheet_is_a_png_of_the_computed_size_and_an_html_page(tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "enhanced"
    save(photo((96, 192), 0), inp / ODD_NAMES[0])  # 2:1 landscape
    save(photo((192, 96), 1), inp / ODD_NAMES[1])  # 1:2 portrait
    save(photo((96, 192), 0, night=False), out / "Daybreak&Nightfall  (0).png")  # other extension, same name
    # the second image has no enhanced copy: its cell is a grey "missing" box

    code = main(
        [
            "eval",
            "sheet",
            str(inp),
            str(out),
            "-o",
            str(tmp_path / "s.png"),
            "-o",
            str(tmp_path / "s.html"),
            "--height",
            "64",
        ]
    )
    assert code == 0
    # thumbnails 64 px high: widths 128 and 32 (at least 64) -> both columns 128 px wide;
    # width = 8 + 2 * (128 + 8), height = 24 (titles) + 2 * (64 + 16 + 8) + 8
    with Image.open(tmp_path / "s.png") as im:
        im.verify()
    with Image.open(tmp_path / "s.png") as im:
        assert im.format == "PNG" and im.size == (280, 208)
        px = np.asarray(im.convert("RGB"))
    assert px[24 + 88 + 32, 8 + 136 + 32 + 32].tolist() == [200, 200, 200]  # the missing cell, row 2 column 2
    assert "280x208" in capsys.readouterr().out
    page = (tmp_path / "s.html").read_text()
    assert "Daybreak&amp;Nightfall  (0)" in page and page.count("data:image/jpeg;base64,") == 3


def make_sets(root: Path, per_set: int = 2) -> None:
    """The five Table-1 folders with a few dark 192x192 photos each (4 NIQE blocks)."""
    for k, name in enumerate(SETS):
        for i in range(per_set):
            save(photo((192, 192), 10 * k + i), root / name / (ODD_NAMES[i % 2].replace("(", f"({k}")))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    import torch

    from enlighten_ray.models.generator import EnlightenGenerator
    from enlighten_ray.models.weights import save_generator

    torch.manual_seed(0)
    return save_generator(EnlightenGenerator(width=4), tmp_path_factory.mktemp("w") / "tiny.pt")


def test_eval_table_with_a_tiny_model_baselines_and_a_compare_row(tmp_path, tiny_weights, capsys):
    data, out = tmp_path / "eval", tmp_path / "out"
    make_sets(data)
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)  # a "method" that returns its input: its row must equal Input's

    code = main(
        [
            "eval",
            "table",
            "--weights",
            str(tiny_weights),
            "--data",
            str(data),
            "--baselines",
            "--compare",
            f"copy={copy}",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "t.json"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp_path / "t.json").read_text())
    assert list(report["rows"]) == ["Input", "tiny.pt", "AHE", "LIME-style", "copy"]
    for name, row in report["rows"].items():
        assert row["counts"] == {s: 2 for s in SETS}, name
        pooled = [v for s in SETS for v in row["images"][s].values()]
        assert row["niqe"]["All"] == pytest.approx(np.mean(pooled)), name
        for s in SETS:
            assert row["niqe"][s] == pytest.approx(np.mean(list(row["images"][s].values()))), name
    assert report["rows"]["copy"]["niqe"] == report["rows"]["Input"]["niqe"]
    # the model's outputs are kept under --out with the inputs' names, and scored from there
    for s in SETS:
        for name, value in report["rows"]["tiny.pt"]["images"][s].items():
            files = list((out / "tiny.pt" / s).glob(f"{name}.*"))
            assert len(files) == 1, (s, name)
            assert value == pytest.approx(niqe(np.asarray(Image.open(files[0]).convert("RGB"))))
    header = text.splitlines()[0].split()
    assert header == ["Method", "MEF", "LIME", "NPE", "VV", "DICM", "All"]
    # bootstrap: each row's All inside its interval; the copy's paired difference to Input exactly 0
    for name, iv in report["intervals"].items():
        assert iv["mean"] == pytest.approx(report["rows"][name]["niqe"]["All"]), name
        assert iv["low"] <= iv["mean"] <= iv["high"], name
    assert report["differences"]["copy"]["Input"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert set(report["differences"]["LIME-style"]) == {"Input", "tiny.pt", "AHE"}
    assert "95 % bootstrap intervals" in text and "- Input +0.000 [+0.000, +0.000]" in text


def test_eval_table_refuses_bad_folders_before_enhancing(tmp_path, tiny_weights, capsys):
    code = main(["eval", "table", "--weights", str(tiny_weights), "--data", str(tmp_path)])
    assert code == 2
    assert "none of the test-set folders" in capsys.readouterr().err
    save(photo((96, 96), 0), tmp_path / "LIME" / "1.png")
    (tmp_path / "t5" / "tiny.pt").mkdir(parents=True)  # an earlier --out: rows are named after weights files
    bad = (
        (f"AHE={tmp_path}", "already has a row named 'AHE'"),
        ("x=/no/such", "no such directory"),
        (f"x={tmp_path / 't5' / 'ours'}", f"no such directory ({tmp_path / 't5'} holds: tiny.pt)"),
    )
    for compare, why in bad:
        code = main(
            [
                "eval",
                "table",
                "--weights",
                str(tiny_weights),
                "--data",
                str(tmp_path),
                "--baselines",
                "--compare",
                compare,
                "--out",
                str(tmp_path / "out"),
            ]
        )
        assert code == 2 and why in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was enhanced


def test_eval_curve_scores_each_checkpoint_reuses_known_rows_and_plots(tmp_path, capsys):
    import torch

    from enlighten_ray.models import EnlightenGenerator
    from enlighten_ray.models.weights import save_generator

    images = tmp_path / "low"
    for i in range(3):
        save(photo((120, 160), seed=i), images / f"held out {i}.jpg")
    save(photo((120, 160), seed=9), images / "trained on.jpg")
    listing = tmp_path / "holdout.txt"
    listing.write_text("# held out\nheld out 0.jpg\nheld out 1.jpg\nheld out 2.jpg\n")
    run = tmp_path / "run"
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        ckpt = run / f"checkpoint_2026-01-0{epoch}_00-00-00.000000"
        save_generator(EnlightenGenerator(width=4), ckpt / "generator.pt", {"epoch": epoch, "step": 10 * epoch})
        (ckpt / "metrics.json").write_text(json.dumps({"epoch": epoch, "g_global": 0.5, "d_global": 0.2 * epoch}))
    out_json, png = tmp_path / "curve.json", tmp_path / "curve.png"
    args = ["eval", "curve", str(run), "--images", str(images), "--holdout", str(listing)]
    assert main([*args, "--json", str(out_json), "--plot", str(png)]) == 0
    rows = json.loads(out_json.read_text())
    assert [r["epoch"] for r in rows] == [0, 1, 2] and rows[0]["checkpoint"] == "input"
    inputs = [np.asarray(Image.open(images / f"held out {i}.jpg")) for i in range(3)]
    assert rows[0]["niqe"] == pytest.approx(np.mean([niqe(x) for x in inputs]))
    rgb = np.mean([x.reshape(-1, 3).mean(0) for x in inputs], 0)
    assert rows[0]["luma"] == pytest.approx(rgb @ [0.299, 0.587, 0.114])
    assert rows[2]["d_global"] == pytest.approx(0.4) and rows[1]["step"] == 10
    assert Image.open(png).size[0] > 600
    # A known row is reused as it is, not recomputed.
    rows[1]["niqe"] = -1.0
    out_json.write_text(json.dumps(rows))
    assert main([*args, "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())[1]["niqe"] == -1.0
    # The video's figures are added to known rows, the inputs' row included.
    clip = write_video(tmp_path / "night.mp4", [3, 4, 5, 4])
    assert main([*args, "--json", str(out_json), "--video", str(clip)]) == 0
    rows = json.loads(out_json.read_text())
    assert rows[1]["niqe"] == -1.0 and all("dashcam_dark_cast" in r for r in rows)
    # A row from other weights (the file rewritten) or from an older version (no casts) is redone.
    torch.manual_seed(7)
    save_generator(EnlightenGenerator(width=4), run / rows[1]["checkpoint"] / "generator.pt", {"epoch": 1, "step": 10})
    del rows[2]["dark_r"]
    out_json.write_text(json.dumps(rows))
    assert main([*args, "--json", str(out_json), "--video", str(clip)]) == 0
    redone = json.loads(out_json.read_text())
    assert redone[1]["niqe"] != -1.0 and redone[1]["weights"] != rows[1]["weights"] and "dark_r" in redone[2]
    assert rows[0]["dashcam_luma"] == pytest.approx(4, abs=1.5)
    listing.write_text("not here.jpg\n")
    assert main(args) == 2
    assert "not here.jpg" in capsys.readouterr().err


def test_colour_stats_measure_the_cast_over_all_and_over_near_black_input_pixels():
    from enlighten_ray.eval.curve import colour_stats

    src = np.zeros((4, 8, 3), np.uint8)
    src[:, 4:] = 200  # right half bright, left half black
    out = np.zeros_like(src)
    out[:, :4] = (40, 60, 40)  # black turned green
    out[:, 4:] = (200, 200, 200)
    stats = colour_stats([out], [src], dark=10)
    assert stats["dark_cast"] == pytest.approx(1.5) and stats["dark_share"] == 0.5
    assert stats["cast"] == pytest.approx(130 / 120) and stats["g"] == pytest.approx(130)
    assert colour_stats([src], [src], dark=10)["dark_cast"] == pytest.approx(1.0)  # all-black counts as grey


def test_release_rule_needs_brightness_colour_and_the_video_bar():
    import importlib.util

    spec = importlib.util.spec_from_file_location("release_model", Path(__file__).parents[1] / "jobs/release_model.py")
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    warm = {"r": 25, "g": 24, "b": 21}
    inputs = {"checkpoint": "input", "luma": 24, "niqe": 4.8, "dark_cast": 1.43, **warm}

    def row(name, niqe, luma=80, gain=(3, 3, 3), dark=1.05, video=(60, 1.05)):
        rgb = {k: v * g for (k, v), g in zip(warm.items(), gain)}
        return {"checkpoint": name, "niqe": niqe, "luma": luma, "dark_cast": dark, **rgb, "dashcam_luma": video[0],
                "dashcam_dark_cast": video[1]}  # fmt: skip

    rows = [
        inputs,
        row("green", 3.5, gain=(3, 4, 3)),
        row("green shadows", 3.55, dark=1.3),
        row("dim", 3.6, luma=20),
        row("dark video", 3.7, video=(40, 1.0)),
        row("green video", 3.8, video=(60, 1.5)),
        row("fair", 3.9),
        row("fair but worse", 4.0),
    ]
    assert release.choose(rows, shipped_luma=55)["checkpoint"] == "fair"
    with pytest.raises(SystemExit, match="--video"):  # video figures need the bar
        release.choose(rows)
    with pytest.raises(SystemExit):
        release.choose(rows[:3])
    # a prior generator's run: no checkpoint may score worse than the prior alone, nor than the shipped model
    prior = row("prior", 3.85)
    with pytest.raises(SystemExit, match="nothing to ship"):
        release.choose([inputs, prior, *rows[1:]], shipped_luma=55)
    assert release.choose([inputs, row("prior", 3.95), *rows[1:]], shipped_luma=55)["checkpoint"] == "fair"
    with pytest.raises(SystemExit, match="nothing to ship"):
        release.choose(rows, shipped_luma=55, shipped_niqe=3.85)


def _blocky_clip(path: Path, frames: int, block: int = 16) -> Path:
    """A clip of flat 16x16 blocks whose levels change from block to block: a block grid to find."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10, options={"qscale": "2"})
        stream.width, stream.height, stream.pix_fmt = 96, 48, "yuv420p"
        for _ in range(frames):
            levels = rng.integers(20, 200, (48 // block, 96 // block, 1))
            rgb = np.repeat(np.repeat(levels, block, 0), block, 1).repeat(3, 2).astype(np.uint8)
            rgb = np.clip(rgb + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)  # texture inside
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def test_eval_video_reports_flicker_blocks_and_stability(tmp_path, capsys):
    flicker = write_video(tmp_path / "flicker.mp4", [40, 80] * 4)
    steady = write_video(tmp_path / "steady.mp4", [60] * 8)
    out_json = tmp_path / "video.json"
    assert main(["eval", "video", str(flicker), str(steady), "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["frames"] == 8 and "flicker" in capsys.readouterr().out
    assert report["flicker_in"] == pytest.approx(100 * 20 / 60, rel=0.1) and report["flicker_out"] < 2
    assert report["frame_diff_ratio"] < 0.1 and report["luma_in"] == pytest.approx(60, abs=3)
    assert report["niqe_out"] is None  # 64x48 frames: too small for NIQE, said, not a crash
    blocky = _blocky_clip(tmp_path / "blocky.mp4", 3)
    assert main(["eval", "video", str(blocky), str(blocky), "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["blockiness_in"] == report["blockiness_out"] > 3  # a visible grid; flat video ~1
    assert report["frame_diff_ratio"] == pytest.approx(1.0)
    assert main(["eval", "video", str(flicker), str(blocky)]) == 2  # different frame sizes: one line
    assert "blocky.mp4" in capsys.readouterr().err


def test_subcommands_take_relative_folders_and_dot(tmp_path, monkeypatch, capsys, tiny_weights):
    for i in range(2):
        save(photo((96, 112), seed=i), tmp_path / "night" / f"{i}.jpg")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "niqe", "night", "--json", "s.json"]) == 0
    assert set(json.loads(Path("s.json").read_text())[0]["images"]) == {"0.jpg", "1.jpg"}
    assert main(["enhance", "night", "bright", "--weights", str(tiny_weights), "--device", "cpu", "-q"]) == 0
    assert sorted(p.name for p in Path("bright").iterdir()) == ["0.jpg", "1.jpg"]
    assert main(["eval", "pairs", "bright", "night"]) == 0
    assert main(["eval", "sheet", "night", "bright", "-o", "sheet.png"]) == 0
    monkeypatch.chdir(tmp_path / "night")
    assert main(["eval", "niqe", "."]) == 0
    assert main(["enhance", ".", "../bright2", "--weights", str(tiny_weights), "--device", "cpu", "-q"]) == 0
    assert len(list((tmp_path / "bright2").iterdir())) == 2
    # a file that links outside the folder keeps its own name
    save(photo((96, 112), seed=5), tmp_path / "elsewhere.jpg")
    (tmp_path / "night" / "link.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    assert main(["eval", "niqe", ".", "--json", "../s2.json"]) == 0
    assert "link.jpg" in json.loads((tmp_path / "s2.json").read_text())[0]["images"]
    assert "Traceback" not in capsys.readouterr().err


def test_bootstrap_intervals_are_stratified_and_paired():
    from enlighten_ray.eval.bootstrap import paired_difference, pooled_interval

    rng = np.random.default_rng(1)
    a = {"small": {f"s{i}": 3.0 + rng.normal(0, 0.5) for i in range(8)}, "big": {f"b{i}": 4.0 for i in range(60)}}
    iv = pooled_interval(a)
    assert iv["low"] < iv["mean"] < iv["high"] and iv["high"] - iv["low"] < 0.2  # the big set does not vary
    # b = a + 0.1 + noise much smaller than the images' spread: paired, the interval excludes 0
    b = {s: {k: v + 0.1 + rng.normal(0, 0.01) for k, v in scores.items()} for s, scores in a.items()}
    diff = paired_difference(b, a)
    assert 0 < diff["low"] < diff["mean"] < diff["high"] < 0.2
    # only the images both rows scored are paired
    del b["small"]["s0"]
    assert paired_difference(b, a)["mean"] == pytest.approx(np.mean([b[s][k] - a[s][k] for s in b for k in b[s]]))
    assert pooled_interval({"x": {}}) is None
