"""Gradient buckets: each parameter's .grad is a view into one flat buffer per bucket.

Because the views are what backward writes into, a full bucket is all-reduced as it
is, with no gather copy, as PyTorch's DDP does with gradient_as_bucket_view=True.

With the sharded optimizer (sharded.py) each bucket also gets a flat *parameter*
buffer laid out as its gradients (share_param_buffer): every parameter's .data becomes a
view into it, so a rank's chunk of the parameters and of their gradients are the same
[lo, hi) of two flat buffers, and the parameters are all-gathered with no copy either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# PyTorch's reducer makes the first bucket small so communication can start early.
FIRST_BUCKET_BYTES = 1024 * 1024


@dataclass
class Bucket:
    """A run of parameters of one dtype whose gradients share one flat buffer.

    The buffer holds the gradients, then one "used" flag per parameter: 1.0 where this
    rank's backward produced a gradient. After the all-reduce the flags count the ranks
    that did, so a parameter no rank touched keeps grad None, as without DDP.
    """

    index: int
    params: list
    names: list
    buffer: np.ndarray
    views: list
    flags: np.ndarray
    offsets: list = field(default_factory=list)  # where each parameter starts in the buffer
    ready: set = field(default_factory=set)
    param_buffer: np.ndarray | None = None  # share_param_buffer: the parameters, flat
    param_views: list = field(default_factory=list)

    @property
    def numel(self) -> int:
        return self.buffer.size - len(self.params)

    def reset(self) -> None:
        self.ready.clear()
        self.flags.fill(0)


def assign_buckets(named_params: list, bucket_cap_mb: float, allocate=None) -> list:
    """Group (name, param) pairs into buckets, in reverse registration order.

    Backward reaches the last layers first, so reverse order fills buckets roughly in
    the order gradients arrive (PyTorch's heuristic). Each bucket holds one dtype.
    `allocate(sizes)`, given every bucket's (numel, dtype), may return their zeroed flat
    buffers (a communicator's bucket_buffers: memory its collectives need not copy in)
    or None for plain numpy arrays.
    """
    cap = int(bucket_cap_mb * 1024 * 1024)
    groups, current, size, dtype = [], [], 0, None
    for name, p in reversed(named_params):
        limit = FIRST_BUCKET_BYTES if not groups else cap
        nbytes = p.data.nbytes
        if current and (p.data.dtype != dtype or size + nbytes > limit):
            groups.append(current)
            current, size = [], 0
        current.append((name, p))
        size += nbytes
        dtype = p.data.dtype
    if current:
        groups.append(current)
    # each buffer: the gradients, then one used flag per parameter
    sizes = [(sum(p.data.size for _, p in g) + len(g), g[0][1].data.dtype) for g in groups]
    buffers = allocate(sizes) if allocate is not None and groups else None
    if buffers is None:
        buffers = [np.zeros(n, dtype=dtype) for n, dtype in sizes]
    return [_make_bucket(i, group, buffer)
            for i, (group, buffer) in enumerate(zip(groups, buffers))]


def _make_bucket(index: int, group: list, buffer: np.ndarray) -> Bucket:
    total = buffer.size - len(group)
    views, offsets, offset = [], [], 0
    for _, p in group:
        view = buffer[offset:offset + p.data.size].reshape(p.data.shape)
        p.set_grad_buffer(view)  # keeps a gradient the user accumulated before wrapping
        views.append(view)
        offsets.append(offset)
        offset += p.data.size
    return Bucket(index, [p for _, p in group], [n for n, _ in group], buffer, views,
                  buffer[total:], offsets)


def share_param_buffer(bucket: Bucket) -> None:
    """Move the bucket's parameters into one flat buffer laid out as its gradients: each
    parameter's .data becomes a view of it (values unchanged, the Parameter objects kept)."""
    flat = np.empty(bucket.numel, dtype=bucket.buffer.dtype)
    bucket.param_buffer, bucket.param_views = flat, []
    for p, offset in zip(bucket.params, bucket.offsets):
        view = flat[offset:offset + p.data.size].reshape(p.data.shape)
        np.copyto(view, p.data)
        p.data = view
        bucket.param_views.append(view)


def restore_param_views(bucket: Bucket) -> None:
    """Put back any parameter whose .data was replaced by a new array (values copied in):
    the flat buffer is what the sharded step updates and all-gathers."""
    for name, p, view in zip(bucket.names, bucket.params, bucket.param_views):
        if p.data is view:
            continue
        if p.data.shape != view.shape or p.data.dtype != view.dtype:
            raise RuntimeError(
                f"parameter {name!r} changed to shape {p.data.shape} {p.data.dtype} after "
                f"DistributedDataParallel was built with a sharded optimizer (it was "
                f"{view.shape} {view.dtype}); cast or resize the model before wrapping it")
        np.copyto(view, p.data)
        p.data = view
