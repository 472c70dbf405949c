"""The files of a run directory: job.toml, status.json, metrics.jsonl, timeline.json.

Written by the driver alone (driver.py). status.json and timeline.json are replaced
atomically; metrics.jsonl is appended and fsynced, and a torn last line (a writer killed
mid-append) is dropped with a warning rather than blocking a resume.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from .spec import dump_job
from .timeline import trace_document


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep a half-written file
        raise


class RunDir:
    """Writes the files of one run; readers never see a half-written status.json.

    status.json's "updated" is refreshed at least every HEARTBEAT_S while the driver
    lives (Driver.beat), so a reader can tell a run whose driver died from a quiet one.
    A resumed run keeps the restarts and failures of the runs before it.
    """

    def __init__(self, path, spec):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self._lock = threading.Lock()
        earlier = read_status(self.path) or {}
        self.status = {"state": "starting", "step": 0, "epoch": 0,
                       "world_size": spec.distributed.workers,
                       "restarts": earlier.get("restarts", 0),
                       "failures": earlier.get("failures", []), "workers": [],
                       "started": time.time()}
        _write_atomic(self.path / "job.toml", dump_job(spec))
        self.write_status()

    def write_status(self, **changes) -> None:
        """Update status.json with changes (and the time, as "updated")."""
        with self._lock:
            self.status.update(changes, updated=time.time())
            _write_atomic(self.path / "status.json", json.dumps(self.status, indent=1))

    def append_metrics(self, records: list) -> None:
        """Append one JSON line per record, durably."""
        if not records:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            # allow_nan=False: a bare NaN is not JSON; the loop writes null for those
            f.write("".join(json.dumps(record, allow_nan=False) + "\n" for record in records))
            f.flush()
            os.fsync(f.fileno())

    def forget_metrics_after(self, step: int, warn=print) -> None:
        """On resume from step N: drop records past N, which the resumed run logs again
        (with the same losses, the runs being bit-identical), so each step appears once."""
        file = self.path / "metrics.jsonl"
        if file.exists():
            kept = [r for r in read_metrics(self.path, warn) if r.get("step", 0) <= step]
            _write_atomic(file, "".join(json.dumps(r) + "\n" for r in kept))

    def write_timeline(self, events: list) -> None:
        """timeline.json: every rank's trace events."""
        _write_atomic(self.path / "timeline.json", json.dumps(trace_document(events)))


def read_metrics(path, warn=None) -> list:
    """Every record of RUN/metrics.jsonl; a torn last line is dropped (and warned about)."""
    file = Path(path) / "metrics.jsonl"
    if not file.exists():
        return []
    lines = [line for line in file.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(f"{file}: line {i + 1} is not JSON; the file was changed "
                                 "by hand or damaged: fix or remove that line") from None
            if warn is not None:
                warn(f"{file}: dropped a torn last line (a writer was killed mid-append)")
    return records


def read_status(path) -> dict | None:
    """RUN/status.json, or None if it is missing or unreadable."""
    try:
        return json.loads((Path(path) / "status.json").read_text())
    except (OSError, ValueError):
        return None


def mark_failed(path, error: str) -> None:
    """Set a run's status to failed when its own driver could not (it was killed)."""
    file = Path(path) / "status.json"
    try:
        status = json.loads(file.read_text())
    except (OSError, ValueError):
        return
    if status.get("state") in ("done", "stopped", "failed"):
        return
    status.update(state="failed", error=error, updated=time.time(), workers=[
        dict(w, state="failed") for w in status.get("workers", [])])
    _write_atomic(file, json.dumps(status, indent=1))
