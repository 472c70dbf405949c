"""SiLU, Softplus, ELU, Hardtanh, LogSigmoid, Mish, Softsign, one_hot, pad and normalize
against torch: values and input gradients at the kinks, the thresholds, zeros and large
magnitudes, reprs, and every argument error's type and text."""

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

DTYPES = [np.float64, np.float32]
# float64: the compositions reach torch's values and gradients to 1e-13 at every point
# below, so any relative difference over 1e-12 fails, however small the value (the 1e-44
# tails included). float32: the O(1) terms that cancel where a gradient crosses zero (silu's
# near x = -1.28) differ by float32 rounding, 1e-7 absolute, so 1e-6 absolute is allowed.
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
ATOL = {np.float64: 0.0, np.float32: 1e-6}

# zeros of both signs, tiny and large magnitudes, exp's float32/float64 overflow points
POINTS = [0.0, -0.0, 1e-20, -1e-20, 1e-10, -1e-10, 1e-5, -1e-5, 0.5, -0.5, 1.0, -1.0, 2.0,
          -2.0, 3.0, -3.0, 19.5, -19.5, 20.0, -20.0, 20.5, -20.5, 37.0, -37.0, 50.0, -50.0,
          88.0, -88.0, 100.0, -100.0, 709.0, -709.0, 1000.0, -1000.0]


def _inputs(kinks=()):
    """POINTS, the case's own kinks and a random spread, in one 2-D array."""
    spread = np.random.default_rng(0).uniform(-6, 6, size=45).tolist()
    values = POINTS + list(kinks) + spread
    values += [0.0] * (-len(values) % 8)
    return np.array(values).reshape(-1, 8)


def assert_matches(ours, theirs, dtype, rtol=None, atol=None):
    """Same shape and values within the dtype's tolerance; NaN where torch has NaN."""
    ours = ours.data if isinstance(ours, disttrain.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=rtol or RTOL[dtype],
                               atol=ATOL[dtype] if atol is None else atol)


def compare(ours_fn, torch_fn, x, dtype, rtol=None, atol=None):
    """Forward and backward (a random output gradient) in both; values and x.grad match."""
    x = np.asarray(x, dtype=dtype)
    x_ours = disttrain.tensor(x, requires_grad=True)
    x_torch = torch.tensor(x, requires_grad=True)
    out, out_torch = ours_fn(x_ours), torch_fn(x_torch)
    assert out.dtype == np.dtype(dtype)
    assert_matches(out, out_torch, dtype, rtol, atol)
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    out.backward(grad)
    out_torch.backward(torch.from_numpy(grad))
    assert_matches(x_ours.grad, x_torch.grad, dtype, rtol, atol)


# (name, our module, torch's module, our functional, torch's functional, kinks)
CASES = [
    ("silu", nn.SiLU(), torch.nn.SiLU(), F.silu, TF.silu, ()),
    ("softplus", nn.Softplus(), torch.nn.Softplus(), F.softplus, TF.softplus, ()),
    ("softplus-beta", nn.Softplus(2.0, 10.0), torch.nn.Softplus(2.0, 10.0),
     lambda x: F.softplus(x, beta=2.0, threshold=10.0),
     lambda x: TF.softplus(x, beta=2.0, threshold=10.0), (5.0, 5.0 + 1e-12, 5.0 - 1e-12)),
    ("softplus-small-beta", nn.Softplus(0.5, 5.0), torch.nn.Softplus(0.5, 5.0),
     lambda x: F.softplus(x, 0.5, 5.0), lambda x: TF.softplus(x, 0.5, 5.0), (10.0,)),
    ("elu", nn.ELU(), torch.nn.ELU(), F.elu, TF.elu, ()),
    ("elu-alpha", nn.ELU(0.3), torch.nn.ELU(0.3), lambda x: F.elu(x, 0.3),
     lambda x: TF.elu(x, 0.3), ()),
    ("hardtanh", nn.Hardtanh(), torch.nn.Hardtanh(), F.hardtanh, TF.hardtanh, ()),
    ("hardtanh-bounds", nn.Hardtanh(-2.5, 0.25), torch.nn.Hardtanh(-2.5, 0.25),
     lambda x: F.hardtanh(x, -2.5, 0.25), lambda x: TF.hardtanh(x, -2.5, 0.25),
     (-2.5, 0.25)),
    ("logsigmoid", nn.LogSigmoid(), torch.nn.LogSigmoid(), F.logsigmoid, TF.logsigmoid, ()),
    ("mish", nn.Mish(), torch.nn.Mish(), F.mish, TF.mish, ()),
    ("softsign", nn.Softsign(), torch.nn.Softsign(), F.softsign, TF.softsign, ()),
]


