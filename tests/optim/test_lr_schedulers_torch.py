"""The schedulers beside StepLR/CosineAnnealingLR/LambdaLR, against torch 2.13 itself.

Every comparison is exact (==), never approximate: each scheduler does the same float64
arithmetic as torch in the same order, so any difference at all is a bug. Both sides run on the
same optimizer (SGD with momentum, Adam where beta1 is cycled) over three param groups with
different lrs, and each run records, after every step, the schedule keys of every group, every
scheduler's get_last_lr() and its whole state_dict (keys in order).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import disttrain
import disttrain.optim as optim

LRS = (0.1, 0.03, 0.5)
# the param-group keys a scheduler reads or writes
SCHEDULE_KEYS = ("lr", "initial_lr", "momentum", "betas", "max_lr", "min_lr", "max_momentum",
                 "base_momentum")


class Decay:
    """A callable object, whose __dict__ (unlike a function's) goes into the state_dict."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.calls = 0

    def __call__(self, epoch: int) -> float:
        self.calls += 1
        return self.factor


@dataclass(frozen=True)
class Case:
    build: Callable  # (lr_scheduler module, optimizer) -> the schedulers to step, in order
    horizon: int  # the steps in which the schedule changes
    optimizer: str = "SGD"
    runs_past: bool = True  # OneCycleLR raises after total_steps (tested on its own)

    @property
    def steps(self) -> int:
        return 3 * self.horizon if self.runs_past else self.horizon


CASES = {
    "MultiStepLR repeated milestone": Case(
        lambda m, o: [m.MultiStepLR(o, milestones=[3, 7, 7, 12], gamma=0.5)], 12),
    "MultiStepLR unsorted, default gamma": Case(lambda m, o: [m.MultiStepLR(o, [5, 2])], 5),
    "ExponentialLR": Case(lambda m, o: [m.ExponentialLR(o, gamma=0.9)], 10),
    "ExponentialLR growing": Case(lambda m, o: [m.ExponentialLR(o, 1.07)], 10),
    "ConstantLR defaults": Case(lambda m, o: [m.ConstantLR(o)], 5),
    "ConstantLR": Case(lambda m, o: [m.ConstantLR(o, factor=0.5, total_iters=4)], 4),
    "ConstantLR one epoch": Case(lambda m, o: [m.ConstantLR(o, factor=0.1, total_iters=1)], 1),
    "LinearLR defaults": Case(lambda m, o: [m.LinearLR(o)], 5),
    "LinearLR warm-up": Case(
        lambda m, o: [m.LinearLR(o, start_factor=0.25, end_factor=0.75, total_iters=6)], 6),
    "LinearLR decay": Case(
        lambda m, o: [m.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=8)], 8),
    "LinearLR to zero": Case(lambda m, o: [m.LinearLR(o, 0.5, 0.0, total_iters=4)], 4),
    "MultiplicativeLR": Case(lambda m, o: [m.MultiplicativeLR(o, lambda e: 0.95)], 10),
    "MultiplicativeLR per group": Case(lambda m, o: [m.MultiplicativeLR(
        o, [lambda e: 0.9, lambda e: 1 - 0.01 * e, Decay(0.8)])], 10),
    "PolynomialLR defaults": Case(lambda m, o: [m.PolynomialLR(o)], 5),
    "PolynomialLR square": Case(lambda m, o: [m.PolynomialLR(o, total_iters=8, power=2.0)], 8),
    "PolynomialLR root": Case(lambda m, o: [m.PolynomialLR(o, total_iters=6, power=0.5)], 6),
    "CosineAnnealingWarmRestarts": Case(
        lambda m, o: [m.CosineAnnealingWarmRestarts(o, T_0=5)], 10),
    "CosineAnnealingWarmRestarts T_mult": Case(
        lambda m, o: [m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3)], 21),
    "OneCycleLR": Case(lambda m, o: [m.OneCycleLR(o, max_lr=1.0, total_steps=20)], 20,
                       runs_past=False),
    "OneCycleLR three phases, linear, per group": Case(lambda m, o: [m.OneCycleLR(
        o, max_lr=[0.5, 1.0, 2.0], epochs=4, steps_per_epoch=5, pct_start=0.25,
        anneal_strategy="linear", three_phase=True)], 20, runs_past=False),
    "OneCycleLR no momentum": Case(lambda m, o: [m.OneCycleLR(
        o, 0.4, total_steps=10, cycle_momentum=False, div_factor=10.0,
        final_div_factor=100.0)], 10, runs_past=False),
    "OneCycleLR Adam beta1": Case(lambda m, o: [m.OneCycleLR(
        o, 0.01, total_steps=15, max_momentum=[0.95, 0.9, 0.99], base_momentum=0.8)], 15,
        optimizer="Adam", runs_past=False),
    "OneCycleLR 3 steps": Case(lambda m, o: [m.OneCycleLR(o, 0.1, total_steps=3)], 3,
                               runs_past=False),
    "SequentialLR warm-up then cosine": Case(lambda m, o: [m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=10)],
        milestones=[5])], 15),
    "SequentialLR of three": Case(lambda m, o: [m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.5, total_iters=2), m.ExponentialLR(o, 0.8),
            m.StepLR(o, 3, gamma=0.5)], milestones=[4, 9])], 12),
    "SequentialLR of lambdas and restarts": Case(lambda m, o: [m.SequentialLR(
        o, [m.LambdaLR(o, lambda e: 1 / (1 + e)), m.MultiplicativeLR(o, Decay(0.9)),
            m.CosineAnnealingWarmRestarts(o, T_0=4)], milestones=[3, 6])], 12),
    "SequentialLR milestone 0": Case(lambda m, o: [m.SequentialLR(
        o, [m.ExponentialLR(o, 0.9), m.PolynomialLR(o, total_iters=4)], milestones=[0])], 5),
    "ChainedScheduler": Case(lambda m, o: [m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.1, total_iters=5), m.ExponentialLR(o, gamma=0.9)])], 10),
    "ChainedScheduler tuple, optimizer given": Case(lambda m, o: [m.ChainedScheduler(
        (m.MultiStepLR(o, [2, 4]), m.LinearLR(o, 0.5, total_iters=3), m.PolynomialLR(o, 6)),
        optimizer=o)], 6),
    "ChainedScheduler of SequentialLR": Case(lambda m, o: [m.ChainedScheduler([
        m.SequentialLR(o, [m.LinearLR(o, 0.2, total_iters=3), m.ExponentialLR(o, 0.9)], [3]),
        m.StepLR(o, 4, gamma=0.5)])], 8),
    "stacked MultiStepLR, ExponentialLR": Case(
        lambda m, o: [m.MultiStepLR(o, [3, 6]), m.ExponentialLR(o, 0.95)], 6),
    "stacked LinearLR, PolynomialLR, MultiplicativeLR": Case(lambda m, o: [
        m.LinearLR(o, 0.5, total_iters=4), m.PolynomialLR(o, total_iters=8, power=2.0),
        m.MultiplicativeLR(o, lambda e: 0.97)], 8),
    "stacked StepLR, ConstantLR": Case(
        lambda m, o: [m.StepLR(o, 3), m.ConstantLR(o, factor=0.25, total_iters=4)], 6),
}


