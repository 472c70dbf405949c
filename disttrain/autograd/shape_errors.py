"""torch's texts for shape mistakes, built from the shapes numpy refused.

A user whose model's widths do not fit searches for torch's words ("mat1 and mat2 shapes
cannot be multiplied (64x784 and 512x10)"), not numpy's gufunc signature. The ops run
numpy first and call these only when numpy has raised, so the working path pays nothing.
Every text was checked against torch 2.13.0 (tests/autograd/test_shape_errors.py).
"""

from __future__ import annotations

import math


def broadcast(a: tuple, b: tuple) -> str:
    """Two shapes that do not broadcast: the rightmost clash, numbered in the result's dims."""
    pairs = _aligned(a, b)
    for dim in range(len(pairs) - 1, -1, -1):
        size_a, size_b = pairs[dim]
        if size_a != size_b and 1 not in (size_a, size_b):
            return (f"The size of tensor a ({size_a}) must match the size of tensor b ({size_b}) "
                    f"at non-singleton dimension {dim}")
    return f"shapes {a} and {b} cannot be broadcast together"


def matmul(a: tuple, b: tuple) -> str:
    """a @ b whose inner sizes differ, in torch's words for each kind of operand."""
    if len(a) == 1 and len(b) == 1:
        return (f"inconsistent tensor size, expected tensor [{a[0]}] and src [{b[0]}] to have "
                f"the same number of elements, but got {a[0]} and {b[0]} elements respectively")
    if len(b) == 1:
        rows = math.prod(a[:-1])
        return f"size mismatch, got input ({rows}), mat ({rows}x{a[-1]}), vec ({b[0]})"
    if len(b) == 2:  # torch folds a's leading dims into rows (a 1-D a is one row)
        rows = 1 if len(a) == 1 else math.prod(a[:-1])
        return (f"mat1 and mat2 shapes cannot be multiplied ({rows}x{a[-1]} and "
                f"{b[-2]}x{b[-1]})")
    batch_a, batch_b = a[:-2], b[:-2]
    text = broadcast(batch_a, batch_b)
    if text.startswith("The size"):  # the batch dims themselves clash
        return text
    batch = math.prod(max(x, y) for x, y in _aligned(batch_a, batch_b))
    return (f"Expected size for first two dimensions of batch2 tensor to be: [{batch}, "
            f"{a[-1]}] but got: [{batch}, {b[-2]}].")


def _aligned(a: tuple, b: tuple) -> list:
    """Pairs of sizes, right-aligned, 1 where a shape is shorter."""
    ndim = max(len(a), len(b))
    return list(zip((1,) * (ndim - len(a)) + tuple(a), (1,) * (ndim - len(b)) + tuple(b)))


def reshape(size: int, shape: tuple) -> str:
    """A shape that cannot hold `size` elements, or that asks to infer more than one dim."""
    if sum(1 for s in shape if s == -1) > 1:
        return "only one dimension can be inferred"
    listed = f"[{', '.join(str(s) for s in shape)}]"
    for index, s in enumerate(shape):
        if s < -1:
            return f"invalid shape dimension {s} at index {index} of shape {listed}"
    return f"shape '{listed}' is invalid for input of size {size}"
