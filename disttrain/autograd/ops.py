"""Every tensor operation, written once; Tensor's methods and operators are these functions.

Only the calls to `record` with a row of RULES are differentiable primitives; everything
else (mean, var, softmax's callers, layer_norm, losses...) is composed from them.
"""

from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from . import kernels, shape_errors
from .engine import record
from .rules import RULES
from .tensor import TORCH_DTYPE_NAMES, Tensor, _default_dtype, _index_key

R = RULES
values_indices = namedtuple("values_indices", ["values", "indices"])


def _data(x):
    """The array behind x; numpy scalars become Python scalars so float32 stays float32."""
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, np.generic):
        return x.item()
    return x


# -- arithmetic (broadcasting; the engine sums gradients back to each input's shape) ---
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _binary(rule, fn, a, b):
    """Record fn(a, b); the result dtype follows torch where numpy 2 would differ."""
    # A numpy scalar operand becomes a Python one: saved for the vjp, it would turn float32
    # gradients float64.
    if isinstance(a, Tensor):
        x = a.data
    else:
        x = a = _data(a)
    if isinstance(b, Tensor):
        y = b.data
    else:
        y = b = _data(b)
    try:
        out = fn(x, y)
    except ValueError:
        # numpy's gufunc/broadcast text -> torch's, which names the sizes the way users search
        why = shape_errors.matmul if fn is np.matmul else shape_errors.broadcast
        raise RuntimeError(why(np.shape(x), np.shape(y))) from None
    if out.dtype is _F64:
        # numpy 2 gives float64 for float32 with an integer tensor, with a 0-d float64
        # tensor, and for int / int; torch gives float32 there. Compute in torch's dtype,
        # casting operands through a cast node so each gets its gradient in its own dtype.
        target = _F64 if _keeps_float64(a, b) else _F32
        a2, b2 = _cast_operand(a, target), _cast_operand(b, target)
        if a2 is not a or b2 is not b:
            a, b = a2, b2
            out = fn(_data(a), _data(b))
    return record(rule, out, (a, b))


def _keeps_float64(a, b) -> bool:
    """Whether torch's result is float64: the floats of the highest-ranked operands decide."""
    floats = [t for t in (a, b) if isinstance(t, Tensor) and t.dtype.kind == "f"]
    dimensioned = [t for t in floats if t.ndim]
    return any(t.dtype == _F64 for t in (dimensioned or floats))


def _cast_operand(x, dtype):
    return to(x, dtype) if isinstance(x, Tensor) and x.dtype != dtype else x


def add(a, b):
    """a + b with broadcasting, as torch.add (no alpha argument)."""
    return _binary(R["Add"], np.add, a, b)


def sub(a, b):
    """a - b with broadcasting, as torch.sub (no alpha argument)."""
    return _binary(R["Sub"], np.subtract, a, b)


def mul(a, b):
    """Elementwise a * b with broadcasting, as torch.mul."""
    return _binary(R["Mul"], np.multiply, a, b)


def div(a, b):
    """True division a / b with broadcasting; int / int gives float32, as torch.div."""
    return _binary(R["Div"], np.true_divide, a, b)


def neg(a):
    """Elementwise -a."""
    return record(R["Neg"], -a.data, (a,))


def pow(a, b):  # noqa: A001 - torch.pow
    """a ** b elementwise with broadcasting; either may be a number, as torch.pow."""
    return _binary(R["Pow"], np.power, a, b)


def matmul(a, b):
    """Matrix product a @ b with torch's (and numpy's) rules for 1-D and batched inputs."""
    return _binary(R["MatMul"], np.matmul, a, b)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, as torch.nn.functional.linear, in one node."""
    try:
        out = x.data @ weight.data.T
    except ValueError:
        raise RuntimeError(shape_errors.matmul(x.shape, weight.shape[::-1])) from None
    if bias is not None:
        out += bias.data
    return record(R["Addmm"], out, (x, weight, bias))


# torch's C++ names for dtypes, as its mm and masked_fill errors print them
_CPP_DTYPE_NAMES = {"float32": "float", "float64": "double", "int64": "long int", "int32": "int",
                    "int16": "short int", "int8": "signed char", "uint8": "unsigned char",
                    "bool": "bool"}


def mm(a, b):
    """Product of two matrices, with torch.mm's checks: no broadcasting, 1-D or mixed dtypes."""
    if a.ndim != 2:
        raise RuntimeError("self must be a matrix")
    if b.ndim != 2:
        raise RuntimeError("mat2 must be a matrix")
    if a.shape[1] != b.shape[0]:
        raise RuntimeError(shape_errors.matmul(a.shape, b.shape))
    if a.dtype != b.dtype:
        raise RuntimeError("expected m1 and m2 to have the same dtype, but got: "
                           f"{_CPP_DTYPE_NAMES[a.dtype.name]} != {_CPP_DTYPE_NAMES[b.dtype.name]}")
    return matmul(a, b)


