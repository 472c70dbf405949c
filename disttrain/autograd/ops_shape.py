"""PyTorch's differentiable tensor operations beyond ops.py: shape and indexing (repeat,
flip, roll, index_select, movedim, narrow, scatter, diagonal, einsum...), reductions
(prod, cumprod, median) and elementwise math (log2, atan2, erf, logit...).

Most are composed from ops.py's primitives (getitem, reshape, permute, expand, cat,
where, ...), so their gradients come from rules already checked against torch; only the
rest record a row of rules.RULES. Each function has torch's name, arguments, defaults and
error texts; the end of the file binds the Tensor methods torch has.
"""

from __future__ import annotations

import builtins
import math
import string

import numpy as np

from . import kernels, ops
from .engine import record
from .ops import _data, _floating, _wrap_dim, values_indices
from .rules import RULES, scatter_key
from .tensor import Tensor

R = RULES

__all__ = [
    "repeat_interleave", "tile", "flip", "fliplr", "flipud", "roll", "index_select",
    "broadcast_to", "movedim", "moveaxis", "swapaxes", "swapdims", "narrow", "unflatten",
    "masked_select", "scatter", "scatter_add", "prod", "cumprod", "lerp", "diag", "diagonal",
    "trace", "clamp_min", "clamp_max", "nan_to_num", "trunc", "fix", "frac", "remainder",
    "fmod", "log2", "log10", "exp2", "sinh", "cosh", "asin", "acos", "atan", "arcsin",
    "arccos", "arctan", "atan2", "arctan2", "hypot", "logaddexp", "erf", "logit", "einsum",
    "hstack", "vstack", "dstack", "atleast_1d", "atleast_2d", "atleast_3d", "median", "neg",
    "negative",
]

neg = negative = ops.neg


def _sizes(sizes: tuple) -> tuple:
    """Sizes given as ints or as one sequence, as torch's varargs methods take them."""
    return tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes


def _is_tensor(x) -> bool:
    return isinstance(x, Tensor)


# -- repeating and reordering -------------------------------------------------------------
def repeat(x, *sizes):
    """x tiled sizes[i] times along dim i (more sizes than dims add leading dims), as
    Tensor.repeat; the gradient sums over the copies."""
    sizes = _sizes(sizes)
    if len(sizes) < x.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                           "of dimensions of tensor")
    if any(r < 0 for r in sizes):
        shape = [r * n for r, n in zip(sizes, (1,) * (len(sizes) - x.ndim) + x.shape)]
        bad = next(n for n in shape if n < 0)
        raise RuntimeError(f"Trying to create tensor with negative dimension {bad}: {shape}")
    shape = (1,) * (len(sizes) - x.ndim) + x.shape
    # (1, n0, 1, n1, ...) expanded to (r0, n0, r1, n1, ...) and merged: the copies come
    # from an Expand node, so the gradient sums over them as torch's does
    paired = ops.reshape(x, tuple(v for n in shape for v in (1, n)))
    stretched = ops.expand(paired, tuple(v for r, n in zip(sizes, shape) for v in (r, n)))
    return ops.reshape(stretched, tuple(r * n for r, n in zip(sizes, shape)))


def tile(x, dims):
    """x repeated dims[i] times along dim i; fewer dims than x has are padded with 1s in
    front, as torch.tile."""
    dims = tuple(dims)
    return repeat(x, (1,) * (x.ndim - len(dims)) + dims)


