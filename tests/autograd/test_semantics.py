"""Autograd semantics and error texts, checked against what torch does in the same situation."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import disttrain
from disttrain.autograd.tensor import NON_LEAF_GRAD_WARNING

from .helpers import torch_error


def both(values, dtype=np.float32, requires_grad=True):
    """The same values as a disttrain tensor and a torch tensor."""
    array = np.asarray(values, dtype=dtype)
    return (disttrain.tensor(array, requires_grad=requires_grad),
            torch.tensor(array, requires_grad=requires_grad))


def raises_like_torch(ours, theirs, exc=RuntimeError):
    """ours() raises exc with exactly the message torch's theirs() raises."""
    expected = torch_error(theirs)
    with pytest.raises(exc) as info:
        ours()
    assert str(info.value) == expected
    return expected


# -- backward errors ----------------------------------------------------------------------
def test_implicit_grad_needs_a_scalar():
    x, tx = both([1.0, 2.0, 3.0])
    text = raises_like_torch(lambda: (x * 2).backward(), lambda: (tx * 2).backward())
    assert text == "grad can be implicitly created only for scalar outputs"


def test_gradient_shape_mismatch():
    x, tx = both([1.0, 2.0, 3.0])
    expected = torch_error(lambda: (tx * 2).backward(torch.ones(2)))
    with pytest.raises(RuntimeError) as info:
        (x * 2).backward(disttrain.ones(2))
    # Same words; torch prints torch.Size([2]) where we print the tuple (2,).
    as_tuples = re.sub(r"torch\.Size\(\[(\d+)\]\)", r"(\1,)", expected)
    assert str(info.value) == as_tuples
    assert str(info.value).startswith("Mismatch in shape: grad_output[0] has a shape of ")
    assert " and output[0] has a shape of (3,)." in str(info.value)


def test_backward_of_tensor_without_grad():
    x, tx = both([1.0, 2.0], requires_grad=False)
    text = raises_like_torch(lambda: x.sum().backward(), lambda: tx.sum().backward())
    assert text == "element 0 of tensors does not require grad and does not have a grad_fn"


def test_second_backward_through_freed_graph():
    x, tx = both([1.0, 2.0, 3.0])

    def twice(t):
        y = (t * t).sum()
        y.backward()
        y.backward()

    text = raises_like_torch(lambda: twice(x), lambda: twice(tx))
    assert text.startswith("Trying to backward through the graph a second time")


@pytest.mark.parametrize("make", [
    lambda t: (t + 1).sum(),
    lambda t: (t - 2).reshape(3, 1).sum(),
    lambda t: (-t).reshape(1, 3).T.sum(dim=0).sum(),
], ids=["add-sum", "sub-reshape", "neg-T"])
def test_graph_without_saved_tensors_can_backward_twice(make):
    x, tx = both([1.0, 2.0, 3.0])
    for t in (x, tx):
        y = make(t)
        y.backward()
        y.backward()  # nothing was saved, so nothing was freed: grads add up
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())


def test_retain_graph_allows_second_backward():
    x, tx = both([1.0, 2.0, 3.0])
    for t in (x, tx):
        y = (t * t.exp()).sum()
        y.backward(retain_graph=True)
        y.backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-6)


def test_backward_with_explicit_gradient_and_leaf_root():
    x, tx = both([[1.0, 2.0], [3.0, 4.0]])
    g = np.array([[1.0, -1.0], [0.5, 2.0]], dtype=np.float32)
    (x * 3).backward(disttrain.tensor(g))
    (tx * 3).backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())
    x.backward(g)  # a leaf as the root: its gradient is the seed itself
    tx.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())


# -- .grad ----------------------------------------------------------------------------------
def test_grad_is_none_until_backward_then_accumulates():
    x, tx = both([1.0, 2.0, 3.0])
    assert x.grad is None and tx.grad is None
    for _ in range(3):
        (x * x).sum().backward()
        (tx * tx).sum().backward()
        np.testing.assert_allclose(x.grad.data, tx.grad.numpy())
    np.testing.assert_allclose(x.grad.data, 3 * 2 * x.data)


def test_grad_of_unused_leaf_stays_none():
    x, _ = both([1.0])
    w, _ = both([2.0])
    (x * 2).sum().backward()
    assert w.grad is None


