"""EnlightenGAN's losses (Jiang et al. 2020, Sec. 3.2-3.3), one small function per term, grouped
in `EnlightenGANLoss` with one method per training phase."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from enlighten_ray.config import LossSettings
from enlighten_ray.models.generator import attention_map
from enlighten_ray.models.prior import LUMA

__all__ = [
    "EnlightenGANLoss",
    "crop_patches",
    "colour_loss",
    "dark_colour_loss",
    "dark_ceiling_loss",
    "dark_exposure_loss",
    "lsgan_d_loss",
    "lsgan_g_loss",
    "random_patch_offsets",
    "relativistic_d_loss",
    "relativistic_g_loss",
    "sfp_loss",
    "teacher_l1",
]


def _mse_to(pred: torch.Tensor, target: float) -> torch.Tensor:
    return ((pred.float() - target) ** 2).mean()


def relativistic_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Global D, relativistic LSGAN (Eq. 1): real should beat the average fake by 1, fake not at all."""
    return 0.5 * (_mse_to(real - fake.mean(), 1.0) + _mse_to(fake - real.mean(), 0.0))


def relativistic_g_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Global G, relativistic LSGAN (Eq. 2): the targets of the D loss swapped."""
    return 0.5 * (_mse_to(real - fake.mean(), 0.0) + _mse_to(fake - real.mean(), 1.0))


def lsgan_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Local D, plain LSGAN (Eq. 3)."""
    return 0.5 * (_mse_to(real, 1.0) + _mse_to(fake, 0.0))


def lsgan_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Local G, plain LSGAN (Eq. 4)."""
    return _mse_to(fake, 1.0)


def sfp_loss(vgg: nn.Module, output: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Self feature preserving loss (Eq. 5): MSE of instance-normalised (affine-free) VGG features."""
    a = F.instance_norm(vgg(output).float())
    with torch.no_grad():  # the target: no graph through the frozen VGG for the low input
        b = F.instance_norm(vgg(low).float())
    return F.mse_loss(a, b)


