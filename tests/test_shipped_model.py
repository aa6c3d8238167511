"""The model that ships with the package: loads offline with its card, is the default of the CLI,
brightens a dark frame, and agrees with itself in bf16."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from enlighten_ray.cli import main
from enlighten_ray.examples import scene
from enlighten_ray.infer.enhancer import Enhancer, resolve_precision
from enlighten_ray.models.weights import DEFAULT_WEIGHTS, load_generator


def night_frame(height: int = 96, width: int = 160) -> np.ndarray:
    return scene(height, width, np.random.default_rng(3), night=True)


def test_shipped_model_loads_with_its_card() -> None:
    model, info = load_generator()
    assert info.path == str(DEFAULT_WEIGHTS) and info.origin == "ours"
    assert (info.config["width"], info.config["prior"], info.params) == (16, "lime", 2_161_795)
    raw = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    assert raw["state_dict"]["conv1_1.weight"].dtype == torch.float16  # shipped in half precision
    assert next(model.parameters()).dtype == torch.float32  # and run in fp32 unless asked
    card = info.card
    assert card["recipe"] == "configs/prior.yaml" and card["vgg"]["source"] == "hed"
    assert {"heldout", "table1", "commit", "data"} <= set(card)


def test_enhance_without_weights_uses_the_shipped_model_and_brightens(tmp_path: Path, capsys) -> None:
    dark = night_frame()
    src = tmp_path / "night.png"
    Image.fromarray(dark).save(src)
    assert main(["enhance", str(src), str(tmp_path / "bright.png"), "--device", "cpu"]) == 0
    bright = np.asarray(Image.open(tmp_path / "bright.png"))
    assert bright.shape == dark.shape and bright.mean() > dark.mean() + 10
    capsys.readouterr()
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(DEFAULT_WEIGHTS) and info["card"]["recipe"] == "configs/prior.yaml"


def test_auto_precision_follows_the_device() -> None:
    from enlighten_ray.devices import native_bf16

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp16", cpu) == "fp32"  # fp16 is for GPUs
    assert resolve_precision("bf16", cpu) == "bf16"  # explicit: honoured (with a warning where emulated)


def test_bf16_and_fp32_agree_within_two_levels() -> None:
    """Emulated bf16 is slow on CPUs without native support, so the frame is small."""
    model, _ = load_generator()
    frame = night_frame(48, 64)
    fp32 = Enhancer(model, device="cpu", precision="fp32")(frame).astype(int)
    bf16 = Enhancer(model, device="cpu", precision="bf16")(frame).astype(int)
    assert next(model.parameters()).dtype == torch.float32  # the bf16 Enhancer converted a copy
    close = np.abs(fp32 - bf16) <= 2
    assert close.mean() >= 0.999, close.mean()


def test_missing_shipped_model_is_a_clear_error(monkeypatch, tmp_path: Path, capsys) -> None:
    import enlighten_ray.models.weights as weights

    monkeypatch.setattr(weights, "DEFAULT_WEIGHTS", tmp_path / "gone.pt")
    assert main(["enhance", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gone.pt" in err and "--weights" in err and len(err.splitlines()) == 1


def test_info_says_in_words_what_a_file_that_is_not_a_model_is(tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    assert main(["info", str(text)]) == 2
    assert "notes.pt: not a PyTorch weights file" in capsys.readouterr().err
    other = tmp_path / "tensors.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    assert main(["info", str(other)]) == 2
    assert "not a generator file" in capsys.readouterr().err


def test_info_prints_the_cards_epoch_count_only(capsys) -> None:
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith(("meta.epoch:", "card.epoch:")) for line in lines) == 1
