"""deploy/kuberay: the RayJob manifests and the image's Dockerfile, checked as far as they can be
here: each entrypoint's command line is accepted by the real argument parser (and a training
entrypoint's config by the real config loader), and every Ray version is pyproject's."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml
from _media import REPO
from packaging.version import Version

from enlighten_ray.cli import build_parser
from enlighten_ray.config import load_config

DEPLOY = REPO / "deploy" / "kuberay"
MANIFESTS = sorted(DEPLOY.glob("rayjob-*.yaml"))


def pyproject_ray_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(r'"ray\[[^\]]*\]>=([0-9.]+)"', text)[1]


def check_entrypoint(entrypoint: str) -> None:
    """Parse a RayJob's entrypoint as its script would; argparse's exit on a bad flag fails here."""
    python, script, *args = shlex.split(entrypoint)
    assert python == "python" and (REPO / script).is_file(), script
    if script == "jobs/train.py":
        parsed = build_parser().parse_args(["train", *args])
        load_config(REPO / parsed.config, parsed.set)  # unknown keys and bad values are errors
    elif script == "jobs/enhance.py":
        spec = importlib.util.spec_from_file_location("enhance_job", REPO / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.build_parser().parse_args(args)
    else:
        pytest.fail(f"unexpected entrypoint script {script}")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_rayjob_manifests_parse_and_their_entrypoints_are_accepted(manifest: Path) -> None:
    job = yaml.safe_load(manifest.read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    check_entrypoint(spec["entrypoint"])
    cluster = spec["rayClusterSpec"]
    assert Version(cluster["rayVersion"]) == Version(pyproject_ray_version())
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert {"secretRef": {"name": "enlighten-ray-s3"}} in container["envFrom"]  # S3 credentials
    assert any(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") for g in
               cluster["workerGroupSpecs"])  # fmt: skip


def test_the_image_is_rays_of_pyprojects_version() -> None:
    base = re.search(r"^FROM rayproject/ray:(\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)[1]
    version, _, variant = base.partition("-")
    assert Version(version) == Version(pyproject_ray_version()) and variant.endswith("gpu")


def test_the_checks_can_fail() -> None:
    """A misspelt flag, a misspelt config key and another Ray version are each caught."""
    with pytest.raises(SystemExit):
        check_entrypoint("python jobs/enhance.py --input a --output b --num-gpu-per-actor 1")
    with pytest.raises(ValueError, match="unknown config key"):
        check_entrypoint("python jobs/train.py --config configs/prior.yaml --set scaling.num_worker=4")
    assert Version("2.59.0") != Version(pyproject_ray_version()) == Version("2.60.0")
