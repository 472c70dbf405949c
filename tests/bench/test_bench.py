"""Smoke tests of `disttrain bench step` and `disttrain bench scaling` with tiny sizes.

They check the structure of each benchmark's output and that the implementations compared
do equal work; never a time. The Ray and mpiexec paths of the scaling benchmark are
marked slow.
"""

from __future__ import annotations

import json

import pytest

from disttrain.bench import scaling, step
from disttrain.launch.cli import main as cli_main

TINY_STEP = ["--steps", "4", "--warmup", "1", "--rounds", "2", "--threads", "1",
             "--sizes", "32,16,16,4", "--batch", "8", "--graph-ops", "20",
             "--graph-iters", "4"]
TINY_SCALING = dict(sizes=(32, 16, 16, 4), batch=8, steps=2, warmup=2, log_every=2)


def _check_stats(stats: dict, n: int) -> None:
    assert set(stats) == {"median", "min", "n"}
    assert stats["n"] == n
    assert 0 < stats["min"] <= stats["median"]


def test_step_through_the_cli(tmp_path, capfd):
    out = tmp_path / "step.json"
    assert cli_main(["bench", "step", *TINY_STEP, "--threads", "1,2", "--json", str(out)]) == 0
    text = capfd.readouterr().out
    for heading in ("MLP 32-16-16-4", "first-step loss", "dt/numpy med", "small-op graph",
                    "load average at start", "torch.set_num_threads(2)"):
        assert heading in text
    result = json.loads(out.read_text())
    assert [r["threads"] for r in result["mlp"]] == [1, 2]
    assert [r["threads"] for r in result["graph"]] == [1, 2]
    for row in result["mlp"]:
        for name in step.IMPLS:
            _check_stats(row[name], 4)
        for key in ("disttrain/numpy", "disttrain/torch", "disttrain/numpy (min)",
                    "disttrain/torch (min)"):
            assert row[key] > 0
    for row in result["graph"]:
        assert row["ops"] == 21  # 20 ops and the final sum
        for lib in ("disttrain", "torch"):
            _check_stats(row[lib], 4)
        assert row["max_value_diff"] < 1e-4 and row["max_grad_diff"] < 1e-4


def test_cnn_step_through_the_cli(tmp_path, capfd):
    out = tmp_path / "cnn.json"
    assert cli_main(["bench", "step", "--model", "cnn", "--steps", "2", "--warmup", "1",
                     "--rounds", "1", "--threads", "1", "--batch", "4", "--json", str(out)]) == 0
    text = capfd.readouterr().out
    for heading in ("CNN conv5x5", "dt/torch med", "load average at start",
                    "torch.set_num_threads(1)"):
        assert heading in text
    rows = json.loads(out.read_text())["cnn"]
    assert [(r["input"], r["stride"], r["padding"]) for r in rows] == [
        (f"{c}x{s}x{s}", stride, pad) for c, s, stride, pad in step.CNN_SHAPES]
    for row in rows:
        for lib in ("disttrain", "torch"):
            _check_stats(row[lib], 2)
        assert row["check"]["max_loss_diff"] < 1e-5 and row["check"]["max_weight_diff"] < 1e-5


def test_step_implementations_do_equal_work():
    check = step.check_equal_work(step.make_problem((32, 16, 16, 4), batch=8))
    assert set(check["loss"]) == set(step.IMPLS)
    assert check["max_loss_diff"] < 1e-5
    assert check["max_weight_diff"] < 1e-5


def test_scaling_tables_from_rows():
    rows = [{"system": s, "backend": b, "workers": w, "samples_per_s": sps, "step_ms": 1.0,
             "compute_ms": 0.7, "comm_ms": 0.2, "alone_ms": alone}
            for s, b, w, sps, alone in (("disttrain", "coordinator", 1, 100.0, 0.8),
                                        ("disttrain", "coordinator", 2, 190.0, 0.5),
                                        ("torch", "gloo", 1, 100.0, 0.9),
                                        ("torch", "gloo", 2, 150.0, 0.6))]
    rows = scaling.with_scaling(rows)
    assert [round(r["scaling"], 2) for r in rows] == [1.0, 1.9, 1.0, 1.5]
    # The ceiling: the 1-worker step with no all-reduce over this row's (0.8 / 0.5, 0.9 / 0.6),
    # not the compute the DDP run measured (0.7 in every row).
    assert [round(r["ceiling"], 2) for r in rows] == [1.0, 1.6, 1.0, 1.5]
    table = scaling.format_rows(rows)
    assert "1.90 (ok)" in table and "1.50 (MISS)" in table and "1.60" in table
    summary = scaling.summarize_repeats([rows, rows])
    assert len(summary) == 4 and all(r["repeats"] == 2 for r in summary)
    text = scaling.format_summary(summary)
    assert "samples/s med [min-max]" in text and "1.60 [1.60-1.60]" in text


