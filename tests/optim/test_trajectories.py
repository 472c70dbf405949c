"""Every optimizer in the registry follows torch.optim's trajectory, step by step."""

import numpy as np
import pytest
import torch

import disttrain
import disttrain.optim as optim

from .helpers import (
    LARGE_SHAPES,
    OURS,
    REGISTRY,
    REJECTED,
    TORCH,
    VALID,
    Case,
    Run,
    assert_closure_steps_match_torch,
    initial_values,
)

STEPS = 20


def test_registry_covers_every_combination():
    assert len(REGISTRY) == 32 + 8 + 8
    assert len(REJECTED) == 12  # nesterov with momentum 0 or with dampening


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_parameters_match_torch_after_every_step(case: Case):
    ours = Run(OURS, case.opt_name, case.kwargs, case.second_lr)
    ref = Run(TORCH, case.opt_name, case.kwargs, case.second_lr)
    start_c = ours.arrays()[2]
    for k in range(STEPS):
        ours.step(k)
        ref.step(k)
        for mine, theirs in zip(ours.arrays(), ref.arrays()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10, err_msg=f"step {k}")
        if k == 0:  # c had no gradient: skipped, unchanged, and given no state
            np.testing.assert_array_equal(ours.arrays()[2], start_c)
            assert ours.params[2] not in ours.opt.state
    assert not np.array_equal(ours.arrays()[2], start_c)


@pytest.mark.parametrize("case", [c for c in VALID if c.opt_name == "SGD" or (
    c.kwargs["weight_decay"] and c.kwargs["amsgrad"])], ids=lambda c: c.id)
def test_large_parameters_match_torch(case: Case):
    values = initial_values(shapes=LARGE_SHAPES)
    ours = Run(OURS, case.opt_name, case.kwargs, case.second_lr, values)
    ref = Run(TORCH, case.opt_name, case.kwargs, case.second_lr, values)
    for k in range(6):
        ours.step(k)
        ref.step(k)
        for mine, theirs in zip(ours.arrays(), ref.arrays()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10, err_msg=f"step {k}")


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.id)
def test_rejected_settings_raise_torchs_error(case: Case):
    with pytest.raises(ValueError) as theirs:
        torch.optim.SGD([torch.zeros(2, requires_grad=True)], **case.kwargs)
    with pytest.raises(ValueError) as mine:
        optim.SGD([disttrain.zeros(2, requires_grad=True)], **case.kwargs)
    assert str(mine.value) == str(theirs.value) == (
        "Nesterov momentum requires a momentum and zero dampening")


@pytest.mark.parametrize("case", [
    Case("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2), 0.05),
    Case("Adam", dict(lr=0.05, amsgrad=True, weight_decay=1e-2, maximize=True), 0.02),
    Case("AdamW", dict(lr=0.05), 0.02),
], ids=lambda c: c.id)
def test_float32_stays_float32_and_matches_torch(case: Case):
    values = initial_values(np.float32)
    ours = Run(OURS, case.opt_name, case.kwargs, case.second_lr, values)
    ref = Run(TORCH, case.opt_name, case.kwargs, case.second_lr, values)
    for k in range(STEPS):
        ours.step(k)
        ref.step(k)
    for mine, theirs in zip(ours.arrays(), ref.arrays()):
        assert mine.dtype == np.float32
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    for state in ours.opt.state.values():
        for key, value in state.items():
            assert key == "step" or value.dtype == np.float32


def test_step_updates_parameter_arrays_in_place():
    ours = Run(OURS, "Adam", dict(lr=0.05, amsgrad=True), 0.02)
    arrays = [p.data for p in ours.params]
    for k in range(3):
        ours.step(k)
    assert all(p.data is a for p, a in zip(ours.params, arrays))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_step_runs_the_closure_with_grad_enabled_and_returns_its_loss(name):
    assert_closure_steps_match_torch(lambda lib: Run(lib, name, dict(lr=0.05), 0.02))


def test_functional_sgd_fills_buffers_and_works_on_plain_arrays():
    p, g = np.ones(3), np.full(3, 2.0)
    bufs = [None]
    optim.sgd.sgd([p], [g], bufs, lr=0.5, momentum=0.9, dampening=0.5, weight_decay=0,
                  nesterov=False, maximize=False)
    np.testing.assert_array_equal(bufs[0], g)  # first step: a copy of g, no dampening
    assert bufs[0] is not g
    np.testing.assert_array_equal(p, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(g, [2.0, 2.0, 2.0])  # the gradient itself is never touched
