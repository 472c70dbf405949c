"""SmoothL1Loss, KLDivLoss and SoftMarginLoss against torch: values, input and target
gradients for every reduction and option, on differences at the kinks, zeros and large
magnitudes; reprs, warnings and every argument error's type and text."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from .helpers import same_error

DTYPES = [np.float64, np.float32]
REDUCTIONS = ["mean", "sum", "none"]
# float64: the losses agree with torch to 1e-13, so 1e-12 relative; float32: a few ulps
# per element, summed in a different order, so 1e-5 relative and 1e-6 absolute.
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
ATOL = {np.float64: 0.0, np.float32: 1e-6}


def assert_matches(ours, theirs, dtype):
    """Same shape and values within the dtype's tolerance; NaN where torch has NaN."""
    ours = ours.data if isinstance(ours, disttrain.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL[dtype], atol=ATOL[dtype])


def compare(ours_fn, torch_fn, x, target, dtype, target_grad=True):
    """Loss, d loss / d input and (if target_grad) d loss / d target in both libraries."""
    x, target = np.asarray(x, dtype=dtype), np.asarray(target, dtype=dtype)
    ours = [disttrain.tensor(a, requires_grad=True) for a in (x, target)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, target)]
    ours[1].requires_grad, theirs[1].requires_grad = target_grad, target_grad
    with warnings.catch_warnings():  # kl_div's "mean" warning: test_kl_div_mean_warns
        warnings.simplefilter("ignore", UserWarning)
        loss, loss_torch = ours_fn(*ours), torch_fn(*theirs)
    assert loss.dtype == np.dtype(dtype)
    assert_matches(loss, loss_torch, dtype)
    grad = np.random.default_rng(0).standard_normal(loss.shape).astype(dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # kl_div's NaN target gradients
        loss.backward(grad)
    loss_torch.backward(torch.from_numpy(grad))
    assert_matches(ours[0].grad, theirs[0].grad, dtype)
    if target_grad:
        assert_matches(ours[1].grad, theirs[1].grad, dtype)


# -- SmoothL1Loss -----------------------------------------------------------------------
def _smooth_l1_pair(beta):
    """Inputs and targets whose differences are 0, exactly +-beta, just either side of it,
    +-50 and +-1000, plus a random spread."""
    exact = [0.0, beta, -beta, beta * 0.999, -beta * 1.001, 50.0, -50.0, 1000.0, -1000.0]
    rng = np.random.default_rng(1)
    diff = np.concatenate([exact, rng.normal(0, 2, size=27)])
    target = rng.normal(0, 1, size=diff.size).round(2)  # so target + diff is exact
    return (target + diff).reshape(4, 9), target.reshape(4, 9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.5, 0.0])
def test_smooth_l1_loss_matches_torch(dtype, reduction, beta):
    x, target = _smooth_l1_pair(beta)
    compare(nn.SmoothL1Loss(reduction=reduction, beta=beta),
            torch.nn.SmoothL1Loss(reduction=reduction, beta=beta), x, target, dtype)
    compare(lambda a, t: F.smooth_l1_loss(a, t, reduction=reduction, beta=beta),
            lambda a, t: TF.smooth_l1_loss(a, t, reduction=reduction, beta=beta),
            x, target, dtype)


def test_smooth_l1_loss_gradient_at_the_kinks_is_torchs_exactly():
    """d / beta inside, sign(d) outside: +-1 at |d| == beta, 0 at d == 0 (and at beta=0)."""
    for beta, diff, expected in [(2.0, [2.0, -2.0, 0.0, 1.0], [1.0, -1.0, 0.0, 0.5]),
                                 (0.0, [0.0, 3.0, -3.0], [0.0, 1.0, -1.0])]:
        x = disttrain.tensor(np.array(diff), requires_grad=True)
        F.smooth_l1_loss(x, disttrain.zeros(len(diff), dtype=np.float64), reduction="sum",
                         beta=beta).backward()
        np.testing.assert_array_equal(x.grad.data, expected)


