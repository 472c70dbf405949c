"""Run one of our modules and its torch twin on the same weights and inputs; compare all.

check_module copies the torch module's state_dict (as numpy arrays) into ours, runs both
forwards on the same input, backpropagates the same random output gradient, and compares
the outputs, the input gradients and every parameter's gradient by its dotted name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain

TOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-4}
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def assert_close(ours, theirs, dtype) -> None:
    """Values within the dtype's tolerance (relative and absolute)."""
    ours = ours.data if isinstance(ours, disttrain.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


def copy_weights(ours, theirs) -> None:
    """Load torch's parameters and buffers into our module, by state_dict key."""
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def twins(ours, theirs, dtype):
    """Both modules cast to dtype, ours holding torch's weights."""
    theirs = theirs.to(TORCH_DTYPE[np.dtype(dtype)])
    ours.to(dtype)
    copy_weights(ours, theirs)
    return ours, theirs


def check_module(ours, theirs, x, dtype=np.float64, seed=0, input_grad=True):
    """Same forward and backward in both libraries: outputs and all gradients match."""
    ours, theirs = twins(ours, theirs, dtype)
    floating = np.asarray(x).dtype.kind == "f"
    if floating:
        x = np.asarray(x, dtype=dtype)
    needs_grad = floating and input_grad
    x_ours = disttrain.tensor(x, requires_grad=needs_grad)
    x_torch = torch.tensor(x, requires_grad=needs_grad)
    out, out_torch = ours(x_ours), theirs(x_torch)
    assert out.dtype == np.dtype(dtype)
    assert_close(out, out_torch, dtype)
    grad = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
    out.backward(grad)
    out_torch.backward(torch.from_numpy(grad))
    if needs_grad:
        assert_close(x_ours.grad, x_torch.grad, dtype)
    torch_params = dict(theirs.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(torch_params)
    for name, param in ours.named_parameters():
        assert param.grad is not None, name
        assert param.grad.dtype == np.dtype(dtype), name
        assert_close(param.grad, torch_params[name].grad, dtype)
    return out, out_torch


def same_error(ours_fn, torch_fn, error):
    """Both raise error with the same text."""
    with pytest.raises(error) as theirs:
        torch_fn()
    with pytest.raises(error) as ours:
        ours_fn()
    assert str(ours.value) == str(theirs.value)
