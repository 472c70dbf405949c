"""RMSprop and Adagrad follow torch.optim's single-tensor (foreach=False) implementations:
trajectories, state and state_dict layout, resume, and every constructor error."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import (
    LARGE_SHAPES,
    OURS,
    TORCH,
    GroupCase,
    GroupRun,
    assert_closure_steps_match_torch,
    assert_resume_is_identical,
    assert_state_dict_like_torchs,
    grid,
    initial_values,
)

STEPS, RESUME_AT = 24, 10






# every option that changes the math, in every combination; the second group changes the
# numbers only (a group's own initial_accumulator_value is ignored by torch: tested too)
RMSPROP = [GroupCase("RMSprop", dict(lr=0.01, foreach=False, **s),
                {"lr": 0.004, "alpha": 0.9, "eps": 1e-4})
           for s in grid(momentum=[0, 0.9], centered=[False, True], weight_decay=[0, 1e-2],
                          maximize=[False, True])]
ADAGRAD = [GroupCase("Adagrad", dict(lr=0.1, foreach=False, **s),
                {"lr": 0.05, "eps": 1e-6, "lr_decay": 2 * s["lr_decay"],
                 "initial_accumulator_value": 0.7})
           for s in grid(lr_decay=[0, 0.05], weight_decay=[0, 1e-2],
                          initial_accumulator_value=[0, 0.1], maximize=[False, True])]
CASES = RMSPROP + ADAGRAD
# for the state_dict tests: the most state and the least
STATEFUL = [RMSPROP[-1], RMSPROP[0], ADAGRAD[-1]]  # every option on; none; every option on




def test_the_grids_cover_every_combination():
    assert len({c.id for c in RMSPROP}) == len({c.id for c in ADAGRAD}) == 16
    assert all(v for k, v in STATEFUL[0].kwargs.items() if k != "foreach")
    assert all(v for k, v in STATEFUL[2].kwargs.items() if k != "foreach")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float64_parameters_match_torch_after_every_step(case: GroupCase):
    ours, ref = GroupRun(OURS, case), GroupRun(TORCH, case)
    start_c = ours.arrays()[2]
    for k in range(STEPS):
        ours.step(k)
        ref.step(k)
        for mine, theirs in zip(ours.arrays(), ref.arrays()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10, err_msg=f"step {k}")
        if k == 0:  # c had no gradient: skipped, unchanged, its state untouched
            np.testing.assert_array_equal(ours.arrays()[2], start_c)
            c_state = ours.opt.state.get(ours.params[2])
            if case.opt_name == "RMSprop":
                assert c_state is None
            else:  # Adagrad made it in the constructor
                assert c_state["step"] == 0.0
                np.testing.assert_array_equal(c_state["sum"], case.kwargs[
                    "initial_accumulator_value"])
    assert not np.array_equal(ours.arrays()[2], start_c)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_stays_float32_and_matches_torch(case: GroupCase):
    values = initial_values(np.float32)
    ours = GroupRun(OURS, case, values).steps(0, STEPS)
    ref = GroupRun(TORCH, case, values).steps(0, STEPS)
    for mine, theirs in zip(ours.arrays(), ref.arrays()):
        assert mine.dtype == np.float32
        # torch fuses a + b * c (add with alpha, addcmul) where numpy rounds twice
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
    for state in ours.opt.state.values():
        for key, value in state.items():
            assert isinstance(value, float) if key == "step" else value.dtype == np.float32


@pytest.mark.parametrize("case", [c for c in CASES if c.kwargs["weight_decay"]],
                         ids=lambda c: c.id)
def test_large_parameters_match_torch(case: GroupCase):
    """Above the workspace's SMALL size, so its reused arrays are exercised."""
    values = initial_values(shapes=LARGE_SHAPES)
    ours, ref = GroupRun(OURS, case, values), GroupRun(TORCH, case, values)
    for k in range(6):
        ours.step(k)
        ref.step(k)
        for mine, theirs in zip(ours.arrays(), ref.arrays()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10, err_msg=f"step {k}")


def test_adagrad_starts_a_late_group_from_the_default_accumulator():
    runs = {}
    for lib in (OURS, TORCH):
        first, late = lib.leaf(np.ones(3)), lib.leaf(np.linspace(-1, 1, 4))
        opt = lib.optim.Adagrad([first], lr=0.1, initial_accumulator_value=0.3)
        opt.add_param_group({"params": [late], "initial_accumulator_value": 5.0})
        assert late not in opt.state  # no state until its first step, as torch
        for _ in range(3):
            opt.zero_grad()
            ((first * late.sum()) ** 2).sum().backward()
            opt.step()
        runs[lib] = [lib.numpy(first), lib.numpy(late), opt.state[late]["sum"]]
    np.testing.assert_allclose(runs[OURS][2], runs[TORCH][2].numpy(), rtol=1e-12)
    for mine, theirs in zip(runs[OURS][:2], runs[TORCH][:2]):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["RMSprop", "Adagrad"])
