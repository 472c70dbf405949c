"""Jobs on a running cluster: `disttrain submit/logs/status/list/stop/fetch` end to end.

A real head started by the test (`ray start --head` with its dashboard, which serves
Ray's Jobs API, token authentication on), every command run as a user runs it: the CLI in
a subprocess. The head keeps submitted runs in a folder of its own; the test reads a
run's parameters only from what `disttrain fetch` copied back, and peeks at the head's
folder only to time a stop after a checkpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from disttrain.train.spec import dump_job, spec_from_dict
from tests.docker.test_image import free_port
from tests.launch.test_faults import assert_bit_identical, checkpoints, wait_for
from tests.launch.test_no_shared_disk import _stop
from tests.train.helpers import REPO, final_params, run_local, small_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BIN = Path(sys.executable).parent


def long_job(**overrides) -> dict:
    """About 15 s of steps on two Ray workers here: long enough to stop after a checkpoint."""
    base = {"job.max_steps": 6000, "job.epochs": 1000, "job.checkpoint_every": 500,
            "job.log_every": 500, "distributed.backend": "coordinator",
            "distributed.workers": 2}
    return small_job(**{**base, **overrides})


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head with its Jobs API on loopback; the env a user's shell would have."""
    root = tmp_path_factory.mktemp("submit")
    temp_dir = tempfile.mkdtemp(prefix="dtsub", dir="/tmp")  # unix sockets want short paths
    token = secrets.token_hex(32)
    dashboard = free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER", "RAY_AUTH"))}
    head_env = dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
                    OPENBLAS_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
                    PATH=f"{BIN}{os.pathsep}{base.get('PATH', '')}",
                    DISTTRAIN_RUNS=str(root / "head-runs"),
                    RAY_JOB_STOP_WAIT_TIME_S="60")  # a stop has time for its checkpoint
    log = open(root / "head.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", f"--port={free_port()}",
         "--node-ip-address=127.0.0.1", "--num-cpus=3", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={free_port()}",
         f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}",
         "--disable-usage-stats", "--block"],
        env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    user_env = dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    cluster = {"address": f"http://127.0.0.1:{dashboard}", "env": user_env,
               "runs": root / "head-runs", "root": root}
    try:
        wait_for(lambda: proc.poll() is None and cli(cluster, "list").returncode == 0, 120,
                 "the head's Jobs API")
        yield cluster
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def cli(cluster, *args, env=None, timeout=300):
    """`disttrain ARGS --address HEAD` as a user runs it."""
    return subprocess.run([str(BIN / "disttrain"), *args, "--address", cluster["address"]],
                          env=env or cluster["env"], capture_output=True, text=True,
                          timeout=timeout, cwd=cluster["root"])


def job_file(cluster, name: str, job: dict) -> Path:
    path = cluster["root"] / f"{name}.toml"
    path.write_text(dump_job(spec_from_dict(job)))
    return path


def submit(cluster, path: Path, *flags) -> str:
    done = cli(cluster, "submit", str(path), *flags)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()[0]  # the id, before any --follow output


def fetch(cluster, job_id: str, dest: Path) -> Path:
    done = cli(cluster, "fetch", job_id, str(dest))
    assert done.returncode == 0, done.stderr[-3000:]
    return dest


def one_error_line(done) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("disttrain: error: "), done.stderr
    return lines[0]


def test_submit_follow_fetch_list_status_and_logs(head, tmp_path):
    job = small_job(**{"distributed.backend": "coordinator", "distributed.workers": 2})
    done = cli(head, "submit", str(job_file(head, "small", job)), "--follow")
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = done.stdout.strip().splitlines()[0]
    assert "done at step 30" in done.stdout  # --follow printed the job's own output

    listed = cli(head, "list")
    assert listed.returncode == 0 and any(
        line.split()[:2] == [job_id, "SUCCEEDED"] for line in listed.stdout.splitlines())
    status = cli(head, "status", job_id)
    assert status.returncode == 0 and "status     SUCCEEDED" in status.stdout
    logs = cli(head, "logs", job_id)
    assert logs.returncode == 0 and "done at step 30" in logs.stdout

    run = fetch(head, job_id, tmp_path / "fetched")
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert checkpoints(run) and (run / "metrics.jsonl").stat().st_size > 0
    reference = run_local(job, tmp_path / "reference")  # one process, no cluster
    got = final_params(run)
    for name in reference:
        np.testing.assert_allclose(got[name], reference[name], rtol=0, atol=1e-9)


