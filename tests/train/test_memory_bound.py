"""A data set larger than a worker's memory trains: a 1 GiB .npy through the CLI on two Ray
workers, each worker's peak resident memory (VmHWM from /proc) staying under a quarter of
the file.

What would break the bound, and which part of the job meets it:
- reading the file whole, or casting it whole to the job's dtype (float32 on disk,
  float64 job): 1-2 GiB in each rank;
- copying the train split (x[keep], 80% of the rows): 0.8 GiB;
- evaluating a rank's half of the validation split at once (20% of the rows, so 26,214
  rows x 4 KiB, plus their float64 cast): about 0.3 GiB, more than the bound;
- reading rows through a memory mapping: every page touched counts in the rank's
  resident memory, so the NaN/inf check that reads the whole file in each rank, and the
  evaluation, would show most of the file. Rows are read with explicit reads instead
  (disttrain/data/rows.py), which leave the pages in the page cache, outside any rank.
The training steps themselves read 60 batches of 64 rows (15 MiB); the check and the
final evaluation are what make the bound meaningful.

The peak is read by the job's own custom loss (a [job] loss file, called on every step
and by the final evaluation), from /proc/self/status in each worker process, so it
covers the rank's whole life up to its last evaluation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.launch.test_run_directory import write_job
from tests.train.helpers import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS, WIDTH = 262144, 1024  # float32: 1 GiB of features
FILE_BYTES = ROWS * WIDTH * 4

LOSS = """
import os

from disttrain.nn import functional as F


def loss(output, target):
    '''cross_entropy, noting this process's peak resident memory (VmHWM, kB) in a file.'''
    with open("/proc/self/status") as f:
        peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.path.join({folder!r}, f"peak-{{os.getpid()}}"), "w") as f:
        f.write(peak)
    return F.cross_entropy(output, target)
"""


def write_big_npy(folder):
    """x.npy (ROWS, WIDTH) float32 of uniform noise, written a slab at a time, and y.npy
    with 4 classes read off its first two columns."""
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(ROWS, WIDTH))
    y = np.empty(ROWS, dtype=np.int64)
    for lo in range(0, ROWS, 16384):
        slab = rng.random((16384, WIDTH), dtype=np.float32)
        x[lo:lo + 16384] = slab
        y[lo:lo + 16384] = (slab[:, 0] > 0.5) + 2 * (slab[:, 1] > 0.5)
    x.flush()
    del x
    np.save(folder / "y.npy", y)
    assert os.path.getsize(folder / "x.npy") > FILE_BYTES


def peak_kb(folder, pid: int) -> int:
    return int((folder / f"peak-{pid}").read_text())


def test_a_1_gib_npy_trains_with_each_worker_under_a_quarter_of_it(ray_session, tmp_path):
    write_big_npy(tmp_path)
    (tmp_path / "loss.py").write_text(LOSS.format(folder=str(tmp_path)))
    job = {
        "job": {"name": "big", "seed": 0, "epochs": 1, "max_steps": 60, "batch_size": 64,
                "dtype": "float64", "log_every": 20, "eval_every_epoch": False,
                "loss": "loss.py:loss"},
        "model": {"kind": "mlp", "sizes": [WIDTH, 8, 4], "activation": "relu"},
        "data": {"path": "x.npy", "y_path": "y.npy", "val_fraction": 0.2, "shuffle": True},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "distributed": {"backend": "coordinator", "workers": 2, "cpus_per_worker": 1,
                        "timeout_s": 120},
    }
    run_dir = tmp_path / "run"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "disttrain.launch.cli", "train",
             str(write_job(tmp_path / "job.toml", job)), "--run-dir", str(run_dir),
             "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    finally:
        (tmp_path / "x.npy").unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 60, status
    assert (run_dir / "final" / "model.npz").is_file()
    losses = [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text()
                                     .splitlines()) if r["kind"] == "train"]
    assert len(losses) == 3 and all(np.isfinite(losses)), losses
    assert status["final"]["val_accuracy"] is not None
    pids = [w["pid"] for w in status["workers"]]
    peaks = {pid: peak_kb(tmp_path, pid) * 1024 for pid in pids}
    print(f"file {FILE_BYTES >> 20} MiB; worker peak RSS (VmHWM) "
          + ", ".join(f"{p >> 20} MiB" for p in peaks.values()))
    assert len(peaks) == 2
    for pid, peak in peaks.items():
        assert peak < FILE_BYTES / 4, (
            f"worker {pid}: peak resident memory {peak >> 20} MiB, more than a quarter of "
            f"the {FILE_BYTES >> 20} MiB file")