def _dim_list(dims, ndim: int, name: str) -> tuple:
    """dims (int or sequence) counted from 0, with torch's error for a repeated one."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    wrapped = tuple(_wrap_dim(d, ndim) for d in dims)
    for k, d in enumerate(wrapped):
        if d in wrapped[:k]:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    return wrapped


def flip(x, dims):
    """x reversed along dims, a copy (as torch.flip: a later in-place change to x does not
    show through)."""
    key = [slice(None)] * x.ndim
    for d in _dim_list(dims, x.ndim, "flip"):
        key[d] = slice(None, None, -1)
    return ops.clone(ops.getitem(x, tuple(key)))


def fliplr(x):
    """x reversed along dim 1, as torch.fliplr."""
    if x.ndim < 2:
        raise RuntimeError("Input must be >= 2-d.")
    return flip(x, (1,))


def flipud(x):
    """x reversed along dim 0, as torch.flipud."""
    if x.ndim < 1:
        raise RuntimeError("Input must be >= 1-d.")
    return flip(x, (0,))


def roll(x, shifts, dims=None):
    """x shifted circularly by shifts along dims (None: the flattened x, shape kept), as
    torch.roll."""
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                               "dims:0")
        return ops.reshape(roll(ops.flatten(x), shifts, 0), x.shape)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                           f"dims:{len(dims)}")
    out = x
    for shift, dim in zip(shifts, dims):
        d = _wrap_dim(dim, x.ndim)
        n = x.shape[d] if x.ndim else 1
        cut = (n - shift % n) % n if n else 0
        if cut:  # two slices swapped: the gradient is the same swap back
            lead = (slice(None),) * d
            out = ops.cat([ops.getitem(out, lead + (slice(cut, None),)),
                           ops.getitem(out, lead + (slice(None, cut),))], d)
    return out if out is not x else ops.clone(x)


def _int_index(index, name: str) -> np.ndarray:
    idx = np.asarray(_data(index))
    if idx.dtype not in (np.int32, np.int64):
        raise RuntimeError(f"{name}(): Expected dtype int32 or int64 for index")
    return idx


def index_select(x, dim, index):
    """The entries of x at index (a vector) along dim, as torch.index_select; repeated
    indices add up in the gradient."""
    idx = _int_index(index, "index_select")
    if idx.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    d = _wrap_dim(dim, x.ndim)
    if x.ndim == 0:
        return ops.reshape(index_select(ops.reshape(x, 1), 0, idx), ())
    n = x.shape[d]
    if ((idx < -n) | (idx >= n)).any():
        raise IndexError("index out of range in self")
    return ops.getitem(x, (slice(None),) * d + (idx.reshape(-1) % builtins.max(n, 1),))


def expand_as(x, other):
    """x expanded to other's shape, as Tensor.expand_as."""
    return ops.expand(x, other.shape)


def view_as(x, other):
    """x viewed in other's shape, as Tensor.view_as."""
    return ops.view(x, other.shape)


def broadcast_to(x, size):
    """x expanded to size (-1 keeps a dim), as torch.broadcast_to."""
    return ops.expand(x, tuple(size))


def movedim(x, source, destination):
    """x with the dims in source moved to the positions in destination, the others kept in
    order, as torch.movedim (a view)."""
    src = (source,) if isinstance(source, int) else tuple(source)
    dst = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({list(src)} "
                           f"dims) should contain the same number of dims as destination "
                           f"({list(dst)} dims)")
    src_w = [_wrap_dim(d, x.ndim) for d in src]
    dst_w = [_wrap_dim(d, x.ndim) for d in dst]
    for name, given, wrapped in (("source", src, src_w), ("destination", dst, dst_w)):
        if len(set(wrapped)) != len(wrapped):
            raise RuntimeError(f"movedim: repeated dim in `{name}` ({list(given)})")
    if x.ndim == 0:
        return ops.reshape(x, ())
    order = [d for d in range(x.ndim) if d not in src_w]
    for d, s in sorted(zip(dst_w, src_w)):  # in increasing destination, each lands in place
        order.insert(d, s)
    return ops.permute(x, tuple(order))


moveaxis = movedim


def swapaxes(x, axis0, axis1):
    """x with two dims swapped, as torch.swapaxes (torch.transpose's alias)."""
    return ops.transpose(x, axis0, axis1)


def swapdims(x, dim0, dim1):
    """x with two dims swapped, as torch.swapdims (torch.transpose's alias)."""
    return ops.transpose(x, dim0, dim1)


def narrow(x, dim, start, length):
    """The view x[..., start:start + length] along dim; a negative start counts from the
    end, as torch.narrow."""
    d = _wrap_dim(dim, x.ndim)
    start, n = int(_data(start)), x.shape[d]
    if not -n <= start <= n:
        raise IndexError(f"start out of range (expected to be in range of [{-n}, {n}], but "
                         f"got {start})")
    if length < 0:
        raise RuntimeError("narrow(): length must be non-negative.")
    if start < 0:
        start += n
    if start + length > n:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({n}).")
    return ops.getitem(x, (slice(None),) * d + (slice(start, start + length),))


