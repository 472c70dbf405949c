"""Gradient clipping and parameter <-> vector conversion, as torch.nn.utils.

The arithmetic is torch's step by step (a norm per gradient, then the norm of those norms;
clip_coef = max_norm / (total_norm + 1e-6) clamped to 1, in the total norm's dtype), so
results agree with torch's to float rounding. `foreach` is accepted for torch's signature
and ignored: torch allows either path on CPU and numpy has only one.
"""

from __future__ import annotations

import types
import warnings

import numpy as np

from ..autograd.grad_mode import no_grad
from ..autograd.ops import cat, view
from ..autograd.tensor import Tensor, tensor

__all__ = [
    "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm",
    "parameters_to_vector", "vector_to_parameters",
]


def _as_list(tensors) -> list:
    """A single Tensor or an iterable of them (a generator included), as a list."""
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _vector_norm(array: np.ndarray, norm_type: float) -> np.ndarray:
    """torch.linalg.vector_norm of all elements, as a 0-d array of the input's dtype.

    Summed in float64 and rounded once, so a float32 result is within an ulp of the exact
    norm (torch's float32 sums drift by up to ~1e-6 relative).
    """
    _check_has_identity(array, norm_type)
    # silent, as torch: a float32 overflow is inf; a zero element makes a negative norm 0
    with np.errstate(over="ignore", divide="ignore"):
        return np.asarray(np.linalg.norm(array.astype(np.float64).ravel(), norm_type),
                          dtype=array.dtype)


def _check_has_identity(array: np.ndarray, norm_type: float) -> None:
    """torch's error for a max-like norm of no elements. Its per-gradient norms are
    _foreach_norm's, which names itself for inf and defers to linalg.vector_norm else."""
    if array.size or not (norm_type < 0 or norm_type == float("inf")):
        return
    if norm_type == float("inf"):
        raise RuntimeError(
            "_foreach_norm cannot compute the infinity norm on an empty tensor because the "
            "operation does not have an identity"
        )
    raise RuntimeError(
        f"linalg.vector_norm cannot compute the {norm_type:g} norm on an empty tensor "
        "because the operation does not have an identity"
    )


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None) -> Tensor:
    """The norm of all tensors as if concatenated into one vector, as torch's."""
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return tensor(0.0)
    # torch.stack of the per-tensor norms promotes mixed float32/float64 to float64
    norms = [_vector_norm(t.data, norm_type) for t in tensors]
    total = _vector_norm(np.stack(norms), norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    return Tensor._make(total)


def _clip_coef(max_norm: float, total_norm) -> np.ndarray:
    """min(max_norm / (total_norm + 1e-6), 1) in total_norm's dtype, rounded as torch rounds.

    torch evaluates `max_norm / t` as `t.reciprocal() * max_norm` (Tensor.__rtruediv__),
    each step in the tensor's dtype; a NaN norm gives a NaN coefficient, as torch.clamp.
    """
    total = np.asarray(total_norm)
    scalar = total.dtype.type
    coef = (scalar(1.0) / (total + scalar(1e-6))) * scalar(max_norm)
    return np.minimum(coef, scalar(1.0))


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None) -> None:
    """Scale every .grad in place by min(max_norm / (total_norm + 1e-6), 1), as torch's."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    max_norm = float(max_norm)
    if not grads:
        return
    coef = _clip_coef(max_norm, total_norm)
    # a non-finite norm scales by 0 or NaN; torch does so without a warning
    with no_grad(), np.errstate(invalid="ignore"):
        for grad in grads:
            # mul_ writes into the grad's own array: under DistributedDataParallel it is a
            # view into the bucket buffer, which must see the clipped values
            grad.mul_(coef.astype(grad.dtype))


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None) -> Tensor:
    """Scale the gradients in place so that their total norm is at most max_norm; return
    the total norm before clipping, as torch.nn.utils.clip_grad_norm_."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)  # read twice below, so a generator must not run dry
        if is_generator and not parameters:
            warnings.warn(
                "`parameters` is an empty generator, no gradient clipping will occur.",
                stacklevel=2,
            )
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_value_(parameters, clip_value, foreach=None) -> None:
    """Clamp every .grad in place to [-clip_value, clip_value], as torch's."""
    clip_value = float(clip_value)
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    with no_grad():
        for grad in grads:
            # copy_ keeps the grad's array (a bucket view under DDP) and bumps its version
            grad.copy_(np.clip(grad.data, -clip_value, clip_value))


def parameters_to_vector(parameters) -> Tensor:
    """All parameters flattened and concatenated into one differentiable 1-D tensor."""
    flat = [view(param, -1) for param in parameters]
    if not flat:
        # torch.cat's own text and type (disttrain's cat raises RuntimeError here)
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    return cat(flat)


def vector_to_parameters(vec, parameters) -> None:
    """Point each parameter's data at its slice of vec, as torch's: they share vec's memory."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {_typename(vec)}")
    pointer = 0
    for param in parameters:
        num_param = param.numel()
        # view gives torch's error text when vec is too short for this parameter
        param.data = view(vec[pointer : pointer + num_param], param.shape).data
        pointer += num_param


def _typename(obj) -> str:
    """torch.typename of a non-Tensor: its fully qualified type name, e.g. numpy.ndarray."""
    module = getattr(obj, "__module__", "") or ""
    if hasattr(obj, "__qualname__"):
        qualname = obj.__qualname__
    elif hasattr(obj, "__name__"):
        qualname = obj.__name__
    else:
        module = obj.__class__.__module__ or ""
        qualname = obj.__class__.__qualname__
    return qualname if module in {"", "builtins"} else f"{module}.{qualname}"
