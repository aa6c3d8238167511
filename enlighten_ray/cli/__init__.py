"""`enlighten-ray` command line: one module per subcommand, each a thin wrapper over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from enlighten_ray import __version__
from enlighten_ray.cli import batch, enhance, eval, export, info, train
from enlighten_ray.errors import BadInputError

SUBCOMMANDS = (train, enhance, batch, eval, export, info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enlighten-ray",
        description="EnlightenGAN low-light enhancement: train on Ray, enhance videos and images.",
    )
    parser.add_argument("--version", action="version", version=f"enlighten-ray {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BadInputError as exc:
        print(f"enlighten-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("enlighten-ray: interrupted", file=sys.stderr)
        return 130