def unflatten(x, dim, sizes):
    """Dim dim of x split into sizes (one may be -1), as torch.unflatten."""
    d = _wrap_dim(dim, x.ndim)
    sizes = tuple(sizes)
    if not sizes:
        raise RuntimeError("unflatten: sizes must be non-empty")
    known = math.prod(n for n in sizes if n != -1)
    if (-1 not in sizes and known != x.shape[d]) or (
            -1 in sizes and (known == 0 or x.shape[d] % known)):
        raise RuntimeError(f"unflatten: Provided sizes {list(sizes)} don't multiply up to the "
                           f"size of dim {dim} ({x.shape[d]}) in the input tensor")
    return ops.reshape(x, x.shape[:d] + sizes + x.shape[d + 1:])


def masked_select(x, mask):
    """The 1-D tensor of x's entries where the bool mask is true, both broadcast, as
    torch.masked_select."""
    m = np.asarray(_data(mask))
    if m.dtype != np.bool_:
        raise RuntimeError("masked_select: expected BoolTensor for mask")
    shape = np.broadcast_shapes(m.shape, x.shape)
    return ops.getitem(ops.expand(x, shape), np.broadcast_to(m, shape))


# -- scatter --------------------------------------------------------------------------------
def _scatter_args(x, dim, index, name: str):
    d = _wrap_dim(dim, x.ndim)
    idx = np.asarray(_data(index))
    if idx.dtype != np.int64:
        raise RuntimeError(f"{name}(): Expected dtype int64 for index")
    if idx.ndim != x.ndim and idx.size:
        raise RuntimeError("Index tensor must have the same number of dimensions as self tensor")
    n = x.shape[d] if x.ndim else 1
    outside = (idx < 0) | (idx >= n)
    if outside.any():
        raise RuntimeError(f"index {idx[outside][0]} is out of bounds for dimension {d} with "
                           f"size {n}")
    return d, idx


def _src_part(src, idx):
    """The corner of src that index covers (src may be larger)."""
    return np.asarray(src)[tuple(slice(0, n) for n in idx.shape)]


def scatter(input, dim, index, src=None, *, value=None):  # noqa: A002 - torch's names
    """A copy of input with src[i][j] (or a number) written at [index[i][j]][j] (dim 0;
    likewise for any dim), as torch.scatter; with repeated indices the last write wins.
    input gets no gradient at the written places; src gets grad.gather(dim, index)."""
    src = value if src is None else src
    d, idx = _scatter_args(input, dim, index, "scatter")
    out = input.data.copy()
    if idx.size == 0:
        return ops.clone(input)
    key = scatter_key(idx, d)
    if not _is_tensor(src):  # a number: a where() of it, the written places get no gradient
        mask = np.zeros(input.shape, dtype=bool)
        mask[key] = True
        return ops.where(mask, ops._as_dtype(src, input.dtype), input)
    out[key] = _src_part(src.data, idx).astype(out.dtype)  # numpy: the last write wins
    return record(R["Scatter"], out, (input, src), dim=d, index=idx)


def scatter_add(input, dim, index, src):  # noqa: A002 - torch's names
    """A copy of input with every src[i][j] added at [index[i][j]][j] (dim 0; likewise for
    any dim), repeated indices adding up, as torch.scatter_add."""
    d, idx = _scatter_args(input, dim, index, "scatter_add")
    if idx.size == 0:
        return ops.clone(input)
    out = input.data.copy()
    part = _src_part(src.data, idx).astype(out.dtype)
    np.add.at(out, scatter_key(idx, d), part)  # add.at: repeated indices add, never overwrite
    return record(R["ScatterAdd"], out, (input, src), dim=d, index=idx)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):  # noqa: A002
    """Each entry of input repeated `repeats` times (an int, or a tensor: one count per
    entry along dim) along dim (None: the flattened input), as torch.repeat_interleave.
    With only a tensor of counts, the indices repeated so (torch's one-argument form)."""
    if repeats is None:  # torch.repeat_interleave(counts): arange(len) repeated by counts
        counts = np.asarray(_data(input))
        return Tensor._make(np.repeat(np.arange(counts.size, dtype=np.int64), counts))
    x = ops.flatten(input) if dim is None else input
    d = 0 if dim is None else _wrap_dim(dim, x.ndim)
    if x.ndim == 0:
        x = ops.reshape(x, 1)
    counts = np.asarray(_data(repeats)).astype(np.int64).reshape(-1)
    if (counts < 0).any():
        raise RuntimeError("Repeats must be non-negative")
    n = x.shape[d]
    if counts.size != 1 and counts.size != n:
        raise RuntimeError("repeats must have the same size as input along dim, but got "
                           f"repeats.size(0) = {counts.size} and input.size({d}) = {n}")
    taken = np.repeat(np.arange(n), counts if counts.size == n else counts[0])
    if output_size is not None and output_size != taken.size:
        raise RuntimeError("allocated size does not match required size")
    return ops.getitem(x, (slice(None),) * d + (taken,))


