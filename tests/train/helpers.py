"""Run a small job end to end on any backend and read back its final parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from disttrain.launch.job import find_mpiexec
from disttrain.train.spec import dump_job, spec_from_dict

REPO = Path(__file__).resolve().parents[2]


def small_job(**overrides) -> dict:
    """The job of DESIGN.md's promise: MLP, float64, SGD with momentum, 30 steps, shuffled."""
    job = {
        "job": {"name": "equivalence", "seed": 3, "epochs": 10, "max_steps": 30,
                "batch_size": 24, "dtype": "float64", "log_every": 10,
                "eval_every_epoch": False},
        "model": {"kind": "mlp", "sizes": [16, 32, 32, 4], "activation": "tanh"},
        "data": {"name": "synthetic", "n_samples": 300, "n_features": 16, "n_classes": 4,
                 "shuffle": True, "val_fraction": 0.2},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "distributed": {"backend": "local", "workers": 1, "timeout_s": 60,
                        "cpus_per_worker": 1},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        job[section][key] = value
    return job


def final_params(run_dir) -> dict:
    with np.load(Path(run_dir) / "final" / "model.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def run_on_ray(job: dict, run_dir) -> dict:
    """Train through the real supervisor on the session's Ray cluster; the final params."""
    from disttrain.launch.job import run_job

    assert run_job(spec_from_dict(job), run_dir, quiet=True) == 0
    return final_params(run_dir)


def run_local(job: dict, run_dir) -> dict:
    from disttrain.launch.job import run_job

    assert run_job(spec_from_dict(job), run_dir, quiet=True) == 0
    return final_params(run_dir)


def run_under_mpiexec(job: dict, run_dir, timeout=240) -> dict:
    """Train with `mpiexec -n W python -m disttrain.workers.mpi_rank`; the final params."""
    spec = spec_from_dict(job)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    job_file = Path(run_dir) / "job.toml"
    job_file.write_text(dump_job(spec))
    done = subprocess.run(
        [find_mpiexec(), "-n", str(spec.distributed.workers), sys.executable, "-m",
         "disttrain.workers.mpi_rank", str(job_file), "--run-dir", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_params(run_dir)
