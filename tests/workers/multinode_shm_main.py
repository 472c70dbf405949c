"""The coordinator backend on a two-node ray.cluster_utils.Cluster: which data path it takes.

Usage: python -m tests.workers.multinode_shm_main; prints one JSON line per group, each
with its "name": one rank per node ("across", the object store: nothing to share), both
on one node ("within", shared memory), two ranks per node ("mixed", the hierarchical
path: a script of collectives) and two ranks per node with a rank SIGKILLed mid-job
("kill-nonleader", "kill-leader": what every survivor raised), and two ranks per node with
one rank alive but out of an all-reduce while the job is aborted ("abort-nonleader-absent",
"abort-leader-absent": what every other rank raised).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from disttrain.workers.coordinator import create_coordinator
from tests.workers.helpers import RankActor, digest, int_data, random_data

REPO = Path(__file__).resolve().parents[2]
N = 300_001  # 2.4 MB of float64: above the coordinator's inline size
SECRET = "multinode-test-secret"
KILL_TIMEOUT_S = 15.0


class PathRank(RankActor):
    """A rank actor that reports its node and its communicator's data path."""

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def data_path(self) -> dict:
        return {"shm": self.comm._shm_state, "path": self.comm.path,
                "taken": dict(self.comm.paths_taken)}

    def script(self) -> dict:
        """Every data collective on integer-valued floats (exact on every path), random
        floats (the same bits on every rank) and a small buffer (the star path)."""
        comm, out = self.comm, {}
        comm.step = 1
        out["allreduce"] = digest(comm.allreduce_(int_data(comm.rank, N, "float64")))
        out["allreduce32"] = digest(comm.allreduce_(int_data(comm.rank, N, "float32")))
        out["random"] = digest(comm.allreduce_(random_data(comm.rank, N, "float64")))
        out["small"] = digest(comm.allreduce_(int_data(comm.rank, 1001, "float64")))
        for root in range(comm.world_size):
            out[f"broadcast{root}"] = digest(comm.broadcast_(int_data(comm.rank, N, "float64"),
                                                             root))
        sent = [comm.leaders_bytes_sent]
        buf = comm.reduce_scatter_(int_data(comm.rank, N, "float64"))
        out["reduce_scatter"] = digest(own_chunk(buf, comm.rank, comm.world_size))
        sent.append(comm.leaders_bytes_sent)
        out["allgather"] = digest(comm.allgather_(int_data(comm.rank, N, "float64")))
        sent.append(comm.leaders_bytes_sent)
        comm.allreduce_(np.ones(N))
        sent.append(comm.leaders_bytes_sent)
        # Bytes on the leaders' ring: reduce-scatter, all-gather, an all-reduce of one size
        out["leaders_bytes"] = np.diff(sent).tolist()
        out["objects"] = comm.allgather(comm.rank)
        return out

    def failing_allreduce(self, step: int) -> dict:
        """An all-reduce that a peer's death must end: the error it ended with, and when."""
        self.comm.step = step
        started = time.monotonic()
        try:
            self.comm.allreduce_(np.ones(N))
            error = None
        except Exception as e:  # noqa: BLE001 - reported to the test
            error = f"{type(e).__name__}: {e}"
        return {"error": error, "after_s": time.monotonic() - started}


def own_chunk(buf: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    from disttrain.workers.comm.base import chunk_bounds

    lo, hi = chunk_bounds(buf.size, world_size)[rank]
    return buf[lo:hi]


def start_group(nodes: list, secret, timeout_s: float = 60.0):
    world_size = len(nodes)
    # Heartbeats would only notice a death after 120 s: the data path must find it itself.
    coordinator = create_coordinator(world_size, timeout_s=timeout_s,
                                     heartbeat_timeout_s=120.0)
    group = [ray.remote(num_cpus=0, max_restarts=0)(PathRank).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
        for node in nodes]
    ray.get([a.build.remote("coordinator", r, world_size, coordinator, secret, timeout_s)
             for r, a in enumerate(group)])
    return coordinator, group


def run_group(name: str, nodes: list, secret) -> dict:
    coordinator, group = start_group(nodes, secret)
    outs = ray.get([a.allreduce_at.remote(0, random_data(r, N, "float64"))
                    for r, a in enumerate(group)])
    report = {"name": name, "nodes": ray.get([a.node.remote() for a in group]),
              "paths": ray.get([a.data_path.remote() for a in group]),
              "digests": [digest(o) for o in outs]}
    if name in ("across", "mixed", "mixed-no-secret"):
        report["script"] = ray.get([a.script.remote() for a in group])
        report["paths_after"] = ray.get([a.data_path.remote() for a in group])
    for handle in (*group, coordinator):
        ray.kill(handle)
    return report


def run_kill(name: str, nodes: list, victim: int) -> dict:
    """Set the path up, then SIGKILL `victim` while the others wait for it in an all-reduce."""
    coordinator, group = start_group(nodes, SECRET, timeout_s=KILL_TIMEOUT_S)
    ray.get([a.allreduce_at.remote(0, np.ones(N)) for a in group])
    paths = ray.get([a.data_path.remote() for a in group])
    pid = ray.get(group[victim].pid.remote())
    survivors = [a for r, a in enumerate(group) if r != victim]
    refs = [a.failing_allreduce.remote(1) for a in survivors]
    time.sleep(1.0)  # the survivors are in the collective, waiting for the victim
    os.kill(pid, signal.SIGKILL)
    # A hang guard only: the survivors report how long they took themselves.
    results = ray.get(refs, timeout=KILL_TIMEOUT_S + 60)
    for handle in (*group, coordinator):
        ray.kill(handle)
    return {"name": name, "victim": victim, "paths": paths, "results": results}


def run_abort(name: str, nodes: list, absent: int) -> dict:
    """Set the path up; then rank `absent` stays out of an all-reduce, alive, and the job
    is aborted (as the supervisor aborts it when a rank fails in its own code): every
    other rank must end with the abort's reason, not wait for the timeout."""
    coordinator, group = start_group(nodes, SECRET, timeout_s=KILL_TIMEOUT_S)
    ray.get([a.allreduce_at.remote(0, np.ones(N)) for a in group])
    paths = ray.get([a.data_path.remote() for a in group])
    refs = [a.failing_allreduce.remote(1) for r, a in enumerate(group) if r != absent]
    time.sleep(1.0)  # the others are in the collective, waiting for the absent rank
    ray.get(coordinator.abort.remote(f"the test aborted the job; rank {absent} stayed out"))
    results = ray.get(refs, timeout=KILL_TIMEOUT_S + 60)  # a hang guard only
    for handle in (*group, coordinator):
        ray.kill(handle)
    return {"name": name, "absent": absent, "paths": paths, "results": results}


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
        a, b = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        mixed = [a, b, a, b]  # node a: ranks 0 and 2, node b: ranks 1 (its leader) and 3
        for report in (run_group("across", [a, b], SECRET),
                       run_group("within", [a, a], SECRET),
                       run_group("mixed", mixed, SECRET),
                       run_group("mixed-no-secret", mixed, None),
                       run_kill("kill-nonleader", mixed, victim=3),
                       run_kill("kill-leader", mixed, victim=1),
                       run_abort("abort-nonleader-absent", mixed, absent=3),
                       run_abort("abort-leader-absent", mixed, absent=1)):
            print(json.dumps(report), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
