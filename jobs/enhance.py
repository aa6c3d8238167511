"""Enhance a folder or bucket of images and videos on Ray Data (see `enlighten_ray.batch`).

Locally (starts a local Ray, or joins a `ray start` cluster on this node):

    python jobs/enhance.py --input night/ --output bright/ --weights generator.pt --num-cpus 2

On a cluster:

    ray job submit --working-dir . -- python jobs/enhance.py \
        --input s3://fleet/night/ --output s3://fleet/night-enhanced/ --weights generator.pt

Outputs mirror the input's layout; OUTPUT/_manifest.jsonl lists finished outputs (a re-run skips
them), OUTPUT/_failures.jsonl the bad inputs. Exit status: 0 all done, 1 some inputs failed,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the package is importable from the working dir, not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.batch import FRAME_FORMATS, BatchOptions, run  # noqa: E402
from enlighten_ray.enhance import PRECISIONS  # noqa: E402
from enlighten_ray.errors import BadInputError  # noqa: E402


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, prog="jobs/enhance.py"
    )
    p.add_argument("--input", required=True, metavar="DIR_OR_URI", help="folder, file, or s3:// gs:// ... URI")
    p.add_argument("--output", required=True, metavar="DIR_OR_URI", help="output folder or URI (mirrors the input)")
    p.add_argument(
        "--weights", metavar="PATH", help="generator file, checkpoint dir or *_net_G_A.pth (default: the shipped model)"
    )
    p.add_argument("--format", metavar="EXT", help="write images as EXT (png, jpg, ...) instead of the input's format")
    p.add_argument("--frames-out", metavar="DIR_OR_URI", help="write videos as enhanced frames here, not as videos")
    p.add_argument("--frames-format", default="png", choices=FRAME_FORMATS, help="frame files, or Parquet rows")
    p.add_argument("--segment-seconds", type=float, default=10.0, help="videos are cut at keyframes about this often")
    p.add_argument("--strength", type=float, default=1.0, help="0 = unchanged, 1 = the paper, up to 2")
    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="auto = bf16 where native, else fp32")
    p.add_argument("--batch-size", type=int, default=4, help="images or frames per model call")
    p.add_argument("--tile", type=_non_negative, help="enhance in overlapping N px tiles; 0 = never")
    p.add_argument("--max-side", type=_non_negative, help="enhance at most N px on the longer side, apply at full size")
    p.add_argument("--num-gpus-per-actor", type=float, help="default: 1 when the cluster has GPUs, else CPU actors")
    p.add_argument("--concurrency", type=int, help="model actors (default: one per GPU, or half the CPUs)")
    p.add_argument("--num-cpus", type=int, help="start a new local Ray with this many CPUs instead of joining one")
    return p


def init_ray(num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
        ray.init(address="local", num_cpus=num_cpus)
    else:
        ray.init()  # under `ray job submit` (RAY_ADDRESS), a `ray start` cluster, or a new local one


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = BatchOptions(
        input=args.input,
        output=args.output,
        weights=args.weights,
        format=args.format,
        frames_out=args.frames_out,
        frames_format=args.frames_format,
        segment_seconds=args.segment_seconds,
        strength=args.strength,
        precision=args.precision,
        batch_size=args.batch_size,
        tile=args.tile,
        max_side=args.max_side,
        num_gpus_per_actor=args.num_gpus_per_actor,
        concurrency=args.concurrency,
    )
    try:
        init_ray(args.num_cpus)
        return run(options).exit_code
    except BadInputError as exc:
        print(f"enlighten-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
