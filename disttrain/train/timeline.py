"""RUN/timeline.json: Chrome-trace events (chrome://tracing, Perfetto) of each rank's steps.

Each rank is a process row with two tracks: "compute" (zero_grad+forward, backward,
optimizer.step) and "communication" (each bucket's all-reduce and the exposed wait).
"""

from __future__ import annotations

US_PER_S = 1e6


def phase_events(rank: int, step: int, compute: list, communication: list) -> list:
    """Complete ("X") events for (name, start_s, end_s) spans on the two tracks of a rank."""
    common = {"ph": "X", "pid": f"rank {rank}", "args": {"step": step}}
    return [dict(common, name=name, tid=track, ts=start * US_PER_S,
                 dur=(end - start) * US_PER_S)
            for track, spans in (("compute", compute), ("communication", communication))
            for name, start, end in spans]


def trace_document(events: list) -> dict:
    """The JSON object a trace viewer loads."""
    return {"traceEvents": events, "displayTimeUnit": "ms"}
