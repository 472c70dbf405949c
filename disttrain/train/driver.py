"""The driver: the one writer of the run directory and the one voice to the user.

Every job has exactly one driver: the `disttrain train` process for local and Ray jobs
(also when it joins a remote cluster with --address), and rank 0 for MPI jobs. Ranks
hand it their records and checkpoints through run_rank's callbacks (from a Ray worker on
another node, through Ray's object store); it writes RUN atomically and prints progress.
On resume it reads the newest valid checkpoint from RUN and hands it to rank 0. So the
whole run directory is on the driver's machine, and a cluster needs no shared disk.
"""

from __future__ import annotations

import contextlib
import threading
import time

from .checkpoint import (
    TrainState,
    latest_valid_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    save_final_model,
    sweep_temporaries,
)
from .progress import Progress
from .rundir import RunDir
from .spec import NEEDS_TENSORBOARDX, SpecError

# status.json's "updated" is refreshed at least this often while the driver lives.
HEARTBEAT_S = 5.0


class Driver:
    """Owns RUN for one job: status, metrics, checkpoints, final model, timeline."""

    def __init__(self, run_dir, spec, progress: Progress | None = None):
        self.board = Board() if spec.job.tensorboard else None  # before anything is written
        self.run = RunDir(run_dir, spec)
        self.spec = spec
        self.progress = progress or Progress(quiet=True)
        self.total_steps = None
        self.resumed_from = None
        self.trace: list = []
        for path in sweep_temporaries(self.path):
            self.progress.warn(f"removed {path}, left by a writer that was killed")
        self._ended = threading.Event()
        threading.Thread(target=self._beat, daemon=True, name="status-heartbeat").start()

    @property
    def path(self):
        return self.run.path

    def resume_state(self) -> TrainState | None:
        """The newest valid checkpoint (those that fail their checksums are reported and
        skipped); metrics past it are dropped, since the resumed run logs them again."""
        found = latest_valid_checkpoint(self.path, report=self.progress.warn)
        step = 0 if found is None else int(found[1].meta["step"])
        if found is not None:
            self.resumed_from = found[0]
            self.progress.say(f"resumed from {found[0].name} (step {step})")
            self.run.write_status(resumed_from_step=step)
        self.run.forget_metrics_after(step, warn=self.progress.warn)
        return None if found is None else found[1]

    def mark(self, phase: str, at: float | None = None) -> None:
        """The wall-clock time `phase` of the job's start was first reached, kept in
        status.json's "startup" (process, ray, placed, joined, started, first_step), so
        `disttrain bench startup` can split the time to the first step."""
        startup = self.run.status.get("startup", {})
        if phase not in startup:
            self.run.write_status(startup={**startup, phase: time.time() if at is None else at})

    def set_workers(self, workers: list) -> None:
        """Record where each rank runs: [{rank, node, pid, ...}]."""
        self.run.write_status(workers=[dict(w, state="running") for w in workers])

    def on_record(self, record: dict) -> None:
        """Take one record from rank 0 (see run_rank for the kinds)."""
        kind = record["kind"]
        if kind == "start":
            self.mark("started", record.get("time"))  # rank 0's clock, as first_step's
            if "build_s" in record:  # rank 0's data load and model build (the first start)
                self.mark("build_s", record["build_s"])
            self.total_steps = record["total_steps"]
            self.run.write_status(state="running", step=record["step"])
            if self.board is not None:
                with self._writing("tensorboard/"):
                    self.board.open(self.path / "tensorboard", record["step"])
            self.progress.start(record["step"], record["total_steps"])
        elif kind in ("train", "eval"):
            if kind == "train":  # with log_every = 1, the end of the first step
                self.mark("first_step", record["time"])
            with self._writing("metrics.jsonl"):
                self.run.append_metrics([record])
                self.run.write_status(step=record["step"], epoch=record["epoch"])
            if self.board is not None:
                with self._writing("tensorboard/"):
                    self.board.write(record)
            self.progress.update(record)
        elif kind == "trace":
            self.trace += record["events"]
        elif kind == "warning":
            self.progress.warn(record["message"])
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    def on_checkpoint(self, state: TrainState) -> None:
        """Write rank 0's state as RUN/checkpoints/step-N (and RUN/final at the last step)."""
        with self._writing(f"the checkpoint of step {state.meta['step']}"):
            save_checkpoint(self.path, state)
            if self.total_steps is not None and state.meta["step"] >= self.total_steps:
                save_final_model(self.path, state.model)
        prune_checkpoints(self.path, self.spec.job.keep_checkpoints, also_keep=self.resumed_from)

    def finish(self, summary: dict) -> None:
        """The job ended (done, or stopped on request): timeline, status, summary line."""
        state = "stopped" if summary["stopped"] else "done"
        self._ended.set()
        if self.board is not None:
            with self._writing("tensorboard/"):
                self.board.close()
        self.run.write_timeline(self.trace)
        self.run.write_status(state=state, step=summary["step"], workers=[
            dict(w, state=state) for w in self.run.status["workers"]],
            # the final evaluation (the summary line's), for readers of the run
            final={k: v for k, v in summary.items() if k.startswith("val_")})
        self.progress.finish(summary, self.path)

    def fail(self, error: BaseException | str) -> None:
        """The job failed: keep what timeline there is, and say why in status.json, as far
        as the disk allows (a full disk is often why it failed)."""
        self._ended.set()
        self.progress.close()
        for write in (*([self.board.close] if self.board is not None else []),
                      lambda: self.run.write_timeline(self.trace),
                      lambda: self.run.write_status(state="failed", error=str(error), workers=[
                          dict(w, state="failed") for w in self.run.status["workers"]])):
            try:
                write()
            except OSError as also:
                self.progress.warn(f"could not record the failure in {self.path}: {also}")

    @contextlib.contextmanager
    def _writing(self, what: str):
        """An OSError while writing RUN becomes one line naming the folder and the cause."""
        try:
            yield
        except OSError as error:
            raise OSError(error.errno, f"{self.path}: cannot write {what}: "
                                       f"{error.strerror or error}") from None

    def _beat(self) -> None:
        while not self._ended.wait(HEARTBEAT_S):
            try:
                self.run.write_status()
            except OSError:
                pass  # the next record or the end reports a disk problem


