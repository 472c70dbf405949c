"""The compose stack for real: head, 3 workers and the train driver in containers of the
project's image, on a real Docker engine (`make test-deploy` builds the image and runs
these; plain `make test` never collects them).

One stack (a compose project of its own, `disttrain-test-<hex>`, removed with its volume at
the end) serves every scenario, in file order: a clean run; a worker container killed
mid-run; the train container stopped mid-run and resumed by a second `up`; the same job
submitted to the head's Jobs API from this machine, stopped, resumed and fetched. Every
one must end bit-identical to the clean run. The compose commands are the README's, word
for word (the project name comes from COMPOSE_PROJECT_NAME).
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.launch.test_faults import assert_bit_identical
from tests.train.helpers import REPO, final_params

pytestmark = pytest.mark.slow

IMAGE = os.environ.get("DISTTRAIN_IMAGE", "")
DISTTRAIN = str(REPO / ".venv" / "bin" / "disttrain")

# The README's commands (its "Docker" section); `docker compose` is replaced by
# `docker-compose` where only compose v1 is installed.
UP = "docker compose -f docker/compose.yaml up -d"
LOGS = "docker compose -f docker/compose.yaml logs -f train"
STOP = "docker compose -f docker/compose.yaml stop train"
RESUME = "DISTTRAIN_RESUME=1 docker compose -f docker/compose.yaml up -d"
COPY_RUN = ("docker compose -f docker/compose.yaml run --rm --no-deps -T train "
            "tar -C /runs -c digits")
DOWN = "docker compose -f docker/compose.yaml down"
README_COMMANDS = (UP, LOGS, STOP, RESUME, COPY_RUN, DOWN)

# Long enough for a kill or a stop to land mid-run (2,640 steps of the digits job: 10 to 30
# s here; a compose v1 `stop` took up to 5 s to send its signal under load), with a
# checkpoint every 100 steps.
LONG = "--set job.epochs=120 --set job.checkpoint_every=100"
STEPS = 120 * 22  # 1,437 training samples, global batch 64: 22 steps per epoch


def compose_prefix() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor `docker-compose` is installed")


def unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"Docker unavailable in CI: {reason}")
    pytest.skip(f"Docker unavailable: {reason}")


def docker(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done


class Stack:
    """One compose project of the repository's docker/compose.yaml."""

    def __init__(self, tmp: Path):
        self.project = f"disttrain-test-{secrets.token_hex(4)}"
        self.prefix = compose_prefix()
        token_file = tmp / "ray_auth_token"
        self.token = secrets.token_hex(32)
        token_file.write_text(self.token)
        token_file.chmod(0o644)  # read by uid 1000 in the containers
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("RAY_", "DISTTRAIN_", "COMPOSE_"))}
        self.env.update(COMPOSE_PROJECT_NAME=self.project, DISTTRAIN_IMAGE=IMAGE,
                        RAY_AUTH_TOKEN_FILE=str(token_file),
                        DISTTRAIN_DASHBOARD=f"127.0.0.1:{self.dashboard_port}")

    def compose(self, command: str, timeout=300, check=True, **env) -> subprocess.CompletedProcess:
        """Run one of the README's compose commands, with env's variables set."""
        words = command.split()
        while "=" in words[0]:  # VAR=value prefixes, as a shell would take them
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        assert words[:2] == ["docker", "compose"], command
        done = subprocess.run(self.prefix + words[2:], cwd=REPO, env={**self.env, **env},
                              capture_output=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{command}: exit {done.returncode}\n"
                                 f"{done.stderr.decode(errors='replace')[-3000:]}")
        return done

    def containers(self, service: str) -> list[str]:
        """Ids of this project's containers of service, running or not."""
        return docker("ps", "-a", "-q", "--no-trunc",
                      "--filter", f"label=com.docker.compose.project={self.project}",
                      "--filter", f"label=com.docker.compose.service={service}").stdout.split()

    def train_container(self) -> str:
        ids = self.containers("train")
        assert len(ids) == 1, ids
        return ids[0]

    def read(self, path: str) -> str | None:
        """A file under /runs, read in the running train container (None if unreadable)."""
        done = docker("exec", self.train_container(), "cat", path, check=False)
        return done.stdout if done.returncode == 0 else None

    def status(self, run: str) -> dict:
        text = self.read(f"{run}/status.json")
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}

    def checkpoints(self, run: str) -> list[str]:
        done = docker("exec", self.train_container(), "ls", f"{run}/checkpoints", check=False)
        return sorted(n for n in done.stdout.split() if n.startswith("step-"))

    def wait_train(self, timeout=300) -> int:
        """Wait for the train container to exit; its exit code."""
        done = docker("wait", self.train_container(), timeout=timeout)
        return int(done.stdout.strip())

    def train_logs(self) -> str:
        done = docker("logs", self.train_container(), check=False)
        return done.stdout + done.stderr

    def copy_run(self, run: str, dest: Path) -> Path:
        """The README's copy of a run out of the volume, for run (a folder under /runs)."""
        done = self.compose(COPY_RUN.replace("digits", run), timeout=120)
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            tar.extractall(dest, filter="data")
        return dest / run

    def diagnostics(self) -> str:
        done = self.compose("docker compose -f docker/compose.yaml logs --tail=40",
                            check=False, timeout=60)
        return done.stdout.decode(errors="replace")[-6000:]


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, stack: Stack):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n"
                         f"{stack.train_logs()[-3000:]}")