def test_non_leaf_grad_warns_with_torch_text():
    x, tx = both([1.0, 2.0])
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        assert (tx * 2).grad is None
    with pytest.warns(UserWarning) as ours:
        assert (x * 2).grad is None
    assert str(ours[0].message) == NON_LEAF_GRAD_WARNING
    assert str(theirs[0].message).startswith(NON_LEAF_GRAD_WARNING)  # + "(Triggered internally"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert x.grad is None  # a leaf never warns


def test_retain_grad():
    x, tx = both([1.0, 2.0, 3.0])
    ys = []
    for t in (x, tx):
        y = t * t
        y.retain_grad()
        (y * 3).sum().backward()
        ys.append(y)
    assert ys[0].retains_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a retained non-leaf grad does not warn
        np.testing.assert_allclose(ys[0].grad.data, ys[1].grad.numpy())
    assert ys[0].grad.dtype == np.float32
    x.retain_grad()  # a leaf: nothing to do, no error
    a, ta = both([1.0], requires_grad=False)
    raises_like_torch(lambda: a.retain_grad(), lambda: ta.retain_grad())


def test_retained_grad_accumulates_over_backwards():
    x, tx = both([1.0, 2.0])
    ys = []
    for t in (x, tx):
        y = t * 2
        y.retain_grad()
        loss = (y * y).sum()
        loss.backward(retain_graph=True)
        loss.backward()
        ys.append(y)
    np.testing.assert_allclose(ys[0].grad.data, ys[1].grad.numpy())


# -- hooks --------------------------------------------------------------------------------
def test_hook_on_leaf_replaces_gradient_and_can_be_removed():
    x, tx = both([1.0, 2.0, 3.0])
    calls = {"ours": 0, "theirs": 0}

    def hook(key):
        def fn(g):
            calls[key] += 1
            return g * 10
        return fn

    handles = [x.register_hook(hook("ours")), tx.register_hook(hook("theirs"))]
    (x * x).sum().backward()
    (tx * tx).sum().backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())
    for h in handles:
        h.remove()
    (x * x).sum().backward()
    (tx * tx).sum().backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())
    assert calls == {"ours": 1, "theirs": 1}


def test_hook_on_leaf_used_twice_runs_once_on_the_summed_gradient():
    x, tx = both([1.0, 2.0, 3.0])
    seen = {"ours": [], "theirs": []}
    x.register_hook(lambda g: seen["ours"].append(g.data.copy()) or g * 0 + 1)
    tx.register_hook(lambda g: seen["theirs"].append(g.numpy().copy()) or g * 0 + 1)
    (x * 2 + x.exp()).sum().backward()
    (tx * 2 + tx.exp()).sum().backward()
    assert len(seen["ours"]) == len(seen["theirs"]) == 1
    np.testing.assert_allclose(seen["ours"][0], seen["theirs"][0], rtol=1e-6)
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())


def test_post_accumulate_grad_hook_runs_once_per_backward():
    x, tx = both([1.0, 2.0])
    count = {"ours": 0, "theirs": 0}
    x.register_post_accumulate_grad_hook(lambda t: count.__setitem__("ours", count["ours"] + 1))
    tx.register_post_accumulate_grad_hook(
        lambda t: count.__setitem__("theirs", count["theirs"] + 1))
    (x * x + x).sum().backward()
    (tx * tx + tx).sum().backward()
    assert count == {"ours": 1, "theirs": 1}


def test_hook_on_non_leaf():
    x, tx = both([1.0, -2.0, 3.0])
    seen = []
    for t in (x, tx):
        y = t.exp()
        handle = y.register_hook(lambda g: g * 3)
        y.register_hook(lambda g: seen.append(g.dtype) and None)  # None keeps the grad
        (y * t).sum().backward()
        handle.remove()
        (t.exp() * t).sum().backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy(), rtol=1e-6)
    assert seen[0] == np.float32


def test_hook_on_tensor_without_grad():
    x, tx = both([1.0], requires_grad=False)
    text = raises_like_torch(lambda: x.register_hook(lambda g: g),
                             lambda: tx.register_hook(lambda g: g))
    assert text == "cannot register a hook on a tensor that doesn't require gradient"


# -- requires_grad and grad mode -------------------------------------------------------------
def test_requires_grad_propagation():
    a = disttrain.tensor([1.0, 2.0])
    b = disttrain.tensor([3.0, 4.0], requires_grad=True)
    assert not (a * 2).requires_grad and (a * 2).grad_fn is None
    assert (a * b).requires_grad and not (a * b).is_leaf
    assert (a + b).sum().requires_grad
    assert b.is_leaf and a.is_leaf and (a * 2).is_leaf
    assert not b.detach().requires_grad


