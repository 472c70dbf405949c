"""Parameter: a Tensor that a Module registers as one of its learnable weights."""

from __future__ import annotations

import numpy as np

from ..autograd.tensor import Tensor, _to_array


class Parameter(Tensor):
    """A leaf Tensor that requires grad by default and is found by Module.parameters()."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        # Like torch.nn.Parameter, share the storage of a Tensor or array instead of copying.
        if data is None:
            array = np.empty(0, dtype=np.float32)
        elif isinstance(data, Tensor):
            array = data.data
        elif isinstance(data, np.ndarray):
            array = data
        else:
            array = _to_array(data)
        self.data = array
        self._init_fields()
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