def accuracy(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "eval"][-1]["val_accuracy"]


def losses(run_dir: Path) -> list:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if "DISTTRAIN_IMAGE" not in os.environ:  # a plain pytest run, even with Docker at hand
        pytest.skip("run by `make test-deploy` (docker/test-deploy.sh), which builds the image "
                    "and sets DISTTRAIN_IMAGE")
    if shutil.which("docker") is None:
        unavailable("no docker client")
    if docker("info", check=False).returncode != 0:
        unavailable("no Docker daemon answers (`make test-deploy` starts one)")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        unavailable(f"no image {IMAGE}: `make test-deploy` builds it")
    stack = Stack(tmp_path_factory.mktemp("stack"))
    try:
        yield stack
    finally:
        stack.compose(DOWN + " -v -t 5", check=False, timeout=180)


@pytest.fixture(scope="module")
def clean(stack, tmp_path_factory):
    """Scenario 1, the README's route: up -d (head, 3 workers, train), follow the train
    service's logs to the end, copy the run out of the volume."""
    stack.compose(UP, DISTTRAIN_ARGS=LONG)
    stack.compose(LOGS, timeout=400)  # returns when the train container ends
    code = stack.wait_train()
    assert code == 0, stack.train_logs()[-3000:] + stack.diagnostics()
    return stack.copy_run("digits", tmp_path_factory.mktemp("clean"))


