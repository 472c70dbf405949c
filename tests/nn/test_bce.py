"""BCELoss and BCEWithLogitsLoss against torch: values, input and target gradients, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
import disttrain.nn.functional as F

TOL = {np.float32: 1e-5, np.float64: 1e-10}


def _run(lib, fn, x, t, *consts):
    """fn on lib's tensors: x and t require grad; returns (loss, x.grad, t.grad)."""
    make = torch.tensor if lib is torch else disttrain.tensor
    xt, tt = make(x, requires_grad=True), make(t, requires_grad=True)
    consts = [None if c is None else make(c) for c in consts]
    loss = fn(xt, tt, *consts)
    loss.backward(make(np.ones(loss.shape, dtype=x.dtype)))
    grads = [xt.grad, tt.grad]
    if lib is torch:
        return [loss.detach().numpy()] + [g.numpy() for g in grads]
    return [loss.detach().numpy()] + [g.numpy() for g in grads]


def _compare(fn_torch, fn_ours, x, t, *consts, dtype):
    theirs = _run(torch, fn_torch, x, t, *consts)
    ours = _run(disttrain, fn_ours, x, t, *consts)
    for what, a, b in zip(("loss", "input grad", "target grad"), ours, theirs):
        assert a.dtype == b.dtype, what
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype], err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_matches_torch(reduction, weighted, dtype):
    rng = np.random.default_rng(0)
    # probabilities including exactly 0 and 1, where the logs clamp at -100
    x = rng.uniform(0.01, 0.99, (6, 3)).astype(dtype)
    x[0, 0], x[1, 1] = 0.0, 1.0
    t = rng.integers(0, 2, (6, 3)).astype(dtype)
    t[2] = [0.25, 0.5, 0.75]  # soft targets
    w = rng.uniform(0.5, 2.0, (3,)).astype(dtype) if weighted else None
    _compare(lambda x, t, w: torch.nn.functional.binary_cross_entropy(x, t, w, reduction=reduction),
             lambda x, t, w: F.binary_cross_entropy(x, t, w, reduction=reduction),
             x, t, w, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted, pos_weighted", [(False, False), (True, False),
                                                    (False, True), (True, True)])
def test_bce_with_logits_matches_torch(reduction, weighted, pos_weighted, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (5, 4)).astype(dtype)
    x[0] = [0.0, 60.0, -60.0, 800.0]  # a zero and logits that would overflow a naive exp
    t = rng.integers(0, 2, (5, 4)).astype(dtype)
    t[1] = [0.1, 0.5, 0.9, 1.0]
    w = rng.uniform(0.5, 2.0, (4,)).astype(dtype) if weighted else None
    pw = rng.uniform(0.5, 3.0, (4,)).astype(dtype) if pos_weighted else None
    _compare(lambda x, t, w, pw: torch.nn.functional.binary_cross_entropy_with_logits(
                 x, t, w, reduction=reduction, pos_weight=pw),
             lambda x, t, w, pw: F.binary_cross_entropy_with_logits(
                 x, t, w, reduction=reduction, pos_weight=pw),
             x, t, w, pw, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_modules_match_torch_and_keep_weights_in_state_dict(dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3)).astype(dtype)
    t = rng.integers(0, 2, (4, 3)).astype(dtype)
    w, pw = np.array([1.0, 2.0, 0.5], dtype), np.array([3.0, 1.0, 0.5], dtype)
    ours = disttrain.nn.BCEWithLogitsLoss(weight=disttrain.tensor(w), reduction="sum",
                                          pos_weight=disttrain.tensor(pw))
    theirs = torch.nn.BCEWithLogitsLoss(weight=torch.tensor(w), reduction="sum",
                                        pos_weight=torch.tensor(pw))
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict()) == ["pos_weight", "weight"]
    np.testing.assert_allclose(ours(disttrain.tensor(x), disttrain.tensor(t)).item(),
                               theirs(torch.tensor(x), torch.tensor(t)).item(), rtol=1e-6)
    p = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(
        disttrain.nn.BCELoss()(disttrain.tensor(p), disttrain.tensor(t)).item(),
        torch.nn.BCELoss()(torch.tensor(p), torch.tensor(t)).item(), rtol=1e-6)


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the point is to compare whatever each raises
        return type(e), str(e).replace("torch.Size([", "(").replace("])", ",)")
    raise AssertionError("no error")


@pytest.mark.parametrize("case", ["bce-range", "bce-nan", "bce-size", "logits-size",
                                  "bad-reduction"])
def test_bce_errors_are_torchs(case):
    def call(lib):
        make, fn = (torch.tensor, torch.nn.functional) if lib is torch else (disttrain.tensor, F)
        two, three = make(np.array([0.5, 1.5])), make(np.array([1.0, 0.0, 1.0]))
        return {
            "bce-range": lambda: fn.binary_cross_entropy(two, make(np.array([1.0, 0.0]))),
            "bce-nan": lambda: fn.binary_cross_entropy(make(np.array([np.nan, 0.5])),
                                                       make(np.array([1.0, 0.0]))),
            "bce-size": lambda: fn.binary_cross_entropy(make(np.array([0.5, 0.5])), three),
            "logits-size": lambda: fn.binary_cross_entropy_with_logits(two, three),
            "bad-reduction": lambda: fn.binary_cross_entropy_with_logits(
                two, make(np.array([1.0, 0.0])), reduction="avg"),
        }[case]
    assert _error(call(disttrain)) == _error(call(torch))
