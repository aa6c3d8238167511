"""`enlighten-ray train --config configs/paper.yaml [--set section.key=value ...]`."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train EnlightenGAN on Ray Train (local Ray, a cluster node, or under `ray job submit`)",
        description="Train EnlightenGAN on unpaired low/normal images or videos with Ray Train. "
        "Starts a local Ray unless one is running (RAY_ADDRESS, `ray start`, `ray job submit`). "
        "Running the same run.storage_path/run.name again resumes from its latest checkpoint.\n\n"
        "examples:\n"
        "  enlighten-ray train --config configs/smoke.yaml --set data.low=lows/ --set data.normal=photos/\n"
        "  enlighten-ray train --config configs/paper.yaml --set data.low=s3://bucket/low "
        "--set data.normal=s3://bucket/normal --set scaling.num_workers=8 --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file overriding the paper defaults (default: none, the paper recipe)")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)"
    )
    p.add_argument("--dry-run", action="store_true", help="validate the config and list the data, then exit")
    p.add_argument("--verbose", action="store_true", help="also show Ray Train's own logs (every report in full)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from enlighten_ray.config import load_config
    from enlighten_ray.train.launch import launch

    return launch(load_config(args.config, args.set), dry_run=args.dry_run, verbose=args.verbose)
