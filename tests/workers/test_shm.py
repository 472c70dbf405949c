"""The coordinator backend's shared-memory data path (workers/comm/shm.py).

Ray-free tests drive ShmGroup directly, with ranks as threads (fast) or as real
processes (to SIGKILL one). Ray tests drive CoordinatorCommunicator in rank actors and
check it against the star sum and the object-store path. No test asserts a duration:
waits that could hang have generous guards and only fail if something hung.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from disttrain.distributed.comm import (
    CollectiveError,
    CollectiveTimeout,
    PeerLost,
    StepMismatch,
)
from disttrain.workers.comm import shm
from disttrain.workers.comm.base import chunk_bounds, sum_in_rank_order
from disttrain.workers.comm.shm import ShmGroup, new_token, segment_name
from disttrain.workers.coordinator import Coordinator, create_coordinator
from tests.workers.helpers import RankActor, digest, random_data

pytestmark = pytest.mark.skipif(not shm.supported(), reason="shared-memory path is x86-64 Linux")

HANG_GUARD_S = 60  # only ever reached if a call hung
REPO = Path(__file__).resolve().parents[2]


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def star_sum(arrays: list) -> np.ndarray:
    """The coordinator's own star all-reduce (in-process), for bit comparisons."""
    world_size = len(arrays)
    coordinator = Coordinator(world_size, timeout_s=30)
    out = [None] * world_size

    def rank(r):
        out[r] = coordinator.allreduce(r, 0, 1, arrays[r])

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD_S)
    assert all(o is not None for o in out)
    return out[0]


# --- ranks as threads -----------------------------------------------------------------

@contextlib.contextmanager
def joined_groups(world_size: int, **kw):
    """Joined groups, one per rank, sharing one fresh segment; closed on the way out."""
    groups = [ShmGroup(0, world_size, new_token("test"), create=True, **kw)]
    try:
        groups += [ShmGroup(r, world_size, groups[0].token, create=False, **kw)
                   for r in range(1, world_size)]
        run_ranks(groups, lambda g: g.join(10))
        yield groups
    finally:
        for g in groups:
            g.close()


