"""A pool of work arrays, so an optimizer step does not allocate temporaries per parameter.

The rule that makes reuse safe: an array from `Workspace.like(a, slot)` stays valid only
until the next `like` call with the same slot (and dtype), because every array a slot
hands out is a view of the same memory. So:

- temporaries that are alive at the same time come from different slots;
- nothing borrowed outlives the update of one parameter: state that persists across
  steps (momentum buffers, Adam's moments) is allocated, never borrowed.

Each optimizer names its slots for what they hold (sgd.py, adam.py).
"""

from __future__ import annotations

import numpy as np

# small temporaries are cheaper to allocate than to carve out of a buffer
SMALL = 4096


class Workspace:
    """Flat work arrays per (dtype, slot), grown to the largest array seen."""

    def __init__(self) -> None:
        self._buffers: dict = {}

    def like(self, a: np.ndarray, slot: str) -> np.ndarray:
        """An uninitialized array of a's shape and dtype, in slot's memory (see the module rule)."""
        if a.size <= SMALL:
            return np.empty_like(a)
        buf = self._buffers.get((a.dtype, slot))
        if buf is None or buf.size < a.size:
            buf = self._buffers[a.dtype, slot] = np.empty(a.size, a.dtype)
        return buf[:a.size].reshape(a.shape)


def descent_grad(p: np.ndarray, g: np.ndarray, maximize: bool, weight_decay: float,
                     ws: Workspace) -> np.ndarray:
    """The gradient an update descends along, as torch's optimizers prepare it: negated
    when maximizing, plus weight_decay * p (L2 decay). Into ws's "grad" slot (the "term"
    slot holds the product for a moment), g itself when neither applies."""
    if maximize:
        g = np.negative(g, out=ws.like(p, "grad"))
    if weight_decay != 0:
        decay = np.multiply(p, weight_decay, out=ws.like(p, "term"))
        g = np.add(g, decay, out=ws.like(p, "grad"))
    return g
