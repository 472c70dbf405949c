"""The autograd engine: Tensor, the gradient rules, backward, grad mode, gradcheck.
ops_compare (comparisons, sorting, logic, dtype methods, sampling) and ops_shape (more
differentiable ops: indexing, shapes, reductions, elementwise math, einsum) bind their
Tensor methods when imported, as ops does."""

from . import ops, ops_compare, ops_shape
from .engine import queue_callback, sum_to
from .factories import (
    arange,
    empty,
    eye,
    from_numpy,
    full,
    full_like,
    is_tensor,
    linspace,
    numel,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    zeros,
    zeros_like,
)
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import gradcheck
from .ops import (
    abs,
    amax,
    amin,
    argmax,
    argmin,
    bmm,
    cat,
    ceil,
    chunk,
    clamp,
    clip,
    cos,
    cumsum,
    dot,
    exp,
    expm1,
    floor,
    gather,
    isfinite,
    isinf,
    isnan,
    log,
    log1p,
    log_softmax,
    logsumexp,
    masked_fill,
    matmul,
    maximum,
    mean,
    minimum,
    mm,
    norm,
    outer,
    reciprocal,
    relu,
    rsqrt,
    sigmoid,
    sign,
    sin,
    softmax,
    split,
    sqrt,
    square,
    stack,
    std,
    tanh,
    tril,
    triu,
    var,
    where,
)
from .ops_compare import *  # noqa: F403 - its __all__, added to this one below
from .ops_shape import *  # noqa: F403 - its __all__, added to this one below
from .random import get_rng_state, manual_seed, set_rng_state
from .tensor import RemovableHandle, Tensor, bool_, float32, float64, int64, tensor

__all__ = [
    "Tensor", "tensor", "RemovableHandle", "float32", "float64", "int64", "bool_",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "gradcheck",
    "queue_callback", "sum_to", "manual_seed", "get_rng_state", "set_rng_state", "ops",
    "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "randn", "rand", "randint",
    "arange", "from_numpy", "abs", "amax", "amin", "argmax", "argmin", "cat", "clamp", "exp",
    "log", "log_softmax", "matmul", "maximum", "mean", "minimum", "relu", "sigmoid", "softmax",
    "sqrt", "stack", "tanh", "var", "where",
    "bmm", "ceil", "chunk", "clip", "cos", "cumsum", "dot", "expm1", "eye", "floor",
    "full_like", "gather", "is_tensor", "isfinite", "isinf", "isnan", "linspace", "log1p",
    "logsumexp", "masked_fill", "mm", "norm", "numel", "outer", "rand_like", "randn_like",
    "reciprocal", "rsqrt", "sign", "sin", "split", "square", "std", "tril", "triu",
]
__all__ += ops_compare.__all__ + ops_shape.__all__
