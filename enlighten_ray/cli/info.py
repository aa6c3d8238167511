"""`enlighten-ray info [WEIGHTS]`: what a weights file (by default the shipped model) is before you use it."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="print a weights file's model settings, parameter count and origin",
        description="Print the model settings, parameter count and origin (ours / official) of a "
        "generator file, a training checkpoint or a run directory; without WEIGHTS, of the model that "
        "ships with the package, with its card (training data, recipe, scores).\n\n"
        "example: enlighten-ray info runs/smoke/checkpoint_2026-01-01_00-00-00.000000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "weights",
        nargs="?",
        help="generator file, *_net_G_A.pth, checkpoint or run directory, as a path or URI "
        "(s3://...; default: the shipped model)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from enlighten_ray.models.weights import load_generator

    _, info = load_generator(args.weights)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, default=str))
        return 0
    print(f"file:       {info.path}")
    print(f"origin:     {info.origin} ({'authors release' if info.origin == 'official' else 'enlighten-ray'})")
    print(f"parameters: {info.params:,}")
    print(f"id:         {info.id}")
    for key, value in info.config.items():
        print(f"model.{key}: {value}")
    for key, value in info.meta.items():
        if key not in info.card:  # the card counts the whole training (continued runs included)
            print(f"meta.{key}: {value}")
    for key, value in info.card.items():
        print(f"card.{key}: {json.dumps(value, default=str) if isinstance(value, dict | list) else value}")
    return 0
