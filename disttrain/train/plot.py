"""`disttrain plot RUN`: one PNG of a run, drawn from its run directory alone.

Three panels: the training loss and val_loss against step; the other validation metrics
(val_accuracy for classification, val_mse/val_mae for regression: whichever val_* keys
the "eval" records hold); and, per rank, where the traced steps' time went (from
timeline.json). A run still going, or one with a torn last metrics line, is plotted as
far as it got; a missing timeline (it is written when the job ends) leaves a note in its
panel. Drawn with matplotlib's Agg canvas, not pyplot: no display, no global state.
"""

from __future__ import annotations

import json
from pathlib import Path

from .rundir import read_metrics, read_status

# 12 x 8 inches at 100 dpi: every plot is 1200 x 800 pixels.
WIDTH_IN, HEIGHT_IN, DPI = 12, 8, 100
PIXELS = (WIDTH_IN * DPI, HEIGHT_IN * DPI)
NEEDS_MATPLOTLIB = "disttrain plot needs matplotlib: pip install 'disttrain[watch]'"


class PlotError(ValueError):
    """A run that cannot be plotted (yet), or a file that cannot be written: one line."""


def plot_run(run_dir, out=None, warn=None) -> Path:
    """Write the plot of run_dir as a PNG to out (default RUN/plot.png); the path written."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "plot.png"
    records = _metrics(run_dir, warn)
    figure = _figure()
    top_left, top_right, bottom = _panels(figure)
    _plot_losses(top_left, records)
    _plot_val_metrics(top_right, records)
    _plot_rank_times(bottom, read_timeline(run_dir, warn))
    figure.suptitle(f"{run_dir.resolve().name}: {_headline(run_dir)}")
    try:
        figure.savefig(out, format="png", dpi=DPI)
    except OSError as error:
        raise PlotError(f"-o {out}: cannot write: {error.strerror or error}") from None
    return out


def _metrics(run_dir: Path, warn) -> list:
    """The train and eval records; a folder that is no run, or has none yet, is refused."""
    if read_status(run_dir) is None:
        raise PlotError(f"{run_dir}: not a run directory (no readable status.json); pass the "
                        "--run-dir of `disttrain train`")
    try:
        records = read_metrics(run_dir, warn)
    except (OSError, ValueError) as error:
        raise PlotError(str(error)) from None
    records = [r for r in records if r.get("kind") in ("train", "eval")]
    if not records:
        raise PlotError(f"{run_dir / 'metrics.jsonl'}: no metrics yet (the first is written "
                        "at step [job] log_every); try again later")
    return records


def read_timeline(run_dir, warn=None) -> list | None:
    """timeline.json's events, or None if the run has none (yet) or it is unreadable."""
    file = Path(run_dir) / "timeline.json"
    try:
        return json.loads(file.read_text())["traceEvents"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        if warn is not None:
            warn(f"{file}: unreadable ({error}); plotted without it")
        return None


def rank_times(events: list) -> dict:
    """Seconds per rank over the traced steps: {rank: {compute, all-reduce, waiting, steps}}.

    The compute track's spans include the time a rank waited for its all-reduce (the
    exposed wait), which is taken out; the all-reduce spans run beside backward."""
    ranks: dict = {}
    for event in events:
        if event.get("ph") != "X" or "dur" not in event:
            continue
        rank = str(event.get("pid", "")).removeprefix("rank ")
        if not rank.isdigit():
            continue
        times = ranks.setdefault(int(rank), {"compute": 0.0, "all-reduce": 0.0, "waiting": 0.0,
                                        "steps": set()})
        seconds = event["dur"] / 1e6
        if event.get("tid") == "compute":
            times["compute"] += seconds
            times["steps"].add(event.get("args", {}).get("step"))
        elif event.get("name", "").startswith("wait"):
            times["waiting"] += seconds
        else:
            times["all-reduce"] += seconds
    for times in ranks.values():
        times["compute"] = max(0.0, times["compute"] - times["waiting"])
        times["steps"] = len(times["steps"])
    return dict(sorted(ranks.items()))


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(NEEDS_MATPLOTLIB) from None
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _panels(figure):
    grid = figure.add_gridspec(2, 2)
    return (figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1]),
            figure.add_subplot(grid[1, :]))


def _series(records: list, kind: str, key: str):
    """(steps, values) of one key; a null value (a skipped step) is a gap."""
    rows = [r for r in records if r.get("kind") == kind and key in r]
    return ([r["step"] for r in rows],
            [float("nan") if r[key] is None else r[key] for r in rows])


def _plot_losses(axes, records: list) -> None:
    axes.plot(*_series(records, "train", "loss"), label="train loss", marker=".")
    steps, values = _series(records, "eval", "val_loss")
    if steps:
        axes.plot(steps, values, label="val_loss", marker="o")
    axes.set(title="loss", xlabel="step")
    axes.legend()
    axes.grid(alpha=0.3)


def _plot_val_metrics(axes, records: list) -> None:
    keys = sorted({k for r in records if r.get("kind") == "eval" for k in r
                   if k.startswith("val_") and k != "val_loss"})
    for key in keys:
        axes.plot(*_series(records, "eval", key), label=key, marker="o")
    axes.set(title="validation", xlabel="step")
    if keys:
        axes.legend()
    else:
        _note(axes, "no validation metrics yet\n(one per epoch; none with "
                    "[job] eval_every_epoch = false)")
    axes.grid(alpha=0.3)


def _plot_rank_times(axes, events: list | None) -> None:
    ranks = rank_times(events or [])
    if not ranks:
        _note(axes, "no timeline.json yet (written when the job ends)" if events is None
              else "timeline.json holds no steps")
        axes.set(title="time per rank")
        return
    height = 0.8 / 3
    parts = (("compute", "compute (forward, backward, optimizer.step)"),
             ("all-reduce", "all-reduce (beside backward)"),
             ("waiting", "waiting for all-reduce"))
    for i, (key, label) in enumerate(parts):
        axes.barh([rank - 0.4 + (i + 0.5) * height for rank in ranks],
                  [times[key] for times in ranks.values()], height=height, label=label)
    steps = max(times["steps"] for times in ranks.values())
    axes.set(title=f"time per rank over the first {steps} steps (timeline.json)",
             xlabel="seconds", yticks=list(ranks), yticklabels=[f"rank {r}" for r in ranks])
    axes.invert_yaxis()
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3, axis="x")


def _note(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes,
              color="gray")
    axes.set(xticks=[], yticks=[])


def _headline(run_dir: Path) -> str:
    status = read_status(run_dir) or {}
    workers = status.get("world_size", "?")
    return (f"{status.get('state', '?')} at step {status.get('step', '?')}, "
            f"epoch {status.get('epoch', '?')}, {workers} worker{'s' * (workers != 1)}")
