"""Data sets larger than a worker's memory: rows read when a batch asks for them.

A rank's memory is bounded by its batches, never by the file: `NpyRows` reads a .npy
file's rows with explicit reads (os.preadv) instead of through a memory mapping, since
pages touched through a mapping count in the process's resident memory (file-backed,
until the kernel reclaims them), so one pass over a mapped file would show the whole
file in every rank; read pages stay in the page cache, shared and outside any rank.
`Rows` is a lazy view of any such source: a subset of its rows (the job's train or
validation split, an index array) cast to the job's dtype one batch at a time.
`RowsDataset` is an ArrayDataset over such views, so DataLoader and its samplers gather
a batch with one index array, as from arrays in memory, and get the same values.

Each is array-like to the extent the loaders use: `shape`, `dtype`, `ndim`, `len()`, and
`[key]` for an int, a slice or an index array, returning an ndarray of just those rows.
"""

from __future__ import annotations

import os

import numpy as np

from .dataset import ArrayDataset


def _positions(key, n: int) -> np.ndarray:
    """The row numbers an int, slice or index array selects among n rows."""
    if isinstance(key, slice):
        return np.arange(n)[key]
    index = np.asarray(key)
    if index.dtype == bool:
        return np.nonzero(index)[0]
    if index.dtype.kind not in "iu":
        raise IndexError(f"rows are selected by integers, slices or index arrays, got "
                         f"{index.dtype} values")
    if index.size and (index.min() < -n or index.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    return np.where(index < 0, index + n, index)


class NpyRows:
    """The rows of a C-ordered .npy file, read on demand with os.preadv."""

    def __init__(self, path, shape=None, dtype=None, offset=None):
        self.path = str(path)
        if offset is None:  # numpy parses the header; no data page is touched
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
            shape, dtype, offset = mapped.shape, mapped.dtype, mapped.offset
            if mapped.ndim > 1 and not mapped.flags.c_contiguous:
                raise ValueError("its array is in Fortran order; save it C-ordered "
                                 "(np.save(path, np.ascontiguousarray(x)))")
            del mapped
        self.shape, self.dtype, self.offset = tuple(shape), np.dtype(dtype), int(offset)
        self.ndim = len(self.shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self):
        return self.shape[0]

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def reshape(self, *shape):
        """The same rows seen with another row shape (e.g. (len, -1): one flat row each)."""
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        new = np.empty((1, *self.shape[1:]), self.dtype).reshape((1, *shape[1:])).shape
        if shape[0] != len(self):
            raise ValueError(f"cannot reshape {self.shape} to {shape}: the rows stay rows")
        return NpyRows(self.path, (len(self), *new[1:]), self.dtype, self.offset)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            return self._read(start, max(stop - start, 0))
        rows = _positions(key, len(self))
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        # runs of consecutive rows are read at once: a slice, or a sorted split, is one read
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
            out[order[lo:hi]] = self._read(int(ordered[lo]), int(hi - lo))
        return out

    def _read(self, start: int, count: int) -> np.ndarray:
        out = np.empty((count, *self.shape[1:]), self.dtype)
        buffer = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(b"")
        done, position = 0, self.offset + start * self.row_bytes
        while done < len(buffer):
            got = os.preadv(self._fd, [buffer[done:]], position + done)
            if got == 0:
                raise OSError(f"{self.path}: ends before row {start + count - 1} (truncated)")
            done += got
        return out


class Rows:
    """Rows `index` (all if None) of `source`, cast to `dtype` as each batch is read."""

    def __init__(self, source, index=None, dtype=None):
        self.source, self.index = source, None if index is None else np.asarray(index)
        self.dtype = np.dtype(dtype if dtype is not None else source.dtype)
        n = len(source) if self.index is None else len(self.index)
        self.shape = (n, *source.shape[1:])
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        rows = key if self.index is None else self.index[key]
        return np.asarray(self.source[rows], dtype=self.dtype)

    def __repr__(self):
        return f"Rows({type(self.source).__name__}, {self.dtype}{list(self.shape)})"


class RowsDataset(ArrayDataset):
    """An ArrayDataset whose arrays may be lazy (Rows, NpyRows): held as they are, never
    copied into memory whole."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("RowsDataset needs at least one array")
        lengths = [len(a) for a in arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"RowsDataset arrays must have the same length, got lengths "
                             f"{lengths}")
        self.arrays = tuple(arrays)
