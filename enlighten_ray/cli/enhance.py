"""Placeholder until the enhance subcommand lands (its owner replaces this file)."""

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("enhance", help="(in progress)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("enlighten-ray enhance: not available yet")
