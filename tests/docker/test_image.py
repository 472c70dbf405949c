"""The image without a Docker engine: lint the Dockerfile with hadolint, check the compose
file's wiring, and drive the entrypoint directly, up to a real `ray start` head and worker
with token authentication and a job trained across them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.train.helpers import REPO

ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def env(**extra) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_HEAD_ADDRESS",
                         "RAY_ADDRESS")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    return {**base, **extra}


def entrypoint(*args, timeout=120, **extra):
    return subprocess.run([str(ENTRYPOINT), *args], cwd=REPO, env=env(**extra),
                          capture_output=True, text=True, timeout=timeout)


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, str(REPO / "docker" / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_wires_head_workers_and_driver_through_the_entrypoint_roles():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"head", "worker", "train"}
    roles = {name: s["command"][0] for name, s in services.items()}
    assert roles == {"head": "head", "worker": "worker", "train": "train"}
    for service in services.values():
        assert "RAY_AUTH_TOKEN" in service["environment"]  # token auth stays on everywhere
    job = services["train"]["command"][1]
    assert (REPO / job).exists()
    # the Jobs API is published; a 2-worker job survives losing one of 3 workers; the
    # driver gets time to stop with a checkpoint; a second `up` can resume
    assert services["head"]["ports"] == ["${DISTTRAIN_DASHBOARD:-127.0.0.1:8265}:8265"]
    assert services["worker"]["deploy"]["replicas"] == 3
    assert services["train"]["stop_grace_period"] == "60s"
    assert {"DISTTRAIN_ARGS", "DISTTRAIN_RESUME"} <= set(services["train"]["environment"])


def test_dockerfile_takes_its_base_and_installs_dependencies_before_the_code():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim\nFROM ${BASE}\n" in dockerfile
    assert 'ENTRYPOINT ["/app/docker/entrypoint.sh"]' in dockerfile
    assert 'CMD ["/app/docker/entrypoint.sh", "health"]' in dockerfile
    # editing the code or the entrypoint must not reinstall the dependencies
    dependencies = dockerfile.index("pip install --no-cache-dir -r")
    for copy in ("COPY disttrain", "COPY workers", "COPY launch", "COPY examples",
                 "COPY docker/entrypoint.sh"):
        assert dockerfile.index(copy) > dependencies, copy
    assert "pip install --no-cache-dir --no-deps" in dockerfile


def test_readme_gives_the_compose_commands_the_deploy_tests_run():
    from tests.deploy import test_compose

    readme = (REPO / "README.md").read_text()
    for command in test_compose.README_COMMANDS:
        assert command in readme, command


@pytest.mark.parametrize("args, extra, needle", [
    (["head"], {}, "RAY_AUTH_TOKEN is not set"),
    (["worker"], {"RAY_AUTH_TOKEN": "t"}, "RAY_HEAD_ADDRESS is not set"),
    (["train"], {}, "train needs a job file"),
    (["head"], {"RAY_AUTH_TOKEN_PATH": "/dev/null"}, "the Ray token file is missing or empty"),
    (["train", "examples/digits.toml"], {"DISTTRAIN_RESUME": "maybe"}, "use 1 to resume"),
])
def test_entrypoint_refuses_bad_setup_in_one_line(args, extra, needle):
    done = entrypoint(*args, **extra)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and needle in done.stderr


def test_entrypoint_help_and_local_training(tmp_path):
    done = entrypoint("help")
    assert done.returncode == 0 and "worker" in done.stdout and "train JOB" in done.stdout
    done = entrypoint("train", "examples/digits.toml", "--backend", "local", "--workers", "1",
                      "--run-dir", str(tmp_path / "run"),
                      DISTTRAIN_ARGS="--epochs 1  --quiet")  # flags from the environment
    assert done.returncode == 0, done.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "done" and status["epoch"] == 0
    assert "step 20/" not in done.stdout  # --quiet reached disttrain train


def test_health_outside_a_role_is_unhealthy():
    done = entrypoint("health")  # PID 1 here is no head, worker or driver
    assert done.returncode == 1 and "not (yet) a disttrain role" in done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("token_from", ["file", "environment"])
def test_head_worker_and_driver_roles_train_across_a_real_ray_start_cluster(tmp_path,
                                                                           token_from):
    token, port = secrets.token_hex(16), free_port()
    if token_from == "file":  # as a compose secret: out of the environment and inspect
        token_file = tmp_path / "ray_auth_token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        common = {"RAY_AUTH_TOKEN_PATH": str(token_file), "HEAD_WAIT_S": "60"}
    else:
        common = {"RAY_AUTH_TOKEN": token, "HEAD_WAIT_S": "60"}
    # Ray's unix sockets live under --temp-dir, whose path must stay short (108 bytes).
    temp_dir = tempfile.mkdtemp(prefix="dtray", dir="/tmp")
    temp = f"--temp-dir={temp_dir}"
    # the head's dashboard (the Jobs API) on a free port of loopback, not 0.0.0.0:8265
    nodes = [subprocess.Popen([str(ENTRYPOINT), "head", temp], cwd=REPO, start_new_session=True,
                              env=env(**common, RAY_PORT=str(port), RAY_NUM_CPUS="0",
                                      RAY_DASHBOARD_HOST="127.0.0.1",
                                      RAY_DASHBOARD_PORT=str(free_port())),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        address = f"127.0.0.1:{port}"
        nodes.append(subprocess.Popen(
            [str(ENTRYPOINT), "worker"], cwd=REPO, start_new_session=True,
            env=env(**common, RAY_HEAD_ADDRESS=address, RAY_NUM_CPUS="2"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(3)
        run = tmp_path / "run"
        done = entrypoint("train", "examples/digits.toml", "--epochs", "2", "--run-dir",
                          str(run), "--quiet", timeout=300, **common, RAY_HEAD_ADDRESS=address)
        assert done.returncode == 0, done.stderr[-3000:]
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "done" and status["world_size"] == 2
        # both workers landed on the worker node: the head offers no CPUs
        assert len({w["node_id"] for w in status["workers"]}) == 1
        if token_from == "file":  # the token never entered the nodes' environment
            for node in nodes:
                assert token.encode() not in Path(f"/proc/{node.pid}/environ").read_bytes()
    finally:
        for node in nodes:
            os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            node.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
