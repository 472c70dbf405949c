"""The CLI: a good job runs and writes its run directory; bad input is exit code 2, one line
naming the file and key, no traceback, and nothing that was there before is lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.train.helpers import REPO

GOOD = """
[job]
name = "t"
epochs = 1
max_steps = 3
batch_size = 8
log_every = 1
[model]
sizes = [16, 8, 4]
[data]
name = "synthetic"
n_samples = 64
[distributed]
backend = "local"
workers = 1
"""


def disttrain(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "disttrain.launch.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def write(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# The table of bad job files is tests/launch/test_bad_input.py.


def test_missing_job_file_and_bad_usage_exit_2(tmp_path):
    for args in (["train", str(tmp_path / "nope.toml")], ["train"], ["frobnicate"],
                 ["train", str(tmp_path)], ["status", str(tmp_path)]):
        done = disttrain(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_good_job_runs_and_writes_the_run_directory(tmp_path):
    job = write(tmp_path, GOOD)
    run = tmp_path / "run"
    done = disttrain("train", str(job), "--run-dir", str(run))
    assert done.returncode == 0, done.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 3
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == [1, 2, 3]
    for key in ("step", "epoch", "loss", "lr", "samples_per_s", "compute_s", "comm_s"):
        assert key in metrics[0]
    assert (run / "final" / "model.npz").exists() and (run / "timeline.json").exists()
    meta = json.loads((run / "checkpoints" / "step-00000003" / "meta.json").read_text())
    assert meta["step"] == 3 and set(meta["sha256"]) == {"model.npz", "optim.npz"}


def test_existing_run_is_never_overwritten_without_resume(tmp_path):
    job = write(tmp_path, GOOD)
    run = tmp_path / "run"
    assert disttrain("train", str(job), "--run-dir", str(run)).returncode == 0
    before = (run / "metrics.jsonl").read_text()
    done = disttrain("train", str(job), "--run-dir", str(run))
    assert done.returncode == 2 and "--resume" in done.stderr
    assert (run / "metrics.jsonl").read_text() == before


def test_custom_model_factory_that_raises_is_reported_as_input(tmp_path):
    (tmp_path / "bad_model.py").write_text("def build(spec):\n    raise KeyError('oops')\n")
    job = write(tmp_path, GOOD.replace(
        "sizes = [16, 8, 4]", f'kind = "custom"\nfactory = "{tmp_path}/bad_model.py:build"'))
    done = disttrain("train", str(job), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "[model] factory" in done.stderr and "KeyError" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_with_an_incompatible_job_is_refused_and_the_run_kept(tmp_path):
    job = write(tmp_path, GOOD)
    run = tmp_path / "run"
    assert disttrain("train", str(job), "--run-dir", str(run)).returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    changed = write(tmp_path, GOOD.replace("sizes = [16, 8, 4]", "sizes = [16, 9, 4]"),
                    name="changed.toml")
    done = disttrain("train", str(changed), "--run-dir", str(run), "--resume")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "[model] sizes" in done.stderr and "[16, 8, 4]" in done.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # more epochs is a legitimate resume
    longer = write(tmp_path, GOOD.replace("max_steps = 3", "max_steps = 5"), name="longer.toml")
    done = disttrain("train", str(longer), "--run-dir", str(run), "--resume")
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "status.json").read_text())["step"] == 5


def test_an_existing_empty_run_dir_is_used(tmp_path):
    job = write(tmp_path, GOOD)
    (tmp_path / "run").mkdir()
    done = disttrain("train", str(job), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "done"


MODEL_PY = """
from disttrain import nn

def build(spec):
    return nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4))
