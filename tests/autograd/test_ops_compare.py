"""disttrain.autograd.ops_compare against PyTorch: values, dtypes, shapes and error texts of
the non-differentiable operations; contracts (not numbers) of the random ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import disttrain
import disttrain.autograd.ops_compare as oc

NAN = math.nan


def pair(array):
    """The same values as a disttrain and a torch tensor."""
    array = np.asarray(array)
    return disttrain.Tensor._make(array.copy()), torch.from_numpy(array.copy())


def M(x):
    """The module to call: torch for torch tensors, ops_compare for disttrain's."""
    return torch if isinstance(x, torch.Tensor) else oc


def same(ours, theirs):
    """ours equals torch's result: values (NaN in the same places), dtype, shape, no grad."""
    if isinstance(theirs, (tuple, list)):
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            same(o, t)
        return
    if not isinstance(theirs, torch.Tensor):
        assert ours == theirs and type(ours) is type(theirs)
        return
    assert not ours.requires_grad
    expected = theirs.numpy()
    assert ours.data.dtype == expected.dtype, (ours.data.dtype, expected.dtype)
    np.testing.assert_array_equal(ours.data, expected)


def check(fn, *arrays):
    """Run fn on disttrain and torch tensors of the same arrays and compare the results."""
    ours_in, theirs_in = zip(*(pair(a) for a in arrays))
    same(fn(*ours_in), fn(*theirs_in))


def raises_as_torch(fn, *arrays):
    """fn raises the same exception type and text on both libraries."""
    ours_in, theirs_in = zip(*(pair(a) for a in arrays))
    with pytest.raises(Exception) as theirs:
        fn(*theirs_in)
    with pytest.raises(type(theirs.value)) as ours:
        fn(*ours_in)
    assert str(ours.value) == str(theirs.value).split("\n")[0]


RNG = np.random.default_rng(0)
F = RNG.standard_normal((3, 4)).astype(np.float32)
TIES = np.array([[2, 1, 2, 0, 1, 2], [5, 5, 5, 5, 1, 1]], dtype=np.int64)
WITH_NAN = np.array([[1.0, NAN, -2.0, 3.0, NAN, 0.0], [NAN, 1, 1, -1, 2, 2]])
INTS = np.array([[0, 3, 0], [1, 0, 2]], dtype=np.int64)
BOOLS = np.array([[True, False], [False, False]])
EMPTY = np.zeros((0, 3), dtype=np.float32)


# -- comparisons and logic --------------------------------------------------------------
@pytest.mark.parametrize("name", ["eq", "ne", "lt", "le", "gt", "ge", "greater", "less",
                                  "greater_equal", "less_equal", "not_equal"])
def test_compare_methods_and_functions(name):
    other = F.copy()
    other[0] = 0.0
    check(lambda a, b: getattr(a, name)(b), F, other)
    check(lambda a, b: getattr(M(a), name)(a, b), F, other)
    check(lambda a: getattr(a, name)(0.5), F)


@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor"])
def test_logical_binary(name):
    check(lambda a, b: getattr(M(a), name)(a, b), INTS, INTS[::-1])
    check(lambda a, b: getattr(a, name)(b), F, F > 0)  # broadcasting float with bool
    check(lambda a, b: getattr(a, name)(b), INTS, BOOLS[0, :1])


def test_logical_not_and_bitwise():
    check(lambda a: M(a).logical_not(a), F)
    check(lambda a: a.logical_not(), INTS)
    check(lambda a, b: a & b, BOOLS, BOOLS.T)
    check(lambda a, b: a | b, BOOLS, BOOLS.T)
    check(lambda a, b: a ^ b, INTS, INTS[::-1])
    check(lambda a: ~a, BOOLS)
    check(lambda a: ~a, INTS)
    raises_as_torch(lambda a, b: a & b, F, F)
    raises_as_torch(lambda a: ~a, F)
    raises_as_torch(lambda a: a.bitwise_not(), F)