def _rtol(name, dtype):
    # softsign's float32 gradient: torch's division backward, -g * ((x / b) / b), and ours,
    # -g * x / (b * b), round differently before 1 / b - |x| / b**2 cancels (1000x at
    # |x| = 1000), so they agree to 1e-4 there; float64 still agrees to 1e-12.
    return 1e-4 if name == "softsign" and dtype == np.float32 else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_module_matches_torch(case, dtype):
    name, ours, theirs, _, _, kinks = case
    compare(ours, theirs, _inputs(kinks), dtype, _rtol(name, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_functional_matches_torch(case, dtype):
    name, _, _, ours, theirs, kinks = case
    compare(ours, theirs, _inputs(kinks), dtype, _rtol(name, dtype))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_nan_propagates_as_torchs(case):
    """NaN in, NaN out. (Only values: torch's hardtanh and elu gradients at NaN differ
    between its vectorised and scalar loops, so depend on the element's position.)"""
    _, _, _, ours, theirs, _ = case
    x = np.array([1.0, math.nan, -1.0])
    assert_matches(ours(disttrain.tensor(x)), theirs(torch.tensor(x)), np.float64)


def test_gradients_at_the_kinks_are_torchs_exactly():
    """The subgradients torch picks: hardtanh 0 at its bounds, elu alpha at 0, softplus 1
    above its threshold and sigmoid at it."""
    cases = [
        (lambda x: F.hardtanh(x, -1.0, 2.0), [-1.0, 2.0, -1.5, 2.5, 0.0], [0, 0, 0, 0, 1]),
        (lambda x: F.elu(x, 0.5), [0.0, -0.0, 1.0], [0.5, 0.5, 1.0]),
        (F.softplus, [20.5, 1000.0], [1.0, 1.0]),
        (lambda x: F.softplus(x, 2.0, 10.0), [5.0], [1 / (1 + math.exp(-10.0))]),
    ]
    for fn, x, expected in cases:
        x = disttrain.tensor(np.array(x), requires_grad=True)
        fn(x).sum().backward()
        np.testing.assert_array_equal(x.grad.data, np.array(expected, dtype=np.float64))


def test_large_inputs_stay_finite_and_tiny_tails_survive():
    """No overflow at |x| = 1000, and the tails log1p / expm1 keep (torch's values)."""
    x = disttrain.tensor(np.array([-1000.0, -100.0, 1e-20, 1000.0]), requires_grad=True)
    for fn in (F.silu, F.softplus, F.elu, F.logsigmoid, F.mish):
        x.grad = None
        fn(x).sum().backward()
        assert np.all(np.isfinite(x.grad.data)), fn.__name__
    assert F.softplus(x).data[1] == pytest.approx(3.720075976020836e-44, rel=1e-15)
    assert F.elu(x).data[2] == 1e-20


REPRS = [
    (nn.SiLU(), torch.nn.SiLU()), (nn.SiLU(True), torch.nn.SiLU(True)),
    (nn.Softplus(), torch.nn.Softplus()), (nn.Softplus(2, 10), torch.nn.Softplus(2, 10)),
    (nn.ELU(), torch.nn.ELU()), (nn.ELU(0.5, inplace=True), torch.nn.ELU(0.5, inplace=True)),
    (nn.Hardtanh(), torch.nn.Hardtanh()), (nn.Hardtanh(-2, 3), torch.nn.Hardtanh(-2, 3)),
    (nn.Hardtanh(0.0, 6.0, True), torch.nn.Hardtanh(0.0, 6.0, True)),
    (nn.LogSigmoid(), torch.nn.LogSigmoid()), (nn.Mish(), torch.nn.Mish()),
    (nn.Mish(inplace=True), torch.nn.Mish(inplace=True)), (nn.Softsign(), torch.nn.Softsign()),
]


@pytest.mark.parametrize("ours,theirs", REPRS, ids=lambda m: repr(m))
def test_repr_matches_torch(ours, theirs):
    assert repr(ours) == repr(theirs)
    assert repr(nn.Sequential(ours)) == repr(torch.nn.Sequential(theirs))


def test_hardtanh_argument_errors_match_torch():
    same_error(lambda: F.hardtanh(disttrain.ones(2), 2.0, 1.0),
                lambda: TF.hardtanh(torch.ones(2), 2.0, 1.0), ValueError)
    for bounds in [(1, 1), (2.0, -1.0)]:
        same_error(lambda b=bounds: nn.Hardtanh(*b), lambda b=bounds: torch.nn.Hardtanh(*b),
                    AssertionError)
    # F.hardtanh allows min_val == max_val (a constant), as torch's does
    compare(lambda x: F.hardtanh(x, 0.5, 0.5), lambda x: TF.hardtanh(x, 0.5, 0.5),
            _inputs(), np.float64)


def test_hardtanh_deprecated_keywords_warn_and_apply_as_torchs():
    with pytest.warns(FutureWarning) as theirs:
        expected = torch.nn.Hardtanh(min_value=-3.0, max_value=4.0)
    with pytest.warns(FutureWarning) as ours:
        layer = nn.Hardtanh(min_value=-3.0, max_value=4.0)
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert repr(layer) == repr(expected)


# -- one_hot ------------------------------------------------------------------------------
@pytest.mark.parametrize("index,num_classes", [
    ([0, 2, 1, 2], -1), ([0, 2, 1, 2], 5), ([[1, 0], [3, 3]], -1), (3, 4), (0, -1),
    (np.zeros((0,), dtype=np.int64), 3), (np.zeros((2, 0), dtype=np.int64), 1),
], ids=str)
def test_one_hot_matches_torch(index, num_classes):
    index = np.asarray(index, dtype=np.int64)
    ours = F.one_hot(disttrain.tensor(index), num_classes)
    theirs = TF.one_hot(torch.from_numpy(index), num_classes)
    assert ours.dtype == np.int64 and ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.data, theirs.numpy())


@pytest.mark.parametrize("index,num_classes", [
    ([0, -1, 2], -1), ([0, -1, 2], 5), ([0, 1, 3], 3), ([0, 1, 2], 0), ([0, 1, 2], -2),
    ([], -1), ([], 0), ([0.0, 1.0], -1), (np.array([0, 1], dtype=np.int32), -1),
    ([True, False], -1), ([0, 1], 1.5), ([0, 1], True),
], ids=str)
def test_one_hot_errors_match_torch(index, num_classes):
    index = np.asarray(index, dtype=np.int64 if not len(index) else None)
    error = TypeError if isinstance(num_classes, float | bool) else RuntimeError
    same_error(lambda: F.one_hot(disttrain.tensor(index), num_classes),
                lambda: TF.one_hot(torch.from_numpy(index), num_classes), error)


def test_one_hot_wants_a_tensor_as_torch():
    same_error(lambda: F.one_hot([0, 1]), lambda: TF.one_hot([0, 1]), TypeError)


# -- pad --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes,value", [
    ((1, 2), None), ((0, 0, 1, 1), 0), ((1, 1, 2, 0, 0, 3), 1.5), ((-1, 2), -2.0),
    ((-1, -1, 1, 0), None), ((2, -3, -2, 0), 7), ((-4, 0), None), ((0, 0, 0, 0, 0, 0), 3.0),
], ids=str)
def test_pad_matches_torch(dtype, sizes, value):
    """Values and gradients, pad sizes read from the last dim backwards, negatives crop."""
    x = np.random.default_rng(2).normal(size=(2, 3, 4))
    compare(lambda t: F.pad(t, sizes, value=value), lambda t: TF.pad(t, sizes, value=value),
            x, dtype)


