"""One framework-free training step and the released augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from enlighten_ray.config import load_config
from enlighten_ray.train.losses import EnlightenGANLoss
from enlighten_ray.train.step import build_nets, build_optimizers, build_vgg, lr_factor, train_step
from enlighten_ray.train.transforms import augment_low, augment_normal, image_to_model


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    cfg = load_config(
        None,
        [
            "model.width=4",
            "model.ndf=4",
            "loss.vgg_weights=random",
            "loss.num_patches=2",
            "loss.patch_size=16",
            "data.crop_size=32",
        ],
    )
    nets = build_nets(cfg)
    opts = build_optimizers(nets, cfg)
    loss = EnlightenGANLoss(nets.generator, nets.d_global, nets.d_local, build_vgg(cfg), cfg.loss)
    low = torch.rand(2, 3, 32, 32) * 2 - 1
    batch = {"low": low, "low_input": (low + 1) / 3 - 1, "normal": torch.rand(2, 3, 32, 32) * 2 - 1}
    return cfg, nets, opts, loss, batch


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_one_step_updates_g_and_both_discriminators(tiny) -> None:
    _, nets, opts, loss, batch = tiny
    before = {name: snapshot(getattr(nets, name)) for name in ("generator", "d_global", "d_local")}
    metrics = train_step(nets, opts, loss, batch)
    assert set(metrics) == {"g_global", "g_local", "sfp", "g_total", "d_global", "d_local"}
    assert all(torch.isfinite(v) for v in metrics.values())
    for name in before:
        assert changed(before[name], getattr(nets, name)), f"{name} did not change"
    # The Ds are trainable again after the G phase froze them.
    assert all(p.requires_grad for p in nets.d_global.parameters())


def test_d_step_leaves_g_untouched(tiny) -> None:
    _, nets, opts, loss, batch = tiny
    with torch.no_grad():
        fake = nets.generator(batch["low_input"])
    g_before = snapshot(nets.generator)
    d = loss.d_global_loss(batch["normal"], fake) + loss.d_local_loss(batch["normal"], fake, [(0, 0), (8, 8)])
    opts.d_global.zero_grad()
    opts.d_local.zero_grad()
    d.backward()
    opts.d_global.step()
    opts.d_local.step()
    assert not changed(g_before, nets.generator)
    assert all(p.grad is None for p in nets.generator.parameters())


def test_g_phase_puts_no_gradient_on_frozen_discriminators(tiny) -> None:
    _, nets, opts, loss, batch = tiny
    nets.d_global.requires_grad_(False)
    nets.d_local.requires_grad_(False)
    loss.generator_phase(batch["low"], batch["low_input"], batch["normal"]).loss.backward()
    assert all(p.grad is None for p in nets.d_global.parameters())
    assert all(p.grad is not None for p in nets.generator.parameters())


def test_learning_rate_schedule_is_constant_then_linear_to_zero() -> None:
    factors = [lr_factor(e, 100, 100) for e in range(200)]
    assert factors[:101] == [1.0] * 101  # the release lowers the rate only after epoch 101 (1-based)
    assert all(a > b for a, b in zip(factors[100:], factors[101:]))
    assert factors[101] == pytest.approx(0.99) and factors[-1] == pytest.approx(0.01)
    assert lr_factor(200, 100, 100) == 0.0


def test_augmentation_darkens_only_what_g_sees() -> None:
    cfg = load_config(None, ["data.crop_size=16", "loss.patch_size=16", "data.darken_prob=1.0"]).data
    image = np.full((20, 24, 3), 200, np.uint8)
    out = augment_low(image, cfg, np.random.default_rng(0))
    assert out["low"].shape == (3, 16, 16)
    ratio = ((out["low"] + 1) / (out["low_input"] + 1)).unique()
    assert len(ratio) == 1 and 2.0 <= ratio.item() <= 4.0
    cfg.darken_prob = 0.0
    out = augment_low(image, cfg, np.random.default_rng(0))
    assert torch.equal(out["low"], out["low_input"])


def test_images_smaller_than_the_crop_are_resized_not_a_crash() -> None:
    cfg = load_config(None, ["data.crop_size=64"]).data
    small = np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8)
    assert augment_normal(small, cfg).shape == (3, 64, 64)
    assert image_to_model(np.array([[[0, 255, 128]]], np.uint8)).flatten().tolist() == pytest.approx(
        [-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6
    )


def test_networks_start_from_the_release_init() -> None:
    torch.manual_seed(0)
    nets = build_nets(load_config(None, []))
    for net in (nets.generator, nets.d_global, nets.d_local):
        convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        std = torch.cat([w.flatten() for w in convs]).std().item()
        assert abs(std - 0.02) < 0.002, std
    gammas = torch.cat([m.weight for m in nets.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    betas = torch.cat([m.bias for m in nets.generator.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(gammas.mean().item() - 1) < 0.01 and gammas.std().item() < 0.03 and not betas.any()


def test_dark_region_losses_join_g_total_only_when_weighted(tiny) -> None:
    import dataclasses

    _, _, _, loss, batch = tiny
    batch = {**batch, "low_input": torch.full_like(batch["low"], -0.99)}  # all near black
    torch.manual_seed(1)
    plain = loss.generator_phase(batch["low"], batch["low_input"], batch["normal"])
    assert not {"dark_colour", "dark_exposure", "colour"} & set(plain.metrics)
    loss.cfg = dataclasses.replace(loss.cfg, dark_colour_weight=2.0, dark_exposure_weight=10.0, colour_weight=1.0)
    torch.manual_seed(1)
    weighted = loss.generator_phase(batch["low"], batch["low_input"], batch["normal"])
    m = weighted.metrics
    extra = 2.0 * m["dark_colour"] + 10.0 * m["dark_exposure"] + 1.0 * m["colour"]
    assert m["dark_exposure"] > 0
    assert torch.allclose(m["g_total"], plain.metrics["g_total"] + extra, rtol=1e-5)
