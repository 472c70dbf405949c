"""Shape mistakes raise torch's exception type with torch's text.

Each case makes the same call in torch and in disttrain and compares what they raise,
word for word (torch.Size([a, b]) printed as our tuples' (a, b) where a text has one).
The calls are the ones a user's model gets wrong: widths that do not chain, a target that
does not broadcast, a view of a transposed tensor, a conv whose channels or kernel do
not fit, a pool larger than its input, an embedding index past the table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
import disttrain.nn.functional as F


def _zeros(lib, *shape, dtype=None):
    if lib is torch:
        return torch.zeros(*shape, dtype=dtype or torch.float32)
    return disttrain.tensor(np.zeros(shape, dtype=np.float32 if dtype is None else np.int64))


def _functional(lib):
    return torch.nn.functional if lib is torch else F


CASES = {
    # broadcasting: the rightmost clash, numbered in the result's dims
    "add": lambda m: _zeros(m, 4, 5) + _zeros(m, 4, 2),
    "mul-leading": lambda m: _zeros(m, 3, 4, 5) * _zeros(m, 2, 5),
    "sub-longer-b": lambda m: _zeros(m, 3, 4, 5) - _zeros(m, 3, 4, 5, 2),
    "div-last": lambda m: _zeros(m, 3, 4, 5) / _zeros(m, 7),
    "maximum": lambda m: m.maximum(_zeros(m, 2, 3), _zeros(m, 3, 2)),
    # matmul in each of its forms
    "matmul-2d": lambda m: _zeros(m, 4, 5) @ _zeros(m, 4, 5),
    "matmul-3d-2d": lambda m: _zeros(m, 3, 4, 5) @ _zeros(m, 4, 5),
    "matmul-4d-2d": lambda m: _zeros(m, 2, 3, 4, 5) @ _zeros(m, 4, 5),
    "matmul-1d-2d": lambda m: _zeros(m, 5) @ _zeros(m, 4, 5),
    "matmul-2d-1d": lambda m: _zeros(m, 4, 5) @ _zeros(m, 4),
    "matmul-3d-1d": lambda m: _zeros(m, 3, 4, 5) @ _zeros(m, 4),
    "matmul-1d-1d": lambda m: _zeros(m, 5) @ _zeros(m, 4),
    "matmul-batched": lambda m: _zeros(m, 2, 4, 5) @ _zeros(m, 2, 4, 2),
    "matmul-batched-broadcast": lambda m: _zeros(m, 2, 1, 4, 5) @ _zeros(m, 3, 4, 2),
    "matmul-batch-clash": lambda m: _zeros(m, 2, 4, 5) @ _zeros(m, 3, 5, 2),
    "matmul-1d-3d": lambda m: _zeros(m, 4) @ _zeros(m, 3, 5, 2),
    # Linear: the weight enters transposed, so torch names (in x out)
    "linear": lambda m: (torch.nn.Linear(3, 2) if m is torch else disttrain.nn.Linear(3, 2))(
        _zeros(m, 4, 5)),
    "linear-3d": lambda m: _functional(m).linear(_zeros(m, 2, 3, 5), _zeros(m, 2, 3)),
    "linear-1d": lambda m: _functional(m).linear(_zeros(m, 4), _zeros(m, 2, 3)),
    # reshape and view
    "reshape-size": lambda m: _zeros(m, 4, 5).reshape(3, 7),
    "view-size": lambda m: _zeros(m, 4, 5).view(-1, 3),
    "view-size-infer": lambda m: _zeros(m, 4, 5).view(2, -1, 3),
    "view-two-inferred": lambda m: _zeros(m, 4, 5).view(-1, -1),
    "view-negative": lambda m: _zeros(m, 4, 5).view(-2, 10),
    "view-transposed": lambda m: _zeros(m, 4, 5).t().view(20),
    # convolution and pooling
    "conv-channels": lambda m: _functional(m).conv2d(_zeros(m, 1, 2, 5, 5), _zeros(m, 3, 1, 3, 3)),
    "conv-channels-unbatched": lambda m: _functional(m).conv2d(_zeros(m, 2, 5, 5),
                                                               _zeros(m, 3, 1, 3, 3)),
    "conv-kernel-too-big": lambda m: _functional(m).conv2d(_zeros(m, 1, 2, 5, 5),
                                                           _zeros(m, 3, 2, 7, 7)),
    "conv-5d-input": lambda m: _functional(m).conv2d(_zeros(m, 1, 2, 3, 5, 5),
                                                     _zeros(m, 3, 2, 3, 3)),
    "conv-bias": lambda m: _functional(m).conv2d(_zeros(m, 1, 2, 5, 5), _zeros(m, 3, 2, 3, 3),
                                                 _zeros(m, 2)),
    "pool-too-small": lambda m: _functional(m).max_pool2d(_zeros(m, 1, 2, 3, 3), 4),
    "pool-too-small-stride1": lambda m: _functional(m).max_pool2d(_zeros(m, 2, 3, 3), 4, 1),
    "pool-2d-input": lambda m: _functional(m).max_pool2d(_zeros(m, 5, 5), 2),
    # others
    "mean-of-integers": lambda m: _zeros(m, 3, dtype=torch.long).mean(),
    "embedding-past-the-end": lambda m: (torch.nn.Embedding(3, 2) if m is torch
                                         else disttrain.nn.Embedding(3, 2))(
        torch.tensor([1, 5]) if m is torch else disttrain.tensor(np.array([1, 5]))),
    "embedding-negative": lambda m: (torch.nn.Embedding(3, 2) if m is torch
                                     else disttrain.nn.Embedding(3, 2))(
        torch.tensor([-1]) if m is torch else disttrain.tensor(np.array([-1]))),
}


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - what each library raises is the subject
        return type(e).__name__, str(e)
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_error_is_torchs(name):
    theirs = _raised(lambda: CASES[name](torch))
    assert theirs is not None, f"{name}: torch raised nothing; the case is wrong"
    assert _raised(lambda: CASES[name](disttrain)) == theirs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unbatched_conv_and_pool_match_torch(dtype):
    # torch takes (C, H, W) as a batch of one; the gradients flow through the reshapes.
    rng = np.random.default_rng(0)
    x, w, b = (rng.normal(size=s).astype(dtype) for s in ((2, 9, 9), (3, 2, 3, 3), (3,)))
    results = []
    for make, fn in ((torch.tensor, torch.nn.functional), (disttrain.tensor, F)):
        xt, wt, bt = (make(a, requires_grad=True) for a in (x, w, b))
        y = fn.max_pool2d(fn.conv2d(xt, wt, bt, stride=1, padding=1), 2)
        y.sum().backward()
        results.append([np.asarray(y.detach().numpy()), *(t.grad.numpy() for t in (xt, wt, bt))])
    for ours, theirs in zip(results[1], results[0]):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_working_view_still_shares_memory():
    x = disttrain.tensor(np.arange(12.0).reshape(3, 4))
    v = x.view(4, 3)
    v.data[0, 0] = 99.0
    assert x.data[0, 0] == 99.0
    assert x.view(-1).shape == (12,)
    # reshape copies where a view cannot be made, as torch's
    assert x.t().reshape(12).shape == (12,)
