"""Reusable temporary arrays, so optimizer steps do not allocate one per parameter each time."""

from __future__ import annotations

import numpy as np

# small temporaries are cheaper to allocate than to carve out of a buffer
SMALL = 4096


class Scratch:
    """Flat buffers per (dtype, slot), grown to the largest array seen; like() hands out views."""

    def __init__(self) -> None:
        self._buffers: dict = {}

    def like(self, a: np.ndarray, slot: int = 0) -> np.ndarray:
        """An uninitialized array of a's shape and dtype; the same slot reuses the memory."""
        if a.size <= SMALL:
            return np.empty_like(a)
        buf = self._buffers.get((a.dtype, slot))
        if buf is None or buf.size < a.size:
            buf = self._buffers[a.dtype, slot] = np.empty(a.size, a.dtype)
        return buf[:a.size].reshape(a.shape)
