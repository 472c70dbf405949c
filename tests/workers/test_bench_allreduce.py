"""Smoke test of `disttrain bench allreduce` with a tiny buffer: structure, never a time."""

from __future__ import annotations

import json

import pytest

from disttrain.launch.cli import main as cli_main


@pytest.mark.ray
@pytest.mark.slow
def test_allreduce_bench_through_the_cli(ray_session, tmp_path, capfd):
    out = tmp_path / "allreduce.json"
    argv = ["bench", "allreduce", "--backend", "coordinator,ring,ring-integrity", "--workers", "2",
            "--sizes", "0.0625", "--iters", "3", "--references", "mpi4py,gloo",
            "--json", str(out)]
    assert cli_main(argv) == 0
    text = capfd.readouterr().out
    for heading in ("median ms", "min ms", "GB/s med", "OPENBLAS_NUM_THREADS=1",
                    "load average", "at start", "at end", "cores"):
        assert heading in text
    result = json.loads(out.read_text())
    assert result["failures"] == []
    assert [r["backend"] for r in result["rows"]] == ["coordinator", "ring", "ring-integrity",
                                                      "mpi4py", "gloo"]
    for row in result["rows"]:
        assert row["iters"] == 3 and row["size_mb"] == 0.0625
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["algbw_median_gb_s"] > 0
    for when in ("machine_start", "machine_end"):
        assert result[when]["nproc"] >= 1 and len(result[when]["loadavg"]) == 3
        assert result[when]["openblas_num_threads"] == "1"
