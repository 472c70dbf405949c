"""A two-node Ray cluster (ray.cluster_utils.Cluster) passes the equivalence test: its
parameters equal a one-process run's within 1e-9, with one worker per node (the
coordinator backend's object-store path, the ring) and with two (the coordinator
backend's hierarchical path: shared memory per node, a ring of the node leaders); and so
does the sharded optimizer's reduce-scatter and all-gather on each of those paths."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.launch.multinode_main import WIDE
from tests.train.helpers import REPO, final_params, run_local, small_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def run_cluster(tmp_path, *args) -> list:
    """multinode_main's JSON lines, one per backend."""
    # A cluster of its own needs a driver of its own: the session's Ray is already joined.
    done = subprocess.run([sys.executable, "-m", "tests.launch.multinode_main", str(tmp_path),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def assert_matches_one_process(runs: list, tmp_path, job: dict) -> None:
    reference = run_local(job, tmp_path / "reference")
    for run in runs:
        got = final_params(run["run_dir"])
        for name in reference:
            np.testing.assert_allclose(got[name], reference[name], rtol=0, atol=1e-9,
                                       err_msg=f"{run['backend']} {name}")


def test_two_node_cluster_matches_one_process(tmp_path):
    runs = run_cluster(tmp_path, "coordinator", "ring")
    assert [r["backend"] for r in runs] == ["coordinator", "ring"]
    for run in runs:
        assert len(set(run["nodes"])) == 2, run  # one worker on each node
    assert_matches_one_process(runs, tmp_path, small_job())


def test_two_nodes_of_two_workers_coordinator_takes_the_hierarchical_path(tmp_path):
    (run,) = run_cluster(tmp_path, "--per-node", "2", "--wide", "coordinator")
    assert sorted(collections.Counter(run["nodes"]).values()) == [2, 2], run
    for p in run["paths"]:
        assert p["path"] == "hier" and p["taken"].get("hier", 0) > 0, run
        assert "object store" not in p["taken"], run
    assert_matches_one_process([run], tmp_path, small_job(**WIDE))


def test_sharded_optimizer_across_two_nodes_matches_one_process(tmp_path):
    # Two workers per node: the coordinator's hierarchical path and the ring's hierarchical
    # mode, their reduce-scatter and all-gather whatever order placement gave the ranks
    wide = small_job(**WIDE)
    runs = run_cluster(tmp_path / "two", "--per-node", "2", "--wide", "--sharded",
                       "coordinator", "ring")
    assert [r["backend"] for r in runs] == ["coordinator", "ring"]
    for run in runs:
        assert sorted(collections.Counter(run["nodes"]).values()) == [2, 2], run
    for p in runs[0]["paths"]:
        assert p["path"] == "hier" and "object store" not in p["taken"], runs[0]
    assert_matches_one_process(runs, tmp_path / "two", wide)
    # One worker per node: the coordinator's object store, each half of its all-reduce
    (run,) = run_cluster(tmp_path / "one", "--wide", "--sharded", "coordinator")
    assert len(set(run["nodes"])) == 2, run
    for p in run["paths"]:
        assert p["path"] == "object store" and "hier" not in p["taken"], run
    assert_matches_one_process([run], tmp_path / "one", wide)