def _module(lib):
    return torch.optim.lr_scheduler if lib is torch else optim.lr_scheduler


def _param(lib):
    return lib.tensor(np.ones(2), requires_grad=True)


def _optimizer(lib, name: str = "SGD"):
    make = getattr(torch.optim if lib is torch else optim, name)
    groups = [{"params": [_param(lib)], "lr": lr} for lr in LRS]
    return make(groups, lr=LRS[0], **({"momentum": 0.9} if name == "SGD" else {}))


def _build(lib, case: Case):
    opt = _optimizer(lib, case.optimizer)
    return opt, case.build(_module(lib), opt)


def _ordered(value):
    """Dicts as (key, value) lists, so equality also checks that the keys come in torch's order."""
    if isinstance(value, dict):
        return [(k, _ordered(v)) for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [_ordered(v) for v in value]
    return value


def _snapshot(opt, schedulers) -> tuple:
    groups = [{k: g[k] for k in SCHEDULE_KEYS if k in g} for g in opt.param_groups]
    return (groups, [s.get_last_lr() for s in schedulers],
            [_ordered(s.state_dict()) for s in schedulers])


def _run(opt, schedulers, steps: int) -> list:
    seen = []
    for _ in range(steps):
        opt.step()  # no gradients: it changes nothing but lets the schedulers step after it
        for scheduler in schedulers:
            scheduler.step()
        seen.append(_snapshot(opt, schedulers))
    return seen


@pytest.mark.parametrize("name", CASES)
def test_every_step_equals_torchs(name):
    case = CASES[name]
    ours, theirs = _build(disttrain, case), _build(torch, case)
    start = _snapshot(*ours)
    assert start == _snapshot(*theirs)  # after the constructors
    mine = _run(*ours, case.steps)
    assert mine == _run(*theirs, case.steps)
    assert len({str(s[0]) for s in [start, *mine]}) > 1  # the lrs did change


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.runs_past])
def test_one_cycle_past_total_steps_raises_as_torch(name):
    case = CASES[name]
    errors = []
    for lib in (disttrain, torch):
        opt, schedulers = _build(lib, case)
        _run(opt, schedulers, case.horizon)
        with pytest.raises(ValueError) as info:
            schedulers[0].step()
        errors.append(str(info.value))
    assert errors[0] == errors[1] == (f"Tried to step {case.horizon + 1} times. The specified "
                                      f"number of total steps is {case.horizon}")


