"""PyTorch's non-differentiable tensor operations: comparisons, logic, sorting, searching,
counting, random sampling and dtype/metadata methods.

None of them enters the graph but sort's and topk's values, which are a gather of the
input at the indices (so their gradient goes back to the chosen elements, as torch's);
every other result is built with Tensor._make and never requires grad, as torch's
integer and bool results.
Indices are int64 as torch's. The module binds its Tensor methods at its end, as ops.py does.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import random
from .factories import _shape
from .ops import _checked_dims, _data, _wrap_dim, clone, eq, gather, ge, gt, le, lt, ne
from .ops import to as _to
from .tensor import TORCH_DTYPE_NAMES, Tensor, _default_dtype

# torch.return_types.sort / .topk: named (values, indices) pairs
sort_result = namedtuple("sort", ["values", "indices"])
topk_result = namedtuple("topk", ["values", "indices"])


def _make(array) -> Tensor:
    """A tensor outside the graph (requires_grad False) over array."""
    return Tensor._make(np.asarray(array))


def _or(dtype, default):
    """dtype unless None: `dtype or default` would be wrong, as a numpy dtype is falsy."""
    return default if dtype is None else dtype


def _name(dtype) -> str:
    """torch's short name of a dtype (Float, Long...), as its errors print it."""
    name = np.dtype(dtype).name
    return TORCH_DTYPE_NAMES.get(name, name)


# -- logic -----------------------------------------------------------------------------
def _logical(fn):
    def op(input, other):  # noqa: A002 - torch's argument name
        return _make(fn(_data(input), _data(other)))
    op.__doc__ = f"Elementwise {fn.__name__} of truth values, a bool tensor, as torch."
    return op


logical_and, logical_or, logical_xor = (
    _logical(f) for f in (np.logical_and, np.logical_or, np.logical_xor))


def logical_not(input):  # noqa: A002 - torch's argument name
    """Elementwise not of truth values (nonzero is true), a bool tensor, as torch."""
    return _make(np.logical_not(input.data))


def _integral(x, name: str):
    """torch's error for a bitwise op on floats: only bool and integer tensors have bits."""
    if x.dtype.kind not in "biu":
        raise NotImplementedError(f'"{name}_cpu" not implemented for \'{_name(x.dtype)}\'')
    return x.data


def _bitwise(fn, name):
    def op(input, other):  # noqa: A002 - torch's argument name
        a = _integral(input, name) if isinstance(input, Tensor) else input
        b = _integral(other, name) if isinstance(other, Tensor) else other
        return _make(fn(a, b))
    op.__doc__ = f"Elementwise {name} of bool or integer tensors (mask & mask), as torch."
    return op


bitwise_and = _bitwise(np.bitwise_and, "bitwise_and")
bitwise_or = _bitwise(np.bitwise_or, "bitwise_or")
bitwise_xor = _bitwise(np.bitwise_xor, "bitwise_xor")


def bitwise_not(input):  # noqa: A002 - torch's argument name
    """Elementwise ~x of a bool or integer tensor, as torch.bitwise_not."""
    return _make(np.invert(_integral(input, "bitwise_not")))


def _reduce_bool(fn, input, dim, keepdim):
    """any/all over dim (int, tuple or None); uint8 stays uint8, everything else gives bool."""
    d = _checked_dims(dim, input.ndim)
    out = fn(input.data, axis=d, keepdims=keepdim)
    return _make(np.asarray(out).astype(np.uint8 if input.dtype == np.uint8 else np.bool_))


def any(input, dim=None, keepdim=False):  # noqa: A001,A002 - torch.any
    """Whether any element (over dim) is nonzero, as torch.any."""
    return _reduce_bool(np.any, input, dim, keepdim)


def all(input, dim=None, keepdim=False):  # noqa: A001,A002 - torch.all
    """Whether every element (over dim) is nonzero, as torch.all."""
    return _reduce_bool(np.all, input, dim, keepdim)


