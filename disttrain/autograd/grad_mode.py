"""Grad mode: whether new results record a graph, as torch.no_grad and friends."""

from __future__ import annotations

import functools
import threading

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when operations record the graph for backward."""
    return getattr(_state, "enabled", True)


def _set(mode: bool) -> None:
    _state.enabled = bool(mode)


class _GradModeContext:
    """Base of the three context managers; each also works as a decorator."""

    mode: bool

    def __enter__(self):
        self._previous = is_grad_enabled()
        _set(self.mode)
        return None

    def __exit__(self, *exc):
        _set(self._previous)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__(*self._ctor_args()):
                return fn(*args, **kwargs)

        return wrapper

    def _ctor_args(self):
        return ()


class _NoArgContext(_GradModeContext):
    """Usable as @no_grad() and, as torch allows, as a bare @no_grad."""

    def __new__(cls, orig_func=None):
        if orig_func is None:
            return super().__new__(cls)
        return cls()(orig_func)


class no_grad(_NoArgContext):  # noqa: N801 - PyTorch's name
    """Results computed inside do not require grad."""

    mode = False


class enable_grad(_NoArgContext):  # noqa: N801 - PyTorch's name
    """Turn grad mode back on inside a no_grad block."""

    mode = True


class set_grad_enabled(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Set grad mode on or off; takes effect at once, as in PyTorch, and undoes on exit."""

    def __init__(self, mode: bool):
        self._previous = is_grad_enabled()
        self.mode = bool(mode)
        _set(self.mode)

    def __enter__(self):
        return None

    def __call__(self, fn):
        _set(self._previous)  # as a decorator it must not change the mode at definition
        return super().__call__(fn)

    def _ctor_args(self):
        return (self.mode,)
