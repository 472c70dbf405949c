"""numpy kernels too long for one line of the rule table: erf, conv2d and max-pooling."""

from __future__ import annotations

import math
import sys
import threading

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
# contiguous operands: im2col rows are (C, kh, kw), columns the outputs (N, H', W'), so
# forward, weight gradient and input gradient are each one matmul over all the outputs,
# and the output gradient enters as one (O, N*H'*W') matrix. im2col is one copy per
# kernel tap from a strided (C, N, H', W') view of the padded images, col2im one add per
# tap back into that view: kh*kw vectorised numpy calls, no loop over pixels.
# (A "flat" variant, one contiguous slice per tap over padded rows, copies faster but
# computes the outputs at the padding too: measured slower in the whole CNN step.)

def _taps_of(padded: np.ndarray, kh: int, kw: int, stride: int, oh: int, ow: int):
    """For each kernel tap (i, j), the (C, N, H', W') view of padded (C, N, Hp, Wp) it reads."""
    for i, j, (rows, cols) in _taps(kh, kw, stride, oh, ow):
        yield i, j, padded[:, :, rows, cols]


# Buffers kept per thread and reused from call to call. Fresh multi-megabyte arrays come
# from mmap, and faulting their pages in cost more than all the arithmetic of a LeNet step
# (measured: ~7 of ~16 ms). Scratch buffers never leave a kernel; one whose role keeps
# zeros where it is never written (the padding) is zeroed once, when made.
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


def _out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: int):
    """Cross-correlation as PyTorch's conv2d, by im2col and one matmul; returns (out, cols)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = _out_size(h, kh, stride, padding), _out_size(wd, kw, stride, padding)
    # channels first, so each tap's view is one block of the im2col rows
    padded = _scratch("conv_input", (c, n, h + 2 * padding, wd + 2 * padding), x.dtype)
    padded[:, :, padding:padding + h, padding:padding + wd] = x.transpose(1, 0, 2, 3)
    cols = _reusable("conv_cols", (c, kh, kw, n, oh, ow), x.dtype)  # saved for backward
    for i, j, tap in _taps_of(padded, kh, kw, stride, oh, ow):
        cols[:, i, j] = tap
    cols = cols.reshape(c * kh * kw, n * oh * ow)
    out = np.matmul(w.reshape(o, -1), cols, out=_scratch("conv_out", (o, n * oh * ow), x.dtype))
    return np.ascontiguousarray(out.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)), cols


def _grad_rows(g: np.ndarray) -> np.ndarray:
    """The output gradient (N, O, H', W') as the (O, N*H'*W') matrix the matmuls want."""
    n, o, oh, ow = g.shape
    rows = _scratch("conv_grad_out", (o, n, oh, ow), g.dtype)
    rows[...] = g.transpose(1, 0, 2, 3)
    return rows.reshape(o, -1)


def conv2d_grad_weight(g, w, *, cols, stride, padding, x_shape):
    """dL/dw = g . cols^T from the saved im2col matrix."""
    return (_grad_rows(g) @ cols.T).reshape(w.shape)


def conv2d_grad_weight_into(dest, g, w, *, cols, stride, padding, x_shape) -> bool:
    """conv2d_grad_weight written into dest (a gradient buffer of w's shape) by the
    matmul itself; False, with nothing written, if dest cannot take it."""
    rows = _grad_rows(g)
    if (dest.dtype != np.result_type(rows, cols) or not dest.flags.c_contiguous
            or dest.shape != w.shape):
        return False
    np.matmul(rows, cols.T, out=dest.reshape(rows.shape[0], cols.shape[0]))
    return True


def conv2d_grad_input(g, w, *, cols, stride, padding, x_shape):
    """dL/dx: the column gradient w^T . g added back where each tap read (col2im)."""
    if stride == 1:
        return _conv2d_grad_input_wide(g, w, padding, x_shape)
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    oh, ow = g.shape[2], g.shape[3]
    gcols = np.matmul(w.reshape(o, -1).T, _grad_rows(g),
                      out=_scratch("conv_grad_cols", (c * kh * kw, n * oh * ow), g.dtype))
    gcols = gcols.reshape(c, kh, kw, n, oh, ow)
    padded = _scratch("conv_grad_input", (c, n, h + 2 * padding, wd + 2 * padding), g.dtype)
    padded.fill(0)
    for i, j, tap in _taps_of(padded, kh, kw, stride, oh, ow):
        tap += gcols[:, i, j]
    inner = padded[:, :, padding:padding + h, padding:padding + wd]
    return np.ascontiguousarray(inner.transpose(1, 0, 2, 3))


# The input gradient at stride 1 in the "wide" layout, without col2im. Number the padded
# input's pixels flat, p = (n*Hp + y)*Wp + x, and let the output live at every p (its
# values where y >= H' or x >= W' are never used). Then tap (i, j) links output p to input
# p + i*Wp + j: one shift of a flat axis, so shifted operands are plain 2-D slices. The
# output gradient, put in that layout with zeros where no output is, is stacked at the kh
# row shifts (kh contiguous copies), one matmul with K = kh*O gives, per (c, j), the
# gradient each input pixel receives through column tap j, and kw shifted adds sum the j.
# col2im instead makes kh*kw strided adds over rows of only W' elements; at LeNet sizes
# this is about half the time (measured 2.6 -> 1.8 ms on conv 6->16 at 14x14, batch 64).

def _conv2d_grad_input_wide(g, w, padding, x_shape):
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    oh, ow = g.shape[2], g.shape[3]
    hp, wp = h + 2 * padding, wd + 2 * padding
    size = n * hp * wp
    # g at each output's flat position, after one image of zeros so that every row shift
    # is a slice. Only the outputs are written: the rest stays zero from the buffer's
    # creation, so the key must fix where the outputs are (shape and kernel, hence oh, ow).
    wide = _scratch(f"conv_grad_wide_{kh}x{kw}", (o, n + 1, hp, wp), g.dtype)
    wide[:, 1:, :oh, :ow] = g.transpose(1, 0, 2, 3)
    wide = wide.reshape(o, -1)
    stacked = _scratch("conv_grad_stack", (kh, o, size), g.dtype)
    for i in range(kh):  # row i of the kernel reads the output i rows above
        start = hp * wp - i * wp
        stacked[i] = wide[:, start:start + size]
    w_cols = w.transpose(1, 3, 2, 0).reshape(c * kw, kh * o)  # rows (c, j), cols (i, o)
    by_col_tap = np.matmul(w_cols, stacked.reshape(kh * o, size),
                           out=_scratch("conv_grad_taps", (c * kw, size), g.dtype))
    by_col_tap = by_col_tap.reshape(c, kw, size)
    grad = _scratch("conv_grad_wide_input", (c, size), g.dtype)
    grad[...] = by_col_tap[:, 0]
    for j in range(1, kw):  # column tap j reads the input j pixels right of the output
        grad[:, j:] += by_col_tap[:, j, :size - j]
    inner = grad.reshape(c, n, hp, wp)[:, :, padding:padding + h, padding:padding + wd]
    return np.ascontiguousarray(inner.transpose(1, 0, 2, 3))


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
