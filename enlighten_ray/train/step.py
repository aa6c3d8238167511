"""Building the EnlightenGAN networks and one framework-free training step. Ray Train's
`train_func` wraps exactly this, so the step can be tested without Ray."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn

from enlighten_ray.config import Config
from enlighten_ray.models.discriminator import NoNormDiscriminator
from enlighten_ray.models.generator import EnlightenGenerator
from enlighten_ray.models.vgg import VGGFeatures, load_vgg
from enlighten_ray.train.losses import EnlightenGANLoss, random_patch_offsets, teacher_l1

__all__ = [
    "Nets",
    "Optimizers",
    "build_nets",
    "build_optimizers",
    "build_vgg",
    "init_weights",
    "lr_factor",
    "train_step",
    "warm_step",
]


class Nets(NamedTuple):
    generator: nn.Module
    d_global: nn.Module
    d_local: nn.Module


class Optimizers(NamedTuple):
    generator: torch.optim.Optimizer
    d_global: torch.optim.Optimizer
    d_local: torch.optim.Optimizer


def init_weights(module: nn.Module) -> None:
    """The release's `weights_init`: conv weights N(0, 0.02), BatchNorm gamma N(1, 0.02) and beta 0;
    conv biases keep PyTorch's default, as released. Use with `module.apply`."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_nets(cfg: Config) -> Nets:
    """G and both Ds, initialised as the release, in channels_last (faster convolutions on CPU and GPU)."""
    m = cfg.model
    nets = [
        EnlightenGenerator(width=m.width, align_corners=m.align_corners, prior=m.prior),
        NoNormDiscriminator(ndf=m.ndf, n_layers=m.global_layers),
        NoNormDiscriminator(ndf=m.ndf, n_layers=m.local_layers),
    ]
    for net in nets:
        net.apply(init_weights)
        net.to(memory_format=torch.channels_last)
    if m.prior != "none":
        nets[0].reset_residual()
    return Nets(*nets)


def build_vgg(cfg: Config) -> VGGFeatures:
    """`vgg_weights: random` builds an untrained VGG so smoke runs need no weights file; it still
    preserves structure, but real training needs ImageNet weights."""
    weights = None if cfg.loss.vgg_weights == "random" else load_vgg(cfg.loss.vgg_weights or None)
    vgg = VGGFeatures(weights, pool4=cfg.loss.vgg_pool4, caffe_mean=cfg.loss.vgg_mean)
    return vgg.to(memory_format=torch.channels_last)


def build_optimizers(nets: Nets, cfg: Config) -> Optimizers:
    o = cfg.optim

    def adam(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(net.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))

    return Optimizers(adam(nets.generator), adam(nets.d_global), adam(nets.d_local))


def lr_factor(epoch: int, epochs_constant: int, epochs_decay: int) -> float:
    """Learning-rate multiplier for 0-based `epoch`, as the release: it trains epochs_constant + 1
    epochs at the full rate, then lowers the rate by lr / epochs_decay after each epoch, reaching 0
    when the last epoch is done."""
    return max(0.0, 1.0 - max(0, epoch - epochs_constant) / epochs_decay) if epochs_decay else 1.0


def _set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        net.requires_grad_(flag)


def train_step(
    nets: Nets,
    opts: Optimizers,
    loss: EnlightenGANLoss,
    batch: dict[str, torch.Tensor],
    autocast: contextlib.AbstractContextManager | None = None,
    rng: torch.Generator | None = None,
    anchor: float = 0.0,
    train_generator: bool = True,
) -> dict[str, torch.Tensor]:
    """One step in the release's order: G, then global D and local D on the same (detached) fake.
    `batch` holds `low`, `low_input` (maybe darkened) and `normal`, (B, 3, S, S) in [-1, 1],
    `prior` with a prior generator, and `teacher` where `anchor` > 0 adds the warm start's L1
    anchor to G's loss. `train_generator` False: G only makes the fakes (the Ds' warm-up)."""
    autocast = autocast or contextlib.nullcontext()
    low, low_input, normal, prior = batch["low"], batch["low_input"], batch["normal"], batch.get("prior")

    if train_generator:  # G phase: freeze the Ds so the G loss puts no gradient on them.
        _set_requires_grad([nets.d_global, nets.d_local], False)
        opts.generator.zero_grad(set_to_none=True)
        with autocast:
            g = loss.generator_phase(low, low_input, normal, rng, batch.get("teacher"), anchor, prior)
        g.loss.backward()
        opts.generator.step()
        _set_requires_grad([nets.d_global, nets.d_local], True)
        fake, offsets, g_metrics = g.fake.detach(), g.offsets, g.metrics
    else:
        with torch.no_grad(), autocast:
            fake = loss.fake(low_input, prior)
        size = loss.cfg.patch_size
        offsets, g_metrics = random_patch_offsets(*fake.shape[-2:], size, 1 + loss.cfg.num_patches, rng), {}

    opts.d_global.zero_grad(set_to_none=True)
    with autocast:
        d_global = loss.d_global_loss(normal, fake)
    d_global.backward()
    opts.d_global.step()

    opts.d_local.zero_grad(set_to_none=True)
    with autocast:
        d_local = loss.d_local_loss(normal, fake, offsets)
    d_local.backward()
    opts.d_local.step()

    metrics = {**g_metrics, "d_global": d_global, "d_local": d_local}
    # Detached tensors, not floats: converting every step would sync the GPU seven times.
    return {k: v.detach() for k, v in metrics.items()}


def warm_step(
    generator: nn.Module,
    opt: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, torch.Tensor]:
    """The warm start's step: G regresses (L1) to the classical `teacher` of its own low crop, from
    `low_input` (maybe darkened, so G learns the teacher's output from darker inputs too). No
    discriminators and no VGG: a fraction of a full step's cost."""
    opt.zero_grad(set_to_none=True)
    with autocast or contextlib.nullcontext():
        prior = batch.get("prior")
        fake = generator(batch["low_input"]) if prior is None else generator(batch["low_input"], prior=prior)
    l1 = teacher_l1(fake, batch["teacher"])
    l1.backward()
    opt.step()
    return {"teacher_l1": l1.detach()}
