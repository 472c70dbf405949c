"""Stopping a job with real signals, on every backend, as `docker stop` and Ctrl-C do.

The CLI runs as PID 1 of its own PID namespace (`unshare --pid --fork`), as it does in
the image. A first SIGTERM or SIGINT stops every rank within about a second (not only at
a logged step) with a checkpoint, exit 0; a second one exits at once, exit 1. Under
mpiexec the CLI owns the process group: a killed rank fails the job (exit 1, status
"failed"), and a killed CLI takes its ranks down with a checkpoint, leaving nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from disttrain.train.spec import dump_job, spec_from_dict
from tests.launch.test_faults import checkpoints, status, wait_for
from tests.train.helpers import REPO, small_job

pytestmark = pytest.mark.slow


def endless_job(backend: str, workers: int) -> dict:
    """A job that would run for hours, logging only every million steps."""
    return small_job(**{"job.max_steps": 10_000_000, "job.epochs": 1_000_000,
                        "job.log_every": 1_000_000, "distributed.backend": backend,
                        "distributed.workers": workers, "distributed.timeout_s": 30.0})


def start_cli(tmp_path: Path, job: dict, run_dir: Path, as_pid_1: bool):
    """(the Popen of what we started, the pid of the CLI itself)."""
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(spec_from_dict(job)))
    command = [sys.executable, "-m", "disttrain.launch.cli", "train", str(job_file),
               "--run-dir", str(run_dir)]
    if as_pid_1:
        command = ["unshare", "--pid", "--fork", "--mount-proc", *command]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if not as_pid_1:
        return proc, proc.pid
    children = wait_for(lambda: _children(proc.pid), 30, "unshare's child")
    return proc, children[0]


def _children(pid: int) -> list:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def can_be_pid_1() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def wait_until_training(run_dir: Path) -> None:
    wait_for(lambda: status(run_dir).get("state") == "running", 120, "training to start")
    time.sleep(1.5)  # a few hundred steps, none of them a logged step


@pytest.mark.parametrize("backend,workers", [("local", 1), ("coordinator", 2), ("ring", 2),
                                             ("mpi", 2)])
def test_sigterm_stops_every_backend_within_seconds_with_a_checkpoint(tmp_path, backend,
                                                                      workers):
    if not can_be_pid_1():
        pytest.skip("needs root and unshare to run the CLI as PID 1")
    run_dir = tmp_path / "run"
    proc, cli = start_cli(tmp_path, endless_job(backend, workers), run_dir, as_pid_1=True)
    try:
        wait_until_training(run_dir)
        os.kill(cli, signal.SIGTERM)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    final = status(run_dir)
    assert final["state"] == "stopped", final
    assert 0 < final["step"] < 1_000_000  # stopped between logged steps
    assert checkpoints(run_dir)[-1] == f"step-{final['step']:08d}"
    assert all(w["state"] == "stopped" for w in final["workers"])
    assert took < 60  # not a hang; the time itself is not asserted (shared machine)
    # the steps run since the last log are logged at the stop, so none goes unrecorded
    assert f"stopped at step {final['step']}" in out


def test_second_signal_exits_at_once_without_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc, cli = start_cli(tmp_path, endless_job("local", 1), run_dir, as_pid_1=False)
    try:
        wait_until_training(run_dir)
        # Two different signals back to back: two of the same kind may merge into one.
        os.kill(cli, signal.SIGTERM)
        os.kill(cli, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "exiting now without a checkpoint" in err
    assert status(run_dir)["state"] == "failed"
    assert "interrupted twice" in status(run_dir)["error"]


def _processes_mentioning(text: str) -> list:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.mpi
def test_a_killed_mpi_rank_fails_the_job_and_leaves_nothing_running(tmp_path):
    run_dir = tmp_path / "run"
    shm_before = set(Path("/dev/shm").glob("mpich_shm_*"))
    proc, _ = start_cli(tmp_path, endless_job("mpi", 2), run_dir, as_pid_1=False)
    try:
        wait_until_training(run_dir)
        victim = next(w for w in status(run_dir)["workers"] if w["rank"] == 1)
        os.kill(victim["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert [line for line in err.splitlines() if line.startswith("disttrain: job failed")]
    final = status(run_dir)
    assert final["state"] == "failed" and "mpiexec exited" in final["error"]
    assert f"rank 1 (pid {victim['pid']}) was killed" in final["error"]
    assert f"rank 1 (pid {victim['pid']}) was killed" in err
    assert wait_for(lambda: not _processes_mentioning(str(run_dir)), 30, "no rank left")
    assert set(Path("/dev/shm").glob("mpich_shm_*")) <= shm_before  # MPICH's leftovers gone


@pytest.mark.mpi
def test_a_killed_cli_takes_its_mpi_ranks_down_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc, cli = start_cli(tmp_path, endless_job("mpi", 2), run_dir, as_pid_1=False)
    wait_until_training(run_dir)
    os.kill(cli, signal.SIGKILL)
    proc.communicate(timeout=30)
    wait_for(lambda: status(run_dir).get("state") == "stopped", 60,
             "the ranks to stop after their CLI was killed")
    assert checkpoints(run_dir)[-1] == f"step-{status(run_dir)['step']:08d}"
    assert wait_for(lambda: not _processes_mentioning(str(run_dir)), 30, "no rank left")