"""
CUSTOM = GOOD.replace("sizes = [16, 8, 4]", 'kind = "custom"\nfactory = "model.py:build"')


def test_relative_factory_is_read_from_the_job_files_folder(tmp_path):
    """Issue 7 item 14: not from the current directory (the CLI runs in REPO here), and
    RUN/job.toml holds the absolute path, which is what MPI ranks and resumes read."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "model.py").write_text(MODEL_PY)
    job = write(tmp_path / "jobs", CUSTOM)
    run = tmp_path / "run"
    done = disttrain("train", str(job), "--run-dir", str(run))
    assert done.returncode == 0, done.stderr
    resolved = f"{tmp_path / 'jobs' / 'model.py'}:build"
    assert f'factory = "{resolved}"' in (run / "job.toml").read_text()
    done = disttrain("train", str(job), "--run-dir", str(run), "--resume", "--max-steps", "4")
    assert done.returncode == 0, done.stderr


def test_relative_factory_is_not_looked_up_in_the_current_directory(tmp_path):
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "model.py").write_text(MODEL_PY)
    (tmp_path / "jobs").mkdir()
    job = write(tmp_path / "jobs", CUSTOM)
    done = disttrain("train", str(job), "--run-dir", str(tmp_path / "run"),
                     cwd=tmp_path / "cwd")
    assert done.returncode == 2 and "[model] factory" in done.stderr, done.stderr
    assert str(tmp_path / "jobs" / "model.py") in done.stderr
    assert not (tmp_path / "run").exists()


def test_the_example_custom_job_finds_its_model_from_any_directory(tmp_path):
    done = disttrain("train", str(REPO / "examples" / "custom.toml"), "--backend", "local",
                     "--workers", "1", "--max-steps", "2", "--run-dir", str(tmp_path / "run"),
                     "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def strict_json(line: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    return json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line}"))


def all_finite(run) -> bool:
    import numpy as np

    files = list(run.glob("checkpoints/*/model.npz")) + list(run.glob("final/model.npz"))
    for file in files:
        with np.load(file, allow_pickle=False) as npz:
            if not all(np.isfinite(npz[k]).all() for k in npz.files):
                return False
    return True


DIVERGES = GOOD.replace("max_steps = 3", "max_steps = 6\ncheckpoint_every = 1") + \
    "[optimizer]\nlr = 1e30\n"


def test_a_non_finite_loss_stops_the_job_naming_the_step(tmp_path):
    """Issue 7: exit 1 naming the step and [optimizer] lr; the checkpoints before it stay,
    none holds NaN, and metrics.jsonl stays JSON."""
    job = write(tmp_path, DIVERGES)
    run = tmp_path / "run"
    done = disttrain("train", str(job), "--run-dir", str(run))
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "step 2:" in last and "[optimizer] lr" in last and "Traceback" not in done.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "step 2" in status["error"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001"]
    assert all_finite(run)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_json(line)


def test_on_nonfinite_skip_skips_and_counts_the_steps(tmp_path):
    job = write(tmp_path, DIVERGES.replace("log_every = 1", "log_every = 6").replace(
        'name = "t"', 'name = "t"\non_nonfinite = "skip"'))
    run = tmp_path / "run"
    done = disttrain("train", str(job), "--run-dir", str(run))
    assert done.returncode == 0, done.stderr
    records = [strict_json(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [(r["step"], r["skipped"]) for r in train] == [(6, 5)]
    assert all_finite(run)


def test_a_cluster_job_says_it_imports_its_factory_here(tmp_path):
    """Issue 7 item 14: the driver checks a custom model by importing its factory, also for
    a job bound for a cluster; it says so first (the factory here fails, so no cluster is
    ever contacted)."""
    (tmp_path / "model.py").write_text("def build(spec):\n    raise KeyError('here')\n")
    job = write(tmp_path, CUSTOM.replace('backend = "local"', 'backend = "coordinator"')
                .replace("workers = 1", "workers = 2"))
    done = disttrain("train", str(job), "--run-dir", str(tmp_path / "run"), "--address",
                     "127.0.0.1:9")
    assert done.returncode == 2 and "KeyError" in done.stderr, done.stderr
    assert f"importing [model] factory {tmp_path / 'model.py'}:build" in done.stdout
    assert not (tmp_path / "run").exists()
