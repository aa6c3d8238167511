"""Shared fixtures. One local Ray cluster per test session: each `ray.init` costs seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster. 4 logical CPUs: two training workers plus room for Ray Data
    read tasks, which actors or workers holding every CPU would starve."""
    import socket

    import ray

    # Ray Train's placement-group cleaner asks the dashboard whether the controller is alive;
    # without our own it asks 127.0.0.1:8265, where another cluster may answer "unknown" and get
    # our workers' placement group removed. So: our own dashboard, on a free port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_port=port, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def enlighten_data() -> Path:
    """$ENLIGHTEN_DATA, or skip: tests that need the shared data sets say so."""
    root = os.environ.get("ENLIGHTEN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("ENLIGHTEN_DATA is not set")
    return Path(root)


def write_images(
    folder: Path, count: int, size: tuple[int, int] = (48, 64), seed: int = 0, dark: bool = False
) -> list[Path]:
    """Small synthetic RGB JPEGs (smooth gradients plus noise, so they compress like photos)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    paths = []
    for i in range(count):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], -1) * 200 + rng.normal(0, 10, (h, w, 3))
        img = np.clip(base * (0.25 if dark else 1.0), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths
