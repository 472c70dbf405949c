"""Rule.into: weight and bias gradients written by the matmul or sum straight into a
leaf's gradient buffer (a DDP bucket's view) must be the very numbers the vjp path makes
and copies in, bit for bit, and match torch's; and the engine must fall back to the vjp
whenever writing in place would be wrong (a hook that may replace the gradient, a
leaf used twice, a gradient of another dtype).

`into_calls` counts the writes that happened, so each test knows which path ran.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
from disttrain import nn
from disttrain.autograd import rules

from ..nn.helpers import TORCH_DTYPE, assert_close, copy_weights


@pytest.fixture
def into_calls(monkeypatch):
    """Count the into() writes that succeeded, per rule name."""
    calls = {"Addmm": 0, "Conv2d": 0}
    for name in calls:
        rule = rules.RULES[name]

        def counting(fn, name=name):
            if fn is None:
                return None

            def wrapped(*args, **kwargs):
                wrote = fn(*args, **kwargs)
                calls[name] += bool(wrote)
                return wrote
            return wrapped

        monkeypatch.setitem(rules.RULES, name,
                            rule._replace(into=tuple(counting(f) for f in rule.into)))
    return calls


def _layers(kind: str, dtype):
    torch.manual_seed(0)
    if kind == "linear":
        theirs = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(),
                                     torch.nn.Linear(5, 3))
        ours = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3))
        x = np.random.default_rng(1).standard_normal((4, 6, 7))  # 3-D: rows folded
    else:
        theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
                                     torch.nn.Conv2d(4, 3, 3, stride=2))
        ours = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 3, 3, stride=2))
        x = np.random.default_rng(1).standard_normal((3, 2, 9, 9))
    theirs = theirs.to(TORCH_DTYPE[np.dtype(dtype)])
    ours.to(dtype)
    copy_weights(ours, theirs)
    return ours, theirs, x.astype(dtype)


def _grads(model, x, buffers: bool) -> dict:
    """Each parameter's gradient after one backward, with or without gradient buffers."""
    bufs = {}
    if buffers:
        for name, p in model.named_parameters():
            bufs[name] = np.full(p.data.shape, np.nan, dtype=p.data.dtype)
            p.set_grad_buffer(bufs[name])
    out = model(disttrain.tensor(x))
    out.backward(disttrain.tensor(np.cos(np.arange(out.data.size)).reshape(out.shape)
                                  .astype(out.data.dtype)))
    grads = {}
    for name, p in model.named_parameters():
        if buffers:
            assert np.shares_memory(p.grad.data, bufs[name]), name
        grads[name] = p.grad.data.copy()
    return grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_written_in_place_equals_the_vjp_path_bit_for_bit_and_torch(kind, dtype, into_calls):
    ours, theirs, x = _layers(kind, dtype)
    plain = _grads(ours, x, buffers=False)
    assert into_calls == {"Addmm": 0, "Conv2d": 0}  # no buffer: nothing to write into
    ours.zero_grad()
    in_place = _grads(ours, x, buffers=True)
    rule = "Addmm" if kind == "linear" else "Conv2d"
    # Weight and bias of both layers (a conv's bias gradient is its own rule's sum).
    assert into_calls[rule] == 4
    for name in plain:
        assert np.array_equal(in_place[name], plain[name]), name
    tx = torch.tensor(x)
    out = theirs(tx)
    out.backward(torch.tensor(np.cos(np.arange(out.numel())).reshape(out.shape),
                              dtype=out.dtype))
    for name, p in theirs.named_parameters():
        assert_close(in_place[name], p.grad, dtype)


def test_a_second_backward_accumulates_into_the_buffer(into_calls):
    ours, theirs, x = _layers("linear", np.float64)
    once = _grads(ours, x, buffers=True)
    writes = into_calls["Addmm"]
    out = ours(disttrain.tensor(x))
    out.backward(disttrain.tensor(np.cos(np.arange(out.data.size)).reshape(out.shape)))
    assert into_calls["Addmm"] == writes  # .grad exists: added to, not overwritten
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, 2 * once[name], rtol=1e-14, atol=0)


def test_a_leaf_used_twice_gets_both_gradients(into_calls):
    torch.manual_seed(0)
    theirs = torch.nn.Linear(4, 4).double()
    ours = nn.Linear(4, 4).to(np.float64)
    copy_weights(ours, theirs)
    for p in ours.parameters():
        p.set_grad_buffer(np.zeros(p.data.shape))
    x = np.random.default_rng(2).standard_normal((3, 4))
    ours(ours(disttrain.tensor(x))).sum().backward()
    theirs(theirs(torch.tensor(x))).sum().backward()
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(dict(ours.named_parameters())[name].grad.data,
                                   p.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_a_hook_that_may_replace_the_gradient_takes_the_vjp_path(into_calls):
    ours, _, x = _layers("linear", np.float64)
    weight = ours[0].weight
    weight.register_hook(lambda g: g * 3)
    plain = _grads(ours, x, buffers=False)["0.weight"]
    ours.zero_grad()
    hooked = _grads(ours, x, buffers=True)["0.weight"]
    np.testing.assert_array_equal(hooked, plain)
    assert into_calls["Addmm"] == 3  # every parameter but the hooked weight


def test_post_accumulate_hooks_run_once_after_the_write(into_calls):
    ours, _, x = _layers("linear", np.float64)
    seen = []
    for p in ours.parameters():
        p.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.copy()))
    grads = _grads(ours, x, buffers=True)
    assert into_calls["Addmm"] == 4
    assert sorted(g.shape for g in seen) == sorted(g.shape for g in grads.values())  # once each
    for g in seen:
        assert not np.isnan(g).any()  # the hook saw the finished gradient


def test_a_gradient_of_another_dtype_is_cast_as_before(into_calls):
    """float32 weights fed float64 inputs: the product is float64, so it cannot be the
    matmul's output into a float32 buffer; the vjp path casts it, as without a buffer."""
    ours, _, x = _layers("linear", np.float32)
    plain = _grads(ours, x.astype(np.float64), buffers=False)
    ours.zero_grad()
    cast = _grads(ours, x.astype(np.float64), buffers=True)
    assert into_calls["Addmm"] == 0
    for name in plain:
        assert cast[name].dtype == np.float32
        assert np.array_equal(cast[name], plain[name]), name