# -- closeness and equality ----------------------------------------------------------------
def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):  # noqa: A002
    """|input - other| <= atol + rtol * |other| elementwise (equal infinities are close),
    as torch.isclose; the two must share a dtype."""
    if input.dtype != other.dtype:
        raise RuntimeError(f"{_name(input.dtype)} did not match {_name(other.dtype)}")
    a, b = input.data, other.data
    if a.dtype.kind not in "fc":  # torch compares integers and bools exactly, in float
        a, b = a.astype(np.float64), b.astype(np.float64)
    return _make(np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):  # noqa: A002
    """Whether isclose holds everywhere (a Python bool), as torch.allclose."""
    return bool(np.all(isclose(input, other, rtol, atol, equal_nan).data))


def equal(input, other):  # noqa: A002 - torch's argument name
    """True if both have the same shape and elements (NaN equals nothing), as torch.equal."""
    if input.shape != other.shape:
        return False
    return bool(np.array_equal(input.data, other.data))


# -- counting and finding ----------------------------------------------------------------
def count_nonzero(input, dim=None):  # noqa: A002 - torch's argument name
    """The number of nonzero elements over dim (int, tuple or None), int64, as torch."""
    dims = () if dim is None else dim if isinstance(dim, (tuple, list)) else (dim,)
    wrapped = [_wrap_dim(d, input.ndim) for d in dims]
    for d in set(wrapped):
        if wrapped.count(d) > 1:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    d = None if dim is None else _checked_dims(dim, input.ndim)
    return _make(np.count_nonzero(input.data, axis=d).astype(np.int64))


def nonzero(input, *, as_tuple=False):  # noqa: A002 - torch's argument name
    """Indices of the nonzero elements: an (n, ndim) int64 tensor, or with as_tuple one 1-D
    tensor per dim (a 0-d input counts as 1-D there), as torch.nonzero."""
    data = input.data
    if as_tuple:
        return tuple(_make(i.astype(np.int64)) for i in np.nonzero(np.atleast_1d(data)))
    if data.ndim == 0:  # numpy refuses 0-d; torch gives (1, 0) or (0, 0)
        return _make(np.zeros((int(bool(data)), 0), dtype=np.int64))
    return _make(np.argwhere(data).astype(np.int64))


def argwhere(input):  # noqa: A002 - torch's argument name
    """nonzero(input) as an (n, ndim) tensor, as torch.argwhere."""
    return nonzero(input)


