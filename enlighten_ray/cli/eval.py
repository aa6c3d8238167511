"""Placeholder until the eval subcommand lands (its owner replaces this file)."""

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="(in progress)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("enlighten-ray eval: not available yet")
