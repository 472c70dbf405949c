"""The hierarchical ring: numpy's answers, and failures that end every rank, never a hang.

Ranks are real processes (tests/workers/hier_main.py) that play nodes by name: ranks
given one node name share a shared-memory group on this machine, as ranks of one node do,
and only their leaders meet on the ring. A job across real network namespaces is in
tests/launch/test_hosts.py; one on Ray, trained, in tests/train/test_equivalence.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from disttrain.workers.comm.base import chunk_bounds, sum_in_rank_order
from disttrain.workers.comm.hier import plan
from tests.workers.helpers import digest, int_data, random_data

REPO = Path(__file__).resolve().parents[2]
SPLITS = {2: "a,b", 3: "a,b,a", 4: "a,a,b,b"}  # two "nodes"; for 3 the leaders are 0 and 1


class Job:
    """Rank processes of one hierarchical job, started at once; lines read as JSON."""

    def __init__(self, tmp_path, script: str, nodes: str, timeout_s: float = 30.0):
        world = len(nodes.split(","))
        folder = tmp_path / "rendezvous"
        folder.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "tests.workers.hier_main", script, str(r), str(world),
             nodes, str(folder), str(timeout_s)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(world)]

    def line(self, rank: int, timeout_s: float) -> dict:
        """The next JSON line of `rank`; fails (does not hang) after timeout_s."""
        proc = self.procs[rank]
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        assert ready, f"rank {rank} said nothing within {timeout_s} s"
        text = proc.stdout.readline()
        assert text, f"rank {rank} exited: {proc.stderr.read()[-3000:]}"
        return json.loads(text)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


@pytest.fixture
def job_factory(tmp_path):
    jobs = []

    def start(script, nodes, timeout_s=30.0):
        folder = tmp_path / str(len(jobs))
        folder.mkdir()
        jobs.append(Job(folder, script, nodes, timeout_s))
        return jobs[-1]

    yield start
    for job in jobs:
        job.close()


def test_plan_is_the_same_decision_for_every_layout():
    def infos(nodes, shm=True):
        return [{"node": n, "shm": shm} for n in nodes]

    assert plan(infos("aabb"), True).nodes == ((0, 1), (2, 3))
    assert plan(infos("abab"), True).nodes == ((0, 2), (1, 3))
    assert plan(infos("aabb"), True).mode == "hier"
    assert plan(infos("aabb"), "auto").mode == "hier"
    assert plan(infos("aaaa"), True).mode == "shm"  # one node: no ring at all
    assert plan(infos("aaaa"), "auto").mode == "flat"  # auto: on only across nodes
    assert plan(infos("abcd"), True).mode == "flat"  # one rank per node: nothing to share
    assert plan(infos("aabb", shm=False), True).mode == "flat"  # no shared memory here


# (every rank's node, the mode they agree on): two nodes on 2, 3 and 4 ranks; one node
@pytest.mark.parametrize("nodes,mode", [("a,b", "flat"), ("a,a", "shm"), ("a,b,a", "hier"),
                                        ("a,a,b,b", "hier"), ("a,b,b,b", "hier")])
def test_collectives_give_numpys_answers(job_factory, nodes, mode):
    world = len(nodes.split(","))
    job = job_factory("collectives", nodes)
    modes = {job.line(r, 60)["mode"] for r in range(world)}
    assert modes == {mode}
    check_collectives([job.line(r, 180) for r in range(world)])


def check_collectives(results: list) -> None:
    """hier_main's "collectives" results, one per rank, against numpy."""
    world = len(results)
    for r, res in enumerate(results):
        assert "error" not in res, res
        for key, value in res.items():
            kind, *rest = key.split("/")
            if kind == "ints":
                dtype, n = rest[0], int(rest[1])
                arrays = [int_data(p, n, dtype) for p in range(world)]
                assert value == digest(sum_in_rank_order(arrays, np.empty_like(arrays[0]))), key
            elif kind == "random":  # rounding may differ from numpy's; never between ranks
                assert value == results[0][key], key
            elif kind == "broadcast":
                dtype, n, root = rest[0], int(rest[1]), int(rest[2])
                assert value == digest(int_data(root, n, dtype)), key
        lo, hi = chunk_bounds(1001, world)[r]
        total = sum(int_data(p, 1001, "float64") for p in range(world))
        assert res["reduce_scatter"] == total[lo:hi].tolist()
        expected = np.concatenate([np.full(b - a, p + 1.0)
                                   for p, (a, b) in enumerate(chunk_bounds(1001, world))])
        assert res["allgather_"] == digest(expected)
        assert res["allgather"] == [{"rank": p, "values": [p, 1.5, None]} for p in range(world)]
        assert res["after_barrier"] == list(range(world))


