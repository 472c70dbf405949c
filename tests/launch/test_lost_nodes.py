"""Before a restart, the failed group's nodes are settled (launch/lost_nodes.py): a live
node answers at once; a node whose raylet froze (a machine gone without closing its
connections, as a killed container) is waited for until Ray declares it dead, so the new
placement group cannot land on it. On a real two-node Cluster, in a driver of its own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.train.helpers import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_a_live_node_answers_and_a_frozen_one_is_waited_for_until_declared_dead():
    # A cluster of its own needs a driver of its own: the session's Ray is already joined.
    done = subprocess.run([sys.executable, "-m", "tests.launch.lost_nodes_main"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["alive_unsettled"] == []  # it answered: the new group may use it
    # frozen, neither answering nor declared dead yet: unsettled after a short wait
    assert out["frozen_briefly_unsettled"] == [out["node"]]
    # then settled by Ray's verdict, within the wait, and out of the placement's view
    assert out["frozen_unsettled"] == [] and out["declared_dead"]
