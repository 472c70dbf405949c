"""ops_shape.py against PyTorch: values, dtypes, gradients (with torch's choices at ties,
zeros and kinks) and error texts, in float32 and float64, as torch.X and Tensor.X."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import disttrain
from disttrain.autograd import ops_shape

from .helpers import helper_test_op, torch_error

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
NAN, INF = math.nan, math.inf


def M(x):
    """torch for a torch tensor, else ops_shape (what disttrain.X will be once wired in)."""
    return torch if isinstance(x, torch.Tensor) else ops_shape


def I(x, values, dtype=None):  # noqa: E743 - short: an index tensor in x's library
    values = np.asarray(values, dtype=dtype)
    return torch.tensor(values) if isinstance(x, torch.Tensor) else disttrain.tensor(values)


# -- shape and indexing ------------------------------------------------------------------------
SHAPE_CASES = [
    ("repeat", [(2, 3)], lambda a: a.repeat(2, 1)),
    ("repeat-new-dims", [(2, 3)], lambda a: a.repeat(2, 3, 2)),
    ("repeat-tuple-zero", [(2, 3)], lambda a: a.repeat((0, 2))),
    ("repeat-0d", [()], lambda a: a.repeat(3)),
    ("tile", [(2, 3)], lambda a: M(a).tile(a, (2,))),
    ("tile-more-dims", [(2, 3)], lambda a: a.tile((2, 1, 3))),
    ("flip", [(2, 3, 4)], lambda a: M(a).flip(a, (0, -1))),
    ("flip-method-int", [(2, 3)], lambda a: a.flip(1)),
    ("fliplr-flipud", [(2, 3)], lambda a: M(a).fliplr(a) * M(a).flipud(a)),
    ("roll", [(3, 4)], lambda a: M(a).roll(a, 1, 0)),
    ("roll-two-dims-negative", [(3, 4)], lambda a: a.roll((-1, 5), (1, 0))),
    ("roll-flat", [(3, 4)], lambda a: a.roll(5)),
    ("roll-zero", [(3, 4)], lambda a: a.roll(0, 1)),
    ("index-select-repeated", [(4, 3)], lambda a: M(a).index_select(a, 0, I(a, [3, 0, 3]))),
    ("index-select-neg-dim", [(2, 4)], lambda a: a.index_select(-1, I(a, [1, 1, 2]))),
    ("index-select-empty", [(2, 4)], lambda a: a.index_select(1, I(a, [], np.int64))),
    ("expand-as", [(3, 1), (2, 3, 4)], lambda a, b: a.expand_as(b) * b),
    ("view-as", [(3, 4), (4, 3)], lambda a, b: a.view_as(b) * b),
    ("broadcast-to", [(3, 1)], lambda a: M(a).broadcast_to(a, (2, 3, 5))),
    ("broadcast-to-method-minus-one", [(3, 1)], lambda a: a.broadcast_to((2, -1, 4))),
    ("movedim", [(2, 3, 4)], lambda a: M(a).movedim(a, 0, -1)),
    ("movedim-tuple", [(2, 3, 4, 5)], lambda a: a.movedim((0, 3), (2, 0))),
    ("moveaxis", [(2, 3, 4)], lambda a: M(a).moveaxis(a, (1, 2), (0, 1))),
    ("swapaxes-swapdims", [(2, 3, 4)],
     lambda a: M(a).swapaxes(a, 0, 2) + a.swapdims(-1, 0)),
    ("narrow", [(4, 5)], lambda a: M(a).narrow(a, 1, 1, 3)),
    ("narrow-negative-start", [(4, 5)], lambda a: a.narrow(0, -3, 2)),
    ("narrow-empty", [(4, 5)], lambda a: a.narrow(-1, 5, 0)),
    ("unflatten", [(2, 12)], lambda a: a.unflatten(1, (3, -1))),
    ("unflatten-fn-neg-dim", [(6, 2)], lambda a: M(a).unflatten(a, -2, (2, 3))),
    ("masked-select", [(3, 4)], lambda a: M(a).masked_select(a, a > 0)),
    ("masked-select-broadcast", [(3, 1)],
     lambda a: a.masked_select(I(a, [True, False, True, True]))),
    ("repeat-interleave-int", [(2, 3)], lambda a: M(a).repeat_interleave(a, 2)),
    ("repeat-interleave-int-dim", [(2, 3)], lambda a: a.repeat_interleave(3, dim=-1)),
    ("repeat-interleave-tensor", [(3, 2)],
     lambda a: a.repeat_interleave(I(a, [2, 0, 3]), dim=0)),
    ("repeat-interleave-zero", [(3, 2)], lambda a: a.repeat_interleave(0, dim=1)),
    ("diag-of-matrix", [(3, 4)], lambda a: M(a).diag(a)),
    ("diag-of-matrix-offset", [(3, 4)], lambda a: a.diag(-1).sum() + a.diag(2)),
    ("diag-of-vector", [(3,)], lambda a: M(a).diag(a)),
    ("diag-of-vector-offsets", [(3,)], lambda a: a.diag(2).sum() + a.diag(-1)),
    ("diagonal", [(2, 3, 4)], lambda a: M(a).diagonal(a, 0, 1, 2)),
    ("diagonal-offset-neg-dims", [(3, 4, 2)], lambda a: a.diagonal(1, -1, 0)),
    ("diagonal-empty", [(3, 4)], lambda a: a.diagonal(5)),
    ("trace", [(3, 4)], lambda a: M(a).trace(a)),
    ("hstack", [(2, 3), (2, 1)], lambda a, b: M(a).hstack([a, b, a])),
    ("hstack-1d", [(3,), (2,)], lambda a, b: M(a).hstack((a, b))),
    ("vstack", [(3,), (2, 3)], lambda a, b: M(a).vstack([a, b])),
    ("dstack", [(3,), (1, 3)], lambda a, b: M(a).dstack([a, b])),
    ("dstack-2d", [(2, 3), (2, 3, 2)], lambda a, b: M(a).dstack([a, b])),
    ("einsum-matmul", [(2, 3), (3, 4)], lambda a, b: M(a).einsum("ij,jk->ik", a, b)),
    ("einsum-implicit-list", [(2, 3), (4, 3)], lambda a, b: M(a).einsum("ba,ca", [a, b])),
    ("einsum-batched-ellipsis", [(5, 2, 3), (3, 4)],
     lambda a, b: M(a).einsum("...ij,jk->...ik", a, b)),
    ("einsum-broadcast-ellipsis", [(2, 1, 3), (4, 3)],
     lambda a, b: M(a).einsum("...j,...j->...", a, b)),
    ("einsum-trace-diag", [(3, 3)], lambda a: M(a).einsum("ii->i", a) + M(a).einsum("ii", a)),
    ("einsum-sum-out-label", [(2, 3), (2,)], lambda a, b: M(a).einsum("ij,i->i", a, b)),
    ("einsum-outer-three", [(2,), (3,), (2, 3)],
     lambda a, b, c: M(a).einsum("i,j,ij->ji", a, b, c)),
    ("einsum-broadcast-size-1", [(2, 1), (3, 4)], lambda a, b: M(a).einsum("ij,jk", a, b)),
    ("einsum-spaces", [(2, 3)], lambda a: M(a).einsum("i j -> j i", a)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shapes, fn", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_shape_op(name, shapes, fn, dtype):
    helper_test_op(shapes, fn, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter(dtype):
    index = np.array([[0, 1, 2, 0], [2, 0, 0, 1]])
    helper_test_op([(3, 4), (2, 4)], lambda x, s: M(x).scatter(x, 0, I(x, index), s),
                   dtype=dtype)
    helper_test_op([(3, 4), (3, 2)], lambda x, s: x.scatter(-1, I(x, [[3, 0], [1, 2], [0, 0]]),
                                                            s), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_value_and_larger_src(dtype):
    helper_test_op([(3, 4)], lambda x: x.scatter(1, I(x, [[0, 2], [1, 1], [3, 0]]), 2.5),
                   dtype=dtype)
    helper_test_op([(3, 4)], lambda x: M(x).scatter(x, 1, I(x, [[0], [1], [3]]),
                                                    value=-1.0), dtype=dtype)
    # src larger than index: only its corner is written (and gets gradient), as torch
    helper_test_op([(3, 4), (3, 3)], lambda x, s: x.scatter(0, I(x, [[2, 1], [0, 2]]), s)
                   * 2, dtype=dtype, grad=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_add(dtype):
    index = np.array([[0, 1, 2, 0], [0, 0, 0, 1]])  # repeated targets add up
    helper_test_op([(3, 4), (2, 4)], lambda x, s: M(x).scatter_add(x, 0, I(x, index), s),
                   dtype=dtype)
    helper_test_op([(2, 3), (2, 5)], lambda x, s: x.scatter_add(1, I(x, [[0, 0], [2, 1]]), s),
                   dtype=dtype, grad=False)


def test_repeat_interleave_counts_only():
    out = ops_shape.repeat_interleave(disttrain.tensor([2, 0, 3]))
    np.testing.assert_array_equal(out.data, torch.repeat_interleave(torch.tensor([2, 0, 3])))


# -- reductions and scans -----------------------------------------------------------------------
PROD_ARRAYS = {
    "no-zero": np.array([[0.5, -1.5, 2.0], [1.2, 0.7, -0.3]]),
    "one-zero": np.array([[0.5, 0.0, 2.0], [1.2, 0.7, -0.3]]),
    "two-zeros": np.array([[0.0, 0.0, 2.0], [1.2, 0.0, -0.3]]),
}
PROD_FNS = [
    ("all", lambda a: M(a).prod(a)),
    ("dim", lambda a: a.prod(1)),
    ("dim0-keepdim", lambda a: M(a).prod(a, 0, keepdim=True)),
    ("neg-dim", lambda a: a.prod(-1, True)),
    ("cumprod", lambda a: M(a).cumprod(a, 1)),
    ("cumprod-dim0", lambda a: a.cumprod(-2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", PROD_ARRAYS.values(), ids=PROD_ARRAYS.keys())
@pytest.mark.parametrize("fn", [f for _, f in PROD_FNS], ids=[n for n, _ in PROD_FNS])
def test_prod_and_cumprod_with_zeros(fn, values, dtype):
    helper_test_op([], fn, arrays=[values.astype(dtype)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prod_cumprod_edge_shapes(dtype):
    helper_test_op([(0, 3)], lambda a: a.prod(0), dtype=dtype)
    helper_test_op([(0, 3)], lambda a: a.prod(), dtype=dtype)
    helper_test_op([(0, 3)], lambda a: a.cumprod(0), dtype=dtype)
    helper_test_op([()], lambda a: a.prod(0) + a.cumprod(0), dtype=dtype)


def test_prod_cumprod_integers_in_int64():
    helper_test_op([], lambda a: a.prod(1), arrays=[np.array([[1, 2, 3], [4, 5, 6]],
                                                             dtype=np.int32)])
    helper_test_op([], lambda a: a.cumprod(0), arrays=[np.array([True, True, False])])


MEDIAN_ARRAYS = {
    "random": np.random.default_rng(0).normal(size=(3, 5)),
    "ties": np.array([[1.0, 2, 2, 2, 3, 1], [5, 5, 5, 5, 5, 5], [3, 1, 2, 2, 1, 3]]),
    "even-ties": np.array([[4.0, 1, 1, 4], [2, 2, 0, 0]]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("values", MEDIAN_ARRAYS.values(), ids=MEDIAN_ARRAYS.keys())
def test_median(values, dtype):
    arrays = [values.astype(dtype)]
    helper_test_op([], lambda a: M(a).median(a), arrays=arrays, dtype=dtype)  # ties share
    helper_test_op([], lambda a: tuple(a.median(1)), arrays=arrays, dtype=dtype)
    helper_test_op([], lambda a: tuple(M(a).median(a, 0, keepdim=True)), arrays=arrays,
                   dtype=dtype)
    helper_test_op([], lambda a: a.median(-1).values, arrays=arrays, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_median_nan_and_empty(dtype):
    nan_rows = np.array([[1.0, NAN, 2.0, NAN], [3.0, 1.0, 2.0, 0.5]], dtype=dtype)
    helper_test_op([], lambda a: tuple(a.median(1)), arrays=[nan_rows], dtype=dtype)
    helper_test_op([], lambda a: a.median(), arrays=[nan_rows], dtype=dtype)
    helper_test_op([(0,)], lambda a: a.median(), dtype=dtype)
    helper_test_op([()], lambda a: tuple(a.median(0)), dtype=dtype)


# -- elementwise -----------------------------------------------------------------------------------
UNARY = [
    ("log2", lambda a: M(a).log2(a), 0.1, 3.0),
    ("log10", lambda a: a.log10(), 0.1, 3.0),
    ("exp2", lambda a: M(a).exp2(a), -3.0, 3.0),
    ("sinh", lambda a: a.sinh(), -3.0, 3.0),
    ("cosh", lambda a: M(a).cosh(a), -3.0, 3.0),
    ("asin", lambda a: M(a).asin(a), -0.95, 0.95),
    ("acos", lambda a: a.acos(), -0.95, 0.95),
    ("atan", lambda a: M(a).atan(a), -3.0, 3.0),
    ("arcsin-arccos-arctan", lambda a: M(a).arcsin(a) + a.arccos() + M(a).arctan(a), -0.9, 0.9),
    ("erf", lambda a: M(a).erf(a), -3.0, 3.0),
    ("trunc", lambda a: M(a).trunc(a) * a, -3.0, 3.0),
    ("fix", lambda a: a.fix() + a, -3.0, 3.0),
    ("frac", lambda a: M(a).frac(a), -3.0, 3.0),
    ("frac-method", lambda a: a.frac(), -3.0, 3.0),
    ("logit", lambda a: M(a).logit(a), 0.05, 0.95),
    ("logit-eps", lambda a: a.logit(eps=0.2), 0.0, 1.0),
    ("logit-outside", lambda a: a.logit(), -0.5, 1.5),
    ("logit-outside-eps", lambda a: M(a).logit(a, 0.1), -0.5, 1.5),
    ("clamp-min", lambda a: M(a).clamp_min(a, 0.3), -2.0, 2.0),
    ("clamp-max-method", lambda a: a.clamp_max(-0.1), -2.0, 2.0),
    ("neg", lambda a: M(a).neg(a) * M(a).negative(a), -2.0, 2.0),
    ("remainder-scalar", lambda a: M(a).remainder(a, 0.7), -3.0, 3.0),
    ("mod-operator", lambda a: a % 1.3, -3.0, 3.0),
    ("fmod-scalar", lambda a: a.fmod(-0.7), -3.0, 3.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, low, high", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, low, high, dtype):
    helper_test_op([(3, 4)], fn, dtype=dtype, low=low, high=high)


BINARY = [
    ("atan2", lambda a, b: M(a).atan2(a, b)),
    ("arctan2-method", lambda a, b: a.arctan2(b)),
    ("hypot", lambda a, b: M(a).hypot(a, b)),
    ("logaddexp", lambda a, b: a.logaddexp(b)),
    ("remainder", lambda a, b: M(a).remainder(a, b)),
    ("fmod", lambda a, b: M(a).fmod(a, b)),
    ("lerp-tensor-weight", lambda a, b: M(a).lerp(a, b, b.sigmoid())),
    ("lerp-number-weight", lambda a, b: a.lerp(b, 0.3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn", BINARY, ids=[b[0] for b in BINARY])
def test_binary_broadcasting(name, fn, dtype):
    helper_test_op([(3, 1, 4), (2, 4)], fn, dtype=dtype, low=-3.0, high=3.0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the helper's
@pytest.mark.parametrize("dtype", DTYPES)  # seed gradient times the dtype's largest value
def test_elementwise_special_values(dtype):
    x = np.array([NAN, INF, -INF, 0.0, -1.5, 2.0], dtype=dtype)
    helper_test_op([], lambda a: M(a).nan_to_num(a), arrays=[x], dtype=dtype)
    helper_test_op([], lambda a: a.nan_to_num(1.0, posinf=9.0, neginf=-9.0), arrays=[x],
                   dtype=dtype)
    z = np.array([0.0, 1.0, 0.5, -0.0], dtype=dtype)
    helper_test_op([], lambda a, b: M(a).hypot(a, b), arrays=[z, z[::-1].copy()], dtype=dtype)
    helper_test_op([], lambda a, b: M(a).atan2(a, b),
                   arrays=[np.array([0.0, 1.0, -1.0], dtype=dtype),
                           np.array([-1.0, 0.0, 2.0], dtype=dtype)], dtype=dtype)
    helper_test_op([], lambda a: a.logit(eps=0.25), arrays=[np.array([0.0, 0.25, 0.5, 1.0],
                                                                      dtype=dtype)], dtype=dtype)


def test_integer_inputs_promote_as_torch():
    ints = np.array([[1, 2, 3], [4, 5, 6]])
    for fn in (lambda a: M(a).log2(a), lambda a: a.sinh(), lambda a: M(a).erf(a),
               lambda a: M(a).atan2(a, a), lambda a: a.trunc(), lambda a: a.remainder(4),
               lambda a: a.prod(), lambda a: a.cumprod(1), lambda a: a.repeat(2, 1)):
        helper_test_op([], fn, arrays=[ints])


# -- errors -------------------------------------------------------------------------------------
x23 = np.random.default_rng(0).normal(size=(2, 3))
ERRORS = [
    ("repeat-too-few", lambda a: a.repeat(2)),
    ("repeat-negative", lambda a: a.repeat(2, -1)),
    ("flip-repeated-dim", lambda a: M(a).flip(a, (0, 0))),
    ("flip-dim-out-of-range", lambda a: a.flip(2)),
    ("roll-misaligned", lambda a: M(a).roll(a, (1, 2), (0,))),
    ("index-select-matrix", lambda a: M(a).index_select(a, 0, I(a, [[0]]))),
    ("index-select-out-of-range", lambda a: a.index_select(0, I(a, [5]))),
    ("index-select-float", lambda a: a.index_select(0, I(a, [0.0]))),
    ("movedim-lengths", lambda a: M(a).movedim(a, (0, 1), (0,))),
    ("movedim-repeated", lambda a: a.movedim((0, 0), (0, 1))),
    ("narrow-start", lambda a: M(a).narrow(a, 0, 3, 1)),
    ("narrow-too-long", lambda a: a.narrow(0, 1, 5)),
    ("narrow-negative-length", lambda a: a.narrow(0, 1, -1)),
    ("unflatten-sizes", lambda a: a.unflatten(1, (2, 2))),
    ("masked-select-float-mask", lambda a: M(a).masked_select(a, a * 0 + 1)),
    ("scatter-out-of-bounds", lambda a: M(a).scatter(a, 0, I(a, [[5]]), 1.0)),
    ("repeat-interleave-negative", lambda a: M(a).repeat_interleave(a, -1)),
    ("repeat-interleave-sizes", lambda a: a.repeat_interleave(I(a, [1, 2]), dim=1)),
    ("prod-dim", lambda a: M(a).prod(a, 5)),
    ("median-empty-dim", lambda a: M(a).median(a[:0], 0)),
    ("diag-3d", lambda a: M(a).diag(a.reshape(1, 2, 3))),
    ("trace-3d", lambda a: M(a).trace(a.reshape(1, 2, 3))),
    ("diagonal-same-dims", lambda a: M(a).diagonal(a, 0, 0, 0)),
    ("einsum-sizes", lambda a: M(a).einsum("ij,jk->ik", a, a)),
    ("einsum-unknown-output", lambda a: M(a).einsum("ij->ik", a)),
    ("hstack-empty", lambda a: M(a).hstack([])),
    ("vstack-empty", lambda a: M(a).vstack([])),
]


@pytest.mark.parametrize("fn", [e[1] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_match_torch(fn):
    expected = torch_error(lambda: fn(torch.tensor(x23)))
    ours = disttrain.tensor(x23)
    with pytest.raises(Exception) as info:
        fn(ours)
    theirs_type = type(_raised(lambda: fn(torch.tensor(x23))))
    assert isinstance(info.value, theirs_type), f"{type(info.value)} != {theirs_type}"
    assert str(info.value) == expected


def _raised(fn) -> Exception:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - whichever torch raises
        return exc
    raise AssertionError("torch raised no error")


def test_methods_bound_and_all_exported():
    for name in ops_shape.__all__:
        assert callable(getattr(ops_shape, name)), name
        assert hasattr(torch, name), f"torch has no {name}"
    for name in ("repeat", "expand_as", "view_as", "flip", "scatter_add", "median", "prod"):
        assert getattr(disttrain.Tensor, name) is getattr(ops_shape, name)