def test_same_job_gives_the_same_bits_run_to_run(job_factory):
    runs = []
    for _ in range(2):
        job = job_factory("collectives", SPLITS[3])
        for r in range(3):
            job.line(r, 60)
        runs.append([job.line(r, 180) for r in range(3)])
    random_keys = [k for k in runs[0][0] if k.startswith("random/")]
    assert random_keys
    for k in random_keys:
        assert runs[0][0][k] == runs[1][0][k], k


# victim: a leader (0 leads node a, 2 leads node b) or a non-leader (1, 3), on 4 ranks
@pytest.mark.parametrize("victim", [0, 1, 2, 3])
def test_sigkill_mid_collective_fails_every_survivor(job_factory, victim):
    timeout_s = 10.0
    job = job_factory("until_error", SPLITS[4], timeout_s=timeout_s)
    for r in range(4):
        job.line(r, 60)
    time.sleep(0.5)  # a few all-reduces of 8 MB in
    os.kill(job.procs[victim].pid, signal.SIGKILL)
    killed = time.monotonic()
    for r in (r for r in range(4) if r != victim):
        res = job.line(r, timeout_s + 20)  # the collective timeout, plus start-up slack
        assert res.get("error") in ("PeerLost", "CollectiveAborted", "CollectiveTimeout"), res
        assert time.monotonic() - killed < timeout_s + 20
    for r in range(4):
        if r != victim:
            assert job.procs[r].wait(10) == 0


def test_out_of_step_rank_is_named(job_factory):
    job = job_factory("out_of_step", SPLITS[4], timeout_s=20.0)
    for r in range(4):
        job.line(r, 60)
    for r in range(4):
        res = job.line(r, 60)
        assert res.get("error") in ("StepMismatch", "CollectiveAborted"), res
        # rank 3 is at step 6, everyone else at step 5; named in the job's rank numbers
        assert "step 5" in res["message"] and "step 6" in res["message"], res
        assert "rank 3" in res["message"], res


def test_node_out_of_step_is_named_across_the_leaders_ring(job_factory):
    job = job_factory("node_out_of_step", SPLITS[4], timeout_s=20.0)
    for r in range(4):
        job.line(r, 60)
    for r in range(4):
        res = job.line(r, 60)
        assert res.get("error") in ("StepMismatch", "CollectiveAborted"), res
        # node b (ranks 2, 3) is at step 6, node a at step 5: their leaders are named
        assert "step 5" in res["message"] and "step 6" in res["message"], res
        assert "rank 0" in res["message"] and "rank 2" in res["message"], res


def test_make_communicator_names_the_values_hierarchical_takes():
    from disttrain.workers.comm import make_communicator

    with pytest.raises(ValueError, match=r"backend 'ring': hierarchical must be True, False "
                                         r"or 'auto', got 'yes'"):
        make_communicator("ring", rank=0, world_size=2, rendezvous=object(), secret="s",
                          hierarchical="yes")


# --- the sharded optimizer's reduce_scatter_ and allgather_ ------------------------------