def run_ranks(groups, fn, delays=None) -> list:
    """fn(group) on every rank at once (rank r after delays[r] s); results or exceptions."""
    out = [None] * len(groups)

    def rank(r):
        if delays is not None:
            time.sleep(delays[r])
        try:
            out[r] = fn(groups[r])
        except Exception as e:  # noqa: BLE001 - handed to the test
            out[r] = e

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(len(groups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD_S)
        assert not t.is_alive(), "a rank hung"
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sum_is_the_star_sum_bit_for_bit_in_every_arrival_order(dtype):
    world_size, n = 3, 300_001
    arrays = [random_data(r, n, dtype) for r in range(world_size)]
    expected = star_sum(arrays)
    other_order = sum_in_rank_order([arrays[2], arrays[0], arrays[1]], np.empty_like(arrays[0]))
    assert not np.array_equal(expected, other_order)  # the data makes the order visible
    # Small blocks: many pipeline stages, the last one short, shares of uneven length.
    with joined_groups(world_size, block_bytes=64 * 1024 + 8) as groups:
        for seq, order in enumerate(itertools.permutations(range(world_size)), start=1):
            delays = [0.05 * order.index(r) for r in range(world_size)]

            def allreduce(g, seq=seq):
                buf = arrays[g.rank].copy()
                assert g.allreduce_(buf, step=3, seq=seq, timeout_s=30)
                return buf

            for r, out in enumerate(run_ranks(groups, allreduce, delays)):
                assert not isinstance(out, Exception), out
                assert out.tobytes() == expected.tobytes(), f"rank {r}, arrival order {order}"


def test_growing_buffers_and_broadcast_from_every_root():
    world_size = 3
    with joined_groups(world_size) as groups:
        seq = 0
        for n in (1000, 2_000_000, 10, 3_000_001):  # the segment grows twice
            seq += 1
            arrays = [random_data(r, n, "float32") for r in range(world_size)]
            expected = sum_in_rank_order(arrays, np.empty_like(arrays[0]))

            def allreduce(g, arrays=arrays, seq=seq):
                buf = arrays[g.rank].copy()
                g.allreduce_(buf, step=0, seq=seq, timeout_s=30)
                return buf

            for out in run_ranks(groups, allreduce):
                assert out.tobytes() == expected.tobytes()
            for root in range(world_size):
                seq += 1

                def broadcast(g, root=root, seq=seq, n=n):
                    buf = random_data(g.rank, n, "float64")
                    g.broadcast_(buf, root, step=0, seq=seq, timeout_s=30)
                    return buf

                for out in run_ranks(groups, broadcast):
                    np.testing.assert_array_equal(out, random_data(root, n, "float64"))
        names = groups[0].names
        assert len(names) == 5  # control + four data generations (the float64s grow it too)
        assert not any(shm_exists(name) for name in names)  # unlinked once mapped


def test_out_of_step_fails_on_every_rank_with_both_steps():
    with joined_groups(2) as groups:
        def allreduce(g):
            g.allreduce_(np.ones(100_000), step=6 + g.rank, seq=1, timeout_s=30)

        for error in run_ranks(groups, allreduce):
            assert isinstance(error, StepMismatch), error
            message = str(error)
            assert "rank 1 is at step 7 but rank 0 is at step 6" in message, message
        # The group is unusable afterwards, and says why.
        with pytest.raises(CollectiveError, match="broken by an earlier error"):
            groups[0].allreduce_(np.ones(10), step=8, seq=2, timeout_s=1)


def test_mismatched_shapes_and_calls_fail_cleanly():
    with joined_groups(2) as groups:
        def uneven(g):
            g.allreduce_(np.ones(1000 + g.rank, np.float32), step=0, seq=1, timeout_s=30)

        for error in run_ranks(groups, uneven):
            assert isinstance(error, CollectiveError) and "same shape and dtype" in str(error)
    with joined_groups(2) as groups:
        def mixed(g):
            buf = np.ones(1000)
            if g.rank == 0:
                g.allreduce_(buf, step=0, seq=1, timeout_s=30)
            else:
                g.broadcast_(buf, 0, step=0, seq=1, timeout_s=30)

        for error in run_ranks(groups, mixed):
            assert isinstance(error, CollectiveError) and "same calls" in str(error), error


def test_a_rank_that_never_comes_times_out_naming_it():
    with joined_groups(3) as groups:
        def allreduce(g):
            if g.rank != 1:
                g.allreduce_(np.ones(1000), step=4, seq=1, timeout_s=1.0)

        errors = run_ranks(groups, allreduce)
        for r in (0, 2):
            assert isinstance(errors[r], CollectiveTimeout), errors[r]
            assert "allreduce at step 4" in str(errors[r]) and "ranks [1]" in str(errors[r])


def test_a_failing_rank_fails_its_waiting_peers_with_its_reason():
    with joined_groups(2) as groups:
        def on_wait(waited_s, pending):
            raise CollectiveError("the coordinator says: job aborted by the supervisor")

        def allreduce(g):
            if g.rank == 0:
                g.allreduce_(np.ones(1000), step=0, seq=1, timeout_s=30, on_wait=on_wait)
            else:
                time.sleep(0.5)  # arrives after rank 0 has given up
                g.allreduce_(np.ones(1000), step=0, seq=1, timeout_s=30)

        errors = run_ranks(groups, allreduce)
        assert "job aborted by the supervisor" in str(errors[0])
        assert isinstance(errors[1], CollectiveError)
        assert "rank 0 failed" in str(errors[1]) and "job aborted" in str(errors[1])


def test_too_little_shared_memory_means_every_rank_declines(monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with joined_groups(2) as groups:
        buf = [np.ones(100_000), np.ones(100_000)]
        results = run_ranks(groups, lambda g: g.allreduce_(buf[g.rank], step=0, seq=1,
                                                            timeout_s=30))
        assert results == [False, False]
        assert all(g.too_big == 800_000 for g in groups)
        np.testing.assert_array_equal(buf[0], np.ones(100_000))  # untouched
    assert not any(shm_exists(name) for name in groups[0].names + [
        segment_name(groups[0].token, "d1")])


def test_names_hold_a_secret_and_strangers_cannot_attach():
    tokens = {new_token("job-1") for _ in range(100)}
    assert len(tokens) == 100  # fresh randomness every time, not just the job id
    token = tokens.pop()
    assert len(token) == 24 and int(token, 16) >= 0  # 96 bits
    with contextlib.closing(ShmGroup(0, 2, token, create=True)) as owner:
        name = segment_name(token, "c")
        assert stat.S_IMODE(os.stat(f"/dev/shm/{name}").st_mode) == 0o600
        for guess in (segment_name(new_token("job-1"), "c"), segment_name("", "c"),
                      segment_name(token[:-1] + ("0" if token[-1] != "0" else "1"), "c")):
            with pytest.raises(FileNotFoundError):
                ShmGroup(1, 2, guess[2:-1], create=False)
        member = ShmGroup(1, 2, token, create=False)
        run_ranks([owner, member], lambda g: g.join(10))
        # Once every rank has mapped it the name is gone: not even the token opens it.
        with pytest.raises(FileNotFoundError):
            ShmGroup(1, 2, token, create=False)
        member.close()
    assert not shm_exists(name)


# --- ranks as processes ---------------------------------------------------------------

def _serve(rank: int, world_size: int, token: str | None, conn, timeout_s: float) -> None:
    """A rank in its own process, doing what the test sends it."""
    group = ShmGroup(rank, world_size, token or new_token("test"), create=rank == 0)
    conn.send(("ready", group.token, os.getpid()))
    while True:
        cmd, *args = conn.recv()
        if cmd == "quit":
            break
        try:
            if cmd == "join":
                group.join(timeout_s)
                out = None
            elif cmd in ("allreduce", "reduce_scatter"):
                n, step, seq = args
                buf = random_data(rank, n, "float64")
                getattr(group, cmd + "_")(buf, step=step, seq=seq, timeout_s=timeout_s)
                out = buf
            elif cmd == "names":
                out = group.names
            conn.send(("ok", out))
        except CollectiveError as e:
            conn.send(("error", type(e).__name__, str(e)))
    group.close()


class ProcessGroup:
    """world_size ranks in spawned processes; rank 0 creates the segment."""

    def __init__(self, world_size: int, timeout_s: float):
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs, self.pids = [], [], []
        token = None
        for rank in range(world_size):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(rank, world_size, token, theirs, timeout_s),
                               daemon=True)
            proc.start()
            assert mine.poll(HANG_GUARD_S), "a rank did not start"
            _, token, pid = mine.recv()
            self.conns.append(mine)
            self.procs.append(proc)
            self.pids.append(pid)
        self.token = token

    def call(self, ranks, *cmd) -> list:
        for r in ranks:
            self.conns[r].send(cmd)
        out = []
        for r in ranks:
            assert self.conns[r].poll(HANG_GUARD_S), f"rank {r} hung in {cmd[0]}"
            out.append(self.conns[r].recv())
        return out

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            if proc.is_alive():
                try:
                    conn.send(("quit",))
                except OSError:
                    pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def test_sigkilled_rank_is_named_by_its_peers():
    with ProcessGroup(3, timeout_s=10.0) as group:
        assert all(r[0] == "ok" for r in group.call(range(3), "join"))
        names = group.call([0], "names")[0][1]
        first = group.call(range(3), "allreduce", 200_000, 0, 1)
        expected = sum_in_rank_order([random_data(r, 200_000, "float64") for r in range(3)],
                                     np.empty(200_000))
        assert all(r[1].tobytes() == expected.tobytes() for r in first)
        os.kill(group.pids[2], signal.SIGKILL)
        for reply in group.call([0, 1], "allreduce", 200_000, 1, 2):
            assert reply[0] == "error" and reply[1] == "PeerLost", reply
            assert f"rank 2 (pid {group.pids[2]}) died during allreduce at step 1" in reply[2]
    assert not any(shm_exists(name) for name in names)


CREATOR = """
import sys, time
from disttrain.workers.comm.shm import ShmGroup, new_token
group = ShmGroup(0, 2, new_token("test"), create=True)
print(group.token, flush=True)
time.sleep(600)
"""


def test_creator_killed_before_the_others_attached_leaves_nothing_behind():
    # A process of its own (not a multiprocessing child, which would share our resource
    # tracker), as a Ray worker is: its tracker unlinks what it created when it dies.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CREATOR], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    try:
        name = segment_name(proc.stdout.readline().strip(), "c")
        assert shm_exists(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(HANG_GUARD_S)
        for _ in range(HANG_GUARD_S * 10):
            if not shm_exists(name):
                break
            time.sleep(0.1)
        assert not shm_exists(name)
    finally:
        proc.kill()
        proc.wait()


# --- through the coordinator communicator, in Ray actors --------------------------------

class ShmRank(RankActor):
    """A rank actor that also reports which data path its communicator took."""

    def data_path(self):
        return self.comm._shm_state

    def shm_names(self):
        return list(self.comm.shm_names)

    def pretend_node(self, key: str) -> None:
        import disttrain.workers.comm.shm as cc

        cc._node_key = lambda: key

    def allreduce_after(self, delay_s: float, step: int, data: np.ndarray) -> np.ndarray:
        time.sleep(delay_s)
        return self.allreduce_at(step, data)


@contextlib.contextmanager
def ray_group(ray, world_size: int, timeout_s: float = 30.0, node_keys=None,
              heartbeat_timeout_s: float = 30.0, **kw):
    """A coordinator and rank actors with communicators built; all killed on the way out."""
    coordinator = create_coordinator(world_size, timeout_s=timeout_s,
                                     heartbeat_timeout_s=heartbeat_timeout_s)
    actor = ray.remote(num_cpus=0, max_restarts=0)(ShmRank)
    group = [actor.remote() for _ in range(world_size)]
    try:
        if node_keys is not None:
            ray.get([a.pretend_node.remote(k) for a, k in zip(group, node_keys)])
        ray.get([a.build.remote("coordinator", r, world_size, coordinator, None, timeout_s,
                                **kw)
                 for r, a in enumerate(group)])
        yield coordinator, group
    finally:
        for handle in (*group, coordinator):
            ray.kill(handle)


@pytest.mark.ray
def test_shm_object_store_and_star_paths_give_the_same_bits(ray_session):
    ray, world_size, n = ray_session, 3, 1_000_003
    for dtype in ("float32", "float64"):
        arrays = [random_data(r, n, dtype) for r in range(world_size)]
        star = create_coordinator(world_size, timeout_s=60)
        expected = ray.get([star.allreduce.remote(r, 0, 1, arrays[r])
                            for r in range(world_size)])[0]
        ray.kill(star)
        for kw, path in (({}, "on"), ({"shared_memory": False}, "off")):
            with ray_group(ray, world_size, **kw) as (coordinator, group):
                outs = ray.get([a.allreduce_at.remote(0, arrays[r]) for r, a in enumerate(group)])
                assert ray.get([a.data_path.remote() for a in group]) == [path] * world_size
                for out in outs:
                    assert out.tobytes() == expected.tobytes(), (dtype, kw)


@pytest.mark.ray
def test_shm_arrival_order_does_not_change_the_bits(ray_session):
    ray, world_size, n = ray_session, 3, 400_001
    arrays = [random_data(r, n, "float32") for r in range(world_size)]
    expected = sum_in_rank_order(arrays, np.empty_like(arrays[0]))
    with ray_group(ray, world_size) as (coordinator, group):
        for step, order in enumerate(itertools.permutations(range(world_size))):
            refs = [a.allreduce_after.remote(0.1 * order.index(r), step, arrays[r])
                    for r, a in enumerate(group)]
            for out in ray.get(refs, timeout=HANG_GUARD_S):
                assert out.tobytes() == expected.tobytes(), order
        assert ray.get(group[0].data_path.remote()) == "on"


@pytest.mark.ray
def test_shm_rank_out_of_step_fails_with_both_steps(ray_session):
    ray = ray_session
    with ray_group(ray, 2) as (coordinator, group):
        data = np.ones(500_000)  # 4 MB: the shared-memory path
        ray.get([a.allreduce_at.remote(5, data) for a in group])
        assert ray.get(group[0].data_path.remote()) == "on"
        refs = [group[0].allreduce_at.remote(6, data), group[1].allreduce_at.remote(7, data)]
        for ref in refs:
            with pytest.raises(StepMismatch) as info:
                ray.get(ref, timeout=HANG_GUARD_S)
            message = str(info.value)
            assert "rank 1 is at step 7 but rank 0 is at step 6" in message, message


@pytest.mark.ray
def test_shm_killed_rank_is_named_within_the_timeout(ray_session):
    ray = ray_session
    # Heartbeats would only notice after 60 s: the shared-memory path must find it itself.
    with ray_group(ray, 3, timeout_s=10.0, heartbeat_timeout_s=60.0) as (coordinator, group):
        data = np.arange(300_000, dtype=np.float64)
        ray.get([a.allreduce_at.remote(0, data) for a in group])
        assert ray.get(group[0].data_path.remote()) == "on"
        pid = ray.get(group[2].pid.remote())
        os.kill(pid, signal.SIGKILL)
        for ref in [a.allreduce_at.remote(1, data) for a in group[:2]]:
            with pytest.raises(PeerLost) as info:
                ray.get(ref, timeout=HANG_GUARD_S)
            assert f"rank 2 (pid {pid}) died" in str(info.value), str(info.value)


@pytest.mark.ray
def test_shm_abort_from_the_coordinator_wakes_the_waiting_rank(ray_session):
    ray = ray_session
    with ray_group(ray, 2, timeout_s=30.0) as (coordinator, group):
        data = np.ones(100_000)
        ray.get([a.allreduce_at.remote(0, data) for a in group])
        waiting = group[0].allreduce_at.remote(1, data)  # rank 1 never comes
        time.sleep(0.5)
        ray.get(coordinator.abort.remote("the supervisor gave up: rank 1 is wedged"))
        with pytest.raises(CollectiveError, match="rank 1 is wedged"):
            ray.get(waiting, timeout=HANG_GUARD_S)


@pytest.mark.ray
def test_shm_segments_are_unlinked_while_running_and_after_close(ray_session):
    ray = ray_session
    with ray_group(ray, 2) as (coordinator, group):
        for n in (100_000, 3_000_000):  # two data generations
            ray.get([a.allreduce_at.remote(0, np.ones(n)) for a in group])
        names = ray.get(group[0].shm_names.remote())
        assert len(names) == 3
        assert not any(shm_exists(name) for name in names)
        ray.get([a.close.remote() for a in group])
        assert not any(shm_exists(name) for name in names)


@pytest.mark.ray
def test_a_failed_setup_leaves_nothing_behind(ray_session):
    ray = ray_session
    with ray_group(ray, 2) as (coordinator, group):
        data = np.ones(10)
        refs = [group[0].allreduce_at.remote(6, data), group[1].allreduce_at.remote(7, data)]
        for ref in refs:  # the setup exchange itself is the collective that fails
            with pytest.raises(StepMismatch, match="step 7"):
                ray.get(ref, timeout=HANG_GUARD_S)
        names = ray.get(group[0].shm_names.remote())
        assert names  # rank 0 had created the control segment before the exchange
        assert not any(shm_exists(name) for name in names)


@pytest.mark.ray
def test_ranks_on_different_nodes_take_the_object_store_path(ray_session):
    ray, world_size, n = ray_session, 2, 300_000
    with ray_group(ray, world_size, node_keys=["node-a", "node-b"]) as (coordinator, group):
        arrays = [random_data(r, n, "float64") for r in range(world_size)]
        outs = ray.get([a.allreduce_at.remote(0, arrays[r]) for r, a in enumerate(group)])
        assert ray.get([a.data_path.remote() for a in group]) == ["off", "off"]
        expected = sum_in_rank_order(arrays, np.empty_like(arrays[0]))
        for out in outs:
            assert out.tobytes() == expected.tobytes()


def script_expected(world: int) -> dict:
    """What multinode_shm_main's script must give on `world` ranks: numpy's rank-order
    sums of integer-valued floats (exact on every path), root's buffer, chunks."""
    from disttrain.workers.comm.base import chunk_bounds
    from tests.workers.helpers import int_data

    n = 300_001

    def total(dtype, size=n):
        return sum_in_rank_order([int_data(r, size, dtype) for r in range(world)],
                                 np.empty(size, dtype))

    whole = total("float64")
    gathered = np.concatenate([int_data(r, n, "float64")[lo:hi]
                               for r, (lo, hi) in enumerate(chunk_bounds(n, world))])
    out = {"allreduce": digest(whole), "allreduce32": digest(total("float32")),
           "small": digest(total("float64", 1001)), "allgather": digest(gathered)}
    out.update({f"broadcast{root}": digest(int_data(root, n, "float64"))
                for root in range(world)})
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_two_node_cluster_paths_results_and_failures():
    # A cluster of its own needs a driver of its own: the session's Ray is already joined.
    from disttrain.workers.comm.base import chunk_bounds
    from tests.workers.helpers import int_data

    done = subprocess.run([sys.executable, "-m", "tests.workers.multinode_shm_main"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-4000:]
    reports = {r["name"]: r for r in (json.loads(line) for line in done.stdout.splitlines()
                                      if line.startswith("{"))}
    across, within, mixed = reports["across"], reports["within"], reports["mixed"]
    expected = digest(sum_in_rank_order([random_data(r, 300_001, "float64") for r in (0, 1)],
                                        np.empty(300_001)))
    # One rank per node: nothing to share, so the object store, bit for bit the star sum.
    assert len(set(across["nodes"])) == 2, across
    assert [p["path"] for p in across["paths"]] == ["object store"] * 2, across
    assert [p["shm"] for p in across["paths"]] == ["off", "off"], across
    assert len(set(within["nodes"])) == 1 and [p["path"] for p in within["paths"]] == \
        ["shm", "shm"], within
    assert across["digests"] == within["digests"] == [expected, expected]

    # Two ranks on each of two nodes: shared memory per node, the leaders' ring between.
    assert len(set(mixed["nodes"])) == 2, mixed
    assert [p["path"] for p in mixed["paths"]] == ["hier"] * 4, mixed
    assert len(set(mixed["digests"])) == 1, mixed  # the same bits on every rank
    # Every collective gives numpy's answer on every path: the object store (one rank per
    # node, or no secret) and the hierarchical one (ranks 0, 2 on node a, 1, 3 on node b:
    # the reduce-scatter and all-gather run on a copy in node order)
    for report in (across, mixed, reports["mixed-no-secret"]):
        world = len(report["script"])
        want = script_expected(world)
        for rank, got in enumerate(report["script"]):
            for key, value in want.items():
                assert got[key] == value, (report["name"], rank, key)
            lo, hi = chunk_bounds(300_001, world)[rank]
            chunk = sum_in_rank_order([int_data(r, 300_001, "float64")[lo:hi]
                                       for r in range(world)], np.empty(hi - lo))
            assert got["reduce_scatter"] == digest(chunk), (report["name"], rank)
            assert got["objects"] == list(range(world))
        assert len({s["random"] for s in report["script"]}) == 1
    # Paths: the first allreduce, 3 in the script, 4 broadcasts, reduce_scatter, allgather_,
    # one more allreduce; the small one: star
    for p in mixed["paths_after"]:
        assert p["taken"]["hier"] == 1 + 3 + 4 + 2 + 1, p
        assert p["taken"]["star"] == 1 and "object store" not in p["taken"], p
    for p in across["paths_after"]:
        assert p["taken"]["object store"] == 1 + 3 + 2 + 2 + 1, p
        assert p["taken"]["star"] == 1 and "hier" not in p["taken"], p
    # On the leaders' ring (leaders 0 and 1; 2 and 3 send nothing there) a reduce-scatter
    # and an all-gather each send one phase, half the all-reduce's bytes, not a whole one
    for rank, got in enumerate(mixed["script"]):
        scatter, gather, allreduce = got["leaders_bytes"]
        if rank in (2, 3):
            assert (scatter, gather, allreduce) == (0, 0, 0), (rank, got["leaders_bytes"])
            continue
        payload = 300_001 // 2 * 8  # the other node's region (150,000 or 150,001 float64)
        assert payload - 8 <= scatter < payload + 4096 and payload - 8 <= gather < payload + 4096, (
            rank, got["leaders_bytes"])
        assert allreduce > 2 * payload - 16, (rank, got["leaders_bytes"])
    # Without the job's secret there is no leaders' ring: the object store, as before.
    assert [p["path"] for p in reports["mixed-no-secret"]["paths"]] == ["object store"] * 4

    # A SIGKILLed rank, a leader or not, fails every survivor within the timeout.
    for name in ("kill-nonleader", "kill-leader"):
        report = reports[name]
        assert [p["path"] for p in report["paths"]] == ["hier"] * 4, report
        for result in report["results"]:
            assert result["error"] is not None, report
            assert result["error"].split(":")[0] in (
                "PeerLost", "CollectiveAborted", "CollectiveTimeout"), report
            # Within multinode_shm_main's KILL_TIMEOUT_S (15 s), and the 1 s before the kill.
            assert result["after_s"] < 15.0 + 1.0 + 2.0, report

    # A rank alive but out of the collective, and the job aborted (the supervisor aborts
    # when a rank fails in its own code): the ranks waiting in shared memory, and a leader
    # waiting on the leaders' ring for a leader that is alive but absent (rank 0 when
    # rank 1 stays out), poll the coordinator's flag and end with the abort's reason, its
    # rank numbers untouched; a failing leader carries it over the leaders' ring too.
    # Never the timeout: a CollectiveTimeout would fail the startswith below.
    for name, absent in (("abort-nonleader-absent", 3), ("abort-leader-absent", 1)):
        report = reports[name]
        assert [p["path"] for p in report["paths"]] == ["hier"] * 4, report
        others = [r for r in range(4) if r != absent]
        for rank, result in zip(others, report["results"]):
            assert result["error"] is not None, report
            assert result["error"].startswith("CollectiveAborted"), (rank, report)
            assert f"the test aborted the job; rank {absent} stayed out" in result["error"], (
                rank, report)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_scatter_and_gather_move_only_the_chunks_from_and_to_every_root(world_size):
    # The hierarchical reduce-scatter's and all-gather's node steps: scatter leaves every
    # rank its chunk of root's buffer and the rest of its own; gather fills root's buffer
    # with every rank's chunk and leaves the others' untouched. n < world_size: empty chunks.
    with joined_groups(world_size) as groups:
        seq = 0
        for n in (1, 7, 100_003, 2_000_001):
            bounds = chunk_bounds(n, world_size)
            data = [random_data(r, n, "float64") for r in range(world_size)]
            chunks = np.concatenate([data[r][lo:hi] for r, (lo, hi) in enumerate(bounds)])
            for root in range(world_size):
                seq += 1
                bufs = [d.copy() for d in data]
                assert run_ranks(groups, lambda g, bufs=bufs, root=root, seq=seq: g.scatter_(
                    bufs[g.rank], root, step=2, seq=seq, timeout_s=30)) == [True] * world_size
                for r, (lo, hi) in enumerate(bounds):
                    expected = data[r].copy()
                    expected[lo:hi] = data[root][lo:hi]
                    assert bufs[r].tobytes() == expected.tobytes(), (n, root, r)
                seq += 1
                bufs = [d.copy() for d in data]
                assert run_ranks(groups, lambda g, bufs=bufs, root=root, seq=seq: g.gather_(
                    bufs[g.rank], root, step=2, seq=seq, timeout_s=30)) == [True] * world_size
                for r in range(world_size):
                    expected = chunks if r == root else data[r]
                    assert bufs[r].tobytes() == expected.tobytes(), (n, root, r)


def test_scatter_with_different_roots_names_both_roots():
    with joined_groups(2) as groups:
        errors = run_ranks(groups, lambda g: g.scatter_(np.ones(1000), g.rank, step=0, seq=1,
                                                        timeout_s=30))
        for error in errors:
            assert isinstance(error, CollectiveError), error
            assert "scatter #1 from root 0" in str(error), error
            assert "scatter #1 from root 1" in str(error), error