def test_smooth_l1_loss_errors_and_warning_match_torch():
    same_error(lambda: F.smooth_l1_loss(disttrain.ones(2), disttrain.zeros(2), beta=-1.0),
                lambda: TF.smooth_l1_loss(torch.ones(2), torch.zeros(2), beta=-1.0),
                RuntimeError)
    same_error(lambda: F.smooth_l1_loss(disttrain.ones(2), disttrain.zeros(2), reduction="avg"),
                lambda: TF.smooth_l1_loss(torch.ones(2), torch.zeros(2), reduction="avg"),
                ValueError)
    # the module refuses at construction, as every disttrain loss (torch: at the call)
    same_error(lambda: nn.SmoothL1Loss(reduction="avg"),
                lambda: torch.nn.SmoothL1Loss(reduction="avg")(torch.ones(2), torch.zeros(2)),
                ValueError)
    with pytest.warns(UserWarning, match="Using a target size"):  # then the shape error
        same_error(lambda: F.smooth_l1_loss(disttrain.ones(2), disttrain.zeros(3)),
                    lambda: TF.smooth_l1_loss(torch.ones(2), torch.zeros(3)), RuntimeError)
    with pytest.warns(UserWarning) as theirs:
        TF.smooth_l1_loss(torch.ones(4, 1), torch.ones(4))
    with pytest.warns(UserWarning) as ours:
        F.smooth_l1_loss(disttrain.ones(4, 1), disttrain.ones(4))
    # torch prints torch.Size([4, 1]), disttrain the tuple (4, 1), as its mse/l1 losses
    assert "Using a target size" in str(ours[0].message) and len(ours) == len(theirs)


# -- KLDivLoss --------------------------------------------------------------------------
def _log_probs(shape, seed):
    """log_softmax of scores with some large ones: log-probabilities down to about -1000."""
    scores = np.random.default_rng(seed).normal(0, 2, size=shape)
    scores.flat[:3] = [1000.0, -50.0, 0.0]
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


