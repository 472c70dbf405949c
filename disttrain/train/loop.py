"""The per-step loop, the same for every backend.

    global zero_grad -> forward on the local shard -> loss.backward() (DDP all-reduces
    bucket by bucket as backward fills them) -> optimizer.step()

The Trainer knows nothing of Ray or MPI: it is handed a Communicator. Step numbers
travel with every collective (comm.step), so a rank out of step fails loudly. It writes
no files either: rank 0 hands its records and checkpoints to `on_record` and
`on_checkpoint`, which lead to the driver, the one writer of the run directory
(disttrain/train/runner.py and driver.py).

Records are dicts with a "kind": "train" (time, step, epoch, loss, lr, samples_per_s,
compute_s, comm_s, skipped) every log_every steps, "eval" (time, step, epoch, val_loss, and
val_accuracy for classification or val_mse and val_mae for regression) at the end of each
epoch, and "trace" (every rank's timeline events) once the first trace_steps steps are
done. "time" is wall-clock seconds since the epoch. The loss is [job] loss
(builders.build_loss): torch's, or the user's own.

A step whose gradients (averaged over the ranks, so every rank holds the same ones) are
not finite, as after a NaN or infinite loss on any rank, is never applied: [job]
on_nonfinite = "stop" raises NonFiniteError naming the step, "skip" drops the step on
every rank alike with no extra collective, and counts it. Parameters are checked before
every checkpoint, so no checkpoint ever holds NaN or infinite weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..autograd import manual_seed, no_grad
from ..autograd.tensor import Tensor
from ..data import distributed_loader
from ..distributed import DistributedDataParallel, ShardedOptimizer
from ..nn.utils import clip_grads_with_norm_, get_total_norm
from ..optim import state_dict_from_arrays, state_dict_to_arrays
from .builders import (
    build_datasets,
    build_loss,
    build_model,
    build_optimizer,
    build_scheduler,
    output_width,
)
from .checkpoint import TrainState
from .spec import JobSpec
from .timeline import phase_events

# A stop request (Ctrl-C, SIGTERM) is agreed on by every rank about this often, even
# between log steps: one all-reduce of three numbers.
STOP_CHECK_S = 1.0
# evaluate() runs the validation set this many rows at a time (its memory's bound)
EVAL_ROWS = 1024


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite loss, gradient or parameter; the message names
    the step and the fix."""


