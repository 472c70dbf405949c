"""A two-node Ray cluster (ray.cluster_utils.Cluster), one worker per node, passes the
equivalence test: its parameters equal a one-process run's within 1e-9."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.train.helpers import REPO, final_params, run_local, small_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_node_cluster_matches_one_process(tmp_path):
    # A cluster of its own needs a driver of its own: the session's Ray is already joined.
    done = subprocess.run([sys.executable, "-m", "tests.launch.multinode_main", str(tmp_path),
                           "coordinator", "ring"], cwd=REPO, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["backend"] for r in runs] == ["coordinator", "ring"]
    reference = run_local(small_job(), tmp_path / "reference")
    for run in runs:
        assert len(set(run["nodes"])) == 2, run  # one worker on each node
        got = final_params(run["run_dir"])
        for name in reference:
            np.testing.assert_allclose(got[name], reference[name], rtol=0, atol=1e-9,
                                       err_msg=f"{run['backend']} {name}")
