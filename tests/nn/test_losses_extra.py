"""MarginRankingLoss, HingeEmbeddingLoss, CosineEmbeddingLoss, TripletMarginLoss,
PoissonNLLLoss, GaussianNLLLoss, MultiLabelSoftMarginLoss, MultiMarginLoss, and the
distances CosineSimilarity and PairwiseDistance against torch: values and the gradient of
every floating input for every reduction and option, at the kinks, zero vectors, ties and
broadcast shapes; reprs, attributes and every argument error's type and text."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from .helpers import TORCH_DTYPE, same_error

DTYPES = [np.float64, np.float32]
REDUCTIONS = ["mean", "sum", "none"]
# float64: the losses are torch's formulas op for op, so they agree to a few ulps (gradients
# of up to 1e12 where a variance or a norm is floored at eps: relative); float32: a few ulps
# per element, summed in a different order.
RTOL = {np.float64: 1e-10, np.float32: 1e-5}
ATOL = {np.float64: 1e-12, np.float32: 1e-6}


def assert_matches(ours, theirs, dtype):
    """Same shape, dtype and values within the dtype's tolerance; NaN where torch has NaN."""
    ours = ours.data if isinstance(ours, disttrain.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL[dtype], atol=ATOL[dtype])


def compare(ours_fn, torch_fn, inputs, dtype, requires_grad=None):
    """The loss in both libraries, and then every input's gradient for the same random output
    gradient. Floating inputs are cast to dtype and require grad unless requires_grad (one
    flag per input) says otherwise; an input torch gives no gradient must get none here."""
    arrays = [np.asarray(a, dtype=dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
              for a in inputs]
    if requires_grad is None:
        requires_grad = [a.dtype.kind == "f" for a in arrays]
    ours = [disttrain.tensor(a, requires_grad=g) for a, g in zip(arrays, requires_grad)]
    theirs = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, requires_grad)]
    loss, loss_torch = ours_fn(*ours), torch_fn(*theirs)
    assert_matches(loss, loss_torch, dtype)
    grad = np.random.default_rng(0).standard_normal(loss.shape).astype(loss.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # torch's NaN gradients, made alike
        loss.backward(grad)
    loss_torch.backward(torch.from_numpy(grad))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if not b.requires_grad:
            continue
        assert (a.grad is None) == (b.grad is None), i
        if b.grad is not None:
            assert_matches(a.grad, b.grad, dtype)
    return loss, loss_torch


def both(ours_module, torch_module, ours_fn, torch_fn, inputs, dtype, requires_grad=None):
    """compare for the module and for the functional."""
    compare(ours_module, torch_module, inputs, dtype, requires_grad)
    compare(ours_fn, torch_fn, inputs, dtype, requires_grad)


def _signs(shape, rng):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


# -- MarginRankingLoss ------------------------------------------------------------------
def _ranking(margin, seed=0):
    """(6, 5) scores on an eighths grid (so the kinks are exact) with targets of both signs;
    a row sits at the kink, -target * (input1 - input2) + margin == 0 exactly."""
    rng = np.random.default_rng(seed)
    x1 = rng.integers(-16, 17, size=(6, 5)) / 8
    target = _signs((6, 5), rng)
    x2 = rng.integers(-16, 17, size=(6, 5)) / 8
    x2[0] = x1[0] - target[0] * margin
    unclamped = -target * (x1 - x2) + margin
    assert (unclamped > 0).any() and (unclamped < 0).any() and (unclamped == 0).any()
    assert (target == 1).any() and (target == -1).any()
    return x1, x2, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.5, -0.25])
