"""zero_grad: None by default; with set_to_none=False, zeros written into the same array."""

import numpy as np
import torch

import disttrain
import disttrain.optim as optim
from disttrain.autograd.tensor import Tensor


def _with_grads():
    w = disttrain.tensor(np.ones((2, 3)), requires_grad=True)
    b = disttrain.tensor(np.ones(3), requires_grad=True)
    ((w * 2.0).sum() + (b * b).sum()).backward()
    return w, b


def test_set_to_none_gives_none():
    w, b = _with_grads()
    optim.SGD([w, b]).zero_grad()
    assert w.grad is None and b.grad is None


def test_set_to_none_false_zeroes_the_same_array():
    w, b = _with_grads()
    arrays = [w.grad.data, b.grad.data]
    optim.Adam([w, b]).zero_grad(set_to_none=False)
    for p, array in zip((w, b), arrays):
        assert p.grad.data is array
        assert not p.grad.requires_grad
        np.testing.assert_array_equal(array, 0)


def test_grads_that_are_views_into_a_flat_buffer_stay_views():
    # what DistributedDataParallel does: every .grad is a view into one bucket buffer
    w, b = _with_grads()
    flat = np.arange(1.0, 10.0)
    w.grad = Tensor._make(flat[:6].reshape(2, 3))
    b.grad = Tensor._make(flat[6:])
    optim.SGD([w, b], lr=0.1, momentum=0.9).zero_grad(set_to_none=False)
    np.testing.assert_array_equal(flat, 0)
    assert np.shares_memory(w.grad.data, flat) and np.shares_memory(b.grad.data, flat)


def test_a_grad_with_a_grad_fn_is_detached_then_zeroed():
    w, _ = _with_grads()
    x = disttrain.tensor(np.ones((2, 3)), requires_grad=True)
    w.grad = x * 3.0
    assert w.grad.grad_fn is not None
    optim.SGD([w]).zero_grad(set_to_none=False)
    assert w.grad.grad_fn is None and not w.grad.requires_grad
    np.testing.assert_array_equal(w.grad.data, 0)


def test_a_zeroed_grad_is_stepped_a_none_grad_is_skipped_as_in_torch():
    results = []
    for lib, make in ((torch, torch.optim.SGD), (disttrain, optim.SGD)):
        p, q = (lib.tensor(np.ones(2), requires_grad=True) for _ in range(2))
        opt = make([p, q], lr=0.1, weight_decay=0.5)
        (p.sum() + q.sum()).backward()
        opt.zero_grad(set_to_none=False)
        q.grad = None
        opt.step()  # p: zero grad plus weight decay moves it; q: skipped
        results.append([np.array(p.detach().numpy()), np.array(q.detach().numpy())])
    for mine, theirs in zip(results[1], results[0]):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(results[1][1], [1.0, 1.0])


def _version(t) -> int:
    return t._version if isinstance(t, torch.Tensor) else t._version_number


def test_module_and_optimizer_zero_grad_bump_the_grad_version_as_torch():
    # torch zeroes with grad.zero_(), an in-place op: the grad's version counter moves
    deltas = {}
    for lib in (torch, disttrain):
        model = lib.nn.Linear(3, 2)
        opt = lib.optim.SGD(model.parameters(), lr=0.1)
        model(lib.ones(4, 3)).sum().backward()
        grad = model.weight.grad
        before = _version(grad)
        model.zero_grad(set_to_none=False)
        after_module = _version(grad)
        opt.zero_grad(set_to_none=False)
        after_optimizer = _version(grad)
        assert model.weight.grad is grad
        deltas[lib.__name__] = (after_module - before, after_optimizer - after_module)
    assert deltas["disttrain"] == deltas["torch"]
    assert deltas["disttrain"][0] == deltas["disttrain"][1] > 0