# -- reductions and scans ------------------------------------------------------------------
def prod(input, dim=None, keepdim=False, *, dtype=None):  # noqa: A002 - torch's names
    """The product over dim (None: all), as torch.prod; integers and bools multiply in
    int64. Its gradient is the product of the other entries, exact where there are zeros."""
    x = input if dtype is None else ops.to(input, dtype)
    data = x.data
    if data.dtype.kind in "biu":
        data = data.astype(np.int64)
    if dim is None:
        return record(R["Prod"], np.asarray(np.prod(data)), (x,), dim=None, keepdim=False)
    d = _wrap_dim(dim, x.ndim)
    if x.ndim == 0:
        return ops.clone(x)
    out = np.prod(data, axis=d, keepdims=keepdim)
    return record(R["Prod"], np.asarray(out), (x,), dim=d, keepdim=keepdim)


def cumprod(input, dim, *, dtype=None):  # noqa: A002 - torch's names
    """Running products along dim; integers and bools in int64, as torch.cumprod."""
    x = input if dtype is None else ops.to(input, dtype)
    d = _wrap_dim(dim, x.ndim)
    if x.ndim == 0:
        return ops.clone(x)
    data = x.data.astype(np.int64) if x.data.dtype.kind in "biu" else x.data
    return record(R["Cumprod"], np.cumprod(data, axis=d), (x,), dim=d)