def test_margin_ranking_loss_matches_torch(dtype, reduction, margin):
    """The target gets a gradient too: torch's loss is composed of differentiable ops."""
    both(nn.MarginRankingLoss(margin, reduction), torch.nn.MarginRankingLoss(margin,
                                                                             reduction=reduction),
         lambda a, b, t: F.margin_ranking_loss(a, b, t, margin, reduction),
         lambda a, b, t: TF.margin_ranking_loss(a, b, t, margin, reduction=reduction),
         _ranking(margin), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking_loss_broadcasts_and_takes_0d_as_torch(reduction):
    rng = np.random.default_rng(1)
    for inputs in ([rng.normal(size=(4, 1)), rng.normal(size=(1, 5)), _signs((4, 5), rng)],
                   [rng.normal(size=(4, 5)), rng.normal(size=(4, 5)), _signs((1, 5), rng)],
                   [np.array(0.3), np.array(-0.2), np.array(-1.0)]):
        compare(lambda a, b, t: F.margin_ranking_loss(a, b, t, 0.1, reduction),
                lambda a, b, t: TF.margin_ranking_loss(a, b, t, 0.1, reduction=reduction),
                inputs, np.float64)


# -- HingeEmbeddingLoss -----------------------------------------------------------------
def _hinge(margin, seed=2):
    """Distances on an eighths grid, some exactly at the margin (the kink), with targets 1,
    -1 and two that are neither (torch gives those both terms)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-16, 25, size=(6, 5)) / 8
    target = _signs((6, 5), rng)
    x[0, :3] = margin
    target[0, :3] = -1.0
    target[1, :2] = [0.5, 0.0]
    return x, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [1.0, 0.5, -0.5])
def test_hinge_embedding_loss_matches_torch(dtype, reduction, margin):
    """The target only chooses the term: a target that requires grad gets none."""
    both(nn.HingeEmbeddingLoss(margin, reduction),
         torch.nn.HingeEmbeddingLoss(margin, reduction=reduction),
         lambda x, t: F.hinge_embedding_loss(x, t, margin, reduction),
         lambda x, t: TF.hinge_embedding_loss(x, t, margin, reduction=reduction),
         _hinge(margin), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hinge_embedding_loss_broadcasts_and_keeps_the_input_dtype_as_torch(reduction):
    rng = np.random.default_rng(3)
    compare(lambda x, t: F.hinge_embedding_loss(x, t, reduction=reduction),
            lambda x, t: TF.hinge_embedding_loss(x, t, reduction=reduction),
            [rng.normal(size=(4, 1)), _signs((5,), rng)], np.float64)
    # a float64 target only chooses: the loss stays float32, as torch's
    x, target = _hinge(1.0)
    x_ours, x_torch = (lib.tensor(x.astype(np.float32), requires_grad=True)
                       for lib in (disttrain, torch))
    ours = F.hinge_embedding_loss(x_ours, disttrain.tensor(target), reduction=reduction)
    theirs = TF.hinge_embedding_loss(x_torch, torch.tensor(target), reduction=reduction)
    assert_matches(ours, theirs, np.float32)


# -- CosineEmbeddingLoss ----------------------------------------------------------------
def _cosine_pairs(seed=4):
    """(7, 5) pairs: a zero row in each input (only EPSILON keeps the cosine finite), equal
    rows (cos 1), opposite rows (cos -1), random rows; targets 1, -1 and a 0 (no term)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    x1[0] = 0.0
    x2[1] = 0.0
    x2[2] = x1[2]
    x2[3] = -2 * x1[3]
    target = _signs(7, rng)
    target[:4] = [1.0, -1.0, 1.0, -1.0]
    target[4] = 0.0
    return x1, x2, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.25, -0.5])
def test_cosine_embedding_loss_matches_torch(dtype, reduction, margin):
    both(nn.CosineEmbeddingLoss(margin, reduction),
         torch.nn.CosineEmbeddingLoss(margin, reduction=reduction),
         lambda a, b, t: F.cosine_embedding_loss(a, b, t, margin, reduction),
         lambda a, b, t: TF.cosine_embedding_loss(a, b, t, margin, reduction=reduction),
         _cosine_pairs(), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", [1.0, -1.0])
def test_cosine_embedding_loss_of_one_pair_and_broadcast_rows_matches_torch(reduction, target):
    x1, x2, targets = _cosine_pairs(5)
    for inputs in ([x1[5], x2[5], np.array(target)], [x1[:1], x2, targets]):
        compare(lambda a, b, t: F.cosine_embedding_loss(a, b, t, -0.1, reduction),
                lambda a, b, t: TF.cosine_embedding_loss(a, b, t, -0.1, reduction=reduction),
                inputs, np.float64)


# -- PairwiseDistance -------------------------------------------------------------------
P_NORMS = [2.0, 1.0, 3.0, 0.5, math.inf, -1.0]


def _distance_pairs(seed=6):
    """(5, 4) pairs with an equal row: with eps = 0 its difference is the zero vector,
    where torch's norm passes no gradient."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    x2[0] = x1[0]
    return x1, x2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", P_NORMS)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("eps", [1e-6, 0.0, 0.5])
def test_pairwise_distance_matches_torch(dtype, p, keepdim, eps):
    if p < 1 and eps == 0.0:  # torch's own gradient is NaN there (0 ** negative)
        return
    both(nn.PairwiseDistance(p, eps, keepdim), torch.nn.PairwiseDistance(p, eps, keepdim),
         lambda a, b: F.pairwise_distance(a, b, p, eps, keepdim),
         lambda a, b: TF.pairwise_distance(a, b, p, eps, keepdim), _distance_pairs(), dtype)


@pytest.mark.parametrize("keepdim", [False, True])
def test_pairwise_distance_of_broadcast_1d_and_0d_inputs_matches_torch(keepdim):
    rng = np.random.default_rng(7)
    for inputs in ([rng.normal(size=(5, 4)), rng.normal(size=(4,))],
                   [rng.normal(size=(1, 4)), rng.normal(size=(3, 1, 4))],
                   [rng.normal(size=(4,)), rng.normal(size=(4,))],
                   [np.array(0.3), np.array(-1.2)]):
        compare(lambda a, b: F.pairwise_distance(a, b, 3.0, keepdim=keepdim),
                lambda a, b: TF.pairwise_distance(a, b, 3.0, keepdim=keepdim), inputs,
                np.float64)


def test_pairwise_distance_p0_counts_as_torch_but_passes_zero_gradients():
    """p = 0 counts the nonzero differences. torch's backward gives no gradient at all
    (None); disttrain's norm gives zeros, which is the same update."""
    x1, x2 = _distance_pairs()
    ours = [disttrain.tensor(a, requires_grad=True) for a in (x1, x2)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x1, x2)]
    loss, loss_torch = F.pairwise_distance(*ours, p=0), TF.pairwise_distance(*theirs, p=0)
    assert_matches(loss, loss_torch, np.float64)
    loss.sum().backward()
    loss_torch.sum().backward()
    for a, b in zip(ours, theirs):
        assert b.grad is None
        np.testing.assert_array_equal(a.grad.data, np.zeros_like(x1))