def _resumed(lib, case: Case, at: int) -> list:
    """Run to step `at`, save both state_dicts (copied, as a checkpoint would), build everything
    afresh, load the optimizer then the schedulers, as torch's docs say, and run on."""
    opt, schedulers = _build(lib, case)
    _run(opt, schedulers, at)
    saved = copy.deepcopy((opt.state_dict(), [s.state_dict() for s in schedulers]))
    assert all("optimizer" not in state for state in saved[1])
    opt, schedulers = _build(lib, case)
    opt.load_state_dict(saved[0])
    for scheduler, state in zip(schedulers, saved[1], strict=True):
        scheduler.load_state_dict(state)
    return _run(opt, schedulers, case.steps - at)


@pytest.mark.parametrize("name", CASES)
def test_resuming_from_state_dicts_continues_the_run(name):
    case = CASES[name]
    at = case.horizon // 2 + 1
    straight = _run(*_build(disttrain, case), case.steps)
    resumed = _resumed(disttrain, case, at)
    assert resumed == straight[at:]
    assert resumed == _resumed(torch, case, at)


CLOSED_FORMS = {
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, [3, 7, 7], gamma=0.5),
    "ConstantLR": lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=4),
    "LinearLR": lambda m, o: m.LinearLR(o, 0.25, 0.75, total_iters=6),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, 0.9),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o, total_iters=8, power=2.0),
}


def _with_warnings(fn) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("name", CLOSED_FORMS)
def test_step_with_epoch_uses_the_closed_form_as_torch(name):
    runs = []
    for lib in (disttrain, torch):
        opt = _optimizer(lib)
        scheduler = CLOSED_FORMS[name](_module(lib), opt)
        opt.step()
        seen = []
        for epoch in (0, 3, 7, 12, 2, 25):
            seen.append(_with_warnings(lambda e=epoch, s=scheduler: (s.step(e),
                                                                     s.get_last_lr())))
        runs.append(seen)
    assert runs[0] == runs[1]
    assert all("epoch parameter" in w[0][1] for _, w in runs[0])


@pytest.mark.parametrize("t_mult", [1, 2])
def test_warm_restarts_fractional_and_interleaved_epochs_as_torch(t_mult):
    """Its documented use: step(epoch + batch / batches), mixed with plain step()."""
    # 8.5 then plain steps: T_cur passes T_i by a fraction, which the restart keeps
    epochs = ([e + i / 4 for e in range(10) for i in range(4)]
              + [None, None, 26, None, 3.5, None, 8.5, None, None, 20.25, None, None])
    runs = []
    for lib in (disttrain, torch):
        opt = _optimizer(lib)
        scheduler = _module(lib).CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=t_mult,
                                                             eta_min=0.01)
        opt.step()
        runs.append([_with_warnings(lambda e=e, s=scheduler, o=opt: (s.step(e), _snapshot(o, [s])))
                     for e in epochs])
    assert runs[0] == runs[1]
    assert all(not w for _, w in runs[0])  # no deprecation warning for this scheduler


def test_get_lr_outside_step_warns_as_torch():
    for name in ("MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR"):
        caught = []
        for lib in (disttrain, torch):
            scheduler = CLOSED_FORMS[name](_module(lib), _optimizer(lib))
            caught.append(_with_warnings(scheduler.get_lr))
        assert caught[0] == caught[1]
        assert "please use `get_last_lr()`" in caught[0][1][0][1]


