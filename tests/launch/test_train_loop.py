"""Your own loop, `disttrain.launch.Trainer(train_loop, job).fit()`: a loop that does what
the job's own loop does reaches the very same parameters, locally and on Ray; on Ray a
SIGKILLed worker is recovered bit-exactly, as for job files; misuse is one clear line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from disttrain import nn
from disttrain.launch import JobFailed, Trainer
from disttrain.nn import functional as F
from disttrain.optim import SGD
from disttrain.train.spec import SpecError
from tests.launch.test_faults import (
    assert_bit_identical,
    checkpoints,
    long_job,
    losses,
    status,
    wait_for,
)
from tests.train.helpers import REPO, final_params, run_local, run_on_ray, small_job


def mlp_loop(ctx):
    """The job's own loop for small_job, written out: same layers in the same order (so
    the same initial weights from the job's seed), SGD with momentum, cross-entropy."""
    model = nn.Sequential(nn.Linear(16, 32, dtype="float64"), nn.Tanh(),
                          nn.Linear(32, 32, dtype="float64"), nn.Tanh(),
                          nn.Linear(32, 4, dtype="float64"))
    model = ctx.prepare_model(model)
    opt = ctx.prepare_optimizer(SGD(model.parameters(), lr=0.05, momentum=0.9))
    for x, y in ctx.data_shard():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        ctx.report({"loss": loss.item()})


def test_a_loop_like_the_jobs_reaches_the_same_parameters(tmp_path):
    job = small_job()
    result = Trainer(mlp_loop, job, tmp_path / "loop").fit()
    assert (result.state, result.step) == ("done", 30)
    assert np.isfinite(result.metrics["loss"]) and "val_accuracy" in result.metrics
    assert_bit_identical(final_params(result.run_dir), run_local(job, tmp_path / "job"))
    assert losses(result.run_dir) == losses(tmp_path / "job")  # logged the same


@pytest.mark.ray
def test_on_ray_it_matches_and_a_sigkilled_worker_is_recovered_bit_exactly(ray_session,
                                                                           tmp_path):
    job = long_job(**{"distributed.backend": "coordinator", "distributed.workers": 2,
                      "distributed.heartbeat_s": 1.0})
    clean = Trainer(mlp_loop, job, tmp_path / "clean").fit()
    reference = run_on_ray(job, tmp_path / "job-file")  # the job's own loop, same cluster
    assert_bit_identical(final_params(clean.run_dir), reference)

    run_dir = tmp_path / "killed"
    outcome = {}
    thread = threading.Thread(daemon=True, target=lambda: outcome.update(
        result=Trainer(mlp_loop, job, run_dir).fit()))
    thread.start()
    wait_for(lambda: checkpoints(run_dir), 120, "the first checkpoint")
    victim = next(w for w in status(run_dir)["workers"] if w["rank"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the supervisor hung after a worker was killed"
    final = status(run_dir)
    assert (final["state"], final["restarts"]) == ("done", 1), final
    assert_bit_identical(final_params(run_dir), reference)
    assert losses(run_dir) == losses(tmp_path / "clean")


def forgets_the_optimizer(ctx):
    model = ctx.prepare_model(nn.Linear(16, 4, dtype="float64"))
    for _ in ctx.data_shard():
        pass
    del model


@pytest.mark.parametrize("loop, kwargs, error, needle", [
    (42, {}, SpecError, "train_loop must be a function"),
    (mlp_loop, {"backend": "mpi"}, SpecError, "a train loop runs on Ray"),
    (forgets_the_optimizer, {}, JobFailed, "ctx.prepare_optimizer"),
])
def test_misuse_is_one_clear_line(tmp_path, loop, kwargs, error, needle):
    with pytest.raises(error, match=re.escape(needle)) as caught:
        Trainer(loop, small_job(), tmp_path / "run", **kwargs).fit()
    assert "\n" not in str(caught.value)


def test_the_readme_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(from disttrain.launch import Trainer\n.*?)```", readme,
                      re.S).group(1)
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state, accuracy = done.stdout.split()[-2:]
    assert state == "done" and float(accuracy) > 0.8
