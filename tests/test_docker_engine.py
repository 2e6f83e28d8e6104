"""The test harness really has a Docker engine and a registry-free base image."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.docker


def test_base_image_runs_python(docker_engine, base_image):
    out = docker_engine.containers.run(
        base_image, ["python3", "-c", "import sys, venv; print(sys.version_info[:2])"], remove=True, user="65534"
    )
    assert out.decode().strip() == "(3, 11)"
