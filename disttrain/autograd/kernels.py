"""numpy kernels too long for one line of the rule table: erf, conv2d and max-pooling."""

from __future__ import annotations

import math
import sys
import threading
from typing import NamedTuple

import numpy as np

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


def _taps(kh: int, kw: int, stride: int, oh: int, ow: int):
    """For each kernel tap (i, j), the slices of the (padded) input it reads at every output."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(i, i + stride * (oh - 1) + 1, stride),
                         slice(j, j + stride * (ow - 1) + 1, stride))


# Convolution as im2col and one matmul per product, in a layout chosen so BLAS sees large
# contiguous operands: im2col rows are (C, kh, kw), columns the output positions q, and
# forward, weight gradient and input gradient are each one matmul over all of q.
#
# At stride 1, q is flat. Pad each channel's images into one row (C, N*Hp*Wp); the output
# at (y, x) of image b reads, for tap (i, j), the element at q + i*Wp + j, where
# q = b*Hp*Wp + y*Wp + x. So for every tap the inputs of ALL outputs are one contiguous
# slice, row[:, i*Wp + j:][:length]: im2col is kh*kw memcpys and col2im kh*kw slice adds.
# The price is computing outputs at the q with y >= H' or x >= W' and throwing them away;
# a zero output gradient there keeps them out of both gradients.
#
# At stride >= 2 the slices would be strided anyway and the flat q would hold about
# stride**2 times the outputs needed, so q is exactly the (N, H', W') outputs and each
# tap a strided (C, N, H', W') view of the padded images: the same code, another view.

class _Grid(NamedTuple):
    """Where conv2d's layout puts things (see above)."""
    hp: int  # padded height
    wp: int  # padded width: the row pitch of the input
    oh: int
    ow: int
    qh: int  # q laid out as (N, qh, qw) images: (hp, wp) flat, (oh, ow) exact
    qw: int
    length: int  # q positions: n * qh * qw
    size: int  # elements of the input row, with room for the last tap's slice
    flat: bool


def _grid(x_shape, kh, kw, stride, padding) -> _Grid:
    n, _, h, w = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    if stride > 1:
        return _Grid(hp, wp, oh, ow, oh, ow, n * oh * ow, n * hp * wp, False)
    length = n * hp * wp
    return _Grid(hp, wp, oh, ow, hp, wp, length, (kh - 1) * wp + kw - 1 + length, True)


def _conv_taps(grid: _Grid, kh: int, kw: int, stride: int, row: np.ndarray):
    """For each kernel tap (i, j), the (C, N, qh, qw) view of the input row it reads."""
    c, n = row.shape[0], grid.length // (grid.qh * grid.qw)
    images = row[:, :n * grid.hp * grid.wp].reshape(c, n, grid.hp, grid.wp)
    for i, j, (rows, cols) in _taps(kh, kw, stride, grid.oh, grid.ow):
        if grid.flat:
            off = i * grid.wp + j
            yield i, j, row[:, off:off + grid.length].reshape(c, n, grid.qh, grid.qw)
        else:
            yield i, j, images[:, :, rows, cols]


def _interior(row: np.ndarray, grid: _Grid, n: int, padding: int, h: int, w: int):
    """The (C, N, H, W) view of the unpadded images inside a (C, size) input row."""
    images = row[:, :n * grid.hp * grid.wp].reshape(row.shape[0], n, grid.hp, grid.wp)
    return images[:, :, padding:padding + h, padding:padding + w]


def _q_view(a: np.ndarray, grid: _Grid) -> np.ndarray:
    """The (rows, N, H', W') outputs inside a (rows, length) array over q."""
    return a.reshape(a.shape[0], -1, grid.qh, grid.qw)[:, :, :grid.oh, :grid.ow]


# Buffers kept per thread and reused from call to call. Fresh multi-megabyte arrays come
# from mmap, and faulting their pages in cost more than all the arithmetic of a LeNet step
# (measured: ~7 of ~16 ms). Scratch buffers never leave a kernel; one whose role keeps
# zeros where it is never written (padding, discarded q) is zeroed once, when made.
# Result buffers (im2col, saved for backward) are reused only once nothing refers to them.
_buffers = threading.local()
_MAX_BUFFERS = 64  # per thread; past it (many shapes, e.g. varying batch sizes) start over


def _cache(kind: str) -> dict:
    cache = _buffers.__dict__.setdefault(kind, {})
    if len(cache) > _MAX_BUFFERS:
        cache.clear()
    return cache


def _scratch(role: str, shape: tuple, dtype) -> np.ndarray:
    """This thread's zero-initialised buffer for `role` at this shape and dtype."""
    cache = _cache("scratch")
    key = (role, shape, np.dtype(dtype))
    if key not in cache:
        cache[key] = np.zeros(shape, dtype=dtype)
    return cache[key]


def _refcount_when_unshared() -> int:
    """sys.getrefcount of a cached buffer nobody else holds, as _reusable sees it (the
    count differs between Python versions, so it is measured, not assumed)."""
    cache = {"key": np.empty(1)}
    buf = cache.get("key")
    return sys.getrefcount(buf)


_UNSHARED = _refcount_when_unshared()


