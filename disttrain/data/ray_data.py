"""The features of a Ray Dataset's blocks as one array-like of rows, read per batch.

Ray stays outside disttrain/: the driver (disttrain/launch/ray_data.py) materialises the
dataset, keeps its blocks in Ray's object store and hands each rank a `BlockRows` holding
only the blocks' refs, where each block's rows start, and `read(block, rows)`, the
function that fetches a block and returns those of its rows as a (rows, features) array.
A batch then fetches just the blocks its rows are in, so a rank reads only its batches'
rows, and DataLoader and its samplers gather it with one index array, as from a .npy:
the same rows give the same batches, whatever the world size.
"""

from __future__ import annotations

import numpy as np

from .rows import _positions


class BlockRows:
    """Rows 0..N-1 of consecutive blocks, shape (N, width), each batch read from the
    blocks that hold it and cast to dtype."""

    def __init__(self, blocks, offsets, width: int, dtype, read):
        self.blocks, self.offsets = list(blocks), np.asarray(offsets, dtype=np.int64)
        if len(self.offsets) != len(self.blocks) + 1:
            raise ValueError("offsets: one start per block and the total at the end")
        self.shape, self.dtype, self.ndim = (int(self.offsets[-1]), int(width)), np.dtype(dtype), 2
        self.read = read

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = _positions(key, len(self))
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for block in np.unique(which):
            mine = which == block
            out[mine] = self.read(self.blocks[block], rows[mine] - self.offsets[block])
        return out

    def __repr__(self):
        return f"BlockRows({len(self.blocks)} blocks, {self.dtype}{list(self.shape)})"
