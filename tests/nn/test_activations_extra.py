"""ReLU6, Hardsigmoid, Hardswish, SELU, CELU, PReLU, Threshold, Tanhshrink, Softshrink,
Hardshrink, GLU and Softmin against torch: values and input gradients at their kinks, zeros
and large magnitudes (test_activations_more's points and tolerances), parameter gradients,
reprs and argument errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from .helpers import same_error
from .test_activations_more import DTYPES, _inputs, assert_matches, compare

# (name, our module, torch's module, our functional, torch's functional, kinks)
CASES = [
    ("relu6", nn.ReLU6(), torch.nn.ReLU6(), F.relu6, TF.relu6, (6.0,)),
    ("hardsigmoid", nn.Hardsigmoid(), torch.nn.Hardsigmoid(), F.hardsigmoid, TF.hardsigmoid,
     ()),
    ("hardswish", nn.Hardswish(), torch.nn.Hardswish(), F.hardswish, TF.hardswish, ()),
    ("selu", nn.SELU(), torch.nn.SELU(), F.selu, TF.selu, ()),
    ("celu", nn.CELU(), torch.nn.CELU(), F.celu, TF.celu, ()),
    ("celu-alpha", nn.CELU(0.5), torch.nn.CELU(0.5), lambda x: F.celu(x, 0.5),
     lambda x: TF.celu(x, 0.5), ()),
    ("threshold", nn.Threshold(0.5, -2.0), torch.nn.Threshold(0.5, -2.0),
     lambda x: F.threshold(x, 0.5, -2.0), lambda x: TF.threshold(x, 0.5, -2.0), (0.5,)),
    ("tanhshrink", nn.Tanhshrink(), torch.nn.Tanhshrink(), F.tanhshrink, TF.tanhshrink, ()),
    ("softshrink", nn.Softshrink(0.7), torch.nn.Softshrink(0.7),
     lambda x: F.softshrink(x, 0.7), lambda x: TF.softshrink(x, 0.7), (0.7, -0.7)),
    ("hardshrink", nn.Hardshrink(), torch.nn.Hardshrink(), F.hardshrink, TF.hardshrink,
     (0.5, -0.5)),
    ("glu", nn.GLU(), torch.nn.GLU(), F.glu, TF.glu, ()),
    ("glu-dim0", nn.GLU(0), torch.nn.GLU(0), lambda x: F.glu(x, 0), lambda x: TF.glu(x, 0),
     ()),
    ("softmin", nn.Softmin(1), torch.nn.Softmin(1), lambda x: F.softmin(x, 1),
     lambda x: TF.softmin(x, 1), ()),
]


def _rtol(name, dtype):
    # tanhshrink's x - tanh(x) cancels near 0 (1e-20 - 1e-20): its relative error there is
    # rounding's, in both libraries, so float64 agrees to 1e-9 and float32 to 1e-3 there
    if name == "tanhshrink":
        return 1e-9 if dtype == np.float64 else 1e-3
    return None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_module_matches_torch(case, dtype):
    name, ours, theirs, _, _, kinks = case
    assert repr(ours) == repr(theirs)
    compare(ours, theirs, _inputs(kinks), dtype, _rtol(name, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_functional_matches_torch(case, dtype):
    name, _, _, ours, theirs, kinks = case
    compare(ours, theirs, _inputs(kinks), dtype, _rtol(name, dtype))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_nan_propagates_as_torchs(case):
    _, _, _, ours, theirs, _ = case
    x = np.array([[1.0, math.nan, -1.0, 2.0], [0.5, -4.0, 3.0, math.nan]])
    assert_matches(ours(disttrain.tensor(x)), theirs(torch.tensor(x)), np.float64)


@pytest.mark.parametrize("make", [
    lambda lib: lib.ReLU6(True), lambda lib: lib.SELU(True), lambda lib: lib.CELU(2.0, True),
    lambda lib: lib.Threshold(0.1, 2, True), lambda lib: lib.Hardswish(True),
    lambda lib: lib.Softmin(), lambda lib: lib.PReLU(3, 0.1),
])
def test_reprs_as_torch(make):
    assert repr(make(nn)) == repr(make(torch.nn))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, num_parameters", [((4, 3), 3), ((2, 3, 5), 3), ((2, 3, 4, 4), 1),
                                                   ((5,), 1)], ids=str)
def test_prelu_values_and_gradients_as_torch(shape, num_parameters, dtype):
    ours = nn.PReLU(num_parameters, 0.3, dtype=dtype)
    theirs = torch.nn.PReLU(num_parameters, 0.3,
                            dtype=torch.float64 if dtype == np.float64 else torch.float32)
    assert [n for n, _ in ours.named_parameters()] == ["weight"]
    slopes = np.linspace(-0.5, 0.7, num_parameters).astype(dtype)
    ours.weight.data[...] = slopes
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(slopes))
    compare(ours, theirs, np.random.default_rng(2).standard_normal(shape), dtype)
    np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(),
                               rtol=1e-10 if dtype == np.float64 else 1e-4, atol=1e-6)


@pytest.mark.parametrize("ours, theirs", [
    (lambda: F.glu(disttrain.zeros(2, 3), 1), lambda: TF.glu(torch.zeros(2, 3), 1)),
    (lambda: F.glu(disttrain.tensor(1.0)), lambda: TF.glu(torch.tensor(1.0))),
    (lambda: F.prelu(disttrain.zeros(2, 3), disttrain.zeros(2)),
     lambda: TF.prelu(torch.zeros(2, 3), torch.zeros(2))),
    (lambda: F.prelu(disttrain.zeros(3), disttrain.zeros(3)),
     lambda: TF.prelu(torch.zeros(3), torch.zeros(3))),
    (lambda: F.softshrink(disttrain.zeros(2), -1), lambda: TF.softshrink(torch.zeros(2), -1)),
    (lambda: F.celu(disttrain.zeros(2), 0.0), lambda: TF.celu(torch.zeros(2), 0.0)),
])
def test_argument_errors_as_torch(ours, theirs):
    same_error(ours, theirs, RuntimeError)
