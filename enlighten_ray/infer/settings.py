"""How frames are enhanced, declared once for every runner: `enlighten-ray enhance`, `enlighten-ray
batch` and `jobs/enhance.py`, `eval table` and the benchmarks. No torch import: `--help` stays fast."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from enlighten_ray.errors import BadInputError
from enlighten_ray.io.encode import EncoderOptions
from enlighten_ray.io.filters import DENOISE
from enlighten_ray.io.limits import DEFAULT_MAX_PIXELS, set_max_pixels

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE = ("auto", "on", "off")
FRAME_FORMATS = ("png", "jpg", "webp", "parquet")  # the batch job's --frames-format


@dataclass(frozen=True)
class EnhanceSettings:
    """precision: auto = bf16 on GPUs and CPUs with native bf16, else fp32. strength scales the learned
    residual (0 = unchanged, 1 = the paper). tile: overlapping tiles of this many px (None = automatic
    above 2048 px, 0 = never). max_side: enhance at most this size and apply the change at full size.
    denoise: the `io.filters.DENOISE` preset videos are deblocked/denoised with before the model.
    compile: torch.compile the generator (auto = for videos long enough to repay the compile)."""

    precision: str = "auto"
    batch_size: int = 0  # 0 = auto: 1 on CPUs (faster there than 4), 4 on GPUs
    strength: float = 1.0
    tile: int | None = None
    max_side: int | None = None
    denoise: str = "light"
    compile: str = "auto"

    def validate(self) -> EnhanceSettings:
        if self.precision not in PRECISIONS:
            raise BadInputError("--precision", f"'{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.compile not in COMPILE:
            raise BadInputError("--compile", f"'{self.compile}' is not one of {', '.join(COMPILE)}")
        if self.denoise not in DENOISE:
            raise BadInputError("--denoise", f"'{self.denoise}' is not one of {', '.join(DENOISE)}")
        if self.batch_size < 0:
            raise BadInputError("--batch-size", f"must be at least 1 (0 = auto), got {self.batch_size}")
        for name, value in (("--max-side", self.max_side), ("--tile", self.tile)):
            if value is not None and value < 0:
                raise BadInputError(name, f"must be positive, got {value}")
        from enlighten_ray.models.generator import check_strength  # torch: at run time, not for --help

        try:
            check_strength(self.strength)
        except ValueError as exc:
            raise BadInputError("--strength", str(exc)) from exc
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pixel_settings(self) -> dict[str, Any]:
        """The settings that change output pixels (batch size and compiling do not)."""
        return {k: v for k, v in self.as_dict().items() if k not in ("batch_size", "compile")}


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_enhance_arguments(p: argparse.ArgumentParser) -> None:
    """--weights and the `EnhanceSettings` options, with their one set of defaults."""
    default = EnhanceSettings()
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="our generator file, a training checkpoint or run directory, or the authors' *_net_G_A.pth, "
        "as a path or URI (s3://bucket/runs/night) (default: the model that ships with the package; "
        "`enlighten-ray info` describes it)",
    )
    p.add_argument(
        "--precision",
        default=default.precision,
        choices=PRECISIONS,
        help="auto = bf16 on GPUs and CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere; fp16 is for GPUs",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=default.batch_size,
        metavar="N",
        help="frames per model call (default 0 = auto: 1 on CPUs, 4 on GPUs)",
    )
    p.add_argument(
        "--strength",
        type=float,  # its bound is models.generator.check_strength's, applied by validate()
        default=default.strength,
        metavar="S",
        help="0 = unchanged, 1 = the paper, up to 2",
    )
    p.add_argument(
        "--max-side",
        type=_non_negative,
        metavar="N",
        help="enhance frames whose longer side exceeds N at N px, then apply the change at full size (default: off)",
    )
    p.add_argument(
        "--tile",
        type=_non_negative,
        metavar="N",
        help="enhance in overlapping N px tiles; 0 = never (default: 1024 px tiles for sides above 2048 px)",
    )
    p.add_argument(
        "--denoise",
        default=default.denoise,
        choices=tuple(DENOISE),
        help="videos: deblock and denoise decoded frames before the model (light: deblock + chroma noise "
        "reduction; strong: deblock + non-local means)",
    )
    p.add_argument(
        "--compile",
        default=default.compile,
        choices=COMPILE,
        help="torch.compile the generator: faster per frame after a compile of about half a minute; auto = "
        "for videos of at least 300 frames (default: auto)",
    )
    _add_max_pixels(p)


def _add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help=f"refuse images and video frames of more than N pixels, read from the file's header before "
        f"decoding (default: {DEFAULT_MAX_PIXELS:,}, where Pillow refuses; or ENLIGHTEN_MAX_PIXELS)",
    )


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    """The video encoder's options (`io.encode.EncoderOptions`), for `enhance` and `batch` alike."""
    default = EncoderOptions()
    p.add_argument("--codec", default=default.codec, help="video encoder")
    p.add_argument("--crf", type=int, default=default.crf, metavar="Q", help="constant-quality factor (lower = better)")
    p.add_argument("--preset", help="encoder preset, e.g. veryfast, medium, slow (default: the encoder's)")
    p.add_argument("--pix-fmt", help="output pixel format (default: yuv420p; yuv444p for odd frame sizes)")


def encoder_from_args(args: argparse.Namespace) -> EncoderOptions:
    return EncoderOptions(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt)


def limits_from_args(args: argparse.Namespace) -> dict[str, str]:
    """Apply --max-pixels to this process; returns the variables a Ray job passes to its workers."""
    return set_max_pixels(args.max_pixels)


def settings_from_args(args: argparse.Namespace) -> EnhanceSettings:
    return EnhanceSettings(
        precision=args.precision,
        batch_size=args.batch_size,
        strength=args.strength,
        tile=args.tile,
        max_side=args.max_side,
        denoise=args.denoise,
        compile=args.compile,
    ).validate()
