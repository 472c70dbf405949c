"""Fixtures shared by every test package: one local Ray cluster for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray cluster, started once (ray.init takes seconds), with room for
    three workers plus the coordinator on this machine's two cores."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        env = {"OPENBLAS_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                           os.environ.get("PYTHONPATH")]))}
        # address="local": always a cluster of our own, never one that `ray start` (or
        # another test session) left in /tmp/ray/ray_current_cluster.
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
