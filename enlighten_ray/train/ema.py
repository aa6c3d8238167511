"""The exponential moving average of G's weights (StyleGAN2's G_ema; Yazici et al., "The Unusual
Effectiveness of Averaging in GAN Training", ICLR 2019): one GAN step's G is a noisy sample of
the trajectory, the average a steadier model. The half-life is counted in images seen, so it
means the same at any batch size."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["build_ema", "ema_decay"]


def ema_decay(half_life_images: float, batch_size: int) -> float:
    """Per-step decay whose weight on a step halves every `half_life_images` images."""
    return 0.5 ** (batch_size / half_life_images)


def build_ema(generator: nn.Module, half_life_images: float, batch_size: int) -> AveragedModel | None:
    """An averaged copy of `generator` (None when the half-life is 0). Its BatchNorm running
    statistics are averaged with the weights (`use_buffers=True`): inference uses those statistics,
    and they must belong to the averaged weights, not to the last step's."""
    if half_life_images <= 0:
        return None
    decay = ema_decay(half_life_images, batch_size)
    return AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
