"""The driver owns the run directory: a cluster whose worker node cannot see it.

A real `ray start` cluster: a head with no CPUs, and a worker node started inside a
private mount namespace (`unshare -m`) with an empty tmpfs over the run directory's
parent, so no worker can read or write the driver's run directory. The job must still
write a complete RUN on the driver's side, recover from a SIGKILLed worker from the
driver's checkpoint (bit-identical to an uninterrupted run), and leave nothing in the
workers' view.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from disttrain.train.spec import dump_job, spec_from_dict
from tests.docker.test_image import free_port
from tests.launch.test_faults import (
    assert_bit_identical,
    checkpoints,
    long_job,
    losses,
    status,
    wait_for,
)
from tests.train.helpers import REPO, final_params

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a `ray start --block` and everything it started (its own process group)."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _alive_nodes(address: str, env: dict) -> int:
    done = subprocess.run([RAY, "status", "--address", address], env=env,
                          capture_output=True, text=True, timeout=60)
    active = done.stdout.split("Active:")[-1].split("Pending:")[0]
    return sum(1 for line in active.splitlines() if line.strip().startswith("1 node_"))


@pytest.fixture
def masked_cluster(tmp_path):
    """(address, env, the masked folder, the worker node's pid): a two-node cluster on
    loopback whose worker node sees an empty tmpfs where the driver's runs are."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        pytest.skip("needs root, unshare and nsenter for a private mount namespace")
    runs = tmp_path / "runs"
    runs.mkdir()
    # A Ray temp dir of its own (short: it holds unix sockets), so this cluster is never
    # the one /tmp/ray/ray_current_cluster points other sessions at.
    temp_dir = Path(tempfile.mkdtemp(prefix="dt-ray-", dir="/tmp"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               OPENBLAS_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("head", "worker")]
    head = subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=0", "--include-dashboard=false", f"--temp-dir={temp_dir}", "--block"],
        env=env, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)
    procs = [head]
    try:
        wait_for(lambda: _alive_nodes(address, env) == 1, 90, "the head node")
        mask_then_join = ('mount --make-rprivate / && mount -t tmpfs disttrain-mask "$1" && '
                          f'exec "$2" start --address={address} --node-ip-address=127.0.0.1 '
                          f'--num-cpus=2 --temp-dir={temp_dir} --block')
        worker = subprocess.Popen(["unshare", "-m", "sh", "-c", mask_then_join, "sh",
                                   str(runs), RAY],
                                  env=env, stdout=logs[1], stderr=subprocess.STDOUT,
                                  start_new_session=True)
        procs.append(worker)
        wait_for(lambda: _alive_nodes(address, env) == 2, 90, "the worker node")
        yield {"address": address, "env": env, "runs": runs, "worker_pid": worker.pid}
    finally:
        for proc in reversed(procs):
            _stop(proc)
        for log in logs:
            log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _train(cluster: dict, job_file: Path, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "disttrain.launch.cli", "train", str(job_file), "--run-dir",
         str(run_dir), "--address", cluster["address"], "--quiet"],
        cwd=REPO, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _mount_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def test_driver_owns_the_run_directory_on_a_cluster_without_shared_disk(masked_cluster,
                                                                        tmp_path):
    job = long_job(**{"distributed.backend": "coordinator", "distributed.workers": 2,
                      "distributed.heartbeat_s": 1.0})
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(spec_from_dict(job)))
    runs = masked_cluster["runs"]

    uninterrupted = _train(masked_cluster, job_file, runs / "uninterrupted")
    out, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-3000:]

    run_dir = runs / "killed"
    proc = _train(masked_cluster, job_file, run_dir)
    try:
        wait_for(lambda: checkpoints(run_dir), 120, "the first checkpoint in the driver's RUN")
        victim = next(w for w in status(run_dir)["workers"] if w["rank"] == 1)
        # The ranks really run where RUN is masked, not in the driver's mount namespace.
        assert _mount_namespace(victim["pid"]) == _mount_namespace(masked_cluster["worker_pid"])
        assert _mount_namespace(victim["pid"]) != _mount_namespace(os.getpid())
        os.kill(victim["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]

    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 1, final
    assert "rank 1" in final["failures"][0] and str(victim["pid"]) in final["failures"][0]
    for name in ("job.toml", "status.json", "metrics.jsonl", "timeline.json",
                 "final/model.npz"):
        assert (run_dir / name).is_file(), name
    assert checkpoints(run_dir)[-1] == "step-00000240"
    events = json.loads((run_dir / "timeline.json").read_text())["traceEvents"]
    assert {e["pid"] for e in events} == {"rank 0", "rank 1"}
    assert_bit_identical(final_params(run_dir), final_params(runs / "uninterrupted"))
    assert losses(run_dir) == losses(runs / "uninterrupted")

    # Nothing reached the workers' view of the folder: it is still the empty tmpfs.
    seen = subprocess.run(["nsenter", "-t", str(masked_cluster["worker_pid"]), "-m",
                           "find", str(runs), "-mindepth", "1"],
                          capture_output=True, text=True, timeout=30)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout == ""