@pytest.mark.parametrize("job, code, extra", [
    ("custom.toml", "custom_model.py", []),  # [model] factory = "custom_model.py:build"
    ("regression.toml", "custom_loss.py", ["--set", 'job.loss="custom_loss.py:log_cosh"']),
])
def test_code_files_the_job_names_travel_with_it(head, tmp_path, job, code, extra):
    """A model factory or a custom loss given as a file next to the job file is uploaded
    with it (the head has no copy of this folder)."""
    folder = tmp_path / "job"
    folder.mkdir()
    shutil.copy(REPO / "examples" / code, folder / code)
    shutil.copy(REPO / "examples" / job, folder / job)
    job_id = submit(head, folder / job, "--epochs", "1", *extra)
    shutil.rmtree(folder)  # gone from this machine, which is also the head's, once submitted
    assert cli(head, "logs", job_id, "--follow").returncode == 0
    run = fetch(head, job_id, tmp_path / "fetched")
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert code in (run / "job.toml").read_text()


def test_stop_takes_a_checkpoint_and_resume_ends_bit_identical(head, tmp_path):
    path = job_file(head, "long", long_job())
    clean_id = submit(head, path, "--follow")
    clean = final_params(fetch(head, clean_id, tmp_path / "clean"))

    job_id = submit(head, path)
    on_head = head["runs"] / job_id  # peeked at only to stop after a checkpoint
    wait_for(lambda: checkpoints(on_head), 120, "the first checkpoint")
    stopped = cli(head, "stop", job_id)
    assert stopped.returncode == 0 and stopped.stdout.split() == [job_id, "STOPPED"], (
        stopped.stdout, stopped.stderr)
    run = fetch(head, job_id, tmp_path / "stopped")
    state = json.loads((run / "status.json").read_text())
    assert state["state"] == "stopped" and 0 < state["step"] < 6000, state
    assert checkpoints(run)[-1] == f"step-{state['step']:08d}"  # the stop took one
    assert not (run / "final").exists()

    resumed_id = submit(head, path, "--resume", job_id, "--follow")
    resumed = fetch(head, resumed_id, tmp_path / "resumed")
    assert json.loads((resumed / "status.json").read_text())["state"] == "done"
    assert_bit_identical(final_params(resumed), clean)


def test_a_wrong_or_missing_token_is_refused_in_one_line(head, tmp_path):
    wrong = dict(head["env"], RAY_AUTH_TOKEN=secrets.token_hex(32))
    line = one_error_line(cli(head, "list", env=wrong))
    assert "Invalid authentication token" in line and "RAY_AUTH_TOKEN" in line
    # no token anywhere: not in the env, not in ~/.ray/auth_token (Ray's default file)
    missing = {k: v for k, v in head["env"].items() if k != "RAY_AUTH_TOKEN"}
    missing["HOME"] = str(tmp_path)
    line = one_error_line(cli(head, "submit", str(REPO / "examples" / "digits.toml"),
                              env=missing))
    assert "token authentication failed" in line and "RAY_AUTH_TOKEN" in line


def test_bad_input_is_one_line_and_submits_nothing(head, tmp_path):
    before = cli(head, "list").stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[optimizer]\nlr = -1.0\n")
    assert "lr" in one_error_line(cli(head, "submit", str(bad)))
    assert cli(head, "list").stdout == before  # nothing reached the cluster
    assert "no such job" in one_error_line(cli(head, "status", "disttrain-nope"))
    assert "no such job" in one_error_line(cli(head, "logs", "disttrain-nope"))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert "not an empty folder" in one_error_line(cli(head, "fetch", "x", str(occupied)))
    assert (occupied / "keep.txt").read_text() == "mine"
    unreachable = {**head, "address": f"http://127.0.0.1:{free_port()}"}
    assert "cannot reach" in one_error_line(cli(unreachable, "list"))
    assert "http://HEAD:8265" in one_error_line(
        cli({**head, "address": "head:6379"}, "list"))


def test_readme_commands_run_as_written(head, tmp_path):
    """Every `disttrain` line of README's submit block, in order, against the test's head
    (JOB_ID: the id the first submit printed; the address comes from the env, as there)."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("### Jobs on a running cluster")[1].split("```sh\n")[1].split("```")[0]
    commands = [line.split("#")[0].split() for line in block.splitlines()
                if line.startswith("disttrain ")]
    assert [c[1] for c in commands] == ["submit", "logs", "status", "list", "stop", "submit",
                                        "fetch"]
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = dict(head["env"], RAY_API_SERVER_ADDRESS=head["address"])
    job_id = None
    for command in commands:
        argv = [str(BIN / "disttrain"), *[job_id if a == "JOB_ID" else a for a in command[1:]]]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        job_id = job_id or done.stdout.splitlines()[0]
    fetched = tmp_path / "runs" / "copy"
    assert json.loads((fetched / "status.json").read_text())["state"] == "done"
    assert (fetched / "final" / "model.npz").exists()
