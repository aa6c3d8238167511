"""`enlighten-ray batch INPUT OUTPUT`: a folder or bucket of images and videos on the Ray cluster
(Ray Data). `jobs/enhance.py` is the same job as a script for `ray job submit`."""

from __future__ import annotations

import argparse
import os
import sys

from enlighten_ray.cli.help import HelpFormatter
from enlighten_ray.errors import BadInputError
from enlighten_ray.infer.settings import (
    FRAME_FORMATS,
    add_encoder_arguments,
    add_enhance_arguments,
    encoder_from_args,
    limits_from_args,
    settings_from_args,
)

DESCRIPTION = """\
Enhance every image and video under INPUT (a folder, a file, or an s3:// gs:// ... URI) into OUTPUT
on Ray Data, mirroring the layout. OUTPUT/_manifest.jsonl lists finished outputs (a re-run skips
them), OUTPUT/_failures.jsonl the bad inputs. Joins a running cluster (`ray start`, RAY_ADDRESS) or
starts a local one. Exit status: 0 all done, 1 some inputs failed, 2 bad arguments.

examples:
  enlighten-ray batch night/ bright/ --num-cpus 2
  enlighten-ray batch s3://fleet/night/ s3://fleet/night-enhanced/ --weights generator.pt
  enlighten-ray batch clips/ out/ --frames-out frames/ --frames-format parquet
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "batch",
        help="enhance a folder or bucket of images and videos on the Ray cluster",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="folder, file, or s3:// gs:// ... URI")
    p.add_argument("output", metavar="OUTPUT", help="output folder or URI (mirrors the input)")
    add_batch_arguments(p)
    p.set_defaults(func=run)


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    """The batch job's options after INPUT and OUTPUT; shared with `jobs/enhance.py`."""
    add_enhance_arguments(p)
    p.add_argument("--format", metavar="EXT", help="write images as EXT (png, jpg, ...) instead of the input's format")
    p.add_argument("--frames-out", metavar="DIR_OR_URI", help="write videos as enhanced frames here, not as videos")
    p.add_argument("--frames-format", default="png", choices=FRAME_FORMATS, help="frame files, or Parquet rows")
    add_encoder_arguments(p)
    p.add_argument("--segment-seconds", type=float, default=10.0, help="videos are cut at keyframes about this often")
    p.add_argument("--num-gpus-per-actor", type=float, help="default: 1 when the cluster has GPUs, else CPU actors")
    p.add_argument("--concurrency", type=int, help="model actors (default: one per GPU, or half the CPUs)")
    p.add_argument("--num-cpus", type=int, help="start a new local Ray with this many CPUs instead of joining one")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines (the summary line stays)")
    p.add_argument("--verbose", action="store_true", help="also show Ray's logs and Ray Data's progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the job; bad arguments raise `BadInputError` (exit status 2 from the CLI)."""
    from enlighten_ray.infer.ray_job import BatchOptions
    from enlighten_ray.infer.ray_job import run as run_job

    options = BatchOptions(
        input=args.input,
        output=args.output,
        weights=args.weights,
        format=args.format,
        frames_out=args.frames_out,
        frames_format=args.frames_format,
        segment_seconds=args.segment_seconds,
        settings=settings_from_args(args),
        encoder=encoder_from_args(args),
        num_gpus_per_actor=args.num_gpus_per_actor,
        concurrency=args.concurrency,
        progress=False if args.quiet else None,
        verbose=args.verbose,
    )
    from enlighten_ray.cluster import init_ray, shutdown_ray
    from enlighten_ray.infer.ray_job import check

    check(options)  # before Ray starts: a typo costs no cluster start-up and leaves no files

    # Workers' logs reach this terminal only with --verbose; the job prints its own progress.
    logs = {"log_to_driver": args.verbose, "logging_level": "INFO" if args.verbose else "WARNING"}
    env = limits_from_args(args)
    if env:  # every worker of this job decodes under the same cap
        logs["runtime_env"] = {"env_vars": env}
    if args.num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
        init_ray(address="local", num_cpus=args.num_cpus, **logs)
    else:
        init_ray(**logs)  # under `ray job submit` (RAY_ADDRESS), a `ray start` cluster, or a new local one
    try:
        return run_job(options).exit_code
    finally:
        shutdown_ray()


def main(args: argparse.Namespace) -> int:
    """`run` with bad arguments as a one-line error and exit status 2, for scripts outside the CLI."""
    try:
        return run(args)
    except BadInputError as exc:
        print(f"enlighten-ray: error: {exc}", file=sys.stderr)
        return 2
