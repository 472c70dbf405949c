"""The ops a model or loss commonly types, against PyTorch: values, dtypes, gradients, errors.

Elementwise functions, reductions (logsumexp, norm, cumsum), products (mm, bmm, dot,
outer), split/chunk/gather/masked_fill/tril/triu and the creation functions, each as
torch.X and Tensor.X where torch has both, in float32 and float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import disttrain

from .helpers import helper_test_op

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
NAN, INF = math.nan, math.inf


def M(x):
    """The library x belongs to, so one lambda can call torch.X or disttrain.X."""
    return torch if isinstance(x, torch.Tensor) else disttrain


# -- elementwise with gradients -----------------------------------------------------------
UNARY = [
    ("log1p", lambda a: M(a).log1p(a), -0.9, 2.0),
    ("log1p-method", lambda a: a.log1p(), -0.9, 2.0),
    ("expm1", lambda a: M(a).expm1(a), -2.0, 2.0),
    ("expm1-method-small", lambda a: a.expm1(), -1e-6, 1e-6),
    ("sin", lambda a: M(a).sin(a), -4.0, 4.0),
    ("cos-method", lambda a: a.cos(), -4.0, 4.0),
    ("square", lambda a: M(a).square(a), -2.0, 2.0),
    ("square-method", lambda a: a.square(), -2.0, 2.0),
    ("rsqrt", lambda a: M(a).rsqrt(a), 0.2, 3.0),
    ("rsqrt-method", lambda a: a.rsqrt(), 0.2, 3.0),
    ("reciprocal", lambda a: M(a).reciprocal(a), 0.3, 3.0),
    ("reciprocal-method-negative", lambda a: a.reciprocal(), -3.0, -0.3),
    ("pow-fn-scalar-exponent", lambda a: M(a).pow(a, 3), -2.0, 2.0),
    ("pow-fn-scalar-base", lambda a: M(a).pow(2.0, a), -2.0, 2.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, low, high", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, low, high, dtype):
    helper_test_op([(3, 4)], fn, dtype=dtype, low=low, high=high)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pow_function_broadcasts_tensor_and_tensor(dtype):
    helper_test_op([(2, 1, 4), (3, 1)], lambda a, b: M(a).pow(a, b), dtype=dtype, low=0.3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_unary_at_zero_and_infinities(dtype):
    # rsqrt and reciprocal at 0 (inf, gradient -inf) and at inf (0, gradient -0)
    x = np.array([0.0, INF, 1.0, 4.0], dtype=dtype)
    for fn in (lambda a: a.rsqrt(), lambda a: a.reciprocal(), lambda a: a.log1p(),
               lambda a: a.expm1(), lambda a: a.square()):
        helper_test_op(None, fn, dtype=dtype, arrays=[x])


INTEGER_INPUTS = [
    ("sin", lambda a: M(a).sin(a)), ("cos", lambda a: a.cos()), ("log1p", lambda a: a.log1p()),
    ("expm1", lambda a: a.expm1()), ("rsqrt", lambda a: a.rsqrt()),
    ("reciprocal", lambda a: a.reciprocal()), ("square", lambda a: a.square()),
    ("pow-scalar-base", lambda a: M(a).pow(2.0, a)), ("sign", lambda a: a.sign()),
    ("floor", lambda a: a.floor()), ("ceil", lambda a: M(a).ceil(a)),
    ("round", lambda a: a.round()), ("isnan", lambda a: a.isnan()),
    ("cumsum", lambda a: a.cumsum(0)), ("logsumexp", lambda a: M(a).logsumexp(a, 0)),
]


@pytest.mark.parametrize("name, fn", INTEGER_INPUTS, ids=[c[0] for c in INTEGER_INPUTS])
def test_integer_inputs_give_torchs_dtype(name, fn):
    # float functions promote to float32; steps and squares keep int64; cumsum sums in int64
    helper_test_op(None, fn, arrays=[np.array([1, 4, 9, 2], dtype=np.int64)])


def test_cumsum_of_bool_and_int32_is_int64():
    for array in (np.array([True, False, True]), np.array([3, -1, 2], dtype=np.int32)):
        helper_test_op(None, lambda a: M(a).cumsum(a, -1), arrays=[array])


# -- no-gradient elementwise --------------------------------------------------------------
STEPS = [
    ("sign", lambda a: M(a).sign(a)), ("floor", lambda a: M(a).floor(a)),
    ("ceil", lambda a: a.ceil()), ("round", lambda a: M(a).round(a)),
    ("round-decimals", lambda a: a.round(decimals=1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn", STEPS, ids=[s[0] for s in STEPS])
def test_steps_require_grad_with_zero_gradient(name, fn, dtype):
    # As torch: the result requires grad (SignBackward0...), and the gradient is 0, also
    # beside another path that carries a gradient.
    helper_test_op([(3, 4)], fn, dtype=dtype, low=-3.0, high=3.0)
    helper_test_op([(3, 4)], lambda a: fn(a) * a, dtype=dtype, low=-3.0, high=3.0)
    x = disttrain.tensor(np.array([-1.5, 0.3], dtype=dtype), requires_grad=True)
    out = fn(x)
    assert out.requires_grad and out.grad_fn.name() == f"{name.split('-')[0].title()}Backward0"
    out.sum().backward()
    assert x.grad.dtype == dtype and not x.grad.data.any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn", STEPS, ids=[s[0] for s in STEPS])
def test_steps_at_nan_inf_and_ties(name, fn, dtype):
    # sign(NaN) is 0 in torch; rounding is half to even (0.5 -> 0, 2.5 -> 2, -1.5 -> -2)
    x = np.array([NAN, INF, -INF, 0.0, -0.0, 0.5, 2.5, -1.5, 0.25, -0.7], dtype=dtype)
    helper_test_op(None, fn, dtype=dtype, arrays=[x])


TESTS = [("isnan", lambda a: M(a).isnan(a)), ("isinf", lambda a: a.isinf()),
         ("isfinite", lambda a: M(a).isfinite(a))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn", TESTS, ids=[t[0] for t in TESTS])
def test_isnan_isinf_isfinite_are_bool_without_grad(name, fn, dtype):
    x = np.array([NAN, INF, -INF, 0.0, -2.5, 1e30], dtype=dtype)
    ours, theirs = helper_test_op(None, fn, dtype=dtype, arrays=[x])
    assert ours[0].dtype == np.bool_
    assert ours[0].requires_grad is theirs[0].requires_grad is False
    assert ours[0].grad_fn is None


# -- reductions ---------------------------------------------------------------------------
LOGSUMEXP = [(0, False), (-1, False), (1, True), ((0, 2), False), ((-1, 0), True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim, keepdim", LOGSUMEXP, ids=[f"{d}-{k}" for d, k in LOGSUMEXP])
def test_logsumexp(dim, keepdim, dtype):
    helper_test_op([(2, 3, 4)], lambda a: M(a).logsumexp(a, dim, keepdim=keepdim), dtype=dtype)
    helper_test_op([(2, 3, 4)], lambda a: a.logsumexp(dim=dim, keepdim=keepdim), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_large_values_do_not_overflow(dtype):
    helper_test_op([(3, 4)], lambda a: M(a).logsumexp(a * 1000, 1), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_infinities_as_torch(dtype):
    # An all -inf row gives -inf and NaN gradients, a row with +inf gives inf and NaN at
    # the inf (0 elsewhere), a NaN row NaN: the same as torch's in every place.
    x = np.array([[-INF, -INF, -INF], [INF, 1.0, 2.0], [-INF, 0.0, 1.0], [NAN, 1.0, 2.0]],
                 dtype=dtype)
    ours, _ = helper_test_op(None, lambda a: M(a).logsumexp(a, 1), dtype=dtype, arrays=[x])
    assert ours[0].data[0] == -INF and ours[0].data[1] == INF


NORMS = [("fro", None, False), (2, None, True), (2, 1, False), (1, -1, True), (1, None, False),
         (INF, 0, False), (INF, (0, 1), True), (-INF, -1, False), ("fro", (1, 2), False),
         (2.0, (0, -1), False), (3, None, False), (1.5, 1, True), (0.5, -1, False),
         (4, (0, 2), False), (-2, 1, False), (0, None, False), (0, 1, True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p, dim, keepdim", NORMS, ids=[f"{p}-{d}-{k}" for p, d, k in NORMS])
def test_norm(p, dim, keepdim, dtype):
    helper_test_op([(2, 3, 4)], lambda a: M(a).norm(a, p=p, dim=dim, keepdim=keepdim),
                   dtype=dtype)
    helper_test_op([(2, 3, 4)], lambda a: a.norm(p, dim, keepdim), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2, "fro", 1, INF, -INF, 3, 1.5, 0.5, 0])
def test_norm_of_zeros_has_torchs_zero_gradient(p, dtype):
    # sqrt(sum x^2) would give 0 * inf = NaN at 0; torch masks the 2-norm's gradient to 0
    x = np.zeros((2, 3), dtype=dtype)
    x[1] = [1.0, -2.0, 2.0]
    helper_test_op(None, lambda a: a.norm(p=p, dim=1), dtype=dtype, arrays=[x])
    helper_test_op(None, lambda a: a.norm(p=p), dtype=dtype, arrays=[np.zeros(3, dtype=dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [2, 1, INF, 3, 1.5])
def test_norm_at_nan_inf_and_ties(p, dtype):
    # ties at the inf-norm share the gradient; a NaN makes the norm NaN (inf norm: no
    # gradient anywhere in torch); an inf entry makes it inf
    x = np.array([[1.0, -3.0, 3.0], [1.0, NAN, 3.0], [INF, 1.0, -2.0], [0.5, -0.5, 0.5]],
                 dtype=dtype)
    helper_test_op(None, lambda a: M(a).norm(a, p, dim=-1), dtype=dtype, arrays=[x])


def test_norm_with_a_matrix_norm_name_is_refused_not_wrong():
    # torch's "nuc" is a matrix norm (singular values): disttrain has vector norms only
    with pytest.raises(NotImplementedError, match="a real p or 'fro', not 'nuc'"):
        disttrain.ones(3, 3).norm(p="nuc")


CUMSUM = [0, 1, -1, -3]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", CUMSUM)
def test_cumsum(dim, dtype):
    helper_test_op([(2, 3, 4)], lambda a: M(a).cumsum(a, dim), dtype=dtype)
    helper_test_op([(2, 3, 4)], lambda a: a.cumsum(dim=dim), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cumsum_of_0d(dtype):
    helper_test_op([()], lambda a: a.cumsum(0), dtype=dtype)


def test_std_function():
    helper_test_op([(3, 5)], lambda a: M(a).std(a, 1, keepdim=True))
    helper_test_op([(3, 5)], lambda a: M(a).std(a), dtype=np.float32)


# -- products -----------------------------------------------------------------------------
PRODUCTS = [
    ("mm", lambda a, b: M(a).mm(a, b), [(3, 4), (4, 2)]),
    ("mm-method", lambda a, b: a.mm(b), [(1, 4), (4, 5)]),
    ("bmm", lambda a, b: M(a).bmm(a, b), [(2, 3, 4), (2, 4, 5)]),
    ("bmm-method", lambda a, b: a.bmm(b), [(3, 1, 2), (3, 2, 2)]),
    ("dot", lambda a, b: M(a).dot(a, b), [(5,), (5,)]),
    ("dot-method", lambda a, b: a.dot(b), [(1,), (1,)]),
    ("outer", lambda a, b: M(a).outer(a, b), [(3,), (4,)]),
    ("outer-method", lambda a, b: a.outer(b), [(2,), (1,)]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, shapes", PRODUCTS, ids=[p[0] for p in PRODUCTS])
def test_products(name, fn, shapes, dtype):
    helper_test_op(shapes, fn, dtype=dtype)


def test_outer_promotes_as_mul():
    a32 = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    helper_test_op(None, lambda a, b: M(a).outer(a, b),
                   arrays=[a32, np.array([0.5, -1.0], dtype=np.float64)])
    helper_test_op(None, lambda a, b: a.outer(b), arrays=[np.array([1, 2]), a32])


# -- shapes and indexing ------------------------------------------------------------------
SPLITS = [
    ("split-int", lambda a: M(a).split(a, 2), (5, 3)),
    ("split-int-dim", lambda a: a.split(2, dim=1), (2, 5)),
    ("split-sections-neg-dim", lambda a: M(a).split(a, [1, 0, 3], dim=-1), (2, 3, 4)),
    ("split-larger-than-dim", lambda a: a.split(9), (4, 2)),
    ("chunk-even", lambda a: M(a).chunk(a, 2), (4, 3)),
    ("chunk-uneven-neg-dim", lambda a: a.chunk(3, dim=-1), (2, 7)),
    ("chunk-more-than-size", lambda a: M(a).chunk(a, 7, 1), (2, 5)),
    ("chunk-6-into-4", lambda a: a.chunk(4), (6,)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, shape", SPLITS, ids=[s[0] for s in SPLITS])
def test_split_and_chunk(name, fn, shape, dtype):
    # every piece's value, and the gradient of all pieces together
    ours, theirs = helper_test_op([shape], fn, dtype=dtype)
    assert len(ours) == len(theirs)


def test_split_pieces_are_views_as_torch():
    x = disttrain.arange(6.0)
    first = x.split(2)[0]
    x.add_(1.0)
    assert first.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("name, call", [
    ("chunk", lambda m, x: m.chunk(x, 3, 1)),
    ("split-int", lambda m, x: m.split(x, 2, 1)),
    ("split-zero", lambda m, x: x.split(0, dim=-1)),
])
def test_split_and_chunk_of_an_empty_dim(name, call):
    # chunk keeps `chunks` empty pieces; split gives one empty piece (split_size 0 too)
    x = np.zeros((6, 0), dtype=np.float32)
    ours = call(disttrain, disttrain.tensor(x))
    theirs = call(torch, torch.tensor(x))
    assert [t.shape for t in ours] == [tuple(t.shape) for t in theirs]


GATHERS = [
    ("dim0", 0, np.array([[0, 1, 1, 0], [2, 2, 0, 1]])),
    ("dim1-repeated", 1, np.array([[0, 0, 3], [1, 1, 1], [3, 2, 3]])),
    ("neg-dim-smaller-index", -1, np.array([[2], [0]])),
    ("index-longer-along-dim", 0, np.array([[0, 1], [1, 0], [2, 2], [0, 0], [1, 1]])),
    ("int32-index", 1, np.array([[3, 0]], dtype=np.int32)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, dim, index", GATHERS, ids=[g[0] for g in GATHERS])
def test_gather(name, dim, index, dtype):
    helper_test_op([(3, 4), index], lambda a, i: M(a).gather(a, dim, i), dtype=dtype)
    helper_test_op([(3, 4), index], lambda a, i: a.gather(dim, i), dtype=dtype)


def test_gather_of_0d():
    helper_test_op([(), np.array(0)], lambda a, i: a.gather(0, i))


MASKS = [
    ("same-shape", (3, 4), np.random.default_rng(2).random((3, 4)) > 0.5, -1.5),
    ("row-mask", (3, 4), np.array([[True], [False], [True]]), 0.0),
    ("mask-broadcasts-x", (4,), np.array([[True, False, False, True], [False] * 4]), 2.0),
    ("neg-inf-attention", (2, 3, 3), np.triu(np.ones((3, 3), dtype=bool), 1), -INF),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, shape, mask, value", MASKS, ids=[m[0] for m in MASKS])
def test_masked_fill(name, shape, mask, value, dtype):
    helper_test_op([shape, mask], lambda a, m: a.masked_fill(m, value), dtype=dtype)
    helper_test_op([shape, mask], lambda a, m: M(a).masked_fill(a, m, value), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_fill_value_tensor_gets_the_filled_gradient(dtype):
    # a 0-d value of another dtype takes x's; its gradient sums the filled places
    value = np.array(0.25, dtype=np.float64)
    helper_test_op([(3, 4), np.array([True, False, True, True]), value],
                   lambda a, m, v: a.masked_fill(m, v), dtype=dtype)


def test_masked_fill_keeps_an_integer_tensor_integer():
    helper_test_op([np.arange(4), np.array([True, False, True, False])],
                   lambda a, m: a.masked_fill(m, 2.7))


TRIANGLES = [("tril", 0), ("tril", -1), ("tril", 2), ("triu", 0), ("triu", 1), ("triu", -2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (2, 4, 3)])
@pytest.mark.parametrize("op, diagonal", TRIANGLES, ids=[f"{o}{d}" for o, d in TRIANGLES])
def test_tril_triu(op, diagonal, shape, dtype):
    helper_test_op([shape], lambda a: getattr(M(a), op)(a, diagonal), dtype=dtype)
    helper_test_op([shape], lambda a: getattr(a, op)(diagonal=diagonal), dtype=dtype)


@pytest.mark.parametrize("op", ["tril", "triu"])
def test_tril_triu_zero_nan_and_inf_outside(op):
    x = np.array([[INF, NAN, -INF], [NAN, 1.0, INF], [-INF, 2.0, NAN]])
    helper_test_op(None, lambda a: getattr(a, op)(), arrays=[x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_is_clamp(dtype):
    helper_test_op([(3, 4)], lambda a: M(a).clip(a, -0.5, 0.7), dtype=dtype)
    helper_test_op([(3, 4)], lambda a: a.clip(min=0.1), dtype=dtype)


# -- creation -----------------------------------------------------------------------------
LINSPACE = [(0, 1, 5), (-1, 1.3, 7), (3, 1, 2), (0, 1, 1), (0, 1, 0), (-2.5, 7.25, 100)]


@pytest.mark.parametrize("dtype", [None, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("start, end, steps", LINSPACE, ids=[str(c) for c in LINSPACE])
def test_linspace(start, end, steps, dtype):
    ours = disttrain.linspace(start, end, steps, dtype=dtype)
    torch_dtype = None if dtype is None else getattr(torch, np.dtype(dtype).name)
    theirs = torch.linspace(start, end, steps, dtype=torch_dtype).numpy()
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if steps <= 8:  # torch's scalar loop, which disttrain follows bit for bit
        np.testing.assert_array_equal(ours.data, theirs)
    else:  # torch's vector loop rounds a few values the other way
        np.testing.assert_allclose(ours.data, theirs, rtol=1e-6, atol=1e-6)


def test_linspace_requires_grad():
    assert disttrain.linspace(0, 1, 3, requires_grad=True).requires_grad


@pytest.mark.parametrize("dtype", [None, np.float64, np.int64])
@pytest.mark.parametrize("n, m", [(3, None), (2, 4), (4, 2), (0, 3)])
def test_eye(n, m, dtype):
    torch_dtype = None if dtype is None else getattr(torch, np.dtype(dtype).name)
    theirs = torch.eye(n, m, dtype=torch_dtype) if m is not None else torch.eye(
        n, dtype=torch_dtype)
    ours = disttrain.eye(n, m, dtype=dtype)
    assert ours.dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.data, theirs.numpy())
    assert disttrain.eye(2, requires_grad=True).requires_grad


@pytest.mark.parametrize("source, fill, dtype", [
    (np.zeros((2, 3), dtype=np.float32), 2.5, None),
    (np.zeros(4, dtype=np.int64), 2.7, None),
    (np.zeros(4, dtype=np.float32), 2, np.float64),
    (np.zeros((2, 2)), True, np.bool_),
])
def test_full_like(source, fill, dtype):
    torch_dtype = None if dtype is None else getattr(torch, np.dtype(dtype).name)
    theirs = torch.full_like(torch.tensor(source), fill, dtype=torch_dtype).numpy()
    ours = disttrain.full_like(disttrain.tensor(source), fill, dtype=dtype)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours.data, theirs)


@pytest.mark.parametrize("name", ["randn_like", "rand_like"])
def test_random_like_follows_the_seed_shape_and_dtype(name):
    fn = getattr(disttrain, name)
    x = disttrain.zeros(3, 4, dtype=disttrain.float64)
    disttrain.manual_seed(5)
    first = fn(x)
    disttrain.manual_seed(5)
    again = fn(x, requires_grad=True)
    assert first.shape == (3, 4) and first.dtype == np.float64
    np.testing.assert_array_equal(first.data, again.data)
    assert again.requires_grad and not first.requires_grad
    assert fn(x, dtype=disttrain.float32).dtype == np.float32
    assert len(np.unique(first.data)) == 12
    if name == "rand_like":
        assert first.data.min() >= 0 and first.data.max() < 1


def test_is_tensor_and_numel():
    x = disttrain.zeros(3, 4)
    assert disttrain.is_tensor(x) and not disttrain.is_tensor(np.zeros(2))
    assert not disttrain.is_tensor([1.0])
    assert disttrain.numel(x) == torch.numel(torch.zeros(3, 4)) == 12


# -- errors: torch's type and text ---------------------------------------------------------
def A(*shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


def T(m, array):
    """array as a tensor of library m."""
    return m.tensor(array)


ERRORS = [
    ("mm-1d", lambda m: m.mm(T(m, A(3)), T(m, A(3, 2)))),
    ("mm-1d-second", lambda m: T(m, A(3, 2)).mm(T(m, A(2)))),
    ("mm-shapes", lambda m: m.mm(T(m, A(3, 4)), T(m, A(3, 2)))),
    ("mm-dtypes", lambda m: m.mm(T(m, A(3, 3)), T(m, A(3, 2, dtype=np.float64)))),
    ("mm-int-float", lambda m: m.mm(T(m, A(3, 3, dtype=np.int64)), T(m, A(3, 2)))),
    ("bmm-2d", lambda m: m.bmm(T(m, A(3, 3)), T(m, A(3, 3, 2)))),
    ("bmm-2d-second", lambda m: m.bmm(T(m, A(3, 3, 3)), T(m, A(3, 2)))),
    ("bmm-inner", lambda m: m.bmm(T(m, A(2, 3, 4)), T(m, A(2, 5, 6)))),
    ("bmm-batch-no-broadcast", lambda m: m.bmm(T(m, A(1, 3, 4)), T(m, A(3, 4, 6)))),
    ("bmm-dtypes", lambda m: m.bmm(T(m, A(2, 3, 4)), T(m, A(2, 4, 6, dtype=np.float64)))),
    ("dot-2d", lambda m: m.dot(T(m, A(2, 3)), T(m, A(3)))),
    ("dot-sizes", lambda m: m.dot(T(m, A(3)), T(m, A(4)))),
    ("dot-dtypes", lambda m: T(m, A(3)).dot(T(m, A(4, dtype=np.float64)))),
    ("outer-2d", lambda m: m.outer(T(m, A(2, 3)), T(m, A(3)))),
    ("outer-2d-second", lambda m: m.outer(T(m, A(3)), T(m, A(4, 2)))),
    ("norm-int", lambda m: m.norm(T(m, A(3, dtype=np.int64)))),
    ("norm-fro-3-dims", lambda m: T(m, A(2, 3, 4)).norm(p="fro", dim=(0, 1, 2))),
    ("norm-dim-range", lambda m: T(m, A(2, 3)).norm(dim=2)),
    ("logsumexp-dim-range", lambda m: m.logsumexp(T(m, A(3)), 1)),
    ("logsumexp-tuple-dim-range", lambda m: m.logsumexp(T(m, A(2, 3)), (0, -3))),
    ("cumsum-dim-range", lambda m: T(m, A(2, 3)).cumsum(-3)),
    ("split-sections-sum", lambda m: m.split(T(m, A(5, 2)), [2, 2])),
    ("split-sections-sum-neg-dim", lambda m: m.split(T(m, A(5, 2)), [2, 2], dim=-1)),
    ("split-sections-negative", lambda m: m.split(T(m, A(5, 2)), [-1, 6])),
    ("split-size-negative", lambda m: T(m, A(5, 2)).split(-1)),
    ("split-size-zero", lambda m: T(m, A(5, 2)).split(0)),
    ("split-dim-range", lambda m: T(m, A(3)).split(1, 1)),
    ("chunk-zero", lambda m: m.chunk(T(m, A(5, 2)), 0)),
    ("gather-float-index", lambda m: m.gather(T(m, A(5, 2)), 1, T(m, A(1, 1)))),
    ("gather-dim-range-first", lambda m: m.gather(T(m, A(5, 2)), 5, T(m, A(1, 1)))),
    ("gather-ndim", lambda m: m.gather(T(m, A(5, 2)), 1, T(m, np.array([0, 1])))),
    ("gather-size", lambda m: T(m, A(5, 2)).gather(0, T(m, np.zeros((6, 3), np.int64)))),
    ("gather-out-of-bounds", lambda m: T(m, A(5, 2)).gather(1, T(m, np.array([[0, 7],
                                                                            [-3, 0]])))),
    ("gather-negative", lambda m: T(m, A(5, 2)).gather(1, T(m, np.array([[0, 1], [-3, 9]])))),
    ("masked-fill-long-mask", lambda m: T(m, A(5, 2)).masked_fill(T(m, A(5, 2, dtype=np.int64)),
                                                                  1.0)),
    ("masked-fill-float-mask", lambda m: m.masked_fill(T(m, A(5, 2)), T(m, A(2)), 1.0)),
    ("masked-fill-1d-value", lambda m: T(m, A(5, 2)).masked_fill(T(m, A(2, dtype=bool)),
                                                                 T(m, A(1)))),
    ("masked-fill-broadcast", lambda m: T(m, A(5, 2)).masked_fill(T(m, A(3, dtype=bool)), 1.0)),
    ("tril-1d", lambda m: m.tril(T(m, A(3)))),
    ("triu-1d", lambda m: T(m, A(3)).triu()),
    ("linspace-negative-steps", lambda m: m.linspace(0, 1, -1)),
    ("eye-negative-n", lambda m: m.eye(-1)),
    ("eye-negative-m", lambda m: m.eye(3, -2)),
    ("randn-like-int", lambda m: m.randn_like(T(m, A(2, dtype=np.int64)))),
    ("rand-like-int", lambda m: m.rand_like(T(m, A(2, dtype=np.int64)))),
]


@pytest.mark.parametrize("name, call", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_torchs(name, call):
    try:
        call(torch)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises is the oracle
        expected = exc
    else:
        raise AssertionError("torch raised no error")
    with pytest.raises(type(expected)) as info:
        call(disttrain)
    assert str(info.value) == str(expected)