def test_pairwise_distance_of_integers_is_float32_as_torch():
    x1, x2 = np.arange(6).reshape(2, 3), np.ones((2, 3), dtype=np.int64)
    assert_matches(F.pairwise_distance(disttrain.tensor(x1), disttrain.tensor(x2)),
                   TF.pairwise_distance(torch.tensor(x1), torch.tensor(x2)), np.float32)


# -- CosineSimilarity -------------------------------------------------------------------
def _similarity_pairs(seed=8):
    """(4, 5) pairs with a zero vector and one whose norm is below eps (1e-8) in x1, in
    rows and in columns, for dim 0 and 1 alike."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    x1[1] = 0.0
    x1[2] *= 1e-10
    x1[:, 0] = 0.0
    x1[:, 1] *= 1e-10
    x2[3] = x1[3]
    return x1, x2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [1, 0, -1])
@pytest.mark.parametrize("eps", [1e-8, 0.5])
def test_cosine_similarity_matches_torch(dtype, dim, eps):
    """A norm below eps is floored in value only: its gradient still reaches the input."""
    both(nn.CosineSimilarity(dim, eps), torch.nn.CosineSimilarity(dim, eps),
         lambda a, b: F.cosine_similarity(a, b, dim, eps),
         lambda a, b: TF.cosine_similarity(a, b, dim, eps), _similarity_pairs(), dtype)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_cosine_similarity_of_broadcast_and_3d_inputs_matches_torch(dim):
    """The norms are taken of the broadcast inputs: x1's row is measured once per row of x2
    along dim 0."""
    rng = np.random.default_rng(9)
    compare(lambda a, b: F.cosine_similarity(a, b, dim),
            lambda a, b: TF.cosine_similarity(a, b, dim),
            [rng.normal(size=(1, 4, 3)), rng.normal(size=(2, 4, 1))], np.float64)


def test_cosine_similarity_of_1d_0d_mixed_dtype_and_integer_inputs_matches_torch():
    rng = np.random.default_rng(10)
    compare(lambda a, b: F.cosine_similarity(a, b, 0), lambda a, b: TF.cosine_similarity(a, b, 0),
            [rng.normal(size=5), rng.normal(size=5)], np.float64)
    compare(lambda a, b: F.cosine_similarity(a, b, 0), lambda a, b: TF.cosine_similarity(a, b, 0),
            [np.array(-0.5), np.array(2.0)], np.float64)
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    for a, b in ((x1.astype(np.float32), x2), (np.arange(12).reshape(3, 4), x2),
                 (x2.astype(np.float32), np.arange(12).reshape(3, 4))):
        ours = F.cosine_similarity(disttrain.tensor(a), disttrain.tensor(b))
        theirs = TF.cosine_similarity(torch.tensor(a), torch.tensor(b))
        assert_matches(ours, theirs, np.float32 if theirs.dtype == torch.float32 else np.float64)


# -- TripletMarginLoss ------------------------------------------------------------------
def _triplets(seed=11):
    """(6, 4) triplets: a positive equal to its anchor (the distance is the eps vector's
    norm, and with swap an exact tie of d(a, n) and d(p, n)), a negative nearer the
    positive than the anchor (swap picks it), a negative equal to its anchor."""
    rng = np.random.default_rng(seed)
    anchor, positive, negative = (rng.normal(size=(6, 4)) for _ in range(3))
    positive[0] = anchor[0]
    negative[1] = positive[1] + 0.01
    negative[2] = anchor[2]
    return anchor, positive, negative


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, math.inf])
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_margin_loss_matches_torch(dtype, reduction, p, swap):
    both(nn.TripletMarginLoss(0.7, p, 1e-6, swap, reduction),
         torch.nn.TripletMarginLoss(0.7, p, 1e-6, swap, reduction=reduction),
         lambda a, b, c: F.triplet_margin_loss(a, b, c, 0.7, p, 1e-6, swap, reduction),
         lambda a, b, c: TF.triplet_margin_loss(a, b, c, 0.7, p, 1e-6, swap,
                                                reduction=reduction),
         _triplets(), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"margin": 3.0}, {"eps": 0.25, "swap": True},
                                     {"p": 1, "swap": True}], ids=str)
def test_triplet_margin_loss_defaults_options_and_1d_inputs_match_torch(reduction, options):
    anchor, positive, negative = _triplets(12)
    for inputs in ([anchor, positive, negative], [anchor[3], positive[3], negative[3]]):
        compare(lambda a, b, c: F.triplet_margin_loss(a, b, c, reduction=reduction, **options),
                lambda a, b, c: TF.triplet_margin_loss(a, b, c, reduction=reduction, **options),
                inputs, np.float64)


# -- PoissonNLLLoss ---------------------------------------------------------------------
def _poisson(log_input, seed=13):
    """Counts 0 to about 8, with 0, 1 and 2 (Stirling's term is masked to 0 up to 1; at a
    target of 0 torch's target gradient is NaN with full), and log-rates, or rates with a
    zero (only eps keeps its log finite)."""
    rng = np.random.default_rng(seed)
    target = rng.poisson(3.0, size=(4, 5)).astype(float)
    target[0, :3] = [0.0, 1.0, 2.0]
    rate = rng.normal(0.5, 1.0, size=(4, 5))
    if not log_input:
        rate = np.abs(rate)
        rate[0, 3] = 0.0
    return rate, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("log_input", [True, False])
@pytest.mark.parametrize("full", [False, True])
def test_poisson_nll_loss_matches_torch(dtype, reduction, log_input, full):
    both(nn.PoissonNLLLoss(log_input, full, reduction=reduction),
         torch.nn.PoissonNLLLoss(log_input, full, reduction=reduction),
         lambda x, t: F.poisson_nll_loss(x, t, log_input, full, reduction=reduction),
         lambda x, t: TF.poisson_nll_loss(x, t, log_input, full, reduction=reduction),
         _poisson(log_input), dtype)


@pytest.mark.parametrize("eps", [1e-8, 0.1])
@pytest.mark.parametrize("full", [False, True])
def test_poisson_nll_loss_eps_and_broadcast_target_match_torch(eps, full):
    rate, target = _poisson(False, 14)
    for inputs in ([rate, target], [rate, target[1]], [rate[:, :1], target]):
        compare(lambda x, t: F.poisson_nll_loss(x, t, False, full, eps, "none"),
                lambda x, t: TF.poisson_nll_loss(x, t, False, full, eps=eps, reduction="none"),
                inputs, np.float64)


# -- GaussianNLLLoss --------------------------------------------------------------------
def _gaussian(var_shape, seed=15):
    """(4, 3, 2) means and targets, and variances of var_shape with a zero and one below
    eps (floored in value only, so their gradient is torch's 1e12-sized one)."""
    rng = np.random.default_rng(seed)
    x, target = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    var = np.abs(rng.normal(size=var_shape)) + 0.1
    var.flat[0] = 0.0
    var.flat[-1] = 1e-9
    return x, target, var


# the same shape; input's without its last dim; one dim of size 1, anywhere
VAR_SHAPES = [(4, 3, 2), (4, 3), (4, 3, 1), (4, 1, 2), (1, 3, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("var_shape", VAR_SHAPES, ids=str)
@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll_loss_matches_torch(dtype, reduction, var_shape, full):
    both(nn.GaussianNLLLoss(full=full, reduction=reduction),
         torch.nn.GaussianNLLLoss(full=full, reduction=reduction),
         lambda x, t, v: F.gaussian_nll_loss(x, t, v, full, reduction=reduction),
         lambda x, t, v: TF.gaussian_nll_loss(x, t, v, full, reduction=reduction),
         _gaussian(var_shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("var", [0.7, 0.0, 1e-9])
@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_gaussian_nll_loss_of_a_float_var_and_eps_match_torch(dtype, var, eps):
    x, target, var_tensor = _gaussian((4, 3), 16)
    compare(lambda a, t: F.gaussian_nll_loss(a, t, var, eps=eps),
            lambda a, t: TF.gaussian_nll_loss(a, t, var, eps=eps), [x, target], dtype)
    compare(lambda a, t, v: F.gaussian_nll_loss(a, t, v, True, eps, "none"),
            lambda a, t, v: TF.gaussian_nll_loss(a, t, v, True, eps, "none"),
            [x, target, var_tensor], dtype)


def test_gaussian_nll_loss_of_1d_and_0d_inputs_matches_torch():
    """A 0-d var of a (D,) input is input's shape without its last dim: shared by all."""
    rng = np.random.default_rng(17)
    for inputs in ([rng.normal(size=5), rng.normal(size=5), np.array(0.3)],
                   [np.array(0.2), np.array(-0.4), np.array(1.5)],
                   [rng.normal(size=(3, 1)), rng.normal(size=(3, 4)), np.full((3, 1), 2.0)]):
        compare(lambda a, t, v: F.gaussian_nll_loss(a, t, v, reduction="none"),
                lambda a, t, v: TF.gaussian_nll_loss(a, t, v, reduction="none"), inputs,
                np.float64)


# -- MultiLabelSoftMarginLoss -----------------------------------------------------------
def _multilabel(shape, seed=18):
    """Scores with large ones (+-50: the log-sigmoids' far tails) and 0/1 targets with a
    few soft ones."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, size=shape)
    x.flat[:2] = [50.0, -50.0]
    target = (rng.random(shape) < 0.5).astype(float)
    target.flat[2:4] = [0.25, 0.75]
    return x, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(6, 5), (5,), (2, 3, 4)], ids=str)
def test_multilabel_soft_margin_loss_matches_torch(dtype, reduction, shape):
    both(nn.MultiLabelSoftMarginLoss(reduction=reduction),
         torch.nn.MultiLabelSoftMarginLoss(reduction=reduction),
         lambda x, t: F.multilabel_soft_margin_loss(x, t, reduction=reduction),
         lambda x, t: TF.multilabel_soft_margin_loss(x, t, reduction=reduction),
         _multilabel(shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_soft_margin_loss_with_weight_matches_torch(dtype, reduction):
    """The functional's weight, a plain factor in torch, gets its gradient; the module's is
    a buffer."""
    x, target = _multilabel((6, 5), 19)
    weight = np.random.default_rng(20).random(5) * 2
    compare(lambda a, t, w: F.multilabel_soft_margin_loss(a, t, w, reduction),
            lambda a, t, w: TF.multilabel_soft_margin_loss(a, t, w, reduction=reduction),
            [x, target, weight], dtype)
    ours = nn.MultiLabelSoftMarginLoss(weight.astype(dtype), reduction)
    theirs = torch.nn.MultiLabelSoftMarginLoss(torch.tensor(weight, dtype=TORCH_DTYPE[
        np.dtype(dtype)]), reduction=reduction)
    compare(ours, theirs, [x, target], dtype)


# -- MultiMarginLoss --------------------------------------------------------------------
def _multi_margin(margin, seed=21):
    """(6, 4) scores on an eighths grid with class targets; a row with z = margin -
    x[y] + x[d] == 0 exactly (the kink, where torch passes no gradient) and one with every
    z > 0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-16, 17, size=(6, 4)) / 8
    target = rng.integers(0, 4, size=6)
    target[:2] = [1, 2]
    x[0] = [0.0, 1.0, 1.0 - margin, -3.0]
    x[1, 2] = -5.0
    return x, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_multi_margin_loss_matches_torch(dtype, reduction, p, margin, weighted):
    x, target = _multi_margin(margin)
    weight = np.array([0.5, 2.0, 1.0, 0.25], dtype=dtype) if weighted else None
    torch_weight = None if weight is None else torch.from_numpy(weight)
    both(nn.MultiMarginLoss(p, margin, weight, reduction),
         torch.nn.MultiMarginLoss(p, margin, torch_weight, reduction=reduction),
         lambda a, t: F.multi_margin_loss(a, t, p, margin, weight, reduction),
         lambda a, t: TF.multi_margin_loss(a, t, p, margin, torch_weight, reduction=reduction),
         [x, target], dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_loss_of_one_sample_matches_torch(reduction, p):
    """A (C,) input with a 0-d or a (1,) target ("none": a 0-d or a (1,) loss), and a 0-d
    input (one class, so no loss)."""
    x, _ = _multi_margin(1.0, 22)
    for inputs in ([x[2], np.array(3)], [x[2], np.array([0])], [x[2, 0], np.array(0)],
                   [x[2, 0], np.array([0])], [x[2:3], np.array(1)]):
        compare(lambda a, t: F.multi_margin_loss(a, t, p, reduction=reduction),
                lambda a, t: TF.multi_margin_loss(a, t, p, reduction=reduction), inputs,
                np.float64)


# -- modules: reprs, attributes, buffers ------------------------------------------------
MODULES = [
    ("MarginRankingLoss", {}), ("MarginRankingLoss", {"margin": 0.5, "reduction": "sum"}),
    ("HingeEmbeddingLoss", {}), ("HingeEmbeddingLoss", {"margin": 2.0}),
    ("CosineEmbeddingLoss", {}), ("CosineEmbeddingLoss", {"margin": -0.5}),
    ("TripletMarginLoss", {}),
    ("TripletMarginLoss", {"margin": 0.5, "p": 1.0, "eps": 1e-3, "swap": True,
                           "reduction": "none"}),
    ("PoissonNLLLoss", {}), ("PoissonNLLLoss", {"log_input": False, "full": True, "eps": 1e-3}),
    ("GaussianNLLLoss", {}), ("GaussianNLLLoss", {"full": True, "eps": 1e-3, "reduction": "sum"}),
    ("MultiLabelSoftMarginLoss", {}), ("MultiMarginLoss", {}),
    ("MultiMarginLoss", {"p": 2, "margin": 0.5}), ("PairwiseDistance", {}),
    ("PairwiseDistance", {"p": 1.0, "eps": 0.0, "keepdim": True}), ("CosineSimilarity", {}),
    ("CosineSimilarity", {"dim": 0, "eps": 1e-3}),
]
ATTRIBUTES = ("reduction", "margin", "p", "eps", "swap", "log_input", "full", "norm",
              "keepdim", "dim")


@pytest.mark.parametrize("name,kwargs", MODULES, ids=str)
def test_repr_and_attributes_match_torch(name, kwargs):
    ours, theirs = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert repr(ours) == repr(theirs)
    for attribute in ATTRIBUTES:
        assert getattr(ours, attribute, None) == getattr(theirs, attribute, None), attribute
    assert name in nn.__all__


@pytest.mark.parametrize("name", ["MultiLabelSoftMarginLoss", "MultiMarginLoss"])
def test_weight_is_a_buffer_in_state_dict_as_torch(name):
    weight = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    ours = getattr(nn, name)(weight=weight)
    theirs = getattr(torch.nn, name)(weight=torch.from_numpy(weight))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    np.testing.assert_array_equal(ours.state_dict()["weight"].data, weight)
    assert repr(ours) == repr(theirs)


def test_positional_arguments_follow_torchs_order_without_the_deprecated_ones():
    """torch's size_average and reduce are left out, as by every disttrain loss; the other
    arguments keep their order."""
    loss = nn.PoissonNLLLoss(False, True, 0.5, "sum")
    assert (loss.log_input, loss.full, loss.eps, loss.reduction) == (False, True, 0.5, "sum")
    loss = nn.TripletMarginLoss(0.5, 1.0, 0.1, True, "none")
    assert (loss.margin, loss.p, loss.eps, loss.swap, loss.reduction) == (0.5, 1.0, 0.1, True,
                                                                          "none")
    loss = nn.MultiMarginLoss(2, 0.5, None, "sum")
    assert (loss.p, loss.margin, loss.weight, loss.reduction) == (2, 0.5, None, "sum")
    with pytest.raises(TypeError):  # keyword-only, as torch's
        nn.GaussianNLLLoss(True)


# -- errors -----------------------------------------------------------------------------
def _pair(lib, *shapes, dtype=None):
    """Tensors of ones of the shapes, in torch or in disttrain."""
    return [lib.ones(s) if dtype is None else lib.ones(s, dtype=dtype) for s in shapes]


def _int32(lib):
    return torch.int32 if lib is torch else np.int32


def _same_error(call, error):
    """call(lib, F) raises the same error in torch and disttrain."""
    same_error(lambda: call(disttrain, F), lambda: call(torch, TF), error)


@pytest.mark.parametrize("call", [
    lambda lib, f: f.margin_ranking_loss(*_pair(lib, (2,), (3,), (2,))),
    lambda lib, f: f.margin_ranking_loss(*_pair(lib, (2,), (2,), (3,))),
    lambda lib, f: f.margin_ranking_loss(*_pair(lib, (2,), (2, 1), (3,))),
    lambda lib, f: f.hinge_embedding_loss(*_pair(lib, (2,), (3,))),
    lambda lib, f: f.hinge_embedding_loss(*_pair(lib, (2, 3), (2,))),
    lambda lib, f: f.cosine_embedding_loss(*_pair(lib, (2, 3), (2, 3), (2, 1))),
    lambda lib, f: f.cosine_embedding_loss(*_pair(lib, (2, 3), (3,), (2,))),
    lambda lib, f: f.cosine_embedding_loss(*_pair(lib, (3,), (3, 1), ())),
    lambda lib, f: f.cosine_embedding_loss(*_pair(lib, (2, 3), (2, 4), (2,))),
    lambda lib, f: f.cosine_embedding_loss(*_pair(lib, (2, 3), (2, 3), (3,))),
    lambda lib, f: f.cosine_embedding_loss(*_pair(lib, (3,), (4,), ())),
    lambda lib, f: f.pairwise_distance(*_pair(lib, (2, 3), (2, 4))),
    lambda lib, f: f.cosine_similarity(*_pair(lib, (2, 3), (2, 4))),
    lambda lib, f: f.cosine_similarity(*_pair(lib, (2, 3), (2, 3), dtype=lib.int64)),
    lambda lib, f: f.cosine_similarity(lib.ones(2, 3, dtype=_int32(lib)),
                                       lib.ones(2, 3, dtype=lib.int64)),
    lambda lib, f: f.triplet_margin_loss(*_pair(lib, (2, 3), (2, 3), (3,))),
    lambda lib, f: f.triplet_margin_loss(*_pair(lib, (2, 3), (2, 4), (2, 3))),
    lambda lib, f: f.triplet_margin_loss(*_pair(lib, (2, 3), (2, 3), (3, 3))),
    lambda lib, f: f.poisson_nll_loss(*_pair(lib, (2,), (3,))),
    lambda lib, f: f.poisson_nll_loss(*_pair(lib, (2,), (3,)), log_input=False),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (3, 3), (2, 3))),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3), (1, 0))),
    lambda lib, f: f.multilabel_soft_margin_loss(*_pair(lib, (2, 3), (2, 4))),
    lambda lib, f: f.multilabel_soft_margin_loss(*_pair(lib, (2, 3), (2, 3), (4,))),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 3])),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, -1])),
    lambda lib, f: f.multi_margin_loss(lib.ones(()), lib.tensor(1)),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1, 2])),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([[0], [1]])),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor(1)),
    lambda lib, f: f.multi_margin_loss(lib.ones(3), lib.tensor([1, 2])),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0.0, 1.0])),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1], dtype=_int32(lib))),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3, 4), lib.tensor([0, 1])),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 0), lib.tensor([0, 1])),
    lambda lib, f: f.multi_margin_loss(lib.ones(0), lib.tensor([0])),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1]), weight=lib.ones(4)),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0.0, 1.0]),
                                       weight=lib.ones(4)),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 5]),
                                       weight=lib.ones(3, dtype=lib.float64)),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0.0, 5.0]),
                                       weight=lib.ones(3, dtype=lib.float64)),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3, dtype=lib.float64), lib.tensor([0, 1]),
                                       weight=lib.ones(3)),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1]),
                                       weight=lib.ones(3, requires_grad=True)),
])
def test_shape_dtype_and_target_errors_match_torch(call):
    _same_error(call, RuntimeError)


