"""ShardedOptimizer in one process: with one rank it is the wrapped optimizer, state and all.

(Several ranks, on every backend, are tested end to end in tests/train/test_sharded.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

import disttrain
from disttrain import nn, optim
from disttrain.distributed import DistributedDataParallel, LocalCommunicator, ShardedOptimizer


def model_and_batch(seed: int = 0):
    disttrain.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    rng = np.random.default_rng(seed)
    return model, rng.standard_normal((8, 5)), rng.integers(0, 3, 8)


def train(model, opt, x, y, steps=4):
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(disttrain.tensor(x)), disttrain.tensor(y)).backward()
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True),
    lambda ps: optim.AdamW(ps, lr=0.01),
    lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True, weight_decay=0.01),
    lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
])
def test_one_rank_equals_the_wrapped_optimizer(make):
    plain_model, x, y = model_and_batch()
    plain = make(plain_model.parameters())
    train(plain_model, plain, x, y)
    model, _, _ = model_and_batch()
    ddp = DistributedDataParallel(model, LocalCommunicator())
    first = make(model.parameters())
    train(model, first, x, y, steps=1)  # state before wrapping is carried over
    sharded = ShardedOptimizer(first, ddp)
    train(ddp, sharded, x, y, steps=3)
    for a, b in zip(model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    got, want = sharded.state_dict(), plain.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert got["state"].keys() == want["state"].keys()
    for i, entry in want["state"].items():
        assert list(got["state"][i]) == list(entry)
        for key, value in entry.items():
            np.testing.assert_array_equal(got["state"][i][key], value)
    # and back: a fresh wrapper loads the unsharded state and goes on identically
    again = ShardedOptimizer(make(model.parameters()), ddp)
    again.load_state_dict(want)
    train(ddp, again, x, y, steps=1)
    train(plain_model, plain, x, y, steps=1)
    for a, b in zip(model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_scheduler_drives_the_inner_optimizer():
    model, x, y = model_and_batch()
    ddp = DistributedDataParallel(model, LocalCommunicator())
    sharded = ShardedOptimizer(optim.SGD(model.parameters(), lr=0.5), ddp)
    scheduler = optim.lr_scheduler.StepLR(sharded, step_size=1, gamma=0.1)
    train(ddp, sharded, x, y, steps=1)
    scheduler.step()
    train(ddp, sharded, x, y, steps=1)
    assert sharded.inner.param_groups[0]["lr"] == pytest.approx(0.05)
