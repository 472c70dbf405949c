"""Conv2d and MaxPool2d with torch's other options, against torch: (height, width) pairs
for every size, dilation, padding="same"/"valid", padding modes, groups, max-pool
padding, ceil_mode and return_indices; their error texts; the modules' arguments, reprs,
outputs and gradients. Values and
gradients go through helper_test_op (every conv path forced in turn, as in
tests/autograd/test_ops.py); finite differences in tests/autograd/test_gradcheck.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

import disttrain
import disttrain.nn.functional as F
from disttrain import nn

from ..autograd.helpers import helper_test_op
from ..autograd.test_ops import CONV_PATHS, _force_conv_paths

DTYPES = [np.float32, np.float64]

# (x shape, w shape, bias, stride, padding, dilation)
CONV = [
    ((2, 3, 9, 8), (4, 3, 3, 3), True, (2, 1), 0, 1),
    ((1, 2, 7, 10), (3, 2, 3, 5), False, (1, 3), (1, 2), 1),
    ((2, 2, 8, 8), (3, 2, 3, 3), True, 1, (0, 2), 1),
    ((2, 2, 9, 9), (3, 2, 3, 3), True, 1, 1, 2),
    ((1, 3, 11, 9), (2, 3, 3, 2), False, (2, 1), (2, 1), (2, 3)),
    ((2, 2, 6, 7), (3, 2, 2, 4), True, 1, "same", 1),  # even kernel: odd pixel bottom/right
    ((1, 2, 9, 9), (2, 2, 3, 3), True, 1, "same", (2, 1)),
    ((2, 2, 6, 5), (3, 2, 3, 2), False, (2, 1), "valid", 1),
    ((2, 1, 5, 5), (2, 1, 5, 5), True, 1, "same", 1),
]

def _lib(t):
    return torch_F if isinstance(t, torch.Tensor) else F


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, bias, stride, padding, dilation", CONV, ids=str)
@pytest.mark.parametrize("paths", CONV_PATHS, ids=str)
def test_conv2d_options_as_torch(x_shape, w_shape, bias, stride, padding, dilation, dtype,
                                 paths, monkeypatch):
    _force_conv_paths(paths, monkeypatch)
    shapes = [x_shape, w_shape] + ([(w_shape[0],)] if bias else [])

    def fn(x, w, b=None):
        return _lib(x).conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)

    helper_test_op(shapes, fn, dtype=dtype)


# (x shape, kernel, stride, padding, dilation, ceil_mode)
POOL = [
    ((2, 3, 6, 9), (2, 3), None, 0, 1, False),
    ((1, 2, 7, 8), (3, 2), (2, 1), 0, 1, False),
    ((1, 2, 7, 7), 3, 2, 1, 1, False),
    ((2, 2, 6, 6), 3, 2, 1, 1, True),
    ((1, 2, 5, 7), 2, None, 0, 1, True),
    ((1, 1, 9, 8), 2, 1, 0, 2, False),
    ((1, 2, 10, 9), (3, 2), (2, 3), (1, 1), (2, 1), True),
    ((2, 1, 5, 5), 4, 3, 2, 1, True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", POOL, ids=str)
def test_max_pool2d_options_as_torch(shape, kernel, stride, padding, dilation, ceil_mode, dtype):
    def fn(x):
        return _lib(x).max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode)

    helper_test_op([shape], fn, dtype=dtype)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", POOL, ids=str)
def test_max_pool2d_return_indices_as_torch(shape, kernel, stride, padding, dilation,
                                            ceil_mode):
    x = np.random.default_rng(1).standard_normal(shape)
    ours, our_idx = F.max_pool2d(disttrain.tensor(x), kernel, stride, padding, dilation,
                                 ceil_mode=ceil_mode, return_indices=True)
    theirs, their_idx = torch_F.max_pool2d(torch.from_numpy(x), kernel, stride, padding,
                                           dilation, ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(our_idx.numpy(), their_idx.numpy())
    assert our_idx.dtype == np.int64


def test_max_pool2d_unbatched_return_indices_as_torch():
    x = np.random.default_rng(2).standard_normal((2, 5, 6))
    ours = F.max_pool2d(disttrain.tensor(x), 2, 1, 1, return_indices=True)
    theirs = torch_F.max_pool2d(torch.from_numpy(x), 2, 1, 1, return_indices=True)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("fill", [-np.inf, np.nan], ids=["-inf", "nan"])
def test_max_pool2d_padding_never_wins_as_torch(fill):
    """Windows of -inf (or NaN) beside the padding: torch's kernel never looks at the
    padding, so the winner (and where the gradient goes) is an input element."""
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 6))
    x[0, 0, :2, :] = fill
    x[0, 1, :, :3] = -np.inf
    x[0, 1, 4, 1] = np.nan

    def fn(t):
        return _lib(t).max_pool2d(t, 3, 2, 1, ceil_mode=True)

    helper_test_op(None, fn, arrays=[x])
    ours = F.max_pool2d(disttrain.tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)[1]
    theirs = torch_F.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True,
                                return_indices=True)[1]
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def _torch_error(fn_torch):
    with pytest.raises(RuntimeError) as caught:
        fn_torch()
    return str(caught.value).splitlines()[0]


X, W = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
CONV_ERRORS = [
    {"stride": 2, "padding": "same"}, {"padding": "foo"}, {"padding": -1}, {"stride": 0},
    {"stride": -1}, {"dilation": 0}, {"dilation": 3}, {"stride": (1, 2, 3)},
    {"padding": (1, 1, 1)},
]


@pytest.mark.parametrize("kwargs", CONV_ERRORS, ids=str)
def test_conv2d_bad_arguments_raise_torchs_text(kwargs):
    expected = _torch_error(lambda: torch_F.conv2d(torch.from_numpy(X), torch.from_numpy(W),
                                                   **kwargs))
    with pytest.raises(RuntimeError) as caught:
        F.conv2d(disttrain.tensor(X), disttrain.tensor(W), **kwargs)
    assert str(caught.value) == expected


POOL_ERRORS = [
    {"kernel_size": 2, "padding": 2}, {"kernel_size": 2, "padding": -1},
    {"kernel_size": 2, "stride": 0}, {"kernel_size": 2, "dilation": 0},
    {"kernel_size": 0}, {"kernel_size": 0, "stride": 1}, {"kernel_size": 3, "dilation": 3},
    {"kernel_size": 2, "stride": -1}, {"kernel_size": (2, 2, 2)},
    {"kernel_size": 2, "stride": (1, 1, 1)}, {"kernel_size": 2, "padding": (1, 1, 1)},
    {"kernel_size": 2, "dilation": (1, 1, 1)}, {"kernel_size": (3, 2), "padding": (1, 2)},
]


@pytest.mark.parametrize("kwargs", POOL_ERRORS, ids=str)
def test_max_pool2d_bad_arguments_raise_torchs_text(kwargs):
    expected = _torch_error(lambda: torch_F.max_pool2d(torch.from_numpy(X), **kwargs))
    with pytest.raises(RuntimeError) as caught:
        F.max_pool2d(disttrain.tensor(X), **kwargs)
    assert str(caught.value) == expected


MODULES = [
    lambda lib: lib.Conv2d(2, 3, (3, 5), stride=(1, 2), padding=(1, 2), bias=False),
    lambda lib: lib.Conv2d(2, 3, 3, padding="same", dilation=2),
    lambda lib: lib.Conv2d(2, 3, 2, padding="valid"),
    lambda lib: lib.MaxPool2d((2, 3), padding=1, ceil_mode=True),
    lambda lib: lib.MaxPool2d(3, stride=1, dilation=2),
    lambda lib: lib.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
    lambda lib: lib.Conv2d(2, 3, (2, 4), padding="same", padding_mode="circular", bias=False),
    lambda lib: lib.Conv2d(2, 3, 3, stride=2, padding=(1, 2), padding_mode="replicate"),
    lambda lib: lib.Conv2d(2, 4, 3, groups=2, padding="same", padding_mode="reflect"),
    lambda lib: lib.Conv2d(2, 2, (3, 1), groups=2, bias=False),
]


@pytest.mark.parametrize("make", MODULES)
def test_modules_take_torchs_arguments_and_print_as_torch(make):
    """Same repr; same output, input gradient and parameter gradients from torch's weights."""
    ours, theirs = make(nn), make(torch.nn)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(4).standard_normal((2, 2, 9, 10))
    ours.double(), theirs.double()
    our_params = dict(ours.named_parameters())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(our_params[name].detach().numpy()))
    x_ours = disttrain.tensor(x, requires_grad=True)
    x_theirs = torch.from_numpy(x).requires_grad_()
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    g = np.random.default_rng(6).standard_normal(out_theirs.shape)
    out_ours.backward(disttrain.tensor(g))
    out_theirs.backward(torch.from_numpy(g))
    pairs = [(out_ours, out_theirs), (x_ours.grad, x_theirs.grad)] + [
        (our_params[name].grad, p.grad) for name, p in theirs.named_parameters()]
    for a, b in pairs:
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-10,
                                   atol=1e-10)