def node_lists(nodes: str) -> list:
    """Each node's ranks, nodes in order of their lowest rank (as hier.plan groups them)."""
    groups: dict = {}
    for rank, name in enumerate(nodes.split(",")):
        groups.setdefault(name, []).append(rank)
    return list(groups.values())


def hier_scatter_order_sum(arrays: list, nodes: list) -> np.ndarray:
    """Each node's region summed as the hierarchical reduce-scatter does: every node's sum in
    local rank order, then region k over the nodes from node k + 1 round the leaders' ring to
    node k (the ring's reduce-scatter order)."""
    sums = [sum_in_rank_order([arrays[r] for r in m], np.empty_like(arrays[0])) for m in nodes]
    bounds = chunk_bounds(arrays[0].size, len(arrays))
    out = np.empty_like(arrays[0])
    for k, m in enumerate(nodes):
        for r in m:  # node k's chunks, contiguous or not ("a,b,a")
            lo, hi = bounds[r]
            out[lo:hi] = sums[(k + 1) % len(nodes)][lo:hi]
            for j in range(2, len(nodes) + 1):
                out[lo:hi] += sums[(k + j) % len(nodes)][lo:hi]
    return out


def check_chunks(results: list, nodes: str) -> None:
    """hier_main's "chunks" results against numpy: integer-valued sums exactly, random ones
    bit for bit in the hierarchical order, every gathered buffer exactly."""
    from tests.workers.hier_main import CHUNK_SIZES, gather_input

    world = len(results)
    for rank, res in enumerate(results):
        assert "error" not in res, (rank, res)
        for dtype in ("float32", "float64"):
            for n in CHUNK_SIZES:
                lo, hi = chunk_bounds(n, world)[rank]
                ints = [int_data(p, n, dtype) for p in range(world)]
                exact = sum_in_rank_order(ints, np.empty(n, dtype))
                assert res[f"rs/ints/{dtype}/{n}"] == digest(exact[lo:hi]), (rank, dtype, n)
                randoms = [random_data(p, n, dtype) for p in range(world)]
                ordered = hier_scatter_order_sum(randoms, node_lists(nodes))
                assert res[f"rs/random/{dtype}/{n}"] == digest(ordered[lo:hi]), (
                    rank, dtype, n)
                whole = np.concatenate([gather_input(p, world, n, dtype)[a:b] for p, (a, b)
                                        in enumerate(chunk_bounds(n, world))])
                assert res[f"ag/{dtype}/{n}"] == digest(whole), (rank, dtype, n)


# (nodes, mode): one node; two and three nodes of contiguous ranks, a node of one rank
# among them; and nodes whose ranks are not contiguous (the collectives run on a copy in
# node order: the same bytes on the network, the same bits as a contiguous layout's)
CHUNK_LAYOUTS = [("a,a", "shm"), ("a,a,a", "shm"), ("a,a,b", "hier"), ("a,a,b,b", "hier"),
                 ("a,b,b,b", "hier"), ("a,a,b,c", "hier"), ("a,b,a", "hier"),
                 ("a,b,a,b", "hier"), ("a,b,c,b,a", "hier")]


@pytest.mark.parametrize("nodes,mode", CHUNK_LAYOUTS)
def test_reduce_scatter_and_allgather_give_numpys_answers(job_factory, nodes, mode):
    world = len(nodes.split(","))
    job = job_factory("chunks", nodes)
    assert {job.line(r, 60)["mode"] for r in range(world)} == {mode}
    results = [job.line(r, 180) for r in range(world)]
    check_chunks(results, nodes)
    check_bytes(results, nodes)


