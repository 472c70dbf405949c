"""What the user sees while a job runs, and where the time went at the end.

Printed by the driver (the process that owns the run directory) for every launcher.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """One line per logged step, so logs read the same in a terminal and in CI."""

    def __init__(self, stream=sys.stdout, quiet: bool = False):
        self.stream, self.quiet = stream, quiet
        self.total = 0
        self.started = time.perf_counter()
        self.compute_s = 0.0
        self.comm_s = 0.0

    def say(self, line: str) -> None:
        """A line on stdout, unless quiet."""
        if not self.quiet:
            print(line, file=self.stream, flush=True)

    def warn(self, line: str) -> None:
        """A warning on stderr, even when quiet."""
        print(f"warning: {line}", file=sys.stderr, flush=True)

    def start(self, step: int, total: int) -> None:
        """Training begins (or resumes) at step of total."""
        self.total = total
        self.say(f"training from step {step} to {total}")

    def update(self, record: dict) -> None:
        """One line for a "train" or "eval" record (see disttrain.train.loop)."""
        if record["kind"] == "train":
            self.compute_s += record.get("compute_s", 0.0)
            self.comm_s += record.get("comm_s", 0.0)
            width = len(str(self.total))
            loss = _number(record["loss"])
            skipped = f"  skipped {record['skipped']}" if record.get("skipped") else ""
            self.say(f"step {record['step']:>{width}}/{self.total}  epoch {record['epoch']:>3}  "
                     f"loss {loss}  lr {record['lr']:.4g}  "
                     f"{record['samples_per_s']:,.0f} samples/s{skipped}")
        elif record["kind"] == "eval":
            self.say(f"epoch {record['epoch']:>3} done  val_loss {_number(record['val_loss'])}  "
                     f"val_accuracy {record['val_accuracy']:.2%}")

    def finish(self, summary: dict, run_dir) -> None:
        """The summary line, where the time went, and where the run directory is."""
        wall = time.perf_counter() - self.started
        busy = self.compute_s + self.comm_s
        self.say(f"{'stopped' if summary.get('stopped') else 'done'} at step {summary['step']}: "
                 f"val_loss {_number(summary['val_loss'])}  "
                 f"val_accuracy {summary['val_accuracy']:.2%}")
        if busy:
            self.say(f"where the time went (rank 0, {busy:.2f} s in steps of {wall:.2f} s "
                     f"wall): compute {self.compute_s:.2f} s ({self.compute_s / busy:.0%}), "
                     f"waiting for all-reduce {self.comm_s:.2f} s ({self.comm_s / busy:.0%}); "
                     "the rest is startup, evaluation and checkpoints")
        self.say(f"run directory: {run_dir}")


def _number(value) -> str:
    """A loss for a progress line: None (not finite) shows as a dash."""
    return "-" if value is None else f"{value:.4f}"