@pytest.mark.parametrize("name", ["any", "all"])
@pytest.mark.parametrize("dim", [None, 0, -1, (0, 1)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_any_all(name, dim, keepdim):
    for array in (INTS, BOOLS, F, EMPTY):
        if dim is None:
            check(lambda a: getattr(a, name)(), array)
            check(lambda a: getattr(M(a), name)(a), array)
        else:
            check(lambda a: getattr(a, name)(dim=dim, keepdim=keepdim), array)
            check(lambda a: getattr(M(a), name)(a, dim, keepdim), array)


def test_any_all_errors_and_uint8():
    raises_as_torch(lambda a: a.any(dim=2), F)
    check(lambda a: a.all(), INTS.astype(np.uint8))
    check(lambda a: a.any(dim=0), np.float32(3.0))


# -- closeness ------------------------------------------------------------------------------
CLOSE_A = np.array([1.0, NAN, math.inf, -math.inf, 1e-9, 100.0])
CLOSE_B = np.array([1.0 + 1e-6, NAN, math.inf, math.inf, 0.0, 100.1])


@pytest.mark.parametrize("equal_nan", [False, True])
def test_isclose_allclose(equal_nan):
    check(lambda a, b: M(a).isclose(a, b, equal_nan=equal_nan), CLOSE_A, CLOSE_B)
    check(lambda a, b: a.isclose(b, rtol=1e-2, atol=0.0), CLOSE_A, CLOSE_B)
    check(lambda a, b: M(a).allclose(a, b, equal_nan=equal_nan), CLOSE_A, CLOSE_B)
    check(lambda a, b: a[:1].allclose(b[:1]), CLOSE_A, CLOSE_B)
    check(lambda a, b: a.isclose(b), INTS, INTS + 1)


def test_close_dtype_errors():
    raises_as_torch(lambda a, b: M(a).isclose(a, b), F, F.astype(np.float64))
    raises_as_torch(lambda a, b: a.allclose(b), F[0], INTS[0, :1].repeat(4))


def test_equal():
    check(lambda a, b: M(a).equal(a, b), F, F)
    check(lambda a, b: a.equal(b), F, F[:2])
    check(lambda a, b: a.equal(b), F, F + 1)
    check(lambda a, b: a.equal(b), CLOSE_A, CLOSE_A)


# -- counting and finding ----------------------------------------------------------------
@pytest.mark.parametrize("dim", [None, 0, -1, (0, 1)])
def test_count_nonzero(dim):
    for array in (INTS, BOOLS, EMPTY):
        check(lambda a: M(a).count_nonzero(a, dim), array)
        check(lambda a: a.count_nonzero(dim=dim), array)
    raises_as_torch(lambda a: a.count_nonzero(dim=(0, 0)), INTS)
    raises_as_torch(lambda a: a.count_nonzero(dim=3), INTS)


@pytest.mark.parametrize("array", [INTS, BOOLS, EMPTY, np.float32(3.0), np.float32(0.0),
                                   INTS.reshape(2, 1, 3)])
def test_nonzero(array):
    check(lambda a: M(a).nonzero(a), array)
    check(lambda a: a.nonzero(as_tuple=True), array)
    check(lambda a: M(a).argwhere(a), array)


# -- sorting --------------------------------------------------------------------------------
@pytest.mark.parametrize("array", [TIES, WITH_NAN, WITH_NAN.astype(np.float32), BOOLS, EMPTY,
                                   np.float32(2.0)], ids=["ties", "nan", "nan32", "bool",
                                                          "empty", "0d"])
@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_argsort(array, dim, descending):
    check(lambda a: a.sort(dim=dim, descending=descending, stable=True), array)
    check(lambda a: a.sort(dim, descending), np.atleast_1d(array)[..., :1])
    check(lambda a: M(a).sort(a, dim=dim, descending=descending, stable=True), array)
    check(lambda a: M(a).argsort(a, dim, descending), np.atleast_1d(array)[..., :1])
    check(lambda a: M(a).argsort(a, dim=dim, descending=descending, stable=True), array)
    check(lambda a: a.argsort(dim=dim, descending=descending, stable=True), array)


@pytest.mark.parametrize("op", [lambda t: t.sort(dim=0, descending=True),
                                lambda t: t.sort(), lambda t: t.topk(2, dim=0),
                                lambda t: t.topk(3, largest=False)], ids=["sort0", "sort",
                                                                          "topk0", "topk-small"])
def test_sort_and_topk_values_carry_the_gradient_as_torch(op):
    """Their values are the chosen elements: the gradient goes back to them, as torch's."""
    x = F.astype(np.float64)  # distinct values: torch's unstable sort orders ties its way
    x_ours, x_theirs = disttrain.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    values_ours, values_theirs = op(x_ours).values, op(x_theirs).values
    assert values_ours.requires_grad and values_theirs.requires_grad
    g = RNG.standard_normal(values_theirs.shape)
    values_ours.backward(disttrain.tensor(g))
    values_theirs.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(x_ours.grad.data, x_theirs.grad.numpy())


def test_sort_returns_named_values_and_indices():
    x = disttrain.tensor(F, requires_grad=True)
    values, indices = x.sort()
    assert values.requires_grad and not indices.requires_grad
    assert type(x.sort()).__name__ == type(torch.sort(torch.from_numpy(F))).__name__
    same(x.sort(descending=True).indices, torch.from_numpy(F).sort(descending=True).indices)
    check(lambda a: M(a).msort(a), TIES)
    raises_as_torch(lambda a: a.sort(dim=3), F)


@pytest.mark.parametrize("k", [0, 1, 3, 6])
@pytest.mark.parametrize("largest", [True, False])
def test_topk(k, largest):
    distinct = RNG.permutation(12).reshape(2, 6).astype(np.float64)
    check(lambda a: a.topk(k, largest=largest), distinct)
    check(lambda a: M(a).topk(a, min(k, 2), 0, largest, True), distinct)
    nan_row = np.array([1.0, NAN, -2.0, 3.0, 0.5, 0.0])  # NaN counts as the largest
    check(lambda a: a.topk(k, largest=largest), nan_row)


def test_topk_edges():
    check(lambda a: a.topk(1), np.float32(5.0))
    check(lambda a: a.topk(0, dim=0), EMPTY)
    raises_as_torch(lambda a: a.topk(7), F)
    raises_as_torch(lambda a: a.topk(-1), F)
    raises_as_torch(lambda a: a.topk(1, dim=2), F)
    assert type(oc.topk(pair(F)[0], 1)).__name__ == type(torch.topk(pair(F)[1], 1)).__name__


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("counts", [False, True])
@pytest.mark.parametrize("dim", [None, 0, 1, -1])
def test_unique(inverse, counts, dim):
    rows = np.array([[3, 1, 3], [3, 1, 3], [0, 2, 0], [3, 1, 3]], dtype=np.int64)
    check(lambda a: M(a).unique(a, True, inverse, counts, dim), rows)
    check(lambda a: a.unique(sorted=False, return_inverse=inverse, return_counts=counts),
          WITH_NAN[:, [0, 2, 3, 5]])
    check(lambda a: a.unique(return_inverse=inverse, return_counts=counts), EMPTY)


def test_unique_bad_dim():
    raises_as_torch(lambda a: a.unique(dim=3), INTS[0])


# -- bincount, searchsorted, bucketize ----------------------------------------------------
def test_bincount():
    x = np.array([0, 3, 3, 1, 7], dtype=np.int64)
    check(lambda a: M(a).bincount(a), x)
    check(lambda a: a.bincount(minlength=10), x)
    check(lambda a: a.bincount(), np.zeros(0, dtype=np.int64))
    for w in (np.linspace(0, 1, 5, dtype=np.float32), np.linspace(0, 1, 5), np.arange(5)):
        check(lambda a, b: a.bincount(b), x, w)
    raises_as_torch(lambda a: a.bincount(), F[0])
    raises_as_torch(lambda a: a.bincount(), np.array([-1, 2]))
    raises_as_torch(lambda a: a.bincount(), INTS)
    raises_as_torch(lambda a: a.bincount(minlength=-1), x)
    raises_as_torch(lambda a, b: a.bincount(b), x, np.ones(3))


@pytest.mark.parametrize("right", [False, True])
def test_searchsorted_bucketize(right):
    seq = np.array([1.0, 2.0, 2.0, 5.0])
    values = np.array([[0.0, 2.0, 3.0], [5.0, 6.0, 1.0]])
    check(lambda s, v: M(s).searchsorted(s, v, right=right), seq, values)
    check(lambda s, v: M(s).searchsorted(s, v, side="right" if right else "left",
                                         out_int32=True), seq, values)
    check(lambda s, v: M(s).bucketize(v, s, right=right), seq, values)
    check(lambda s, v: M(s).bucketize(v, s, out_int32=True, right=right), seq, values)
    rows = np.sort(RNG.standard_normal((2, 3, 5)), axis=-1)
    check(lambda s, v: M(s).searchsorted(s, v, right=right), rows, RNG.standard_normal((2, 3, 4)))
    unsorted = np.array([5.0, 1.0, 2.0])
    check(lambda s, o, v: M(s).searchsorted(s, v, sorter=o), unsorted,
          np.argsort(unsorted), values)


def test_searchsorted_scalar_and_errors():
    seq = np.array([1.0, 2.0])
    s, t = pair(seq)
    same(oc.searchsorted(s, 1.5), torch.searchsorted(t, 1.5))
    raises_as_torch(lambda s, v: M(s).searchsorted(s, v), seq[None], np.ones((2, 2)))
    raises_as_torch(lambda s, v: M(s).searchsorted(s, v, side="left", right=True), seq, seq)
    raises_as_torch(lambda s, v: M(s).searchsorted(s, v, side="mid"), seq, seq)
    raises_as_torch(lambda s, v: M(s).bucketize(v, s), seq[None], seq)


# -- random: contracts, not torch's numbers ---------------------------------------------
def test_randperm():
    disttrain.manual_seed(3)
    p = oc.randperm(50)
    assert p.dtype == torch.randperm(50).numpy().dtype and p.shape == (50,)
    assert sorted(p.tolist()) == list(range(50)) and not p.requires_grad
    disttrain.manual_seed(3)
    assert oc.randperm(50).tolist() == p.tolist()
    assert oc.randperm(0).shape == torch.randperm(0).shape
    with pytest.raises(RuntimeError) as theirs:
        torch.randperm(-1)
    with pytest.raises(RuntimeError, match=str(theirs.value).replace("[", r"\[")):
        oc.randperm(-1)


def test_bernoulli():
    disttrain.manual_seed(0)
    probs = np.array([0.0, 0.2, 0.9, 1.0], dtype=np.float32)
    p, t = pair(np.tile(probs, (20000, 1)))
    draws = p.bernoulli()
    assert draws.data.dtype == torch.bernoulli(t).numpy().dtype and draws.shape == p.shape
    np.testing.assert_allclose(draws.data.mean(0), probs, atol=0.01)
    assert set(np.unique(draws.data)) <= {0.0, 1.0}
    disttrain.manual_seed(0)
    same(oc.bernoulli(p), torch.from_numpy(draws.data))
    assert abs(oc.bernoulli(p, p=0.3).data.mean() - 0.3) < 0.01
    raises_as_torch(lambda a: M(a).bernoulli(a), np.array([1.5]))
    raises_as_torch(lambda a: M(a).bernoulli(a), np.array([1, 0]))
    raises_as_torch(lambda a: M(a).bernoulli(a, p=2.0), np.array([0.5]))


@pytest.mark.parametrize("replacement", [True, False])
def test_multinomial(replacement):
    disttrain.manual_seed(1)
    weights = np.array([[1.0, 3.0, 0.0, 4.0], [0.0, 0.0, 1.0, 1.0]])
    w, t = pair(weights)
    n = 2 if not replacement else 5
    out = w.multinomial(n, replacement)
    theirs = t.multinomial(n, replacement)
    assert out.data.dtype == theirs.numpy().dtype and out.shape == theirs.shape
    assert np.all(weights[np.arange(2)[:, None], out.data] > 0)
    if not replacement:
        assert all(len(set(row)) == n for row in out.tolist())
    disttrain.manual_seed(1)
    same(oc.multinomial(w, n, replacement), torch.from_numpy(out.data))
    assert oc.multinomial(w[0], 1).shape == torch.multinomial(t[0], 1).shape


def test_multinomial_statistics():
    disttrain.manual_seed(2)
    probs = np.array([0.1, 0.2, 0.7])
    w, _ = pair(probs)
    draws = oc.multinomial(w, 30000, replacement=True).data
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / 30000, probs, atol=0.01)
    firsts = [oc.multinomial(w, 3).data for _ in range(3000)]
    assert all(sorted(f.tolist()) == [0, 1, 2] for f in firsts)
    first = np.bincount([f[0] for f in firsts], minlength=3) / 3000
    np.testing.assert_allclose(first, probs, atol=0.03)
    # all zero-probability categories are drawn only after the positive ones, as torch
    same(oc.multinomial(pair([1.0, 0.0, 0.0])[0], 2)[:1],
         torch.multinomial(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), 2)[:1])


