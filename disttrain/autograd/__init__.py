"""The autograd engine: Tensor, the gradient rules, backward, grad mode, gradcheck."""

from . import ops
from .engine import queue_callback, sum_to
from .factories import (
    arange,
    empty,
    from_numpy,
    full,
    ones,
    ones_like,
    rand,
    randint,
    randn,
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
    cat,
    clamp,
    exp,
    log,
    log_softmax,
    matmul,
    maximum,
    mean,
    minimum,
    relu,
    sigmoid,
    softmax,
    sqrt,
    stack,
    tanh,
    var,
    where,
)
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
]
