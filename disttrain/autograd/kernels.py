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


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e**-x) in x's dtype, in the two-branch form that never overflows exp."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) = min(x, 0) - log1p(e**-|x|), finite for every finite x."""
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def all_finite(*arrays: np.ndarray) -> bool:
    """True when no array holds a NaN or an infinity.

    One BLAS dot per array (a.a is NaN or inf exactly when a holds one), about 4x faster than
    np.isfinite(a).all(). A finite value whose square overflows reads as not finite: callers
    use this only to choose between a fast path and an exact one."""
    total = 0.0
    for a in arrays:
        flat = a.reshape(-1)
        total += float(np.dot(flat, flat))
    return math.isfinite(total)


def sgn(x: np.ndarray) -> np.ndarray:
    """torch.sgn for real x: np.sign, but 0 at NaN (abs's gradient there), as in PyTorch."""
    return np.where(np.isnan(x), 0, np.sign(x))  # np.sign of a 0-d array is a scalar


def inside(x: np.ndarray, lo, hi) -> np.ndarray:
    """Where clamp lets the gradient through: lo <= x <= hi, bounds inclusive as in PyTorch."""
    mask = np.ones(x.shape, dtype=bool)
    if lo is not None:
        mask &= x >= lo
    if hi is not None:
        mask &= x <= hi
    return mask


