"""The Retinex prior (`model.prior: lime`): the torch estimate is the numpy teacher's, an untrained
prior generator is the teacher, and the prior is computed on whole frames everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from enlighten_ray import classical
from enlighten_ray.config import DataSettings, load_config
from enlighten_ray.infer.enhancer import Enhancer
from enlighten_ray.models.generator import EnlightenGenerator, from_model_range, to_model_range
from enlighten_ray.models.prior import lime_prior, prior_function
from enlighten_ray.models.weights import load_generator, save_generator
from enlighten_ray.train.step import build_nets
from enlighten_ray.train.transforms import augment_low, darken


def _dark_scene(h: int = 90, w: int = 140, seed: int = 0) -> np.ndarray:
    """A dark uint8 scene with smooth light, edges and noise: what the prior's filters act on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    light = 10 + 60 * np.exp(-((xx - 0.6) ** 2 + (yy - 0.3) ** 2) * 8)
    tint = np.stack([light * 1.1, light, light * 0.8], axis=-1)
    tint[h // 3 : h // 2, w // 4 : w // 2] += 40  # a lit object with hard edges
    return np.clip(tint + rng.normal(0, 3, tint.shape), 0, 255).astype(np.uint8)


def _prior_uint8(img: np.ndarray, dtype: torch.dtype = torch.float32) -> np.ndarray:
    x = to_model_range(torch.from_numpy(img.copy()).permute(2, 0, 1)[None]).to(dtype)
    return from_model_range(lime_prior(x))[0].permute(1, 2, 0).numpy()


def _levels_apart(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_prior_is_the_numpy_teacher_within_one_level(dtype: torch.dtype) -> None:
    for seed, (h, w) in enumerate([(90, 140), (37, 61), (160, 96)]):
        img = _dark_scene(h, w, seed)
        assert _levels_apart(_prior_uint8(img, dtype), classical.teacher(img)) <= 1


def test_torch_prior_matches_the_teacher_on_real_images(enlighten_data) -> None:
    files = [f for f in sorted((enlighten_data / "eval").glob("*/*")) if f.is_file()][::25][:4]
    assert files
    for file in files:
        img = np.asarray(Image.open(file).convert("RGB"))
        assert _levels_apart(_prior_uint8(img), classical.teacher(img)) <= 1, file


def test_an_untrained_prior_generator_is_the_teacher() -> None:
    cfg = load_config(None, ["model.prior=lime", "model.width=4"])
    generator = build_nets(cfg).generator.eval()
    img = _dark_scene()
    with torch.no_grad():
        out = generator(to_model_range(torch.from_numpy(img).permute(2, 0, 1)[None]))
    assert _levels_apart(from_model_range(out)[0].permute(1, 2, 0).numpy(), classical.teacher(img)) <= 1
    # the paper's generator is not the teacher: the test can tell them apart
    paper = build_nets(load_config(None, ["model.width=4"])).generator.eval()
    with torch.no_grad():
        out = paper(to_model_range(torch.from_numpy(img).permute(2, 0, 1)[None]))
    assert _levels_apart(from_model_range(out)[0].permute(1, 2, 0).numpy(), classical.teacher(img)) > 1


def _prior_enhancer(**settings) -> Enhancer:
    cfg = load_config(None, ["model.prior=lime", "model.width=4"])
    return Enhancer(build_nets(cfg).generator, device="cpu", precision="fp32", compile="off", **settings)


def test_tiles_and_max_side_use_the_prior_of_the_whole_frame() -> None:
    img = _dark_scene(200, 300)
    whole = _prior_enhancer(tile=0)(img)
    tiled = _prior_enhancer(tile=96)(img)
    assert _levels_apart(tiled, whole) <= 1  # per-tile priors differ by tens of levels at the seams
    per_tile = np.concatenate([_prior_uint8(np.ascontiguousarray(img[:, i : i + 100])) for i in (0, 100, 200)], 1)
    assert _levels_apart(per_tile, whole) > 2
    # at max_side: the prior is the reduced frame's, its change upscaled onto the full frame
    small = np.asarray(Image.fromarray(img).resize((150, 100), Image.BILINEAR))
    reduced = _prior_enhancer(max_side=150)(img)
    assert reduced.shape == img.shape
    assert abs(float(reduced.mean()) - float(_prior_uint8(small).mean())) < 2


def test_strength_zero_is_the_input_and_one_is_the_model() -> None:
    img = _dark_scene()
    assert np.array_equal(_prior_enhancer(strength=0.0)(img), img)
    half = _prior_enhancer(strength=0.5)(img).astype(float)
    full = _prior_enhancer()(img).astype(float)
    assert np.abs(half - (img + full) / 2).max() <= 1


def test_generator_files_record_the_prior_and_old_files_load_as_none(tmp_path) -> None:
    save_generator(EnlightenGenerator(width=4, prior="lime"), tmp_path / "g.pt")
    model, info = load_generator(tmp_path / "g.pt")
    assert model.prior == "lime" and info.config["prior"] == "lime"
    old = torch.load(tmp_path / "g.pt", weights_only=True)
    del old["config"]["prior"]  # a file written before the prior existed
    torch.save(old, tmp_path / "old.pt")
    assert load_generator(tmp_path / "old.pt")[0].prior == "none"
    with pytest.raises(ValueError, match="prior must be one of"):
        prior_function("retinex")


def test_training_prior_is_computed_on_the_whole_darkened_image() -> None:
    img = _dark_scene(64, 64)
    cfg = DataSettings(crop_size=64, flip=False, darken_prob=1.0, darken_min=3.0, darken_max=3.0)
    crops = augment_low(img, cfg, np.random.default_rng(0), prior=lime_prior)
    full = to_model_range(torch.from_numpy(img).permute(2, 0, 1))
    assert torch.allclose(crops["low_input"], darken(full, 3.0))
    assert torch.allclose(crops["prior"], lime_prior(darken(full, 3.0)[None])[0])
    # a 32-px crop's prior is cut from the whole image's, not computed on the crop
    cfg = DataSettings(crop_size=32, flip=False, darken_prob=0.0)
    crops = augment_low(img, cfg, np.random.default_rng(0), prior=lime_prior)
    whole = lime_prior(full[None])[0]
    assert any(
        torch.allclose(crops["prior"], whole[:, t : t + 32, left : left + 32]) for t in range(33) for left in range(33)
    )


def test_the_prior_compiles() -> None:
    x = to_model_range(torch.from_numpy(_dark_scene(48, 64)).permute(2, 0, 1)[None])
    compiled = torch.compile(lime_prior, dynamic=False)
    assert torch.allclose(compiled(x), lime_prior(x), atol=2e-3)


def test_a_prior_step_trains_and_the_warm_up_moves_only_the_discriminators() -> None:
    from enlighten_ray.train.ema import averaged_generator, build_ema
    from enlighten_ray.train.losses import EnlightenGANLoss
    from enlighten_ray.train.step import build_optimizers, build_vgg, train_step

    overrides = ["model.prior=lime", "model.width=4", "model.ndf=4", "loss.vgg_weights=random"]
    cfg = load_config(None, [*overrides, "loss.residual_weight=1.0", "data.crop_size=32", "loss.patch_size=16"])
    torch.manual_seed(0)
    nets = build_nets(cfg)
    opts = build_optimizers(nets, cfg)
    loss = EnlightenGANLoss(*nets, build_vgg(cfg), cfg.loss)
    data = DataSettings(crop_size=32)
    rngs = [np.random.default_rng(seed) for seed in (0, 1)]
    crops = [augment_low(_dark_scene(48, 64, i), data, rng, prior=lime_prior) for i, rng in enumerate(rngs)]
    batch = {k: torch.stack([c[k] for c in crops]) for k in ("low", "low_input", "prior")}
    batch["normal"] = torch.rand(2, 3, 32, 32) * 2 - 1

    def snapshot(net: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in net.parameters()]

    g, d = snapshot(nets.generator), snapshot(nets.d_global)
    metrics = train_step(nets, opts, loss, batch, train_generator=False)
    assert set(metrics) == {"d_global", "d_local"}
    assert all(torch.equal(a, b) for a, b in zip(g, snapshot(nets.generator)))
    assert not all(torch.equal(a, b) for a, b in zip(d, snapshot(nets.d_global)))
    metrics = train_step(nets, opts, loss, batch)
    assert {"residual", "g_global", "sfp"} <= set(metrics) and float(metrics["residual"]) < 1e-6  # starts at the prior
    assert not all(torch.equal(a, b) for a, b in zip(g, snapshot(nets.generator)))
    # the moving average measures its BatchNorm on (input, prior) pairs, as G trained on them
    ema = build_ema(nets.generator, 1000, 2)
    ema.update_parameters(nets.generator)
    shipped = averaged_generator(ema, [(batch["low_input"], batch["prior"])])
    assert shipped(batch["low_input"], prior=batch["prior"]).shape == (2, 3, 32, 32)


def test_the_config_accepts_exactly_the_priors_the_model_builds() -> None:
    from enlighten_ray.config import CHOICES
    from enlighten_ray.models.prior import PRIORS

    assert CHOICES["model.prior"] == PRIORS


def test_the_prior_lifts_near_black_to_grey_not_to_the_codecs_tint() -> None:
    """A black sky with a violet offset (R/G/B 3/2/3, as the night dashcam's) beside a lit street:
    a 10x gain would make the offset a violet fog; the prior's dark regions come out grey."""
    rng = np.random.default_rng(0)
    img = np.zeros((64, 96, 3))
    img[:32] = (3, 2, 3)
    img[32:] = (90, 70, 50)  # warm, lit: its colour stays
    img = np.clip(img + rng.normal(0, 0.7, img.shape), 0, 255).astype(np.uint8)
    for out in (_prior_uint8(img), classical.teacher(img)):
        sky = out[:24].reshape(-1, 3).mean(axis=0)
        assert sky.min() > 8  # lifted
        assert sky.max() / sky.min() < 1.1, sky  # grey (blending toward grey only: the tint gives 1.5)
        street = out[44:].reshape(-1, 3).mean(axis=0)
        assert street[0] > 1.3 * street[2], street  # warm light keeps its colour
