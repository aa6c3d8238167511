"""The warm start (classical teacher, teacher-only steps, decaying anchor) and G's moving average."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from enlighten_ray import classical
from enlighten_ray.config import WarmStartSettings, load_config
from enlighten_ray.train.ema import averaged_generator, build_ema, ema_decay
from enlighten_ray.train.losses import EnlightenGANLoss
from enlighten_ray.train.step import build_nets, build_optimizers, build_vgg, train_step, warm_step
from enlighten_ray.train.transforms import augment_low


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    cfg = load_config(
        None,
        ["model.width=4", "model.ndf=4", "loss.vgg_weights=random", "loss.patch_size=16", "data.crop_size=32"],
    )
    nets = build_nets(cfg)
    low = torch.rand(2, 3, 32, 32) * 2 - 1
    batch = {
        "low": low,
        "low_input": low,
        "normal": torch.rand(2, 3, 32, 32) * 2 - 1,
        "teacher": (low * 0.5 + 0.4).clamp(-1, 1),
    }
    return cfg, nets, build_optimizers(nets, cfg), batch


def _states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_warm_steps_fit_the_teacher_and_leave_the_discriminators_alone(tiny) -> None:
    _, nets, opts, batch = tiny
    d_before = _states(nets.d_global)
    for group in opts.generator.param_groups:
        group["lr"] = 2e-3  # a tiny G learns in a few steps
    first = float(warm_step(nets.generator, opts.generator, batch)["teacher_l1"])
    for _ in range(30):
        last = float(warm_step(nets.generator, opts.generator, batch)["teacher_l1"])
    assert last < 0.7 * first
    assert all(torch.equal(d_before[k], v) for k, v in nets.d_global.state_dict().items())


def test_the_anchor_adds_the_teacher_l1_to_g_loss_only_while_weighted(tiny) -> None:
    cfg, nets, opts, batch = tiny
    loss = EnlightenGANLoss(nets.generator, nets.d_global, nets.d_local, build_vgg(cfg), cfg.loss)
    anchored = train_step(nets, opts, loss, batch, anchor=0.5)
    plain = train_step(nets, opts, loss, batch, anchor=0.0)
    assert "teacher_l1" in anchored and "teacher_l1" not in plain
    terms = sum(float(anchored[k]) for k in ("g_global", "g_local", "sfp"))
    assert float(anchored["g_total"]) == pytest.approx(terms + 0.5 * float(anchored["teacher_l1"]), rel=1e-5)


def test_anchor_weight_decays_linearly_to_zero_after_the_warm_phase() -> None:
    warm = WarmStartSettings(images=100, anchor_weight=2.0, anchor_images=200)
    assert warm.needs_teacher
    assert [warm.anchor(n) for n in (0, 100, 200, 300, 400)] == [2.0, 2.0, 1.0, 0.0, 0.0]
    assert not WarmStartSettings().needs_teacher and WarmStartSettings().anchor(0) == 0.0


def test_ema_moves_toward_g_by_its_decay_and_averages_batchnorm_statistics(tiny) -> None:
    _, nets, _, _ = tiny
    g = nets.generator
    ema = build_ema(g, half_life_images=16, batch_size=8)
    assert ema_decay(16, 8) == pytest.approx(0.5**0.5)
    ema.update_parameters(g)  # the first update copies G
    start = _states(ema.module)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
        for name, b in g.named_buffers():
            if "running_mean" in name:
                b.add_(1.0)
    ema.update_parameters(g)
    d = 1 - ema_decay(16, 8)
    for name, value in ema.module.state_dict().items():
        if value.is_floating_point() and ("running_mean" in name or name in dict(g.named_parameters())):
            assert torch.allclose(value, start[name] + d, atol=1e-5), name
    assert build_ema(g, 0, 8) is None


def test_ema_resumes_exactly_from_its_state_dict(tiny) -> None:
    _, nets, opts, batch = tiny
    ema = build_ema(nets.generator, 32, 2)
    for _ in range(3):
        warm_step(nets.generator, opts.generator, batch)
        ema.update_parameters(nets.generator)
    resumed = build_ema(nets.generator, 32, 2)
    resumed.load_state_dict(ema.state_dict())
    warm_step(nets.generator, opts.generator, batch)
    ema.update_parameters(nets.generator)
    resumed.update_parameters(nets.generator)
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), resumed.state_dict().values()))


def _dark_noisy_scene(seed: int = 0) -> np.ndarray:
    """Left half a bright wall, right half near-black with a few code values of noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, :64] = 120
    img[:, 64:] = rng.integers(0, 4, (96, 64, 3))
    return img


def test_teacher_smooths_near_black_noise_and_keeps_bright_areas() -> None:
    img = _dark_noisy_scene()
    lime, teacher = classical.lime(img).astype(float), classical.teacher(img).astype(float)
    dark = (slice(8, -8), slice(80, -8))
    assert teacher[dark].std() < 0.5 * lime[dark].std()
    bright = (slice(8, -8), slice(8, 40))
    assert np.abs(teacher[bright] - lime[bright]).max() <= 2


def test_augment_low_crops_and_flips_the_teacher_with_the_low_image() -> None:
    cfg = load_config(None, ["data.crop_size=32", "data.darken_prob=0.0"]).data
    img = _dark_noisy_scene()
    torch.manual_seed(3)
    crops = augment_low(img, cfg, np.random.default_rng(0), teacher=img)
    assert crops["teacher"].shape == crops["low"].shape == (3, 32, 32)
    assert torch.equal(crops["teacher"], crops["low"])
    assert "teacher" not in augment_low(img, cfg, np.random.default_rng(0))


def test_the_shipped_average_measures_its_own_batchnorm_statistics(tiny) -> None:
    _, nets, opts, batch = tiny
    ema = build_ema(nets.generator, 16, 2)
    for _ in range(6):  # G moves; the average trails it with averaged statistics
        warm_step(nets.generator, opts.generator, batch)
        ema.update_parameters(nets.generator)
    shipped = averaged_generator(ema, [batch["low_input"]])
    probe = copy.deepcopy(ema.module).train()  # batch statistics of the averaged weights
    with torch.no_grad():
        want = probe(batch["low_input"])
        got = shipped(batch["low_input"])
    assert not shipped.training
    assert torch.allclose(got, want, atol=2e-3)  # eval mode with re-measured statistics = batch statistics
    params = dict(ema.module.named_parameters())
    assert all(torch.equal(p, params[k]) for k, p in shipped.named_parameters())  # the average's weights
    assert averaged_generator(ema, []).state_dict()["bn1_1.running_var"].equal(ema.module.bn1_1.running_var)


def test_the_shipped_average_of_a_syncbatchnorm_generator_is_measured_alone(tiny) -> None:
    _, nets, _, batch = tiny
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(nets.generator))
    ema = build_ema(synced, 16, 2)
    ema.update_parameters(synced)
    shipped = averaged_generator(ema, [batch["low_input"]])  # SyncBatchNorm would gather (or refuse on CPU)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in shipped.modules())
    assert torch.equal(shipped.conv1_1.weight, synced.conv1_1.weight)
