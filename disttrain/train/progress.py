"""What the user sees while a job runs, and where the time went at the end.

Printed by the driver (the process that owns the run directory) for every launcher. In a
terminal it is a live bar (tqdm: steps, epoch, loss, samples/s, ETA) with the other lines
(evaluations, warnings, the summary) printed above it; anywhere else (CI, a log file, a
pipe, or without tqdm installed) it is one line per logged step, so logs stay greppable.
"""

from __future__ import annotations

import sys
import time


class Progress:
    """A live bar when stream is a terminal, else one line per logged step."""

    def __init__(self, stream=sys.stdout, quiet: bool = False):
        self.stream, self.quiet = stream, quiet
        self.total = 0
        self.started = time.perf_counter()
        self.compute_s = 0.0
        self.comm_s = 0.0
        self.bar = None
        self._tqdm = None if quiet else _tqdm_for(stream)

    def say(self, line: str) -> None:
        """A line on stdout (above the bar, if there is one), unless quiet."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def warn(self, line: str) -> None:
        """A warning on stderr, even when quiet."""
        if self.bar is not None:
            self.bar.write(f"warning: {line}", file=sys.stderr)
        else:
            print(f"warning: {line}", file=sys.stderr, flush=True)

    def start(self, step: int, total: int) -> None:
        """Training begins (or resumes, or restarts) at step of total."""
        self.close()
        self.total = total
        self.say(f"training from step {step} to {total}")
        if self._tqdm is not None:
            self.bar = self._tqdm(total=total, initial=step, file=self.stream, unit="step",
                                  dynamic_ncols=True, desc="train", mininterval=0.2)

    def update(self, record: dict) -> None:
        """Show a "train" or "eval" record (see disttrain.train.loop)."""
        if record["kind"] == "train":
            self.compute_s += record.get("compute_s", 0.0)
            self.comm_s += record.get("comm_s", 0.0)
            if self.bar is not None:
                self._advance(record)
                return
            width = len(str(self.total))
            loss = _number(record["loss"])
            skipped = f"  skipped {record['skipped']}" if record.get("skipped") else ""
            self.say(f"step {record['step']:>{width}}/{self.total}  epoch {record['epoch']:>3}  "
                     f"loss {loss}  lr {record['lr']:.4g}  "
                     f"{record['samples_per_s']:,.0f} samples/s{skipped}")
        elif record["kind"] == "eval":
            self.say(f"epoch {record['epoch']:>3} done  val_loss {_number(record['val_loss'])}  "
                     + _val_metrics(record))

    def finish(self, summary: dict, run_dir) -> None:
        """The summary line, where the time went, and where the run directory is."""
        self.close()
        wall = time.perf_counter() - self.started
        busy = self.compute_s + self.comm_s
        self.say(f"{'stopped' if summary.get('stopped') else 'done'} at step {summary['step']}: "
                 f"val_loss {_number(summary['val_loss'])}  {_val_metrics(summary)}")
        if busy:
            self.say(f"where the time went (rank 0, {busy:.2f} s in steps of {wall:.2f} s "
                     f"wall): compute {self.compute_s:.2f} s ({self.compute_s / busy:.0%}), "
                     f"waiting for all-reduce {self.comm_s:.2f} s ({self.comm_s / busy:.0%}); "
                     "the rest is startup, evaluation and checkpoints")
        self.say(f"run directory: {run_dir}")

    def close(self) -> None:
        """End the bar (it stays on screen as it was), so what follows starts a new line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _advance(self, record: dict) -> None:
        skipped = f"  skipped {record['skipped']}" if record.get("skipped") else ""
        self.bar.set_postfix_str(f"epoch {record['epoch']}  loss {_number(record['loss'])}  "
                                 f"{record['samples_per_s']:,.0f} samples/s{skipped}",
                                 refresh=False)  # update redraws, at most every mininterval
        self.bar.update(max(0, record["step"] - self.bar.n))


def _tqdm_for(stream):
    """tqdm's bar class when stream is a terminal and tqdm is installed, else None."""
    try:
        if not stream.isatty():
            return None
        from tqdm import tqdm
    except (AttributeError, ValueError, ImportError):  # no isatty, a closed stream, no tqdm
        return None
    return tqdm


def _val_metrics(record: dict) -> str:
    """The validation metrics other than val_loss, as the record has them (val_accuracy for
    classification, val_mse and val_mae for regression)."""
    return "  ".join(f"{key} {value:.2%}" if key == "val_accuracy" and value is not None
                     else f"{key} {_number(value)}" for key, value in record.items()
                     if key.startswith("val_") and key != "val_loss")


def _number(value) -> str:
    """A loss for a progress line: None (not finite) shows as a dash."""
    return "-" if value is None else f"{value:.4f}"