def test_requires_grad_on_non_leaf_as_torch():
    x, tx = both([1.0])
    (x * 2).requires_grad_(True)  # already requires grad: allowed, as in torch
    (tx * 2).requires_grad_(True)
    raises_like_torch(lambda: (x * 2).requires_grad_(False),
                      lambda: (tx * 2).requires_grad_(False))

    def set_flag(t):
        (t * 2).requires_grad = True

    raises_like_torch(lambda: set_flag(x), lambda: set_flag(tx))


def test_requires_grad_on_integer_tensor():
    raises_like_torch(lambda: disttrain.tensor([1, 2], requires_grad=True),
                      lambda: torch.tensor([1, 2], requires_grad=True))


def test_no_grad_context_and_nesting():
    x = disttrain.tensor([1.0], requires_grad=True)
    assert disttrain.is_grad_enabled()
    with disttrain.no_grad():
        assert not (x * 2).requires_grad
        with disttrain.enable_grad():
            assert (x * 2).requires_grad
            with disttrain.set_grad_enabled(False):
                assert not disttrain.is_grad_enabled()
            assert disttrain.is_grad_enabled()
        assert not disttrain.is_grad_enabled()
    assert disttrain.is_grad_enabled() and (x * 2).requires_grad


def test_grad_mode_restored_after_exception():
    with pytest.raises(ValueError), disttrain.no_grad():
        raise ValueError
    assert disttrain.is_grad_enabled()


@pytest.mark.parametrize("lib", ["ours", "torch"])
def test_grad_mode_decorators(lib):
    m = disttrain if lib == "ours" else torch
    x = (disttrain if lib == "ours" else torch).ones(2, requires_grad=True)

    @m.no_grad()
    def without(t):
        return t * 2

    @m.no_grad
    def without_bare(t):
        return t * 2

    @m.set_grad_enabled(False)
    def off(t):
        return t * 2

    assert m.is_grad_enabled()  # decorating with set_grad_enabled leaves the mode alone

    @m.enable_grad()
    def with_grad(t):
        return t * 2

    assert not without(x).requires_grad
    assert not without_bare(x).requires_grad
    assert not off(x).requires_grad
    assert m.is_grad_enabled()
    with m.no_grad():
        assert with_grad(x).requires_grad
        assert not m.is_grad_enabled()
    assert (x * 2).requires_grad


def test_set_grad_enabled_as_function_call():
    try:
        disttrain.set_grad_enabled(False)
        assert not disttrain.is_grad_enabled()
    finally:
        disttrain.set_grad_enabled(True)
    assert disttrain.is_grad_enabled()


# -- detach and versions --------------------------------------------------------------------
def test_detach_shares_storage_and_version():
    x = disttrain.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    d.add_(1)
    np.testing.assert_allclose(y.data, [3.0, 5.0])
    assert y._version_number == d._version_number == 1


@pytest.mark.parametrize("op", [
    lambda t, m: t.add_(1), lambda t, m: t.sub_(1), lambda t, m: t.mul_(2),
    lambda t, m: t.div_(2), lambda t, m: t.zero_(), lambda t, m: t.fill_(3),
    lambda t, m: t.copy_(m.ones(3)), lambda t, m: t.add_(m.ones(3), alpha=2),
    lambda t, m: t.__iadd__(1), lambda t, m: t.__isub__(m.ones(3)), lambda t, m: t.__imul__(2),
    lambda t, m: t.__itruediv__(2), lambda t, m: t.__setitem__(0, 5.0),
], ids=["add_", "sub_", "mul_", "div_", "zero_", "fill_", "copy_", "add_alpha", "+=", "-=",
        "*=", "/=", "setitem"])
def test_inplace_ops_bump_version_and_match_torch(op):
    ours, theirs = both([1.0, 2.0, 4.0], requires_grad=False)
    op(ours, disttrain)
    op(theirs, torch)
    assert ours._version_number == theirs._version == 1
    np.testing.assert_allclose(ours.data, theirs.numpy())


def test_augmented_assignment_keeps_identity():
    x = disttrain.tensor([1.0, 2.0])
    before = x
    x += 1
    x *= 2
    assert x is before and x._version_number == 2