def bmm(a, b):
    """Batched product of (B, n, m) and (B, m, p), no broadcasting, as torch.bmm."""
    if a.ndim != 3:
        raise RuntimeError("batch1 must be a 3D tensor")
    if b.ndim != 3:
        raise RuntimeError("batch2 must be a 3D tensor")
    if (a.shape[0], a.shape[2]) != b.shape[:2]:
        raise RuntimeError("Expected size for first two dimensions of batch2 tensor to be: "
                           f"[{a.shape[0]}, {a.shape[2]}] but got: [{b.shape[0]}, {b.shape[1]}].")
    if a.dtype != b.dtype:
        raise RuntimeError(f"expected scalar type {TORCH_DTYPE_NAMES[a.dtype.name]} but found "
                           f"{TORCH_DTYPE_NAMES[b.dtype.name]}")
    return matmul(a, b)


def dot(a, b):
    """Inner product of two 1-D tensors of one dtype, as torch.dot."""
    if a.ndim != 1 or b.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {a.ndim}D and {b.ndim}D tensors")
    if a.dtype != b.dtype:
        raise RuntimeError("dot : expected both vectors to have same dtype, but found "
                           f"{TORCH_DTYPE_NAMES[a.dtype.name]} and "
                           f"{TORCH_DTYPE_NAMES[b.dtype.name]}")
    return matmul(a, b)


def outer(a, b):
    """a[i] * b[j] for 1-D a and b, promoting dtypes as mul does, as torch.outer."""
    for name, v in (("self", a), ("vec2", b)):
        if v.ndim != 1:
            raise RuntimeError(f"outer: Expected 1-D argument {name}, but got {v.ndim}-D")
    return mul(reshape(a, (-1, 1)), b)


# -- elementwise functions ----------------------------------------------------------------
def exp(x):
    """Elementwise e**x."""
    return record(R["Exp"], np.exp(x.data), (x,))


def log(x):
    """Elementwise natural logarithm."""
    return record(R["Log"], np.log(x.data), (x,))


def sqrt(x):
    """Elementwise square root."""
    return record(R["Sqrt"], np.sqrt(x.data), (x,))


def abs(x):  # noqa: A001 - torch.abs
    """Elementwise |x|; the gradient at 0 is 0, as in torch."""
    return record(R["Abs"], np.abs(x.data), (x,))


def tanh(x):
    """Elementwise hyperbolic tangent."""
    return record(R["Tanh"], np.tanh(x.data), (x,))


def sigmoid(x):
    """Elementwise 1 / (1 + e**-x), without overflow for large |x|."""
    # The two-branch form never overflows exp for large |x|.
    return record(R["Sigmoid"], kernels.sigmoid(x.data), (x,))


def relu(x):
    """Elementwise max(x, 0); the gradient at 0 is 0, as in torch."""
    d = x.data
    return record(R["Relu"], np.maximum(d, 0, out=kernels.reusable_like(d, "relu")), (x,))


def hardsigmoid(x):
    """relu6(x + 3) / 6, as torch.nn.functional.hardsigmoid."""
    d = x.data
    return record(R["Hardsigmoid"], np.clip(d + 3, 0, 6) / 6, (x,))


def hardswish(x):
    """x * relu6(x + 3) / 6, as torch.nn.functional.hardswish."""
    d = x.data
    with np.errstate(invalid="ignore", over="ignore"):  # -inf * 0: NaN, as torch's
        return record(R["Hardswish"], d * np.clip(d + 3, 0, 6) / 6, (x,))


def gelu(x, approximate: str = "none"):
    """GELU, exact (erf) or approximate="tanh", as torch.nn.functional.gelu."""
    d = x.data
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (d + 0.044715 * d**3)
        out = 0.5 * d * (1 + np.tanh(inner))
    elif approximate == "none":
        out = 0.5 * d * (1 + kernels.erf(d / math.sqrt(2)))
    else:
        raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    return record(R["Gelu"], out, (x,), approximate=approximate)


def clamp(x, min=None, max=None):  # noqa: A002 - torch's argument names
    """x limited to [min, max]; either bound may be None or a tensor, as torch.clamp."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        # Tensor bounds get gradients too; where() gives torch's split (x wins at a bound).
        y = x if min is None else where(ge(x, min), x, min)
        return y if max is None else where(le(y, max), y, max)
    return record(R["Clamp"], np.clip(x.data, min, max), (x,), lo=min, hi=max)


def where(condition, a, b):
    """a where condition is true, else b, as torch.where; condition gets no gradient."""
    cond = np.asarray(_data(condition), dtype=bool)
    return record(R["Where"], np.where(cond, _data(a), _data(b)), (cond, a, b))


def maximum(a, b):
    """Elementwise maximum with broadcasting; a tie splits the gradient, as torch.maximum."""
    return _binary(R["Maximum"], np.maximum, a, b)


def minimum(a, b):
    """Elementwise minimum with broadcasting; a tie splits the gradient, as torch.minimum."""
    return _binary(R["Minimum"], np.minimum, a, b)


def _floating(x) -> np.ndarray:
    """x's array, integers and bools as float32: torch's float functions promote them so."""
    d = x.data
    return d if d.dtype.kind == "f" else d.astype(_default_dtype)


def log1p(x):
    """Elementwise log(1 + x), accurate for small x, as torch.log1p."""
    return record(R["Log1p"], np.log1p(_floating(x)), (x,))


def expm1(x):
    """Elementwise e**x - 1, accurate for small x, as torch.expm1."""
    return record(R["Expm1"], np.expm1(_floating(x)), (x,))


def sin(x):
    """Elementwise sine."""
    return record(R["Sin"], np.sin(_floating(x)), (x,))


def cos(x):
    """Elementwise cosine."""
    return record(R["Cos"], np.cos(_floating(x)), (x,))


def square(x):
    """Elementwise x ** 2; integers stay integers, as torch.square."""
    return pow(x, 2)


def rsqrt(x):
    """Elementwise 1 / sqrt(x); integers give float32, as torch.rsqrt."""
    return pow(x, -0.5)


def reciprocal(x):
    """Elementwise 1 / x; integers give float32, as torch.reciprocal."""
    return div(1.0, x)


def sign(x):
    """Elementwise -1, 0 or 1 (0 at NaN); its gradient is 0, as torch.sign's."""
    return record(R["Sign"], kernels.sgn(x.data), (x,))


def _rounding(name, fn, x):
    if x.dtype.kind != "f":  # integers are whole already: torch returns them unchanged
        return clone(x)
    return record(R[name], fn(x.data), (x,))


def floor(x):
    """Elementwise largest whole number <= x; its gradient is 0, as torch.floor's."""
    return _rounding("Floor", np.floor, x)


def ceil(x):
    """Elementwise smallest whole number >= x; its gradient is 0, as torch.ceil's."""
    return _rounding("Ceil", np.ceil, x)


def round(x, *, decimals=0):  # noqa: A001 - torch.round
    """Round half to even, to `decimals` places; its gradient is 0, as torch.round's."""
    return _rounding("Round", lambda d: np.round(d, decimals), x)


def _elementwise_test(fn):
    return lambda x: Tensor._make(np.asarray(fn(x.data)))


# bool results, never in the graph (as torch's, they do not require grad)
isnan, isinf, isfinite = (_elementwise_test(f) for f in (np.isnan, np.isinf, np.isfinite))
clip = clamp  # torch.clip is clamp's alias


# -- reductions -------------------------------------------------------------------------------
def _dims(dim, ndim):
    if dim is None:
        return None
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return tuple(d % ndim for d in dims) if ndim else ()  # torch lets dim 0/-1 name a 0-d


def _wrap_dim(dim: int, ndim: int) -> int:
    """dim counted from 0, or torch's IndexError when it names no dim (a 0-d takes 0, -1)."""
    top = builtins.max(ndim, 1)
    if not -top <= dim < top:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-top}, "
                         f"{top - 1}], but got {dim})")
    return dim % top


def _checked_dims(dim, ndim):
    """_dims, with torch's error for a dim out of range (_dims would wrap it around)."""
    for d in () if dim is None else dim if isinstance(dim, (tuple, list)) else (dim,):
        _wrap_dim(d, ndim)
    return _dims(dim, ndim)


def sum(x, dim=None, keepdim=False):  # noqa: A001 - torch.sum
    """Sum over dim (int or tuple), keeping reduced dims if keepdim, as torch.sum."""
    d = _dims(dim, x.ndim)
    out = np.sum(x.data, axis=d, keepdims=keepdim)
    return record(R["Sum"], np.asarray(out), (x,), shape=x.shape, dim=d, keepdim=keepdim)




def mean(x, dim=None, keepdim=False):
    """Mean over dim (int or tuple; None: all), keeping reduced dims if keepdim, as torch.mean."""
    if x.data.dtype.kind not in "fc":
        name = TORCH_DTYPE_NAMES.get(x.data.dtype.name, x.data.dtype.name)
        raise RuntimeError("mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {name}")
    d = _dims(dim, x.ndim)
    count = x.data.size if d is None else int(np.prod([x.shape[i] for i in d]))
    return sum(x, dim, keepdim) * (1.0 / count)


def var(x, dim=None, keepdim=False, *, unbiased=True, correction=None):
    """Variance over dim, dividing by n - 1 unless unbiased=False or correction, as torch.var."""
    d = _dims(dim, x.ndim)
    count = x.data.size if d is None else int(np.prod([x.shape[i] for i in d]))
    ddof = correction if correction is not None else (1 if unbiased else 0)
    centered = x - mean(x, d, keepdim=True)
    scale = 1.0 / (count - ddof) if count > ddof else math.inf  # torch divides by 0: nan
    return sum(centered * centered, d, keepdim) * scale


