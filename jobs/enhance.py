"""Enhance a folder or bucket of images and videos on Ray Data: `enlighten-ray batch` as a script.

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
import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the package is importable from the working dir, not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.cli.batch import add_batch_arguments, main  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, prog="jobs/enhance.py"
    )
    p.add_argument("--input", required=True, metavar="DIR_OR_URI", help="folder, file, or s3:// gs:// ... URI")
    p.add_argument("--output", required=True, metavar="DIR_OR_URI", help="output folder or URI (mirrors the input)")
    add_batch_arguments(p)
    return p


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
