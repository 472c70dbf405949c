"""The coordinator backend on a two-node ray.cluster_utils.Cluster: which data path it takes.

Usage: python -m tests.workers.multinode_shm_main; prints one JSON line per group: the
ranks' nodes, their data paths and the digest of every rank's all-reduce result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from disttrain.workers.coordinator import create_coordinator
from tests.workers.helpers import RankActor, digest, random_data

REPO = Path(__file__).resolve().parents[2]
N = 300_001  # 2.4 MB of float64: above the coordinator's inline size


class PathRank(RankActor):
    """A rank actor that reports its node and its communicator's data path."""

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def data_path(self):
        return self.comm._shm_state


def run_group(nodes: list) -> dict:
    world_size = len(nodes)
    coordinator = create_coordinator(world_size, timeout_s=60.0)
    group = [ray.remote(num_cpus=0)(PathRank).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        for node in nodes]
    ray.get([a.build.remote("coordinator", r, world_size, coordinator, None, 60.0)
             for r, a in enumerate(group)])
    outs = ray.get([a.allreduce_at.remote(0, random_data(r, N, "float64"))
                    for r, a in enumerate(group)])
    report = {"nodes": ray.get([a.node.remote() for a in group]),
              "paths": ray.get([a.data_path.remote() for a in group]),
              "digests": [digest(o) for o in outs]}
    for handle in (*group, coordinator):
        ray.kill(handle)
    return report


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    env = {"OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    try:
        cluster.wait_for_nodes()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2, nodes
        for placement in ([nodes[0], nodes[1]], [nodes[0], nodes[0]]):
            print(json.dumps(run_group(placement)), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
