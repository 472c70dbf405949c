"""Losses against torch: values and gradients of the input for every reduction and option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from .helpers import TORCH_DTYPE, assert_close

DTYPES = [np.float64, np.float32]
REDUCTIONS = ["mean", "sum", "none"]


def _run(ours_fn, torch_fn, x, target, dtype, seed=0):
    """Loss and d loss / d input in both libraries; a random output gradient for 'none'."""
    x = np.asarray(x, dtype=dtype)
    x_ours = disttrain.tensor(x, requires_grad=True)
    x_torch = torch.tensor(x, requires_grad=True)
    target_torch = torch.from_numpy(target) if isinstance(target, np.ndarray) else target
    loss, loss_torch = ours_fn(x_ours, target), torch_fn(x_torch, target_torch)
    assert loss.dtype == np.dtype(dtype)
    assert_close(loss, loss_torch, dtype)
    grad = np.random.default_rng(seed).standard_normal(loss.shape).astype(dtype)
    loss.backward(grad)
    loss_torch.backward(torch.from_numpy(grad))
    assert_close(x_ours.grad, x_torch.grad, dtype)


def _logits(*shape, seed=1):
    return np.random.default_rng(seed).normal(0, 2, size=shape)


def _targets(n, classes, seed=2):
    return np.random.default_rng(seed).integers(0, classes, size=n)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_module(dtype, reduction):
    _run(nn.CrossEntropyLoss(reduction=reduction), torch.nn.CrossEntropyLoss(reduction=reduction),
         _logits(16, 5), _targets(16, 5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [
    {"ignore_index": 1}, {"ignore_index": -100}, {"label_smoothing": 0.1},
    {"label_smoothing": 0.2, "ignore_index": 3}, {"weight": [0.5, 1.0, 2.0, 0.1, 1.5]},
    {"weight": [0.5, 1.0, 2.0, 0.1, 1.5], "ignore_index": 0, "label_smoothing": 0.3},
], ids=str)
def test_cross_entropy_options(dtype, reduction, options):
    target = _targets(16, 5)
    target[[2, 7]] = options.get("ignore_index", -100)  # some rows to ignore
    ours_kw, torch_kw = dict(options), dict(options)
    if "weight" in options:
        ours_kw["weight"] = np.asarray(options["weight"], dtype=dtype)
        torch_kw["weight"] = torch.tensor(options["weight"], dtype=TORCH_DTYPE[np.dtype(dtype)])
    _run(lambda x, t: F.cross_entropy(x, t, reduction=reduction, **ours_kw),
         lambda x, t: torch.nn.functional.cross_entropy(x, t, reduction=reduction, **torch_kw),
         _logits(16, 5), target, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_spatial_and_single_sample(reduction):
    def pair(x, t):
        _run(lambda a, b: F.cross_entropy(a, b, reduction=reduction),
             lambda a, b: torch.nn.functional.cross_entropy(a, b, reduction=reduction),
             x, t, np.float64)
    pair(_logits(2, 4, 3, 5), np.random.default_rng(0).integers(0, 4, size=(2, 3, 5)))
    pair(_logits(4), np.array(2))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_cross_entropy_with_class_probabilities(reduction, label_smoothing):
    probs = np.random.default_rng(3).dirichlet(np.ones(5), size=8)
    _run(lambda x, t: F.cross_entropy(x, t, reduction=reduction, label_smoothing=label_smoothing),
         lambda x, t: torch.nn.functional.cross_entropy(x, t, reduction=reduction,
                                                        label_smoothing=label_smoothing),
         _logits(8, 5), probs, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(dtype, reduction):
    logp = np.log(np.random.default_rng(0).dirichlet(np.ones(4), size=6))
    target = _targets(6, 4)
    target[0] = -100
    _run(nn.NLLLoss(reduction=reduction), torch.nn.NLLLoss(reduction=reduction), logp, target,
         dtype)


def test_cross_entropy_accepts_a_disttrain_target_and_a_large_batch():
    x = _logits(256, 10)
    target = _targets(256, 10)
    _run(lambda a, t: nn.CrossEntropyLoss()(a, disttrain.tensor(t)),
         torch.nn.CrossEntropyLoss(), x, target, np.float32)


def test_cross_entropy_errors_match_torch():
    x = _logits(4, 3)
    cases = [
        (np.array([0, 1, 3, 0]), IndexError),  # a class out of range
        (np.array([0, 1, 2]), ValueError),  # batch sizes differ
    ]
    for target, error in cases:
        with pytest.raises(error) as theirs:
            torch.nn.functional.cross_entropy(torch.tensor(x), torch.from_numpy(target))
        with pytest.raises(error) as ours:
            F.cross_entropy(disttrain.tensor(x), target)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError) as theirs:
        torch.nn.CrossEntropyLoss(reduction="avg")(torch.tensor(x), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError) as ours:
        nn.CrossEntropyLoss(reduction="avg")
    assert str(ours.value) == str(theirs.value)


def test_cross_entropy_weight_is_a_buffer_in_state_dict():
    weight = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert list(nn.CrossEntropyLoss(weight=weight).state_dict()) == list(
        torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weight)).state_dict())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss(dtype, reduction):
    target = np.random.default_rng(5).normal(size=(6, 3)).astype(dtype)
    _run(nn.MSELoss(reduction=reduction),
         lambda x, t: torch.nn.MSELoss(reduction=reduction)(x, t), _logits(6, 3), target, dtype)


def test_mse_loss_gradient_reaches_a_target_that_requires_grad():
    a = np.random.default_rng(0).normal(size=(4, 2))
    b = np.random.default_rng(1).normal(size=(4, 2))
    ours_a, ours_b = disttrain.tensor(a, requires_grad=True), disttrain.tensor(b,
                                                                               requires_grad=True)
    torch_a, torch_b = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    F.mse_loss(ours_a, ours_b).backward()
    torch.nn.functional.mse_loss(torch_a, torch_b).backward()
    assert_close(ours_b.grad, torch_b.grad, np.float64)


def test_mse_loss_warns_about_broadcasting_as_torch_does():
    with pytest.warns(UserWarning, match="Using a target size"):
        F.mse_loss(disttrain.ones(4, 1), disttrain.ones(4))


def _regression_pair(shape, seed=5):
    """Predictions and float targets with differences on both sides of 1 (Huber's delta)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, size=shape), rng.normal(0, 1.5, size=shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_l1_loss(dtype, reduction):
    x, target = _regression_pair((6, 3))
    _run(nn.L1Loss(reduction=reduction), torch.nn.L1Loss(reduction=reduction), x,
         target.astype(dtype), dtype)
    _run(lambda a, t: F.l1_loss(a, t, reduction=reduction),
         lambda a, t: torch.nn.functional.l1_loss(a, t, reduction=reduction), x,
         target.astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_loss(dtype, reduction, delta):
    x, target = _regression_pair((8, 2))
    differences = np.abs(x - target)
    assert (differences < delta).any() and (differences > delta).any()  # both branches
    _run(nn.HuberLoss(reduction=reduction, delta=delta),
         torch.nn.HuberLoss(reduction=reduction, delta=delta), x, target.astype(dtype), dtype)
    _run(lambda a, t: F.huber_loss(a, t, reduction=reduction, delta=delta),
         lambda a, t: torch.nn.functional.huber_loss(a, t, reduction=reduction, delta=delta),
         x, target.astype(dtype), dtype)


@pytest.mark.parametrize("name", ["l1_loss", "huber_loss"])
def test_kinks_have_torchs_gradient(name):
    """At a zero difference and at |difference| = delta exactly, torch's subgradients."""
    x = np.array([[0.0, 1.0, -1.0, 2.0, -3.0, 0.5]])
    _run(lambda a, t: getattr(F, name)(a, t, reduction="sum"),
         lambda a, t: getattr(torch.nn.functional, name)(a, t, reduction="sum"), x,
         np.zeros_like(x), np.float64)


def test_regression_losses_reach_a_target_that_requires_grad():
    a, b = _regression_pair((4, 2))
    for name in ("l1_loss", "huber_loss"):
        ours_a, ours_b = (disttrain.tensor(v, requires_grad=True) for v in (a, b))
        torch_a, torch_b = (torch.tensor(v, requires_grad=True) for v in (a, b))
        getattr(F, name)(ours_a, ours_b).backward()
        getattr(torch.nn.functional, name)(torch_a, torch_b).backward()
        assert_close(ours_a.grad, torch_a.grad, np.float64)
        assert_close(ours_b.grad, torch_b.grad, np.float64)


def test_regression_losses_warn_and_refuse_as_torch_does():
    for name in ("l1_loss", "huber_loss"):
        with pytest.warns(UserWarning, match="Using a target size"):
            getattr(F, name)(disttrain.ones(4, 1), disttrain.ones(4))
    for delta in (0.0, -1.0):
        with pytest.raises(RuntimeError) as theirs:
            torch.nn.functional.huber_loss(torch.ones(2), torch.zeros(2), delta=delta)
        with pytest.raises(RuntimeError) as ours:
            F.huber_loss(disttrain.ones(2), disttrain.zeros(2), delta=delta)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError) as theirs:
        torch.nn.L1Loss(reduction="avg")(torch.ones(2), torch.zeros(2))
    with pytest.raises(ValueError) as ours:
        nn.L1Loss(reduction="avg")
    assert str(ours.value) == str(theirs.value)
