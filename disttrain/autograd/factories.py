"""Tensor constructors with torch's names: zeros, ones, randn, arange..."""

from __future__ import annotations

import builtins

import numpy as np

from . import random
from .tensor import TORCH_DTYPE_NAMES, Tensor, _default_dtype


def _shape(size) -> tuple:
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size


def _new(array: np.ndarray, requires_grad: bool) -> Tensor:
    t = Tensor._make(array)
    return t.requires_grad_(True) if requires_grad else t


def zeros(*size, dtype=None, requires_grad=False) -> Tensor:
    """Tensor of zeros; size as ints or one sequence, float32 unless dtype, as torch.zeros."""
    return _new(np.zeros(_shape(size), dtype=dtype or _default_dtype), requires_grad)


def ones(*size, dtype=None, requires_grad=False) -> Tensor:
    """Tensor of ones; size as ints or one sequence, float32 unless dtype, as torch.ones."""
    return _new(np.ones(_shape(size), dtype=dtype or _default_dtype), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """Tensor of size filled with fill_value; no dtype: the value's kind decides, as torch.full."""
    if dtype is None:  # as torch: the fill value's kind decides (int64, bool, float32)
        kind = np.asarray(fill_value).dtype.kind
        dtype = np.int64 if kind in "iu" else np.bool_ if kind == "b" else _default_dtype
    return _new(np.full(tuple(size), fill_value, dtype=dtype), requires_grad)


def empty(*size, dtype=None, requires_grad=False) -> Tensor:
    """Tensor of the given size; unlike torch.empty its values are zeros, not uninitialised."""
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def zeros_like(x, dtype=None, requires_grad=False) -> Tensor:
    """Zeros with x's shape and, unless dtype is given, x's dtype, as torch.zeros_like."""
    return _new(np.zeros_like(x.data, dtype=dtype), requires_grad)


def ones_like(x, dtype=None, requires_grad=False) -> Tensor:
    """Ones with x's shape and, unless dtype is given, x's dtype, as torch.ones_like."""
    return _new(np.ones_like(x.data, dtype=dtype), requires_grad)


def randn(*size, dtype=None, requires_grad=False) -> Tensor:
    """Standard normal samples from the generator manual_seed seeds, as torch.randn."""
    array = random.generator().standard_normal(_shape(size), dtype=np.float64)
    return _new(array.astype(dtype or _default_dtype), requires_grad)


def rand(*size, dtype=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) from the generator manual_seed seeds, as torch.rand."""
    array = random.generator().random(_shape(size), dtype=np.float64)
    return _new(array.astype(dtype or _default_dtype), requires_grad)


def randint(low, high, size, dtype=np.int64) -> Tensor:
    """Integers uniform in [low, high) of shape size (a sequence), int64, as torch.randint."""
    return Tensor._make(random.generator().integers(low, high, size=tuple(size), dtype=dtype))


def arange(start, end=None, step=1, dtype=None, requires_grad=False) -> Tensor:
    """start to end (exclusive) by step, as torch.arange: arange(n) is 0..n-1; floats: float32."""
    if end is None:
        start, end = 0, start
    array = np.arange(start, end, step)
    if dtype is None and array.dtype.kind == "f":
        array = array.astype(_default_dtype)
    return _new(array.astype(dtype) if dtype else array, requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing array's memory, as torch.from_numpy."""
    return Tensor._make(array)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    """steps values from start to end inclusive, float32 unless dtype, as torch.linspace."""
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    dtype = np.dtype(dtype or _default_dtype)
    work = dtype if dtype.kind == "f" else np.dtype(np.float64)
    lo, hi = (np.asarray(v, dtype=dtype).astype(work) for v in (start, end))
    step = (hi - lo) / work.type(builtins.max(steps - 1, 1))
    i = np.arange(steps).astype(work)
    # torch's kernel, in the result's precision: the first half counts up from start, the
    # rest back from end, so both ends are exact (one value, steps == 1, is start)
    half = builtins.max(steps // 2, 1)
    values = np.where(i < half, lo + step * i, hi - step * (steps - 1 - i))
    return _new(values.astype(dtype), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    """The n x m (m defaults to n) identity matrix, float32 unless dtype, as torch.eye."""
    m = n if m is None else m
    for name, size in (("n", n), ("m", m)):
        if size < 0:
            raise RuntimeError(f"{name} must be greater or equal to 0, got {size}")
    return _new(np.eye(n, m, dtype=dtype or _default_dtype), requires_grad)


def full_like(x, fill_value, dtype=None, requires_grad=False):
    """fill_value in x's shape and, unless dtype is given, x's dtype, as torch.full_like."""
    return _new(np.full_like(x.data, fill_value, dtype=dtype), requires_grad)


def _random_like(draw, kernel: str):
    def like(x, dtype=None, requires_grad=False):
        dtype = np.dtype(dtype or x.dtype)
        if dtype.kind != "f":
            raise NotImplementedError(f'"{kernel}" not implemented for '
                                      f"'{TORCH_DTYPE_NAMES[dtype.name]}'")
        return draw(*x.shape, dtype=dtype, requires_grad=requires_grad)
    return like


# samples from disttrain's generator (manual_seed), in x's shape and dtype
randn_like = _random_like(randn, "normal_kernel_cpu")
rand_like = _random_like(rand, "check_uniform_bounds")


def is_tensor(obj) -> bool:
    """Whether obj is a disttrain Tensor, as torch.is_tensor."""
    return isinstance(obj, Tensor)


def numel(x) -> int:
    """The number of elements of x, as torch.numel."""
    return x.numel()
