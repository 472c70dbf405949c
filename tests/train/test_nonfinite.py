"""A NaN or infinite loss at run time (issue 7): [job] on_nonfinite = "stop" ends the job
naming the step, "skip" drops the step on every rank and counts it; no checkpoint ever
holds a non-finite parameter, and no record carries NaN (metrics.jsonl is JSON)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from disttrain.distributed import LocalCommunicator
from disttrain.train import Trainer, spec_from_dict
from disttrain.train.loop import NonFiniteError
from disttrain.train.spec import dump_job

from .helpers import REPO, small_job

# lr = 1e30 in float32: the first step is applied (its gradients are finite) and leaves
# the weights so large that every later loss is NaN.
DIVERGING = {"optimizer.lr": 1e30, "optimizer.momentum": 0.0, "job.max_steps": 6,
             "job.log_every": 2, "job.checkpoint_every": 1, "job.dtype": "float32",
             "model.activation": "relu"}


def trainer(**overrides):
    records, checkpoints = [], []
    t = Trainer(spec_from_dict(small_job(**overrides)), LocalCommunicator(60),
                on_record=records.append, on_checkpoint=checkpoints.append)
    return t, records, checkpoints


def finite(arrays: dict) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values())


def test_stop_raises_naming_the_step_and_saves_no_nan():
    t, records, checkpoints = trainer(**DIVERGING)
    with pytest.raises(NonFiniteError, match=r"^step 2: .*lower \[optimizer\] lr") as error:
        t.run()
    assert 'on_nonfinite = "skip"' in str(error.value)
    assert [c.meta["step"] for c in checkpoints] == [1]
    assert all(finite(c.model) and finite(c.optim) for c in checkpoints)
    assert finite({p: v.data for p, v in enumerate(t.params)})  # the bad step was not applied


def test_skip_drops_the_steps_counts_them_and_writes_json():
    t, records, checkpoints = trainer(**DIVERGING, **{"job.on_nonfinite": "skip"})
    t.run()
    train = [r for r in records if r["kind"] == "train"]
    assert [(r["step"], r["skipped"]) for r in train] == [(2, 1), (4, 2), (6, 2)]
    assert train[0]["loss"] is not None and train[1]["loss"] is None  # nothing to average
    for record in records:
        json.dumps(record, allow_nan=False)
    assert all(finite(c.model) for c in checkpoints)
    # every skipped step left the parameters as the one applied step made them
    after_first = checkpoints[0].model
    for c in checkpoints[1:]:
        assert all(np.array_equal(c.model[k], after_first[k]) for k in after_first)


def test_skip_changes_nothing_in_a_healthy_run():
    runs = []
    for mode in ("stop", "skip"):
        t, records, checkpoints = trainer(**{"job.on_nonfinite": mode, "job.max_steps": 8})
        t.run()
        runs.append(checkpoints[-1].model)
        assert all(r.get("skipped", 0) == 0 for r in records)
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_parameters_that_overflowed_are_never_checkpointed():
    t, _, checkpoints = trainer()
    t.params[0].data[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="parameters are no longer finite"):
        t.save_checkpoint()
    assert checkpoints == []


POISONED = '''
import os

from disttrain import nn


class PoisonedOnRank1(nn.Module):
    """An MLP whose training forward returns NaN on MPI rank 1, at its 3rd and 4th call."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
        self.calls = 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK"))
            if rank == "1" and self.calls in (3, 4):
                out = out * float("nan")
        return out


def build(spec):
    return PoisonedOnRank1()
'''


@pytest.mark.mpi
@pytest.mark.slow
def test_skip_is_agreed_by_every_rank_under_mpi(tmp_path):
    """Rank 1 alone sees NaN at steps 3 and 4; rank 0 skips them too (it sees the NaN in
    the averaged gradients), so the ranks stay one model and the job ends well."""
    (tmp_path / "poisoned.py").write_text(POISONED)
    job = small_job(**{"job.on_nonfinite": "skip", "job.max_steps": 8, "job.log_every": 8,
                       "model.kind": "custom", "model.factory": "poisoned.py:build",
                       "distributed.backend": "mpi", "distributed.workers": 2})
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(spec_from_dict(job)))
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "disttrain.launch.cli", "train",
                           str(job_file), "--run-dir", str(run), "--quiet"], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["skipped"]) for r in records if r["kind"] == "train"] == [(8, 2)]
