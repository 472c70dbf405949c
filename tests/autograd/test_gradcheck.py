"""Every gradient rule in rules.RULES against central finite differences, in float64."""

from __future__ import annotations

import numpy as np
import pytest

import disttrain
import disttrain.nn.functional as F
from disttrain.autograd import kernels, ops, ops_shape
from disttrain.autograd.rules import RULES

from .helpers import make_inputs, rules_used

I64 = np.int64


def case(name, fn, *specs, low=-2.0, high=2.0, **kw):
    return pytest.param(fn, specs, low, high, kw, id=name)


CASES = [
    case("add", lambda a, b: a + b, (3, 4), (3, 4)),
    case("add-broadcast", lambda a, b: a + b, (3, 1, 4), (2, 1)),
    case("add-scalar-0d", lambda a, b: a + b + 1.5, (), (2, 3)),
    case("radd", lambda a: 2.0 + a, (3,)),
    case("sub-broadcast", lambda a, b: a - b, (2, 3), (3,)),
    case("rsub", lambda a: 1.0 - a, (2, 2)),
    case("neg", lambda a: -a, (2, 3)),
    case("mul-broadcast", lambda a, b: a * b, (4, 1), (1, 5)),
    case("mul-scalar", lambda a: a * 3.0, (5,)),
    case("div", lambda a, b: a / b, (3, 4), (4,), low=0.5),
    case("rdiv", lambda a: 2.0 / a, (3,), low=0.5),
    case("pow-tensor-tensor", lambda a, b: a ** b, (3, 4), (4,), low=0.5),
    case("pow-scalar-exp", lambda a: a ** 3, (2, 3)),
    case("pow-fractional-exp", lambda a: a ** 0.5, (4,), low=0.3),
    case("pow-zero-exp", lambda a: a ** 0, (4,)),
    case("rpow", lambda a: 2.0 ** a, (2, 3)),
    case("exp", lambda a: a.exp(), (2, 3)),
    case("log", lambda a: a.log(), (2, 3), low=0.2),
    case("sqrt", lambda a: a.sqrt(), (2, 3), low=0.2),
    case("abs", lambda a: a.abs(), (3, 4)),
    case("tanh", lambda a: a.tanh(), (3, 4)),
    case("sigmoid", lambda a: a.sigmoid(), (3, 4), low=-6, high=6),
    case("relu", lambda a: a.relu(), (3, 4)),
    case("relu-reused-buffers", lambda a: (a.relu() * 2).relu() + a.relu(), (3, 4),
         reuse_from=0),
    case("gelu-exact", lambda a: ops.gelu(a), (3, 4), low=-3, high=3),
    case("gelu-tanh", lambda a: ops.gelu(a, approximate="tanh"), (3, 4), low=-3, high=3),
    case("clamp-both", lambda a: a.clamp(-0.5, 0.7), (4, 4)),
    case("clamp-min", lambda a: a.clamp(min=0.1), (4, 4)),
    case("clamp-max", lambda a: a.clamp(max=0.1), (4, 4)),
    case("where", lambda a, b, c: disttrain.where(c, a, b), (3, 4), (4,),
         np.random.default_rng(3).random((3, 4)) > 0.5),
    case("maximum-broadcast", lambda a, b: disttrain.maximum(a, b), (3, 4), (4,)),
    case("minimum", lambda a, b: disttrain.minimum(a, b), (3, 4), (3, 4)),
    case("matmul-2d", lambda a, b: a @ b, (3, 4), (4, 2)),
    case("matmul-1d-1d", lambda a, b: a @ b, (4,), (4,)),
    case("matmul-1d-2d", lambda a, b: a @ b, (4,), (4, 3)),
    case("matmul-2d-1d", lambda a, b: a @ b, (3, 4), (4,)),
    case("matmul-batched-broadcast", lambda a, b: a @ b, (2, 1, 3, 4), (5, 4, 2)),
    case("matmul-1d-batched", lambda a, b: a @ b, (4,), (2, 4, 3)),
    case("linear-2d", lambda x, w, b: ops.linear(x, w, b), (5, 4), (3, 4), (3,)),
    case("linear-batched", lambda x, w, b: ops.linear(x, w, b), (2, 5, 4), (3, 4), (3,)),
    case("linear-1d-no-bias", lambda x, w: ops.linear(x, w), (4,), (3, 4)),
    case("sum-all", lambda a: a.sum(), (3, 4)),
    case("sum-dim-tuple", lambda a: a.sum(dim=(0, 2)), (2, 3, 4)),
    case("sum-keepdim-neg", lambda a: a.sum(dim=-1, keepdim=True), (2, 3, 4)),
    case("mean-dims", lambda a: a.mean(dim=(1, -1), keepdim=True), (2, 3, 4)),
    case("var", lambda a: a.var(dim=1), (3, 5)),
    case("std-all", lambda a: a.std(), (3, 5)),
    case("amax-all", lambda a: a.amax(), (3, 4)),
    case("amax-dims", lambda a: a.amax(dim=(0, 2)), (3, 4, 2)),
    case("max-all", lambda a: a.max(), (3, 4)),
    case("max-dim", lambda a: a.max(dim=1).values, (3, 4)),
    case("min-dim-keepdim", lambda a: a.min(dim=0, keepdim=True)[0], (3, 4)),
    case("softmax", lambda a: a.softmax(dim=-1), (3, 4)),
    case("softmax-dim0", lambda a: a.softmax(0), (3, 4)),
    case("log-softmax", lambda a: a.log_softmax(dim=1), (3, 4)),
    case("reshape", lambda a: a.reshape(4, 3) * disttrain.arange(12.0).reshape(4, 3), (3, 4)),
    case("view-squeeze-unsqueeze", lambda a: a.view(3, 1, 4).squeeze(1).unsqueeze(0), (3, 4)),
    case("flatten", lambda a: a.flatten(1), (2, 3, 2)),
    case("permute", lambda a: a.permute(2, 0, 1), (2, 3, 4)),
    case("transpose", lambda a: a.transpose(0, -1), (2, 3, 4)),
    case("T", lambda a: a.T, (3, 4)),
    case("expand", lambda a: a.expand(2, 3, 4), (3, 1)),
    case("index-basic", lambda a: a[1:, ::2], (4, 5)),
    case("index-negative-step", lambda a: a[::-1, 1], (4, 5)),
    case("index-int-array-repeated", lambda a, i: a[i], (4, 3), np.array([0, 2, 0, 0, 3])),
    case("index-tuple-slice-array", lambda a, i: a[1:, i], (4, 5), np.array([4, 0, 4])),
    case("index-bool-mask", lambda a, m: a[m], (3, 4),
         np.random.default_rng(1).random((3, 4)) > 0.4),
    case("embedding", lambda w, i: w[i], (6, 3), np.array([[0, 5, 5], [2, 0, 5]])),
    case("cat", lambda a, b: disttrain.cat([a, b, a], dim=1), (2, 3), (2, 1)),
    case("stack", lambda a, b: disttrain.stack([a, b], dim=-1), (2, 3), (2, 3)),
    case("conv2d", lambda x, w, b: ops.conv2d(x, w, b), (2, 2, 5, 5), (3, 2, 3, 3), (3,)),
    case("conv2d-stride2-pad1", lambda x, w: ops.conv2d(x, w, stride=2, padding=1),
         (1, 2, 6, 5), (2, 2, 3, 3)),
    case("conv2d-2x2-odd", lambda x, w: ops.conv2d(x, w, stride=2), (1, 1, 7, 7), (2, 1, 2, 2)),
    case("conv2d-5x5-stride2-pad2", lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=2),
         (2, 2, 8, 9), (3, 2, 5, 5), (3,)),
    # stride 1 (the wide input gradient): N=1, non-square input and kernel, padding 2
    case("conv2d-nonsquare-pad2", lambda x, w: ops.conv2d(x, w, padding=2),
         (1, 2, 5, 7), (3, 2, 2, 4)),
    case("conv2d-kernel1", lambda x, w, b: ops.conv2d(x, w, b), (2, 3, 4, 3), (2, 3, 1, 1), (2,)),
    case("conv2d-kernel-is-image", lambda x, w: ops.conv2d(x, w), (2, 2, 3, 4), (2, 2, 3, 4)),
    case("max-pool2d", lambda x: ops.max_pool2d(x, 2), (2, 2, 4, 6)),
    case("max-pool2d-overlap-stride2", lambda x: ops.max_pool2d(x, 3, stride=2), (1, 2, 7, 6)),
    case("max-pool2d-gaps", lambda x: ops.max_pool2d(x, 2, stride=3), (1, 2, 8, 7)),
    case("max-pool2d-overlap", lambda x: ops.max_pool2d(x, 3, stride=1), (1, 2, 5, 5)),
    case("conv2d-rect-stride-pad-dilation",
         lambda x, w, b: ops.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
         (1, 2, 7, 8), (2, 2, 3, 2), (2,)),
    case("conv2d-same-even-kernel", lambda x, w: F.conv2d(x, w, padding="same"),
         (2, 1, 5, 6), (2, 1, 2, 4)),
    case("conv2d-dilated-wide", lambda x, w: ops.conv2d(x, w, padding=2, dilation=2),
         (1, 2, 6, 5), (2, 2, 3, 3)),
    case("avg-pool2d-pad-ceil-exclude-pad",
         lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
         (1, 2, 6, 7)),
    case("avg-pool2d-rect-overlap", lambda x: ops.avg_pool2d(x, (2, 3), 1), (2, 1, 4, 5)),
    case("adaptive-avg-pool2d-uneven", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), (1, 2, 7, 5)),
    case("max-pool2d-rect-pad-dilation-ceil",
         lambda x: F.max_pool2d(x, (3, 2), (2, 1), 1, (1, 2), ceil_mode=True), (1, 2, 8, 7)),
    case("layer-norm", lambda x, w, b: ops.layer_norm(x, 4, w, b), (3, 4), (4,), (4,)),
    # seeded points miss the kinks at -3 and 3
    case("hardsigmoid", lambda a: ops.hardsigmoid(a), (4, 5), low=-5.0, high=5.0),
    case("hardswish", lambda a: ops.hardswish(a), (4, 5), low=-5.0, high=5.0),
    case("group-norm", lambda x, w, b: F.group_norm(x, 2, w, b), (2, 4, 3), (4,), (4,)),
    case("batch-norm-training", lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
         (4, 3, 2, 2), (3,), (3,)),
    case("to-float64-and-clone", lambda a: a.to(disttrain.float64).clone() * 2, (3,)),
    case("log1p", lambda a: a.log1p(), (2, 3), low=-0.8),
    case("expm1", lambda a: disttrain.expm1(a), (2, 3)),
    case("sin", lambda a: a.sin(), (2, 3), low=-4.0, high=4.0),
    case("cos", lambda a: disttrain.cos(a), (2, 3), low=-4.0, high=4.0),
    # Steps: seeded inputs sit away from the jumps (and from the .5 ties of round), where
    # the finite difference is the rule's 0; * a keeps a nonzero gradient flowing beside.
    case("sign-floor-ceil-round", lambda a: (a.sign() + a.floor() + a.ceil() + a.round()) * a,
         (3, 4), low=-3.0, high=3.0),
    case("logsumexp", lambda a: disttrain.logsumexp(a, dim=-1), (3, 4)),
    case("logsumexp-dims-keepdim", lambda a: a.logsumexp((0, 2), keepdim=True), (2, 3, 4)),
    case("norm-fro-all", lambda a: a.norm(), (3, 4)),
    case("norm-1-dim", lambda a: disttrain.norm(a, p=1, dim=1), (3, 4)),
    case("norm-2-keepdim", lambda a: disttrain.norm(a, 2, dim=(0, -1), keepdim=True),
         (2, 3, 4)),
    case("norm-inf", lambda a: a.norm(p=float("inf"), dim=0), (3, 4)),
    case("norm-minus-inf", lambda a: a.norm(p=float("-inf")), (3, 4)),
    case("norm-3-dim", lambda a: disttrain.norm(a, p=3, dim=1), (3, 4)),
    case("norm-1.5", lambda a: a.norm(p=1.5), (3, 4)),
    case("norm-half", lambda a: a.norm(p=0.5, dim=0), (3, 4)),
    case("cumsum", lambda a: a.cumsum(1), (3, 4)),
    case("cumsum-neg-dim", lambda a: disttrain.cumsum(a, -3), (2, 3, 2)),
    # ops_shape.py's rules (elementwise math, prod/cumprod with zeros, scatter, einsum)
    case("log2-log10", lambda a: ops_shape.log2(a) + ops_shape.log10(a), (2, 3), low=0.2),
    case("exp2", lambda a: ops_shape.exp2(a), (2, 3)),
    case("sinh-cosh", lambda a: ops_shape.sinh(a) * ops_shape.cosh(a), (2, 3)),
    case("asin-acos-atan", lambda a: ops_shape.asin(a) + ops_shape.acos(a) * ops_shape.atan(a),
         (2, 3), low=-0.9, high=0.9),
    case("erf", lambda a: ops_shape.erf(a), (2, 3)),
    case("trunc", lambda a: ops_shape.trunc(a) * a, (3, 4), low=-3.0, high=3.0),
    case("logit", lambda a: ops_shape.logit(a), (2, 3), low=0.05, high=0.95),
    case("logit-eps", lambda a: ops_shape.logit(a, eps=0.3), (3, 4), low=0.0, high=1.0),
    case("atan2", lambda a, b: ops_shape.atan2(a, b), (2, 3), (3,)),
    case("hypot", lambda a, b: ops_shape.hypot(a, b), (2, 3), (2, 1)),
    case("logaddexp", lambda a, b: ops_shape.logaddexp(a, b), (2, 3), (3,)),
    case("remainder", lambda a, b: ops_shape.remainder(a, b), (2, 3), (3,), low=0.3),
    case("fmod-negative", lambda a, b: ops_shape.fmod(a, b), (3, 4), (4,), low=-3.0, high=-0.3),
    case("prod-all", lambda a: ops_shape.prod(a), (2, 3), low=0.5),
    case("prod-dim", lambda a: ops_shape.prod(a, -1, keepdim=True), (2, 3, 4)),
    case("prod-zeros", lambda a: ops_shape.prod(a, 1),
         np.array([[0.0, 1.5, -2.0], [0.0, 0.0, 3.0], [0.7, 1.1, 1.3]])),
    case("prod-all-one-zero", lambda a: ops_shape.prod(a), np.array([[0.5, 0.0], [1.5, -2.0]])),
    case("cumprod", lambda a: ops_shape.cumprod(a, 0), (3, 4)),
    case("cumprod-zeros", lambda a: ops_shape.cumprod(a, -1),
         np.array([[0.5, 0.0, 2.0, 0.0], [1.1, 0.9, 0.0, 1.3]])),
    case("scatter", lambda a, s: ops_shape.scatter(
        a, 1, disttrain.tensor([[2, 0], [1, 3], [0, 1]]), s), (3, 4), (3, 3)),
    case("scatter-add-repeated", lambda a, s: ops_shape.scatter_add(
        a, 0, disttrain.tensor([[0, 1, 0], [0, 0, 2]]), s), (3, 3), (2, 3)),
    case("einsum", lambda a, b: ops_shape.einsum("bij,jk->bik", a, b), (2, 3, 4), (4, 2)),
    case("einsum-diagonal-and-summed", lambda a, b: ops_shape.einsum("ii,ij->j", a, b),
         (3, 3), (3, 2)),
    case("einsum-ellipsis-broadcast", lambda a, b: ops_shape.einsum("...i,...i", a, b),
         (2, 1, 3), (4, 3)),
    # composites of existing rules, where their indexing could go wrong
    case("repeat-roll-flip", lambda a: ops_shape.flip(ops_shape.roll(a.repeat(2, 1, 2), (1, -2),
                                                                      (0, 2)), (1,)), (2, 3)),
    case("diag-diagonal-median", lambda a: ops_shape.diag(ops_shape.diagonal(a, 1)).sum(0)
         + ops_shape.median(a, 1).values, (3, 4)),
    # Composites of the rules above, where their indexing could go wrong.
    case("gather-repeated", lambda a: a.gather(1, disttrain.tensor([[0, 0, 2], [1, 1, 1]])),
         (3, 4)),
    case("masked-fill-value-tensor", lambda a, v: a.masked_fill(
        disttrain.tensor([[True], [False], [True]]), v), (3, 4), ()),
    case("tril-triu", lambda a: a.tril(-1) + a.triu(1) * 2, (2, 3, 4)),
    # Losses written from the rules above (no rule of their own): their kinks (a zero
    # difference, |difference| = delta) are measure-zero, so seeded inputs miss them.
    case("l1-loss", lambda a, b: F.l1_loss(a, b, reduction="none"), (3, 4), (3, 4)),
    case("huber-loss", lambda a, b: F.huber_loss(a, b, reduction="none", delta=0.8),
         (3, 4), (3, 4)),
    case("huber-loss-mean", lambda a, b: F.huber_loss(a, b), (5, 2), (5, 2)),
    # Binary cross-entropy: soft targets in (0, 1), so the target's gradient is checked too.
    case("bce", lambda x, t: F.binary_cross_entropy(x, t, reduction="none"), (3, 4), (3, 4),
         low=0.1, high=0.9),
    case("bce-weighted-mean", lambda x, t: F.binary_cross_entropy(
        x, t, weight=disttrain.tensor(np.linspace(0.5, 2.0, 4))), (3, 4), (3, 4),
         low=0.1, high=0.9),
    case("bce-logits", lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"),
         (3, 4), (3, 4)),
    case("bce-logits-pos-weight", lambda x, t: F.binary_cross_entropy_with_logits(
        x, t, weight=disttrain.tensor(np.linspace(0.5, 2.0, 4)),
        pos_weight=disttrain.tensor(np.array([0.5, 1.0, 2.0, 3.0])), reduction="sum"),
         (3, 4), (3, 4), low=-4.0, high=4.0),
]


