"""state_dict: torch's structure, bit-identical resume, dtype casts, the flat-array format."""

import json

import numpy as np
import pytest
import torch

import disttrain
import disttrain.optim as optim
from disttrain.optim import state_dict_to_arrays

from .helpers import (
    OURS,
    STATEFUL,
    TORCH,
    Case,
    Run,
    assert_same_state_dict,
    assert_state_dict_like_torchs,
    through_npz,
)

STEPS, RESUME_AT = 20, 10


def _run(case: Case, lib=OURS, steps=RESUME_AT) -> Run:
    run = Run(lib, case.opt_name, case.kwargs, case.second_lr)
    for k in range(steps):
        run.step(k)
    return run


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_state_dict_structure_equals_torchs(case: Case):
    mine, theirs = _run(case).opt.state_dict(), _run(case, TORCH).opt.state_dict()
    assert_state_dict_like_torchs(mine, theirs)


@pytest.mark.parametrize("transport", ["dict", "npz"])
@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_resume_mid_run_gives_the_identical_trajectory(case: Case, transport, tmp_path):
    straight = _run(case, steps=STEPS)

    first = _run(case, steps=RESUME_AT)
    sd = first.opt.state_dict()
    if transport == "npz":
        sd = through_npz(sd, tmp_path)
    resumed = Run(OURS, case.opt_name, case.kwargs, case.second_lr, first.arrays())
    resumed.opt.load_state_dict(sd)
    for k in range(RESUME_AT, STEPS):
        resumed.step(k)

    for a, b in zip(straight.arrays(), resumed.arrays()):
        np.testing.assert_array_equal(a, b)
    assert_same_state_dict(straight.opt.state_dict(), resumed.opt.state_dict())


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_flat_arrays_round_trip_through_npz_bit_identically(case: Case, tmp_path):
    sd = _run(case).opt.state_dict()
    back = through_npz(sd, tmp_path)
    assert_same_state_dict(sd, back)
    if case.opt_name != "SGD":
        assert isinstance(back["param_groups"][0]["betas"], tuple)


def test_flat_arrays_keep_numpy_scalars_and_refuse_what_needs_pickle(tmp_path):
    sd = {"state": {0: {"step": 3.0, "s": np.float32(1.5)}}, "param_groups": [
        {"lr": 0.1, "extra": None, "flag": True, "params": [0]}]}
    back = through_npz(sd, tmp_path)
    assert back["state"][0]["s"] == np.float32(1.5)
    assert type(back["state"][0]["s"]) is np.float32
    assert back["param_groups"] == sd["param_groups"]
    json.loads(state_dict_to_arrays(sd)[1])  # the meta is plain JSON
    with pytest.raises(TypeError, match="without pickle"):
        state_dict_to_arrays({"state": {0: {"f": object()}}, "param_groups": []})


def test_state_dict_is_a_snapshot_and_load_copies():
    run = _run(STATEFUL[0])
    sd = run.opt.state_dict()
    saved = sd["state"][0]["momentum_buffer"].copy()
    run.step(RESUME_AT)
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"], saved)

    other = Run(OURS, "SGD", STATEFUL[0].kwargs, 0.05)
    other.opt.load_state_dict(sd)
    other.step(0)
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"], saved)


def test_load_casts_state_to_the_parameter_dtype_and_restores_hyperparameters():
    sd = _run(STATEFUL[3]).opt.state_dict()  # Adam in float64
    sd["param_groups"][1]["lr"] = 0.123
    params = [disttrain.tensor(np.zeros(s, np.float32), requires_grad=True)
              for s in ((3, 4), (4,), (5,))]
    opt = optim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}])
    opt.load_state_dict(sd)
    assert opt.param_groups[1]["lr"] == 0.123
    assert opt.param_groups[0]["amsgrad"] is True
    assert opt.param_groups[1]["params"][0] is params[2]
    for p in params:
        assert opt.state[p]["exp_avg"].dtype == np.float32
        assert isinstance(opt.state[p]["step"], float)


def test_adamw_keeps_decoupled_weight_decay_after_loading_an_adam_state():
    sd = _run(STATEFUL[3]).opt.state_dict()
    run = Run(OURS, "AdamW", dict(lr=0.05), 0.02)
    run.opt.load_state_dict(sd)
    assert all(g["decoupled_weight_decay"] is True for g in run.opt.param_groups)


def test_indices_count_across_groups_in_order():
    ps = [disttrain.zeros(2, requires_grad=True) for _ in range(4)]
    tps = [torch.zeros(2, requires_grad=True) for _ in range(4)]
    mine = optim.SGD([{"params": ps[:1]}, {"params": ps[1:]}]).state_dict()
    theirs = torch.optim.SGD([{"params": tps[:1]}, {"params": tps[1:]}]).state_dict()
    assert [g["params"] for g in mine["param_groups"]] == [[0], [1, 2, 3]]
    assert mine == theirs  # no state yet: the whole dicts are equal


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_repr_equals_torchs(case: Case):
    mine = repr(Run(OURS, case.opt_name, case.kwargs, case.second_lr).opt)
    assert mine == repr(Run(TORCH, case.opt_name, case.kwargs, case.second_lr).opt)
