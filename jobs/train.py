"""Train on Ray: `python jobs/train.py --config configs/paper.yaml [--set key=value ...] [--dry-run]`.

The same as `enlighten-ray train`. Works on a laptop (starts a local Ray), on a cluster node (joins
the running cluster) and as a Ray job:

    ray job submit --working-dir . -- python jobs/train.py --config configs/paper.yaml \
        --set data.low=s3://bucket/low --set data.normal=s3://bucket/normal --set scaling.num_workers=8
"""

import sys
from pathlib import Path

# Under `ray job submit --working-dir .` the package is importable from the working dir, not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