def _tensors(specs, low, high):
    return [disttrain.tensor(a, requires_grad=a.dtype.kind == "f") if isinstance(a, np.ndarray)
            else a for a in make_inputs(specs, np.float64, low, high, seed=7)]


@pytest.mark.parametrize("fn, specs, low, high, kw", CASES)
def test_rule_matches_finite_differences(fn, specs, low, high, kw, monkeypatch):
    kw = dict(kw)
    if "reuse_from" in kw:  # elementwise results into reused buffers from this size on
        monkeypatch.setattr(kernels, "_REUSE_FROM", kw.pop("reuse_from"))
    assert disttrain.gradcheck(fn, _tensors(specs, low, high), **kw)


CONV_CASES = [c for c in CASES if c.id.startswith("conv2d")]


@pytest.mark.parametrize("fn, specs, low, high, kw", CONV_CASES)
@pytest.mark.parametrize("short_row, wide_waste", [(0, 0), (0, 10_000), (10_000, 0),
                                                   (10_000, 10_000)],
                         ids=["channels-first-col2im", "channels-first-wide",
                              "batch-last-col2im", "batch-last-wide"])
def test_conv_paths_match_finite_differences(fn, specs, low, high, kw, short_row, wide_waste,
                                             monkeypatch):
    # The conv kernels choose an im2col layout and an input-gradient method per shape:
    # force each of them on every conv case.
    monkeypatch.setattr(kernels, "_SHORT_ROW", short_row)
    monkeypatch.setattr(kernels, "_WIDE_WASTE", wide_waste)
    assert disttrain.gradcheck(fn, _tensors(specs, low, high), **kw)


