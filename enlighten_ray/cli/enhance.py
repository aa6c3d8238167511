"""`enlighten-ray enhance INPUT OUTPUT [--weights W]`: videos, images or folders on one machine."""

from __future__ import annotations

import argparse
import sys

from enlighten_ray.cli.help import HelpFormatter
from enlighten_ray.infer.settings import (
    add_encoder_arguments,
    add_enhance_arguments,
    encoder_from_args,
    limits_from_args,
    settings_from_args,
)

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "enhance",
        help="enhance a video, an image or a folder on this machine",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="video, image or folder")
    p.add_argument("output", metavar="OUTPUT", help="output file (container/format from its extension) or folder")
    add_enhance_arguments(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_encoder_arguments(p)
    p.add_argument("--side-by-side", action="store_true", help="write input | enhanced side by side (videos)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress (default: a bar on a terminal, a line every 10 s in logs)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from enlighten_ray.infer.enhancer import Enhancer
    from enlighten_ray.infer.local import enhance_path

    limits_from_args(args)
    enhancer = Enhancer.from_weights(args.weights, settings_from_args(args), device=args.device)
    encoder = encoder_from_args(args)
    summary = enhance_path(
        args.input,
        args.output,
        enhancer,
        encoder,
        overwrite=args.overwrite,
        side_by_side=args.side_by_side,
        progress=False if args.quiet else None,
    )
    print(
        f"enlighten-ray: {summary.line()}",
        file=sys.stderr,
    )
    return summary.exit_code
