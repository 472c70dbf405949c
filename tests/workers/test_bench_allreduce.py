"""Smoke test of `disttrain bench allreduce` with a tiny buffer: structure, never a time."""

from __future__ import annotations

import json

import pytest

from disttrain.launch.cli import main as cli_main


@pytest.mark.ray
@pytest.mark.slow
def test_allreduce_bench_through_the_cli(ray_session, tmp_path, capfd):
    out = tmp_path / "allreduce.json"
    argv = ["bench", "allreduce", "--backend", "coordinator,coordinator-pinned,ring,ring-integrity",
            "--workers", "2",
            "--sizes", "0.0625", "--iters", "3",
            "--references", "tcp-oneway,tcp-both-ways,mpi4py,gloo",
            "--json", str(out)]
    assert cli_main(argv) == 0
    text = capfd.readouterr().out
    for heading in ("median ms", "min ms", "GB/s med", "bus GB/s", "x oneway", "x gloo",
                    "OPENBLAS_NUM_THREADS=1",
                    "load average", "at start", "at end", "cores"):
        assert heading in text
    result = json.loads(out.read_text())
    assert result["failures"] == []
    rows = {r["backend"]: r for r in result["rows"]}
    assert [r["backend"] for r in result["rows"]] == [
        "coordinator", "coordinator-pinned", "ring", "ring-integrity", "tcp-oneway",
        "tcp-both-ways", "mpi4py", "gloo"]
    for row in result["rows"]:
        assert row["iters"] == 3 and row["size_mb"] == 0.0625
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert row["algbw_median_gb_s"] > 0
        # On 2 workers an all-reduce's bus bandwidth is its algorithm bandwidth (2(W-1)/W = 1),
        # and so is a raw stream's; every ratio is against the rows of this run.
        assert row["busbw_median_gb_s"] == row["algbw_median_gb_s"]
        assert row["vs_tcp_oneway"] == round(
            row["busbw_median_gb_s"] / rows["tcp-oneway"]["busbw_median_gb_s"], 3)
        assert row["vs_gloo"] == round(rows["gloo"]["median_ms"] / row["median_ms"], 3)
    assert rows["tcp-oneway"]["vs_tcp_oneway"] == 1.0 and rows["gloo"]["vs_gloo"] == 1.0
    # The raw rows are in the printed table, beside the backends they bound.
    assert "tcp-oneway" in text and "tcp-both-ways" in text
    for when in ("machine_start", "machine_end"):
        assert result[when]["nproc"] >= 1 and len(result[when]["loadavg"]) == 3
        assert result[when]["openblas_num_threads"] == "1"


@pytest.mark.ray
@pytest.mark.slow
def test_raw_tcp_rows_on_three_workers(ray_session, tmp_path, capfd):
    """The raw streams run on any world size (the one-way stream's answer goes round the
    ring), and bus bandwidth is 2(W-1)/W of algbw for an all-reduce, algbw for a stream."""
    out = tmp_path / "allreduce.json"
    argv = ["bench", "allreduce", "--backend", "ring", "--workers", "3", "--sizes", "0.0625",
            "--iters", "2", "--references", "tcp-oneway,tcp-both-ways", "--json", str(out)]
    assert cli_main(argv) == 0
    rows = {r["backend"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"ring", "tcp-oneway", "tcp-both-ways"}
    ring_row = rows["ring"]
    assert ring_row["busbw_median_gb_s"] == pytest.approx(
        ring_row["algbw_median_gb_s"] * 4 / 3, abs=2e-3)
    for name in ("tcp-oneway", "tcp-both-ways"):
        assert rows[name]["busbw_median_gb_s"] == rows[name]["algbw_median_gb_s"]
        assert rows[name]["vs_gloo"] is None  # gloo did not run
    assert "x oneway" in capfd.readouterr().out