def test_every_rule_has_a_gradcheck_case():
    covered = set()
    for param in CASES:
        fn, specs, low, high, _ = param.values
        covered |= rules_used(fn(*_tensors(specs, low, high)))
    missing = sorted(set(RULES) - covered)
    assert not missing, f"rules with no finite-difference case: {missing}"


def test_gradcheck_catches_a_wrong_rule(monkeypatch):
    # The checker itself must be able to fail: break Exp's rule and expect an error.
    wrong = RULES["Exp"]._replace(vjps=(lambda g, o, x: g * o * 1.01,))
    monkeypatch.setitem(RULES, "Exp", wrong)
    monkeypatch.setattr(ops, "R", RULES)
    with pytest.raises(AssertionError, match="differs from finite differences"):
        disttrain.gradcheck(lambda a: a.exp(), [disttrain.randn(3, dtype=np.float64,
                                                                 requires_grad=True)])


def test_gradcheck_needs_float64():
    with pytest.raises(ValueError, match="float64"):
        disttrain.gradcheck(lambda a: a * 2, [disttrain.randn(3, requires_grad=True)])


def test_gradcheck_non_contiguous_input():
    # A transposed (non-contiguous) input must still be perturbed in place.
    base = disttrain.tensor(np.random.default_rng(0).normal(size=(4, 3)))
    a = disttrain.tensor(base.data.T, requires_grad=True)
    a.data = base.data.T
    assert disttrain.gradcheck(lambda t: (t * t).sum(dim=0), [a])