def test_scaling_spread_deciles_and_the_scaling_of_the_fastest_steps():
    one = scaling.spread([float(v) for v in range(10, 0, -1)], [0.0] * 10)
    # the values at ranks round(q * 9) of ten: 1, 4 (round half to even) and 8
    assert one == {"step_ms": [2.0, 5.0, 9.0], "comm_ms": [0.0, 0.0, 0.0], "n": 10}
    two = scaling.spread([1.25, 5.0, 5.0, 9.0], [0.25, 1.0, 1.0, 3.0])
    assert two["step_ms"] == [1.25, 5.0, 9.0] and two["comm_ms"] == [0.25, 1.0, 3.0]
    rows = [{"system": "disttrain", "backend": "mpi", "workers": 1, "spread": one},
            {"system": "disttrain", "backend": "mpi", "workers": 2, "spread": two},
            {"system": "torch", "backend": "gloo", "workers": 2,
             "spread": {"step_ms": [1.0, 2.0, 3.0], "comm_ms": None, "n": 8}}]
    text = scaling.format_spread(rows, log_every=1)
    assert "2.0/5.0/9.0" in text and "0.2/1.0/3.0" in text
    assert "1.60" in text  # p10 step of 1 worker (2.0) over that of 2 (1.25)
    assert "rank 0's each step" in text


def test_scaling_job_covers_the_steps_in_one_epoch():
    from disttrain.train.builders import build_datasets
    from disttrain.train.spec import spec_from_dict

    job = scaling.job_dict(2, "coordinator", (32, 16, 16, 4), batch=8, steps=6, warmup=4,
                           log_every=2)
    spec = spec_from_dict(job)
    train, _ = build_datasets(spec)
    assert len(train) // spec.job.batch_size >= 10
    assert spec.data.name == "synthetic" and spec.job.blas_threads == 1


def _check_rows(rows: list[dict], system: str, backend: str) -> None:
    assert [(r["system"], r["backend"], r["workers"]) for r in rows] == [
        (system, backend, 1), (system, backend, 2)]
    for r in rows:
        assert r["samples_per_s"] > 0 and r["step_ms"] > 0
        assert r["compute_ms"] > 0 and r["comm_ms"] >= 0 and r["alone_ms"] > 0
    assert rows[1]["ceiling"] == rows[0]["alone_ms"] / rows[1]["alone_ms"]
    assert rows[0]["scaling"] == 1.0 and rows[1]["scaling"] > 0
    for r in rows:  # deciles in order, of as many steps (or intervals) as were timed
        p10, p50, p90 = r["spread"]["step_ms"]
        assert 0 < p10 <= p50 <= p90 and r["spread"]["n"] > 0


def test_scaling_torch_ddp():
    result = scaling.run(workers=(1, 2), systems=("torch",), log=lambda *a, **k: None,
                         **TINY_SCALING)
    _check_rows(result["runs"][0], "torch", "gloo")
    text = scaling.report(result)
    assert "scaling" in text and "load average at start" in text


@pytest.mark.slow
@pytest.mark.ray
def test_scaling_disttrain_on_ray(ray_session, tmp_path):
    result = scaling.run(workers=(1, 2), systems=("disttrain",), backends=("coordinator",),
                         run_root=tmp_path, log=lambda *a, **k: None, **TINY_SCALING)
    _check_rows(result["runs"][0], "disttrain", "coordinator")


@pytest.mark.slow
@pytest.mark.mpi
def test_scaling_disttrain_under_mpiexec(tmp_path):
    result = scaling.run(workers=(1, 2), systems=("disttrain",), backends=("mpi",),
                         run_root=tmp_path, log=lambda *a, **k: None, **TINY_SCALING)
    _check_rows(result["runs"][0], "disttrain", "mpi")


@pytest.mark.slow
def test_startup_phases_are_kept_in_order_in_status(ray_session, tmp_path):
    """What `disttrain bench startup` reads: each phase's wall-clock time in status.json."""
    from tests.train.helpers import run_on_ray, small_job

    run_on_ray(small_job(**{"distributed.backend": "coordinator", "distributed.workers": 2,
                            "job.log_every": 1, "job.max_steps": 3}), tmp_path)
    startup = json.loads((tmp_path / "status.json").read_text())["startup"]
    order = ["process", "ray", "placed", "joined", "started", "first_step"]
    assert sorted(startup) == sorted([*order, "build_s"])
    times = [startup[phase] for phase in order]
    assert times == sorted(times), startup
    assert startup["build_s"] > 0


@pytest.mark.slow
def test_recovery_through_the_cli(tmp_path, capfd):
    """Both paths recover from the SIGKILL; the table names them and the figures it reads."""
    out = tmp_path / "recovery.json"
    assert cli_main(["bench", "recovery", "--steps", "300", "--kill-at", "60",
                     "--json", str(out)]) == 0
    text = capfd.readouterr().out
    for heading in ("lost s", "recomputed", "ms/step", "elastic", "restart"):
        assert heading in text
    result = json.loads(out.read_text())
    elastic, restart = result["results"]["elastic"], result["results"]["restart"]
    assert (elastic["restarts"], elastic["resizes"]) == (0, 1)
    assert (restart["restarts"], restart["resizes"]) == (1, 0)
    assert 0 <= elastic["recomputed"] <= 1  # the promise: at most the step in flight
    assert restart["recomputed"] == restart["killed_at_step"] % 50  # since the checkpoint
    assert result["max_param_diff"] < 1e-9