def std(x, dim=None, keepdim=False, *, unbiased=True, correction=None):
    """Square root of var, with var's dim, keepdim, unbiased and correction, as torch.std."""
    return sqrt(var(x, dim, keepdim, unbiased=unbiased, correction=correction))


def _extreme(x, dim, keepdim, reduce, arg):
    if dim is None:
        return record(R["Amax"], np.asarray(reduce(x.data)), (x,), dim=None, keepdim=False,
                      nan_is_max=True)
    if isinstance(dim, Tensor):  # torch.max(a, b) is maximum(a, b)
        return (maximum if reduce is np.max else minimum)(x, dim)
    if x.ndim == 0:
        return values_indices(reshape(x, ()), Tensor._make(np.zeros((), dtype=np.int64)))
    d = dim % x.ndim
    indices = arg(x.data, axis=d, keepdims=True)
    values = np.take_along_axis(x.data, indices, axis=d)
    if not keepdim:
        values, indices = values.squeeze(d), indices.squeeze(d)
    out = record(R["Max"], values, (x,), shape=x.shape, dim=d, keepdim=keepdim, indices=indices)
    return values_indices(out, Tensor._make(indices))


def max(x, dim=None, keepdim=False):  # noqa: A001 - torch.max
    """Max of all; with an int dim, (values, indices); with a tensor, maximum; as torch.max."""
    return _extreme(x, dim, keepdim, np.max, np.argmax)


def min(x, dim=None, keepdim=False):  # noqa: A001 - torch.min
    """Min of all; with an int dim, (values, indices); with a tensor, minimum; as torch.min."""
    return _extreme(x, dim, keepdim, np.min, np.argmin)


def amax(x, dim=None, keepdim=False):
    """Max over dim (int or tuple; None: all), no indices; tied maxima share the gradient."""
    d = _dims(dim, x.ndim)
    return record(R["Amax"], np.amax(x.data, axis=d, keepdims=keepdim), (x,), dim=d,
                  keepdim=keepdim)


def amin(x, dim=None, keepdim=False):
    """Min over dim (int or tuple; None: all), no indices; tied minima share the gradient."""
    d = _dims(dim, x.ndim)  # the Amax rule: the gradient goes where x equals the result
    return record(R["Amax"], np.amin(x.data, axis=d, keepdims=keepdim), (x,), dim=d,
                  keepdim=keepdim)


def argmax(x, dim=None, keepdim=False):
    """Index of the max over dim (None: of the flattened x); no gradient, as torch.argmax."""
    return Tensor._make(np.asarray(np.argmax(x.data, axis=dim, keepdims=keepdim)))


def argmin(x, dim=None, keepdim=False):
    """Index of the min over dim (None: of the flattened x); no gradient, as torch.argmin."""
    return Tensor._make(np.asarray(np.argmin(x.data, axis=dim, keepdims=keepdim)))


def softmax(x, dim):
    """Softmax over dim, shifted by the max so exp cannot overflow, as torch.softmax."""
    shifted = x.data - x.data.max(axis=dim, keepdims=True)
    e = np.exp(shifted)
    return record(R["Softmax"], e / e.sum(axis=dim, keepdims=True), (x,), dim=dim)


