"""Linear and Identity."""

from __future__ import annotations

import math

import numpy as np

from ..autograd.tensor import _default_dtype
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def _empty(shape, dtype) -> Parameter:
    """An uninitialised float parameter of shape (float32 unless dtype says otherwise)."""
    return Parameter(np.empty(shape, dtype=np.dtype(dtype or _default_dtype)))


def _init_weight_and_bias(weight, bias) -> None:
    # PyTorch's default for Linear and Conv: kaiming_uniform(a=sqrt(5)) gives
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight; the bias gets the same bound.
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Identity(Module):
    """Returns its input unchanged; accepts and ignores any constructor arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x @ weight.T + bias, weight of shape (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _empty((out_features, in_features), dtype)
        if bias:
            self.bias = _empty((out_features,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw the weight and bias as torch does."""
        _init_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")