def test_multi_margin_loss_of_integer_input_refuses_as_torch():
    _same_error(lambda lib, f: f.multi_margin_loss(lib.ones(2, 3, dtype=lib.int64),
                                                   lib.tensor([0, 1])), NotImplementedError)
    with disttrain.no_grad():  # only a graph needs the weight not to require grad
        F.multi_margin_loss(disttrain.ones(2, 3), disttrain.tensor([0, 1]),
                            weight=disttrain.ones(3, requires_grad=True))


@pytest.mark.parametrize("call", [
    lambda lib, f: f.cosine_similarity(*_pair(lib, (2, 3), (2, 3)), dim=2),
    lambda lib, f: f.cosine_similarity(*_pair(lib, (3,), (3,))),
    lambda lib, f: f.multilabel_soft_margin_loss(*_pair(lib, (), ())),
])
def test_index_errors_match_torch(call):
    _same_error(call, IndexError)


REDUCTION_CALLS = [
    lambda lib, f, r: f.margin_ranking_loss(*_pair(lib, (2,), (2,), (2,)), reduction=r),
    lambda lib, f, r: f.hinge_embedding_loss(*_pair(lib, (2,), (2,)), reduction=r),
    lambda lib, f, r: f.cosine_embedding_loss(*_pair(lib, (2, 3), (2, 3), (2,)), reduction=r),
    lambda lib, f, r: f.triplet_margin_loss(*_pair(lib, (2, 3), (2, 3), (2, 3)), reduction=r),
    lambda lib, f, r: f.poisson_nll_loss(*_pair(lib, (2,), (2,)), reduction=r),
    lambda lib, f, r: f.gaussian_nll_loss(*_pair(lib, (2,), (2,), (2,)), reduction=r),
    lambda lib, f, r: f.multilabel_soft_margin_loss(*_pair(lib, (2, 3), (2, 3)), reduction=r),
    lambda lib, f, r: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1]), reduction=r),
]


