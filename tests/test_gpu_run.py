"""The prepared GPU session (`bench/gpu_run.py`), rehearsed on the CPU with a tiny generator: every
section produces its figures, the budget holds, and the moving average it saves loads."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from _media import REPO, write_images

from enlighten_ray.models.weights import load_generator


def test_the_gpu_script_measures_trains_and_saves_within_its_budget(tmp_path: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("gpu_run", REPO / "bench" / "gpu_run.py")
    gpu_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_run)
    data, out = tmp_path / "train", tmp_path / "out"
    write_images(data / "low", 4, (96, 128), dark=True)
    write_images(data / "normal", 4, (96, 128), seed=1)
    monkeypatch.chdir(REPO)  # the recipe's path is relative to the checkout, as on the GPU machine
    budget = 40.0
    started = time.monotonic()
    argv = ["--device", "cpu", "--width", "4", "--sizes", "64x48", "--batches", "1,2", "--train-crop", "64"]
    argv += ["--train-batch", "2", "--vgg", "random", "--images", "4", "--measure-s", "0.3", "--save-every-s", "5"]
    argv += ["--budget-s", str(budget), "--compile-min-s", "1000", "--data", str(data), "--out", str(out)]
    assert gpu_run.main(argv) == 0
    assert time.monotonic() - started < budget + 5
    report = json.loads((out / "gpu_run.json").read_text())
    flops = report["inference"][0]
    assert flops["what"] == "flops" and flops["flops_per_frame"] > 1e6
    measured = [r for r in report["inference"][1:] if "fps" in r]
    assert measured and all(r["fps"] > 0 and r["tflops"] > 0 for r in measured)
    assert all("skipped" in r for r in report["inference"][1:] if r["compile"])  # too little time to compile
    assert report["train_speed"][0]["images_per_s"] > 0
    training = report["training"]
    assert "error" not in training and training["images"] > 0 and training["saved"]
    model, info = load_generator(out / "generator_ema.pt")
    assert model.prior == "lime" and info.meta["images_seen"] == training["saved"][-1]["images"]
