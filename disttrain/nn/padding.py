"""Padding layers, as torch.nn's: ConstantPad, ZeroPad, ReflectionPad, ReplicationPad and
CircularPad in 1, 2 and 3 dims, each F.pad with its mode."""

from __future__ import annotations

from . import functional as F
from .module import Module


def _sizes(padding, dims: int) -> tuple:
    """(left, right, ...) of 2 * dims ints from an int or a tuple of that many."""
    return (padding,) * (2 * dims) if isinstance(padding, int) else tuple(padding)


class _Pad(Module):
    mode = "constant"
    dims = 1

    def __init__(self, padding):
        super().__init__()
        self.padding = _sizes(padding, self.dims)

    def forward(self, input):
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPad(_Pad):
    def __init__(self, padding, value: float):
        super().__init__(padding)
        self.value = value

    def forward(self, input):
        return F.pad(input, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPad):
    """Pad the last dim with value."""


class ConstantPad2d(_ConstantPad):
    """Pad the last 2 dims with value."""

    dims = 2


class ConstantPad3d(_ConstantPad):
    """Pad the last 3 dims with value."""

    dims = 3


class _ZeroPad(_ConstantPad):
    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad1d(_ZeroPad):
    """Pad the last dim with zeros."""


class ZeroPad2d(_ZeroPad):
    """Pad the last 2 dims with zeros."""

    dims = 2


class ZeroPad3d(_ZeroPad):
    """Pad the last 3 dims with zeros."""

    dims = 3


class ReflectionPad1d(_Pad):
    """Pad the last dim with its reflection (the edge not repeated)."""

    mode = "reflect"


class ReflectionPad2d(ReflectionPad1d):
    """Pad the last 2 dims with their reflection."""

    dims = 2


class ReflectionPad3d(ReflectionPad1d):
    """Pad the last 3 dims with their reflection."""

    dims = 3


class ReplicationPad1d(_Pad):
    """Pad the last dim with copies of its edge."""

    mode = "replicate"


class ReplicationPad2d(ReplicationPad1d):
    """Pad the last 2 dims with copies of their edges."""

    dims = 2


class ReplicationPad3d(ReplicationPad1d):
    """Pad the last 3 dims with copies of their edges."""

    dims = 3


class CircularPad1d(_Pad):
    """Pad the last dim with its other end (wrapping around)."""

    mode = "circular"


class CircularPad2d(CircularPad1d):
    """Pad the last 2 dims with their other ends."""

    dims = 2


class CircularPad3d(CircularPad1d):
    """Pad the last 3 dims with their other ends."""

    dims = 3
