"""ShardedOptimizer: ZeRO stage 1, as DeepSpeed's and PyTorch's ZeroRedundancyOptimizer.

Each rank steps only its shard of the parameters and holds only that shard's optimizer
state: 1/W of the optimizer's work and memory, and the same bytes on the wire as an
all-reduce (a reduce-scatter plus an all-gather is how a ring all-reduces anyway).

The layout is DDP's buckets (buckets.py). Each bucket's gradients live in one flat
buffer; DistributedDataParallel.shard() gives it a flat parameter buffer laid out the
same way, with every parameter's .data a view into it. Rank r owns chunk r of both
(chunk_bounds(numel, W)). A chunk boundary can cut a parameter, so a rank's chunk is a
list of segments, one per parameter it overlaps: a 1-D Tensor viewing the overlap in the
parameter buffer, whose grad is the same overlap of the gradient buffer.

One step:
  backward     DDP reduce-scatters each bucket: this rank's chunk holds the averaged
               gradient; one small all-reduce then agrees on which parameters got a
               gradient on some rank (the others' grads stay None) and on grads_finite
  step()       the inner optimizer (the wrapped optimizer's class and hyperparameters,
               over the segments) steps this rank's segments; a segment of a parameter
               whose grad is None is skipped, as torch skips such a parameter
  all-gather   each bucket's parameter buffer: every rank holds every parameter again

SGD (momentum, dampening, Nesterov, weight decay), Adam, AdamW, Adamax, NAdam, RAdam,
RMSprop and Adagrad are elementwise (their per-parameter numbers, step and NAdam's
mu_product, are the same in every piece), so stepping a parameter in pieces gives the
same numbers as stepping it whole: a sharded run equals the unsharded one. The
param_groups a scheduler or user sets are this wrapper's; step() copies their
hyperparameters to the inner optimizer.

Checkpoints keep the unsharded format: state_dict() is a collective (every rank must
call it) that all-gathers each state array's segments and returns what the unsharded
optimizer's state_dict() would; load_state_dict() takes that format (from a sharded or
an unsharded run) and keeps this rank's slices.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..autograd.tensor import Tensor
from ..optim.optimizer import Optimizer

__all__ = ["ShardedOptimizer"]

GROUP_ONLY = ("params", "param_names")  # group keys that are not hyperparameters


@dataclass
class Segment:
    """The part of one parameter this rank steps: param.reshape(-1)[lo:hi], as `tensor`.

    bucket is None for a parameter DDP does not reduce (it requires no grad, or the world
    is one rank): every rank then steps it whole and `tensor` is the parameter itself."""

    param: Tensor
    lo: int
    hi: int
    tensor: Tensor
    bucket: object = None
    offset: int = 0  # where the parameter starts in the bucket's buffers


class ShardedOptimizer(Optimizer):
    """Wrap `optimizer` (over the model `ddp` wraps) so each rank steps only its shard."""

    def __init__(self, optimizer: Optimizer, ddp):
        self.ddp, self.comm = ddp, ddp.comm
        groups = [dict(g, params=list(g["params"])) for g in optimizer.param_groups]
        super().__init__(groups, dict(optimizer.defaults))
        self.optimizer_class = type(optimizer)
        self._segments = self._make_segments(ddp.shard())
        by_param = {id(s.param): s for s in self._segments}
        self._inner_segments = [[by_param[id(p)] for p in g["params"] if id(p) in by_param]
                                for g in self.param_groups]
        self._inner = self.optimizer_class(
            [dict(_hyper(g), params=[s.tensor for s in segs])
             for g, segs in zip(self.param_groups, self._inner_segments)],
            **_constructor_kwargs(self.optimizer_class, optimizer.defaults))
        if optimizer.state:  # a wrapped optimizer that already stepped or loaded state
            self.load_state_dict(optimizer.state_dict())

    def _make_segments(self, buckets: list) -> list:
        """This rank's segments: one per parameter its chunk of a bucket overlaps."""
        segments, bucketed = [], set()
        for bucket in buckets:
            lo, hi = self.ddp.chunk(bucket)
            for p, offset in zip(bucket.params, bucket.offsets):
                bucketed.add(id(p))
                start, end = max(lo, offset), min(hi, offset + p.data.size)
                if start < end:
                    segments.append(Segment(p, start - offset, end - offset,
                                            Tensor._make(bucket.param_buffer[start:end]),
                                            bucket, offset))
        for group in self.param_groups:
            segments += [Segment(p, 0, p.data.size, p) for p in group["params"]
                         if id(p) not in bucketed]
        return segments

    @property
    def inner(self) -> Optimizer:
        """The optimizer over this rank's segments (its state is this rank's shard)."""
        return self._inner

    # -- the step ----------------------------------------------------------------------
    def step(self, closure=None):
        """Step this rank's segments, then all-gather the parameters; the closure's loss."""
        loss = self._run_closure(closure)
        self.ddp.restore_param_views()  # the step updates the flat buffers
        for group, inner in zip(self.param_groups, self._inner.param_groups):
            inner.update(_hyper(group))  # the scheduler's lr, and any other change
        for s in self._segments:
            if s.bucket is not None:
                grad = s.param._grad
                s.tensor._grad = None if grad is None else Tensor._make(
                    grad.data.reshape(-1)[s.lo:s.hi])
        self._inner.step()
        self.ddp.allgather_params()
        return loss

    # -- checkpoints: the unsharded format ---------------------------------------------
    def state_dict(self) -> dict:
        """The unsharded optimizer's state_dict, gathered from every rank (a collective)."""
        packed = super().state_dict()  # the groups; this wrapper's own state is empty
        index = {id(p): i for i, p in enumerate(
            p for g in self.param_groups for p in g["params"])}
        layout = self._gather_layout(index)
        state: dict = {}
        for i in sorted(layout, key=int):
            state[int(i)] = {key: (None if kind == "array" else value)
                             for key, (kind, value) in layout[i].items()}
        self._gather_arrays(index, layout, state)
        packed["state"] = state
        return packed

    def _gather_layout(self, index: dict) -> dict:
        """{param index: {key: ("array", dtype) or ("value", v)}} of every rank's state."""
        mine = {}
        for s in self._segments:
            values = self._inner.state.get(s.tensor)
            if not values:
                continue
            entry = {}
            for key, value in values.items():
                if isinstance(value, np.ndarray) and value.size == s.hi - s.lo:
                    entry[key] = ("array", value.dtype.str)
                elif value is None or isinstance(value, (bool, int, float, str)):
                    entry[key] = ("value", value)
                else:
                    raise NotImplementedError(
                        f"ShardedOptimizer cannot gather state {key!r} of "
                        f"{self.optimizer_class.__name__}: a {type(value).__name__}")
            mine[str(index[id(s.param)])] = entry
        layout: dict = {}
        for theirs in self.comm.allgather(mine):  # the first rank that has a parameter's
            for i, entry in theirs.items():
                layout.setdefault(i, {k: tuple(v) for k, v in entry.items()})
        return layout

    def _gather_arrays(self, index: dict, layout: dict, state: dict) -> None:
        """Fill each array entry of state: bucket by bucket and key by key, every rank's
        segments all-gathered in one flat buffer; unbucketed parameters from this rank."""
        for s in self._segments:
            if s.bucket is None and str(index[id(s.param)]) in layout:
                for key, value in self._inner.state[s.tensor].items():
                    if isinstance(value, np.ndarray):
                        state[index[id(s.param)]][key] = value.copy()
        for bucket in self.ddp.buckets:
            keys: dict = {}
            for p in bucket.params:
                for key, (kind, dtype) in layout.get(str(index.get(id(p))), {}).items():
                    if kind == "array":
                        keys.setdefault(key, dtype)
            for key, dtype in keys.items():
                flat = np.zeros(bucket.numel, dtype=dtype)
                for s in self._segments:
                    if s.bucket is bucket and key in self._inner.state.get(s.tensor, {}):
                        flat[s.offset + s.lo:s.offset + s.hi] = self._inner.state[s.tensor][key]
                self.comm.allgather_(flat)
                for p, offset in zip(bucket.params, bucket.offsets):
                    entry = state.get(index.get(id(p)))
                    if entry is not None and key in entry:
                        entry[key] = flat[offset:offset + p.data.size].reshape(p.shape).copy()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the unsharded format (any world size, sharded or not): keep this rank's
        slice of each state array."""
        super().load_state_dict(state_dict)  # checks, casts, takes the groups
        full, self.state = self.state, defaultdict(dict)
        inner_state, position = {}, 0
        for segs in self._inner_segments:
            for s in segs:
                values = full.get(s.param)
                if values:
                    inner_state[position] = {k: _slice(v, s) for k, v in values.items()}
                position += 1
        groups, position = [], 0
        for group, segs in zip(self.param_groups, self._inner_segments):
            groups.append(dict(_hyper(group), params=list(range(position,
                                                                 position + len(segs)))))
            position += len(segs)
        self._inner.load_state_dict({"state": inner_state, "param_groups": groups})


def _hyper(group: dict) -> dict:
    """A param group's hyperparameters (everything but its parameters)."""
    return {k: v for k, v in group.items() if k not in GROUP_ONLY}


def _constructor_kwargs(cls, defaults: dict) -> dict:
    """The defaults cls's constructor takes by name (AdamW's lack decoupled_weight_decay)."""
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in defaults.items() if k in names}


def _slice(value, segment: Segment):
    """A state value of a whole parameter, cut to the segment (arrays of its size)."""
    if segment.bucket is None or not isinstance(value, np.ndarray) or \
            value.size != segment.param.data.size:
        return value
    return value.reshape(-1)[segment.lo:segment.hi].copy()