def test_max_pool2d_module_return_indices_as_torch():
    x = np.random.default_rng(5).standard_normal((1, 2, 6, 6))
    ours = nn.MaxPool2d(2, return_indices=True)(disttrain.tensor(x))
    theirs = torch.nn.MaxPool2d(2, return_indices=True)(torch.from_numpy(x))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_conv2d_module_same_padding_with_stride_raises_torchs_value_error():
    with pytest.raises(ValueError) as expected:
        torch.nn.Conv2d(1, 2, 3, padding="same", stride=2)
    with pytest.raises(ValueError) as caught:
        nn.Conv2d(1, 2, 3, padding="same", stride=2)
    assert str(caught.value) == str(expected.value)


# torch prints the choices as a Python set, in no fixed order: compare what they name
@pytest.mark.parametrize("kwargs, pattern", [
    ({"padding": "foo"}, r"Invalid padding string 'foo', should be one of \{'(valid|same)', "
                         r"'(valid|same)'\}"),
    ({"padding_mode": "foo"}, r"padding_mode must be one of \{.*'zeros'.*\}, but got "
                              r"padding_mode='foo'"),
], ids=str)
def test_conv2d_module_bad_strings_raise_torchs_value_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        torch.nn.Conv2d(1, 2, 3, **kwargs)
    with pytest.raises(ValueError, match=pattern):
        nn.Conv2d(1, 2, 3, **kwargs)


