"""Adamax, NAdam and RAdam follow torch.optim's implementations: trajectories, state and
state_dict layout (NAdam's float32 mu_product included), resume from our state and from
torch's, the keys older groups lack, and every constructor error."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch

import disttrain
from disttrain import nn
from disttrain.distributed import DistributedDataParallel, LocalCommunicator, ShardedOptimizer

from .helpers import (
    LARGE_SHAPES,
    OURS,
    TORCH,
    GroupCase,
    GroupRun,
    assert_closure_steps_match_torch,
    assert_resume_is_identical,
    assert_same_state_dict,
    assert_state_dict_like_torchs,
    grid,
    initial_values,
)

STEPS, RESUME_AT = 24, 10
# float64 runs agree to rounding: torch fuses some a + b * c (lerp, add with alpha), numpy
# rounds twice, a difference of a few ulps
ATOL64 = 1e-12






# the second group has its own lr, betas and eps (and momentum_decay): different numbers
# through the same code; RAdam's rho_t passes 5 at step 6 (both beta2s), so each run takes
# the unrectified update first and the rectified one after
SECOND = {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6}
ADAMAX = [GroupCase("Adamax", dict(lr=0.05, **s), SECOND)
          for s in grid(weight_decay=[0, 1e-2], maximize=[False, True])]
NADAM = [GroupCase("NAdam", dict(lr=0.05, **s), dict(SECOND, momentum_decay=0.02))
         for s in grid(weight_decay=[0, 1e-2], decoupled_weight_decay=[False, True],
                        momentum_decay=[4e-3, 0.05], maximize=[False, True])]
RADAM = [GroupCase("RAdam", dict(lr=0.05, **s), SECOND)
         for s in grid(weight_decay=[0, 1e-2], decoupled_weight_decay=[False, True],
                        maximize=[False, True])]
# every constructor default, and foreach=True (torch then runs its multi-tensor code: the
# same math in another order, so the same numbers to rounding)
DEFAULTS = [GroupCase(name, {}, {"lr": 0.01}) for name in ("Adamax", "NAdam", "RAdam")]
FOREACH = [GroupCase(c.opt_name, dict(c.kwargs, foreach=True), c.second)
           for c in (ADAMAX[-1], NADAM[-1], RADAM[-1])]
CASES = ADAMAX + NADAM + RADAM + DEFAULTS + FOREACH
# for the state_dict tests: every option on, per optimizer
STATEFUL = [ADAMAX[-1], NADAM[-1], RADAM[-1]]




def torch_state_as_numpy(sd: dict) -> dict:
    """torch's state_dict in our types: arrays, and step a Python float (mu_product is
    left a 0-d array, as a converted checkpoint would hold it)."""
    state = {i: {k: float(v.item()) if k == "step" else v.detach().numpy().copy()
                 for k, v in values.items()} for i, values in sd["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}


def test_the_grids_cover_every_combination():
    assert len({c.id for c in ADAMAX}) == 4
    assert len({c.id for c in NADAM}) == 16
    assert len({c.id for c in RADAM}) == 8
    assert len({c.id for c in CASES}) == len(CASES)
    for case in STATEFUL:
        assert all(v for k, v in case.kwargs.items() if k != "momentum_decay")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float64_parameters_match_torch_after_every_step(case: GroupCase):
    ours, ref = GroupRun(OURS, case), GroupRun(TORCH, case)
    start_c = ours.arrays()[2]
    for k in range(STEPS):
        ours.step(k)
        ref.step(k)
        for mine, theirs in zip(ours.arrays(), ref.arrays()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=ATOL64, err_msg=f"step {k}")
        if k == 0:  # c had no gradient: skipped, unchanged, and given no state
            np.testing.assert_array_equal(ours.arrays()[2], start_c)
            assert ours.params[2] not in ours.opt.state
            assert ref.params[2] not in ref.opt.state
    assert not np.array_equal(ours.arrays()[2], start_c)
    # and the step counts say c skipped every third step, as torch's
    assert ours.opt.state[ours.params[2]]["step"] == ref.opt.state[ref.params[2]]["step"] == (
        STEPS - len(range(0, STEPS, 3)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_stays_float32_and_matches_torch(case: GroupCase):
    values = initial_values(np.float32)
    ours = GroupRun(OURS, case, values).steps(0, STEPS)
    ref = GroupRun(TORCH, case, values).steps(0, STEPS)
    for mine, theirs in zip(ours.arrays(), ref.arrays()):
        assert mine.dtype == np.float32
        # torch fuses a + b * c (lerp, add with alpha) where numpy rounds twice
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)
    for state in ours.opt.state.values():
        for key, value in state.items():
            if key in ("step", "mu_product"):
                assert isinstance(value, float)
            else:
                assert value.dtype == np.float32


@pytest.mark.parametrize("case", [c for c in CASES if "foreach" not in c.kwargs and all(
    c.kwargs.get(k) for k in ("weight_decay", "maximize")) and c.kwargs.get(
        "momentum_decay", 4e-3) == 4e-3], ids=lambda c: c.id)
def test_large_parameters_match_torch(case: GroupCase):
    """Above the workspace's SMALL size, so its reused arrays are exercised (every slot:
    weight decay and maximize on, L2 and decoupled)."""
    values = initial_values(shapes=LARGE_SHAPES)
    ours, ref = GroupRun(OURS, case, values), GroupRun(TORCH, case, values)
    for k in range(8):
        ours.step(k)
        ref.step(k)
        for mine, theirs in zip(ours.arrays(), ref.arrays()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=ATOL64, err_msg=f"step {k}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nadam_mu_product_is_torchs_float32_down_to_underflow(dtype):
    """torch multiplies mu_product, a float32 tensor, by each mu: the same float32 number
    every step, through the denormals (mu is about 0.45) to 0."""
    products, params = {}, {}
    for lib in (OURS, TORCH):
        p = lib.leaf(np.linspace(-1, 1, 3).astype(dtype))
        opt = lib.optim.NAdam([p], lr=0.01)
        products[lib] = []
        for _ in range(200):
            opt.zero_grad()
            (((p - 0.5) ** 2).sum() + lib.tanh(p).sum()).backward()
            opt.step()
            value = opt.state[p]["mu_product"]
            products[lib].append(value if lib is OURS else value.item())
        params[lib] = lib.numpy(p)
    assert all(isinstance(v, float) for v in products[OURS])
    assert products[OURS] == products[TORCH]
    assert any(0 < v < np.finfo(np.float32).tiny for v in products[OURS])
    assert products[OURS][-1] == 0.0
    tol = ATOL64 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(params[OURS], params[TORCH], rtol=0, atol=tol)


@pytest.mark.parametrize("name", ["Adamax", "NAdam", "RAdam"])
def test_step_runs_the_closure_with_grad_enabled_and_returns_its_loss(name):
    case = next(c for c in CASES if c.opt_name == name)
    assert_closure_steps_match_torch(lambda lib: GroupRun(lib, case))


# -- state_dict ---------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [0, 1, RESUME_AT])
@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_state_dict_structure_equals_torchs(case: GroupCase, steps):
    mine = GroupRun(OURS, case).steps(0, steps).opt.state_dict()
    theirs = GroupRun(TORCH, case).steps(0, steps).opt.state_dict()
    assert_state_dict_like_torchs(mine, theirs)
    # no state before the first step; after it, none for c (its grad was None)
    assert list(mine["state"]) == ([] if steps == 0 else [0, 1] if steps == 1 else [0, 1, 2])
    for index, state in mine["state"].items():
        for key, value in state.items():
            if key == "mu_product":  # bit for bit: torch's float32 product
                assert isinstance(value, float)
                assert value == theirs["state"][index][key].item()
            elif key != "step":
                assert value.dtype == np.float64


@pytest.mark.parametrize("transport", ["dict", "npz"])
@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_resume_mid_run_gives_the_identical_trajectory(case: GroupCase, transport, tmp_path):
    assert_resume_is_identical(case, transport, tmp_path, RESUME_AT, STEPS)


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_loading_torchs_state_dict_continues_torchs_trajectory(case: GroupCase):
    ref = GroupRun(TORCH, case).steps(0, RESUME_AT)
    ours = GroupRun(OURS, case, ref.arrays())
    ours.opt.load_state_dict(torch_state_as_numpy(ref.opt.state_dict()))
    assert_state_dict_like_torchs(ours.opt.state_dict(), ref.opt.state_dict())
    for state in ours.opt.state.values():  # a loaded 0-d array becomes our number at once
        assert all(isinstance(state[k], float) for k in ("step", "mu_product") if k in state)
    for k in range(RESUME_AT, STEPS):
        ours.step(k)
        ref.step(k)
        for mine, theirs in zip(ours.arrays(), ref.arrays()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=ATOL64, err_msg=f"step {k}")
    assert_state_dict_like_torchs(ours.opt.state_dict(), ref.opt.state_dict())


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.id)
def test_groups_saved_without_later_keys_get_torchs_defaults(case: GroupCase):
    """A state_dict from an older torch lacks the newer options: loading fills them in,
    with torch's values and in torch's order."""
    groups = {}
    for lib in (OURS, TORCH):
        sd = GroupRun(lib, case).steps(0, 2).opt.state_dict()
        for group in sd["param_groups"]:
            for key in [k for k in group if k not in (
                    "params", "lr", "betas", "eps", "weight_decay", "momentum_decay")]:
                del group[key]
        fresh = GroupRun(lib, case)
        fresh.opt.load_state_dict(sd)
        groups[lib] = fresh.opt.state_dict()["param_groups"]
    assert groups[OURS] == groups[TORCH]
    assert [list(g) for g in groups[OURS]] == [list(g) for g in groups[TORCH]]
    assert "maximize" in groups[OURS][0]


@pytest.mark.parametrize("case", STATEFUL + DEFAULTS, ids=lambda c: c.id)
def test_repr_equals_torchs(case: GroupCase):
    assert repr(GroupRun(OURS, case).opt) == repr(GroupRun(TORCH, case).opt)


def test_nadam_state_survives_a_one_rank_sharded_optimizer():
    """ShardedOptimizer carries NAdam's mu_product (a number) like step."""
    def model():
        disttrain.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()

    rng = np.random.default_rng(0)
    x, y = disttrain.tensor(rng.standard_normal((8, 5))), disttrain.tensor(
        rng.integers(0, 3, 8))
    plain_model, sharded_model = model(), model()
    plain = disttrain.optim.NAdam(plain_model.parameters(), lr=0.01, weight_decay=0.01)
    ddp = DistributedDataParallel(sharded_model, LocalCommunicator())
    sharded = ShardedOptimizer(disttrain.optim.NAdam(sharded_model.parameters(), lr=0.01,
                                                     weight_decay=0.01), ddp)
    for net, opt in ((plain_model, plain), (ddp, sharded)):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(sharded_model.parameters(), plain_model.parameters()):
        np.testing.assert_array_equal(a.data, b.data)
    got, want = sharded.state_dict(), plain.state_dict()
    assert_same_state_dict(got, want)
    assert all(isinstance(s["mu_product"], float) for s in got["state"].values())


