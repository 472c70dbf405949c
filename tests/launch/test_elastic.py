"""Elastic jobs ([distributed] min_workers < workers) shrink and grow while they run, lose
at most the step in flight, and end where an uninterrupted run ends.

Real Ray (the session's 4-CPU cluster), real SIGKILL. The job is DESIGN.md's float64
equivalence job (MLP, SGD with momentum, shuffled), long enough to be hit mid-run; its
parameters must match the same job run uninterrupted on 3 workers and in one process
within 1e-9 (the world size changes the float rounding of the all-reduce, nothing else).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from disttrain.launch.cli import main as cli_main
from tests.launch.test_faults import (
    assert_bit_identical,
    checkpoints,
    long_job,
    losses,
    status,
    wait_for,
)
from tests.launch.test_supervision import run_in_thread
from tests.train.helpers import REPO, final_params, run_local, run_on_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def elastic_job(backend: str, **overrides) -> dict:
    return long_job(**{"distributed.backend": backend, "distributed.workers": 3,
                       "distributed.min_workers": 2, "distributed.heartbeat_s": 1.0,
                       "distributed.timeout_s": 60.0, "distributed.placement_timeout_s": 60.0,
                       "job.max_steps": 1200, "job.epochs": 200, **overrides})


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The elastic job's parameters and losses from one process: what every run must end at."""
    run_dir = tmp_path_factory.mktemp("one-process")
    job = elastic_job("coordinator", **{"distributed.backend": "local",
                                        "distributed.workers": 1,
                                        "distributed.min_workers": 0})
    return run_local(job, run_dir), dict(losses(run_dir))


def assert_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-9, err_msg=name)


def assert_each_step_once_with_the_same_losses(run_dir, want: dict) -> None:
    """Every logged step once (none lost, none logged twice), each loss as one process's.

    A logged loss is the mean over the steps since the previous record; the record that
    follows a resize averages only the steps the new group ran (the lost rank's share of
    the others is gone with it), so it is left out. A known gap: a loss that lands in the
    small all-reduce that agrees on a log step's loss, after the step itself completed,
    loses that one record (the group goes on from that step, no step is lost); only a
    resize's own step may be missing, so."""
    got = losses(run_dir)
    steps = [step for step, _ in got]
    resized = [r["step"] for r in status(run_dir).get("resizes", [])]
    assert steps == sorted(set(steps)) and set(steps) <= set(want), steps  # each once
    assert set(want) - set(steps) <= set(resized), sorted(set(want) - set(steps))
    after_resize = {min((s for s, _ in got if s > at), default=None) for at in resized}
    compared = [(step, loss) for step, loss in got if step not in after_resize]
    assert len(compared) >= len(got) - len(resized) > 0
    for step, loss in compared:
        assert loss == pytest.approx(want[step], rel=1e-9), f"the loss at step {step}"


def wait_for_step(run_dir, step: int, timeout: float = 120):
    wait_for(lambda: status(run_dir).get("step", 0) >= step, timeout, f"step {step}")