def test_pad_keeps_integer_dtypes_and_casts_the_value_as_torch():
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    ours = F.pad(disttrain.tensor(x), [1, 1], value=2.5)
    theirs = TF.pad(torch.from_numpy(x), [1, 1], value=2.5)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours.data, theirs.numpy())


def test_pad_with_no_sizes_is_a_new_tensor():
    x = disttrain.tensor(np.array(2.0), requires_grad=True)
    out = F.pad(x, ())
    assert out is not x and out.data == 2.0
    out.backward()
    assert x.grad.data == 1.0


@pytest.mark.parametrize("sizes,kwargs,error", [
    ((1,), {}, RuntimeError), ((1, 1, 1, 1, 1, 1), {}, RuntimeError),
    ((-2, -2), {}, RuntimeError), ((-4, 2), {}, RuntimeError), ((1, 0, -3, 0), {}, RuntimeError),
    ((1.5, 1), {}, TypeError), ((True, 1), {}, TypeError), (5, {}, TypeError),
    ((1, 1), {"mode": "foo"}, NotImplementedError), ((1, 1), {"value": "a"}, TypeError),
], ids=str)
def test_pad_errors_match_torch(sizes, kwargs, error):
    same_error(lambda: F.pad(disttrain.ones(2, 3), sizes, **kwargs),
                lambda: TF.pad(torch.ones(2, 3), sizes, **kwargs), error)


