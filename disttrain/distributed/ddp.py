"""DistributedDataParallel: the same model on every rank, gradients averaged during backward.

The life of a gradient (docs/gradient.md has every hop):
  loss.backward()         Tensor.backward -> engine.backward (autograd/engine.py)
  engine                  _run_node runs each op's vjps in reverse order
  accumulation            engine._accumulate_leaf writes into the parameter's bucket
                          view, set by Tensor.set_grad_buffer (buckets._make_bucket)
  post-accumulate hook    _on_grad_ready marks the parameter ready; the first call queues
                          _finish_backward; _launch_ready_buckets queues full buckets
                          in index order
  all-reduce thread       _reduce_loop: _allreduce_mean, the sum / world_size (or each
                          rank's weighted by its share, when shares are unequal);
                          with a sharded optimizer _reduce_scatter_mean instead, the
                          same mean in this rank's chunk only (sharded.py)
  communicator            each backend's _allreduce sums the buffer in place, in rank
                          order (workers/comm/{star,shm,ring,mpi}.py)
  end of backward         _finish_backward (engine.queue_callback) waits for every
                          bucket; _install_averaged_grads sets each .grad to its view
  optimizer.step()        SGD.step / Adam.step (optim/) read the views: the averages

As PyTorch's DDP: rank 0's parameters and buffers are broadcast at start; every rank's
parameter names and shapes are compared first, so a mismatch is an error naming the
parameter, not a hang; each bucket's all-reduce starts in a background thread as soon
as backward has filled it, overlapping the rest of backward; buckets are reduced in
index order on every rank; no_sync() skips the all-reduce for gradient accumulation.

Sharded (ZeRO stage 1, sharded.ShardedOptimizer calls shard()): each bucket is
reduce-scattered instead, so a rank holds the averaged gradient only in its own chunk of
each bucket (chunk_bounds), the part its optimizer steps; one small all-reduce at the end
of backward then agrees on the used flags (which sit outside the chunks) and on whether
every rank's chunk is finite (grads_finite), and after the step the optimizer
all-gathers each bucket's parameter buffer (allgather_params).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time

import numpy as np

from ..autograd import engine, grad_mode
from ..autograd.tensor import Tensor
from .buckets import assign_buckets, restore_param_views, share_param_buffer
from .comm import CollectiveError, CollectiveTimeout, Communicator, chunk_bounds


class DistributedDataParallel:
    """Wrap a module so every backward() leaves the world-averaged gradient in .grad."""

    def __init__(self, module, comm: Communicator, bucket_cap_mb: float = 25.0,
                 broadcast_buffers: bool = True):
        self.module = module
        self.comm = comm
        self.require_backward_grad_sync = True
        # (this rank's samples, the global batch's), set when ranks hold unequal shares
        self.batch_share: tuple[int, int] | None = None
        self.wait_seconds = 0.0  # time backward's end waited for them: the exposed cost
        self.spans: list | None = None  # (name, start, end) per collective, when a list
        self.sharded = False  # shard(): reduce-scatter, for a sharded optimizer
        self.grads_finite = True  # sharded: every rank's chunk finite, agreed after backward
        # sharded: the averaged gradients' 2-norm, agreed with grads_finite when wanted (a
        # rank holds only its chunk, so no rank could compute it alone)
        self.measure_grad_norm = False
        self.grad_norm: float | None = None
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        _check_same_model(comm, named)
        # buffers to broadcast from rank 0 before each forward that will sync gradients
        self._buffers = ([b for _, b in module.named_buffers()]
                         if broadcast_buffers and comm.world_size > 1
                         and hasattr(module, "named_buffers") else [])
        _broadcast_state(comm, module, broadcast_buffers)
        # One rank has nothing to average: backward stays plain, with no thread hand-off.
        self.buckets = (assign_buckets(named, bucket_cap_mb, getattr(comm, "bucket_buffers", None))
                        if comm.world_size > 1 else [])
        self._bucket_of = {}
        for bucket in self.buckets:
            for slot, p in enumerate(bucket.params):
                self._bucket_of[id(p)] = (bucket, slot)
                p.register_post_accumulate_grad_hook(self._on_grad_ready)
        self._next_to_launch = 0
        self._in_backward = False
        self._jobs: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._reduce_loop, name="ddp-allreduce",
                                        daemon=True)
        self._worker.start()

    # -- the module interface ----------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        if self._buffers and self.require_backward_grad_sync and grad_mode.is_grad_enabled():
            # as torch's DDP (broadcast_buffers): every rank runs on rank 0's buffers (BatchNorm's
            # running statistics), so the replicas stay the same; no_sync and no_grad skip it
            _broadcast_tensors(self.comm, self._buffers)
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        # Everything else (parameters, state_dict, train, eval...) is the module's.
        return getattr(self.__dict__["module"], name)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate local gradients without communicating."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # -- sharding (ZeRO stage 1) ----------------------------------------------------------
    def shard(self) -> list:
        """Switch to the sharded optimizer's protocol: flat parameter buffers beside the
        gradient buffers, reduce-scatter instead of all-reduce. The buckets."""
        if not self.sharded:
            for bucket in self.buckets:
                share_param_buffer(bucket)
            self.sharded = True
        return self.buckets

    def restore_param_views(self) -> None:
        """Parameters whose .data was replaced go back into their buckets' flat buffers."""
        for bucket in self.buckets:
            restore_param_views(bucket)

    def chunk(self, bucket) -> tuple[int, int]:
        """This rank's [lo, hi) of the bucket's parameters and gradients."""
        return chunk_bounds(bucket.numel, self.comm.world_size)[self.comm.rank]

    def allgather_params(self) -> None:
        """Every rank's chunk of every bucket's parameters, from its owner (after a step)."""
        start = time.perf_counter()
        for bucket in self.buckets:
            self.comm.allgather_(bucket.param_buffer)
        end = time.perf_counter()
        self.wait_seconds += end - start
        if self.spans is not None:
            self.spans.append(("all-gather parameters", start, end))

    # -- during backward ---------------------------------------------------------------
    def _on_grad_ready(self, param: Tensor) -> None:
        if not self.require_backward_grad_sync:
            return
        if not self._in_backward:
            self._in_backward = True
            for bucket in self.buckets:
                bucket.reset()
            engine.queue_callback(self._finish_backward)
        bucket, slot = self._bucket_of[id(param)]
        if slot in bucket.ready:
            raise RuntimeError(
                f"parameter {bucket.names[slot]!r} received a gradient twice in one backward: "
                "DistributedDataParallel cannot reduce a parameter used more than once per "
                "forward; run the shared part once or use no_sync()"
            )
        bucket.ready.add(slot)
        bucket.flags[slot] = 1.0
        self._launch_ready_buckets()

    def _launch_ready_buckets(self) -> None:
        # Buckets go out in index order on every rank, so ring and MPI collectives match up.
        while self._next_to_launch < len(self.buckets):
            bucket = self.buckets[self._next_to_launch]
            if len(bucket.ready) < len(bucket.params):
                return
            self._jobs.put(bucket)
            self._next_to_launch += 1

    def _finish_backward(self) -> None:
        """Queued by the first gradient of a backward; runs when that backward ends."""
        try:
            for bucket in self.buckets[self._next_to_launch:]:
                for slot in range(len(bucket.params)):
                    if slot not in bucket.ready:  # no gradient here: contribute zeros
                        bucket.views[slot].fill(0)
                        bucket.ready.add(slot)
            self._launch_ready_buckets()
            start = time.perf_counter()
            for _ in range(len(self.buckets)):
                error = self._wait_for_bucket()
                if error is not None:
                    raise error
            if self.sharded:
                self._agree_after_reduce_scatter()
            end = time.perf_counter()
            self.wait_seconds += end - start
            if self.spans is not None:
                self.spans.append(("wait for all-reduce", start, end))
        finally:
            self._next_to_launch = 0
            self._in_backward = False
        self._install_averaged_grads()

    def _wait_for_bucket(self):
        # The communicator times out on its own; this bound only guards against a bug there.
        try:
            return self._done.get(timeout=2 * self.comm.timeout_s + 30)
        except queue.Empty:
            return CollectiveTimeout(
                f"gradient all-reduce did not finish within {2 * self.comm.timeout_s + 30:.0f} s "
                f"at step {self.comm.step}"
            )

    def _install_averaged_grads(self) -> None:
        for bucket in self.buckets:
            for slot, p in enumerate(bucket.params):
                if bucket.flags[slot] == 0:
                    p.grad = None  # no rank produced one: leave it as backward would
                elif p.grad is None or p.grad.data is not bucket.views[slot]:
                    p.grad = Tensor._make(bucket.views[slot])

    def _reduce_loop(self) -> None:
        while True:
            bucket = self._jobs.get()
            if bucket is None:
                return
            start, outcome = time.perf_counter(), None
            try:
                (self._reduce_scatter_mean if self.sharded else self._allreduce_mean)(bucket)
            except Exception as error:  # handed to the training thread, which raises it
                outcome = error
            if self.spans is not None:  # recorded before the training thread can read it
                what = "reduce-scatter" if self.sharded else "all-reduce"
                self.spans.append((f"{what} bucket {bucket.index} "
                                   f"({bucket.buffer.nbytes / 1e6:.3g} MB)", start,
                                   time.perf_counter()))
            self._done.put(outcome)

    def _allreduce_mean(self, bucket) -> None:
        """The bucket's gradient of the mean loss over the global batch, on every rank.

        Each rank's gradient is of its mean loss over its own samples. With equal shares
        the global mean's gradient is their average; with unequal ones (W not dividing the
        batch), each rank's is weighted by its share: sum_r n_r * g_r / B."""
        values = self._weighed(bucket)
        self.comm.allreduce_(bucket.buffer)
        values /= self._divisor()

    def _reduce_scatter_mean(self, bucket) -> None:
        """_allreduce_mean's result in this rank's chunk of the bucket's gradients only."""
        values = self._weighed(bucket)
        self.comm.reduce_scatter_(values)
        lo, hi = self.chunk(bucket)
        values[lo:hi] /= self._divisor()

    def _weighed(self, bucket) -> np.ndarray:
        """The bucket's gradients, each multiplied by this rank's share when shares differ."""
        values = bucket.buffer[: bucket.numel]
        if self.batch_share is not None:
            values *= self.batch_share[0]
        return values

    def _divisor(self) -> int:
        """What the sum over ranks is divided by: the global batch (unequal shares, already
        weighed), else the world size."""
        return self.batch_share[1] if self.batch_share is not None else self.comm.world_size

    def _agree_after_reduce_scatter(self) -> None:
        """One small all-reduce: every bucket's used flags (outside the chunks, so not
        reduced yet) and, last, the ranks whose chunk holds a NaN or infinity."""
        mine = [bucket.buffer[slice(*self.chunk(bucket))] for bucket in self.buckets]
        bad = sum(not np.isfinite(chunk.sum()) for chunk in mine)
        squares = []
        if self.measure_grad_norm:  # in float64, as the unsharded per-parameter norms are
            squares = [sum(float(np.dot(c, c)) for c in (m.astype(np.float64) for m in mine))]
        totals = np.concatenate([b.flags for b in self.buckets] + [squares, [bad]]
                                ).astype(np.float64)
        self.comm.allreduce_(totals)
        offset = 0
        for bucket in self.buckets:
            bucket.flags[...] = totals[offset:offset + bucket.flags.size]
            offset += bucket.flags.size
        self.grads_finite = bool(totals[-1] == 0)
        self.grad_norm = math.sqrt(totals[-2]) if self.measure_grad_norm else None

    def close(self) -> None:
        """Stop the background all-reduce thread."""
        self._jobs.put(None)


