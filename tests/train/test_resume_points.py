"""A run resumed from any checkpoint ends bit-identical to one that never stopped, wherever
the checkpoint falls: mid-epoch, or on the step that ends an epoch, where the per-epoch
scheduler has just stepped (a stop there once resumed with the previous epoch's lr).

In one process (LocalCommunicator), through run_rank, the function every launcher calls;
the cross-process stops are tests/launch/test_signals.py's and tests/deploy's."""

from __future__ import annotations

import numpy as np
import pytest

from disttrain.distributed.comm import LocalCommunicator
from disttrain.train.runner import run_rank
from disttrain.train.spec import spec_from_dict
from tests.train.helpers import small_job

STEPS_PER_EPOCH = 10  # 240 training rows, batch 24
EPOCHS = 4


def job(**overrides):
    spec = small_job(**{"job.epochs": EPOCHS, "job.max_steps": 0, "job.log_every": 1,
                        "job.eval_every_epoch": True, **overrides})
    spec["scheduler"] = {"name": "cosine"}
    return spec_from_dict(spec)


def train(spec, *, state=None, stop_at=None):
    """(the checkpoints rank 0 handed on, in order; the eval records) of one run, stopped
    once it has run step stop_at (log_every 1: the stop is asked after every step)."""
    checkpoints, evals, asked = [], [], [0]

    def should_stop():
        asked[0] += 1
        return stop_at is not None and asked[0] + (state.meta["step"] if state else 0) >= stop_at

    run_rank(spec, LocalCommunicator(), state=state, on_checkpoint=checkpoints.append,
             on_record=lambda r: evals.append(r["epoch"]) if r["kind"] == "eval" else None,
             should_stop=should_stop)
    return checkpoints, evals


def assert_same_state(a, b):
    assert a.meta == b.meta
    for part in ("model", "optim"):
        ours, theirs = getattr(a, part), getattr(b, part)
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert np.array_equal(ours[name], theirs[name]), (part, name)


@pytest.fixture(scope="module")
def clean():
    checkpoints, evals = train(job())
    assert checkpoints[-1].meta["step"] == EPOCHS * STEPS_PER_EPOCH
    assert evals == list(range(EPOCHS))  # the last epoch's too
    return checkpoints[-1]


@pytest.mark.parametrize("stop_at", [1, 7, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH,
                                     2 * STEPS_PER_EPOCH + 1, EPOCHS * STEPS_PER_EPOCH - 1])
def test_a_stop_at_any_step_resumes_bit_identical(clean, stop_at):
    checkpoints, evals = train(job(), stop_at=stop_at)
    stopped = checkpoints[-1]
    assert stopped.meta["step"] == stop_at
    finished_epochs = stop_at // STEPS_PER_EPOCH
    assert evals == list(range(finished_epochs))  # an epoch ended by the stop is evaluated
    assert stopped.meta["scheduler"]["last_epoch"] == finished_epochs
    resumed, evals_after = train(job(), state=stopped)
    assert evals_after == list(range(finished_epochs, EPOCHS))
    assert_same_state(resumed[-1], clean)


@pytest.mark.parametrize("every", [STEPS_PER_EPOCH, 7])
def test_every_periodic_checkpoint_resumes_bit_identical(clean, every):
    checkpoints, _ = train(job(**{"job.checkpoint_every": every}))
    assert_same_state(checkpoints[-1], clean)
    periodic = checkpoints[:-1]
    assert [c.meta["step"] for c in periodic] == list(range(every, EPOCHS * STEPS_PER_EPOCH,
                                                            every))
    for checkpoint in periodic:
        assert (checkpoint.meta["scheduler"]["last_epoch"]
                == checkpoint.meta["step"] // STEPS_PER_EPOCH)
        resumed, _ = train(job(), state=checkpoint)
        assert_same_state(resumed[-1], clean)


class AgreementFails(LocalCommunicator):
    """A one-process communicator whose agreement after step `after` fails, as a collective
    to a dead peer does: the replica is then taken as it stands (an elastic job's recovery
    from memory, workers/ray_rank.py's snapshot)."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def allreduce_(self, buf):
        if buf.size == 3 and self.step == self.after - 1:  # _agree's (loss, stop, interval)
            raise ConnectionError(f"peer lost after step {self.after}")
        return buf


@pytest.mark.parametrize("after", [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH + 3])
def test_a_replica_taken_after_a_failed_collective_resumes_bit_identical(clean, after):
    held = {}
    with pytest.raises(ConnectionError):
        run_rank(job(), AgreementFails(after), held=held)
    snapshot = held["trainer"].state()
    assert snapshot.meta["step"] == after
    assert snapshot.meta["scheduler"]["last_epoch"] == after // STEPS_PER_EPOCH
    resumed, _ = train(job(), state=snapshot)
    assert_same_state(resumed[-1], clean)