@pytest.mark.parametrize("probs,n,replacement", [
    ([1.0, 1.0], 3, False), ([0.0, 0.0], 1, True), ([-1.0, 1.0], 1, True),
    ([1, 1], 1, True), ([[[1.0]]], 1, True), ([1.0, 1.0], 0, True), ([NAN, 1.0], 1, True)])
def test_multinomial_errors(probs, n, replacement):
    raises_as_torch(lambda a: M(a).multinomial(a, n, replacement), np.array(probs))


def test_normal():
    disttrain.manual_seed(4)
    draws = oc.normal(2.0, 3.0, size=(200000,))
    theirs = torch.normal(2.0, 3.0, size=(200000,))
    assert draws.data.dtype == theirs.numpy().dtype and draws.shape == theirs.shape
    assert abs(draws.data.mean() - 2.0) < 0.03 and abs(draws.data.std() - 3.0) < 0.03
    disttrain.manual_seed(4)
    same(oc.normal(2.0, 3.0, size=(200000,)), torch.from_numpy(draws.data))
    for mean, std in ((np.zeros((2, 1)), np.ones(3)), (np.zeros(3, np.float32), 1.0),
                      (1.0, np.ones(3))):
        ours = [pair(v)[0] if isinstance(v, np.ndarray) else v for v in (mean, std)]
        torchs = [pair(v)[1] if isinstance(v, np.ndarray) else v for v in (mean, std)]
        out, ref = oc.normal(*ours), torch.normal(*torchs)
        assert out.shape == tuple(ref.shape) and out.data.dtype == ref.numpy().dtype
    m = oc.normal(pair(np.arange(3.0) * 100)[0], 0.0)
    np.testing.assert_array_equal(m.data, np.arange(3.0) * 100)