def test_compose_up_trains_to_accuracy_with_the_run_on_the_drivers_volume(stack, clean):
    status = json.loads((clean / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == STEPS, status
    assert status["world_size"] == 2 and status["restarts"] == 0
    assert accuracy(clean) >= 0.95
    assert (clean / "final" / "model.npz").is_file()
    assert [p.name for p in (clean / "checkpoints").iterdir()], "no checkpoint on the volume"
    # the ranks ran on two worker containers (their hostnames are their ids), not on the
    # head or the driver, which offer no CPUs
    workers = stack.containers("worker")
    assert len(workers) == 3
    nodes = {w["node"] for w in status["workers"]}
    assert len(nodes) == 2 and all(any(c.startswith(n) for c in workers) for n in nodes), nodes
    # `docker stop` alone (not only compose's stop) gives the driver the grace period
    timeout = docker("inspect", "-f", "{{.Config.StopTimeout}}", stack.train_container())
    assert timeout.stdout.strip() == "60"


def test_every_container_reports_healthy(stack, clean):
    for service in ("head", "worker"):
        for container in stack.containers(service):
            wait_for(lambda c=container: docker(
                "inspect", "-f", "{{.State.Health.Status}}", c).stdout.strip() == "healthy",
                90, f"{service} {container[:12]} to be healthy", stack)


def test_killed_worker_container_is_recovered_bit_identical(stack, clean, tmp_path):
    run = "/runs/killed"
    stack.compose(UP, DISTTRAIN_ARGS=f"--run-dir {run} {LONG}")
    wait_for(lambda: stack.checkpoints(run), 240, "the first checkpoint", stack)
    victim_node = next(w["node"] for w in stack.status(run)["workers"] if w["rank"] == 1)
    victim = next(c for c in stack.containers("worker") if c.startswith(victim_node))
    docker("kill", victim)
    assert stack.status(run).get("step", 0) < STEPS, "the job ended before the kill landed"
    code = stack.wait_train()
    assert code == 0, stack.train_logs()[-3000:]
    killed = stack.copy_run("killed", tmp_path)
    status = json.loads((killed / "status.json").read_text())
    assert status["state"] == "done" and status["restarts"] >= 1, status
    assert victim_node not in {w["node"] for w in status["workers"]}
    assert_bit_identical(final_params(killed), final_params(clean))
    assert losses(killed) == losses(clean)  # each step logged once, with the same loss


def test_stopped_train_container_resumes_bit_identical(stack, clean, tmp_path):
    run, args = "/runs/stopped", f"--run-dir /runs/stopped {LONG}"
    stack.compose(UP, DISTTRAIN_ARGS=args)  # also restarts the worker killed above
    wait_for(lambda: stack.status(run).get("state") == "running", 240, "training to run",
             stack)
    stack.compose(STOP, timeout=120)  # SIGTERM to PID 1: disttrain train
    code = int(docker("inspect", "-f", "{{.State.ExitCode}}", stack.train_container()).stdout)
    logs = stack.train_logs()
    assert code == 0, logs[-3000:]
    before = stack.copy_run("stopped", tmp_path / "before")
    stopped = json.loads((before / "status.json").read_text())
    assert stopped["state"] != "done", "the job ended before the stop landed"
    assert stopped["state"] == "stopped", stopped
    assert 0 < stopped["step"] < STEPS
    step = f"step-{stopped['step']:08d}"
    assert max(p.name for p in (before / "checkpoints").glob("step-*")) == step

    stack.compose(RESUME, DISTTRAIN_ARGS=args)
    code = stack.wait_train()
    logs = stack.train_logs()
    assert code == 0, logs[-3000:]
    assert f"resumed from {step}" in logs
    resumed = stack.copy_run("stopped", tmp_path / "after")
    assert json.loads((resumed / "status.json").read_text())["state"] == "done"
    assert_bit_identical(final_params(resumed), final_params(clean))


def jobs_cli(stack: Stack, *args, token=None, timeout=300) -> subprocess.CompletedProcess:
    """The disttrain CLI on this machine, against the compose head's Jobs API."""
    env = {**stack.env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token or stack.token}
    return subprocess.run([DISTTRAIN, *args, "--address", stack.address], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_job_submitted_to_the_compose_head_stops_resumes_and_is_fetched(stack, clean, tmp_path):
    """The Jobs route: the clean run's job submitted from this machine, stopped mid-run
    (`disttrain stop`: SIGTERM, with the head's RAY_JOB_STOP_WAIT_TIME_S for the
    checkpoint), resumed, followed to the end and fetched: bit-identical to the compose run."""
    job = ["examples/digits.toml", "--backend", "ring", *LONG.split()]
    done = jobs_cli(stack, "submit", *job)
    assert done.returncode == 0, done.stderr
    first = done.stdout.strip().splitlines()[-1]
    wait_for(lambda: "step " in jobs_cli(stack, "logs", first).stdout, 240,
             "the submitted job to train", stack)
    done = jobs_cli(stack, "stop", first)
    assert done.returncode == 0 and done.stdout.split() == [first, "STOPPED"], (
        done.stdout + done.stderr)
    stopped_at = re.search(r"stopped at step (\d+)", jobs_cli(stack, "logs", first).stdout)
    assert stopped_at and 0 < int(stopped_at[1]) < STEPS, "no stop with a checkpoint"

    done = jobs_cli(stack, "submit", *job, "--resume", first)
    assert done.returncode == 0, done.stderr
    second = done.stdout.strip().splitlines()[-1]
    done = jobs_cli(stack, "logs", second, "--follow", timeout=400)
    assert done.returncode == 0, done.stderr
    assert f"resumed from step-{int(stopped_at[1]):08d}" in done.stdout, done.stdout[-3000:]
    assert f"done at step {STEPS}" in done.stdout, done.stdout[-3000:]
    done = jobs_cli(stack, "status", second)
    assert done.returncode == 0 and "SUCCEEDED" in done.stdout, done.stdout + done.stderr
    done = jobs_cli(stack, "list")
    assert done.returncode == 0 and first in done.stdout and second in done.stdout, (
        done.stdout + done.stderr)
    fetched = tmp_path / "fetched"
    done = jobs_cli(stack, "fetch", second, str(fetched))
    assert done.returncode == 0, done.stderr
    assert json.loads((fetched / "status.json").read_text())["state"] == "done"
    assert accuracy(fetched) >= 0.95
    assert_bit_identical(final_params(fetched), final_params(clean))


def test_the_jobs_api_refuses_a_wrong_token(stack, clean):
    done = jobs_cli(stack, "list", token=secrets.token_hex(32))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Invalid authentication token" in done.stderr, (
        done.stderr)