GATHERED_PADS = [  # (input shape, pad): 1, 2 and 3 padded dims, with and without batch
    ((3, 5), (2, 1)), ((2, 3, 5), (0, 4)), ((2, 3, 5), (-1, 2)), ((2, 4, 5), (1, 2, 3, 0)),
    ((1, 2, 4, 5), (4, 4, 3, 3)), ((2, 3, 4, 5), (2, -1, 0, 1)), ((2, 3, 4, 5), (1, 1, 1, 2, 3, 0)),
    ((1, 2, 3, 4, 5), (2, 2, 1, 1, 1, 1)),
]


# reflect needs pads smaller than the dim (the errors are tested below); torch's own
# circular pad fails on negative sizes (an overlap error), so there is nothing to match
GATHERED_CASES = [(shape, sizes, mode) for shape, sizes in GATHERED_PADS
                  for mode in ("reflect", "replicate", "circular")
                  if not (mode == "reflect" and max(sizes) >= min(shape[-(len(sizes) // 2):]))
                  and not (mode == "circular" and min(sizes) < 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,sizes,mode", GATHERED_CASES, ids=str)
def test_pad_modes_match_torch(shape, sizes, mode, dtype):
    """Values and gradients (each output element's gradient goes back to its source)."""
    x = np.random.default_rng(5).normal(size=shape)
    compare(lambda t: F.pad(t, sizes, mode=mode), lambda t: TF.pad(t, sizes, mode=mode), x,
            dtype)


def test_pad_modes_keep_integer_dtypes_as_torch():
    x = np.arange(12, dtype=np.int64).reshape(1, 3, 4)
    for mode in ("reflect", "replicate", "circular"):
        ours = F.pad(disttrain.tensor(x), (1, 2), mode=mode)
        assert ours.dtype == np.int64
        np.testing.assert_array_equal(ours.data, TF.pad(torch.from_numpy(x), (1, 2),
                                                        mode=mode).numpy())


@pytest.mark.parametrize("shape,sizes,kwargs,error", [
    ((2, 3), (1, 1), {"mode": "reflect", "value": 1.0}, RuntimeError),
    ((3,), (1, 1), {"mode": "reflect"}, NotImplementedError),
    ((3, 3), (1, 1, 1, 1), {"mode": "replicate"}, NotImplementedError),
    ((1, 1, 1, 3, 3), (1, 1, 1, 1), {"mode": "circular"}, NotImplementedError),
    ((1, 1, 2, 3, 4), (1, 1, 1, 1, 1, 1, 1, 1), {"mode": "reflect"}, NotImplementedError),
    ((1, 3, 4), (4, 0), {"mode": "reflect"}, RuntimeError),
    ((1, 2, 3, 4), (1, 1, 3, 0), {"mode": "reflect"}, RuntimeError),
    ((1, 2, 3, 4), (4, 0, 3, 0), {"mode": "reflect"}, RuntimeError),
    ((1, 1, 2, 3, 4), (0, 0, 0, 0, 2, 0), {"mode": "reflect"}, RuntimeError),
    ((1, 3, 4), (5, 0), {"mode": "circular"}, RuntimeError),
    ((1, 2, 3, 4), (1, 1, 4, 0), {"mode": "circular"}, RuntimeError),
    ((1, 0, 3), (1, 1), {"mode": "reflect"}, RuntimeError),
    ((1, 1, 0), (1, 1), {"mode": "replicate"}, RuntimeError),
    ((2, 0, 3, 3), (1, 1, 1, 1), {"mode": "replicate"}, RuntimeError),
], ids=str)
def test_pad_mode_errors_match_torch(shape, sizes, kwargs, error):
    same_error(lambda: F.pad(disttrain.zeros(*shape), sizes, **kwargs),
                lambda: TF.pad(torch.zeros(*shape), sizes, **kwargs), error)


# -- normalize --------------------------------------------------------------------------
def _rows_to_normalize():
    """Rows with a zero vector, a tie for the largest |x|, a norm equal to eps=0.5 exactly,
    and large and small magnitudes."""
    rng = np.random.default_rng(3).normal(size=(3, 4))
    fixed = [[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, -3.0, 1.0], [0.0, 0.5, 0.0, 0.0],
             [1000.0, -50.0, 1e-5, 0.0]]
    return np.vstack([fixed, rng])


# normalize's gradient is g / n - x (g . x|x|^(p-2)) / n^p: for a row with one nonzero
# element the two O(g / n) terms cancel to 0 exactly in theory, to 1e-16 in float64.
NORMALIZE_ATOL = {np.float64: 1e-14, np.float32: 1e-6}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5, math.inf])
@pytest.mark.parametrize("dim", [1, 0, -1, (0, 1)], ids=str)
@pytest.mark.parametrize("eps", [1e-12, 0.5])
def test_normalize_matches_torch(dtype, p, dim, eps):
    compare(lambda x: F.normalize(x, p=p, dim=dim, eps=eps),
            lambda x: TF.normalize(x, p=p, dim=dim, eps=eps), _rows_to_normalize(), dtype,
            atol=NORMALIZE_ATOL[dtype])


def test_normalize_defaults_and_shapes_match_torch():
    x = np.random.default_rng(4).normal(size=(2, 3, 5))
    compare(F.normalize, TF.normalize, x, np.float64, atol=NORMALIZE_ATOL[np.float64])
    # 0-d: values only, as the engine's abs cannot backpropagate through a 0-d tensor yet
    scalar = np.array(-2.5)
    assert_matches(F.normalize(disttrain.tensor(scalar), dim=0),
                   TF.normalize(torch.tensor(scalar), dim=0), np.float64)


@pytest.mark.parametrize("shape,kwargs,error", [
    ((3,), {}, IndexError), ((2, 3), {"dim": -3}, IndexError), ((2, 3), {"dim": 2}, IndexError),
    ((2, 3), {"dim": (0, 0)}, RuntimeError), ((2, 3), {"dim": (1, -1)}, RuntimeError),
], ids=str)
def test_normalize_errors_match_torch(shape, kwargs, error):
    same_error(lambda: F.normalize(disttrain.ones(*shape), **kwargs),
                lambda: TF.normalize(torch.ones(*shape), **kwargs), error)


def test_normalize_refuses_integers_as_torch_and_p_it_lacks():
    index = np.array([[1, 2], [3, 4]])
    same_error(lambda: F.normalize(disttrain.tensor(index)),
                lambda: TF.normalize(torch.from_numpy(index)), RuntimeError)
    for p in (0.0, -1.0, -math.inf):
        with pytest.raises(NotImplementedError, match=f"p={p}"):
            F.normalize(disttrain.ones(2, 3), p=p)
