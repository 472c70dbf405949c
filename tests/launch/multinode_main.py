"""Run the equivalence job on a two-node ray.cluster_utils.Cluster, one worker per node.

Usage: python -m tests.launch.multinode_main OUT_DIR BACKEND...; prints one JSON line
per backend with the run directory and the Ray node of each rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from tests.train.helpers import run_on_ray, small_job


def main(out: str, backends: list) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        for backend in backends:
            run_dir = Path(out) / backend
            # placement "auto" must choose SPREAD on a cluster of two nodes
            job = small_job(**{"distributed.backend": backend, "distributed.workers": 2})
            run_on_ray(job, run_dir)
            workers = json.loads((run_dir / "status.json").read_text())["workers"]
            print(json.dumps({"backend": backend, "run_dir": str(run_dir),
                              "nodes": [w["node_id"] for w in workers]}), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
