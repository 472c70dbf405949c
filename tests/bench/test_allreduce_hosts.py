"""Smoke test of `disttrain bench allreduce --hosts 2` with a tiny buffer: the table's
structure and ratios, and that no namespace is left behind; never a time."""

from __future__ import annotations

import json
import subprocess

import pytest

from disttrain.bench.netns import unavailable
from disttrain.launch.cli import main as cli_main


def _namespaces() -> set:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


@pytest.mark.slow
def test_flat_and_hierarchical_ring_beside_gloo_across_two_namespaces(tmp_path, capfd):
    if (why := unavailable()) is not None:
        pytest.skip(why)
    before = _namespaces()
    out = tmp_path / "hosts.json"
    argv = ["bench", "allreduce", "--hosts", "2", "--per-host", "2", "--sizes", "0.0625",
            "--iters", "2", "--backend", "ring,ring-hier,ring-hier-integrity,gloo",
            "--json", str(out)]
    assert cli_main(argv) == 0
    text = capfd.readouterr().out
    for needle in ("2 namespaces x 2 ranks over one veth pair", "OPENBLAS_NUM_THREADS=1",
                   "load average", "x gloo", "ring-hier at 0.0625 MB:"):
        assert needle in text, text
    result = json.loads(out.read_text())
    assert result["failures"] == []
    rows = {r["backend"]: r for r in result["rows"]}
    assert list(rows) == ["ring", "ring-hier", "ring-hier-integrity", "gloo"]
    for row in rows.values():
        assert row["workers"] == 4 and row["iters"] == 2
        assert 0 < row["min_ms"] <= row["median_ms"]
        assert row["vs_gloo"] == round(rows["gloo"]["median_ms"] / row["median_ms"], 3)
    assert rows["ring-hier"]["vs_flat"] == round(
        rows["ring"]["median_ms"] / rows["ring-hier"]["median_ms"], 3)
    assert rows["ring-hier-integrity"]["vs_flat"] is None  # no flat ring with tags ran
    assert rows["gloo"]["vs_flat"] is None
    left = {ns for ns in _namespaces() - before if ns.startswith("dtbench")}
    assert left == set()  # both namespaces (and the veth pair) are gone