def teacher_l1(output: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The warm start's regression to the classical teacher (both in [-1, 1])."""
    return F.l1_loss(output.float(), teacher.float())


def _dark_means(output: torch.Tensor, low_input: torch.Tensor, dark_luma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3) channel means of the output (0-1) over the pixels whose input luma (0-255) is below
    `dark_luma`, and (B,) 1/0: whether an image has at least 16 such pixels (else it counts 0)."""
    luma = (1.0 - attention_map(low_input.detach().float())) * 255.0  # (B, 1, H, W), 0-255
    mask = (luma < dark_luma).float()
    count = mask.sum(dim=(2, 3))  # (B, 1)
    out = (output.float() + 1.0) / 2.0
    return (out * mask).sum(dim=(2, 3)) / count.clamp(min=1.0), (count[:, 0] >= 16).float()


def dark_colour_loss(output: torch.Tensor, low_input: torch.Tensor, dark_luma: float) -> torch.Tensor:
    """Mean over images of the squared log-ratios between the output's channel means over the
    input's near-black pixels. Scale-free: a cast of ratio r costs about log(r)^2 at any brightness."""
    means, used = _dark_means(output, low_input, dark_luma)
    logs = torch.log(means.clamp(min=0.0) + 1.0 / 64)  # damped: casts of outputs that stay near black do not count
    pairs = (logs[:, [0, 0, 1]] - logs[:, [1, 2, 2]]) ** 2
    return (pairs.sum(dim=1) * used).sum() / output.shape[0]


def colour_loss(output: torch.Tensor, low_input: torch.Tensor) -> torch.Tensor:
    """`dark_colour_loss` over every pixel (input luma is at most 255): a grey-world prior."""
    return dark_colour_loss(output, low_input, dark_luma=256.0)


def dark_exposure_loss(output: torch.Tensor, low_input: torch.Tensor, dark_luma: float, level: float) -> torch.Tensor:
    """One-sided, in 0-1 units: mean over images of max(0, level - the output's mean luma over the
    input's near-black pixels)^2. Lifts areas the colour loss alone lets stay black (Zero-DCE's
    exposure control, restricted to near-black input and only from below); `level` is 0-255."""
    means, used = _dark_means(output, low_input, dark_luma)
    luma = means @ torch.tensor(LUMA, device=means.device)
    short = (level / 255.0 - luma).clamp(min=0.0) ** 2
    return (short * used).sum() / output.shape[0]


def dark_ceiling_loss(output: torch.Tensor, low: torch.Tensor, black_luma: float, ceiling: float) -> torch.Tensor:
    """In 0-1 units: mean over the black pixels of `low` (luma below `black_luma`, 0-255) of
    max(0, output luma - ceiling)^2. Where the scene holds no light a Retinex prior's gain is largest
    and lifts sensor and codec noise into a grey fog; this keeps such pixels dark instead. `low` is
    the crop before the darkening augmentation, so a darkened copy is held to the same pixels."""
    mask = ((1.0 - attention_map(low.detach().float())) * 255.0 < black_luma).float()
    over = ((1.0 - attention_map(output.float())) - ceiling / 255.0).clamp(min=0.0) ** 2
    return (over * mask).sum() / mask.sum().clamp(min=1.0)


def random_patch_offsets(
    height: int, width: int, size: int, count: int, rng: torch.Generator | None = None
) -> list[tuple[int, int]]:
    """`count` random (top, left) corners of size x size patches inside a height x width image."""
    top = torch.randint(0, max(1, height - size + 1), (count,), generator=rng)
    left = torch.randint(0, max(1, width - size + 1), (count,), generator=rng)
    return list(zip(top.tolist(), left.tolist()))


def crop_patches(x: torch.Tensor, offsets: list[tuple[int, int]], size: int) -> torch.Tensor:
    """(B, C, H, W) -> (len(offsets) * B, C, size, size), patch-major. Batching the patches makes one
    MSE over them equal to the average of the per-patch losses, as the release computes it."""
    return torch.cat([x[..., t : t + size, l : l + size] for t, l in offsets], dim=0)


def _unwrap(module: nn.Module) -> nn.Module:
    """The bare network under DDP: G-phase passes through a frozen D must not involve D's reducer."""
    return getattr(module, "module", module)


@dataclass
class GeneratorPhase:
    loss: torch.Tensor
    fake: torch.Tensor  # G's output, still attached to G's graph
    offsets: list[tuple[int, int]]  # patch corners, reused by the local D phase
    metrics: dict[str, torch.Tensor]


class EnlightenGANLoss:
    """Holds G, both Ds and the VGG features; one method per phase of a training step."""

    def __init__(
        self, generator: nn.Module, d_global: nn.Module, d_local: nn.Module, vgg: nn.Module, cfg: LossSettings
    ) -> None:
        self.generator, self.d_global, self.d_local, self.vgg, self.cfg = generator, d_global, d_local, vgg, cfg

    def generator_phase(
        self,
        low: torch.Tensor,
        low_input: torch.Tensor,
        normal: torch.Tensor,
        rng: torch.Generator | None = None,
        teacher: torch.Tensor | None = None,
        anchor: float = 0.0,
        prior: torch.Tensor | None = None,
    ) -> GeneratorPhase:
        """`low_input` is what G sees (possibly darkened); the SFP loss compares with `low`. With
        `anchor` > 0, G's loss adds anchor x L1 to `teacher` (the warm start's decaying anchor).
        `prior`: the prior of the whole `low_input` image, cropped with it (model.prior lime)."""
        cfg = self.cfg
        fake = self.fake(low_input, prior)  # one G forward per step (BatchNorm under DDP)
        d_global, d_local = _unwrap(self.d_global), _unwrap(self.d_local)
        g_global = relativistic_g_loss(d_global(normal), d_global(fake))

        offsets = random_patch_offsets(*fake.shape[-2:], cfg.patch_size, 1 + cfg.num_patches, rng)
        fake_patches = crop_patches(fake, offsets, cfg.patch_size)
        g_local = lsgan_g_loss(d_local(fake_patches))
        sfp = sfp_loss(self.vgg, fake, low) + sfp_loss(
            self.vgg, fake_patches, crop_patches(low, offsets, cfg.patch_size)
        )

        total = cfg.global_weight * g_global + cfg.local_weight * g_local + cfg.sfp_weight * sfp
        metrics = {"g_global": g_global, "g_local": g_local, "sfp": sfp}
        if cfg.dark_colour_weight > 0:
            metrics["dark_colour"] = dark_colour_loss(fake, low_input, cfg.dark_luma)
            total = total + cfg.dark_colour_weight * metrics["dark_colour"]
        if cfg.colour_weight > 0:
            metrics["colour"] = colour_loss(fake, low_input)
            total = total + cfg.colour_weight * metrics["colour"]
        if cfg.dark_exposure_weight > 0:
            metrics["dark_exposure"] = dark_exposure_loss(fake, low_input, cfg.dark_luma, cfg.dark_exposure_luma)
            total = total + cfg.dark_exposure_weight * metrics["dark_exposure"]
        if cfg.dark_ceiling_weight > 0:
            metrics["dark_ceiling"] = dark_ceiling_loss(fake, low, cfg.black_luma, cfg.dark_ceiling_luma)
            total = total + cfg.dark_ceiling_weight * metrics["dark_ceiling"]
        if cfg.residual_weight > 0 and prior is not None:
            metrics["residual"] = F.l1_loss(fake.float(), prior.float())
            total = total + cfg.residual_weight * metrics["residual"]
        if anchor > 0 and teacher is not None:
            metrics["teacher_l1"] = teacher_l1(fake, teacher)
            total = total + anchor * metrics["teacher_l1"]
        metrics["g_total"] = total
        return GeneratorPhase(total, fake, offsets, metrics)

    def fake(self, low_input: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(low_input) if prior is None else self.generator(low_input, prior=prior)

    def d_global_loss(self, normal: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        # Ds have no normalisation, so one forward over [real; fake] equals two separate ones.
        pred = self.d_global(torch.cat([normal, fake.detach()]))
        real, fake_pred = pred.split([normal.shape[0], fake.shape[0]])
        return relativistic_d_loss(real, fake_pred)

    def d_local_loss(self, normal: torch.Tensor, fake: torch.Tensor, offsets: list[tuple[int, int]]) -> torch.Tensor:
        size = self.cfg.patch_size
        real_patches, fake_patches = crop_patches(normal, offsets, size), crop_patches(fake.detach(), offsets, size)
        pred = self.d_local(torch.cat([real_patches, fake_patches]))
        real, fake_pred = pred.split([real_patches.shape[0], fake_patches.shape[0]])
        return lsgan_d_loss(real, fake_pred)
