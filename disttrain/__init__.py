"""disttrain: data-parallel training on a numpy autograd engine that behaves like PyTorch's.

`import disttrain` never imports Ray, mpi4py, workers or launch (tested).
"""

from . import data, distributed, nn, optim  # noqa: E402,F401 - as torch.nn, torch.optim
from .autograd import *  # noqa: F403 - the engine's public names are disttrain's
from .autograd import __all__ as _engine_names
from .autograd.ops import (  # noqa: F401 - torch-style top-level functions
    flatten,
    max,
    min,
    permute,
    pow,
    reshape,
    round,
    squeeze,
    sum,
    transpose,
    unsqueeze,
)

__version__ = "0.1.0"
__all__ = list(_engine_names) + [
    "flatten", "max", "min", "permute", "reshape", "squeeze", "sum", "transpose", "unsqueeze",
    "pow", "round",
]
