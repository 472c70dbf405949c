"""Every op against PyTorch: forward values, result dtype and gradients, float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

import disttrain
from disttrain.autograd import kernels, ops

from .helpers import helper_test_op

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]


def M(x):
    """The library x belongs to, so one lambda can call torch.cat or disttrain.cat."""
    return torch if isinstance(x, torch.Tensor) else disttrain


def F(x):
    """torch.nn.functional or disttrain's ops module, whichever matches x."""
    return torch_F if isinstance(x, torch.Tensor) else ops


# -- arithmetic ---------------------------------------------------------------------------
ARITH = [
    ("add", lambda a, b: a + b, [(3, 4), (3, 4)]),
    ("add-broadcast", lambda a, b: a + b, [(3, 1, 4), (2, 1)]),
    ("sub-broadcast", lambda a, b: a - b, [(2, 3), (3,)]),
    ("mul-broadcast", lambda a, b: a * b, [(4, 1), (1, 5)]),
    ("div-broadcast", lambda a, b: a / b, [(2, 3, 4), (3, 1)]),
    ("scalar-left", lambda a: 1.5 - a + 2 * a / 3 + 2.0 / (a * a + 1), [(3, 4)]),
    ("neg", lambda a: -a, [(5,)]),
    ("0d-and-nd", lambda a, b: a * b + a, [(), (2, 3)]),
    ("method-names", lambda a, b: a.add(b).sub(b).mul(b).div(b + 3).neg(), [(3,), (3,)]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, shapes", ARITH, ids=[a[0] for a in ARITH])
def test_arithmetic(name, fn, shapes, dtype):
    low = 0.5 if "div" in name else -2.0
    helper_test_op(shapes, fn, dtype=dtype, low=low)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [
    lambda a: a ** 2, lambda a: a ** 3.5, lambda a: a ** -1.5, lambda a: a ** 0,
    lambda a: a.pow(0.5), lambda a: 2 ** a, lambda a: 0.5 ** a,
], ids=["sq", "3.5", "-1.5", "0", "pow-0.5", "2**a", "0.5**a"])
def test_pow_scalar(fn, dtype):
    helper_test_op([(3, 4)], fn, dtype=dtype, low=0.2, high=2.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pow_tensor_tensor(dtype):
    helper_test_op([(3, 4), (4,)], lambda a, b: a ** b, dtype=dtype, low=0.2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pow_zero_base_and_zero_exponent(dtype):
    # PyTorch masks d/db at a == 0 (b >= 0) and d/da where b == 0.
    a = np.array([0.0, 0.0, 2.0, 0.0, 1.5], dtype=dtype)
    b = np.array([0.0, 2.0, 0.0, 1.0, 3.0], dtype=dtype)
    helper_test_op(None, lambda x, y: x ** y, dtype=dtype, arrays=[a, b])
    helper_test_op(None, lambda x: x ** 0, dtype=dtype, arrays=[a])
    helper_test_op(None, lambda y: 0.0 ** y, dtype=dtype, arrays=[b])


# -- matmul -------------------------------------------------------------------------------
MATMUL = [((4,), (4,)), ((3, 4), (4, 2)), ((4,), (4, 3)), ((3, 4), (4,)),
          ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (2, 4, 3)),
          ((2, 3, 4), (4,)), ((3, 4), (2, 4, 2))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", MATMUL, ids=[f"{a}@{b}" for a, b in MATMUL])
def test_matmul(shapes, dtype):
    helper_test_op(list(shapes), lambda a, b: a @ b, dtype=dtype)
    helper_test_op(list(shapes), lambda a, b: a.matmul(b), dtype=dtype)


LINEAR = [((5, 4), (3, 4), (3,)), ((2, 5, 4), (3, 4), (3,)), ((4,), (3, 4), (3,)),
          ((5, 4), (3, 4), None)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", LINEAR, ids=str)
def test_linear_is_torch_linear(shapes, dtype):
    x, w, b = shapes
    if b is None:
        helper_test_op([x, w], torch.nn.functional.linear, lambda a, c: ops.linear(a, c),
                       dtype=dtype)
    else:
        helper_test_op([x, w, b], torch.nn.functional.linear, ops.linear, dtype=dtype)


# -- reductions -----------------------------------------------------------------------------
DIMS = [None, 0, 1, -1, (0, 2), (-1, 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS, ids=str)
@pytest.mark.parametrize("op", ["sum", "mean", "var", "std", "amax"])
def test_reductions(op, dim, keepdim, dtype):
    def fn(x):
        method = getattr(x, op)
        return method() if dim is None else method(dim=dim, keepdim=keepdim)

    helper_test_op([(3, 4, 5)], fn, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_var_unbiased_false_and_correction(dtype):
    helper_test_op([(4, 5)], lambda x: x.var(dim=1, unbiased=False), dtype=dtype)
    helper_test_op([(4, 5)], lambda x: x.var(1, correction=0), dtype=dtype)
    helper_test_op([(4, 5)], lambda x: x.std(0, keepdim=True, unbiased=False), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_dim_returns_values_and_indices(op, dim, keepdim, dtype):
    helper_test_op([(3, 4, 5)], lambda x: getattr(x, op)(dim=dim, keepdim=keepdim), dtype=dtype)
    helper_test_op([(3, 4, 5)], lambda x: getattr(x, op)(dim, keepdim).values, dtype=dtype)
    ours = getattr(disttrain.tensor(np.ones((2, 3))), op)(1)
    assert ours.values is ours[0] and ours.indices is ours[1]
    assert ours.indices.dtype == np.int64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_ties(op, dtype):
    x = np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, -1.0, -1.0], [0.5, 0.5, 0.5, 0.5]],
                 dtype=dtype)
    # No dim: torch shares the gradient evenly among all tied extremes.
    helper_test_op(None, lambda t: getattr(t, op)(), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: t.amax(dim=1), lambda t: t.amax(dim=1), dtype=dtype,
                   arrays=[x])
    # With dim: the whole gradient goes to the index returned.
    for dim in (0, 1):
        helper_test_op(None, lambda t, d=dim: getattr(t, op)(dim=d), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: getattr(M(t), op)(t), dtype=dtype, arrays=[x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_argmin(dtype):
    helper_test_op([(3, 4)], lambda x: x.argmax(), dtype=dtype)
    helper_test_op([(3, 4)], lambda x: x.argmin(dim=1), dtype=dtype)
    helper_test_op([(3, 4)], lambda x: x.argmax(dim=0, keepdim=True), dtype=dtype)


# -- elementwise --------------------------------------------------------------------------
UNARY = [
    ("exp", lambda x: x.exp(), -2, 2),
    ("log", lambda x: x.log(), 0.1, 3),
    ("sqrt", lambda x: x.sqrt(), 0.1, 3),
    ("abs", lambda x: x.abs(), -2, 2),
    ("tanh", lambda x: x.tanh(), -3, 3),
    ("sigmoid", lambda x: x.sigmoid(), -8, 8),
    ("relu", lambda x: x.relu(), -2, 2),
    ("gelu", lambda x: F(x).gelu(x), -4, 4),
    ("gelu-tanh", lambda x: F(x).gelu(x, approximate="tanh"), -4, 4),
    ("softmax", lambda x: x.softmax(dim=-1), -3, 3),
    ("softmax-0", lambda x: M(x).softmax(x, 0), -3, 3),
    ("log_softmax", lambda x: x.log_softmax(dim=1), -3, 3),
    ("log_softmax-fn", lambda x: M(x).log_softmax(x, -1), -3, 3),
    ("clamp-min", lambda x: x.clamp(min=-0.5), -2, 2),
    ("clamp-max", lambda x: x.clamp(max=0.3), -2, 2),
    ("clamp-both", lambda x: x.clamp(-0.5, 0.5), -2, 2),
    ("clamp-fn", lambda x: M(x).clamp(x, min=0.0, max=1.0), -2, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, low, high", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, low, high, dtype):
    helper_test_op([(3, 5)], fn, dtype=dtype, low=low, high=high)
    helper_test_op([(2, 3, 4)], fn, dtype=dtype, low=low, high=high, seed=3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kinks_at_zero_and_at_bounds(dtype):
    # abs, relu and clamp at their kinks: torch's choices (0, 0, gradient passes at a bound).
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=dtype)
    helper_test_op(None, lambda t: t.abs(), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: t.relu(), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: t.clamp(-0.5, 1.0), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: t.clamp(min=0.5), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: t.clamp(max=0.0), dtype=dtype, arrays=[x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_large_magnitude(dtype):
    x = np.array([-1000.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1000.0], dtype=dtype)
    helper_test_op(None, lambda t: t.sigmoid(), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: M(t).sigmoid(t) * 2, dtype=dtype, arrays=[x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_values(dtype):
    x = np.array([[1000.0, 999.0, -1000.0], [-50.0, 0.0, 50.0]], dtype=dtype)
    helper_test_op(None, lambda t: t.softmax(dim=1), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda t: t.log_softmax(dim=1), dtype=dtype, arrays=[x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_where(dtype):
    cond = np.random.default_rng(0).random((3, 4)) > 0.5
    helper_test_op([(3, 4), (3, 4), cond], lambda a, b, c: M(a).where(c, a, b), dtype=dtype)
    helper_test_op([(3, 1), (4,), cond], lambda a, b, c: M(a).where(c, a, b), dtype=dtype)
    helper_test_op([(3, 4), cond], lambda a, c: M(a).where(c, a, 0.0), dtype=dtype)
    helper_test_op([(3, 4)], lambda a: M(a).where(a > 0, a, a * 0.1), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum(op, dtype):
    helper_test_op([(3, 4), (4,)], lambda a, b: getattr(M(a), op)(a, b), dtype=dtype)
    helper_test_op([(3, 4), (3, 1)], lambda a, b: getattr(a, op)(b), dtype=dtype)
    a = np.array([1.0, 2.0, 3.0, -1.0], dtype=dtype)
    b = np.array([1.0, 0.0, 3.0, 5.0], dtype=dtype)  # ties split the gradient
    helper_test_op(None, lambda x, y: getattr(M(x), op)(x, y), dtype=dtype, arrays=[a, b])


# -- shapes and indexing ------------------------------------------------------------------
SHAPE_OPS = [
    ("reshape", lambda x: x.reshape(4, 6) * 2, (2, 3, 4)),
    ("reshape-tuple", lambda x: x.reshape((6, -1)) * 2, (2, 3, 4)),
    ("view", lambda x: x.view(-1) * 2, (2, 3, 4)),
    ("view-fn", lambda x: M(x).reshape(x, (3, 8)) * 2, (2, 3, 4)),
    ("transpose", lambda x: x.transpose(0, 2) * 2, (2, 3, 4)),
    ("transpose-neg", lambda x: x.transpose(-1, -2) * 2, (2, 3, 4)),
    ("permute", lambda x: x.permute(1, 2, 0) * 2, (2, 3, 4)),
    ("permute-tuple-neg", lambda x: x.permute((-1, 0, 1)) * 2, (2, 3, 4)),
    ("T", lambda x: x.T * 2, (3, 4)),
    ("t", lambda x: x.t() * 2, (3, 4)),
    ("mT", lambda x: x.mT * 2, (2, 3, 4)),
    ("squeeze", lambda x: x.squeeze() * 2, (1, 3, 1, 4)),
    ("squeeze-dim", lambda x: x.squeeze(2) * 2, (1, 3, 1, 4)),
    ("squeeze-neg-dim", lambda x: x.squeeze(-2) * 2, (1, 3, 1, 4)),
    ("squeeze-dim-not-1", lambda x: x.squeeze(1) * 2, (1, 3, 1, 4)),
    ("squeeze-dims-tuple", lambda x: x.squeeze((0, 2)) * 2, (1, 3, 1, 4)),
    ("unsqueeze", lambda x: x.unsqueeze(0) * 2, (3, 4)),
    ("unsqueeze-neg", lambda x: x.unsqueeze(-1) * 2, (3, 4)),
    ("flatten", lambda x: x.flatten() * 2, (2, 3, 4)),
    ("flatten-1", lambda x: x.flatten(1) * 2, (2, 3, 4)),
    ("flatten-0-1", lambda x: M(x).flatten(x, 0, 1) * 2, (2, 3, 4)),
    ("expand", lambda x: x.expand(2, 3, 4) * 2, (3, 1)),
    ("expand-minus-one", lambda x: x.expand(5, -1, 4) * 2, (3, 1)),
    ("clone", lambda x: x.clone() * 2, (3, 4)),
    ("index-int", lambda x: x[1] * 2, (3, 4)),
    ("index-neg-int", lambda x: x[-1, 2] * 2, (3, 4)),
    ("index-slices", lambda x: x[1:, ::2] * 2, (3, 4, 2)),
    ("index-ellipsis", lambda x: x[..., 1] * 2, (3, 4, 2)),
    ("index-none", lambda x: x[None, 1:] * 2, (3, 4)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, shape", SHAPE_OPS, ids=[s[0] for s in SHAPE_OPS])
def test_shape_ops(name, fn, shape, dtype):
    helper_test_op([shape], fn, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_step_slice_matches_flip(dtype):
    helper_test_op([(4, 3)], lambda x: x.flip(0) * 2, lambda x: x[::-1] * 2, dtype=dtype)
    helper_test_op([(4, 3)], lambda x: x.flip(1)[1:] * 2, lambda x: x[1:, ::-1] * 2,
                   dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_advanced_indexing(dtype):
    idx = np.array([0, 2, 2, 0, 3])  # repeated indices must add up in the gradient
    helper_test_op([(4, 3), idx], lambda x, i: x[i], dtype=dtype)
    helper_test_op([(4, 3), np.array([[0, 1], [3, 3]])], lambda x, i: x[i], dtype=dtype)
    helper_test_op([(4, 5), np.array([4, 0, 4])], lambda x, i: x[1:, i], dtype=dtype)
    helper_test_op([(4, 5), np.array([1, 1, 3])], lambda x, i: x[i, 2:], dtype=dtype)
    helper_test_op([(4, 5)], lambda x: x[[0, 0, 2], [1, 1, 4]], dtype=dtype)
    helper_test_op([(4, 5), np.array([0, 3, 3])], lambda x, i: x[i, -1], dtype=dtype)
    helper_test_op([(2, 4, 5), np.array([3, 3])], lambda x, i: x[:, i, 1:3], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_boolean_mask(dtype):
    mask = np.random.default_rng(0).random((3, 4)) > 0.4
    helper_test_op([(3, 4), mask], lambda x, m: x[m], dtype=dtype)
    helper_test_op([(3, 4), mask[:, 0]], lambda x, m: x[m], dtype=dtype)
    helper_test_op([(3, 4)], lambda x: x[x > 0] * 3, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_style_lookup(dtype):
    ids = np.array([[1, 4, 4, 0], [4, 2, 1, 1]])
    helper_test_op([(6, 3), ids], lambda w, i: (w[i] * 2).sum(dim=1), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cat_stack(dtype):
    helper_test_op([(2, 3), (4, 3)], lambda a, b: M(a).cat([a, b]), dtype=dtype)
    helper_test_op([(2, 3), (2, 1), (2, 2)], lambda a, b, c: M(a).cat([a, b, c, a], dim=-1),
                   dtype=dtype)
    helper_test_op([(2, 3), (2, 3)], lambda a, b: M(a).stack([a, b]), dtype=dtype)
    helper_test_op([(2, 3), (2, 3)], lambda a, b: M(a).stack((a, b, a), dim=1), dtype=dtype)
    helper_test_op([(2, 3), (2, 3)], lambda a, b: M(a).stack([a, b], dim=-1), dtype=dtype)


# -- convolution, pooling, normalisation ----------------------------------------------------
CONV = [
    ((2, 3, 5, 5), (4, 3, 3, 3), True, 1, 0),
    ((2, 3, 5, 5), (4, 3, 3, 3), False, 1, 1),
    ((1, 2, 7, 6), (3, 2, 3, 3), True, 2, 0),
    ((1, 2, 7, 6), (3, 2, 3, 3), True, 2, 1),
    ((2, 1, 6, 6), (2, 1, 2, 2), False, 2, 0),
    ((1, 2, 5, 4), (2, 2, 1, 1), True, 1, 0),
    ((1, 2, 5, 5), (2, 2, 3, 2), False, 1, 1),
    # stride 1 takes the "wide" input gradient: N=1 with a non-square input and kernel and
    # padding larger than the kernel needs, a kernel the size of the image (one output),
    # kernel 1 on a non-square input, a kernel wider than tall
    ((1, 3, 7, 9), (2, 3, 2, 4), True, 1, 2),
    ((3, 2, 4, 4), (5, 2, 4, 4), False, 1, 0),
    ((2, 4, 6, 3), (3, 4, 1, 1), True, 1, 0),
    ((2, 1, 5, 8), (2, 1, 3, 5), False, 1, 1),
    # stride 2 with padding, non-square
    ((2, 3, 9, 8), (4, 3, 5, 5), True, 2, 2),
]


# The kernels choose per shape between two im2col layouts (by the output's row length) and,
# at stride 1, between the wide input gradient and col2im (by how many padded pixels are
# outputs); each shape is run as chosen and also forced down every path.
CONV_PATHS = ["chosen", "channels-first col2im", "batch-last col2im", "channels-first wide",
              "batch-last wide"]


def _force_conv_paths(paths, monkeypatch):
    if paths == "chosen":
        return
    layout, grad_input = paths.split()
    monkeypatch.setattr(kernels, "_SHORT_ROW", 0 if layout == "channels-first" else 10_000)
    monkeypatch.setattr(kernels, "_WIDE_WASTE", 0 if grad_input == "col2im" else 10_000)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, bias, stride, padding", CONV)
@pytest.mark.parametrize("paths", CONV_PATHS, ids=str)
def test_conv2d(x_shape, w_shape, bias, stride, padding, dtype, paths, monkeypatch):
    _force_conv_paths(paths, monkeypatch)
    shapes = [x_shape, w_shape] + ([(w_shape[0],)] if bias else [])

    def fn(x, w, b=None):
        return F(x).conv2d(x, w, b, stride=stride, padding=padding)

    helper_test_op(shapes, fn, dtype=dtype)


# Every conv and pool of `disttrain bench step --model cnn` (bench/step.py CNN_SHAPES), batch
# 2: conv 5x5 C->6 (stride, padding) -> pool 2 -> conv 5x5 6->16 -> pool 2.
# (channels, size, stride, padding) -> (conv1 input, its output size, conv2 input size, its out)
CNN_BENCH = [(1, 28, 1, 0), (1, 28, 1, 2), (1, 28, 2, 0), (3, 32, 1, 0), (3, 32, 2, 2),
             (1, 32, 1, 2)]


def _cnn_bench_layers(channels, size, stride, padding):
    h1 = (size + 2 * padding - 5) // stride + 1
    h2 = h1 // 2 - 4
    return [("conv", (2, channels, size, size), (6, channels, 5, 5), stride, padding),
            ("pool", (2, 6, h1, h1)),
            ("conv", (2, 6, h1 // 2, h1 // 2), (16, 6, 5, 5), 1, 0),
            ("pool", (2, 16, h2, h2))]


CNN_BENCH_LAYERS = sorted({layer for shape in CNN_BENCH for layer in _cnn_bench_layers(*shape)})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer", CNN_BENCH_LAYERS, ids=str)
@pytest.mark.parametrize("paths", CONV_PATHS, ids=str)
def test_cnn_bench_layers(layer, dtype, paths, monkeypatch):
    _force_conv_paths(paths, monkeypatch)
    if layer[0] == "pool":
        helper_test_op([layer[1]], lambda x: F(x).max_pool2d(x, 2), dtype=dtype)
        return
    _, x_shape, w_shape, stride, padding = layer
    helper_test_op([x_shape, w_shape, (w_shape[0],)],
                   lambda x, w, b: F(x).conv2d(x, w, b, stride=stride, padding=padding),
                   dtype=dtype)


@pytest.mark.parametrize("shape", CNN_BENCH, ids=str)
def test_cnn_bench_convs_at_the_bench_batch(shape):
    # The benchmark's batch (64), where a flat index across images reaches its largest.
    # float64: in float32 the weight gradient sums ~37k terms, past the tolerance made for
    # small shapes whichever order they are summed in (float32 is checked at batch 2).
    for _, x_shape, w_shape, stride, padding in _cnn_bench_layers(*shape)[::2]:
        def fn(x, w, b, stride=stride, padding=padding):
            return F(x).conv2d(x, w, b, stride=stride, padding=padding)

        helper_test_op([(64,) + x_shape[1:], w_shape, (w_shape[0],)], fn, dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_input_gradient_after_another_geometry(dtype):
    # The wide input gradient keeps zeros where no output is in a buffer reused between
    # calls; inputs (1, 14, 6) and (2, 6, 6) padded by 1 have the same flat size, but their outputs
    # sit at different places, so each must get its own buffer (or a clean one).
    def fn(x, w):
        return F(x).conv2d(x, w, padding=1)

    for _ in range(2):
        for x_shape in [(1, 2, 14, 6), (2, 2, 6, 6), (1, 2, 14, 6)]:
            helper_test_op([x_shape, (3, 2, 3, 3)], fn, dtype=dtype)
    for w_shape in [(3, 2, 3, 3), (3, 2, 2, 3), (3, 2, 3, 3)]:  # same input, other kernel
        helper_test_op([(2, 2, 6, 6), w_shape], fn, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_same_padded_size_other_padding(dtype):
    # The padded input lives in a buffer reused between calls whose border is zeroed
    # once: 8x8 unpadded and 6x6 padded by 1 share its size, not where the border is.
    # (the 20x20 pair has 18 outputs a row: it takes the other layout, see the next test)
    for x_shape, padding in [((2, 1, 8, 8), 0), ((2, 1, 6, 6), 1), ((2, 1, 8, 8), 0),
                             ((2, 1, 20, 20), 0), ((2, 1, 18, 18), 1), ((2, 1, 20, 20), 0)]:
        helper_test_op([x_shape, (2, 1, 3, 3)],
                       lambda x, w, p=padding: F(x).conv2d(x, w, padding=p), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_graphs_alive_together_keep_their_own_columns(dtype):
    # The kernel reuses its im2col buffer once nothing holds it: two same-shaped convs
    # whose graphs are both alive must not share one.
    def fn(x1, x2, w):
        return F(x1).conv2d(x1, w, padding=1) * F(x1).conv2d(x2, w, padding=1)

    helper_test_op([(2, 3, 6, 6), (2, 3, 6, 6), (4, 3, 3, 3)], fn, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_and_pool_results_alive_together_are_their_own(dtype):
    # Outputs and input gradients of the same shape are reused buffers too: two of each
    # alive at once (x's gradient is the sum of two convs' and of two pools') must not
    # share one.
    def fn(x, w1, w2):
        a, b = F(x).conv2d(x, w1, padding=1), F(x).conv2d(x, w2, padding=1)
        return F(x).max_pool2d(a, 2) * F(x).max_pool2d(b, 2) + F(x).max_pool2d(x, 2)

    helper_test_op([(2, 3, 6, 6), (3, 3, 3, 3), (3, 3, 3, 3)], fn, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out_shape", [(64, 6, 28, 28), (64, 16, 10, 10), (2, 4, 3, 3)], ids=str)
def test_conv2d_bias_is_the_conv_nodes_own(out_shape, dtype):
    # The bias is added by the conv's kernel and its gradient summed by the conv's rule
    # (images first), one node: at the bench's shapes (the largest sums, float32 too),
    # with only the bias requiring grad, against torch.
    n, o, h, _ = out_shape
    c = 3 if o == 6 else 2
    rng = np.random.default_rng(0)
    x, w, b, g = (rng.standard_normal(s).astype(dtype)
                  for s in [(n, c, h + 4, h + 4), (o, c, 5, 5), (o,), out_shape])
    ours, theirs = disttrain.tensor(b, requires_grad=True), torch.tensor(b, requires_grad=True)
    y = ops.conv2d(disttrain.tensor(x), disttrain.tensor(w), ours)
    ty = torch_F.conv2d(torch.tensor(x), torch.tensor(w), theirs)
    assert y.grad_fn.name() == "Conv2dBackward0" and y.grad_fn.next_functions[0][0] is None
    rtol, atol = (1e-4, 1e-4) if dtype == np.float32 else (1e-6, 1e-6)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=rtol, atol=atol)
    y.backward(disttrain.tensor(g))
    ty.backward(torch.tensor(g))
    assert ours.grad.dtype == dtype
    np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_bias_of_another_dtype_is_added_after_the_conv(dtype):
    # torch refuses a bias whose dtype is not the input's; disttrain adds it after the
    # conv (promoting as `+` does) instead of folding it into the kernel, as it always has.
    rng = np.random.default_rng(0)
    other = np.float64 if dtype == np.float32 else np.float32
    x, w = (disttrain.tensor(rng.standard_normal(s).astype(dtype), requires_grad=True)
            for s in [(2, 3, 5, 5), (4, 3, 3, 3)])
    b = disttrain.tensor(rng.standard_normal(4).astype(other), requires_grad=True)
    y = ops.conv2d(x, w, b)
    expected = ops.conv2d(x, w) + ops.reshape(b, (1, -1, 1, 1))
    assert y.dtype == expected.dtype
    np.testing.assert_array_equal(y.data, expected.data)
    y.sum().backward()
    np.testing.assert_allclose(b.grad.data, np.full(4, 2 * 3 * 3), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reuse_from", [0, None], ids=["reused-buffers", "default"])
@pytest.mark.parametrize("shape", [(3, 4), (64, 6, 28, 28), (4, 9000)], ids=str)
def test_relu_into_reused_buffers_as_torch(shape, reuse_from, dtype, monkeypatch):
    # ReLU's output and gradient come from reused buffers from kernels._REUSE_FROM
    # elements on (the first two shapes forced or at the bench's size); two of each,
    # same-shaped and alive together, must stay their own.
    if reuse_from is not None:
        monkeypatch.setattr(kernels, "_REUSE_FROM", reuse_from)

    def fn(a, b):
        ra, rb = a.relu(), (b * 2).relu()
        return ra * rb + ra + a.relu()

    helper_test_op([shape, shape], fn, dtype=dtype)


def test_relu_output_kept_across_steps_and_its_gradient_adopted_by_a_leaf(monkeypatch):
    # A ReLU output the caller keeps is not handed to the next ReLU; a leaf that adopted
    # ReLU's gradient buffer as its .grad accumulates the next backward into it.
    monkeypatch.setattr(kernels, "_REUSE_FROM", 0)
    x = disttrain.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
                         requires_grad=True)
    first = x.relu()
    kept = first.data.copy()
    first.sum().backward()
    grad = x.grad.data.copy()
    second = (x * -1).relu()
    assert not np.shares_memory(first.data, second.data)
    np.testing.assert_array_equal(first.data, kept)
    x.relu().sum().backward()
    np.testing.assert_array_equal(x.grad.data, 2 * grad)


def test_max_pool2d_nan_as_torch():
    # A NaN wins its window (the last one, if several), as in PyTorch's CPU kernel.
    x = np.arange(32, dtype=np.float64).reshape(1, 2, 4, 4)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = x[0, 1, 3, 3] = np.nan
    ours, theirs = disttrain.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out_ours, out_theirs = ops.max_pool2d(ours, 2, 1), torch_F.max_pool2d(theirs, 2, 1)
    np.testing.assert_array_equal(out_ours.detach().numpy(), out_theirs.detach().numpy())
    out_ours.sum().backward()
    out_theirs.sum().backward()
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())


POOL = [((2, 3, 4, 4), 2, None), ((1, 2, 7, 7), 3, None), ((1, 2, 6, 7), 2, 1),
        ((1, 1, 7, 6), 3, 2), ((2, 2, 5, 5), 2, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride", POOL)
def test_max_pool2d(shape, kernel, stride, dtype):
    helper_test_op([shape], lambda x: F(x).max_pool2d(x, kernel, stride), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_ties_go_to_first(dtype):
    x = np.zeros((1, 1, 4, 4), dtype=dtype)
    x[0, 0, 1:3, 1:3] = 1.0
    helper_test_op(None, lambda t: F(t).max_pool2d(t, 2, 1), dtype=dtype, arrays=[x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm(dtype):
    helper_test_op([(4, 5), (5,), (5,)], lambda x, w, b: F(x).layer_norm(x, (5,), w, b),
                   dtype=dtype)
    helper_test_op([(2, 3, 4)], lambda x: F(x).layer_norm(x, (3, 4)), dtype=dtype)
    helper_test_op([(2, 3, 4), (4,)], lambda x, w: F(x).layer_norm(x, [4], w, eps=1e-3),
                   dtype=dtype)


# -- chains --------------------------------------------------------------------------------
CHAINS = [
    ("broadcast-chain", lambda x, y: ((x * y).exp() - y / 3).tanh().sum(dim=0).sigmoid(),
     [(3, 1, 4), (2, 1)]),
    ("mlp", lambda x, w1, b1, w2: ((x @ w1 + b1).relu() @ w2).log_softmax(dim=-1).mean(),
     [(5, 4), (4, 6), (6,), (6, 3)]),
    ("reuse", lambda x: x * x.exp() + x.sqrt() * x - x / (x + 1), [(3, 3)]),
    ("attention", lambda q, k, v: ((q @ k.transpose(-1, -2)) / 2.0).softmax(dim=-1) @ v,
     [(2, 3, 4), (2, 5, 4), (2, 5, 4)]),
    ("norm-and-gelu", lambda x, w: F(x).gelu(F(x).layer_norm(x, (4,)) * w).var(dim=0),
     [(3, 4), (4,)]),
    ("conv-pool-linear", lambda x, k, w: (
        F(x).max_pool2d(F(x).conv2d(x, k, padding=1).relu(), 2).flatten(1) @ w),
     [(2, 1, 6, 6), (2, 1, 3, 3), (18, 3)]),
    ("index-cat-max", lambda x, y: M(x).cat([x[1:], y.unsqueeze(0)]).max(dim=0).values
     * x.amax(), [(3, 4), (4,)]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, shapes", CHAINS, ids=[c[0] for c in CHAINS])
def test_chains(name, fn, shapes, dtype):
    low = 0.1 if name == "reuse" else -2.0
    helper_test_op(shapes, fn, dtype=dtype, low=low)


# -- dtypes --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_kept_with_python_and_numpy_scalars(dtype):
    helper_test_op([(3,)], lambda x: x * 2 + 1 - 0.5 / (x * x + 1) ** 2, dtype=dtype)
    helper_test_op([(3,)], lambda x: x * 2.5 + 3, lambda x: x * np.float64(2.5) + np.int64(3),
                   dtype=dtype)
    helper_test_op([(3,)], lambda x: x.mean() + x.var() + x.std(), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_casts_carry_gradients_back_in_the_input_dtype(dtype):
    helper_test_op([(3, 4)], lambda x: (x.double() * 3).float().exp(), dtype=dtype)
    helper_test_op([(3, 4)], lambda x: x.to(torch.float64) * 3,
                   lambda x: x.to(disttrain.float64) * 3, dtype=dtype)
    helper_test_op([(3, 4)], lambda x: x.float() * 3, dtype=dtype)


def test_mixed_dtype_promotion_follows_torch():
    ints = np.array([1, 2, 3])
    helper_test_op([(3,), ints], lambda x, i: x * i, dtype=np.float32)
    helper_test_op([(3,), ints], lambda x, i: i / x + i - x, dtype=np.float32, low=0.5)
    helper_test_op([ints], lambda i: i / 2)
    helper_test_op([ints], lambda i: i * 0.5)
    helper_test_op([ints, ints], lambda i, j: i / j)
    helper_test_op([(3,), np.array(2.0)], lambda x, s: x * s, dtype=np.float32)
    helper_test_op([(3,), (3,)], lambda x, y: x + y.double(), dtype=np.float32)
    helper_test_op([(3,), np.float64(2.0)], lambda x, s: x * s, dtype=np.float32)


# -- edge cases -----------------------------------------------------------------------------
EDGES = [
    ("sum-0d-dim", lambda s: s.sum(0), [()]),
    ("mean-0d-neg-dim", lambda s: s.mean(-1), [()]),
    ("max-0d-dim", lambda s: s.max(0), [()]),
    ("squeeze-0d", lambda s: s.squeeze(0) * 2, [()]),
    ("expand-0d", lambda s: s.expand(3) * 2, [()]),
    ("stack-0d", lambda s: M(s).stack([s, s * 2]), [()]),
    ("max-elementwise", lambda a, b: a.max(b), [(2, 3), (3,)]),
    ("min-elementwise-fn", lambda a, b: M(a).min(a, b), [(2, 3), (2, 3)]),
    ("clamp-tensor-min", lambda a, b: a.clamp(min=b), [(2, 3), (3,)]),
    ("clamp-tensor-both", lambda a, b, c: a.clamp(b, c + 2), [(2, 3), (3,), (2, 1)]),
    ("index-none-and-array", lambda a: a[None, [0, 0, 1]], [(3, 2)]),
    ("index-0d-tensor", lambda a: a[M(a).tensor(1)], [(3, 2)]),
    ("index-empty-list", lambda a: a[[]], [(3, 2)]),
    ("sum-dim-list", lambda a: a.sum([0, 1]), [(3, 2)]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, shapes", EDGES, ids=[e[0] for e in EDGES])
def test_edge_cases(name, fn, shapes, dtype):
    helper_test_op(shapes, fn, dtype=dtype)


def test_clamp_tensor_bound_ties_go_to_input():
    x = np.array([1.0, 2.0, 3.0])
    lo = np.array([1.0, 2.5, 0.0])
    helper_test_op(None, lambda a, b: a.clamp(min=b), arrays=[x, lo])
    helper_test_op(None, lambda a, b: a.clamp(max=b), arrays=[x, lo])


def test_var_of_single_element_is_nan_like_torch():
    with pytest.warns(UserWarning):
        torch_value = torch.ones(2, 1).var(1)
    with np.errstate(invalid="ignore"):  # 0 * inf, as torch's 0 / 0
        ours = disttrain.ones(2, 1).var(1)
    assert ours.dtype == np.float32
    assert np.isnan(ours.data).all() and torch.isnan(torch_value).all()


# -- the helper itself must be able to fail ------------------------------------------------
@pytest.mark.parametrize("fn_ours, match", [
    (lambda x: x * 2.001, "forward value"),
    (lambda x: x.detach() * 2 + (x - x.detach()) * 3, "gradient of input 0"),
    (lambda x: x.double() * 2, "dtype"),
    (lambda x: (x * 2).reshape(3, 2), "shape"),
], ids=["value", "gradient", "dtype", "shape"])
def test_helper_detects_mismatches(fn_ours, match):
    with pytest.raises(AssertionError, match=match):
        helper_test_op([(2, 3)], lambda x: x * 2, fn_ours, dtype=np.float32)
