"""Fixtures for the worker-backend tests: one Ray session for the whole test run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster per test session (ray.init takes seconds); shut down at the end."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        env = {"OPENBLAS_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