@pytest.mark.parametrize("call", REDUCTION_CALLS)
@pytest.mark.parametrize("reduction", ["avg", "elementwise"])
def test_bad_reduction_errors_match_torch(call, reduction):
    _same_error(lambda lib, f: call(lib, f, reduction), ValueError)


@pytest.mark.parametrize("name,inputs", [
    ("MarginRankingLoss", lambda: _pair(torch, (2,), (2,), (2,))),
    ("HingeEmbeddingLoss", lambda: _pair(torch, (2,), (2,))),
    ("CosineEmbeddingLoss", lambda: _pair(torch, (2, 3), (2, 3), (2,))),
    ("TripletMarginLoss", lambda: _pair(torch, (2, 3), (2, 3), (2, 3))),
    ("PoissonNLLLoss", lambda: _pair(torch, (2,), (2,))),
    ("GaussianNLLLoss", lambda: _pair(torch, (2,), (2,), (2,))),
    ("MultiLabelSoftMarginLoss", lambda: _pair(torch, (2, 3), (2, 3))),
    ("MultiMarginLoss", lambda: [torch.ones(2, 3), torch.tensor([0, 1])]),
], ids=str)
def test_modules_refuse_a_bad_reduction_with_torchs_text(name, inputs):
    """disttrain's losses refuse it when built, torch's when called; the text is the same
    (gaussian_nll_loss and multilabel_soft_margin_loss have their own)."""
    same_error(lambda: getattr(nn, name)(reduction="avg"),
               lambda: getattr(torch.nn, name)(reduction="avg")(*inputs()), ValueError)