def test_modified_saved_output_raises_torch_text():
    x, tx = both([1.0, 2.0, 3.0])

    def run(t, ctx):
        y = t.exp()
        with ctx():
            y.mul_(2)
        y.sum().backward()

    text = raises_like_torch(lambda: run(x, disttrain.no_grad), lambda: run(tx, torch.no_grad))
    assert "[torch.FloatTensor [3]], which is output 0 of Exp, is at version 1; expected " \
           "version 0 instead. Hint: " in text


def test_modified_saved_output_outside_no_grad():
    # y.mul_(2) recorded in the graph still overwrote the output Sigmoid saved.
    x, tx = both([1.0, 2.0, 3.0])

    def run(t):
        y = t.sigmoid()
        y.mul_(2)
        y.sum().backward()

    raises_like_torch(lambda: run(x), lambda: run(tx))


def test_modified_saved_leaf_input_raises_torch_text():
    w, tw = both([1.0, 2.0, 3.0])
    a, ta = both([4.0, 5.0, 6.0], requires_grad=False)

    def run(t, other):
        y = other * t
        other.add_(1)
        y.sum().backward()

    text = raises_like_torch(lambda: run(w, a), lambda: run(tw, ta))
    assert "[torch.FloatTensor [3]] is at version 1; expected version 0 instead." in text
    assert "which is output" not in text


def test_modified_saved_double_tensor_names_double():
    x, tx = both([[1.0, 2.0], [3.0, 4.0]], dtype=np.float64)

    def run(t, ctx):
        y = t.tanh()
        with ctx():
            y.add_(1)
        y.sum().backward()

    text = raises_like_torch(lambda: run(x, disttrain.no_grad), lambda: run(tx, torch.no_grad))
    assert "[torch.DoubleTensor [2, 2]], which is output 0 of Tanh" in text


def test_inplace_on_leaf_requiring_grad():
    x, tx = both([1.0, 2.0])
    text = raises_like_torch(lambda: x.add_(1), lambda: tx.add_(1))
    assert text == "a leaf Variable that requires grad is being used in an in-place operation."

    def mul_assign(t):
        t *= 2

    raises_like_torch(lambda: mul_assign(x), lambda: mul_assign(tx))
    with disttrain.no_grad():
        x.add_(1)
        x -= 0.5
    np.testing.assert_allclose(x.data, [1.5, 2.5])
    assert x.requires_grad and x.is_leaf and x._version_number == 2


def test_inplace_on_non_leaf_in_graph_matches_torch():
    x, tx = both([1.0, -2.0, 3.0])
    for t in (x, tx):
        y = t * 2
        y.add_(1)
        y.mul_(3)
        y.sub_(t)
        y /= 2
        (y * y).sum().backward()
    np.testing.assert_allclose(x.grad.data, tx.grad.numpy())


def test_inplace_with_grad_requiring_operand():
    w, tw = both([1.0, 2.0])
    for t in (w, tw):
        acc = (disttrain if t is w else torch).zeros(2)
        acc.add_(t * t)
        acc.mul_(t)
        acc.sum().backward()
    np.testing.assert_allclose(w.grad.data, tw.grad.numpy())


def test_inplace_on_0d_tensor():
    x = disttrain.tensor(2.0)
    y = x * 3  # 0-d results must stay arrays, or in-place ops silently do nothing
    y.add_(1)
    x.mul_(2)
    assert y.item() == 7.0 and x.item() == 4.0
    assert isinstance(y.data, np.ndarray) and isinstance((y + y).exp().data, np.ndarray)


# -- tensor() and dtypes ----------------------------------------------------------------------
@pytest.mark.parametrize("data", [
    1.5, [1.0, 2.0], [[1, 2], [3, 4]], 3, True, [True, False], [1, 2.5],
    np.float64(1.5), np.float32(2.0), np.array([1.0, 2.0]), np.array([1, 2], dtype=np.int32),
    np.array([1.0], dtype=np.float32),
], ids=repr)
def test_tensor_dtype_rules_match_torch(data):
    assert disttrain.tensor(data).dtype == np.dtype(str(torch.tensor(data).dtype)[6:])


@pytest.mark.parametrize("dtype", [np.float64, disttrain.float64, "float64"], ids=str)
def test_tensor_dtype_argument(dtype):
    t = disttrain.tensor([1, 2], dtype=dtype)
    assert t.dtype == np.float64
    assert disttrain.tensor([1.0], dtype=disttrain.float32).dtype == np.float32