def test_normal_errors():
    for ours, theirs in (
            (lambda: oc.normal(0.0, -1.0, size=(2,)), lambda: torch.normal(0.0, -1.0, (2,))),
            (lambda: oc.normal(pair(np.zeros(2))[0], -1.0),
             lambda: torch.normal(torch.zeros(2), -1.0)),
            (lambda: oc.normal(pair(np.zeros(2))[0], pair(np.array([-1.0, 1]))[0]),
             lambda: torch.normal(torch.zeros(2), torch.tensor([-1.0, 1]))),
            (lambda: oc.normal(pair(np.zeros(2, np.int64))[0], 1.0),
             lambda: torch.normal(torch.zeros(2, dtype=torch.long), 1.0))):
        with pytest.raises(Exception) as ref:
            theirs()
        with pytest.raises(type(ref.value)) as got:
            ours()
        assert str(got.value) == str(ref.value)


# -- dtype and metadata methods ----------------------------------------------------------
@pytest.mark.parametrize("name", ["long", "int", "bool", "float", "double"])
def test_casts(name):
    for array in (F * 3, INTS, BOOLS):
        check(lambda a: getattr(a, name)(), array)
    x = disttrain.tensor(F, requires_grad=True)
    assert getattr(x, name)().requires_grad == getattr(
        torch.tensor(F, requires_grad=True), name)().requires_grad


