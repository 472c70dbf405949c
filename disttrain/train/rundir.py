"""The run directory: job.toml, status.json, metrics.jsonl, timeline.json (DESIGN.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .spec import dump_job


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunDir:
    """Writes the files of one run; readers never see a half-written status.json."""

    def __init__(self, path, spec):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self.status = {"state": "starting", "step": 0, "epoch": 0,
                       "world_size": spec.distributed.workers, "restarts": 0, "workers": [],
                       "started": time.time()}
        _write_atomic(self.path / "job.toml", dump_job(spec))
        self.write_status()

    def write_status(self, **changes) -> None:
        self.status.update(changes, updated=time.time())
        _write_atomic(self.path / "status.json", json.dumps(self.status, indent=1))

    def append_metrics(self, records: list) -> None:
        if not records:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")

    def forget_metrics_after(self, step: int) -> None:
        """On resume from step N: drop records past N, which the resumed run logs again
        (with the same losses, the runs being bit-identical), so each step appears once."""
        file = self.path / "metrics.jsonl"
        if not file.exists():
            return
        kept = [line for line in file.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        _write_atomic(file, "".join(line + "\n" for line in kept))

    def write_timeline(self, events: list) -> None:
        _write_atomic(self.path / "timeline.json",
                      json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))


def read_metrics(path) -> list:
    """Every record of RUN/metrics.jsonl."""
    file = Path(path) / "metrics.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