# ReduceLROnPlateau: plateaus, improvements smaller than the threshold, real ones, a rise, and
# 10.5, exactly the best (10) plus the "max abs" threshold, which is not an improvement
METRICS = [10, 9, 9, 9, 9, 8.99, 8.995, 7, 7, 7.5, 8, 6.9999, 6.95, 6.9, 6.9, 6.9, 6.9, 3, 3, 3,
           3.1, 2.9, 2.9, 2.9, 2.9, 2.9, 4, 5, 6, 7, 8, 9, 9.01, 9.02, 9.2, 9.2, 9.2, 9.2, 9.2,
           9.2, 9.2, 9.2, 10.5, 10.5, 11]

PLATEAU_SETTINGS = {
    "patience 2": dict(patience=2, factor=0.5),
    "min rel, cooldown": dict(mode="min", threshold=0.1, threshold_mode="rel", patience=1,
                              cooldown=2, factor=0.5),
    "min abs, min_lr": dict(threshold=0.5, threshold_mode="abs", patience=1, min_lr=0.01),
    "max abs, per-group min_lr": dict(mode="max", threshold=0.5, threshold_mode="abs",
                                      patience=0, cooldown=1, min_lr=[0.02, 0.001, 0.3],
                                      factor=0.3),
    "max rel, eps skips small cuts": dict(mode="max", threshold=0.05, patience=1, eps=0.004,
                                          factor=0.9),
    # group 0's first cut, 0.1 - 0.05, equals eps exactly: it is not made
    "a cut equal to eps": dict(factor=0.5, patience=1, eps=0.05),
}


def _plateau_run(lib, settings: dict, metrics, resume_at: int | None = None) -> list:
    """Feed the metrics (every other one as a 0-dim tensor); optionally save and resume."""
    opt = _optimizer(lib)
    scheduler = _module(lib).ReduceLROnPlateau(opt, **settings)
    seen = [_snapshot(opt, [scheduler])]
    for i, value in enumerate(metrics):
        if i == resume_at:
            saved = copy.deepcopy((opt.state_dict(), scheduler.state_dict()))
            opt = _optimizer(lib)
            scheduler = _module(lib).ReduceLROnPlateau(opt, **settings)
            opt.load_state_dict(saved[0])
            scheduler.load_state_dict(saved[1])
        opt.step()
        scheduler.step(lib.tensor(value) if i % 2 else value)
        seen.append(_snapshot(opt, [scheduler]))
    return seen


@pytest.mark.parametrize("name", PLATEAU_SETTINGS)
def test_reduce_on_plateau_equals_torchs(name):
    settings = PLATEAU_SETTINGS[name]
    ours = _plateau_run(disttrain, settings, METRICS)
    assert ours == _plateau_run(torch, settings, METRICS)
    assert len({str(s[0]) for s in ours}) > 2  # it reduced more than once


@pytest.mark.parametrize("name", PLATEAU_SETTINGS)
def test_reduce_on_plateau_resumes_from_state_dicts(name):
    settings = PLATEAU_SETTINGS[name]
    resumed = _plateau_run(disttrain, settings, METRICS, resume_at=15)
    assert resumed == _plateau_run(disttrain, settings, METRICS)
    assert resumed == _plateau_run(torch, settings, METRICS, resume_at=15)


def test_reduce_on_plateau_epoch_and_added_group_as_torch():
    """A scalar min_lr extends to a group added later; step(metric, epoch) warns and jumps."""
    runs = []
    for lib in (disttrain, torch):
        opt = _optimizer(lib)
        scheduler = _module(lib).ReduceLROnPlateau(opt, patience=0, min_lr=0.001)
        seen = []
        for i, value in enumerate([5, 5, 4, 4, 4, 4]):
            if i == 2:
                opt.add_param_group({"params": [_param(lib)], "lr": 0.7})
            epoch = i * 10 if i % 2 else None
            seen.append(_with_warnings(lambda v=value, e=epoch, s=scheduler: s.step(v, e)))
            seen.append(_snapshot(opt, [scheduler]))
        runs.append(seen)
        assert scheduler.min_lrs == [0.001] * 4 and opt.param_groups[3]["lr"] == 0.001
        assert scheduler.last_epoch == 50
    assert runs[0] == runs[1]


