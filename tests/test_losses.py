"""Each loss term against a hand computation on tiny tensors."""

from __future__ import annotations

import pytest
import torch

from enlighten_ray.train.losses import (
    colour_loss,
    crop_patches,
    dark_colour_loss,
    dark_exposure_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    random_patch_offsets,
    relativistic_d_loss,
    relativistic_g_loss,
    sfp_loss,
)

REAL = torch.tensor([1.0, 3.0])  # mean 2
FAKE = torch.tensor([0.0, 2.0])  # mean 1


def test_relativistic_d_loss_by_hand() -> None:
    # real - mean(fake) = [0, 2] -> target 1: ((0-1)^2 + (2-1)^2) / 2 = 1
    # fake - mean(real) = [-2, 0] -> target 0: (4 + 0) / 2 = 2
    assert relativistic_d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (1 + 2))


def test_relativistic_g_loss_by_hand() -> None:
    # real - mean(fake) = [0, 2] -> target 0: (0 + 4) / 2 = 2
    # fake - mean(real) = [-2, 0] -> target 1: (9 + 1) / 2 = 5
    assert relativistic_g_loss(REAL, FAKE).item() == pytest.approx(0.5 * (2 + 5))


def test_lsgan_losses_by_hand() -> None:
    # D: real -> 1: (0 + 4)/2 = 2; fake -> 0: (0 + 4)/2 = 2; half their sum = 2
    assert lsgan_d_loss(REAL, FAKE).item() == pytest.approx(2.0)
    # G: fake -> 1: (1 + 1)/2 = 1
    assert lsgan_g_loss(FAKE).item() == pytest.approx(1.0)


def test_sfp_loss_is_mse_of_instance_normalised_features() -> None:
    identity = torch.nn.Identity()
    a = torch.tensor([[[[0.0, 2.0]]]])  # one channel: mean 1, biased std 1 -> [-1, 1]
    b = torch.tensor([[[[5.0, 5.0 + 1e-9]]]])  # nearly constant -> ~[0, 0]
    assert sfp_loss(identity, a, a).item() == pytest.approx(0.0)
    # Instance norm removes scale and offset, so an affine copy has no loss...
    assert sfp_loss(identity, a, 3 * a + 7).item() == pytest.approx(0.0, abs=1e-6)
    # ...while a flat image against [-1, 1] costs mean(1, 1) = 1.
    assert sfp_loss(identity, a, b).item() == pytest.approx(1.0, abs=1e-3)


def test_patches_share_offsets_and_stay_inside() -> None:
    g = torch.Generator().manual_seed(0)
    offsets = random_patch_offsets(40, 50, 32, 6, g)
    assert len(offsets) == 6
    assert all(0 <= t <= 8 and 0 <= l <= 18 for t, l in offsets)
    x = torch.arange(2 * 1 * 40 * 50, dtype=torch.float32).view(2, 1, 40, 50)
    patches = crop_patches(x, offsets, 32)
    assert patches.shape == (12, 1, 32, 32)
    t, l = offsets[1]
    torch.testing.assert_close(patches[2:4], x[..., t : t + 32, l : l + 32])


def test_local_loss_over_batched_patches_equals_the_mean_of_per_patch_losses() -> None:
    torch.manual_seed(0)
    preds = [torch.randn(2, 1, 3, 3) for _ in range(4)]
    reals = [torch.randn(2, 1, 3, 3) for _ in range(4)]
    per_patch = torch.stack([lsgan_d_loss(r, f) for r, f in zip(reals, preds)]).mean()
    torch.testing.assert_close(lsgan_d_loss(torch.cat(reals), torch.cat(preds)), per_patch)


def _to_model(rgb_255: torch.Tensor) -> torch.Tensor:
    return rgb_255 / 127.5 - 1.0