@pytest.mark.parametrize("call", [
    lambda lib, f: f.triplet_margin_loss(*_pair(lib, (2, 3), (2, 3), (2, 3)), margin=0),
    lambda lib, f: f.triplet_margin_loss(*_pair(lib, (2, 3), (2, 3), (2, 3)), margin=-0.5),
    lambda lib, f: lib.nn.TripletMarginLoss(margin=0),
    lambda lib, f: lib.nn.TripletMarginLoss(margin=-1.5, reduction="avg"),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (3, 2), (3, 2), (2,))),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3), (3,))),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3), (1, 1))),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3), (2, 3, 1))),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3), ())),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3)), -lib.ones(2, 3)),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3)), -1.0),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3)), -1.0, reduction="avg"),
    lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2, 3), (2, 3), (3,)), reduction="avg"),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1]), p=3),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1]), p=3,
                                       reduction="avg"),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1]),
                                       weight=lib.ones(1, 3)),
    lambda lib, f: f.multi_margin_loss(lib.ones(2, 3), lib.tensor([0, 1]), weight=lib.ones(())),
    lambda lib, f: lib.nn.MultiMarginLoss(p=3),
    lambda lib, f: lib.nn.MultiMarginLoss(p=3, reduction="avg"),
    lambda lib, f: lib.nn.MultiMarginLoss(weight=lib.ones(1, 3)),
    lambda lib, f: lib.nn.MultiMarginLoss(weight=lib.ones(())),
])
def test_argument_value_errors_match_torch(call):
    _same_error(call, ValueError)


def test_gaussian_nll_loss_refuses_an_int_var_as_torch():
    _same_error(lambda lib, f: f.gaussian_nll_loss(*_pair(lib, (2,), (2,)), 1), TypeError)