@pytest.mark.parametrize("backend", ["coordinator", "ring", "ring-hierarchical"])
def test_a_sigkilled_worker_shrinks_the_group_in_memory(ray_session, tmp_path, one_process,
                                                        backend, capsys):
    want_params, want_losses = one_process
    # ring-hierarchical: the ring's hierarchical mode, on this one node shared memory alone
    hierarchical = {"distributed.hierarchical": True} if backend.endswith("hierarchical") else {}
    job = elastic_job(backend.split("-")[0], **hierarchical)
    assert_close(run_on_ray(job, tmp_path / "uninterrupted"), want_params)  # 3 workers

    run_dir = tmp_path / "killed"
    thread, outcome = run_in_thread(job, run_dir)
    wait_for_step(run_dir, 60)
    assert status(run_dir)["world_size"] == 3
    victim = next(w for w in status(run_dir)["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the supervisor hung after a worker was killed"
    assert outcome["code"] == 0
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 0, final  # no checkpoint read
    shrink = final["resizes"][0]
    assert (shrink["from"], shrink["to"]) == (3, 2), final["resizes"]
    assert f"rank 1 (pid {victim['pid']}" in shrink["reason"], shrink
    assert shrink["seconds"] is not None and 60 <= shrink["step"] < 1200, shrink
    marks = [e for e in json.loads((run_dir / "timeline.json").read_text())["traceEvents"]
             if e["name"].startswith("resize")]
    assert [(m["name"], m["args"]["step"]) for m in marks][:1] == [
        ("resize 3 -> 2 workers", shrink["step"])], marks
    assert cli_main(["status", str(run_dir)]) == 0  # the table a user reads says it too
    assert f"resize   step {shrink['step']}: 3 -> 2 (rank 1 (pid {victim['pid']}" in (
        capsys.readouterr().out)
    assert_close(final_params(run_dir), want_params)
    assert_each_step_once_with_the_same_losses(run_dir, want_losses)


@ray.remote(num_cpus=2)
class CpuHolder:
    """Holds two of the session's CPUs until killed: a cluster where only 2 of 3 fit."""

    def ready(self) -> bool:
        return True


def test_a_group_started_below_its_workers_grows_when_cpus_free_up(ray_session, tmp_path,
                                                                   one_process):
    want_params, want_losses = one_process
    holder = CpuHolder.remote()
    ray.get(holder.ready.remote(), timeout=60)
    run_dir = tmp_path / "grown"
    thread, outcome = run_in_thread(elastic_job("ring"), run_dir)
    try:
        wait_for_step(run_dir, 30)
        assert status(run_dir)["world_size"] == 2  # 4 CPUs, 2 held: min_workers started
    finally:
        ray.kill(holder)
    freed_at = time.monotonic()
    wait_for(lambda: status(run_dir).get("world_size") == 3, 60, "the group to grow to 3")
    joined_after = time.monotonic() - freed_at
    thread.join(timeout=240)
    assert outcome["code"] == 0
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 0, final
    assert [(r["from"], r["to"]) for r in final["resizes"]] == [(2, 3)], final["resizes"]
    assert "became free" in final["resizes"][0]["reason"]
    print(f"grew to 3 workers {joined_after:.1f} s after the CPUs were freed")
    assert_close(final_params(run_dir), want_params)
    assert_each_step_once_with_the_same_losses(run_dir, want_losses)
    assert checkpoints(run_dir)


def test_fewer_survivors_than_min_workers_restart_from_the_checkpoint(ray_session, tmp_path,
                                                                      one_process):
    want_params, want_losses = one_process
    job = elastic_job("coordinator", **{"distributed.min_workers": 3,
                                        "distributed.workers": 3})
    job["distributed"]["min_workers"] = 2  # two of three lost at once: one survivor
    uninterrupted = run_on_ray(job, tmp_path / "uninterrupted")
    run_dir = tmp_path / "two-lost"
    thread, outcome = run_in_thread(job, run_dir)
    wait_for(lambda: checkpoints(run_dir), 120, "the first checkpoint")
    for victim in [w for w in status(run_dir)["workers"] if w["rank"] in (1, 2)]:
        os.kill(victim["pid"], signal.SIGKILL)
    thread.join(timeout=300)
    assert outcome["code"] == 0
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 1, final
    assert not final.get("resizes"), final["resizes"]
    # as a job that is not elastic restarts: all 3 workers again, from the checkpoint, so
    # bit-identical to the run that was never hit, with the same losses
    assert final["world_size"] == 3
    assert_bit_identical(final_params(run_dir), uninterrupted)
    assert losses(run_dir) == losses(tmp_path / "uninterrupted")
    assert_close(final_params(run_dir), want_params)
    assert_each_step_once_with_the_same_losses(run_dir, want_losses)


@pytest.mark.parametrize("scenario", ["lose-node", "add-node"])
def test_nodes_that_leave_or_join_resize_the_group(tmp_path, one_process, scenario):
    """A whole node removed mid-run (its raylet and processes killed), and a node added to a
    group that started below its workers, on a ray.cluster_utils.Cluster of its own."""
    want_params, want_losses = one_process
    done = subprocess.run([sys.executable, "-m", "tests.launch.elastic_nodes_main",
                           str(tmp_path), scenario], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    measured = json.loads([line for line in done.stdout.splitlines()
                           if line.startswith("{")][-1])
    assert measured["code"] == 0, measured
    run_dir = Path(measured["run_dir"])
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 0, final
    if scenario == "lose-node":
        assert measured["world_before"] == 3
        assert (final["resizes"][0]["from"], final["resizes"][0]["to"]) == (3, 2), final
    else:
        assert measured["world_before"] == 2
        assert [(r["from"], r["to"]) for r in final["resizes"]] == [(2, 3)], final
        print(f"grew to 3 workers {measured['grew_after_s']} s after the node joined")
    assert_close(final_params(run_dir), want_params)
    assert_each_step_once_with_the_same_losses(run_dir, want_losses)


def test_two_losses_in_a_row_and_a_loss_while_checkpoints_are_written(ray_session, tmp_path,
                                                                      one_process):
    """3 workers down to 1 (min_workers 1), one SIGKILL after the other, with a checkpoint
    written at every step, so each loss can land while the driver writes one."""
    from disttrain.train.checkpoint import latest_valid_checkpoint

    want_params, want_losses = one_process
    job = elastic_job("ring", **{"distributed.min_workers": 1, "job.checkpoint_every": 1})
    run_dir = tmp_path / "twice"
    thread, outcome = run_in_thread(job, run_dir)
    wait_for(lambda: status(run_dir).get("step", 0) >= 60, 180, "step 60")
    for world in (3, 2):
        # the second loss as soon as the group of 2 runs: it does not grow back for 10 s
        wait_for(lambda: status(run_dir).get("world_size") == world  # noqa: B023
                 and status(run_dir).get("state") == "running", 180,
                 f"a running group of {world}")
        victim = next(w for w in status(run_dir)["workers"] if w["rank"] == world - 1)
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: status(run_dir).get("world_size") == world - 1, 120,  # noqa: B023
                 f"the group to shrink to {world - 1}")
    thread.join(timeout=300)
    assert outcome["code"] == 0
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 0, final
    resizes = [(r["from"], r["to"]) for r in final["resizes"]]
    assert resizes[:2] == [(3, 2), (2, 1)], final  # then it may grow back: CPUs are free
    assert all("became free" in r["reason"] for r in final["resizes"][2:]), final
    assert_close(final_params(run_dir), want_params)
    assert_each_step_once_with_the_same_losses(run_dir, want_losses)
    path, state = latest_valid_checkpoint(run_dir)
    assert int(state.meta["step"]) == 1200, path
    assert_close(state.model, want_params)
