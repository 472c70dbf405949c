"""Schedulers give torch's learning-rate sequences, and resume from their state_dict."""

import math

import numpy as np
import pytest
import torch

import disttrain
import disttrain.optim as optim

STEPS = 30

SCHEDULERS = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=7, gamma=0.5),
    "StepLR default gamma": lambda m, o: m.StepLR(o, 4),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=10, eta_min=1e-3),
    "CosineAnnealingLR short": lambda m, o: m.CosineAnnealingLR(o, 7),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lambda e: 0.95 ** e),
    "LambdaLR per group": lambda m, o: m.LambdaLR(
        o, [lambda e: 1 / (1 + e), lambda e: math.cos(e / 10)]),
}


def _setup(lib, name, optimizer="SGD"):
    make = getattr(torch.optim if lib is torch else optim, optimizer)
    p, q = (lib.tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = make([{"params": [p]}, {"params": [q], "lr": 0.03}], lr=0.1)
    module = torch.optim.lr_scheduler if lib is torch else optim.lr_scheduler
    return opt, SCHEDULERS[name](module, opt)


def _lrs(opt, sched, steps):
    seen = []
    for _ in range(steps):
        opt.step()
        sched.step()
        seen.append((sched.get_last_lr(), [g["lr"] for g in opt.param_groups], sched.last_epoch))
    return seen


@pytest.mark.parametrize("name", SCHEDULERS)
def test_lr_sequence_equals_torchs(name):
    ours, theirs = _setup(disttrain, name), _setup(torch, name)
    assert ours[1].get_last_lr() == theirs[1].get_last_lr()
    assert [g["initial_lr"] for g in ours[0].param_groups] == [0.1, 0.03]
    assert _lrs(*ours, STEPS) == _lrs(*theirs, STEPS)  # exact, not approximate


@pytest.mark.parametrize("name", SCHEDULERS)
def test_resume_from_state_dicts_continues_the_sequence(name):
    straight = _lrs(*_setup(disttrain, name), STEPS)
    opt, sched = _setup(disttrain, name, "Adam")
    _lrs(opt, sched, 12)
    opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
    assert "optimizer" not in sched_sd
    opt2, sched2 = _setup(disttrain, name, "Adam")
    opt2.load_state_dict(opt_sd)  # after building the scheduler, as torch's docs say
    sched2.load_state_dict(sched_sd)
    resumed = _lrs(opt2, sched2, STEPS - 12)
    adam = _lrs(*_setup(disttrain, name, "Adam"), STEPS)
    assert resumed == adam[12:] and [r[0] for r in adam] == [r[0] for r in straight]


def test_state_dict_keys_equal_torchs():
    for name in ("StepLR", "CosineAnnealingLR", "LambdaLR"):
        mine = _setup(disttrain, name)[1].state_dict()
        theirs = _setup(torch, name)[1].state_dict()
        assert sorted(mine) == sorted(theirs)


def test_step_with_epoch_uses_the_closed_form_as_torch():
    for name in ("StepLR", "CosineAnnealingLR"):
        results = []
        for lib in (torch, disttrain):
            opt, sched = _setup(lib, name)
            opt.step()
            with pytest.warns(UserWarning, match="epoch parameter"):
                sched.step(13)
            results.append(sched.get_last_lr())
        assert results[0] == results[1]


def test_get_lr_outside_step_warns_as_torch():
    for lib in (torch, disttrain):
        with pytest.warns(UserWarning, match="please use `get_last_lr\\(\\)`"):
            _setup(lib, "CosineAnnealingLR")[1].get_lr()
