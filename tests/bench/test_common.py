"""The helpers every benchmark shares: thread settings, child processes, statistics, tables."""

from __future__ import annotations

import os

import pytest

from disttrain.bench import common


def test_child_env_pins_threads_and_keeps_the_rest():
    env = common.child_env(threads=3, RANK="1")
    for name in common.THREAD_VARS:
        assert env[name] == "3"
    assert env["RANK"] == "1" and env["PATH"] == os.environ["PATH"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(common.REPO)
    assert common.thread_note(1) == ("OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "
                                     "MKL_NUM_THREADS=1")


def test_machine_facts_name_what_the_figures_depend_on():
    facts = common.machine()
    assert facts["nproc"] >= 1 and len(facts["loadavg"]) == 3
    assert facts["openblas_num_threads"] == os.environ.get("OPENBLAS_NUM_THREADS", "(unset)")
    lines = common.machine_facts()
    assert lines[0].startswith("machine: ") and f"numpy {facts['numpy']}" in lines[0]
    assert lines[1].startswith("environment: OPENBLAS_CORETYPE=")


def test_timing_stats_and_table():
    assert common.timing_stats([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "n": 3}
    table = common.format_table(["name", "ms"], [["a", "1.5"], ["long name", "10.25"]])
    assert table.splitlines() == ["name            ms", "------------------",
                                  "a              1.5", "long name    10.25"]
    fixed = common.format_table(["x", "y"], [["a", "1"]], widths=[3, 4])
    assert fixed.splitlines() == ["x     y", "-------", "a     1"]


def test_last_json_line_is_the_result():
    assert common.last_json_line("log line\n[1, 2.5]\n\n") == [1, 2.5]


def test_a_gloo_child_group_that_prints_nothing_names_each_exit_code():
    # the allreduce child rejects the size before it joins the group: both ranks exit 1
    with pytest.raises(RuntimeError, match=r"exit codes \[1, 1\]") as error:
        common.run_gloo_children("disttrain.bench.allreduce",
                                 ["--child", "gloo", "--sizes", "nan-mb"], 2, timeout_s=120)
    assert "nan-mb" in str(error.value)  # the end of the ranks' stderr comes with it


def test_a_gloo_child_group_returns_rank_0s_result(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "ranks_child.py").write_text(
        "from disttrain.bench.common import gloo_group, print_result\n"
        "import torch\n"
        "with gloo_group() as dist:\n"
        "    t = torch.tensor([dist.get_rank() + 1.0])\n"
        "    dist.all_reduce(t)\n"
        "    if dist.get_rank() == 0:\n"
        "        print_result([dist.get_world_size(), t.item(), torch.get_num_threads()])\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # child_env puts the repo before it
    assert common.run_gloo_children("ranks_child", [], 2, timeout_s=300) == [2, 3.0, 1]
