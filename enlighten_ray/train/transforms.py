"""Training augmentation as released: random crop, random flips, and with p=0.5 the low image
darkened by t ~ U[2, 4]. Runs on CPU (in Ray Data), on one image at a time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torchvision.transforms import v2

from enlighten_ray.config import DataSettings
from enlighten_ray.models.generator import to_model_range

__all__ = ["crop_and_flip", "darken", "image_to_model", "augment_low", "augment_normal"]


def image_to_model(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) in [-1, 1] (`models.generator.to_model_range`)."""
    t = torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1)  # Ray Data views are read-only
    return to_model_range(t)


def crop_and_flip(image: torch.Tensor, size: int, flip: bool) -> torch.Tensor:
    """Random size x size crop of (C, H, W). Images smaller than the crop are resized up (short
    side to `size`) rather than padded, so D never learns to spot padding borders."""
    if min(image.shape[-2:]) < size:
        image = v2.functional.resize(image, size, antialias=True)
    ops: list[v2.Transform] = [v2.RandomCrop(size)]
    if flip:
        ops += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    return v2.Compose(ops)(image)


def darken(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Divide intensity in [0, 1] by `factor`; `image` is in [-1, 1]."""
    return (image + 1) / factor - 1


def augment_low(
    image: np.ndarray,
    cfg: DataSettings,
    rng: np.random.Generator,
    teacher: np.ndarray | None = None,
    prior: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """`low` is the crop the SFP loss compares against; `low_input` is what G sees. A `teacher`
    image (same size, computed from the whole low image) is cropped and flipped with it. `prior`
    (the generator's `base`) is computed on the whole, maybe darkened, image G's crop is cut from,
    as inference computes it on whole frames, and is cropped and flipped with it."""
    full = image_to_model(image)
    factor = rng.uniform(cfg.darken_min, cfg.darken_max) if rng.random() < cfg.darken_prob else 1.0
    parts = [full]
    if teacher is not None:
        parts.append(image_to_model(teacher))
    if prior is not None:
        parts.append(prior(darken(full, factor)[None])[0])
    crops = crop_and_flip(torch.cat(parts), cfg.crop_size, cfg.flip).split(3)
    low = crops[0]
    out = {"low": low, "low_input": darken(low, factor) if factor != 1.0 else low}
    if teacher is not None:
        out["teacher"] = crops[1]
    if prior is not None:
        out["prior"] = crops[-1]
    return out


def augment_normal(image: np.ndarray, cfg: DataSettings) -> torch.Tensor:
    return crop_and_flip(image_to_model(image), cfg.crop_size, cfg.flip)
