"""Weight files: ours round-trip, the authors' release loads, mismatches name the keys; the VGG
loading path with a real (random) torchvision-format file; `info` and `export` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from enlighten_ray.cli import main
from enlighten_ray.errors import BadInputError
from enlighten_ray.models import EnlightenGenerator
from enlighten_ray.models.vgg import VGGFeatures, default_vgg_path, load_vgg_state_dict
from enlighten_ray.weights import load_generator, save_generator


def official_state_dict(width: int = 4) -> dict[str, torch.Tensor]:
    """What the release's 200_net_G_A.pth holds: a DataParallel state dict from torch 0.3, so
    `module.`-prefixed keys and no BatchNorm num_batches_tracked."""
    torch.manual_seed(1)
    g = EnlightenGenerator(width=width)
    return {f"module.{k}": v for k, v in g.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_official_release_keys_load(tmp_path: Path) -> None:
    state = official_state_dict()
    assert "module.conv1_1.weight" in state and "module.bn1_1.running_mean" in state
    assert "module.conv10.bias" in state and "module.deconv5.weight" in state
    path = tmp_path / "200_net_G_A.pth"
    torch.save(state, path)
    model, info = load_generator(path)
    assert info["origin"] == "official"
    assert info["config"] == {"width": 4, "align_corners": True}
    torch.testing.assert_close(model.conv1_1.weight, state["module.conv1_1.weight"])
    torch.testing.assert_close(model.bn9_1.running_var, state["module.bn9_1.running_var"])
    assert not model.training


def test_wrong_state_dict_fails_with_the_key_lists(tmp_path: Path) -> None:
    state = official_state_dict()
    state.pop("module.conv10.bias")
    state["module.conv11.weight"] = torch.zeros(1)
    path = tmp_path / "bad_net_G_A.pth"
    torch.save(state, path)
    with pytest.raises(BadInputError) as err:
        load_generator(path)
    message = str(err.value)
    assert str(path) in message
    assert "missing keys ['conv10.bias']" in message
    assert "unexpected keys ['conv11.weight']" in message


def test_our_file_round_trips_with_settings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = EnlightenGenerator(width=4, align_corners=False).eval()
    path = save_generator(g, tmp_path / "g.pt", {"note": "test"})
    assert not list(tmp_path.glob(".*partial*"))  # the temporary file was renamed away
    model, info = load_generator(path)
    assert info["origin"] == "ours" and info["meta"] == {"note": "test"}
    assert model.align_corners is False and model.width == 4
    x = torch.rand(1, 3, 20, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), g(x))


def test_garbage_and_missing_weights_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="junk.pt: cannot read weights"):
        load_generator(junk)
    with pytest.raises(BadInputError, match="no such weights file"):
        load_generator(tmp_path / "nope.pt")
    with pytest.raises(BadInputError, match="no generator.pt"):
        load_generator(tmp_path)


def test_info_and_export_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    official = tmp_path / "200_net_G_A.pth"
    torch.save(official_state_dict(), official)
    assert main(["info", str(official)]) == 0
    out = capsys.readouterr().out
    assert "official" in out and "model.width: 4" in out
    assert f"{sum(v.numel() for k, v in official_state_dict().items() if 'running' not in k):,}" in out

    exported = tmp_path / "ours.pt"
    assert main(["export", str(official), str(exported)]) == 0
    assert main(["info", str(exported), "--json"]) == 0
    assert '"origin": "ours"' in capsys.readouterr().out
    assert main(["export", str(exported), str(exported)]) == 2  # never overwrite the source
    assert "refusing to overwrite" in capsys.readouterr().err


def test_vgg_loads_a_real_torchvision_format_file(tmp_path: Path) -> None:
    from torchvision.models import vgg16

    torch.manual_seed(0)
    features = vgg16(weights=None).features
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)

    vgg = VGGFeatures(load_vgg_state_dict(path), pool4=False)
    torch.testing.assert_close(vgg.layers[0].weight, features[0].weight)
    torch.testing.assert_close(vgg.layers[-2].weight, features[24].weight)  # conv5_1, pool4 skipped
    assert not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert vgg(x).shape == (1, 512, 4, 4)  # three pools: H/8 without pool4
    assert VGGFeatures(None, pool4=True)(x).shape == (1, 512, 2, 2)


def test_vgg_missing_file_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(BadInputError) as err:
        load_vgg_state_dict(None)
    assert str(default_vgg_path()) in str(err.value)
    assert "vgg16-397923af.pth" in str(err.value) and "loss.vgg_weights" in str(err.value)
