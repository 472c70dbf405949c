"""One helper, as tinygrad's helper_test_op: run the same lambda on disttrain and on torch.

helper_test_op(inputs, fn) builds each input once as a numpy array, hands a disttrain
tensor and a torch tensor holding the same values to fn (or to fn_torch / fn_ours when the
two libraries spell the call differently), and compares: the forward values, the result's
dtype, and the gradient of every floating input after backward with the same random
output gradient. It also checks the dtype of the gradient that reaches each input's node
from inside the graph (not only the leaf's .grad, which the engine casts anyway).
"""

from __future__ import annotations

import numpy as np
import torch

import disttrain

TOL = {np.float64: (1e-6, 1e-6), np.float32: (1e-4, 1e-4)}
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64,
               np.dtype(np.int64): torch.int64, np.dtype(np.bool_): torch.bool}


def make_inputs(inputs, dtype=np.float64, low=-2.0, high=2.0, seed=0) -> list:
    """Turn shapes into random float arrays of dtype; arrays and scalars pass through."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        if isinstance(spec, tuple):
            arrays.append(rng.uniform(low, high, size=spec).astype(dtype))
        else:
            arrays.append(spec)
    return arrays


def _as_list(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _to_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().numpy()
    return np.asarray(t.data)


def _close(ours, theirs, rtol, atol, what: str) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)


def helper_test_op(inputs, fn, fn_ours=None, *, dtype=np.float64, low=-2.0, high=2.0,
                   seed=0, grad=True, rtol=None, atol=None, arrays=None):
    """Compare fn on disttrain and torch: values, result dtypes, gradients and their dtypes.

    inputs: shapes (random floats of dtype in [low, high)), numpy arrays (used as they
    are: float arrays require grad, integer and bool arrays do not) or Python scalars.
    fn_ours, when given, is what disttrain runs instead of fn (torch runs fn).
    """
    fn_ours = fn_ours or fn
    arrays = make_inputs(inputs, dtype, low, high, seed) if arrays is None else arrays
    default_rtol, default_atol = TOL[np.float32 if dtype == np.float32 else np.float64]
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol

    def wants_grad(a):
        return grad and isinstance(a, np.ndarray) and a.dtype.kind == "f"

    theirs = [torch.tensor(a, requires_grad=wants_grad(a)) if isinstance(a, np.ndarray) else a
              for a in arrays]
    leaves = [disttrain.tensor(a, requires_grad=wants_grad(a)) if isinstance(a, np.ndarray)
              else a for a in arrays]
    # Feed the op a non-leaf copy of every differentiable input, so a hook can see the
    # gradient the op's rule hands back before the engine's leaf cast hides its dtype.
    seen_dtypes = {}
    ours_in = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, disttrain.Tensor) and leaf.requires_grad:
            inner = leaf + 0.0
            inner.register_hook(lambda g, i=i: seen_dtypes.setdefault(i, g.dtype) and None)
            ours_in.append(inner)
        else:
            ours_in.append(leaf)

    out_theirs = _as_list(fn(*theirs))
    out_ours = _as_list(fn_ours(*ours_in))
    assert len(out_ours) == len(out_theirs), "number of outputs differs"
    for k, (o, t) in enumerate(zip(out_ours, out_theirs)):
        assert isinstance(o, disttrain.Tensor), f"output {k} is {type(o).__name__}, not Tensor"
        assert o.dtype == np.dtype(str(t.dtype).replace("torch.", "")), (
            f"output {k}: dtype {o.dtype}, torch gives {t.dtype}")
        if t.dtype.is_floating_point:
            _close(_to_numpy(o), _to_numpy(t), rtol, atol, f"forward value of output {k}")
        else:
            np.testing.assert_array_equal(_to_numpy(o), _to_numpy(t), f"output {k}")

    if not any(wants_grad(a) for a in arrays):
        return out_ours, out_theirs
    rng = np.random.default_rng(seed + 1)
    loss_ours, loss_theirs = None, None
    for o, t in zip(out_ours, out_theirs):
        if not (t.dtype.is_floating_point and t.requires_grad):
            continue
        seed_grad = rng.uniform(0.5, 1.5, size=t.shape).astype(o.dtype)
        term_ours = (o * disttrain.tensor(seed_grad)).sum()
        term_theirs = (t * torch.tensor(seed_grad)).sum()
        loss_ours = term_ours if loss_ours is None else loss_ours + term_ours
        loss_theirs = term_theirs if loss_theirs is None else loss_theirs + term_theirs
    assert (loss_ours is None) == (loss_theirs is None), "requires_grad of outputs differs"
    if loss_theirs is None:
        return out_ours, out_theirs
    loss_theirs.backward()
    loss_ours.backward()
    for i, (a, leaf, t) in enumerate(zip(arrays, leaves, theirs)):
        if not wants_grad(a):
            continue
        if t.grad is None:
            assert leaf.grad is None or not np.any(leaf.grad.data), f"input {i}: torch has no grad"
            continue
        assert leaf.grad is not None, f"input {i}: no gradient reached it"
        assert leaf.grad.dtype == a.dtype, f"input {i}: grad dtype {leaf.grad.dtype} != {a.dtype}"
        if i in seen_dtypes:
            assert seen_dtypes[i] == a.dtype, (
                f"input {i}: the graph carried a {seen_dtypes[i]} gradient for a {a.dtype} input")
        _close(leaf.grad.data, t.grad.numpy(), rtol, atol, f"gradient of input {i}")
    return out_ours, out_theirs


def rules_used(tensor) -> set:
    """Names of the gradient rules in the graph that produced tensor."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node.rule.name)
        stack.extend(getattr(t, "grad_fn", None) for t in node.inputs)
    return names


def torch_error(fn) -> str:
    """The message of the exception fn raises under torch (fails the test if none)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any error is the oracle's answer
        return str(exc)
    raise AssertionError("torch raised no error")
