"""Frozen VGG16 features for the self feature preserving loss.

Built on torchvision's `vgg16` with its ImageNet weights (IMAGENET1K_V1) and that entry's input
normalisation. The release read relu5_1 without the pool4 before conv5_1 (`vgg_maxpooling`
off); `pool4=True` restores the standard network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from ..errors import BadInputError

__all__ = ["VGGFeatures", "default_vgg_path", "load_vgg_state_dict"]

RELU5_1 = 26  # torchvision vgg16.features[:26] ends with relu5_1
POOL4 = 23  # the max-pool in front of conv5_1


def default_vgg_path() -> Path:
    """Where torchvision caches the file: $TORCH_HOME/hub/checkpoints/vgg16-397923af.pth."""
    filename = VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_vgg_state_dict(path: str | Path | None) -> dict[str, torch.Tensor]:
    """Read VGG16 weights from `path`, or torchvision's cache when None. Never downloads:
    training nodes often have no network, so a missing file is a clear error instead."""
    file = Path(path) if path else default_vgg_path()
    if not file.is_file():
        raise BadInputError(
            file,
            "VGG16 ImageNet weights not found (needed by the self feature preserving loss); "
            f"download {VGG16_Weights.IMAGENET1K_V1.url} to {default_vgg_path()} "
            "or set loss.vgg_weights=PATH",
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise BadInputError(file, f"cannot read VGG16 weights: {exc}") from exc


class VGGFeatures(nn.Module):
    """relu5_1 features of torchvision's VGG16, frozen. Input (B, 3, H, W) in [-1, 1]."""

    def __init__(self, state_dict: dict[str, torch.Tensor] | None, pool4: bool = False) -> None:
        super().__init__()
        features = vgg16(weights=None).features[:RELU5_1]  # keeps torchvision's layer indices
        if state_dict is not None:
            # Only the layers up to relu5_1 are needed; the rest of the file (conv5_2.., classifier) is ignored.
            wanted = {f"features.{k}" for k in features.state_dict()}
            missing = sorted(wanted - set(state_dict))
            if missing:
                raise BadInputError("vgg_weights", f"not a torchvision VGG16 state dict: missing {missing[:4]}")
            features.load_state_dict({k.removeprefix("features."): state_dict[k] for k in wanted})
        layers = [m for i, m in enumerate(features) if pool4 or i != POOL4]
        self.layers = nn.Sequential(*layers).eval().requires_grad_(False)
        # ImageNet normalisation of IMAGENET1K_V1's transforms, chosen to match those weights.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always frozen, whatever the caller's mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(((x + 1) / 2 - self.mean) / self.std)  # (B, 512, H/8, W/8) without pool4