def check_bytes(results: list, nodes: str) -> None:
    """A reduce-scatter and an all-gather each send one phase on the leaders' ring (every
    node region but one out of each leader), nothing on the control ring, and together
    about one all-reduce, where an all-reduce each would send two."""
    from tests.workers.hier_main import BYTES_N

    groups = node_lists(nodes)
    leaders = [m[0] for m in groups]
    bounds = chunk_bounds(BYTES_N, len(results))
    region_sizes = [sum(bounds[r][1] - bounds[r][0] for r in m) for m in groups]
    for rank, res in enumerate(results):
        scatter, gather, allreduce = res["bytes"]["leaders"]
        assert res["bytes"]["control"] == [0, 0, 0], (rank, res["bytes"])
        if rank not in leaders or len(groups) == 1:  # no leaders' ring for this rank
            assert (scatter, gather, allreduce) == (0, 0, 0), (rank, res["bytes"])
            continue
        k = leaders.index(rank)
        # Payload: every region but one (the reduce-scatter keeps its own, the all-gather
        # does not pass on the next leader's); headers add well under 4 KB.
        for sent, skipped in ((scatter, k), (gather, (k + 1) % len(groups))):
            payload = (BYTES_N - region_sizes[skipped]) * 4
            assert payload <= sent < payload + 4096, (rank, sent, payload)
        # About one all-reduce together (exactly, where the regions are of one size; the
        # all-reduce's chunks are), where the fallback would send two
        assert scatter + gather < 1.5 * allreduce, (rank, res["bytes"])


# (nodes, the ranks that call reduce_scatter_ while the others call allreduce_): a rank
# of one node (its shared memory sees both), a whole node (the leaders' ring sees both),
# and on one node
@pytest.mark.parametrize("nodes,scatterers", [("a,a,b,b", "1"), ("a,a,b,b", "2,3"),
                                              ("a,a,a", "2")])
def test_reduce_scatter_against_allreduce_names_both_calls(job_factory, nodes, scatterers):
    world = len(nodes.split(","))
    job = job_factory(f"mixed_calls:{scatterers}", nodes, timeout_s=20.0)
    for r in range(world):
        job.line(r, 60)
    for r in range(world):
        res = job.line(r, 60)
        assert res.get("error") in ("CollectiveError", "CollectiveAborted"), (r, res)
        # Named at the first header the two calls share, not a CollectiveTimeout
        assert "reduce_scatter #1" in res["message"] and "allreduce #1" in res["message"], (
            r, res)


# (nodes, mode, which ranks get pinned buffers): one node; two nodes; a node of one rank
# (its rank keeps plain buffers, nothing to share) beside a node of two
@pytest.mark.parametrize("nodes,mode,pinned", [("a,a,a", "shm", [True] * 3),
                                               ("a,a,b,b", "hier", [True] * 4),
                                               ("a,a,b", "hier", [True, True, False])])
def test_bucket_buffers_are_summed_in_place_with_numpys_answers(job_factory, nodes, mode,
                                                                pinned):
    from tests.workers.hier_main import SIZES, gather_input

    world = len(nodes.split(","))
    job = job_factory("pinned", nodes)
    assert {job.line(r, 60)["mode"] for r in range(world)} == {mode}
    results = [job.line(r, 180) for r in range(world)]
    for rank, res in enumerate(results):
        assert "error" not in res, (rank, res)
        assert res["pinned"] == pinned[rank], rank
        for dtype in ("float32", "float64"):
            for n in SIZES:
                exact = sum_in_rank_order([int_data(p, n, dtype) for p in range(world)],
                                          np.empty(n, dtype))
                lo, hi = chunk_bounds(n, world)[rank]
                assert res[f"allreduce/{dtype}/{n}"] == digest(exact), (rank, dtype, n)
                assert res[f"rs/{dtype}/{n}"] == digest(exact[lo:hi]), (rank, dtype, n)
                whole = np.concatenate([gather_input(p, world, n, dtype)[a:b] for p, (a, b)
                                        in enumerate(chunk_bounds(n, world))])
                assert res[f"ag/{dtype}/{n}"] == digest(whole), (rank, dtype, n)
        # the node's shared memory read a pinned rank's buffers in place
        assert (res["in_place"] > 0) == pinned[rank], (rank, res["in_place"])