# (x shape, w shape, bias, groups, stride, padding): two groups, depthwise (groups = C, two
# outputs each), grouped with stride and "same" padding, and an unbatched input
GROUPED = [
    ((2, 4, 7, 6), (6, 2, 3, 3), True, 2, 1, 0),
    ((2, 3, 6, 6), (6, 1, 3, 3), False, 3, 1, 1),
    ((1, 6, 9, 8), (3, 2, 3, 2), True, 3, 1, "same"),
    ((4, 7, 7), (4, 2, 3, 3), True, 2, 2, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, bias, groups, stride, padding", GROUPED, ids=str)
def test_conv2d_groups_as_torch(x_shape, w_shape, bias, groups, stride, padding, dtype):
    shapes = [x_shape, w_shape] + ([(w_shape[0],)] if bias else [])

    def fn(x, w, b=None):
        return _lib(x).conv2d(x, w, b, stride=stride, padding=padding, groups=groups)

    helper_test_op(shapes, fn, dtype=dtype)


@pytest.mark.parametrize("x_shape, w_shape, groups", [
    ((1, 4, 5, 5), (3, 2, 3, 3), 2), ((1, 3, 5, 5), (4, 1, 3, 3), 2),
    ((1, 3, 5, 5), (4, 1, 3, 3), 0), ((1, 3, 5, 5), (4, 1, 3, 3), -1),
], ids=str)
def test_conv2d_bad_groups_raise_torchs_text(x_shape, w_shape, groups):
    x, w = np.zeros(x_shape), np.zeros(w_shape)
    expected = _torch_error(lambda: torch_F.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                                   groups=groups))
    with pytest.raises(RuntimeError) as caught:
        F.conv2d(disttrain.tensor(x), disttrain.tensor(w), groups=groups)
    assert str(caught.value) == expected


@pytest.mark.parametrize("args, kwargs", [((3, 4, 3), {"groups": 2}), ((4, 3, 3), {"groups": 2}),
                                          ((4, 4, 3), {"groups": 0})], ids=str)
def test_conv2d_module_bad_groups_raise_torchs_value_error(args, kwargs):
    with pytest.raises(ValueError) as expected:
        torch.nn.Conv2d(*args, **kwargs)
    with pytest.raises(ValueError) as caught:
        nn.Conv2d(*args, **kwargs)
    assert str(caught.value) == str(expected.value)


# -- average pooling ---------------------------------------------------------------------
# (x shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOL = [
    ((2, 3, 6, 8), 2, None, 0, False, True, None),
    ((1, 2, 7, 8), (3, 2), (2, 1), 0, False, True, None),
    ((1, 2, 7, 7), 3, 2, 1, False, True, None),
    ((1, 2, 7, 7), 3, 2, 1, False, False, None),
    ((2, 2, 6, 6), 3, 2, 1, True, True, None),
    ((2, 2, 6, 6), 3, 2, 1, True, False, None),
    ((1, 2, 5, 7), 2, None, 0, True, True, None),
    ((1, 1, 9, 8), (4, 3), (3, 2), (2, 1), True, False, None),
    ((2, 2, 6, 5), 3, 1, 1, False, True, 4),
    ((3, 6, 5), 2, 1, 1, True, False, None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor",
                         AVG_POOL, ids=str)
def test_avg_pool2d_as_torch(shape, kernel, stride, padding, ceil_mode, count_include_pad,
                             divisor, dtype):
    def fn(x):
        return _lib(x).avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad,
                                  divisor)

    helper_test_op([shape], fn, dtype=dtype)


