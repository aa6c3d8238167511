"""Shared fixtures. One local Ray cluster per test session: each `ray.init` costs seconds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server) on 127.0.0.1, found through the standard AWS_* variables as
    pyarrow and the AWS SDKs read them, so the code under test is configured like a user's MinIO
    or S3. Set before the Ray cluster starts: its workers inherit the environment."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per HTTP request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """A real local Ray cluster. 4 logical CPUs: two training workers plus room for Ray Data
    read tasks, which actors or workers holding every CPU would starve."""
    import ray

    from enlighten_ray.cluster import init_ray

    # Ray Train's placement-group cleaner asks the dashboard whether the controller is alive;
    # without our own it asks 127.0.0.1:8265, where another cluster may answer "unknown" and get
    # our workers' placement group removed. So: our own dashboard, on a free port.
    port = free_port()
    init_ray(address="local", num_cpus=4, include_dashboard=True, dashboard_port=port, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def enlighten_data() -> Path:
    """$ENLIGHTEN_DATA, or skip: tests that need the shared data sets say so."""
    root = os.environ.get("ENLIGHTEN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("ENLIGHTEN_DATA is not set")
    return Path(root)