def _reusable(role: str, shape: tuple, dtype) -> np.ndarray:
    """A buffer for a result that leaves the kernel: this thread's previous one for
    role/shape if nothing refers to it any more, else a new one. Every numpy view holds
    a reference to its base, so a buffer still in use by a graph is never handed out."""
    cache = _cache("results")
    key = (role, shape, np.dtype(dtype))
    buf = cache.get(key)
    if buf is None or sys.getrefcount(buf) > _UNSHARED:
        buf = cache[key] = np.empty(shape, dtype=dtype)
    return buf


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: int):
    """Cross-correlation as PyTorch's conv2d, by im2col and one matmul; returns (out, cols)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    grid = _grid(x.shape, kh, kw, stride, padding)
    flat = _scratch("conv_input", (c, grid.size), x.dtype)  # its padding stays zero
    _interior(flat, grid, n, padding, h, wd)[...] = x.transpose(1, 0, 2, 3)
    cols = _reusable("conv_cols", (c, kh, kw, n, grid.qh, grid.qw), x.dtype)  # for backward
    for i, j, tap in _conv_taps(grid, kh, kw, stride, flat):
        cols[:, i, j] = tap
    cols = cols.reshape(c * kh * kw, grid.length)
    out_q = np.matmul(w.reshape(o, -1), cols, out=_scratch("conv_out", (o, grid.length), x.dtype))
    out = _q_view(out_q, grid)
    return np.ascontiguousarray(out.transpose(1, 0, 2, 3)), cols


def _grad_q(g: np.ndarray, grid: _Grid, stride: int) -> np.ndarray:
    """The output gradient (N, O, H', W') on the q grid, (O, length), zero where discarded."""
    gq = _scratch("conv_grad_out", (g.shape[1], grid.length), g.dtype)
    _q_view(gq, grid)[...] = g.transpose(1, 0, 2, 3)
    return gq


def conv2d_grad_weight(g, w, *, cols, stride, padding, x_shape):
    """dL/dw = g . cols^T from the saved im2col matrix."""
    grid = _grid(x_shape, w.shape[2], w.shape[3], stride, padding)
    return (_grad_q(g, grid, stride) @ cols.T).reshape(w.shape)


def conv2d_grad_input(g, w, *, cols, stride, padding, x_shape):
    """dL/dx: the column gradient w^T . g added back into each tap's slice (col2im)."""
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    grid = _grid(x_shape, kh, kw, stride, padding)
    gcols = np.matmul(w.reshape(o, -1).T, _grad_q(g, grid, stride),
                      out=_scratch("conv_grad_cols", (c * kh * kw, grid.length), g.dtype))
    gcols = gcols.reshape(c, kh, kw, n, grid.qh, grid.qw)
    flat = _scratch("conv_grad_input", (c, grid.size), g.dtype)
    flat.fill(0)
    for i, j, tap in _conv_taps(grid, kh, kw, stride, flat):
        tap += gcols[:, i, j]
    return np.ascontiguousarray(_interior(flat, grid, n, padding, h, wd).transpose(1, 0, 2, 3))


def max_pool2d(x: np.ndarray, kernel_size: int, stride: int):
    """Max over each window; returns (out, the winner's flat index within its window).

    Works on strided views of x, one per window position (no copied window array): the
    max is a chain of np.maximum, and the winner the first position equal to it, as in
    PyTorch's CPU kernel (ties go to the first maximum). That index is built backwards
    from the "not equal" masks as small integers, idx = ne_0 * (1 + ne_1 * (1 + ...)),
    which is several times faster than masked writes. A NaN equals nothing, so windows
    holding one take the slower exact test of PyTorch's kernel.
    """
    n, c, h, w = x.shape
    oh, ow = (h - kernel_size) // stride + 1, (w - kernel_size) // stride + 1
    views = [x[:, :, rows, cols] for _, _, (rows, cols)
             in _taps(kernel_size, kernel_size, stride, oh, ow)]
    out = views[0].copy()
    for v in views[1:]:
        np.maximum(out, v, out=out)
    if np.isnan(out).any():
        return _max_pool2d_nan(views)
    small = len(views) <= 256  # a bool mask reads as uint8 0/1 for free
    arg = np.zeros(out.shape, dtype=np.uint8 if small else np.int32)
    for v in reversed(views[:-1]):
        arg += 1
        ne = v != out
        arg *= ne.view(np.uint8) if small else ne
    return out, arg


def _max_pool2d_nan(views):
    """max_pool2d by PyTorch's test, `val > max || isnan(val)`: a NaN wins, the last one."""
    out = views[0].copy()
    arg = np.zeros(out.shape, dtype=np.int16)
    for k, v in enumerate(views[1:], 1):
        wins = v > out
        wins |= v != v
        np.copyto(out, v, where=wins)
        np.copyto(arg, k, where=wins)
    return out, arg


def max_pool2d_grad(g, *, arg, kernel_size, stride, x_shape):
    """Send each window's gradient to the element that won it, one window position at a time.

    Windows that do not overlap (stride >= kernel) write disjoint elements, so each
    position is a product with its mask, written in place; overlapping windows add.
    """
    grad = np.zeros(x_shape, dtype=g.dtype)
    oh, ow = g.shape[2], g.shape[3]
    for k, (_, _, (rows, cols)) in enumerate(_taps(kernel_size, kernel_size, stride, oh, ow)):
        if stride >= kernel_size:
            np.multiply(g, arg == k, out=grad[:, :, rows, cols])
        else:
            grad[:, :, rows, cols] += g * (arg == k)
    return grad
