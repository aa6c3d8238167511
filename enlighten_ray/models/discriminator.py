"""The released `NoNormDiscriminator`: a PatchGAN without normalisation or sigmoid.

The global discriminator (n_layers=5) judges whole images; the local one (n_layers=4) judges
random 32x32 patches. Layer keys (`model.N.weight`) match the released files.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NoNormDiscriminator", "global_discriminator", "local_discriminator"]


class NoNormDiscriminator(nn.Module):
    """Conv(k4, p2) stack: n_layers stride-2 convs doubling channels (capped at 8 * ndf),
    then one stride-1 conv and a stride-1 conv to one logit map. LeakyReLU(0.2) between."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        channels = [in_channels] + [ndf * min(2**i, 8) for i in range(n_layers)]
        layers: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=2), nn.LeakyReLU(0.2)]
        last = ndf * min(2**n_layers, 8)
        layers += [nn.Conv2d(channels[-1], last, 4, stride=1, padding=2), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(last, 1, 4, stride=1, padding=2)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 1, h, w) raw logits (LSGAN targets are 1 and 0)."""
        return self.model(x)


def global_discriminator(ndf: int = 64, n_layers: int = 5) -> NoNormDiscriminator:
    return NoNormDiscriminator(ndf=ndf, n_layers=n_layers)


def local_discriminator(ndf: int = 64, n_layers: int = 4) -> NoNormDiscriminator:
    return NoNormDiscriminator(ndf=ndf, n_layers=n_layers)