def test_step_runs_the_closure_with_grad_enabled_and_returns_its_loss(name):
    case = next(c for c in CASES if c.opt_name == name)
    assert_closure_steps_match_torch(lambda lib: GroupRun(lib, case))


# -- state_dict ---------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [0, RESUME_AT])
@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_state_dict_structure_equals_torchs(case: GroupCase, steps):
    mine = GroupRun(OURS, case).steps(0, steps).opt.state_dict()
    theirs = GroupRun(TORCH, case).steps(0, steps).opt.state_dict()
    assert_state_dict_like_torchs(mine, theirs)
    assert mine["state"] or (steps == 0 and case.opt_name == "RMSprop")
    for state in mine["state"].values():
        assert all(value.dtype == np.float64 for key, value in state.items() if key != "step")


@pytest.mark.parametrize("transport", ["dict", "npz"])
@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_resume_mid_run_gives_the_identical_trajectory(case: GroupCase, transport, tmp_path):
    assert_resume_is_identical(case, transport, tmp_path, RESUME_AT, STEPS)


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_repr_equals_torchs(case: GroupCase):
    assert repr(GroupRun(OURS, case).opt) == repr(GroupRun(TORCH, case).opt)


# -- errors -------------------------------------------------------------------------------
def _make(lib, name, params=None, **kwargs):
    if params is None:
        params = [lib.leaf(np.zeros(2, np.float32))]
    return getattr(lib.optim, name)(params, **kwargs)


ERRORS = {
    "RMSprop lr": ("RMSprop", dict(lr=-0.1)),
    "RMSprop lr nan": ("RMSprop", dict(lr=float("nan"))),
    "RMSprop eps": ("RMSprop", dict(eps=-1e-8)),
    "RMSprop momentum": ("RMSprop", dict(momentum=-0.9)),
    "RMSprop weight_decay": ("RMSprop", dict(weight_decay=-1e-2)),
    "RMSprop alpha": ("RMSprop", dict(alpha=-0.5)),
    "RMSprop first of several": ("RMSprop", dict(alpha=-1, momentum=-1, eps=-1)),
    "RMSprop empty params": ("RMSprop", dict(params=[])),
    "Adagrad lr": ("Adagrad", dict(lr=-0.1)),
    "Adagrad lr_decay": ("Adagrad", dict(lr_decay=-1e-3)),
    "Adagrad weight_decay": ("Adagrad", dict(weight_decay=-1e-2)),
    "Adagrad initial_accumulator_value": ("Adagrad", dict(initial_accumulator_value=-0.1)),
    "Adagrad eps": ("Adagrad", dict(eps=-1e-10)),
    "Adagrad first of several": ("Adagrad", dict(eps=-1, weight_decay=-1, lr_decay=-1)),
    "Adagrad fused and differentiable": ("Adagrad", dict(fused=True, differentiable=True)),
    "Adagrad fused and foreach": ("Adagrad", dict(fused=True, foreach=True)),
    "Adagrad fused, empty params": ("Adagrad", dict(params=[], fused=True)),
}


@pytest.mark.parametrize("name", ERRORS)
def test_constructor_error_matches_torch(name):
    opt_name, kwargs = ERRORS[name]
    with pytest.raises(Exception) as theirs:
        _make(TORCH, opt_name, **kwargs)
    with pytest.raises(Exception) as mine:
        _make(OURS, opt_name, **kwargs)
    assert type(mine.value) is type(theirs.value)
    assert str(mine.value) == str(theirs.value)


@pytest.mark.parametrize("opt_name, kwargs", [
    ("RMSprop", dict(capturable=True)),
    ("RMSprop", dict(differentiable=True)),
    ("Adagrad", dict(differentiable=True)),
    ("Adagrad", dict(fused=True)),
])
def test_options_we_cannot_honour_are_refused(opt_name, kwargs):
    with pytest.raises(NotImplementedError, match="not supported"):
        _make(OURS, opt_name, **kwargs)


def test_defaults_are_torchs():
    for name in ("RMSprop", "Adagrad"):
        mine = _make(OURS, name).defaults
        theirs = _make(TORCH, name).defaults
        assert mine == theirs and list(mine) == list(theirs)