def log_softmax(x, dim):
    """log(softmax(x)) over dim, computed stably in one step, as torch.log_softmax."""
    shifted = x.data - x.data.max(axis=dim, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
    return record(R["LogSoftmax"], out, (x,), dim=dim)


def logsumexp(x, dim, keepdim=False):
    """log(sum(exp(x))) over dim (int or tuple), shifted by the max so exp cannot
    overflow; integers give float32, as torch.logsumexp."""
    d = _checked_dims(dim, x.ndim)
    data = _floating(x)
    with np.errstate(divide="ignore", invalid="ignore"):  # -inf and NaN are torch's answers
        shift = np.amax(data, axis=d, keepdims=True)
        # torch shifts an infinite max by 0: an all -inf slice then gives -inf, not NaN
        shift = np.where(np.isinf(shift), 0, shift)
        out = np.log(np.sum(np.exp(data - shift), axis=d, keepdims=True)) + shift
    if not keepdim:
        out = out.squeeze(d)
    return record(R["Logsumexp"], out, (x,), dim=d, keepdim=keepdim)


_NORMS = {
    1: lambda a, d, keep: np.sum(a, axis=d, keepdims=keep),
    2: lambda a, d, keep: np.sqrt(np.sum(a * a, axis=d, keepdims=keep)),
    math.inf: lambda a, d, keep: np.amax(a, axis=d, keepdims=keep),
    -math.inf: lambda a, d, keep: np.amin(a, axis=d, keepdims=keep),
}


def norm(x, p="fro", dim=None, keepdim=False):
    """The vector p-norm over dim (int or tuple; None: all elements), any real p (0 counts
    the nonzero entries, +-inf the largest/smallest |x|) or "fro" (the 2-norm), as
    torch.norm; the gradient where the norm is 0 is 0, as torch's."""
    if x.dtype.kind != "f":
        raise RuntimeError("linalg.vector_norm: Expected a floating point or complex tensor "
                           f"as input. Got {TORCH_DTYPE_NAMES[x.dtype.name]}")
    if p == "fro":
        if isinstance(dim, (tuple, list)) and len(dim) > 2:
            raise RuntimeError("linalg.matrix_norm: dim must be a 2-tuple. Got "
                               + " ".join(map(str, dim)))
        p = 2
    if isinstance(p, str) or not isinstance(p, (int, float, np.number)):
        raise NotImplementedError(f"disttrain's norm takes a real p or 'fro', not {p!r}")
    d = _checked_dims(dim, x.ndim)
    a = np.abs(x.data)
    if p in _NORMS:
        out = _NORMS[p](a, d, keepdim)
    elif p == 0:  # how many entries are not zero, in x's dtype
        out = np.sum(a != 0, axis=d, keepdims=keepdim).astype(x.dtype)
    else:
        with np.errstate(divide="ignore"):  # 0 ** negative p: inf, as torch's
            out = np.sum(a ** x.dtype.type(p), axis=d, keepdims=keepdim) ** x.dtype.type(1 / p)
    return record(R["LinalgVectorNorm"], np.asarray(out), (x,), p=p, dim=d, keepdim=keepdim)


def cumsum(x, dim):
    """Running sums along dim; integers and bools sum in int64, as torch.cumsum."""
    d = _wrap_dim(dim, x.ndim)
    if x.ndim == 0:  # a 0-d tensor is its own running sum
        return reshape(cumsum(reshape(x, 1), 0), ())
    return record(R["Cumsum"], np.cumsum(x.data, axis=d), (x,), dim=d)


# -- shape ----------------------------------------------------------------------------------
def _view_of(out, x):
    """Share x's version counter if out's array is a view of x's, as torch's views do, so an
    in-place change through either one is caught by the nodes that saved the other."""
    base = out.data.base
    if base is not None and (base is x.data or base is x.data.base):
        out._version = x._version
    return out


def _shape_arg(size: int, shape: tuple) -> tuple:
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    if any(n < -1 for n in shape):  # numpy would read any negative size as -1
        raise RuntimeError(shape_errors.reshape(size, shape))
    return shape


def reshape(x, *shape):
    """x in a new shape (ints or a sequence; one -1 inferred): a view where the strides
    allow, else a copy, as torch.reshape."""
    shape = _shape_arg(x.data.size, shape)
    try:
        data = x.data.reshape(shape)
    except ValueError:
        raise RuntimeError(shape_errors.reshape(x.data.size, shape)) from None
    return _view_of(record(R["View"], data, (x,), shape=x.shape), x)


def view(x, *shape):
    """x in a new shape sharing its memory, as Tensor.view: an error, as torch's, where the
    strides cannot express it (a transposed tensor flattened) instead of a silent copy."""
    shape = _shape_arg(x.data.size, shape)
    try:
        data = x.data.reshape(shape, copy=False)  # numpy refuses, rather than copies
    except ValueError:
        try:
            x.data.reshape(shape)
        except ValueError:  # no shape of that size exists at all
            raise RuntimeError(shape_errors.reshape(x.data.size, shape)) from None
        raise RuntimeError(
            "view size is not compatible with input tensor's size and stride (at least one "
            "dimension spans across two contiguous subspaces). Use .reshape(...) instead."
        ) from None
    return _view_of(record(R["View"], data, (x,), shape=x.shape), x)


def permute(x, *dims):
    """x with its dims reordered (ints or one sequence), a view, as torch.permute."""
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    dims = tuple(d % x.ndim for d in dims)
    return _view_of(record(R["Permute"], x.data.transpose(dims), (x,), axes=dims), x)


def transpose(x, dim0, dim1):
    """x with dims dim0 and dim1 swapped, a view, as torch.transpose."""
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims)


def t(x):
    """Transpose of a 2-D tensor; 0-D and 1-D tensors are returned as is, as torch.t."""
    if x.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D")
    return transpose(x, 0, 1) if x.ndim == 2 else x


def squeeze(x, dim=None):
    """Drop size-1 dims: all, or those in dim (int or tuple), as torch.squeeze."""
    # dim may be an int or a tuple (torch >= 2.0); a named dim whose size is not 1 stays.
    if dim is None:
        drop = range(x.ndim)
    else:
        drop = _dims(dim, x.ndim) if x.ndim else ()
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in drop and n == 1)))


