"""The exponential moving average of G's weights (StyleGAN2's G_ema; Yazici et al., "The Unusual
Effectiveness of Averaging in GAN Training", ICLR 2019): one GAN step's G is a noisy sample of
the trajectory, the average a steadier model. The half-life is counted in images seen, so it
means the same at any batch size."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["BN_IMAGES", "averaged_generator", "build_ema", "ema_decay"]

BN_IMAGES = 128  # recent training inputs the average's BatchNorm statistics are measured on


def ema_decay(half_life_images: float, batch_size: int) -> float:
    """Per-step decay whose weight on a step halves every `half_life_images` images."""
    return 0.5 ** (batch_size / half_life_images)


def build_ema(generator: nn.Module, half_life_images: float, batch_size: int) -> AveragedModel | None:
    """An averaged copy of `generator` (None when the half-life is 0). Its BatchNorm running
    statistics are averaged with the weights (`use_buffers=True`) so a resumed run continues them;
    `averaged_generator` measures the ones inference uses."""
    if half_life_images <= 0:
        return None
    decay = ema_decay(half_life_images, batch_size)
    return AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def averaged_generator(
    ema: AveragedModel, batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]
) -> nn.Module:
    """The moving average ready for inference: a copy whose BatchNorm statistics are measured anew
    (as SWA's `update_bn`) on `batches` of G's recent training inputs, or (input, prior) pairs
    for a prior generator. Averaged weights do not match averaged statistics: measured on this
    project's run, that G's eval outputs were a grey wash with dark contour lines; re-measured,
    they matched G's own."""
    model = _plain_batchnorm(copy.deepcopy(ema.module))
    batches = list(batches)
    if batches:  # none (a checkpoint before any step): the averaged statistics, as they are
        _measure_bn(model, batches)
    return model.eval()


@torch.no_grad()
def _measure_bn(model: nn.Module, batches: list[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]) -> None:
    """`update_bn`'s cumulative average over the batches, passing each pair's prior to G."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for batch in batches:
        x, prior = batch if isinstance(batch, tuple) else (batch, None)
        model(x) if prior is None else model(x, prior=prior)
    for m, momentum in momenta.items():
        m.momentum = momentum


def _plain_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm layers (GPU runs with scaling.sync_bn) as BatchNorm2d: in train mode they
    gather over every rank, and only rank 0 measures the shipped average."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain.to(next(child.buffers()).device))
        else:
            _plain_batchnorm(child)
    return module
