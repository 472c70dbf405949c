"""numpy kernels too long for one line of the rule table: erf, conv2d and max-pooling."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# numpy has no erf; math.erf is exact to the last bit, and GELU's exact form needs that
# to match PyTorch to 1e-6. It is slow per element, so only GELU(approximate="none") uses it.
_erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in x's dtype."""
    return _erf(x).astype(x.dtype, copy=False)


def inside(x: np.ndarray, lo, hi) -> np.ndarray:
    """Where clamp lets the gradient through: lo <= x <= hi, bounds inclusive as in PyTorch."""
    mask = np.ones(x.shape, dtype=bool)
    if lo is not None:
        mask &= x >= lo
    if hi is not None:
        mask &= x <= hi
    return mask


def _windows(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """A (N, C, H', W', kh, kw) view of every kernel window, no copy."""
    return sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: int):
    """Cross-correlation as PyTorch's conv2d, by im2col and one matmul; returns (out, cols)."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, o = x.shape[0], w.shape[0]
    win = _windows(x, w.shape[2], w.shape[3], stride)
    oh, ow = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, -1)
    out = cols @ w.reshape(o, -1).T
    return out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2), cols


def conv2d_grad_weight(g, *, cols, stride, padding, x_shape):
    """dL/dw from the saved im2col matrix."""
    o = g.shape[1]
    return (g.transpose(0, 2, 3, 1).reshape(-1, o).T @ cols)


def conv2d_grad_input(g, w, *, cols, stride, padding, x_shape):
    """dL/dx: scatter each window's gradient back (col2im)."""
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    oh, ow = g.shape[2], g.shape[3]
    gcols = (g.transpose(0, 2, 3, 1).reshape(-1, o) @ w.reshape(o, -1))
    gcols = gcols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    padded = np.zeros((n, c, h + 2 * padding, wd + 2 * padding), dtype=g.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += gcols[:, :, i, j]
    return padded[:, :, padding:padding + h, padding:padding + wd]


def max_pool2d(x: np.ndarray, kernel_size: int, stride: int):
    """Max over each window; returns (out, flat argmax within the window)."""
    win = _windows(x, kernel_size, kernel_size, stride)
    flat = win.reshape(win.shape[:4] + (-1,))
    arg = flat.argmax(axis=-1)  # first maximum, the one PyTorch's CPU kernel picks
    return np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0], arg


def max_pool2d_grad(g, *, arg, kernel_size, stride, x_shape):
    """Send each window's gradient to the element that won it."""
    grad = np.zeros(x_shape, dtype=g.dtype)
    n, c, oh, ow = g.shape
    ni, ci, hi, wi = np.indices((n, c, oh, ow), sparse=True)
    rows = hi * stride + arg // kernel_size
    cols = wi * stride + arg % kernel_size
    np.add.at(grad, (ni, ci, rows, cols), g)
    return grad