def _json_safe(record: dict) -> dict:
    """The record with NaN and infinities as None: they are not JSON (metrics.jsonl is)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in record.items()}


@dataclass
class StepTimes:
    """Seconds per phase, summed since the last log line."""

    compute: float = 0.0
    comm: float = 0.0
    steps: int = 0
    skipped: int = 0  # steps whose gradients were not finite (on_nonfinite = "skip")
    trace: list = field(default_factory=list)  # Chrome-trace events for timeline.json


class Trainer:
    """One replica: model, shard of the data, optimizer and DDP over a communicator."""

    def __init__(self, spec: JobSpec, comm, *, on_record=None, on_checkpoint=None,
                 trace_steps=50, build_replica=True, datasets=None):
        self.spec, self.comm = spec, comm
        self.rank, self.world_size = comm.rank, comm.world_size
        sink = on_record or (lambda record: None)
        self.on_record = lambda record: sink(_json_safe(record))
        self.on_checkpoint = on_checkpoint or (lambda state: None)
        self.trace_steps = trace_steps
        # (train, val) handed in (a Ray Dataset's blocks, say), else the [data] table's
        self.train_set, self.val_set = datasets if datasets is not None else build_datasets(spec)
        x = self.train_set.arrays[0]
        self.n_outputs = output_width(spec, self.train_set, self.val_set)
        self.loss_fn = build_loss(spec)
        self.loader = distributed_loader(self.train_set, spec.job.batch_size, rank=self.rank,
                                         world_size=self.world_size, seed=spec.job.seed,
                                         shuffle=spec.data.shuffle)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"[job] batch_size {spec.job.batch_size} is larger than the "
                             f"{len(self.train_set)} training samples: choose a smaller one")
        total = spec.job.epochs * self.steps_per_epoch
        self.total_steps = min(total, spec.job.max_steps) if spec.job.max_steps else total
        self.model = self.ddp = self.optimizer = self.scheduler = None
        if build_replica:  # else a user's train loop attaches its own (context.py)
            manual_seed(spec.job.seed)  # same initial weights on every rank (DDP broadcasts)
            self.attach_model(build_model(spec, x.shape[1], self.n_outputs))
            self.attach_optimizer(build_optimizer(spec, self.model.parameters()))
        self.step = 0
        self.times = StepTimes()
        self.stopped = False
        self._loss_sum, self._loss_count = 0.0, 0
        self._lr = None  # the lr the last step ran with (end_step)
        self._evaluated: tuple = (None, {})  # (step, its evaluate())

    def attach_model(self, model) -> None:
        """The replica this rank trains, wrapped in DDP over the job's communicator."""
        self.model = model
        self.ddp = DistributedDataParallel(model, self.comm, self.spec.distributed.bucket_cap_mb)
        self.ddp.batch_share = self._batch_share()
        self.ddp.measure_grad_norm = bool(self.spec.optimizer.max_grad_norm)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def _batch_share(self) -> tuple[int, int] | None:
        """(this rank's samples, the global batch's) when the world size does not divide
        the batch, so ranks' means are weighted by their shares; None when shares are equal."""
        batch = self.spec.job.batch_size
        if batch % self.world_size == 0:
            return None
        return self.loader.batch_size, batch

    def attach_optimizer(self, optimizer) -> None:
        """The optimizer over the replica, and the job's [scheduler] over it. With
        [distributed] shard_optimizer on more than one rank, each rank steps only its
        shard (ShardedOptimizer, ZeRO stage 1); the scheduler drives the wrapper."""
        if self.sharded:
            optimizer = ShardedOptimizer(optimizer, self.ddp)
        self.optimizer = optimizer
        self.scheduler = build_scheduler(self.spec, optimizer)

    @property
    def sharded(self) -> bool:
        """Whether the optimizer is sharded over the ranks (then state() is a collective)."""
        return self.spec.distributed.shard_optimizer and self.world_size > 1

    # -- one step ------------------------------------------------------------------------
    def train_step(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """zero_grad, forward, backward (with the all-reduce), optimizer step; the local loss,
        or None if the step was skipped (its gradients were not finite)."""
        self.begin_step()
        tracing = self.step < self.trace_steps
        self.ddp.spans = [] if tracing else None
        waited = self.ddp.wait_seconds
        t0 = time.perf_counter()
        self.optimizer.zero_grad()
        # numpy's overflow warnings would only repeat what _gradients_finite decides on
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss = self.loss_fn(self.ddp(Tensor._make(x)), Tensor._make(y))
            t1 = time.perf_counter()
            loss.backward()
        t2 = time.perf_counter()
        applied = self._gradients_finite() or self._not_finite(loss.item())
        if applied:
            self._clip_gradients()
            self.optimizer.step()
        t3 = time.perf_counter()
        if tracing:
            self.times.trace += phase_events(
                self.rank, self.step, [("zero_grad+forward", t0, t1), ("backward", t1, t2),
                                       ("optimizer.step", t2, t3)], self.ddp.spans)
        self.end_step(t3 - t0, self.ddp.wait_seconds - waited)
        return loss.item() if applied else None

    def begin_step(self) -> None:
        """Number the step's collectives and seed its random draws."""
        self.comm.step = self.step
        # Dropout masks depend on (seed, step, rank) alone, so a resumed run draws the same.
        manual_seed(int(np.random.SeedSequence([self.spec.job.seed, self.step, self.rank])
                        .generate_state(1)[0]))

    def end_step(self, seconds: float, comm_seconds: float) -> None:
        """Count the step's time (comm_seconds of it waiting for all-reduces)."""
        self.times.compute += seconds - comm_seconds
        self.times.comm += comm_seconds
        self.times.steps += 1
        self.step += 1
        self._lr = self.optimizer.param_groups[0]["lr"]  # the lr the step ran with, for _log
        if self.at_epoch_end and self.scheduler is not None:
            # Part of the step that ends an epoch: whatever state is taken after it (a
            # checkpoint, a stop, a replica's snapshot after a failed collective) resumes
            # with the next epoch's lr.
            self.scheduler.step()

    @property
    def at_epoch_end(self) -> bool:
        """Whether the last step taken ended an epoch."""
        return self.step % self.steps_per_epoch == 0

    def note_loss(self, loss: float | None) -> None:
        """The step's local loss for the next log line (None: a skipped step)."""
        if loss is not None:  # skipped steps count in "skipped", not in the mean
            self._loss_sum, self._loss_count = self._loss_sum + loss, self._loss_count + 1

    def _gradients_finite(self) -> bool:
        """Whether every averaged gradient is finite: the same answer on every rank.

        A sum is NaN or infinite when any element is, and costs one pass; it can only
        overflow by itself when the gradients are already huge (about 1e38 / size in
        float32), a step better not taken either. Sharded, a rank holds the averages only
        in its chunk: DDP checked every rank's and agreed on the answer."""
        if self.ddp.sharded:
            return self.ddp.grads_finite
        return all(np.isfinite(p.grad.data.sum()) for p in self.params if p.grad is not None)

    def _clip_gradients(self) -> None:
        """[optimizer] max_grad_norm: torch's clip_grad_norm_ of the averaged gradients (the
        same on every rank, so every replica takes the same step). Sharded, the norm was
        agreed with the finiteness check; scaling a whole bucket view also scales the parts
        outside this rank's chunk, which the step never reads."""
        max_norm = self.spec.optimizer.max_grad_norm
        if not max_norm:
            return
        if self.ddp.sharded:
            dtype = self.ddp.buckets[0].buffer.dtype  # a world of one never shards
            total = np.asarray(self.ddp.grad_norm, dtype=dtype)
        else:
            total = get_total_norm([p.grad for p in self.params if p.grad is not None]).data
        with np.errstate(all="ignore"):  # outside the chunk: whatever the buffer held
            clip_grads_with_norm_(self.params, max_norm, total)

    def _not_finite(self, local_loss: float) -> bool:
        """A step with non-finite gradients: count it (skip), or stop the job (stop)."""
        if self.spec.job.on_nonfinite == "skip":
            self.times.skipped += 1
            return False
        raise NonFiniteError(
            f"step {self.step + 1}: the loss or its gradients are not finite (loss {local_loss} "
            f"on rank {self.rank}); lower [optimizer] lr "
            f"(now {self.optimizer.param_groups[0]['lr']:g}), or set [job] on_nonfinite = "
            '"skip" to skip such steps; the last checkpoint is kept')

    # -- the run -------------------------------------------------------------------------
    def run(self, should_stop=lambda: False) -> dict:
        """Train until the last step, or until every rank has agreed to stop; a summary."""
        started = time.perf_counter()
        for x, y in self.batches(should_stop):
            self.note_loss(self.train_step(x, y))
        return self.finish(started)

    def batches(self, should_stop=lambda: False):
        """This rank's (x, y) of each step, from self.step to the last one or an agreed
        stop. The caller runs the step (train_step, or a user's loop through context.py,
        which calls end_step and note_loss); between steps this logs, agrees on stops,
        checkpoints and ends epochs, the same for both."""
        self.stopped = False
        next_agreement = self.step + 1  # then about every STOP_CHECK_S (see _agree)
        while self.step < self.total_steps and not self.stopped:
            epoch, first = divmod(self.step, self.steps_per_epoch)
            self.loader.set_epoch(epoch)
            for x, y in self.loader.iter_from(first):
                yield x, y
                if self.step == self.trace_steps:
                    self._send_trace()
                at_end = self.step >= self.total_steps
                at_log = self.step % self.spec.job.log_every == 0 or at_end
                if at_log or self.step >= next_agreement:
                    loss, self.stopped, every_steps = self._agree(
                        self._loss_sum / self._loss_count if self._loss_count else 0.0,
                        should_stop())
                    next_agreement = self.step + every_steps
                    if at_log or self.stopped:  # a stop between log steps logs what it ran
                        self._log(epoch, loss)
                        self._loss_sum, self._loss_count = 0.0, 0
                if self.at_epoch_end and self.spec.job.eval_every_epoch:
                    self._evaluate_epoch(epoch)  # before a stop, which would skip it
                every = self.spec.job.checkpoint_every
                if every and self.step % every == 0 and not (at_end or self.stopped):
                    self.save_checkpoint()
                if self.stopped or at_end:
                    break

    def finish(self, started: float) -> dict:
        """The last checkpoint and trace, and the run's summary."""
        self.save_checkpoint()
        self._send_trace()
        return {"step": self.step, "stopped": self.stopped and self.step < self.total_steps,
                "seconds": time.perf_counter() - started, **self._evaluation()}

    def _send_trace(self) -> None:
        """Every rank's timeline events so far, gathered into one "trace" record."""
        traces = self.comm.allgather(self.times.trace)
        self.times.trace = []
        if any(traces):
            self.on_record({"kind": "trace", "events": [e for trace in traces for e in trace]})

    def _evaluate_epoch(self, epoch: int) -> None:
        self.on_record({"kind": "eval", "time": time.time(), "step": self.step, "epoch": epoch,
                        **self._evaluation()})

    def _evaluation(self) -> dict:
        """evaluate(), once per step: the summary reuses the last epoch's evaluation."""
        if self._evaluated[0] != self.step:
            self._evaluated = (self.step, self.evaluate())
        return self._evaluated[1]

    def _agree(self, local_loss: float, stop_requested: bool) -> tuple[float, bool, int]:
        """One small all-reduce: (the loss averaged over the global batch, whether any rank
        must stop, in how many steps to agree again).

        Every rank must agree at the same steps, so the interval (about STOP_CHECK_S of
        steps, from rank 0's step time) is rank 0's alone: the others add 0, which sums
        exactly, and every rank reads the same integer.
        """
        t = self.times
        step_s = (t.compute + t.comm) / max(t.steps, 1)
        proposal = max(1, int(STOP_CHECK_S / step_s)) if self.rank == 0 and step_s else 0
        share = self.ddp.batch_share  # unequal shares: each rank's mean weighs its samples
        weighted = local_loss * share[0] if share else local_loss
        totals = np.array([weighted, float(stop_requested), proposal], dtype=np.float64)
        self.comm.allreduce_(totals)
        loss = totals[0] / (share[1] if share else self.world_size)
        if not np.isfinite(loss):  # every rank sees the same sum, so every rank stops here
            raise NonFiniteError(f"step {self.step}: the loss averaged over the ranks is "
                                 f"{loss}; lower [optimizer] lr")
        return loss, bool(totals[1] > 0), max(1, int(totals[2]))

    def _log(self, epoch: int, loss: float) -> None:
        """Emit one "train" record for the steps since the last one."""
        t = self.times
        step_s = (t.compute + t.comm) / max(t.steps, 1)
        self.on_record({
            "kind": "train", "time": time.time(), "step": self.step, "epoch": epoch,
            # every step since the last record skipped: no loss to report (JSON null)
            "loss": loss if t.skipped < t.steps else None,
            "lr": self._lr,
            "samples_per_s": self.spec.job.batch_size / step_s if step_s else 0.0,
            "compute_s": t.compute, "comm_s": t.comm, "skipped": t.skipped,
            "world_size": self.world_size,
        })
        self.times = StepTimes(trace=t.trace)

    @no_grad()
    def evaluate(self) -> dict:
        """Validation metrics over the whole validation set, shared by the ranks: val_loss,
        and val_accuracy (classification) or val_mse and val_mae (regression).

        Each rank sums over its slice; the sums are all-reduced and divided by the global
        counts, so the result is the same on every rank and for every world size. The loss
        is a batch mean (build_loss), so a slice adds mean x its samples. The slice is
        read and run EVAL_ROWS rows at a time, so memory is bounded by that, not by the
        validation set (a slice that fits in one chunk gives exactly the one-pass sums)."""
        x, y = self.val_set.arrays[0], self.val_set.arrays[1]
        mine = np.arange(self.rank, len(y), self.world_size)
        regression = self.spec.job.task == "regression"
        sums = np.zeros(5 if regression else 3, dtype=np.float64)  # loss, ..., samples
        was_training = self.model.training
        self.model.eval()
        try:  # a rank can have no rows: a validation set smaller than the world
            for lo in range(0, len(mine), EVAL_ROWS):
                sums += self._eval_sums(x, y, mine[lo:lo + EVAL_ROWS], regression)
        finally:
            self.model.train(was_training)
        self.comm.allreduce_(sums)
        val_loss = sums[0] / sums[-1]
        metrics = {"val_loss": float(val_loss) if np.isfinite(val_loss) else None}  # JSON-safe
        if regression:
            mse, mae = sums[1] / sums[3], sums[2] / sums[3]
            return dict(metrics, val_mse=float(mse) if np.isfinite(mse) else None,
                        val_mae=float(mae) if np.isfinite(mae) else None)
        return dict(metrics, val_accuracy=float(sums[1] / sums[2]))

    def _eval_sums(self, x, y, rows: np.ndarray, regression: bool) -> np.ndarray:
        """(loss x samples, ..., samples) of the validation rows `rows`, in float64."""
        targets = y[rows]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # see train_step
            output = self.model(Tensor._make(x[rows]))
            loss = self.loss_fn(output, Tensor._make(targets)).item()
        if regression:  # elementwise errors, in float64: mse and mae over every target
            error = output.data.astype(np.float64) - targets
            return np.array([loss * len(rows), (error * error).sum(), np.abs(error).sum(),
                             error.size, len(rows)], dtype=np.float64)
        return np.array([loss * len(rows), (output.data.argmax(axis=1) == targets).sum(),
                         len(rows)], dtype=np.float64)

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> TrainState:
        """This replica's model and optimizer arrays and meta, now. Sharded, a collective
        (the optimizer state is gathered from every rank, in the unsharded format)."""
        model = {k: np.array(v.data) for k, v in self.model.state_dict().items()}
        optim_arrays, optim_meta = state_dict_to_arrays(self.optimizer.state_dict())
        meta = {"epoch": self.step // self.steps_per_epoch, "world_size": self.world_size,
                "sampler": {"seed": self.spec.job.seed, "shuffle": self.spec.data.shuffle,
                            "epoch": self.step // self.steps_per_epoch,
                            "batch": self.step % self.steps_per_epoch},
                "rng": {"kind": "derived", "from": ["seed", "step", "rank"]},
                "optimizer": optim_meta,
                "scheduler": self.scheduler.state_dict() if self.scheduler else None}
        return TrainState(model, optim_arrays, dict(meta, step=self.step))

    def save_checkpoint(self) -> None:
        """Rank 0 hands its state to on_checkpoint (every replica holds the same state);
        every rank refuses alike if a parameter is not finite (an update overflowed)."""
        if not all(np.isfinite(p.data).all() for p in self.params):
            raise NonFiniteError(f"step {self.step}: the parameters are no longer finite (an "
                                 "update overflowed) and were not saved; lower [optimizer] "
                                 "lr; the last checkpoint is kept")
        if self.sharded:  # every rank takes part in gathering the optimizer state
            state = self.state()
            if self.rank == 0:
                self.on_checkpoint(state)
        elif self.rank == 0:
            self.on_checkpoint(self.state())

    def load_state(self, model: dict, optim_arrays: dict, meta: dict) -> None:
        """Continue from a checkpoint: parameters, optimizer state, scheduler and step (a
        sharded optimizer keeps its slice of the unsharded state; either run may write it)."""
        self.model.load_state_dict(model)
        self.optimizer.load_state_dict(state_dict_from_arrays(optim_arrays, meta["optimizer"]))
        if self.scheduler is not None and meta.get("scheduler"):
            self.scheduler.load_state_dict(meta["scheduler"])
        self.step = int(meta["step"])

    def close(self) -> None:
        if self.ddp is not None:
            self.ddp.close()
