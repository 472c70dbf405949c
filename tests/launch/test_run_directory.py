"""The run directory under damage: torn files, a full disk, stray temp folders, pruning.

Every case runs the real CLI on a real file system (a small tmpfs for the full disk), and
ends with a resume that reaches the same parameters as a run that never had trouble.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from disttrain.train.spec import dump_job, spec_from_dict
from tests.launch.test_cli import disttrain
from tests.launch.test_faults import assert_bit_identical, checkpoints, losses, status
from tests.train.helpers import final_params, run_local, small_job

pytestmark = pytest.mark.slow


cli = disttrain  # the CLI as a subprocess, from tests/launch/test_cli.py


def write_job(path: Path, job: dict) -> Path:
    path.write_text(dump_job(spec_from_dict(job)))
    return path


def job_with(**overrides) -> dict:
    base = {"job.max_steps": 60, "job.epochs": 10, "job.checkpoint_every": 10,
            "job.log_every": 5}
    return small_job(**{**base, **overrides})


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path):
    job = job_with()
    reference = run_local(job, tmp_path / "reference")
    run_local(job_with(**{"job.max_steps": 30}), tmp_path / "run")
    run_dir = tmp_path / "run"
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 35, "lo')  # a writer killed mid-append
    done = cli("train", str(write_job(tmp_path / "job.toml", job)), "--run-dir",
               str(run_dir), "--resume")
    assert done.returncode == 0, done.stderr
    assert "dropped a torn last line" in done.stderr
    assert_bit_identical(final_params(run_dir), reference)
    assert losses(run_dir) == losses(tmp_path / "reference")


def test_status_of_a_corrupt_status_file_is_one_line(tmp_path):
    (tmp_path / "status.json").write_text('{"state": "runn')
    done = cli("status", str(tmp_path))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "status.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_old_checkpoints_are_pruned_and_stray_temp_folders_swept(tmp_path):
    job = job_with(**{"job.keep_checkpoints": 2})
    reference = run_local(job, tmp_path / "reference")
    assert checkpoints(tmp_path / "reference") == ["step-00000050", "step-00000060"]

    run_dir = tmp_path / "run"
    run_local(job_with(**{"job.keep_checkpoints": 2, "job.max_steps": 30}), run_dir)
    stray = run_dir / "checkpoints" / ".tmp-step-00000040-12345"
    stray.mkdir()
    (stray / "model.npz").write_bytes(b"half a file")
    done = cli("train", str(write_job(tmp_path / "job.toml", job)), "--run-dir",
               str(run_dir), "--resume")
    assert done.returncode == 0, done.stderr
    assert not stray.exists() and ".tmp-step-00000040-12345" in done.stderr
    # the checkpoint the run resumed from is kept with the two newest
    assert checkpoints(run_dir) == ["step-00000030", "step-00000050", "step-00000060"]
    assert_bit_identical(final_params(run_dir), reference)


def test_restarts_and_failures_survive_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    run_local(job_with(**{"job.max_steps": 30}), run_dir)
    earlier = json.loads((run_dir / "status.json").read_text())
    earlier.update(restarts=2, failures=["rank 1 died", "rank 0 died"])
    (run_dir / "status.json").write_text(json.dumps(earlier))
    done = cli("train", str(write_job(tmp_path / "job.toml", job_with())), "--run-dir",
               str(run_dir), "--resume")
    assert done.returncode == 0, done.stderr
    final = status(run_dir)
    assert final["state"] == "done" and final["restarts"] == 2
    assert final["failures"] == ["rank 1 died", "rank 0 died"]
    assert final["updated"] >= final["started"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs of our own."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "disttrain-test", str(disk)],
                   check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_fails_in_one_line_and_resume_works_once_space_is_freed(tmp_path,
                                                                           small_disk):
    job = job_with(**{"job.keep_checkpoints": 100})
    reference = run_local(job, tmp_path / "reference")
    one_checkpoint = sum(f.stat().st_size for f in
                         (tmp_path / "reference" / "checkpoints" / "step-00000010").iterdir())
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free - int(1.5 * one_checkpoint) - 64 * 1024))

    run_dir = small_disk / "run"
    job_file = write_job(tmp_path / "job.toml", job)
    done = cli("train", str(job_file), "--run-dir", str(run_dir))
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("disttrain:")]
    assert len(failed) == 1 and "No space left" in failed[0] and str(run_dir) in failed[0]
    assert "Traceback" not in done.stderr
    assert status(run_dir)["state"] == "failed"
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the space was given back

    filler.unlink()
    done = cli("train", str(job_file), "--run-dir", str(run_dir), "--resume")
    assert done.returncode == 0, done.stderr
    assert_bit_identical(final_params(run_dir), reference)


def test_status_says_a_run_whose_driver_died_is_not_running(tmp_path):
    run_dir = tmp_path / "run"
    run_local(job_with(**{"job.max_steps": 10}), run_dir)
    killed = json.loads((run_dir / "status.json").read_text())
    killed.update(state="running", updated=killed["updated"] - 120)  # as a SIGKILL leaves it
    (run_dir / "status.json").write_text(json.dumps(killed))
    done = cli("status", str(run_dir), "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["state"] == "running"
    assert "not running: no update for 1" in done.stderr and "--resume" in done.stderr

    fresh = dict(killed, updated=time.time())
    (run_dir / "status.json").write_text(json.dumps(fresh))
    assert cli("status", str(run_dir)).stderr == ""


def test_status_is_a_readable_table_and_json_on_request(tmp_path):
    run_dir = tmp_path / "run"
    run_local(job_with(**{"job.max_steps": 20}), run_dir)
    table = cli("status", str(run_dir))
    assert table.returncode == 0, table.stderr
    final = status(run_dir)
    assert "state      done" in table.stdout and "step       20" in table.stdout
    last_loss = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text()
                                .splitlines()) if r["kind"] == "train"][-1]["loss"]
    assert f"loss       {last_loss:.4f}" in table.stdout
    assert str(final["workers"][0]["pid"]) in table.stdout
    assert json.loads(cli("status", str(run_dir), "--json").stdout) == final


def test_set_overrides_any_key_typed_as_the_spec_says(tmp_path):
    job_file = write_job(tmp_path / "job.toml", job_with(**{"job.max_steps": 20}))
    run_dir = tmp_path / "run"
    done = cli("train", str(job_file), "--run-dir", str(run_dir), "--quiet",
               "--set", "optimizer.lr=0.07", "--set", "model.sizes=[16, 8, 4]",
               "--set", "job.name=renamed")
    assert done.returncode == 0, done.stderr
    written = (run_dir / "job.toml").read_text()
    assert "lr = 0.07" in written and "sizes = [16, 8, 4]" in written
    assert 'name = "renamed"' in written
    for bad, needle in (("optimizer.lrr=0.1", "unknown key"), ("lr=0.1", "SECTION.KEY=VALUE"),
                        ("optimizer.lr=fast", "[optimizer] lr")):
        done = cli("train", str(job_file), "--run-dir", str(tmp_path / "never"),
                   "--set", bad)
        assert done.returncode == 2, (bad, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and needle in done.stderr
        assert not (tmp_path / "never").exists()


def test_records_and_the_timeline_carry_wall_clock_time(tmp_path):
    before = time.time()
    run_dir = tmp_path / "run"
    run_local(job_with(**{"job.max_steps": 20}), run_dir)
    after = time.time()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
               .splitlines()]
    times = [r["time"] for r in records]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after
    events = json.loads((run_dir / "timeline.json").read_text())["traceEvents"]
    assert events and all(before * 1e6 <= e["ts"] <= after * 1e6 for e in events)