def test_avg_pool2d_of_integers_truncates_as_torch():
    x = np.random.default_rng(7).integers(-50, 50, (1, 2, 5, 5))
    ours = F.avg_pool2d(disttrain.tensor(x), 3, 2, 1, ceil_mode=True)
    theirs = torch_F.avg_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("shape, output_size", [
    ((2, 3, 8, 6), 1), ((2, 3, 8, 6), (4, 3)), ((1, 2, 7, 5), (3, 2)), ((1, 2, 5, 7), (None, 3)),
    ((2, 4, 6), (4, 4)), ((1, 1, 5, 5), (7, 9)),
], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_avg_pool2d_as_torch(shape, output_size, dtype):
    helper_test_op([shape], lambda x: _lib(x).adaptive_avg_pool2d(x, output_size), dtype=dtype)


def test_adaptive_avg_pool2d_to_nothing_as_torch():
    # torch's backward refuses an empty output, so only the forward is compared
    helper_test_op([(1, 2, 5, 4)], lambda x: _lib(x).adaptive_avg_pool2d(x, 0), grad=False)


AVG_ERRORS = [
    ("avg_pool2d", {"kernel_size": 2, "padding": 2}),
    ("avg_pool2d", {"kernel_size": 2, "padding": -1}),
    ("avg_pool2d", {"kernel_size": 2, "stride": 0}), ("avg_pool2d", {"kernel_size": 0}),
    ("avg_pool2d", {"kernel_size": 0, "stride": 1}), ("avg_pool2d", {"kernel_size": 6}),
    ("avg_pool2d", {"kernel_size": 2, "divisor_override": 0}),
    ("avg_pool2d", {"kernel_size": (2, 2, 2)}), ("avg_pool2d", {"kernel_size": 2, "stride": -1}),
    ("avg_pool2d", {"kernel_size": 2, "stride": (1, 1, 1)}),
    ("avg_pool2d", {"kernel_size": 2, "padding": (1, 1, 1)}),
    ("adaptive_avg_pool2d", {"output_size": (1, 2, 3)}),
    ("adaptive_avg_pool2d", {"output_size": -1}),
]


@pytest.mark.parametrize("op, kwargs", AVG_ERRORS, ids=str)
def test_avg_pools_bad_arguments_raise_torchs_text(op, kwargs):
    expected = _torch_error(lambda: getattr(torch_F, op)(torch.from_numpy(X), **kwargs))
    with pytest.raises(RuntimeError) as caught:
        getattr(F, op)(disttrain.tensor(X), **kwargs)
    assert str(caught.value) == expected


@pytest.mark.parametrize("op, shape", [("avg_pool2d", (1, 0, 3, 3)),
                                       ("adaptive_avg_pool2d", (3, 3)),
                                       ("adaptive_avg_pool2d", (1, 2, 0, 3))], ids=str)
def test_avg_pools_bad_inputs_raise_torchs_text(op, shape):
    expected = _torch_error(lambda: getattr(torch_F, op)(torch.zeros(shape), 2))
    with pytest.raises(RuntimeError) as caught:
        getattr(F, op)(disttrain.zeros(*shape), 2)
    assert str(caught.value) == expected


@pytest.mark.parametrize("make", [
    lambda lib: lib.AvgPool2d(2), lambda lib: lib.AvgPool2d((2, 3), 1, 1, True, False, 3),
    lambda lib: lib.AdaptiveAvgPool2d((None, 3)), lambda lib: lib.AdaptiveAvgPool2d(1),
    lambda lib: lib.Sequential(lib.Conv2d(2, 4, 3, padding=1), lib.ReLU(),
                               lib.AdaptiveAvgPool2d((1, 1)), lib.Flatten(), lib.Linear(4, 3)),
])
def test_avg_pool_modules_as_torch(make):
    test_modules_take_torchs_arguments_and_print_as_torch(make)
