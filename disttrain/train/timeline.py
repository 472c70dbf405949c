"""RUN/timeline.json: Chrome-trace events (chrome://tracing, Perfetto) of each rank's steps.

Each rank is a process row with two tracks: "compute" (zero_grad+forward, backward,
optimizer.step) and "communication" (each bucket's all-reduce and the exposed wait).
An elastic job's resizes are instant events across all rows (resize_event).
Timestamps are wall-clock microseconds since the epoch, so ranks on different hosts line
up (as far as their clocks agree); spans are measured with perf_counter and shifted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

US_PER_S = 1e6
# perf_counter has no fixed origin: this process's offset to the wall clock, taken once.
WALL_MINUS_PERF_S = time.time() - time.perf_counter()


def phase_events(rank: int, step: int, compute: list, communication: list) -> list:
    """Complete ("X") events for (name, start_s, end_s) spans on the two tracks of a rank."""
    common = {"ph": "X", "pid": f"rank {rank}", "args": {"step": step}}
    return [dict(common, name=name, tid=track, ts=(start + WALL_MINUS_PERF_S) * US_PER_S,
                 dur=(end - start) * US_PER_S)
            for track, spans in (("compute", compute), ("communication", communication))
            for name, start, end in spans]


def resize_event(step: int, old: int, new: int, reason: str, at: float) -> dict:
    """A global instant ("i") event marking an elastic job's resize at wall-clock `at`."""
    return {"name": f"resize {old} -> {new} workers", "ph": "i", "s": "g", "pid": "supervisor",
            "tid": "resizes", "ts": at * US_PER_S, "args": {"step": step, "reason": reason}}


def trace_document(events: list) -> dict:
    """The JSON object a trace viewer loads."""
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def process_started() -> float:
    """This process's start, wall-clock seconds (from /proc: the kernel's record, so the
    interpreter's start and the imports count)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # starttime, field 22 of stat(5), in clock ticks since boot
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text()
                    .splitlines() if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
