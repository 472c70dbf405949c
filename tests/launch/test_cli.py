"""The CLI on bad input: exit code 2, one line naming the file and key, no traceback,
and nothing that was there before is lost."""

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


BAD_JOBS = {
    "unknown table": (GOOD + "\n[trainer]\nx = 1\n", "[trainer]"),
    "unknown key": (GOOD.replace("epochs = 1", "epoch = 1"), "[job] epoch"),
    "wrong type": (GOOD.replace("batch_size = 8", 'batch_size = "8"'), "[job] batch_size"),
    "bad choice": (GOOD.replace('backend = "local"', 'backend = "nccl"'),
                   "[distributed] backend"),
    "negative lr": (GOOD + "[optimizer]\nlr = -1.0\n", "[optimizer] lr"),
    "batch not divisible": (GOOD.replace('backend = "local"\nworkers = 1',
                                         'backend = "ring"\nworkers = 3'), "[job] batch_size"),
    "sizes vs data": (GOOD.replace("sizes = [16, 8, 4]", "sizes = [10, 8, 4]"),
                      "[model] sizes"),
    "batch larger than data": (GOOD.replace("batch_size = 8", "batch_size = 4000"),
                               "[job] batch_size"),
    "nesterov without momentum": (GOOD + "[optimizer]\nnesterov = true\n",
                                  "[optimizer] nesterov"),
    "missing factory": (GOOD.replace("sizes = [16, 8, 4]",
                                     'kind = "custom"\nfactory = "nowhere.py:build"'),
                        "[model] factory"),
    "not toml": ("[job\nname = ", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_JOBS))
def test_bad_job_file_is_one_line_exit_2_naming_file_and_key(tmp_path, case):
    text, key = BAD_JOBS[case]
    job = write(tmp_path, text)
    done = disttrain("train", str(job), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert str(job) in lines[0] and key in lines[0], lines[0]
    assert not (tmp_path / "run").exists()  # bad input starts nothing


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
