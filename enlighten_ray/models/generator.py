"""The EnlightenGAN generator: the attention-guided U-Net of the released code
(`sid_unet_resize` with self_attention, times_residual and skip=1; Jiang et al. 2020, Fig. 2).

Layer attribute names are the released `Unet_resize_conv`'s (conv1_1, bn1_1, ..., deconv5, conv10),
so the authors' `200_net_G_A.pth` loads into this module once its `module.` prefix is stripped.

With `prior="lime"` (a deviation, paper: none) the U-Net sees the Retinex prior of `prior.py`
instead of the raw frame and its attention-weighted output is a correction of the prior: the
last layer starts at zero (`reset_residual`), so an untrained generator is the classical teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from enlighten_ray.models.prior import LUMA, prior_function

__all__ = ["EnlightenGenerator", "attention_map", "check_strength", "from_model_range", "to_model_range"]

# Channels per encoder stage, as multiples of `width` (32 in the paper): 32/64/128/256/512.
STAGE_MULTIPLIERS = (1, 2, 4, 8, 16)
# The U-Net pools four times, so inputs are padded to a multiple of 2**4.
SIZE_MULTIPLE = 16


def to_model_range(pixels: torch.Tensor) -> torch.Tensor:
    """0-255 values (uint8) -> float32 in [-1, 1], the range the networks work in."""
    return pixels.float().div(127.5).sub(1.0)


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """The networks' [-1, 1] -> uint8 0-255, clamped and rounded."""
    return x.float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)


def attention_map(x: torch.Tensor) -> torch.Tensor:
    """a = 1 - Y with Y the Rec.601 luma of `x` (B, 3, H, W) in [-1, 1]: dark pixels get more attention."""
    r, g, b = ((x + 1) / 2).unbind(dim=1)
    return (1 - (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)).unsqueeze(1)  # (B, 1, H, W)


def check_strength(strength: float) -> float:
    """Strength scales the learned residual (the paper's stated future work); 1 is the paper."""
    if not 0.0 <= strength <= 2.0:
        raise ValueError(f"strength must be in [0, 2] (0 = unchanged, 1 = the paper), got {strength}")
    return float(strength)


def _pad_to_multiple(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Reflect-pad H and W up to a multiple of 16, split evenly like the release's `pad_tensor`."""
    h, w = x.shape[-2:]
    ph, pw = -h % SIZE_MULTIPLE, -w % SIZE_MULTIPLE
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
    if ph == pw == 0:
        return x, pads
    # Reflection needs the pad to be smaller than the side; tiny images fall back to replication.
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    return F.pad(x, pads, mode=mode), pads


class EnlightenGenerator(nn.Module):
    """Attention-guided U-Net: output = input + strength * (base + latent * attention - input), in
    [-1, 1], where base is the input itself (the paper) or its Retinex prior (`prior="lime"`).

    Encoder stages are two (conv3x3 -> LeakyReLU(0.2) -> BatchNorm) blocks, BN after the
    activation as released; the decoder upsamples bilinearly and halves channels with a 3x3 conv
    (`deconvN`) before concatenating the attention-weighted skip. Any H x W is accepted.
    """

    def __init__(self, width: int = 32, align_corners: bool = True, prior: str = "none") -> None:
        super().__init__()
        self.width = width
        self.prior = prior
        self._prior_fn = prior_function(prior)
        # torch 0.3's bilinear upsampling, which trained the released weights, was align_corners=True.
        self.align_corners = align_corners
        ch = [width * m for m in STAGE_MULTIPLIERS]
        # Encoder stages 1-5; the first conv sees RGB + attention map.
        for stage, (cin, cout) in enumerate(zip([4, *ch[:-1]], ch), start=1):
            self._add_block(f"{stage}_1", cin, cout)
            self._add_block(f"{stage}_2", cout, cout)
        # Decoder stages 6-9, each fed by deconv{stage-1} and mirrored encoder stage 10-stage.
        for stage, (cin, cout) in enumerate(zip(ch[:0:-1], ch[-2::-1]), start=6):
            self.add_module(f"deconv{stage - 1}", nn.Conv2d(cin, cout, 3, padding=1))
            self._add_block(f"{stage}_1", 2 * cout, cout)
            self._add_block(f"{stage}_2", cout, cout, norm=stage != 9)  # the last block has no BN
        self.conv10 = nn.Conv2d(ch[0], 3, 1)

    def reset_residual(self) -> None:
        """Zero the last layer: the output is then the base (the prior) exactly, and training
        starts from it rather than from a random correction."""
        nn.init.zeros_(self.conv10.weight)
        nn.init.zeros_(self.conv10.bias)

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """What the U-Net corrects: x itself, or its prior computed on x as a whole frame."""
        return x if self._prior_fn is None else self._prior_fn(x)

    def _add_block(self, name: str, cin: int, cout: int, norm: bool = True) -> None:
        self.add_module(f"conv{name}", nn.Conv2d(cin, cout, 3, padding=1))
        if norm:
            self.add_module(f"bn{name}", nn.BatchNorm2d(cout))

    def _block(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(getattr(self, f"conv{name}")(x), 0.2)
        bn = getattr(self, f"bn{name}", None)
        return bn(x) if bn is not None else x

    def forward(self, x: torch.Tensor, strength: float = 1.0, prior: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 3, H, W) in [-1, 1]. Returns (B, 3, H, W), not clamped (the residual may overshoot).
        `prior`: `base(frame)` computed beforehand on the whole frame that x is a tile or crop of
        (the prior's radius follows the frame's size); None computes it on x."""
        h0, w0 = x.shape[-2:]
        base = None if self.prior == "none" else (self.base(x) if prior is None else prior)
        x, (left, _, top, _) = _pad_to_multiple(x)
        base = x if base is None else _pad_to_multiple(base)[0]  # padded as x, to stay aligned
        gray = attention_map(x)
        grays = [gray]  # the attention map at each encoder scale, max-pooled as released
        for _ in range(4):
            grays.append(F.max_pool2d(grays[-1], 2))

        h = torch.cat([base.to(x.dtype), gray], dim=1)  # (B, 4, H, W)
        skips = []
        for stage in range(1, 5):
            h = self._block(f"{stage}_2", self._block(f"{stage}_1", h))
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self._block("5_1", h) * grays[4]  # attention on the bottleneck, after its first conv
        h = self._block("5_2", h)  # (B, 16w, H/16, W/16)

        for stage in range(6, 10):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
            skip = skips[9 - stage] * grays[9 - stage]
            h = torch.cat([getattr(self, f"deconv{stage - 1}")(h), skip], dim=1)
            h = self._block(f"{stage}_2", self._block(f"{stage}_1", h))

        latent = self.conv10(h) * gray  # times_residual
        if self.prior == "none":
            out = x + strength * latent
        else:  # in float32: a bf16 sum of prior and correction would add a level of noise
            out = torch.lerp(x.float(), base.float() + latent.float(), strength)
        return out[..., top : top + h0, left : left + w0]