def _taps(kernel: tuple, stride: tuple, dilation: tuple, oh: int, ow: int):
    """For each kernel tap (i, j), the slices of the (padded) input it reads at every output.
    kernel, stride and dilation are (height, width) pairs."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


# Convolution as im2col and one matmul per product, in a layout chosen so BLAS sees large
# contiguous operands: im2col rows are (C, kh, kw), columns the outputs (N, H', W' in the
# order _layout picks), so forward, weight gradient and input gradient are each one
# matmul over all the outputs, and the output gradient enters as one (O, N*H'*W')
# matrix. im2col is one copy from a strided view of the padded images (_taps_view),
# col2im one add per tap back into it: no loop over pixels. At stride 1 the input
# gradient skips col2im where that pays (_conv2d_grad_input_wide).
# (A "flat" variant of the forward, one contiguous slice per tap over padded rows, copies
# faster but computes the outputs at the padding too: measured slower in the whole CNN
# step; so did the forward in that layout without im2col, as the weight gradient then
# needs the im2col anyway or a matmul shape BLAS is slow at.)

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


# Elementwise results from this many elements up come from _reusable buffers (a float32
# 64x6x28x28 ReLU output: fresh, 0.17 ms in the CNN step; reused, ~0.14).
_REUSE_FROM = 1 << 15


def reusable_like(a: np.ndarray, role: str):
    """A _reusable buffer of a's shape and dtype for an elementwise result, or None (numpy
    then allocates) where a is small, not C-contiguous or not floating point."""
    if a.size < _REUSE_FROM or a.dtype.kind != "f" or not a.flags.c_contiguous:
        return None
    return _reusable(role, a.shape, a.dtype)


def scratch_like(a: np.ndarray, role: str, dtype) -> np.ndarray:
    """This thread's _scratch buffer of a's shape in dtype (its contents are garbage)."""
    return _scratch(role, a.shape, dtype)


def _result(role: str, value: np.ndarray) -> np.ndarray:
    """A contiguous copy of value in a _reusable buffer. The layers' outputs and gradients
    are megabytes: a fresh array that size may come from mmap and fault its pages in
    again (measured alone: 1.4-2 ms for a 64x6x28x28 float32 copy, 0.07 ms reused)."""
    buf = _reusable(role, value.shape, value.dtype)
    np.copyto(buf, value)
    return buf


# Sizes are (height, width) pairs; padding is (top, bottom, left, right): torch's
# padding="same" puts the odd pixel of an even kernel's padding at the bottom and right.
def _out_size(size: int, k: int, stride: int, pad_before: int, pad_after: int,
              dilation: int) -> int:
    return (size + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1


def _out_sizes(x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple,
               dilation: tuple) -> tuple:
    """(H', W') of a window op over an (N, C, H, W) input."""
    return (_out_size(x_shape[2], kernel[0], stride[0], padding[0], padding[1], dilation[0]),
            _out_size(x_shape[3], kernel[1], stride[1], padding[2], padding[3], dilation[1]))


def _padded_dims(x_shape: tuple, padding: tuple) -> tuple:
    return x_shape[2] + padding[0] + padding[1], x_shape[3] + padding[2] + padding[3]


def _inner(layout: tuple, x_shape: tuple, padding: tuple) -> tuple:
    """The index of the unpadded input inside its padded copy laid out in `layout`."""
    inner = [slice(None)] * 4
    inner[layout.index(2)] = slice(padding[0], padding[0] + x_shape[2])
    inner[layout.index(3)] = slice(padding[2], padding[2] + x_shape[3])
    return tuple(inner)


class _Cols(NamedTuple):
    """What conv2d saves for the weight gradient: its im2col matrix, whose columns are
    the outputs in the order of `layout` (see _layout)."""
    matrix: np.ndarray  # (C*kh*kw, N*H'*W')
    layout: tuple


# Layouts of the padded input, im2col columns and output gradient rows, as the axes of
# (N, C, H, W) they put first to last. Channels first, each im2col tap copies runs of W'
# (one output row); batch last, runs of W'*N (all images of a row of outputs are
# adjacent), far fewer and longer, which pays where W' is small (measured on conv 6->16
# at 10x10 outputs: im2col 1.0 -> 0.25 ms, the layer's forward 1.9 -> 1.1 ms), but moving
# the batch axis last costs a transposing copy of the input and the output gradient,
# more than it saves on large rows.
_CHANNELS_FIRST = (1, 0, 2, 3)  # (C, N, H, W)
_BATCH_LAST = (1, 2, 3, 0)  # (C, H, W, N)
_SHORT_ROW = 16  # outputs per row up to which batch-last is taken


def _layout(ow: int) -> tuple:
    return _BATCH_LAST if ow <= _SHORT_ROW else _CHANNELS_FIRST


def _in_layout(shape: tuple, layout: tuple) -> tuple:
    return tuple(shape[a] for a in layout)


def _copy_in_layout(dest: np.ndarray, src: np.ndarray, layout: tuple) -> None:
    """dest[...] = src.transpose(layout), src a contiguous (N, C, H, W) array.

    Moving N last reads src at a stride of one image per element; where that stride is
    a multiple of 2 KiB (32x32 images, 16x16 with 6 channels, ...) the reads share a few
    cache sets and evict each other (measured 0.8 ms for a 64x3x32x32 batch). Going
    through (C*H, N, W) first, copies of whole rows, then a small transpose per row,
    takes 0.15 ms there; elsewhere the direct copy is faster.
    """
    if layout == _BATCH_LAST and (src[0].nbytes % 2048 == 0):
        n, c, h, w = src.shape
        rows_first = _scratch("conv_rows_first", (c * h, n, w), src.dtype)
        rows_first[...] = src.reshape(n, c * h, w).transpose(1, 0, 2)
        dest[...] = rows_first.reshape(c, h, n, w).transpose(0, 1, 3, 2)
    else:
        dest[...] = src.transpose(layout)


def conv2d(x: np.ndarray, w: np.ndarray, stride: tuple, padding: tuple, dilation: tuple,
           bias=None):
    """Cross-correlation as PyTorch's conv2d, by im2col and one matmul; returns (out, cols).
    stride and dilation are (height, width) pairs, padding (top, bottom, left, right).

    bias, if given ((O,), of the product's dtype), is added to the (O, outputs) product
    in place, before it is laid out NCHW: one contiguous pass (0.03 ms at 64x6x28x28),
    where a broadcast add to the NCHW result cost a fresh array and ~0.1 ms."""
    n, c, _, _ = x.shape
    o, _, kh, kw = w.shape
    oh, ow = _out_sizes(x.shape, (kh, kw), stride, padding, dilation)
    layout = _layout(ow)
    hp, wp = _padded_dims(x.shape, padding)
    # the border stays zero from the buffer's creation: the key must fix where it is
    padded = _scratch(f"conv_input{layout}_pad{padding}", _in_layout((n, c, hp, wp), layout),
                      x.dtype)
    _copy_in_layout(padded[_inner(layout, x.shape, padding)], np.ascontiguousarray(x), layout)
    out_dims = _in_layout((n, c, oh, ow), layout)[1:]
    cols = _reusable(f"conv_cols{layout}", (c, kh, kw) + out_dims, x.dtype)  # for backward
    cols[...] = _taps_view(padded, layout, (kh, kw), stride, dilation, out_dims)
    cols = cols.reshape(c * kh * kw, n * oh * ow)
    out = np.matmul(w.reshape(o, -1), cols, out=_scratch("conv_out", (o, n * oh * ow), x.dtype))
    if bias is not None:
        out += bias.reshape(o, 1)
    out = out.reshape((o,) + out_dims).transpose(np.argsort(layout))
    return _result("conv_result", out), _Cols(cols, layout)


def _taps_view(padded: np.ndarray, layout: tuple, kernel: tuple, stride: tuple,
               dilation: tuple, out_dims: tuple) -> np.ndarray:
    """The im2col of padded as a read-only (C, kh, kw, *out_dims) view: [c, i, j, *at] is
    what kernel tap (i, j) reads in channel c for the output at `at` (in the layout's
    order). One copy of it fills the im2col buffer, faster than a copy per tap (1.41 ->
    1.33 ms at 64x3x32x32, 0.29 -> 0.23 at 64x6x14x14)."""
    st = padded.strides
    row, col = st[layout.index(2)], st[layout.index(3)]
    out_strides = tuple(row * stride[0] if a == 2 else col * stride[1] if a == 3
                        else st[layout.index(a)] for a in layout[1:])
    return np.lib.stride_tricks.as_strided(
        padded, shape=(padded.shape[0],) + kernel + out_dims,
        strides=(st[0], row * dilation[0], col * dilation[1]) + out_strides, writeable=False)


def _grad_rows(g: np.ndarray, layout: tuple) -> np.ndarray:
    """The output gradient (N, O, H', W') as the (O, N*H'*W') matrix the matmuls want,
    its columns in the order of `layout`."""
    rows = _scratch(f"conv_grad_out{layout}", _in_layout(g.shape, layout), g.dtype)
    _copy_in_layout(rows, np.ascontiguousarray(g), layout)
    return rows.reshape(g.shape[1], -1)


def conv2d_grad_weight(g, w, *, cols, stride, padding, dilation, x_shape):
    """dL/dw = g . cols^T from the saved im2col matrix."""
    return (_grad_rows(g, cols.layout) @ cols.matrix.T).reshape(w.shape)


def conv2d_grad_weight_into(dest, g, w, *, cols, stride, padding, dilation,
                            x_shape) -> bool:
    """conv2d_grad_weight written into dest (a gradient buffer of w's shape) by the
    matmul itself; False, with nothing written, if dest cannot take it."""
    rows, cols = _grad_rows(g, cols.layout), cols.matrix
    if (dest.dtype != np.result_type(rows, cols) or not dest.flags.c_contiguous
            or dest.shape != w.shape):
        return False
    np.matmul(rows, cols.T, out=dest.reshape(rows.shape[0], cols.shape[0]))
    return True


# The wide input gradient (below) computes at every padded pixel, outputs or not; col2im
# only at the outputs, but with kh*kw strided adds. Measured on conv 6->16, batch 64,
# padded pixels per output 1.78 (16x16 input): wide 2.3 ms, col2im 2.55; 1.96 (14x14):
# wide 1.8, col2im 1.6; 4 (8x8): wide 0.47, col2im 0.29. The crossover is between.
_WIDE_WASTE = 1.9


def conv2d_grad_input(g, w, *, cols, stride, padding, dilation, x_shape):
    """dL/dx: the column gradient w^T . g added back where each tap read (col2im)."""
    n, c, _, _ = x_shape
    o, _, kh, kw = w.shape
    oh, ow = g.shape[2], g.shape[3]
    hp, wp = _padded_dims(x_shape, padding)
    if stride == (1, 1) and hp * wp < _WIDE_WASTE * oh * ow:
        return _conv2d_grad_input_wide(g, w, padding, dilation, x_shape)
    layout = _layout(ow)
    gcols = np.matmul(w.reshape(o, -1).T, _grad_rows(g, layout),
                      out=_scratch("conv_grad_cols", (c * kh * kw, n * oh * ow), g.dtype))
    gcols = gcols.reshape((c, kh, kw) + _in_layout(g.shape, layout)[1:])
    padded = _scratch(f"conv_grad_input{layout}", _in_layout((n, c, hp, wp), layout), g.dtype)
    padded.fill(0)
    tap = [slice(None)] * 4
    for i, j, (rows, columns) in _taps((kh, kw), stride, dilation, oh, ow):
        tap[layout.index(2)], tap[layout.index(3)] = rows, columns
        padded[tuple(tap)] += gcols[:, i, j]
    inner = padded[_inner(layout, x_shape, padding)]
    return _result("conv_grad_input_result", inner.transpose(np.argsort(layout)))


# The input gradient at stride 1 in the "wide" layout, without col2im. Number the padded
# input's pixels flat, p = (n*Hp + y)*Wp + x, and let the output live at every p (its
# values where y >= H' or x >= W' are never used). Then tap (i, j) links output p to input
# p + i*dh*Wp + j*dw (dh, dw the dilation): one shift of a flat axis, so shifted
# operands are plain 2-D slices. The output gradient, put in that layout with zeros
# where no output is, is stacked at the kh row shifts (kh contiguous copies), one
# matmul with K = kh*O gives, per (c, j), the gradient each input pixel receives through
# column tap j, and kw shifted adds sum the j.
# Channels-first col2im makes kh*kw strided adds over rows of only W' elements: the wide
# path took 1.8 ms instead of 2.6 on conv 6->16 at 14x14, batch 64. Batch-last col2im is
# faster still where most padded pixels are no output (see _WIDE_WASTE).

def _conv2d_grad_input_wide(g, w, padding, dilation, x_shape):
    n, c, _, _ = x_shape
    o, _, kh, kw = w.shape
    (oh, ow), (dh, dw) = g.shape[2:], dilation
    hp, wp = _padded_dims(x_shape, padding)
    size = n * hp * wp
    # g at each output's flat position, after one image of zeros so that every row shift
    # is a slice. Only the outputs are written: the rest stays zero from the buffer's
    # creation, so the key must fix where the outputs are (oh and ow).
    wide = _scratch(f"conv_grad_wide_{oh}x{ow}", (o, n + 1, hp, wp), g.dtype)
    wide[:, 1:, :oh, :ow] = g.transpose(1, 0, 2, 3)
    wide = wide.reshape(o, -1)
    stacked = _scratch("conv_grad_stack", (kh, o, size), g.dtype)
    for i in range(kh):  # row i of the kernel reads the output i * dh rows above
        start = hp * wp - i * dh * wp
        stacked[i] = wide[:, start:start + size]
    w_cols = w.transpose(1, 3, 2, 0).reshape(c * kw, kh * o)  # rows (c, j), cols (i, o)
    by_col_tap = np.matmul(w_cols, stacked.reshape(kh * o, size),
                           out=_scratch("conv_grad_taps", (c * kw, size), g.dtype))
    by_col_tap = by_col_tap.reshape(c, kw, size)
    grad = _scratch("conv_grad_wide_input", (c, size), g.dtype)
    grad[...] = by_col_tap[:, 0]
    for j in range(1, kw):  # column tap j reads the input j * dw pixels right of the output
        grad[:, j * dw:] += by_col_tap[:, j, :size - j * dw]
    inner = grad.reshape(c, n, hp, wp)[_inner(_CHANNELS_FIRST, x_shape, padding)]
    return _result("conv_grad_input_result", inner.transpose(1, 0, 2, 3))


def max_pool2d(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple):
    """Max over each window; returns (out, the winner's flat index within its window).
    kernel, stride and dilation are (height, width) pairs, padding (top, bottom, left,
    right): torch's padding on both sides, plus what ceil_mode adds at the bottom/right.

    Works on strided views of x, one per window position (no copied window array): the
    max is a chain of np.maximum, and the winner the first position equal to it, as in
    PyTorch's CPU kernel (ties go to the first maximum). That index is built backwards
    from the "not equal" masks as small integers, idx = ne_0 * (1 + ne_1 * (1 + ...)),
    which is several times faster than masked writes. A NaN equals nothing, so windows
    holding one take the slower exact test of PyTorch's kernel; so do padded inputs
    holding -inf, as the padding (-inf) must never win where torch's kernel skips it.
    """
    oh, ow = _out_sizes(x.shape, kernel, stride, padding, dilation)
    if any(padding):
        padded = _scratch(f"pool_input_pad{padding}",
                          (*x.shape[:2], *_padded_dims(x.shape, padding)), x.dtype)
        padded.fill(_lowest(x.dtype))
        padded[_inner((0, 1, 2, 3), x.shape, padding)] = x
        x = padded
    views = [x[:, :, rows, cols] for _, _, (rows, cols) in _taps(kernel, stride, dilation, oh, ow)]
    out = _result("pool_result", views[0])
    for v in views[1:]:
        np.maximum(out, v, out=out)
    if np.isnan(out).any() or (any(padding) and (out == _lowest(x.dtype)).any()):
        return _max_pool2d_exact(views, _first_valid_tap(x.shape, kernel, stride, padding,
                                                          dilation, (oh, ow)))
    small = len(views) <= 256  # a bool mask reads as uint8 0/1 for free
    arg = _reusable("pool_arg", out.shape, np.uint8 if small else np.int32)
    arg.fill(0)
    for v in reversed(views[:-1]):
        arg += 1
        ne = v != out
        arg *= ne.view(np.uint8) if small else ne
    return out, arg


def _lowest(dtype):
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _first_valid_tap(padded_shape, kernel, stride, padding, dilation, out_hw) -> np.ndarray:
    """(H', W'): the index of each window's first tap inside the unpadded input, where
    PyTorch's kernel starts its search (rows and columns are valid independently)."""
    firsts = []
    for axis in (0, 1):
        size = padded_shape[2 + axis] - padding[2 * axis] - padding[2 * axis + 1]
        before, k, s, d = padding[2 * axis], kernel[axis], stride[axis], dilation[axis]
        start = np.arange(out_hw[axis])[:, None] * s + np.arange(k)[None, :] * d - before
        valid = (start >= 0) & (start < size)
        firsts.append(valid.argmax(axis=1))
    return firsts[0][:, None] * kernel[1] + firsts[1][None, :]


def _max_pool2d_exact(views, first: np.ndarray):
    """max_pool2d by PyTorch's test, `val > max || isnan(val)`, from each window's first
    valid tap: a NaN wins (the last one); padding (the lowest value) never does."""
    out = np.empty(views[0].shape, views[0].dtype)
    arg = np.broadcast_to(first, out.shape).astype(np.int32)
    out[...] = np.take_along_axis(np.stack(views, -1), arg[..., None], -1)[..., 0]
    for k, v in enumerate(views):
        wins = v > out
        wins |= v != v
        np.copyto(out, v, where=wins)
        np.copyto(arg, k, where=wins)
    return out, arg


def max_pool2d_grad(g, *, arg, kernel, stride, padding, dilation, x_shape):
    """Send each window's gradient to the element that won it, one window position at a time.

    Windows that do not overlap (stride >= the dilated kernel's span) write disjoint
    elements, so each position is a product with its mask, written in place; overlapping
    windows add.
    """
    oh, ow = g.shape[2], g.shape[3]
    hp, wp = _padded_dims(x_shape, padding)
    grad = _reusable("pool_grad", (*x_shape[:2], hp, wp), g.dtype)
    spans = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
    disjoint = stride[0] >= spans[0] and stride[1] >= spans[1]
    if not (stride == kernel and dilation == (1, 1) and oh * stride[0] == hp
            and ow * stride[1] == wp):
        grad.fill(0)  # else the windows tile the input and write every element
    for k, (_, _, (rows, cols)) in enumerate(_taps(kernel, stride, dilation, oh, ow)):
        if disjoint:
            np.multiply(g, arg == k, out=grad[:, :, rows, cols])
        else:
            grad[:, :, rows, cols] += g * (arg == k)
    if any(padding):
        return _result("pool_grad_inner", grad[_inner((0, 1, 2, 3), x_shape, padding)])
    return grad


def max_pool2d_indices(arg, kernel, stride, padding, dilation, x_shape) -> np.ndarray:
    """PyTorch's return_indices: each winner's flat index in its (H, W) input plane."""
    oh, ow = arg.shape[2], arg.shape[3]
    i, j = np.divmod(arg.astype(np.int64), kernel[1])
    rows = np.arange(oh)[:, None] * stride[0] + i * dilation[0] - padding[0]
    cols = np.arange(ow)[None, :] * stride[1] + j * dilation[1] - padding[2]
    return rows * x_shape[3] + cols


def avg_pool_divisors(x_shape, kernel, stride, padding, out_hw, count_include_pad: bool,
                      divisor_override=None) -> np.ndarray:
    """(H', W'): what torch's avg_pool2d divides each window's sum by. A window is cut at
    the far side of the padding (ceil_mode's last ones); count_include_pad counts the
    padding it still covers, else only the input it covers. padding is (height, width)."""
    if divisor_override is not None:
        return np.full(out_hw, divisor_override, dtype=np.int64)
    factors = []
    for axis in (0, 1):
        size, k, s, p = x_shape[2 + axis], kernel[axis], stride[axis], padding[axis]
        start = np.arange(out_hw[axis]) * s - p
        end = np.minimum(start + k, size + p)
        factors.append(end - start if count_include_pad
                       else np.minimum(end, size) - np.maximum(start, 0))
    return factors[0][:, None] * factors[1][None, :]


def avg_pool2d(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple,
               divisor: np.ndarray) -> np.ndarray:
    """Each window's sum over the zero-padded input (padding (top, bottom, left, right)),
    taps added in torch's order, divided by divisor (H', W'); integers truncate, as C++."""
    oh, ow = divisor.shape
    if any(padding):
        # the border stays zero from the buffer's creation: the key must fix where it is
        padded = _scratch(f"avg_pool_input_pad{padding}",
                          (*x.shape[:2], *_padded_dims(x.shape, padding)), x.dtype)
        padded[_inner((0, 1, 2, 3), x.shape, padding)] = x
        x = padded
    views = [x[:, :, rows, cols] for _, _, (rows, cols) in _taps(kernel, stride, (1, 1), oh, ow)]
    out = np.array(views[0], dtype=x.dtype if x.dtype.kind == "f" else np.int64)
    for v in views[1:]:
        out += v
    if x.dtype.kind == "f":
        out /= divisor
        return out
    return (np.sign(out) * (np.abs(out) // divisor)).astype(x.dtype)


def avg_pool2d_grad(g, *, kernel, stride, padding, divisor, x_shape):
    """Each window's gradient over its divisor, added to every element it covered."""
    oh, ow = g.shape[2], g.shape[3]
    share = g / divisor
    grad = _reusable("avg_pool_grad", (*x_shape[:2], *_padded_dims(x_shape, padding)), g.dtype)
    grad.fill(0)
    for _, _, (rows, cols) in _taps(kernel, stride, (1, 1), oh, ow):
        grad[:, :, rows, cols] += share
    if any(padding):
        return _result("avg_pool_grad_inner", grad[_inner((0, 1, 2, 3), x_shape, padding)])
    return grad
