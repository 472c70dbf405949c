"""Shared by the optim tests: one deterministic problem run with disttrain and with torch."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import disttrain
import disttrain.optim as optim
from disttrain.optim import state_dict_from_arrays, state_dict_to_arrays

SHAPES = {"w": (3, 4), "b": (4,), "c": (5,)}
# above disttrain.optim.workspace.SMALL elements, so the reused workspace arrays are exercised
LARGE_SHAPES = {"w": (70, 80), "b": (80,), "c": (4500,)}
SKIPPED_EVERY = 3  # c gets no gradient on steps 0, 3, 6...: its grad is None, the step skips it


def initial_values(dtype=np.float64, shapes=SHAPES) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes.values()]


class Lib:
    """The few functions the loss needs, from disttrain or torch."""

    def __init__(self, module):
        self.module = module
        self.optim = optim if module is disttrain else torch.optim

    def leaf(self, array):
        if self.module is disttrain:
            return disttrain.tensor(array.copy(), requires_grad=True)
        return torch.tensor(array.copy(), requires_grad=True)

    def const(self, array):
        return self.module.tensor(array)

    def tanh(self, x):
        return self.module.tanh(x)

    def numpy(self, t) -> np.ndarray:
        return t.detach().numpy().copy() if self.module is torch else t.data.copy()


OURS, TORCH = Lib(disttrain), Lib(torch)


def loss(lib: Lib, params, step: int):
    """Quadratic plus tanh terms that change with the step, so the gradients do too."""
    w, b, c = params
    coef = np.linspace(0.5, 1.5, w.numel()).reshape(w.shape).astype(lib.numpy(w).dtype)
    total = (lib.const(coef) * (w - 0.3) ** 2).sum() + lib.tanh(w * (0.5 + 0.1 * step)).sum()
    total = total + ((b - 1.0) ** 2).sum() * 0.3 + lib.tanh(b * w.sum()).sum()
    if step % SKIPPED_EVERY:
        total = total + (c ** 2).sum() * 0.2 + lib.tanh(c * (2.0 - 0.05 * step)).sum()
    return total


@dataclass
class Run:
    """One optimizer over the three parameters, in two groups (c has its own lr)."""

    lib: Lib
    opt_name: str
    kwargs: dict
    second_lr: float
    values: list = field(default_factory=initial_values)

    def __post_init__(self):
        self.params = [self.lib.leaf(v) for v in self.values]
        groups = [{"params": self.params[:2]}, {"params": self.params[2:], "lr": self.second_lr}]
        self.opt = getattr(self.lib.optim, self.opt_name)(groups, **self.kwargs)

    def step(self, k: int) -> None:
        self.opt.zero_grad()
        loss(self.lib, self.params, k).backward()
        self.opt.step()

    def arrays(self) -> list[np.ndarray]:
        return [self.lib.numpy(p) for p in self.params]


@dataclass(frozen=True)
class Case:
    """An optimizer and one setting of its hyperparameters."""

    opt_name: str
    kwargs: dict
    second_lr: float

    @property
    def id(self) -> str:
        return self.opt_name + "-" + "-".join(f"{k}={v}" for k, v in self.kwargs.items())


def _grid(**axes):
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def sgd_rejects(s: dict) -> bool:
    """torch's rule: Nesterov needs momentum and no dampening."""
    return s["nesterov"] and (s["momentum"] <= 0 or s["dampening"] != 0)


SGD_SETTINGS = _grid(momentum=[0, 0.9], dampening=[0, 0.5], weight_decay=[0, 1e-2],
                     nesterov=[False, True], maximize=[False, True])
ADAM_SETTINGS = _grid(amsgrad=[False, True], weight_decay=[0, 1e-2], maximize=[False, True])

# the registry: every optimizer with every setting the trajectory tests run
REGISTRY = (
    [Case("SGD", dict(lr=0.02, **s), 0.01) for s in SGD_SETTINGS]
    + [Case("Adam", dict(lr=0.05, **s), 0.02) for s in ADAM_SETTINGS]
    + [Case("AdamW", dict(lr=0.05, **s), 0.02) for s in ADAM_SETTINGS]
)
VALID = [c for c in REGISTRY if not (c.opt_name == "SGD" and sgd_rejects(c.kwargs))]
REJECTED = [c for c in REGISTRY if c not in VALID]