def test_long_returns_self():
    x, t = pair(INTS)
    assert (x.long() is x) == (t.long() is t)


@pytest.mark.parametrize("array", [F, F.astype(np.float64), INTS, INTS.astype(np.int32),
                                   INTS.astype(np.uint8), BOOLS])
def test_type_and_metadata(array):
    x, t = pair(array)
    assert x.type() == t.type()
    assert x.element_size() == t.element_size()
    assert x.is_floating_point() == t.is_floating_point() == oc.is_floating_point(x)
    assert x.ndimension() == t.ndimension() and x.nelement() == t.nelement()
    for target in ("torch.LongTensor", "torch.DoubleTensor", "torch.BoolTensor"):
        same(x.type(target), t.type(target))
    same(x.type(np.int64), t.type(torch.int64))
    same(x.type_as(pair(F)[0]), t.type_as(torch.from_numpy(F)))
    with pytest.raises(ValueError) as ref:
        t.type("float")
    with pytest.raises(ValueError, match=str(ref.value)):
        x.type("float")


@pytest.mark.parametrize("array", [F, INTS, BOOLS])
def test_new_factories(array):
    x, t = pair(array)
    same(x.new_zeros((2, 3)), t.new_zeros((2, 3)))
    same(x.new_zeros(2, 3), t.new_zeros(2, 3))
    same(x.new_ones(4, dtype=np.float64), t.new_ones(4, dtype=torch.float64))
    same(x.new_full((2,), 3), t.new_full((2,), 3))
    same(x.new_full((2,), 3.7), t.new_full((2,), 3.7))
    same(x.new_empty((2, 2)).shape == (2, 2), t.new_empty((2, 2)).shape == (2, 2))
    assert x.new_empty(3).data.dtype == t.new_empty(3).numpy().dtype
    same(x.new_tensor([1, 2]), t.new_tensor([1, 2]))
    same(x.new_tensor([1.5, 2]), t.new_tensor([1.5, 2]))
    if array.dtype.kind == "f":
        assert x.new_zeros(2, requires_grad=True).requires_grad


def test_contiguous():
    x, t = pair(F)
    assert x.contiguous() is x and t.contiguous() is t
    assert x.is_contiguous() == t.is_contiguous()
    xt, tt = x.transpose(0, 1), t.transpose(0, 1)
    assert xt.is_contiguous() == tt.is_contiguous()
    c = xt.contiguous()
    assert c.is_contiguous() == tt.contiguous().is_contiguous()
    same(c, tt.contiguous())


def test_is_nonzero():
    for array in (np.array([0.0]), np.array([2]), np.array(True)):
        x, t = pair(array)
        assert oc.is_nonzero(x) == torch.is_nonzero(t) == x.is_nonzero()
    raises_as_torch(lambda a: M(a).is_nonzero(a), F)
    raises_as_torch(lambda a: M(a).is_nonzero(a), EMPTY)


def test_all_names_exist():
    for name in oc.__all__:
        assert callable(getattr(oc, name)) and hasattr(torch, name), name