# every constructor (or step) error, called with torch's classes and with ours
ERRORS = {
    "not an optimizer": lambda e: e.m.ExponentialLR("sgd", 0.9),
    "MultiplicativeLR not an optimizer": lambda e: e.m.MultiplicativeLR("sgd", lambda x: 1.0),
    "resumed without initial_lr": lambda e: e.m.PolynomialLR(e.opt, last_epoch=3),
    "ConstantLR factor > 1": lambda e: e.m.ConstantLR(e.opt, factor=1.5),
    "ConstantLR factor < 0": lambda e: e.m.ConstantLR(e.opt, factor=-0.1),
    "LinearLR start_factor 0": lambda e: e.m.LinearLR(e.opt, start_factor=0),
    "LinearLR start_factor > 1": lambda e: e.m.LinearLR(e.opt, start_factor=1.2),
    "LinearLR end_factor < 0": lambda e: e.m.LinearLR(e.opt, end_factor=-0.5),
    "LinearLR end_factor > 1": lambda e: e.m.LinearLR(e.opt, end_factor=1.5),
    "MultiplicativeLR lambda count": lambda e: e.m.MultiplicativeLR(e.opt, [abs, abs]),
    "MultiplicativeLR not callable": lambda e: e.m.MultiplicativeLR(e.opt, 0.9),
    "MultiplicativeLR one not callable": lambda e: e.m.MultiplicativeLR(e.opt, [abs, abs, "x"]),
    "warm restarts T_0 0": lambda e: e.m.CosineAnnealingWarmRestarts(e.opt, T_0=0),
    "warm restarts T_0 float": lambda e: e.m.CosineAnnealingWarmRestarts(e.opt, T_0=2.0),
    "warm restarts T_0 str": lambda e: e.m.CosineAnnealingWarmRestarts(e.opt, T_0="5"),
    "warm restarts T_mult 0": lambda e: e.m.CosineAnnealingWarmRestarts(e.opt, 3, T_mult=0),
    "warm restarts T_mult float": lambda e: e.m.CosineAnnealingWarmRestarts(e.opt, 3, 1.5),
    "warm restarts eta_min str": lambda e: e.m.CosineAnnealingWarmRestarts(e.opt, 3,
                                                                           eta_min="0.1"),
    "warm restarts negative epoch": lambda e: e.m.CosineAnnealingWarmRestarts(e.opt, 3).step(-1),
    "OneCycleLR not an optimizer": lambda e: e.m.OneCycleLR(None, 0.1, total_steps=5),
    "OneCycleLR no step count": lambda e: e.m.OneCycleLR(e.opt, 0.1),
    "OneCycleLR epochs only": lambda e: e.m.OneCycleLR(e.opt, 0.1, epochs=3),
    "OneCycleLR total_steps 0": lambda e: e.m.OneCycleLR(e.opt, 0.1, total_steps=0),
    "OneCycleLR total_steps float": lambda e: e.m.OneCycleLR(e.opt, 0.1, total_steps=10.0),
    "OneCycleLR epochs 0": lambda e: e.m.OneCycleLR(e.opt, 0.1, epochs=0, steps_per_epoch=5),
    "OneCycleLR epochs float": lambda e: e.m.OneCycleLR(e.opt, 0.1, epochs=2.0,
                                                        steps_per_epoch=5),
    "OneCycleLR steps_per_epoch < 0": lambda e: e.m.OneCycleLR(e.opt, 0.1, epochs=2,
                                                               steps_per_epoch=-1),
    "OneCycleLR pct_start > 1": lambda e: e.m.OneCycleLR(e.opt, 0.1, 10, pct_start=1.5),
    "OneCycleLR pct_start int": lambda e: e.m.OneCycleLR(e.opt, 0.1, 10, pct_start=0),
    "OneCycleLR anneal_strategy": lambda e: e.m.OneCycleLR(e.opt, 0.1, 10, anneal_strategy="exp"),
    "OneCycleLR max_lr count": lambda e: e.m.OneCycleLR(e.opt, [0.1, 0.2], total_steps=10),
    "OneCycleLR max_momentum count": lambda e: e.m.OneCycleLR(e.opt, 0.1, 10,
                                                              max_momentum=(0.9, 0.9)),
    "OneCycleLR base_momentum count": lambda e: e.m.OneCycleLR(e.opt, 0.1, 10,
                                                               base_momentum=[0.8]),
    "OneCycleLR optimizer without momentum": lambda e: e.m.OneCycleLR(e.plain, 0.1, 10),
    "SequentialLR no scheduler": lambda e: e.m.SequentialLR(e.opt, [], []),
    "SequentialLR not a scheduler": lambda e: e.m.SequentialLR(
        e.opt, [e.m.ExponentialLR(e.opt, 0.9), object()], [2]),
    "SequentialLR ReduceLROnPlateau": lambda e: e.m.SequentialLR(
        e.opt, [e.m.ExponentialLR(e.opt, 0.9), e.m.ReduceLROnPlateau(e.opt)], [2]),
    "SequentialLR other optimizer": lambda e: e.m.SequentialLR(
        e.opt, [e.m.ExponentialLR(e.opt, 0.9), e.m.StepLR(e.other, 2)], [3]),
    "SequentialLR milestone count": lambda e: e.m.SequentialLR(
        e.opt, [e.m.ExponentialLR(e.opt, 0.9), e.m.StepLR(e.opt, 2)], []),
    "ChainedScheduler no scheduler": lambda e: e.m.ChainedScheduler([]),
    "ChainedScheduler not a scheduler": lambda e: e.m.ChainedScheduler(
        [e.m.ExponentialLR(e.opt, 0.9), object()]),
    "ChainedScheduler ReduceLROnPlateau": lambda e: e.m.ChainedScheduler(
        [e.m.ExponentialLR(e.opt, 0.9), e.m.ReduceLROnPlateau(e.opt)]),
    "ChainedScheduler other optimizer": lambda e: e.m.ChainedScheduler(
        [e.m.ExponentialLR(e.opt, 0.9), e.m.StepLR(e.other, 2)]),
    "ChainedScheduler optimizer given differs": lambda e: e.m.ChainedScheduler(
        [e.m.ExponentialLR(e.opt, 0.9)], optimizer=e.other),
    "ReduceLROnPlateau factor 1": lambda e: e.m.ReduceLROnPlateau(e.opt, factor=1.0),
    "ReduceLROnPlateau not an optimizer": lambda e: e.m.ReduceLROnPlateau([e.opt]),
    "ReduceLROnPlateau min_lr count": lambda e: e.m.ReduceLROnPlateau(e.opt, min_lr=[0.1]),
    "ReduceLROnPlateau mode": lambda e: e.m.ReduceLROnPlateau(e.opt, mode="avg"),
    "ReduceLROnPlateau threshold_mode": lambda e: e.m.ReduceLROnPlateau(
        e.opt, threshold_mode="relative"),
    "ReduceLROnPlateau group added to a min_lr list": lambda e: _plateau_after_new_group(e),
    "ReduceLROnPlateau loads an unknown mode": lambda e: _plateau_load_mode(e, "avg"),
}


