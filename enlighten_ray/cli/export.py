"""`enlighten-ray export CHECKPOINT_OR_RUN_DIR OUT.pt`: the standalone generator file from a run."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write the generator file from a checkpoint or run directory",
        description="Write the generator file that `enhance --weights` takes from a training "
        "checkpoint (its generator.pt), a run directory (its newest checkpoint) or the authors' "
        "*_net_G_A.pth; SOURCE and OUTPUT may be URIs (s3://, gs://).\n\n"
        "example: enlighten-ray export runs/paper out/generator.pt\n"
        "example: enlighten-ray export s3://models/runs/paper s3://models/night-v2.pt --half",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="checkpoint directory, run directory or weights file (a path or URI)")
    p.add_argument("output", help="generator file to write (.pt; a path or URI)")
    p.add_argument("--half", action="store_true", help="store the weights in fp16 (half the size)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from enlighten_ray.errors import BadInputError
    from enlighten_ray.models.weights import is_uri, load_generator, save_generator

    model, info = load_generator(args.source)
    remote = is_uri(args.output) or is_uri(info.path)
    if args.output == info.path if remote else Path(args.output).resolve() == Path(info.path).resolve():
        raise BadInputError(args.output, "refusing to overwrite the source weights")
    meta = {**info.meta, "exported_from": info.path, "source_origin": info.origin}
    save_generator(model, args.output, meta, half=args.half)
    print(f"wrote {args.output} ({info.params:,} parameters, from {info.path})")
    return 0