# -- sorting -------------------------------------------------------------------------------
def _stable_argsort(data: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """Stable sort order along axis; NaN sorts as the largest value, as torch's."""
    if not descending:
        return np.argsort(data, axis=axis, kind="stable")
    # Sorting the reversed array ascending and reversing the order keeps ties in their
    # original order (a stable descending sort) without negating (bools, NaN, unsigned).
    n = data.shape[axis]
    order = np.argsort(np.flip(data, axis), axis=axis, kind="stable")
    return n - 1 - np.flip(order, axis)


def _sort_parts(input, dim, descending):
    """(values array, int64 indices array) of input sorted along dim."""
    data = input.data
    d = _wrap_dim(dim, data.ndim)
    if data.ndim == 0:
        return data.copy(), np.zeros((), dtype=np.int64)
    order = _stable_argsort(data, d, descending).astype(np.int64)
    return np.take_along_axis(data, order, axis=d), order


def _picked(input, dim, values, indices):
    """The values at indices along dim: in the graph (a gather) when input requires grad."""
    if not input.requires_grad:
        return _make(values)
    if input.ndim == 0:
        return clone(input)
    return gather(input, dim, _make(indices))


def sort(input, dim=-1, descending=False, *, stable=False):  # noqa: A002
    """(values, indices) of input sorted along dim, as torch.sort; always stable here
    (torch's stable=False may order ties either way)."""
    values, indices = _sort_parts(input, dim, descending)
    return sort_result(_picked(input, dim, values, indices), _make(indices))


def argsort(input, dim=-1, descending=False, *, stable=False):  # noqa: A002
    """The int64 indices that sort input along dim (stable), as torch.argsort."""
    return _make(_sort_parts(input, dim, descending)[1])


def msort(input):  # noqa: A002 - torch's argument name
    """input sorted along dim 0, as torch.msort."""
    return sort(input, dim=0).values


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002 - torch's names
    """(values, indices) of the k largest (or smallest) along dim, as torch.topk; NaN
    counts as the largest; always in sorted order here."""
    d = _wrap_dim(dim, input.ndim)
    size = input.shape[d] if input.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError("selected index k out of range")
    values, indices = _sort_parts(input, d, descending=largest)
    if input.ndim:
        values, indices = (np.take(a, np.arange(k), axis=d) for a in (values, indices))
    return topk_result(_picked(input, d, values, indices), _make(indices))


def unique(input, sorted=True, return_inverse=False, return_counts=False,  # noqa: A002
           dim=None):
    """The distinct elements (or with dim, slices along dim), sorted (torch's CPU kernel
    sorts even with sorted=False), with the int64 inverse and counts if asked, as torch."""
    data = input.data
    if dim is not None:
        d = _wrap_dim(dim, data.ndim)
        values, inverse, counts = np.unique(data, axis=d, return_inverse=True,
                                            return_counts=True)
        inverse = inverse.reshape(-1)  # one entry per slice along dim
    else:
        values, inverse, counts = np.unique(data, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(data.shape)
    out = [_make(values)]
    if return_inverse:
        out.append(_make(inverse.astype(np.int64)))
    if return_counts:
        out.append(_make(counts.astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


def bincount(input, weights=None, minlength=0):  # noqa: A002 - torch's argument name
    """How often each value 0..max occurs in a 1-D non-negative integer tensor (summing
    weights instead of 1 if given), as torch.bincount."""
    if input.dtype.kind not in "iu":
        raise NotImplementedError(f"\"bincount_cpu\" not implemented for '{_name(input.dtype)}'")
    if input.ndim != 1 or (input.data.size and input.data.min() < 0):
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    if weights is None:
        return _make(np.bincount(input.data, minlength=minlength).astype(np.int64))
    if weights.ndim != 1 or weights.shape != input.shape:
        raise RuntimeError("weights should be 1-d and have the same length as input")
    # torch keeps float32 weights float32; every other dtype sums in float64
    dtype = np.float32 if weights.dtype == np.float32 else np.float64
    counts = np.bincount(input.data, weights=weights.data.astype(np.float64),
                         minlength=minlength)
    return _make(counts.astype(dtype))


def _side(right, side) -> str:
    """'left' or 'right' from searchsorted's right flag and side string, as torch checks."""
    if side is not None:
        if side not in ("left", "right"):
            raise RuntimeError(
                f"torch.searchsorted(): side can only be 'left' or 'right' but got {side}")
        if right and side == "left":
            raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, "
                               "got side of left while right was True")
        return side
    return "right" if right else "left"


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False,  # noqa: A002
                 side=None, sorter=None):
    """Where each value of input would be inserted into sorted_sequence (1-D, or sorted along
    its last dim with leading dims matching input's) to keep it sorted, as torch."""
    how = _side(right, side)
    seq = sorted_sequence.data
    if sorter is not None:  # sorter gives the order that sorts an unsorted sequence
        seq = np.take_along_axis(seq, sorter.data, axis=-1)
    values = input.data if isinstance(input, Tensor) else np.asarray(input)
    dtype = np.int32 if out_int32 else np.int64
    if seq.ndim == 1:
        return _make(np.searchsorted(seq, values, side=how).astype(dtype))
    if values.shape[:-1] != seq.shape[:-1]:
        raise RuntimeError(
            "torch.searchsorted(): boundaries tensor should be 1 dimension or the first N-1 "
            "dimensions of boundaries tensor and input value tensor must match, but we got "
            f"boundaries tensor {list(seq.shape)} and input value tensor {list(values.shape)}")
    rows_seq = seq.reshape(-1, seq.shape[-1])
    rows_val = values.reshape(-1, values.shape[-1])
    out = np.stack([np.searchsorted(s, v, side=how) for s, v in zip(rows_seq, rows_val)])
    return _make(out.reshape(values.shape).astype(dtype))


def bucketize(input, boundaries, *, out_int32=False, right=False):  # noqa: A002
    """The bucket of each value among 1-D boundaries (right=False: b[i-1] < x <= b[i]),
    as torch.bucketize."""
    if boundaries.ndim != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({boundaries.ndim})")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


# -- random sampling (disttrain's generator: reproducible under manual_seed) ---------------
def randperm(n, *, dtype=np.int64, requires_grad=False):
    """A random permutation of 0..n-1, int64 unless dtype, as torch.randperm."""
    if n < 0:
        raise RuntimeError(f"Trying to create tensor with negative dimension {n}: [{n}]")
    out = _make(random.generator().permutation(n).astype(dtype))
    return out.requires_grad_(True) if requires_grad else out


def bernoulli(input, p=None):  # noqa: A002 - torch's argument name
    """1 with probability input (or p, a number), else 0, in input's dtype, as torch.bernoulli."""
    if input.dtype.kind != "f":
        raise NotImplementedError(
            f"\"bernoulli_tensor_cpu_p_\" not implemented for '{_name(input.dtype)}'")
    if p is not None:
        if not 0 <= p <= 1:
            raise RuntimeError(f"bernoulli_ expects p to be in [0, 1], but got p={p:g}")
        probs = np.full(input.shape, p, dtype=np.float64)
    else:
        probs = input.data.astype(np.float64)
        if not np.all((probs >= 0) & (probs <= 1)):
            raise RuntimeError(
                "Expected p_in >= 0 && p_in <= 1 to be true, but got false.  (Could this error "
                "message be improved?  If so, please report an enhancement request to PyTorch.)")
    draws = random.generator().random(input.shape)
    return _make((draws < probs).astype(input.dtype))


def _check_multinomial(probs, num_samples, replacement):
    """torch.multinomial's argument checks, in its order and words."""
    if probs.dtype.kind != "f":
        raise RuntimeError("multinomial only supports floating-point dtypes for input, got: "
                           f"{_name(probs.dtype)}")
    if probs.ndim not in (1, 2):
        raise RuntimeError("prob_dist must be 1 or 2 dim")
    if num_samples <= 0:
        raise RuntimeError("cannot sample n_sample <= 0 samples")
    if not replacement and num_samples > probs.shape[-1]:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without "
                           "replacement")
    if not np.all(np.isfinite(probs) & (probs >= 0)):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    if np.any(probs.sum(axis=-1) <= 0):
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")


def multinomial(input, num_samples, replacement=False):  # noqa: A002
    """num_samples category indices per row of (unnormalised) probabilities, int64, with or
    without replacement, as torch.multinomial."""
    probs = input.data
    _check_multinomial(probs, num_samples, replacement)
    rng = random.generator()
    rows = np.atleast_2d(probs).astype(np.float64)
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for r, row in enumerate(rows):
        if replacement:
            out[r] = rng.choice(row.size, size=num_samples, p=row / row.sum())
        else:
            # exponential race (Gumbel top-k): the num_samples smallest E_i / p_i are an
            # ordered draw without replacement; zero-probability categories come last, as
            # torch draws them once the positive ones are used up
            with np.errstate(divide="ignore"):
                keys = rng.exponential(size=row.size) / row
            out[r] = np.argsort(keys, kind="stable")[:num_samples]
    return _make(out if probs.ndim == 2 else out[0])


def normal(mean=0.0, std=1.0, size=None, *, dtype=None, requires_grad=False):
    """Normal samples of mean and std (tensors broadcast, or numbers with size), as
    torch.normal's overloads; float32 unless a tensor argument or dtype says otherwise."""
    tensors = [t for t in (mean, std) if isinstance(t, Tensor)]
    for t in tensors:
        if t.dtype.kind != "f":
            raise NotImplementedError(
                f"\"normal_kernel_cpu\" not implemented for '{_name(t.dtype)}'")
    m, s = _data(mean), _data(std)
    if isinstance(std, Tensor):
        if np.any(s < 0):
            raise RuntimeError("normal expects all elements of std >= 0.0")
    elif s < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {s:g}")
    if tensors:
        out_dtype = np.result_type(*(t.dtype for t in tensors))
        try:
            shape = np.broadcast_shapes(np.shape(m), np.shape(s))
        except ValueError:
            from .shape_errors import broadcast
            raise RuntimeError(broadcast(np.shape(m), np.shape(s))) from None
    else:
        out_dtype, shape = np.dtype(_or(dtype, _default_dtype)), tuple(_shape(tuple(size or ())))
    draws = random.generator().standard_normal(shape)
    out = _make((m + s * draws).astype(out_dtype))
    return out.requires_grad_(True) if requires_grad else out


# -- dtype and metadata methods --------------------------------------------------------------
_TENSOR_TYPES = {f"torch.{name}Tensor": np.dtype(dt) for dt, name in TORCH_DTYPE_NAMES.items()}


def _cast_to(x, dtype):
    """x in dtype: itself if already so; a float target stays in the graph (ops.to), any
    other is a plain tensor, as torch's integer and bool results never require grad."""
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    if dtype.kind == "f":
        return _to(x, dtype)
    return _make(x.data.astype(dtype))


def long(x):
    """x as int64 (self if it is), as Tensor.long."""
    return _cast_to(x, np.int64)


def int_(x):
    """x as int32 (self if it is), as Tensor.int."""
    return _cast_to(x, np.int32)


def bool_(x):
    """x as bool (nonzero is True; self if it is), as Tensor.bool."""
    return _cast_to(x, np.bool_)


def type_(x, dtype=None):
    """With no dtype, torch's type string ('torch.FloatTensor'); else x cast to dtype, which
    may be a numpy dtype or such a string, as Tensor.type."""
    if dtype is None:
        return f"torch.{_name(x.dtype)}Tensor"
    if isinstance(dtype, str):
        if dtype not in _TENSOR_TYPES:
            raise ValueError(f"invalid type: '{dtype}'")
        dtype = _TENSOR_TYPES[dtype]
    return _cast_to(x, dtype)


def type_as(x, other):
    """x cast to other's dtype, as Tensor.type_as."""
    return _cast_to(x, other.dtype)


def _new_like(fill):
    def new(x, *size, dtype=None, requires_grad=False):
        out = _make(fill(_shape(size), _or(dtype, x.dtype)))
        return out.requires_grad_(True) if requires_grad else out
    return new


new_zeros = _new_like(np.zeros)
new_ones = _new_like(np.ones)
new_empty = _new_like(np.zeros)  # zeros, as disttrain.empty: no uninitialised memory
new_zeros.__doc__ = "Zeros of size in x's dtype (unless dtype), as Tensor.new_zeros."
new_ones.__doc__ = "Ones of size in x's dtype (unless dtype), as Tensor.new_ones."
new_empty.__doc__ = "A tensor of size in x's dtype; zeros here, as Tensor.new_empty."


def new_full(x, size, fill_value, *, dtype=None, requires_grad=False):
    """fill_value in size, x's dtype unless dtype (not the value's kind), as Tensor.new_full."""
    out = _make(np.full(tuple(size), fill_value, dtype=_or(dtype, x.dtype)))
    return out.requires_grad_(True) if requires_grad else out


def new_tensor(x, data, *, dtype=None, requires_grad=False):
    """A copy of data in x's dtype unless dtype, as Tensor.new_tensor."""
    out = _make(np.array(_data(data), dtype=_or(dtype, x.dtype)))
    return out.requires_grad_(True) if requires_grad else out


def is_contiguous(x, memory_format=None):
    """Whether x's elements lie in row-major order without gaps (a transpose does not)."""
    return bool(x.data.flags.c_contiguous)


def contiguous(x, memory_format=None):
    """x itself if contiguous, else a row-major copy in the graph, as Tensor.contiguous."""
    return x if is_contiguous(x) else clone(x)


def is_floating_point(x):
    """Whether x's dtype is a floating point one, as torch.is_floating_point."""
    return x.dtype.kind == "f"


def element_size(x):
    """Bytes per element, as Tensor.element_size."""
    return x.dtype.itemsize


def ndimension(x):
    """The number of dims, as Tensor.ndimension (an alias of dim())."""
    return x.ndim


def nelement(x):
    """The number of elements, as Tensor.nelement (an alias of numel())."""
    return x.data.size


def is_nonzero(x):
    """The truth of a one-element tensor, as torch.is_nonzero."""
    if x.data.size != 1:
        if x.data.size == 0:
            raise RuntimeError("Boolean value of Tensor with no values is ambiguous")
        raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
    return bool(x.data)


def _invert(x):
    """~x: torch's operator refuses floats with its own TypeError before bitwise_not runs."""
    if x.dtype.kind not in "biu":
        raise TypeError("~ (operator.invert) is only implemented on integer and Boolean-type "
                        "tensors")
    return bitwise_not(x)


# torch's aliases of the comparisons
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne

__all__ = [
    "eq", "ne", "lt", "le", "gt", "ge", "greater", "greater_equal", "less", "less_equal",
    "not_equal", "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and",
    "bitwise_or", "bitwise_xor", "bitwise_not", "any", "all", "isclose", "allclose", "equal",
    "count_nonzero", "nonzero", "argwhere", "sort", "argsort", "msort", "topk", "unique",
    "bincount", "searchsorted", "bucketize", "randperm", "bernoulli", "multinomial", "normal",
    "is_floating_point", "is_nonzero",
]

# Methods: the same functions, bound as PyTorch names them.
_METHODS = {
    "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge, "greater": gt,
    "greater_equal": ge, "less": lt, "less_equal": le, "not_equal": ne,
    "logical_and": logical_and, "logical_or": logical_or, "logical_xor": logical_xor,
    "logical_not": logical_not, "bitwise_and": bitwise_and, "bitwise_or": bitwise_or,
    "bitwise_xor": bitwise_xor, "bitwise_not": bitwise_not,
    "__and__": bitwise_and, "__or__": bitwise_or, "__xor__": bitwise_xor,
    "__rand__": lambda a, b: bitwise_and(b, a), "__ror__": lambda a, b: bitwise_or(b, a),
    "__rxor__": lambda a, b: bitwise_xor(b, a), "__invert__": _invert,
    "any": any, "all": all, "isclose": isclose, "allclose": allclose, "equal": equal,
    "count_nonzero": count_nonzero, "nonzero": nonzero, "argwhere": argwhere, "sort": sort,
    "argsort": argsort, "msort": msort, "topk": topk, "unique": unique, "bincount": bincount,
    "bernoulli": bernoulli, "multinomial": multinomial,
    "long": long, "int": int_, "bool": bool_, "type": type_, "type_as": type_as,
    "new_zeros": new_zeros, "new_ones": new_ones, "new_empty": new_empty, "new_full": new_full,
    "new_tensor": new_tensor, "contiguous": contiguous, "is_contiguous": is_contiguous,
    "is_floating_point": is_floating_point, "element_size": element_size,
    "ndimension": ndimension, "nelement": nelement, "is_nonzero": is_nonzero,
}
for _name_, _fn in _METHODS.items():
    setattr(Tensor, _name_, _fn)