def test_tensor_copies_its_data():
    a = np.array([1.0, 2.0])
    t = disttrain.tensor(a)
    a[0] = 9.0
    assert t.data[0] == 1.0
    assert disttrain.from_numpy(a).data is a


def test_float64_is_kept_through_every_op():
    x = disttrain.tensor(np.random.default_rng(0).normal(size=(2, 3, 4, 4)), requires_grad=True)
    w = disttrain.tensor(np.random.default_rng(1).normal(size=(3, 3, 3, 3)), requires_grad=True)
    from disttrain.autograd import ops

    y = ops.conv2d(x, w, padding=1).relu()
    y = ops.max_pool2d(y, 2).flatten(1)
    y = ops.layer_norm(y, 12) * 0.5 + 1
    y = ops.gelu(y.sigmoid() ** 2 / 3).tanh().exp().log().sqrt()
    y = y.clamp(min=0.1).softmax(-1).log_softmax(-1).abs()
    y = disttrain.cat([y, y.amax(dim=1, keepdim=True), y.var(dim=1, keepdim=True)], 1)
    y = disttrain.where(y > 0.5, y, y.std()).maximum(y.mean()).T @ y
    loss = y[0, ::2].sum() + y.max(dim=0).values.sum()
    assert loss.dtype == np.float64
    loss.backward()
    assert x.grad.dtype == np.float64 and w.grad.dtype == np.float64


def test_bool_and_number_conversions_as_torch():
    assert bool(disttrain.tensor(1.0)) and not bool(disttrain.tensor(0.0))
    raises_like_torch(lambda: bool(disttrain.tensor([1.0, 2.0])),
                      lambda: bool(torch.tensor([1.0, 2.0])))
    assert float(disttrain.tensor([2.5])) == 2.5 and int(disttrain.tensor(3)) == 3
    raises_like_torch(lambda: disttrain.tensor([1.0, 2.0]).item(),
                      lambda: torch.tensor([1.0, 2.0]).item())


def test_numpy_on_tensor_requiring_grad():
    x, tx = both([1.0])
    raises_like_torch(lambda: x.numpy(), lambda: tx.numpy())
    assert x.detach().numpy() is x.data


@pytest.mark.parametrize("view", [
    lambda t: t.view(-1), lambda t: t[1:], lambda t: t.unsqueeze(0), lambda t: t.reshape(3, 1),
    lambda t: t.unsqueeze(1).T,
], ids=["view", "slice", "unsqueeze", "reshape", "T"])
def test_inplace_through_a_view_is_seen_by_saved_tensors(view):
    x, tx = both([1.0, 2.0, 3.0])

    def run(t, ctx):
        y = t.exp()
        with ctx():
            view(y).mul_(2)
        y.sum().backward()

    raises_like_torch(lambda: run(x, disttrain.no_grad), lambda: run(tx, torch.no_grad))


def test_view_shares_version_counter_copy_does_not():
    y = disttrain.tensor([1.0, 2.0, 3.0]) * 1
    v, c = y[0], y[[0, 1]]
    y.add_(1)
    assert y._version_number == v._version_number == 1
    assert c._version_number == 0


@pytest.mark.parametrize("value", [3, 3.0, True], ids=repr)
def test_full_dtype_follows_fill_value(value):
    assert disttrain.full((2,), value).dtype == np.dtype(str(torch.full((2,), value).dtype)[6:])


def test_inplace_change_to_an_input_no_running_vjp_reads_is_allowed_as_in_torch():
    """x @ w with only w requiring grad never reads w again: torch lets w change in place."""
    import torch

    import disttrain

    for lib in (torch, disttrain):
        w = lib.ones(3, 3, requires_grad=True)
        x = lib.ones(2, 3)
        y = (x @ w).sum()
        with lib.no_grad():
            w.mul_(2)
        y.backward()
        assert w.grad is not None
    for lib in (torch, disttrain):
        x = lib.ones(2, 3, requires_grad=True)
        w = lib.ones(3, 3)
        y = (x @ w).sum()
        w.mul_(2)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()