def _check_same_model(comm: Communicator, named: list) -> None:
    """Every rank must hold the same parameter names, shapes and dtypes, or none trains."""
    mine = [[name, list(p.shape), str(p.dtype)] for name, p in named]
    everyone = comm.allgather(mine)
    reference = everyone[0]
    for rank, theirs in enumerate(everyone[1:], start=1):
        if theirs == reference:
            continue
        for a, b in zip(reference, theirs):
            if a != b:
                raise CollectiveError(
                    f"rank {rank}'s model differs from rank 0's at parameter {b[0]!r}: "
                    f"shape {tuple(b[1])} {b[2]} on rank {rank}, parameter {a[0]!r} shape "
                    f"{tuple(a[1])} {a[2]} on rank 0; every worker must build the same model"
                )
        raise CollectiveError(
            f"rank {rank} has {len(theirs)} parameters but rank 0 has {len(reference)}; "
            "every worker must build the same model"
        )


def _broadcast_state(comm: Communicator, module, broadcast_buffers: bool) -> None:
    """Overwrite every rank's parameters (and buffers) with rank 0's, in place."""
    tensors = [p for _, p in module.named_parameters()]
    if broadcast_buffers and hasattr(module, "named_buffers"):
        tensors += [b for _, b in module.named_buffers()]
    _broadcast_tensors(comm, tensors)


def _broadcast_tensors(comm: Communicator, tensors: list) -> None:
    """Overwrite each tensor's data with rank 0's, in place: one broadcast per dtype."""
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.data.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        flat = np.concatenate([t.data.reshape(-1) for t in group]).astype(dtype, copy=False)
        comm.broadcast_(flat, 0)
        offset = 0
        for t in group:
            t.data[...] = flat[offset:offset + t.data.size].reshape(t.data.shape)
            offset += t.data.size
