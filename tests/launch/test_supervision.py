"""The supervisor watches the coordinator and the ranks' heartbeats, not only their exits.

A rank that is alive but silent (SIGSTOP: a wedged process, a paused VM) is found by its
missing heartbeats ([distributed] heartbeat_s, on every backend) long before the
collective timeout; a coordinator that dies is noticed like a dead worker. Both end the
attempt, the group restarts from the driver's newest checkpoint, and the run ends
bit-identical to one that never had trouble.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import pytest

from disttrain.launch.job import run_job
from disttrain.train.spec import spec_from_dict
from tests.launch.test_faults import (
    assert_bit_identical,
    checkpoints,
    long_job,
    losses,
    status,
    wait_for,
)
from tests.train.helpers import final_params, run_on_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def supervised_job(backend: str) -> dict:
    # timeout_s is far longer than 5 heartbeats: only the heartbeat can explain a quick end
    return long_job(**{"distributed.backend": backend, "distributed.workers": 2,
                       "distributed.heartbeat_s": 0.5, "distributed.timeout_s": 120.0,
                       "job.max_steps": 600, "job.epochs": 100})


def run_in_thread(job: dict, run_dir: Path):
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        code=run_job(spec_from_dict(job), run_dir, quiet=True)), daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("backend", ["coordinator", "ring"])
def test_a_frozen_rank_is_found_by_its_heartbeat_and_the_run_recovers(ray_session, tmp_path,
                                                                      backend):
    job = supervised_job(backend)
    uninterrupted = run_on_ray(job, tmp_path / "uninterrupted")
    run_dir = tmp_path / "frozen"
    thread, outcome = run_in_thread(job, run_dir)
    wait_for(lambda: checkpoints(run_dir), 120, "the first checkpoint")
    victim = next(w for w in status(run_dir)["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        thread.join(timeout=110)  # less than the collective timeout
    finally:
        with contextlib.suppress(ProcessLookupError):  # the supervisor killed it, usually
            os.kill(victim["pid"], signal.SIGCONT)
    assert not thread.is_alive(), "a frozen rank was not noticed before the timeout"
    assert outcome["code"] == 0
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 1, final
    assert "no heartbeat" in final["failures"][0]
    assert f"rank 1 (pid {victim['pid']}" in final["failures"][0]
    assert_bit_identical(final_params(run_dir), uninterrupted)
    assert losses(run_dir) == losses(tmp_path / "uninterrupted")


def test_a_dead_coordinator_is_noticed_and_the_run_recovers(ray_session, tmp_path):
    job = supervised_job("coordinator")
    uninterrupted = run_on_ray(job, tmp_path / "uninterrupted")
    run_dir = tmp_path / "run"
    thread, outcome = run_in_thread(job, run_dir)
    wait_for(lambda: checkpoints(run_dir), 120, "the first checkpoint")
    os.kill(status(run_dir)["coordinator"]["pid"], signal.SIGKILL)
    thread.join(timeout=110)
    assert not thread.is_alive(), "the supervisor hung after its coordinator died"
    assert outcome["code"] == 0
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 1, final
    assert "coordinator" in final["failures"][0]
    assert_bit_identical(final_params(run_dir), uninterrupted)


FACTORY_THAT_DIES_ONCE = '''
import os
from pathlib import Path

import ray

from disttrain import nn

MARK = Path(__file__).with_name("died-once")


def build(spec):
    """Kill the first Ray worker that builds this model; build it everywhere else."""
    in_a_worker = ray.is_initialized() and ray.get_runtime_context().get_actor_id()
    if in_a_worker and not MARK.exists():
        MARK.write_text("died")
        os._exit(1)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
'''


def test_a_worker_dying_while_it_builds_its_replica_is_restarted(ray_session, tmp_path):
    factory = tmp_path / "dies_once.py"
    factory.write_text(FACTORY_THAT_DIES_ONCE)
    job = supervised_job("coordinator")
    job["model"] = {"kind": "custom", "factory": f"{factory}:build"}
    run_dir = tmp_path / "run"
    thread, outcome = run_in_thread(job, run_dir)
    thread.join(timeout=200)
    assert not thread.is_alive()
    assert (tmp_path / "died-once").exists()  # the fault really happened
    assert outcome["code"] == 0
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 1, final