# one stateful setting per optimizer, for the state_dict tests
STATEFUL = [
    Case("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2), 0.05),
    Case("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), 0.05),
    Case("SGD", dict(lr=0.1), 0.05),
    Case("Adam", dict(lr=0.05, amsgrad=True, weight_decay=1e-2), 0.02),
    Case("AdamW", dict(lr=0.05, maximize=True), 0.02),
]


def through_npz(sd, tmp_path):
    arrays, meta = state_dict_to_arrays(sd)
    np.savez(tmp_path / "optim.npz", meta=np.array(meta), **arrays)
    with np.load(tmp_path / "optim.npz", allow_pickle=False) as npz:
        return state_dict_from_arrays(npz, str(npz["meta"]))


def assert_same_state_dict(a, b):
    """Equal structure, types and values, arrays bit for bit."""
    assert list(a["state"]) == list(b["state"])
    for index in a["state"]:
        assert list(a["state"][index]) == list(b["state"][index])
        for key, value in a["state"][index].items():
            other = b["state"][index][key]
            assert type(value) is type(other)
            if isinstance(value, np.ndarray):
                assert value.dtype == other.dtype
                np.testing.assert_array_equal(value, other)
            else:
                assert value == other
    assert a["param_groups"] == b["param_groups"]
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        assert [type(v) for v in ga.values()] == [type(v) for v in gb.values()]


def assert_state_dict_like_torchs(mine: dict, theirs: dict) -> None:
    """Our state_dict has torch's structure: groups (keys in order, values, indices), state
    per index with torch's keys in order, and torch's values (step as a float)."""
    assert mine["param_groups"] == theirs["param_groups"]  # keys, order, values, indices
    for g_mine, g_theirs in zip(mine["param_groups"], theirs["param_groups"]):
        assert list(g_mine) == list(g_theirs)
    assert list(mine["state"]) == list(theirs["state"])
    for index, state in mine["state"].items():
        assert list(state) == list(theirs["state"][index])
        for key, value in state.items():
            if key == "step":  # torch keeps a 0-d float32 tensor, we keep a float
                assert isinstance(value, float) and value == theirs["state"][index][key].item()
            else:
                np.testing.assert_allclose(value, theirs["state"][index][key].numpy(),
                                           rtol=1e-12, atol=1e-12)


def assert_closure_steps_match_torch(make_run) -> None:
    """Three step(closure) calls under no_grad, in both libraries: the closure runs with
    grad enabled, step returns its loss, and losses and parameters are torch's."""
    results = {}
    for lib in (OURS, TORCH):
        run = make_run(lib)

        def closure(lib=lib, run=run):
            assert lib.module.is_grad_enabled()
            run.opt.zero_grad()
            value = loss(lib, run.params, 1)
            value.backward()
            return value

        with lib.module.no_grad():
            results[lib] = [float(run.opt.step(closure).item()) for _ in range(3)]
        results[lib].append(run.arrays())
    assert results[OURS][:3] == pytest.approx(results[TORCH][:3], abs=1e-12)
    for mine, theirs in zip(results[OURS][3], results[TORCH][3]):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10)


# -- two parameter groups whose second sets any hyperparameters (RMSprop, Adagrad, Adamax,
# NAdam, RAdam tests) ------------------------------------------------------------------------
def grid(**axes) -> list[dict]:
    """Every combination of the axes' values, as keyword dicts."""
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


@dataclass(frozen=True)
class GroupCase:
    """An optimizer, the first group's settings and what the second group sets otherwise."""

    opt_name: str
    kwargs: dict
    second: dict

    @property
    def id(self) -> str:
        return self.opt_name + "-" + "-".join(f"{k}={v}" for k, v in self.kwargs.items())


class GroupRun:
    """One optimizer over w, b (first group) and c (second group, no grad every 3rd step)."""

    def __init__(self, lib: Lib, case: GroupCase, values=None):
        self.lib = lib
        self.params = [lib.leaf(v) for v in (values or initial_values())]
        groups = [{"params": self.params[:2]}, {"params": self.params[2:], **case.second}]
        self.opt = getattr(lib.optim, case.opt_name)(groups, **case.kwargs)

    def step(self, k: int) -> None:
        self.opt.zero_grad()
        loss(self.lib, self.params, k).backward()
        self.opt.step()

    def steps(self, start: int, stop: int) -> GroupRun:
        for k in range(start, stop):
            self.step(k)
        return self

    def arrays(self) -> list[np.ndarray]:
        return [self.lib.numpy(p) for p in self.params]


def assert_resume_is_identical(case: GroupCase, transport: str, tmp_path, resume_at: int,
                               steps: int) -> None:
    """A run stopped at resume_at and resumed from its state_dict (in memory, or through
    the npz checkpoint) ends as the run that never stopped: parameters and state."""
    straight = GroupRun(OURS, case).steps(0, steps)
    first = GroupRun(OURS, case).steps(0, resume_at)
    sd = first.opt.state_dict()
    if transport == "npz":
        sd = through_npz(sd, tmp_path)
    resumed = GroupRun(OURS, case, first.arrays())
    resumed.opt.load_state_dict(sd)
    resumed.steps(resume_at, steps)
    for a, b in zip(straight.arrays(), resumed.arrays()):
        np.testing.assert_array_equal(a, b)
    assert_same_state_dict(straight.opt.state_dict(), resumed.opt.state_dict())