def _plateau_after_new_group(e):
    scheduler = e.m.ReduceLROnPlateau(e.opt, patience=0, min_lr=[0.0, 0.0, 0.0])
    e.opt.add_param_group({"params": [e.param()]})
    scheduler.step(1.0)
    scheduler.step(2.0)


def _plateau_load_mode(e, mode):
    scheduler = e.m.ReduceLROnPlateau(e.opt)
    scheduler.load_state_dict({**scheduler.state_dict(), "mode": mode})


def _error(lib, make) -> tuple:
    env = SimpleNamespace(
        m=_module(lib), opt=_optimizer(lib), other=_optimizer(lib),
        plain=(torch.optim if lib is torch else optim).Optimizer([_param(lib)], {"lr": 0.1}),
        param=lambda: _param(lib))
    try:
        make(env)
    except Exception as error:  # of whatever type: it must be torch's
        return type(error), str(error)
    pytest.fail(f"{lib.__name__}: no error")


@pytest.mark.parametrize("name", ERRORS)
def test_errors_are_torchs(name):
    assert _error(disttrain, ERRORS[name]) == _error(torch, ERRORS[name])


def test_state_dicts_hold_no_optimizer_and_lambdas_as_torch():
    """The nested schedulers' states, and callable objects' __dict__ but no functions."""
    case = CASES["SequentialLR of lambdas and restarts"]
    states = [_build(lib, case)[1][0].state_dict() for lib in (disttrain, torch)]
    assert _ordered(states[0]) == _ordered(states[1])
    nested = states[0]["_schedulers"]
    assert nested[0]["lr_lambdas"] == [None, None, None]
    assert nested[1]["lr_lambdas"] == [{"factor": 0.9, "calls": 0}] * 3
    assert not any("optimizer" in s for s in [states[0], *nested])
    assert math.isinf(_module(disttrain).ReduceLROnPlateau(_optimizer(disttrain))
                      .state_dict()["mode_worse"])
