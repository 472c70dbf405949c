"""[distributed] shard_optimizer (ZeRO stage 1) changes where the optimizer runs, not what
it computes.

The same float64 job, sharded and unsharded, on the same backend and number of workers,
must end within 1e-12: parameters and the whole optimizer state of the final checkpoint
(which must have the unsharded format: same keys, shapes and scalars), for SGD with
momentum, Adam and AdamW, with a per-epoch scheduler, on 2 and 3 workers of the
coordinator, ring and MPI backends. The model is wide enough for three gradient buckets,
and 3 workers cut parameters at chunk boundaries; one of its layers is never used, so
its gradient is None on every rank and both runs must skip it (no state for it). A run
stopped halfway and resumed with the other setting must end within 1e-12 of an
uninterrupted run, both ways.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from disttrain.optim import state_dict_from_arrays
from disttrain.train.checkpoint import list_checkpoints, load_checkpoint
from disttrain.train.spec import SpecError, spec_from_dict

from .helpers import run_on_ray, run_under_mpiexec, small_job

pytestmark = pytest.mark.slow

SPARE_MODEL = '''
from disttrain import nn


class WithSpare(nn.Module):
    """A tanh MLP wide enough for several buckets, and a head no step ever uses."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, 300)
        self.wide = nn.Linear(300, 450)
        self.spare = nn.Linear(450, 4)  # between used layers: shares their bucket
        self.out = nn.Linear(450, 4)

    def forward(self, x):
        return self.out(self.wide(self.inp(x).tanh()).tanh())


def build(spec):
    return WithSpare()
'''

OPTIMIZERS = {
    "sgd": {"optimizer.name": "sgd", "optimizer.lr": 0.05, "optimizer.momentum": 0.9,
            "optimizer.weight_decay": 1e-3},
    "adam": {"optimizer.name": "adam", "optimizer.lr": 0.003},
    "adamw": {"optimizer.name": "adamw", "optimizer.lr": 0.003, "optimizer.weight_decay": 0.05},
}
SPARE = ("spare.weight", "spare.bias")


def job(tmp_path: Path, optimizer: str, backend: str, workers: int, sharded: bool,
        **overrides) -> dict:
    (tmp_path / "spare.py").write_text(SPARE_MODEL)
    spec = small_job(**{
        **OPTIMIZERS[optimizer],
        "model.kind": "custom", "model.factory": f"{tmp_path / 'spare.py'}:build",
        # three buckets: out, spare and wide's bias (the first is at most 1 MB), wide's
        # weight, and inp
        "distributed.bucket_cap_mb": 0.25,
        "distributed.backend": backend, "distributed.workers": workers,
        "distributed.shard_optimizer": sharded, **overrides})
    spec["scheduler"] = {"name": "step", "step_size": 1, "gamma": 0.7}
    return spec


def run(job_dict: dict, run_dir: Path, resume: bool = False) -> dict:
    if job_dict["distributed"]["backend"] == "mpi":
        assert not resume
        return run_under_mpiexec(job_dict, run_dir)
    if not resume:
        return run_on_ray(job_dict, run_dir)
    from disttrain.launch.job import run_job

    from .helpers import final_params
    assert run_job(spec_from_dict(job_dict), run_dir, resume=True, quiet=True) == 0
    return final_params(run_dir)


def last_optimizer_state(run_dir: Path) -> dict:
    state = load_checkpoint(list_checkpoints(run_dir)[0])  # the newest
    assert state.meta["step"] == 30
    return state, state_dict_from_arrays(state.optim, state.meta["optimizer"])


def assert_same_params(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12, err_msg=name)


def assert_same_optimizer_state(got: dict, want: dict) -> None:
    """The unsharded format: the same entries, keys, shapes and scalars; arrays to 1e-12."""
    assert got["param_groups"] == want["param_groups"]
    assert sorted(got["state"]) == sorted(want["state"])
    for index, entry in want["state"].items():
        mine = got["state"][index]
        assert list(mine) == list(entry), index
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                assert mine[key].shape == value.shape and mine[key].dtype == value.dtype
                np.testing.assert_allclose(mine[key], value, rtol=0, atol=1e-12,
                                           err_msg=f"state {index} {key}")
            else:
                assert type(mine[key]) is type(value) and mine[key] == value, (index, key)


def assert_equivalent(tmp_path: Path, optimizer: str, backend: str, workers: int,
                      state_on_first_grad: bool = True) -> None:
    """state_on_first_grad: the optimizer makes a parameter's state at its first gradient
    (all but Adagrad, which makes every parameter's in its constructor, as torch's)."""
    sharded = run(job(tmp_path, optimizer, backend, workers, True), tmp_path / "sharded")
    plain = run(job(tmp_path, optimizer, backend, workers, False), tmp_path / "plain")
    assert_same_params(sharded, plain)
    state, got = last_optimizer_state(tmp_path / "sharded")
    plain_state, want = last_optimizer_state(tmp_path / "plain")
    assert state.optim.keys() == plain_state.optim.keys()  # the very same npz names
    assert json.loads(state.meta["optimizer"]).keys() == json.loads(
        plain_state.meta["optimizer"]).keys()
    assert_same_optimizer_state(got, want)
    # the spare head never had a gradient: no state, and its weights never moved
    spare = [i for i, name in enumerate(plain) if name in SPARE]
    assert len(spare) == 2
    if state_on_first_grad:
        assert not set(spare) & set(want["state"])
        assert len(want["state"]) == len(plain) - 2
    # and training moved the other parameters
    first = run(job(tmp_path, optimizer, backend, workers, True, **{"job.max_steps": 1}),
                tmp_path / "one-step")
    assert max(np.abs(sharded[k] - first[k]).max() for k in sharded) > 1e-3
    for name in SPARE:
        np.testing.assert_array_equal(sharded[name], first[name])


@pytest.mark.ray
@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("backend", ["coordinator", "ring"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_sharded_equals_unsharded_on_ray(ray_session, tmp_path, optimizer, backend, workers):
    assert_equivalent(tmp_path, optimizer, backend, workers)


@pytest.mark.mpi
@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_sharded_equals_unsharded_under_mpi(tmp_path, optimizer, workers):
    assert_equivalent(tmp_path, optimizer, "mpi", workers)


@pytest.mark.ray
@pytest.mark.parametrize("first_sharded", [True, False])
def test_resume_across_sharded_and_unsharded(ray_session, tmp_path, first_sharded):
    """Stop at step 15 (mid-epoch), resume with the other setting to 30: within 1e-12 of
    the first setting's run that never stopped, in parameters and optimizer state."""
    def adam_job(sharded: bool, workers: int, steps: int) -> dict:
        return job(tmp_path, "adam", "coordinator", workers, sharded,
                   **{"job.max_steps": steps})

    whole = run(adam_job(first_sharded, 3, 30), tmp_path / "whole")
    run(adam_job(first_sharded, 3, 15), tmp_path / "resumed")
    resumed = run(adam_job(not first_sharded, 3, 30), tmp_path / "resumed", resume=True)
    assert_same_params(resumed, whole)
    assert_same_optimizer_state(last_optimizer_state(tmp_path / "resumed")[1],
                                last_optimizer_state(tmp_path / "whole")[1])


def test_elastic_jobs_refuse_a_sharded_optimizer():
    with pytest.raises(SpecError, match=r"\[distributed\] shard_optimizer: an elastic job"):
        spec_from_dict(small_job(**{"distributed.backend": "coordinator",
                                    "distributed.workers": 3, "distributed.min_workers": 2,
                                    "distributed.shard_optimizer": True}))
