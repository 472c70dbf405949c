"""Fault tolerance with real processes: SIGKILL a Ray worker, SIGTERM the CLI, resume.

The promise: a run that is stopped, or loses a worker, and resumes ends bit-identical
to one that never stopped; nothing hangs on a dead peer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from disttrain.launch.job import run_job
from disttrain.train.spec import dump_job, spec_from_dict
from tests.train.helpers import REPO, final_params, run_local, run_on_ray, small_job

pytestmark = pytest.mark.slow


def long_job(**overrides) -> dict:
    base = {"job.max_steps": 240, "job.epochs": 40, "job.checkpoint_every": 20,
            "distributed.timeout_s": 10.0}
    return small_job(**{**base, **overrides})


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def checkpoints(run_dir: Path) -> list:
    root = run_dir / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.name.startswith("step-")) if (
        root.is_dir()) else []


def losses(run_dir: Path) -> list:
    """(step, loss) of every logged training step in RUN/metrics.jsonl, in file order."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["coordinator", "ring"])
def test_sigkilled_worker_is_named_and_the_resumed_run_is_bit_identical(
        ray_session, tmp_path, backend):
    job = long_job(**{"distributed.backend": backend, "distributed.workers": 2,
                      "distributed.heartbeat_s": 1.0})
    uninterrupted = run_on_ray(job, tmp_path / "uninterrupted")

    run_dir = tmp_path / "killed"
    spec = spec_from_dict(job)
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(code=run_job(spec, run_dir, quiet=True)), daemon=True)
    thread.start()
    wait_for(lambda: checkpoints(run_dir), 120, "the first checkpoint")
    victim = next(w for w in status(run_dir)["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=240)
    assert not thread.is_alive(), "the supervisor hung after a worker was killed"
    final = status(run_dir)
    assert final["restarts"] == 1 and final["state"] == "done"
    assert "rank 1" in final["failures"][0] and str(victim["pid"]) in final["failures"][0]
    assert time.monotonic() - killed_at < 200
    assert_bit_identical(final_params(run_dir), uninterrupted)
    assert losses(run_dir) == losses(tmp_path / "uninterrupted")  # each step once, same loss


def _cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "disttrain.launch.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def test_sigterm_stops_at_a_checkpoint_and_resume_is_bit_identical(tmp_path):
    job = long_job(**{"job.max_steps": 3000, "job.epochs": 400, "job.checkpoint_every": 0})
    uninterrupted = run_local(job, tmp_path / "uninterrupted")
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(spec_from_dict(job)))
    run_dir = tmp_path / "stopped"

    proc = _cli("train", str(job_file), "--run-dir", str(run_dir))
    wait_for(lambda: status(run_dir).get("state") == "running" and (
        run_dir / "metrics.jsonl").exists(), 60, "training to start")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    stopped = status(run_dir)
    assert stopped["state"] == "stopped", stopped
    assert 0 < stopped["step"] < 3000
    assert checkpoints(run_dir)[-1] == f"step-{stopped['step']:08d}"

    proc = _cli("train", str(job_file), "--run-dir", str(run_dir), "--resume")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"resumed from step-{stopped['step']:08d}" in out
    assert status(run_dir)["state"] == "done"
    assert_bit_identical(final_params(run_dir), uninterrupted)


def test_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path):
    job = long_job(**{"job.max_steps": 60})
    uninterrupted = run_local(job, tmp_path / "uninterrupted")
    partial = run_dir = tmp_path / "partial"
    run_local(long_job(**{"job.max_steps": 40}), partial)
    newest = run_dir / "checkpoints" / "step-00000040" / "optim.npz"
    newest.write_bytes(newest.read_bytes()[:-7] + b"garbage")
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(spec_from_dict(job)))
    proc = _cli("train", str(job_file), "--run-dir", str(run_dir), "--resume")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "skipping checkpoint step-00000040" in err and "sha256" in err
    assert "resumed from step-00000020" in out
    assert_bit_identical(final_params(run_dir), uninterrupted)
    assert losses(run_dir) == losses(tmp_path / "uninterrupted")


@pytest.mark.ray
def test_ray_job_stopped_by_request_resumes_bit_identical(ray_session, tmp_path):
    job = long_job(**{"distributed.backend": "ring", "distributed.workers": 2,
                      "job.max_steps": 2000, "job.epochs": 300, "job.checkpoint_every": 0})
    uninterrupted = run_on_ray(job, tmp_path / "uninterrupted")
    run_dir, spec = tmp_path / "stopped", spec_from_dict(job)
    stop, outcome = threading.Event(), {}
    thread = threading.Thread(target=lambda: outcome.update(
        code=run_job(spec, run_dir, quiet=True, should_stop=stop.is_set)), daemon=True)
    thread.start()
    wait_for(lambda: (run_dir / "metrics.jsonl").exists(), 120, "the first metrics")
    stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert outcome["code"] == 0
    stopped_at = status(run_dir)["step"]
    assert 0 < stopped_at < 2000
    assert status(run_dir)["state"] == "stopped"
    assert checkpoints(run_dir)[-1] == f"step-{stopped_at:08d}"
    assert run_job(spec, run_dir, resume=True, quiet=True) == 0
    assert status(run_dir)["step"] == 2000
    assert_bit_identical(final_params(run_dir), uninterrupted)
