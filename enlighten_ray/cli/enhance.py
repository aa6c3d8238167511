"""`enlighten-ray enhance INPUT OUTPUT [--weights W]`: videos, images or folders on one machine."""

from __future__ import annotations

import argparse
import sys

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # enhance.PRECISIONS, without importing torch for --help


DESCRIPTION = """\
Enhance a low-light video, image, or folder of both (recursed; the layout is mirrored under OUTPUT).
Videos keep their frame timestamps, duration, audio/subtitle streams (copied, not re-encoded),
rotation and colour tags; output is 8-bit. Existing outputs are skipped unless --overwrite.

examples:
  enlighten-ray enhance night.mp4 night_bright.mp4
  enlighten-ray enhance night.mp4 night_bright.mp4 --weights runs/mine/checkpoint_.../generator.pt
  enlighten-ray enhance night.mov review.mkv --weights 200_net_G_A.pth --side-by-side
  enlighten-ray enhance photos/ bright/ --weights runs/exp1 --device cuda:1 --precision bf16
  enlighten-ray enhance drone_8k.mp4 out.mp4 --weights generator.pt --tile 512 --crf 20 --preset slow
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _strength(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 2], got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "enhance",
        help="enhance a video, an image or a folder on this machine",
        description=DESCRIPTION,
        formatter_class=_Formatter,
    )
    p.add_argument("input", metavar="INPUT", help="video, image or folder")
    p.add_argument("output", metavar="OUTPUT", help="output file (container/format from its extension) or folder")
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="our generator file, a training checkpoint or run directory, or the authors' *_net_G_A.pth "
        "(default: the model that ships with the package; `enlighten-ray info` describes it)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto = bf16 on GPUs and CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere; fp16 is for GPUs",
    )
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="frames per model call")
    p.add_argument("--strength", type=_strength, default=1.0, metavar="S", help="0 = unchanged, 1 = the paper, up to 2")
    p.add_argument(
        "--max-side",
        type=_positive_int,
        metavar="N",
        help="enhance frames whose longer side exceeds N at N px, then apply the change at full size (default: off)",
    )
    p.add_argument(
        "--tile",
        type=_positive_int,
        metavar="N",
        help="enhance in overlapping N px tiles; 0 = never (default: 1024 px tiles for sides above 2048 px)",
    )
    p.add_argument("--codec", default="libx264", help="video encoder")
    p.add_argument("--crf", type=int, default=18, metavar="Q", help="encoder constant-quality factor (lower = better)")
    p.add_argument("--preset", help="encoder preset, e.g. veryfast, medium, slow (default: the encoder's)")
    p.add_argument("--pix-fmt", help="output pixel format (default: yuv420p; yuv444p for odd frame sizes)")
    p.add_argument("--side-by-side", action="store_true", help="write input | enhanced side by side (videos)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    p.set_defaults(func=run)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults (those that are values, not None/False) and keeps the examples' line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


def run(args: argparse.Namespace) -> int:
    from ..enhance import Enhancer, enhance_path
    from ..video import EncoderOptions

    enhancer = Enhancer.from_weights(
        args.weights,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        strength=args.strength,
        max_side=args.max_side,
        tile=args.tile,
    )
    encoder = EncoderOptions(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt)
    summary = enhance_path(
        args.input, args.output, enhancer, encoder, overwrite=args.overwrite, side_by_side=args.side_by_side
    )
    print(
        f"enhanced {len(summary.done)}, skipped {len(summary.skipped)} existing, failed {len(summary.failed)}",
        file=sys.stderr,
    )
    return 1 if summary.failed else 0