def median(input, dim=None, keepdim=False):  # noqa: A002 - torch's names
    """The lower median (NaN if any entry is NaN), as torch.median: of all entries, whose
    gradient tied entries share evenly; or along dim, (values, indices), the gradient going
    to the returned index (the first NaN, else the stable sort's middle entry)."""
    if dim is None:
        flat = input.data.reshape(-1)
        if flat.size == 0:
            return record(R["Amax"], np.asarray(np.nan, dtype=flat.dtype), (input,), dim=None,
                          keepdim=False, nan_is_max=True)
        value = np.sort(flat)[(flat.size - 1) // 2]  # NaNs sort last, so any NaN is taken:
        value = flat[np.isnan(flat)][0] if np.isnan(flat).any() else value  # torch's too
        return record(R["Amax"], np.asarray(value), (input,), dim=None, keepdim=False,
                      nan_is_max=True)
    d = _wrap_dim(dim, input.ndim)
    if input.ndim == 0:
        return values_indices(ops.clone(input), Tensor._make(np.zeros((), dtype=np.int64)))
    n = input.shape[d]
    if n == 0:
        raise IndexError(f"median(): Expected reduction dim {d} to have non-zero size.")
    order = np.argsort(input.data, axis=d, kind="stable")  # NaNs last, in order
    indices = np.take(order, [(n - 1) // 2], axis=d)
    has_nan = np.isnan(input.data).any(axis=d, keepdims=True)
    if has_nan.any():
        first_nan = np.argmax(np.isnan(input.data), axis=d, keepdims=True)
        indices = np.where(has_nan, first_nan, indices)
    values = np.take_along_axis(input.data, indices, axis=d)
    if not keepdim:
        values, indices = values.squeeze(d), indices.squeeze(d)
    out = record(R["Max"], values, (input,), shape=input.shape, dim=d, keepdim=keepdim,
                 indices=indices)
    return values_indices(out, Tensor._make(indices.astype(np.int64)))


def trace(input):  # noqa: A002 - torch's names
    """The sum of a matrix's diagonal, as torch.trace."""
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {input.ndim}")
    return ops.sum(diagonal(input))


# -- diagonals ------------------------------------------------------------------------------
def diagonal(input, offset=0, dim1=0, dim2=1):  # noqa: A002 - torch's names
    """The diagonal of dims dim1, dim2 (above it for offset > 0), appended as the last dim,
    as torch.diagonal."""
    d1, d2 = _wrap_dim(dim1, input.ndim), _wrap_dim(dim2, input.ndim)
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    moved = movedim(input, (d1, d2), (-2, -1))
    rows, cols = moved.shape[-2:]
    start_r, start_c = builtins.max(-offset, 0), builtins.max(offset, 0)
    length = builtins.max(builtins.min(rows - start_r, cols - start_c), 0)
    r = np.arange(start_r, start_r + length)
    return ops.getitem(moved, (Ellipsis, r, r - start_r + start_c))


_diagonal = diagonal  # diag's argument `diagonal` (torch's name) hides the function


def diag(input, diagonal=0):  # noqa: A002 - torch's names
    """A 1-D input put on a diagonal of a square matrix of zeros, or a 2-D input's
    diagonal as a 1-D tensor, as torch.diag."""
    if input.ndim == 2:
        return _diagonal(input, diagonal)
    if input.ndim != 1:
        raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {input.ndim}D")
    k = diagonal
    n = input.shape[0] + builtins.abs(k)
    pad = Tensor._make(np.zeros(builtins.abs(k), dtype=input.dtype))
    # row i holds the entry of column i + k: the input shifted right (k > 0) or left
    shifted = ops.cat([pad, input] if k >= 0 else [input, pad])
    on_diagonal = np.eye(n, k=k, dtype=bool)
    # where, not a product with the identity: an inf off the diagonal would give NaN
    return ops.where(on_diagonal, ops.expand(ops.reshape(shifted, (1, n)), (n, n)),
                     ops._as_dtype(0, input.dtype))


# -- elementwise ----------------------------------------------------------------------------
def _unary(name: str, fn, x):
    """fn of x recorded under rule name; integers and bools computed in float32, as torch."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return record(R[name], np.asarray(fn(_floating(x))), (x,))


def log2(input):  # noqa: A002 - torch's names
    """Elementwise base-2 logarithm, as torch.log2."""
    return _unary("Log2", np.log2, input)


def log10(input):  # noqa: A002 - torch's names
    """Elementwise base-10 logarithm, as torch.log10."""
    return _unary("Log10", np.log10, input)


def exp2(input):  # noqa: A002 - torch's names
    """Elementwise 2 ** x, as torch.exp2."""
    return _unary("Exp2", np.exp2, input)


def sinh(input):  # noqa: A002 - torch's names
    """Elementwise hyperbolic sine, as torch.sinh."""
    return _unary("Sinh", np.sinh, input)


def cosh(input):  # noqa: A002 - torch's names
    """Elementwise hyperbolic cosine, as torch.cosh."""
    return _unary("Cosh", np.cosh, input)


def asin(input):  # noqa: A002 - torch's names
    """Elementwise arcsine (NaN outside [-1, 1]), as torch.asin."""
    return _unary("Asin", np.arcsin, input)


def acos(input):  # noqa: A002 - torch's names
    """Elementwise arccosine (NaN outside [-1, 1]), as torch.acos."""
    return _unary("Acos", np.arccos, input)


def atan(input):  # noqa: A002 - torch's names
    """Elementwise arctangent, as torch.atan."""
    return _unary("Atan", np.arctan, input)


arcsin, arccos, arctan = asin, acos, atan


def erf(input):  # noqa: A002 - torch's names
    """Elementwise error function, as torch.erf."""
    return _unary("Erf", kernels.erf, input)


def trunc(input):  # noqa: A002 - torch's names
    """Elementwise rounding toward zero; its gradient is 0, as torch.trunc's."""
    if input.dtype.kind != "f":  # integers are whole already: torch returns them unchanged
        return ops.clone(input)
    return record(R["Trunc"], np.trunc(input.data), (input,))


fix = trunc


def frac(input):  # noqa: A002 - torch's names
    """Elementwise x - trunc(x) (the sign kept), as torch.frac; its gradient is 1."""
    return ops.sub(input, trunc(input))


def logit(input, eps=None):  # noqa: A002 - torch's names
    """log(p / (1 - p)) with p clamped to [eps, 1 - eps] when eps is given, as torch.logit;
    the gradient is 0 outside that range (NaN outside [0, 1] without eps), as torch's."""
    p = _floating(input)
    if eps is not None:
        p = np.clip(p, eps, 1 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(p / (1 - p))
    return record(R["Logit"], out.astype(p.dtype, copy=False), (input,), eps=eps)


def clamp_min(input, min):  # noqa: A001,A002 - torch's names
    """max(x, min) elementwise, as torch.clamp_min."""
    return ops.clamp(input, min=min)


def clamp_max(input, max):  # noqa: A001,A002 - torch's names
    """min(x, max) elementwise, as torch.clamp_max."""
    return ops.clamp(input, max=max)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):  # noqa: A002 - torch's names
    """x with NaN, +inf and -inf replaced (by default 0 and the dtype's largest and
    smallest values), as torch.nan_to_num; the replaced entries get no gradient."""
    d = input.data
    if d.dtype.kind != "f":
        return ops.clone(input)
    filled = np.nan_to_num(d, nan=nan, posinf=posinf, neginf=neginf)
    return ops.where(np.isfinite(d), input, filled)


def _binary(name: str, fn, a, b):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return ops._binary(R[name], fn, a, b)


def _float_binary(name: str, fn, a, b):
    """A binary float function: integer operands computed in float32, as torch's."""
    def floats(v):
        if _is_tensor(v) and v.dtype.kind != "f":
            return ops.to(v, np.float32)
        return v
    return _binary(name, fn, floats(a), floats(b))


def atan2(input, other):  # noqa: A002 - torch's names
    """Elementwise arctangent of input / other in the right quadrant, as torch.atan2."""
    return _float_binary("Atan2", np.arctan2, input, other)


arctan2 = atan2


def hypot(input, other):  # noqa: A002 - torch's names
    """Elementwise sqrt(a**2 + b**2) without overflow, as torch.hypot."""
    return _float_binary("Hypot", np.hypot, input, other)


def logaddexp(input, other):  # noqa: A002 - torch's names
    """Elementwise log(e**a + e**b) without overflow, as torch.logaddexp."""
    return _float_binary("Logaddexp", np.logaddexp, input, other)


def remainder(input, other):  # noqa: A002 - torch's names
    """Elementwise remainder with the divisor's sign (Python's %), as torch.remainder."""
    return _binary("Remainder", np.remainder, input, other)


def fmod(input, other):  # noqa: A002 - torch's names
    """Elementwise remainder with the dividend's sign (C's fmod), as torch.fmod."""
    return _binary("Fmod", np.fmod, input, other)


def lerp(input, end, weight):  # noqa: A002 - torch's names
    """input + weight * (end - input), weight a number or a tensor, as torch.lerp."""
    return ops.add(input, ops.mul(weight, ops.sub(end, input)))


# -- einsum ---------------------------------------------------------------------------------
def _einsum_subscripts(equation: str, shapes: list) -> tuple:
    """(per-operand subscripts, output subscripts) in letters only: each ellipsis spelled
    with letters the equation does not use, the implicit output made explicit."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    subs = lhs.split(",")
    if len(subs) != len(shapes):
        raise ValueError("einsum(): more operands were provided than specified in the equation"
                         if len(shapes) > len(subs) else
                         "einsum(): fewer operands were provided than specified in the equation")
    spare = [c for c in string.ascii_letters if c not in equation]
    widest = 0
    for k, (s, shape) in enumerate(zip(subs, shapes)):
        if "..." in s:
            n = len(shape) - (len(s) - 3)
            widest = builtins.max(widest, n)
            subs[k] = s.replace("...", "".join(spare[-n:]) if n else "")
    ellipsis = "".join(spare[-widest:]) if widest else ""
    if not arrow:  # implicit: the ellipsis, then the labels used once, in alphabetical order
        counts = {c: lhs.count(c) for c in lhs if c.isalpha()}
        rhs = ellipsis + "".join(sorted(c for c, n in counts.items() if n == 1))
    else:
        rhs = rhs.replace("...", ellipsis)
    return subs, rhs


def einsum(equation, *operands):
    """Einstein summation over the operands (or one list of them), as torch.einsum:
    ellipses, broadcasting, repeated labels (diagonals) and an implicit output."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    subs, out_subs = _einsum_subscripts(equation, [t.shape for t in operands])
    sizes = {}
    for s, t in zip(subs, operands):
        for c, n in zip(s, t.shape):
            if sizes.get(c, 1) != 1 and n not in (1, sizes[c]):
                k = subs.index(s)
                raise RuntimeError(f"einsum(): subscript {c} has size {n} for operand {k} which "
                                   f"does not broadcast with previously seen size {sizes[c]}")
            sizes[c] = builtins.max(sizes.get(c, 1), n) if n != 1 else sizes.get(c, 1)
    for c in out_subs:
        if c not in sizes:
            raise RuntimeError(f"einsum(): output subscript {c} does not appear in the equation "
                               "for any input operand")
    spec = ",".join(subs) + "->" + out_subs
    out = np.einsum(spec, *(t.data for t in operands))
    return record(R["Einsum"], np.asarray(out), tuple(operands), subs=subs, out_subs=out_subs,
                  sizes=sizes)


# -- stacking -------------------------------------------------------------------------------
def atleast_1d(*tensors):
    """Each tensor with at least 1 dim (a 0-d one becomes (1,)), as torch.atleast_1d."""
    out = [t if t.ndim >= 1 else ops.reshape(t, (1,)) for t in _tensor_list(tensors)]
    return out[0] if len(out) == 1 and _is_tensor(tensors[0]) else tuple(out)


def atleast_2d(*tensors):
    """Each tensor with at least 2 dims ((n,) becomes (1, n)), as torch.atleast_2d."""
    out = [t if t.ndim >= 2 else ops.reshape(t, (1, -1) if t.ndim else (1, 1))
           for t in _tensor_list(tensors)]
    return out[0] if len(out) == 1 and _is_tensor(tensors[0]) else tuple(out)


def atleast_3d(*tensors):
    """Each tensor with at least 3 dims ((n,) becomes (1, n, 1), (m, n) becomes (m, n, 1)),
    as torch.atleast_3d."""
    def grow(t):
        if t.ndim >= 3:
            return t
        return ops.reshape(t, {0: (1, 1, 1), 1: (1, -1, 1), 2: t.shape + (1,)}[t.ndim])
    out = [grow(t) for t in _tensor_list(tensors)]
    return out[0] if len(out) == 1 and _is_tensor(tensors[0]) else tuple(out)


def _tensor_list(tensors) -> list:
    return list(tensors[0]) if len(tensors) == 1 and not _is_tensor(tensors[0]) else list(tensors)


def _stack_list(tensors, name: str) -> list:
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"{name} expects a non-empty TensorList")
    return tensors


def hstack(tensors):
    """Tensors joined along dim 1 (dim 0 if they are 1-D), as torch.hstack."""
    tensors = [atleast_1d(t) for t in _stack_list(tensors, "hstack")]
    return ops.cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    """Tensors made at least 2-D and joined along dim 0, as torch.vstack."""
    return ops.cat([atleast_2d(t) for t in _stack_list(tensors, "vstack")], 0)


def dstack(tensors):
    """Tensors made at least 3-D and joined along dim 2, as torch.dstack."""
    return ops.cat([atleast_3d(t) for t in _stack_list(tensors, "dstack")], 2)


# Methods: the functions above, bound as torch names them on Tensor.
_METHODS = {
    "repeat": repeat, "tile": tile, "flip": flip, "fliplr": fliplr, "flipud": flipud,
    "roll": roll, "index_select": index_select, "expand_as": expand_as, "view_as": view_as,
    "broadcast_to": broadcast_to, "movedim": movedim, "moveaxis": moveaxis,
    "swapaxes": swapaxes, "swapdims": swapdims, "narrow": narrow, "unflatten": unflatten,
    "masked_select": masked_select, "scatter": scatter, "scatter_add": scatter_add,
    "repeat_interleave": repeat_interleave, "prod": prod, "cumprod": cumprod, "lerp": lerp,
    "diag": diag, "diagonal": diagonal, "trace": trace, "clamp_min": clamp_min,
    "clamp_max": clamp_max, "nan_to_num": nan_to_num, "trunc": trunc, "fix": fix, "frac": frac,
    "remainder": remainder, "fmod": fmod, "log2": log2, "log10": log10, "exp2": exp2,
    "sinh": sinh, "cosh": cosh, "asin": asin, "acos": acos, "atan": atan, "arcsin": arcsin,
    "arccos": arccos, "arctan": arctan, "atan2": atan2, "arctan2": arctan2, "hypot": hypot,
    "logaddexp": logaddexp, "erf": erf, "logit": logit, "median": median,
    "negative": negative, "__mod__": remainder, "__rmod__": lambda a, b: remainder(b, a),
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