KL_REDUCTIONS = ["mean", "sum", "none", "batchmean"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (6,)], ids=str)
def test_kl_div_matches_torch(dtype, reduction, shape):
    """Probability targets with exact zeros: torch's target gradient there is NaN (its
    xlogy backward is 0 / 0), and so is ours."""
    x, target = _log_probs(shape, 2), np.exp(_log_probs(shape, 3))
    target.flat[1::4] = 0.0
    compare(nn.KLDivLoss(reduction=reduction), torch.nn.KLDivLoss(reduction=reduction),
            x, target, dtype)
    compare(lambda a, t: F.kl_div(a, t, reduction=reduction),
            lambda a, t: TF.kl_div(a, t, reduction=reduction), x, target, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
def test_kl_div_with_log_target_matches_torch(dtype, reduction):
    x, target = _log_probs((4, 5), 4), _log_probs((4, 5), 5)
    compare(nn.KLDivLoss(reduction=reduction, log_target=True),
            torch.nn.KLDivLoss(reduction=reduction, log_target=True), x, target, dtype)
    compare(lambda a, t: F.kl_div(a, t, reduction=reduction, log_target=True),
            lambda a, t: TF.kl_div(a, t, reduction=reduction, log_target=True),
            x, target, dtype)


def test_kl_div_batchmean_of_a_scalar_and_broadcast_shapes_match_torch():
    compare(lambda a, t: F.kl_div(a, t, reduction="batchmean"),
            lambda a, t: TF.kl_div(a, t, reduction="batchmean"), np.array(-0.7),
            np.array(0.4), np.float64)
    compare(lambda a, t: F.kl_div(a, t, reduction="none"),
            lambda a, t: TF.kl_div(a, t, reduction="none"), _log_probs((3,), 6),
            np.exp(_log_probs((2, 3), 7)), np.float64)


def test_kl_div_mean_warns_as_torch_does():
    for call in (lambda lib, F_: F_.kl_div(lib.ones(2, 3), lib.ones(2, 3)),
                 lambda lib, F_: lib.nn.KLDivLoss()(lib.ones(2, 3), lib.ones(2, 3))):
        with pytest.warns(UserWarning) as theirs:
            call(torch, TF)
        with pytest.warns(UserWarning) as ours:
            call(disttrain, F)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no other reduction warns
        for reduction in ("sum", "none", "batchmean"):
            F.kl_div(disttrain.ones(2, 3), disttrain.ones(2, 3), reduction=reduction)


def test_kl_div_reduction_errors_match_torch():
    same_error(lambda: F.kl_div(disttrain.ones(2), disttrain.ones(2), reduction="avg"),
                lambda: TF.kl_div(torch.ones(2), torch.ones(2), reduction="avg"), ValueError)
    same_error(lambda: nn.KLDivLoss(reduction="avg"),
                lambda: torch.nn.KLDivLoss(reduction="avg")(torch.ones(2), torch.ones(2)),
                ValueError)
    assert nn.KLDivLoss(reduction="batchmean").reduction == "batchmean"
    same_error(lambda: F.kl_div(disttrain.ones(2), disttrain.ones(3), reduction="sum"),
                lambda: TF.kl_div(torch.ones(2), torch.ones(3), reduction="sum"), RuntimeError)


# -- SoftMarginLoss ---------------------------------------------------------------------
def _margin_pair():
    """Inputs with target * input = 0, +-1, +-50 and +1000 (torch's value is finite
    there; at -1000 it overflows, see test_soft_margin_loss_stays_finite), and +-1 targets."""
    rng = np.random.default_rng(8)
    x = np.concatenate([[0.0, 1.0, -1.0, 50.0, -50.0, 1000.0], rng.normal(0, 3, size=18)])
    target = np.where(rng.random(x.size) < 0.5, -1.0, 1.0)
    target[:6] = 1.0
    return x.reshape(4, 6), target.reshape(4, 6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_margin_loss_matches_torch(dtype, reduction):
    x, target = _margin_pair()
    compare(nn.SoftMarginLoss(reduction=reduction),
            torch.nn.SoftMarginLoss(reduction=reduction), x, target, dtype, target_grad=False)
    compare(lambda a, t: F.soft_margin_loss(a, t, reduction=reduction),
            lambda a, t: TF.soft_margin_loss(a, t, reduction=reduction), x, target, dtype,
            target_grad=False)


def test_soft_margin_loss_stays_finite_where_torchs_overflows():
    """-target * input = 1000: torch's log1p(exp(1000)) is inf with a NaN gradient; the
    loss is 1000 (to the last bit) with gradient -target."""
    x = np.array([-1000.0, 1000.0])
    target = np.array([1.0, -1.0])
    theirs = TF.soft_margin_loss(torch.tensor(x), torch.tensor(target), reduction="none")
    assert torch.isinf(theirs).all()
    x_ours = disttrain.tensor(x, requires_grad=True)
    loss = F.soft_margin_loss(x_ours, target, reduction="none")
    np.testing.assert_array_equal(loss.data, [1000.0, 1000.0])
    loss.sum().backward()
    np.testing.assert_array_equal(x_ours.grad.data, -target)


def test_soft_margin_loss_errors_match_torch():
    same_error(lambda: F.soft_margin_loss(disttrain.ones(2), disttrain.ones(3)),
                lambda: TF.soft_margin_loss(torch.ones(2), torch.ones(3)), RuntimeError)
    same_error(lambda: F.soft_margin_loss(disttrain.ones(3, 1), disttrain.ones(3)),
                lambda: TF.soft_margin_loss(torch.ones(3, 1), torch.ones(3)), RuntimeError)
    same_error(lambda: F.soft_margin_loss(disttrain.ones(2),
                                           disttrain.ones(2, requires_grad=True)),
                lambda: TF.soft_margin_loss(torch.ones(2), torch.ones(2, requires_grad=True)),
                RuntimeError)
    same_error(lambda: nn.SoftMarginLoss(reduction="avg"),
                lambda: torch.nn.SoftMarginLoss(reduction="avg")(torch.ones(2), torch.ones(2)),
                ValueError)
    with disttrain.no_grad():  # only a graph needs the target not to require grad
        F.soft_margin_loss(disttrain.ones(2), disttrain.ones(2, requires_grad=True))


@pytest.mark.parametrize("ours,theirs", [
    (nn.SmoothL1Loss(), torch.nn.SmoothL1Loss()),
    (nn.SmoothL1Loss(reduction="sum", beta=0.5), torch.nn.SmoothL1Loss(reduction="sum",
                                                                       beta=0.5)),
    (nn.KLDivLoss(), torch.nn.KLDivLoss()),
    (nn.KLDivLoss(reduction="batchmean", log_target=True),
     torch.nn.KLDivLoss(reduction="batchmean", log_target=True)),
    (nn.SoftMarginLoss(), torch.nn.SoftMarginLoss()),
], ids=lambda m: repr(m))
def test_repr_and_attributes_match_torch(ours, theirs):
    assert repr(ours) == repr(theirs)
    for name in ("reduction", "beta", "log_target"):
        assert getattr(ours, name, None) == getattr(theirs, name, None), name
