"""lost_nodes.settle on a real two-node cluster whose worker node's raylet is frozen.

Usage: python -m tests.launch.lost_nodes_main; prints one JSON line. The head checks its
nodes' health every 0.5 s and gives up after 4 misses, so a frozen raylet (SIGSTOP: its
machine "gone" without closing a connection, as a killed container's) is declared dead in
seconds rather than Ray's default minute.
"""

from __future__ import annotations

import json
import os
import signal
import time

import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from disttrain.launch.lost_nodes import settle

FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_timeout_ms": 500, "health_check_failure_threshold": 4}


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "_system_config": FAST_HEALTH_CHECKS})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    node = worker.node_id
    raylet = worker.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    out = {}
    try:
        started = time.monotonic()
        out["alive_unsettled"] = settle({node}, 60.0)
        out["alive_s"] = time.monotonic() - started
        os.kill(raylet, signal.SIGSTOP)  # gone, as far as anyone can tell, but not yet declared
        out["frozen_briefly_unsettled"] = settle({node}, 0.3)
        started = time.monotonic()
        out["frozen_unsettled"] = settle({node}, 60.0)
        out["frozen_s"] = time.monotonic() - started
        out["declared_dead"] = not any(n["NodeID"] == node and n["Alive"] for n in ray.nodes())
        out["node"] = node
    finally:
        os.kill(raylet, signal.SIGCONT)
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
