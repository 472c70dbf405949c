"""MPI cannot shrink or grow a running job (that needs fault-tolerant MPI), but `--resume
--workers N` continues an MPI run from its checkpoint on another number of ranks: the
checkpoint holds one replica's state and the global batch is the same on any number of
ranks, so the run ends where a one-process run of the same job does."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from disttrain.train.spec import dump_job, spec_from_dict
from tests.train.helpers import REPO, final_params, run_local, small_job

pytestmark = pytest.mark.slow


def disttrain(*args):
    done = subprocess.run([sys.executable, "-m", "disttrain.launch.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("first, then", [(2, 3), (3, 1)])
def test_resume_on_another_number_of_mpi_ranks_ends_where_one_process_does(tmp_path, first,
                                                                          then):
    job = small_job(**{"job.checkpoint_every": 10, "distributed.backend": "mpi"})
    path = tmp_path / "job.toml"
    path.write_text(dump_job(spec_from_dict(job)))
    run = tmp_path / "run"
    disttrain("train", str(path), "--run-dir", str(run), "--workers", str(first),
              "--max-steps", "20", "--quiet")
    assert json.loads((run / "status.json").read_text())["world_size"] == first
    resumed = disttrain("train", str(path), "--run-dir", str(run), "--resume",
                        "--workers", str(then), "--max-steps", "30")
    assert "resumed from step-00000020" in resumed.stdout
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["step"], status["world_size"]) == ("done", 30, then)
    reference = run_local(small_job(**{"job.checkpoint_every": 10}),  # one process, no MPI
                          tmp_path / "reference")
    got = final_params(run)
    for name in reference:
        np.testing.assert_allclose(got[name], reference[name], rtol=0, atol=1e-9)