def unsqueeze(x, dim):
    """Insert a size-1 dim at position dim (negative counts from the end), as torch.unsqueeze."""
    d = dim % (x.ndim + 1)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dims start_dim..end_dim into one; a 0-d tensor becomes 1-d, as torch.flatten."""
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = start_dim % x.ndim, end_dim % x.ndim
    return reshape(x, x.shape[:s] + (-1,) + x.shape[e + 1:])


def expand(x, *sizes):
    """x broadcast to sizes without copying; -1 keeps a dim's size, as torch.expand."""
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    lead = len(sizes) - x.ndim
    shape = tuple(x.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
    return _view_of(record(R["Expand"], np.broadcast_to(x.data, shape), (x,)), x)


def getitem(x, key):
    """x[key]: basic indexing gives a view, advanced (lists, tensors) a copy, as in torch."""
    key = _index_key(key)
    items = key if isinstance(key, tuple) else (key,)
    advanced = any(isinstance(k, (np.ndarray, list)) for k in items)
    data = x.data[key]
    if type(data) is not np.ndarray:  # x[0] of a 1-D array: a 0-d view, not a numpy scalar
        data = x.data[items + (Ellipsis,)]
    out = record(R["Index"], data, (x,), shape=x.shape, key=key, advanced=advanced)
    return out if advanced else _view_of(out, x)


def cat(tensors, dim=0):
    """Join tensors along the existing dim dim, as torch.cat."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    d = dim % tensors[0].ndim
    bounds = np.cumsum([0] + [t.shape[d] for t in tensors]).tolist()
    out = np.concatenate([t.data for t in tensors], axis=d)
    return record(R["Cat"], out, tuple(tensors), dim=d, bounds=bounds)


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dim dim, as torch.stack."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def _split_sizes(size: int, split, dim) -> list:
    """The sizes torch.split cuts a dim of `size` into: pieces of an int, or the list."""
    if isinstance(split, int):
        if split < 0:
            raise RuntimeError("split expects split_size be non-negative, but got "
                               f"split_size={split}")
        if split == 0 and size:
            raise RuntimeError("split_size can only be 0 if dimension size is 0, but got "
                               f"dimension size of {size}")
        full, rest = divmod(size, split) if split else (0, 0)
        return [split] * full + ([rest] if rest else []) or [0]  # an empty dim: one piece
    sizes = list(split)
    if builtins.min(sizes, default=0) < 0:
        raise RuntimeError("split_with_sizes expects split_sizes have only non-negative entries, "
                           f"but got split_sizes={sizes}")
    if builtins.sum(sizes) != size:
        raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {size} "
                           f"(input tensor's size at dimension {dim}), but got split_sizes={sizes}")
    return sizes


def split(x, split_size_or_sections, dim=0):
    """x cut along dim into pieces of an int size (the last may be smaller) or of the
    listed sizes: a tuple of views, as torch.split."""
    d = _wrap_dim(dim, x.ndim)
    bounds = np.cumsum([0] + _split_sizes(x.shape[d], split_size_or_sections, dim)).tolist()
    lead = (slice(None),) * d
    return tuple(getitem(x, lead + (slice(lo, hi),)) for lo, hi in zip(bounds, bounds[1:]))


def chunk(x, chunks, dim=0):
    """x cut along dim into at most `chunks` pieces of ceil(size / chunks), as torch.chunk."""
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    size = x.shape[_wrap_dim(dim, x.ndim)]
    if size == 0:  # torch keeps `chunks` empty pieces, where split would give one
        return split(x, [0] * chunks, dim)
    return split(x, -(-size // chunks), dim)


def gather(x, dim, index):
    """out[i][j] = x[index[i][j]][j] (for dim 0; likewise for any dim), as torch.gather;
    the gradient adds up over repeated indices."""
    d = _wrap_dim(dim, x.ndim)
    idx = index.data
    if idx.dtype not in (np.int32, np.int64):
        raise RuntimeError("gather(): Expected dtype int32/int64 for index")
    if idx.ndim != x.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as input tensor")
    if x.ndim == 0:
        return reshape(gather(reshape(x, 1), 0, reshape(index, 1)), ())
    _check_gather_index(x.shape, d, idx)
    key = list(np.indices(idx.shape, sparse=True))
    key[d] = idx
    return getitem(x, tuple(key))


def _check_gather_index(shape: tuple, d: int, idx: np.ndarray) -> None:
    """torch's errors for an index larger than x off dim d, or pointing outside it
    (numpy would wrap a negative index around)."""
    for i, (n_index, n_self) in enumerate(zip(idx.shape, shape)):
        if i != d and n_index > n_self:
            raise RuntimeError(f"Size does not match at dimension {i} expected index "
                               f"{list(idx.shape)} to be no larger than self {list(shape)} "
                               f"apart from dimension {d}")
    outside = (idx < 0) | (idx >= shape[d])
    if outside.any():
        raise RuntimeError(f"index {idx[outside][0]} is out of bounds for dimension {d} with "
                           f"size {shape[d]}")


def masked_fill(x, mask, value):
    """x with value where the bool mask (broadcast) is true, as torch.masked_fill: value (a
    number or a 0-d tensor, which gets the gradient of the filled places) takes x's dtype."""
    m = _data(mask)
    if m.dtype != np.bool_:
        raise RuntimeError("masked_fill_ only supports boolean masks, but got mask with dtype "
                           + _CPP_DTYPE_NAMES[m.dtype.name])
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError("masked_fill_ only supports a 0-dimensional value tensor, but "
                               f"got tensor with {value.ndim} dimension(s).")
        value = to(value, x.dtype)
    else:
        value = _as_dtype(value, x.dtype)
    try:
        np.broadcast_shapes(m.shape, x.shape)
    except ValueError:
        raise RuntimeError(shape_errors.broadcast(m.shape, x.shape)) from None
    return where(m, value, x)


def _as_dtype(value, dtype):
    """A Python number cast to dtype (1.5 into an int tensor is 1); a Python number, so
    numpy reads it weakly and x's dtype stays."""
    return np.dtype(dtype).type(value).item()


def _triangle(x, diagonal, lower: bool, name: str):
    if x.ndim < 2:
        raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions")
    rows, cols = x.shape[-2:]
    keep = np.tri(rows, cols, diagonal if lower else diagonal - 1, dtype=bool)
    # where, not a product with the mask: an inf or NaN outside the triangle gives 0
    return where(keep if lower else ~keep, x, _as_dtype(0, x.dtype))


def tril(x, diagonal=0):
    """The lower triangle of the last two dims (j - i <= diagonal), rest 0, as torch.tril."""
    return _triangle(x, diagonal, True, "tril")


def triu(x, diagonal=0):
    """The upper triangle of the last two dims (j - i >= diagonal), rest 0, as torch.triu."""
    return _triangle(x, diagonal, False, "triu")


# -- losses with a rule of their own ------------------------------------------------------
def binary_cross_entropy(x, target, weight=None):
    """-w (t log x + (1 - t) log(1 - x)) per element, each log clamped at -100, as torch."""
    xd, td = x.data, _data(target)
    with np.errstate(divide="ignore"):
        out = -(td * np.maximum(np.log(xd), -100) + (1 - td) * np.maximum(np.log1p(-xd), -100))
    if weight is not None:
        out = out * _data(weight)
    return record(R["BinaryCrossEntropy"], out.astype(xd.dtype, copy=False), (x, target, weight))


def binary_cross_entropy_with_logits(x, target, weight=None, pos_weight=None):
    """(1 - t) x - (1 + (pw - 1) t) log_sigmoid(x) per element, times w, as torch."""
    xd, td = x.data, _data(target)
    log_weight = 1 if pos_weight is None else (_data(pos_weight) - 1) * td + 1
    out = (1 - td) * xd - log_weight * kernels.log_sigmoid(xd)
    if weight is not None:
        out = out * _data(weight)
    return record(R["BinaryCrossEntropyWithLogits"], out.astype(xd.dtype, copy=False),
                  (x, target, weight, pos_weight))


# -- convolution, pooling, normalisation --------------------------------------------------
def _pair(value, name: str) -> tuple:
    """(height, width) from an int or a pair, as torch's _pair."""
    pair = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * 2
    if len(pair) != 2:
        raise RuntimeError(f"{name} must be an int or a pair of ints, but got {tuple(value)}")
    return pair


def _padding4(padding) -> tuple:
    """(top, bottom, left, right) from an int, a (height, width) pair or a 4-tuple."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(int(p) for p in padding)
    ph, pw = _pair(padding, "padding")
    return ph, ph, pw, pw


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation, NCHW input and OIHW weight, as F.conv2d: stride and dilation
    an int or a (height, width) pair, padding an int, a pair or (top, bottom, left, right).

    The bias is the kernel's (one node, as torch's ConvolutionBackward0) when its dtype
    and shape are those of the product; otherwise a broadcast add after it, as before.
    """
    dtype = x.data.dtype
    fold = bias is not None and (weight.data.dtype == dtype == bias.data.dtype
                                 and bias.shape == weight.shape[:1])
    sizes = {"stride": _pair(stride, "stride"), "padding": _padding4(padding),
             "dilation": _pair(dilation, "dilation")}
    out, cols = kernels.conv2d(x.data, weight.data, **sizes, bias=bias.data if fold else None)
    y = record(R["Conv2d"], out, (x, weight, bias if fold else None), cols=cols, **sizes,
               x_shape=x.shape)
    return y if bias is None or fold else y + reshape(bias, (1, -1, 1, 1))


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, return_indices=False):
    """2-D max pooling, as F.max_pool2d: kernel_size, stride (default: kernel_size) and
    dilation an int or a pair, padding (-inf, never chosen) an int, a pair or (top,
    bottom, left, right); with return_indices, also each winner's flat index in its plane."""
    kernel = _pair(kernel_size, "kernel_size")
    sizes = {"kernel": kernel, "stride": kernel if stride is None else _pair(stride, "stride"),
             "padding": _padding4(padding), "dilation": _pair(dilation, "dilation")}
    out, arg = kernels.max_pool2d(x.data, **sizes)
    y = record(R["MaxPool2d"], out, (x,), arg=arg, **sizes, x_shape=x.shape)
    if not return_indices:
        return y
    return y, Tensor._make(kernels.max_pool2d_indices(arg, **sizes, x_shape=x.shape))


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_extra=(0, 0),
               count_include_pad=True, divisor_override=None):
    """2-D average pooling, as F.avg_pool2d: sizes an int or a (height, width) pair, zero
    padding on both sides plus ceil_extra (ceil_mode's) at the bottom and right."""
    kernel = _pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    padding4 = (ph, ph + ceil_extra[0], pw, pw + ceil_extra[1])
    out_hw = tuple((x.shape[2 + a] + padding4[2 * a] + padding4[2 * a + 1] - kernel[a])
                   // stride[a] + 1 for a in (0, 1))
    divisor = kernels.avg_pool_divisors(x.shape, kernel, stride, (ph, pw), out_hw,
                                        count_include_pad, divisor_override)
    out = kernels.avg_pool2d(x.data, kernel, stride, padding4, divisor)
    return record(R["AvgPool2d"], out, (x,), kernel=kernel, stride=stride, padding=padding4,
                  divisor=divisor, x_shape=x.shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing normalized_shape dims (biased var), as F.layer_norm."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    dims = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    centered = x - mean(x, dims, keepdim=True)
    variance = mean(centered * centered, dims, keepdim=True)  # biased, as PyTorch
    y = centered / sqrt(variance + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


# -- comparisons (no gradient) --------------------------------------------------------------
def _compare(fn):
    return lambda a, b: Tensor._make(np.asarray(fn(_data(a), _data(b))))


eq, ne = _compare(np.equal), _compare(np.not_equal)
lt, le, gt, ge = _compare(np.less), _compare(np.less_equal), _compare(np.greater), _compare(
    np.greater_equal)


def _cast(dtype):
    return lambda x: x if x.dtype == dtype else record(
        R["View"], x.data.astype(dtype), (x,), shape=x.shape, dtype=x.dtype)


def to(x, dtype):
    """Cast to dtype; the gradient flows back cast to the input's dtype by the engine."""
    return _cast(np.dtype(dtype))(x)


def clone(x):
    """A copy of x that stays in the graph, as torch.clone."""
    return record(R["View"], x.data.copy(), (x,), shape=x.shape)


# Methods: the same functions, bound as PyTorch names them.
_METHODS = {
    "__add__": add, "__radd__": lambda a, b: add(b, a), "__sub__": sub,
    "__rsub__": lambda a, b: sub(b, a), "__mul__": mul, "__rmul__": lambda a, b: mul(b, a),
    "__truediv__": div, "__rtruediv__": lambda a, b: div(b, a), "__neg__": neg,
    "__pow__": pow, "__rpow__": lambda a, b: pow(b, a), "__matmul__": matmul,
    "__rmatmul__": lambda a, b: matmul(b, a), "__getitem__": getitem,
    "__eq__": eq, "__ne__": ne, "__lt__": lt, "__le__": le, "__gt__": gt, "__ge__": ge,
    "add": add, "sub": sub, "mul": mul, "div": div, "neg": neg, "pow": pow, "matmul": matmul,
    "exp": exp, "log": log, "sqrt": sqrt, "abs": abs, "tanh": tanh, "sigmoid": sigmoid,
    "relu": relu, "clamp": clamp, "sum": sum, "mean": mean, "var": var, "std": std,
    "max": max, "min": min, "amax": amax, "amin": amin, "argmax": argmax, "argmin": argmin,
    "softmax": softmax, "log_softmax": log_softmax, "reshape": reshape, "view": view,
    "permute": permute, "transpose": transpose, "t": t, "squeeze": squeeze,
    "unsqueeze": unsqueeze, "flatten": flatten, "expand": expand, "clone": clone, "to": to,
    "maximum": maximum, "minimum": minimum,
    "log1p": log1p, "expm1": expm1, "sin": sin, "cos": cos, "square": square, "rsqrt": rsqrt,
    "reciprocal": reciprocal, "sign": sign, "floor": floor, "ceil": ceil, "round": round,
    "isnan": isnan, "isinf": isinf, "isfinite": isfinite, "clip": clip,
    "logsumexp": logsumexp, "norm": norm, "cumsum": cumsum, "mm": mm, "bmm": bmm, "dot": dot,
    "outer": outer, "split": split, "chunk": chunk, "gather": gather,
    "masked_fill": masked_fill, "tril": tril, "triu": triu,
    "float": _cast(np.dtype(np.float32)), "double": _cast(np.dtype(np.float64)),
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
Tensor.T = property(lambda x: permute(x, tuple(reversed(range(x.ndim)))))
Tensor.mT = property(lambda x: transpose(x, -2, -1))
