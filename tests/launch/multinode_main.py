"""Run the equivalence job on a two-node ray.cluster_utils.Cluster, PER_NODE workers per node.

Usage: python -m tests.launch.multinode_main OUT_DIR [--per-node N] [--wide] [--sharded]
BACKEND...;
prints one JSON line per backend with the run directory, the Ray node of each rank and,
for the coordinator backend, the data path each rank's communicator took (recorded by a
worker setup hook as the communicator closes, in OUT_DIR/paths). --wide: the job with
WIDE's model, whose gradient bucket (295 KB) is above the coordinator's inline size, so
it leaves the star path. --sharded: with [distributed] shard_optimizer = true, so the
gradients are reduce-scattered and the parameters all-gathered across the nodes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from tests.train.helpers import REPO, run_on_ray, small_job

PATHS_DIR = "DISTTRAIN_TEST_PATHS_DIR"
WIDE = {"model.sizes": [16, 256, 128, 4]}  # 37,764 float64 parameters


def record_paths() -> None:
    """Worker setup hook: as a coordinator communicator closes, write its data path."""
    from disttrain.workers.comm import star

    release = star.CoordinatorCommunicator._release

    def _release(self) -> None:
        folder = os.environ.get(PATHS_DIR)
        if folder and os.path.isdir(folder):
            Path(folder, f"rank{self.rank}.json").write_text(json.dumps(
                {"path": self.path, "taken": dict(self.paths_taken)}))
        release(self)

    star.CoordinatorCommunicator._release = _release


def main(out: str, backends: list, per_node: int = 1, wide: bool = False,
         sharded: bool = False) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node})
    cluster.add_node(num_cpus=per_node)
    paths_root = Path(out) / "paths"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")])),
           PATHS_DIR: str(paths_root)}
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env, "worker_process_setup_hook": record_paths})
    try:
        for backend in backends:
            run_dir = Path(out) / backend
            paths_root.mkdir(parents=True, exist_ok=True)
            for old in paths_root.iterdir():
                old.unlink()
            # placement "auto" must choose SPREAD on a cluster of two nodes
            job = small_job(**{"distributed.backend": backend,
                               "distributed.workers": 2 * per_node,
                               "distributed.shard_optimizer": sharded,
                               **(WIDE if wide else {})})
            run_on_ray(job, run_dir)
            workers = json.loads((run_dir / "status.json").read_text())["workers"]
            paths = {p.stem: json.loads(p.read_text()) for p in paths_root.iterdir()}
            print(json.dumps({"backend": backend, "run_dir": str(run_dir),
                              "nodes": [w["node_id"] for w in workers],
                              "paths": [paths.get(f"rank{r}") for r in range(len(workers))]}),
                  flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    args = sys.argv[1:]
    flags = {flag: flag in args for flag in ("--wide", "--sharded")}
    args = [a for a in args if a not in flags]
    per_node = 1
    if "--per-node" in args:
        i = args.index("--per-node")
        per_node = int(args[i + 1])
        del args[i:i + 2]
    main(args[0], args[1:], per_node, flags["--wide"], flags["--sharded"])
