"""An elastic job on a ray.cluster_utils.Cluster whose nodes come and go mid-run.

Usage: python -m tests.launch.elastic_nodes_main OUT_DIR SCENARIO; prints one JSON line
with the run directory and what was measured. The head node has no CPUs, so every rank
runs on a worker node.

- lose-node: nodes of 2 and 1 CPUs, 3 workers (min 2); once the job is past step 60 the
  1-CPU node is removed (its raylet and every process on it killed).
- add-node: one node of 2 CPUs, 3 workers (min 2): the job starts on 2; past step 30 a
  1-CPU node joins, and the seconds until the group runs on 3 are measured.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from disttrain.launch.job import run_job
from disttrain.train.spec import spec_from_dict
from tests.launch.test_elastic import elastic_job


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def main(out: str, scenario: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    big = cluster.add_node(num_cpus=2)
    small = cluster.add_node(num_cpus=1) if scenario == "lose-node" else None
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    run_dir = Path(out) / scenario
    outcome, measured = {}, {"scenario": scenario, "run_dir": str(run_dir)}
    job = elastic_job("ring", **{"job.max_steps": 1200})
    thread = threading.Thread(target=lambda: outcome.update(
        code=run_job(spec_from_dict(job), run_dir, quiet=True)), daemon=True)
    try:
        thread.start()
        if scenario == "lose-node":
            _wait(lambda: _status(run_dir).get("step", 0) >= 60, 180, "step 60")
            measured["world_before"] = _status(run_dir)["world_size"]
            cluster.remove_node(small, allow_graceful=False)
        else:
            _wait(lambda: _status(run_dir).get("step", 0) >= 30, 180, "step 30")
            measured["world_before"] = _status(run_dir)["world_size"]
            cluster.add_node(num_cpus=1)
            joined = time.monotonic()
            _wait(lambda: _status(run_dir).get("world_size") == 3, 120, "3 workers")
            measured["grew_after_s"] = round(time.monotonic() - joined, 2)
        thread.join(timeout=400)
        measured["code"] = outcome.get("code")
        print(json.dumps(measured), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    del big


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
