"""Tensor constructors with torch's names: zeros, ones, randn, arange..."""

from __future__ import annotations

import numpy as np

from . import random
from .tensor import Tensor, _default_dtype


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
