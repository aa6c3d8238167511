"""Building the EnlightenGAN networks and one framework-free training step. Ray Train's
`train_func` wraps exactly this, so the step can be tested without Ray."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .config import Config
from .losses import EnlightenGANLoss
from .models.discriminator import NoNormDiscriminator
from .models.generator import EnlightenGenerator
from .models.vgg import VGGFeatures, load_vgg_state_dict

__all__ = ["Nets", "Optimizers", "build_nets", "build_optimizers", "build_vgg", "lr_factor", "train_step"]


@dataclass
class Nets:
    generator: nn.Module
    d_global: nn.Module
    d_local: nn.Module


@dataclass
class Optimizers:
    generator: torch.optim.Optimizer
    d_global: torch.optim.Optimizer
    d_local: torch.optim.Optimizer


def build_nets(cfg: Config) -> Nets:
    m = cfg.model
    return Nets(
        generator=EnlightenGenerator(width=m.width, align_corners=m.align_corners),
        d_global=NoNormDiscriminator(ndf=m.ndf, n_layers=m.global_layers),
        d_local=NoNormDiscriminator(ndf=m.ndf, n_layers=m.local_layers),
    )


def build_vgg(cfg: Config) -> VGGFeatures:
    """`vgg_weights: random` builds an untrained VGG so smoke runs need no download; it still
    preserves structure, but real training needs the ImageNet weights."""
    weights = cfg.loss.vgg_weights
    state = None if weights == "random" else load_vgg_state_dict(weights or None)
    return VGGFeatures(state, pool4=cfg.loss.vgg_pool4)


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
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One step in the release's order: G, then global D and local D on the same (detached) fake.
    `batch` holds `low`, `low_input` (maybe darkened) and `normal`, (B, 3, S, S) in [-1, 1]."""
    autocast = autocast or contextlib.nullcontext()
    low, low_input, normal = batch["low"], batch["low_input"], batch["normal"]

    # G phase: freeze the Ds so the G loss puts no gradient on them.
    _set_requires_grad([nets.d_global, nets.d_local], False)
    opts.generator.zero_grad(set_to_none=True)
    with autocast:
        g = loss.generator_phase(low, low_input, normal, generator)
    g.loss.backward()
    opts.generator.step()
    _set_requires_grad([nets.d_global, nets.d_local], True)

    fake = g.fake.detach()
    opts.d_global.zero_grad(set_to_none=True)
    with autocast:
        d_global = loss.d_global_loss(normal, fake)
    d_global.backward()
    opts.d_global.step()

    opts.d_local.zero_grad(set_to_none=True)
    with autocast:
        d_local = loss.d_local_loss(normal, fake, g.offsets)
    d_local.backward()
    opts.d_local.step()

    metrics = {**g.metrics, "d_global": d_global, "d_local": d_local}
    # Detached tensors, not floats: converting every step would sync the GPU seven times.
    return {k: v.detach() for k, v in metrics.items()}