# -- errors -------------------------------------------------------------------------------
def _make(lib, name, params=None, **kwargs):
    if params is None:
        params = [lib.leaf(np.zeros(2, np.float32))]
    return getattr(lib.optim, name)(params, **kwargs)


ERRORS = {}
for _name in ("Adamax", "NAdam", "RAdam"):
    ERRORS.update({
        f"{_name} lr": (_name, dict(lr=-0.1)),
        f"{_name} lr nan": (_name, dict(lr=float("nan"))),
        f"{_name} eps": (_name, dict(eps=-1e-8)),
        f"{_name} beta0": (_name, dict(betas=(1.0, 0.999))),
        f"{_name} beta1": (_name, dict(betas=(0.9, -0.1))),
        f"{_name} weight_decay": (_name, dict(weight_decay=-1e-2)),
        f"{_name} first of several": (_name, dict(weight_decay=-1, betas=(0.9, 2.0), eps=-1)),
        f"{_name} empty params": (_name, dict(params=[])),
    })
ERRORS["NAdam momentum_decay"] = ("NAdam", dict(momentum_decay=-4e-3))
ERRORS["NAdam momentum_decay after the rest"] = ("NAdam", dict(momentum_decay=-1,
                                                               weight_decay=-1))


@pytest.mark.parametrize("name", ERRORS)
def test_constructor_error_matches_torch(name):
    opt_name, kwargs = ERRORS[name]
    with pytest.raises(Exception) as theirs:
        _make(TORCH, opt_name, **kwargs)
    with pytest.raises(Exception) as mine:
        _make(OURS, opt_name, **kwargs)
    assert type(mine.value) is type(theirs.value) is ValueError
    assert str(mine.value) == str(theirs.value)


@pytest.mark.parametrize("opt_name", ["Adamax", "NAdam", "RAdam"])
@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
def test_options_we_cannot_honour_are_refused(opt_name, flag):
    with pytest.raises(NotImplementedError, match="not supported"):
        _make(OURS, opt_name, **{flag: True})


@pytest.mark.parametrize("opt_name", ["Adamax", "NAdam", "RAdam"])
def test_defaults_and_signature_are_torchs(opt_name):
    mine, theirs = _make(OURS, opt_name).defaults, _make(TORCH, opt_name).defaults
    assert mine == theirs and list(mine) == list(theirs)
    # the same positional order, and the same keyword-only arguments
    def arguments(cls):
        params = list(inspect.signature(cls.__init__).parameters.values())
        return [(p.name, p.kind, p.default) for p in params]

    assert arguments(getattr(OURS.optim, opt_name)) == arguments(getattr(torch.optim, opt_name))
