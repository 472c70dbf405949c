"""Your own training loop, run on every rank: what `train_loop(ctx)` is handed.

    def train_loop(ctx):
        model = ctx.prepare_model(build_model())            # DDP over the job's comm
        opt = ctx.prepare_optimizer(SGD(model.parameters(), lr=0.1))
        for x, y in ctx.data_shard():                       # this rank's share of a batch
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()                                 # all-reduces the gradients
            opt.step()
            ctx.report({"loss": loss.item()})

The loop owns each step; the Trainer (loop.py) still owns everything around it, exactly
as for a job file: the global batch and its shards, step numbers and seeds, logging,
agreeing on a stop, checkpoints of the prepared model and optimizer (so a restarted or
resumed loop continues bit-identical: data_shard resumes at the checkpoint's step), the
timeline and the summary. The model must be built the same way on every rank (DDP
broadcasts rank 0's parameters anyway), and the loss must be a mean over the local
shard, as DDP averages the ranks' gradients.
"""

from __future__ import annotations

import time

from ..autograd import manual_seed
from ..autograd.tensor import Tensor
from .checkpoint import TrainState
from .loop import Trainer


class LoopContext:
    """One rank's view of the job for a user's train loop."""

    def __init__(self, trainer: Trainer, state: TrainState | None, should_stop):
        self._trainer, self._state, self._should_stop = trainer, state, should_stop
        self._reported: dict = {}
        self._started = time.perf_counter()
        manual_seed(trainer.spec.job.seed)  # the same initial weights on every rank

    rank = property(lambda self: self._trainer.rank)
    world_size = property(lambda self: self._trainer.world_size)
    comm = property(lambda self: self._trainer.comm)
    spec = property(lambda self: self._trainer.spec)
    step = property(lambda self: self._trainer.step, doc="steps taken so far")
    total_steps = property(lambda self: self._trainer.total_steps)
    input_width = property(lambda self: self._trainer.train_set.arrays[0].shape[1])
    output_width = property(lambda self: self._trainer.n_outputs)

    def prepare_model(self, model):
        """Wrap model in DistributedDataParallel over the job's communicator; use what it
        returns for the forward pass. Its state is what checkpoints hold."""
        self._trainer.attach_model(model)
        return self._trainer.ddp

    def prepare_optimizer(self, optimizer):
        """Register optimizer (over the prepared model's parameters) for checkpoints and
        the job's [scheduler]; returns it."""
        if self._trainer.model is None:
            raise RuntimeError("ctx.prepare_optimizer: call ctx.prepare_model(model) first; "
                               "the optimizer must hold that model's parameters")
        if self._trainer.sharded:
            raise ValueError("[distributed] shard_optimizer is not supported with a train_loop "
                             "of your own yet; drop it, or train from the job file's [model]")
        self._trainer.attach_optimizer(optimizer)
        return optimizer

    def data_shard(self):
        """(x, y) Tensors of this rank's share of each global batch, one per step, from the
        step the run resumes at to the last one (or a stop every rank agreed on)."""
        trainer = self._trainer
        if trainer.model is None or trainer.optimizer is None:
            raise RuntimeError("ctx.data_shard: call ctx.prepare_model(model) and "
                               "ctx.prepare_optimizer(optimizer) before iterating")
        if self._state is not None:  # a restart or --resume: continue where it stopped
            trainer.load_state(*self._state)
            self._state = None
        for x, y in trainer.batches(self._should_stop):
            trainer.begin_step()
            waited, started = trainer.ddp.wait_seconds, time.perf_counter()
            yield Tensor._make(x), Tensor._make(y)
            trainer.end_step(time.perf_counter() - started, trainer.ddp.wait_seconds - waited)
            trainer.note_loss(self._reported.pop("loss", None))

    def report(self, metrics: dict) -> None:
        """This step's metrics; "loss" (this rank's local loss) is averaged over the ranks
        and logged every [job] log_every steps, as for a job file."""
        self._reported.update(metrics)

    def summary(self) -> dict:
        """The final checkpoint, trace and summary (after the loop returns)."""
        if self._trainer.model is None or self._trainer.optimizer is None:
            raise RuntimeError("train_loop returned without calling ctx.prepare_model and "
                               "ctx.prepare_optimizer: there is nothing to save")
        return self._trainer.finish(self._started)