def test_inplace_through_a_view_of_a_leaf_raises_torchs_error():
    import torch

    import disttrain

    messages = []
    for lib in (torch, disttrain):
        x = lib.ones(4, requires_grad=True)
        with pytest.raises(RuntimeError) as info:
            x[0:2].add_(1)
        messages.append(str(info.value))
    assert messages[1] == messages[0]


def test_inplace_through_a_view_in_the_graph_is_refused_not_silently_wrong():
    import disttrain

    x = disttrain.ones(4, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="in-place operation on a view"):
        y[1:3].mul_(disttrain.ones(2, requires_grad=True))
    with disttrain.no_grad():  # outside the graph a view may be changed in place
        y[1:3].mul_(3)
    assert y.data.tolist() == [2, 6, 6, 2]
    z = (x * 2).reshape(2, 2).clone()  # a copy, not a view: allowed and recorded
    z.mul_(3)
    z.sum().backward()
    assert x.grad.data.tolist() == [6, 6, 6, 6]


def test_grad_buffer_receives_every_backward_in_place():
    # what DistributedDataParallel's buckets rely on (torch: gradient_as_bucket_view=True)
    w = disttrain.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    (w * 2.0).sum().backward()
    flat = np.zeros(8, dtype=np.float32)
    w.set_grad_buffer(flat[1:7].reshape(2, 3))
    np.testing.assert_array_equal(flat, [0, 2, 2, 2, 2, 2, 2, 0])  # the old grad, copied in
    assert np.shares_memory(w.grad.data, flat)
    (w * 3.0).sum().backward()
    np.testing.assert_array_equal(flat[1:7], 5.0)
    w.grad = None
    (w * 4.0).sum().backward()  # a fresh gradient lands in the buffer too
    np.testing.assert_array_equal(flat, [0, 4, 4, 4, 4, 4, 4, 0])
    assert np.shares_memory(w.grad.data, flat)


def test_grad_buffer_must_match_the_tensor():
    w = disttrain.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="does not match"):
        w.set_grad_buffer(np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(RuntimeError, match="only for leaf"):
        (w * 2.0).set_grad_buffer(np.zeros((2, 3), dtype=np.float32))


def test_index_list_is_copied_for_backward_and_empty_list_indexes_nothing():
    x, tx = both([1.0, 2.0, 3.0])
    key = [0, 2, 2]
    y = x[key]
    key[0] = 1  # an edit after the forward does not reach the saved index
    y.sum().backward()
    tx[[0, 2, 2]].sum().backward()
    np.testing.assert_array_equal(x.grad.data, tx.grad.numpy())
    z, tz = disttrain.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])
    z[[]], tz[[]] = 5.0, 5.0
    np.testing.assert_array_equal(z.data, tz.numpy())


def test_tensors_hash_by_identity_as_torch():
    a, b = disttrain.tensor([1.0]), disttrain.tensor([1.0])
    assert hash(a) == id(a) and len({a: 0, b: 1}) == 2


@pytest.mark.parametrize("requires", [(1, 1, 1), (0, 1, 1), (1, 0, 1), (0, 0, 1), (1, 1, 0)],
                         ids=lambda r: "xwb=" + "".join(map(str, r)))
@pytest.mark.parametrize("changed", ["x", "w", "b"])
def test_conv2d_inputs_changed_in_place_as_torch(requires, changed):
    """conv2d's bias is part of its node (as torch's ConvolutionBackward0, which saves x and
    w, not the bias): changing x or w in place fails backward whichever gradients run,
    changing the bias never does."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3, 6, 6), (4, 3, 3, 3),
                                                                   (4,)]]

    def run(lib, functional):
        x, w, b = (lib.tensor(a, requires_grad=bool(r)) for a, r in zip(arrays, requires))
        y = functional.conv2d(x, w, b)
        with lib.no_grad():
            {"x": x, "w": w, "b": b}[changed].add_(1)
        y.sum().backward()
        return [None if t.grad is None else np.asarray(t.grad.data if lib is disttrain
                                                        else t.grad.numpy()) for t in (x, w, b)]

    from disttrain.autograd import ops

    if changed == "b":
        ours, theirs = run(disttrain, ops), run(torch, torch.nn.functional)
        for o, t in zip(ours, theirs):
            assert (o is None) == (t is None)
            if o is not None:
                np.testing.assert_allclose(o, t, rtol=1e-4, atol=1e-4)
    else:
        raises_like_torch(lambda: run(disttrain, ops), lambda: run(torch, torch.nn.functional))