def test_dark_colour_loss_sees_a_cast_only_where_the_input_is_dark() -> None:
    low = torch.full((1, 3, 8, 8), 200.0)
    low[..., :4] = 2.0  # left half near black
    tinted = torch.full((1, 3, 8, 8), 100.0)
    tinted[:, 1, :, :4] = 160.0  # green where the input was dark
    grey_in_dark = tinted.clone()
    grey_in_dark[:, 1, :, :4] = 100.0
    grey_in_dark[:, 0, :, 4:] = 220.0  # a cast where the input was bright is not this loss's business
    loss_tinted = dark_colour_loss(_to_model(tinted), _to_model(low), dark_luma=10.0)
    r, g = 100 / 255 + 1 / 64, 160 / 255 + 1 / 64
    assert loss_tinted.item() == pytest.approx(2 * torch.log(torch.tensor(g / r)).item() ** 2, rel=1e-4)
    assert dark_colour_loss(_to_model(grey_in_dark), _to_model(low), dark_luma=10.0).item() == pytest.approx(0.0)


def test_colour_loss_sees_a_cast_over_the_whole_image() -> None:
    low = _to_model(torch.full((1, 3, 8, 8), 120.0))  # no near-black pixel at all
    warm = _to_model(torch.tensor([150.0, 120.0, 90.0]).view(1, 3, 1, 1).repeat(1, 1, 8, 8))
    assert dark_colour_loss(warm, low, dark_luma=10.0).item() == 0.0
    assert colour_loss(warm, low).item() > 0.05
    assert colour_loss(_to_model(torch.full((1, 3, 8, 8), 120.0)), low).item() == pytest.approx(0.0, abs=1e-9)


def test_dark_colour_loss_ignores_images_without_dark_pixels_and_pulls_channels_together() -> None:
    low = _to_model(torch.full((2, 3, 8, 8), 2.0))
    low[1] = _to_model(torch.full((3, 8, 8), 120.0))  # no dark pixel: contributes 0
    out = _to_model(torch.tensor([90.0, 150.0, 90.0]).view(1, 3, 1, 1).repeat(2, 1, 8, 8)).requires_grad_()
    loss = dark_colour_loss(out, low, dark_luma=10.0)
    loss.backward()
    assert loss.item() > 0
    assert out.grad[1].abs().sum() == 0
    assert out.grad[0, 1].sum() > 0 > out.grad[0, 0].sum()  # descent lowers green, raises red


def test_dark_exposure_loss_lifts_near_black_areas_only_from_below() -> None:
    low = _to_model(torch.full((3, 3, 8, 8), 2.0))
    low[2] = _to_model(torch.full((3, 8, 8), 150.0))  # no near-black pixel: counts 0
    out = _to_model(torch.stack([torch.full((3, 8, 8), v) for v in (20.0, 90.0, 0.0)])).requires_grad_()
    loss = dark_exposure_loss(out, low, dark_luma=10.0, level=40.0)
    assert loss.item() == pytest.approx(((40 - 20) / 255) ** 2 / 3, rel=1e-4)  # only the first is short
    loss.backward()
    assert out.grad[0].sum() < 0  # descent brightens it
    assert out.grad[1].abs().sum() == 0 and out.grad[2].abs().sum() == 0


def test_dark_ceiling_pushes_down_only_lifted_black() -> None:
    from enlighten_ray.train.losses import dark_ceiling_loss

    low = torch.full((1, 3, 8, 8), -1.0)  # black input (luma 0)
    low[..., :4] = 0.0  # the left half lit (luma ~128): not near-black
    fog = torch.full((1, 3, 8, 8), -0.2)  # luma ~102 everywhere
    dark = fog.clone()
    dark[..., 4:] = -0.8  # the black half kept at luma ~26
    assert float(dark_ceiling_loss(fog, low, 4.0, 40.0)) == pytest.approx(((102 - 40) / 255) ** 2, rel=0.02)
    assert float(dark_ceiling_loss(dark, low, 4.0, 40.0)) == 0.0  # the lit half may be bright
    fog.requires_grad_(True)
    dark_ceiling_loss(fog, low, 4.0, 40.0).backward()
    assert fog.grad[..., :4].abs().sum() == 0 and fog.grad[..., 4:].sum() > 0