class Board:
    """TensorBoard scalars in RUN/tensorboard/, through tensorboardX (no torch needed).

    Tags are the record's kind and key, as in metrics.jsonl ("train/loss", "eval/val_loss"),
    at the record's step and wall-clock time; each record is flushed, so TensorBoard shows
    a live run. Each start opens a new event file; a resume or a restart from the
    checkpoint of step N opens it with purge_step=N+1, so TensorBoard hides what an earlier
    attempt logged past N, which the resumed run logs again (as metrics.jsonl drops it).
    """

    TRAIN_KEYS = ("loss", "lr", "samples_per_s")

    def __init__(self):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise SpecError(NEEDS_TENSORBOARDX) from None
        self._writer_class, self.writer = SummaryWriter, None

    def open(self, folder, step: int) -> None:
        """A new event file for a run that starts (or starts again) after step."""
        self.close()
        again = folder.is_dir() and any(folder.iterdir())
        self.writer = self._writer_class(logdir=str(folder), purge_step=step + 1 if again
                                         else None)

    def write(self, record: dict) -> None:
        if self.writer is None:
            return
        keys = (self.TRAIN_KEYS if record["kind"] == "train"
                else [k for k in record if k.startswith("val_")])
        for key in keys:
            if isinstance(record.get(key), int | float):  # None: a step that was skipped
                self.writer.add_scalar(f"{record['kind']}/{key}", record[key],
                                       global_step=record["step"], walltime=record.get("time"))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
