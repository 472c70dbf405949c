"""Gradients at NaN and infinity, against PyTorch's.

A diverging run feeds NaN and inf into the backward pass; the engine must then give the
gradients torch gives, not numpy's own answers for the same arithmetic (inf * 0 is NaN in
numpy, while torch's masked rules give 0; a NaN input compares false everywhere). Every
case runs the same op on the same values in both libraries, with upstream gradients that
hold NaN, inf and -inf as well as ordinary values, and compares bit for bit where either
side is not finite.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import disttrain
import disttrain.nn.functional as F_ours

NAN, INF = float("nan"), float("inf")
# Every kind of input value an elementwise rule can meet: NaN, both infinities, zero, the
# kinks of clamp/hardtanh at +-1, and ordinary values on both sides.
X = [NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0, NAN]
# Upstream gradients: each x meets an ordinary value, and also NaN and +-inf.
G = [1.0, 2.0, -1.0, INF, NAN, -INF, 0.5, INF, NAN, -INF, 1.5, NAN]

UNARY = {
    "relu": (lambda m, x: m.relu(x), None),
    "relu_module": (lambda m, x: (torch.nn.ReLU() if m is torch else disttrain.nn.ReLU())(x),
                    None),
    "leaky_relu": (lambda m, x: (torch.nn.functional if m is torch else F_ours).leaky_relu(
        x, 0.1), None),
    "clamp": (lambda m, x: m.clamp(x, -1.0, 1.0), None),
    "clamp_min": (lambda m, x: m.clamp(x, min=0.0), None),
    "clamp_max": (lambda m, x: m.clamp(x, max=0.0), None),
    "abs": (lambda m, x: m.abs(x), None),
    "neg": (lambda m, x: -x, None),
    "tanh": (lambda m, x: m.tanh(x), None),
    "sigmoid": (lambda m, x: m.sigmoid(x), None),
    "exp": (lambda m, x: m.exp(x), None),
    "square": (lambda m, x: x * x, None),
}

BINARY = {
    "maximum": lambda m, a, b: m.maximum(a, b),
    "minimum": lambda m, a, b: m.minimum(a, b),
    "mul": lambda m, a, b: a * b,
    "add": lambda m, a, b: a + b,
    "sub": lambda m, a, b: a - b,
}

REDUCTIONS = {
    "max_all": lambda m, x: m.max(x),
    "min_all": lambda m, x: m.min(x),
    "amax_dim": lambda m, x: m.amax(x, dim=1),
    "amin_dim": lambda m, x: m.amin(x, dim=1),
    "max_dim": lambda m, x: m.max(x, dim=1)[0],
    "min_dim": lambda m, x: m.min(x, dim=0)[0],
    "sum": lambda m, x: m.sum(x, dim=1),
}


def _grads(fn, arrays, grad, dtype):
    """fn's input gradients in torch and in disttrain for the same inputs and output grad."""
    out = []
    for m, make in ((torch, torch.tensor), (disttrain, disttrain.tensor)):
        leaves = [make(a.astype(dtype), requires_grad=True) for a in arrays]
        y = fn(m, *leaves)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's note on inf - inf
            y.backward(make(np.broadcast_to(grad, tuple(y.shape)).astype(dtype)))
        out.append([np.asarray(leaf.grad.detach().numpy() if m is torch else leaf.grad.numpy())
                    for leaf in leaves])
    return out


def _same(ours, theirs, what):
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} != torch's {theirs.dtype}"
    # Not-finite entries must be the same kind (NaN where NaN, inf of the same sign);
    # finite ones equal to rounding.
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)), f"{what}: NaNs {ours} vs {theirs}"
    finite = np.isfinite(theirs)
    assert np.array_equal(ours[~finite & ~np.isnan(theirs)], theirs[~finite & ~np.isnan(theirs)]), \
        f"{what}: infinities {ours} vs {theirs}"
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-6, atol=1e-6, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradients_at_nan_and_inf(name, dtype):
    fn, _ = UNARY[name]
    theirs, ours = _grads(fn, [np.array(X)], np.array(G), dtype)
    _same(ours[0], theirs[0], name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_of_a_large_nan_free_tensor_with_one_nan_gradient(dtype):
    # The fast path (g * (o > 0)) must hand over to the exact rule when only the upstream
    # gradient is not finite, at a size where the reusable buffers are in play.
    x = np.random.default_rng(0).standard_normal((64, 6, 24, 24))
    g = np.ones_like(x)
    negative = np.argwhere(x < 0)[0]
    g[tuple(negative)] = INF
    theirs, ours = _grads(lambda m, t: m.relu(t), [x], g, dtype)
    _same(ours[0], theirs[0], "relu")
    assert ours[0][tuple(negative)] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_gradients_at_nan_and_inf(name, dtype):
    a = np.array(X)
    b = np.array([0.0, NAN, -INF, 0.0, 0.0, 1.0, NAN, 2.0, -0.5, INF, -3.0, NAN])
    theirs, ours = _grads(BINARY[name], [a, b], np.array(G), dtype)
    for side in (0, 1):
        _same(ours[side], theirs[side], f"{name}, input {side}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("rows", [
    [[1.0, NAN, 2.0, NAN], [3.0, 3.0, -1.0, 0.0]],    # NaN ties in one row, a tie in the other
    [[INF, 1.0, INF, 0.0], [-INF, -INF, -2.0, NAN]],  # infinite maxima and minima
    [[1.0, 2.0, 2.0, 0.0], [5.0, -5.0, 5.0, 5.0]],    # ties only
])
def test_reduction_gradients_with_nan_and_ties(name, rows, dtype):
    theirs, ours = _grads(REDUCTIONS[name], [np.array(rows)], np.array(1.5), dtype)
    _same(ours[0], theirs[0], name)
