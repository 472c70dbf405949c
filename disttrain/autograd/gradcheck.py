"""Compare a function's gradients with central finite differences (HIPS's check_grads)."""

from __future__ import annotations

import numpy as np

from .tensor import Tensor


def numerical_grad(fn, inputs: list, index: int, eps: float) -> np.ndarray:
    """d sum(fn(*inputs) * seed) / d inputs[index] by central differences, seed fixed."""
    x = inputs[index].data
    grad = np.zeros(x.shape, dtype=x.dtype)
    seed = _seed(fn, inputs)
    # Index x itself (not x.reshape(-1), a copy when x is not contiguous) so the
    # perturbation reaches the tensor fn reads.
    for i in np.ndindex(x.shape):
        original = x[i]
        x[i] = original + eps
        plus = float(np.sum(_value(fn, inputs) * seed))
        x[i] = original - eps
        minus = float(np.sum(_value(fn, inputs) * seed))
        x[i] = original
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def _value(fn, inputs) -> np.ndarray:
    out = fn(*inputs)
    return out.data if isinstance(out, Tensor) else np.asarray(out)


def _seed(fn, inputs) -> np.ndarray:
    # A fixed, non-uniform output gradient so every output element is weighted differently.
    shape = _value(fn, inputs).shape
    return np.linspace(0.5, 1.5, int(np.prod(shape)), dtype=np.float64).reshape(shape)


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Raise AssertionError naming the input if any analytic gradient misses finite differences.

    inputs are float64 tensors; those with requires_grad are checked.
    """
    inputs = list(inputs)
    for t in inputs:
        if isinstance(t, Tensor) and t.requires_grad and t.dtype != np.float64:
            raise ValueError("gradcheck needs float64 inputs: finite differences in float32 "
                             "are too coarse; pass dtype=disttrain.float64")
    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    out = fn(*inputs)
    out.backward(Tensor._make(_seed(fn, inputs).astype(out.dtype)))
    for i, t in enumerate(inputs):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        analytic = np.zeros_like(t.data) if t.grad is None else t.grad.data
        numeric = numerical_grad(fn, inputs, i, eps)
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol):
            worst = np.max(np.abs(analytic - numeric))
            raise AssertionError(
                f"gradient of input {i} (shape {t.shape}) differs from finite differences by "
                f"up to {worst:.3g}\nanalytic:\n{analytic}\nnumeric:\n{numeric}"
            )
    return True
