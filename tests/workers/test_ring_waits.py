"""Every wait of the ring ends: a silent rank, a rank that stops reading, a rank that goes.

The ring's connected sockets are blocking, with their timeouts kept by the kernel
(SO_RCVTIMEO/SO_SNDTIMEO) and receives that wait for a whole piece (MSG_WAITALL); these
tests hold that to the same errors as before. Ranks are threads over real loopback sockets.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from disttrain.distributed.comm import (
    CollectiveAborted,
    CollectiveError,
    CollectiveTimeout,
    PeerLost,
)
from disttrain.workers.comm.ring import RingCommunicator
from tests.workers.helpers import LocalRendezvous, random_data
from tests.workers.test_faults import in_thread, run_ring

TIMEOUT_S = 1.0


def two_ranks(rank0, rank1):
    """rank0(comm) and rank1(comm, rank0_done) on a 2-rank ring; both errors (or None)."""
    rendezvous, done = LocalRendezvous(2), threading.Event()

    def main(rank, fn):
        comm = RingCommunicator(rank, 2, rendezvous, "s3cret", timeout_s=TIMEOUT_S,
                                host="127.0.0.1")
        try:
            fn(comm) if rank == 0 else fn(comm, done)
        finally:
            if rank == 0:
                done.set()
            comm.close()

    waits = [in_thread(main, 0, rank0), in_thread(main, 1, rank1)]
    return [w(30 * TIMEOUT_S) for w in waits]


def test_a_silent_rank_times_out_naming_it():
    def silent(comm, rank0_done):
        rank0_done.wait(30 * TIMEOUT_S)  # connected, but never calls the collective

    error, _ = two_ranks(lambda comm: comm.allreduce_(np.ones(1000, np.float32)), silent)
    assert isinstance(error, CollectiveTimeout), error
    assert "rank 1 sent nothing for 1.0 s" in str(error)


def test_a_rank_that_stops_reading_fails_the_sender():
    # 64 MB outgrows every socket buffer: rank 0's sends block until the kernel's send
    # timeout, and its receive (rank 1 sends nothing) until the receive timeout.
    def stalled(comm, rank0_done):
        rank0_done.wait(30 * TIMEOUT_S)

    error, _ = two_ranks(lambda comm: comm.allreduce_(np.ones(2**24, np.float32)), stalled)
    assert isinstance(error, (CollectiveTimeout, PeerLost)), error
    assert "rank 1" in str(error)


@pytest.mark.parametrize("world_size", [2, 3])
def test_a_rank_that_closes_mid_collective_is_peer_lost(world_size):
    # The last rank takes part in one all-reduce, then closes its ring while the others
    # start a second: its neighbours' blocking calls wake with the closed connection.
    rendezvous = LocalRendezvous(world_size)
    first_done = threading.Barrier(world_size)

    def main(rank):
        comm = RingCommunicator(rank, world_size, rendezvous, "s3cret", timeout_s=10.0,
                                host="127.0.0.1")
        try:
            comm.allreduce_(np.ones(100_000, np.float32))
            first_done.wait(10)
            if rank != world_size - 1:
                comm.allreduce_(np.ones(2**22, np.float32))
        finally:
            comm.close()

    errors = [w(60) for w in [in_thread(main, r) for r in range(world_size)]]
    gone = f"rank {world_size - 1}"
    assert errors[-1] is None
    for error in errors[:-1]:
        assert isinstance(error, CollectiveError), error
    # The first to notice (rank 0 receiving from it, or the rank sending to it) names the
    # rank that went; the others may name the neighbour that broke off after it.
    assert any(isinstance(e, PeerLost) and gone in str(e) for e in errors[:-1]), errors


# --- on_wait: a wait on a rank that is alive but absent ends when the caller says so ------

def with_an_absent_rank_1(collective, reason: str) -> tuple:
    """Rank 0 runs collective(comm) with an on_wait that raises CollectiveAborted(reason)
    at its third poll (the hierarchical path's abort watch, here a counter), while rank 1
    stays connected and alive but never takes part. (rank 0's error, the poll times)."""
    rendezvous, done, waits = LocalRendezvous(2), threading.Event(), []

    def watch(waited_s):
        waits.append(waited_s)
        if len(waits) >= 3:
            raise CollectiveAborted(reason)

    def main(rank):
        comm = RingCommunicator(rank, 2, rendezvous, "s3cret", timeout_s=30.0,
                                host="127.0.0.1", on_wait=watch if rank == 0 else None)
        try:
            if rank == 0:
                collective(comm)
            else:
                done.wait(60)  # alive, connected, absent
        finally:
            if rank == 0:
                done.set()
            comm.close()

    error, absent = [w(60) for w in [in_thread(main, r) for r in range(2)]]
    assert absent is None
    return error, waits


def test_on_wait_ends_a_wait_on_an_absent_rank_with_its_error():
    # Rank 0 waits to receive from rank 1; the "abort" ends the wait long before the 30 s
    # timeout: rank 0 fails with that error, not a CollectiveTimeout.
    error, waits = with_an_absent_rank_1(lambda comm: comm.allreduce_(np.ones(1000, np.float32)),
                                         "the job was aborted: rank 1 stayed out")
    assert isinstance(error, CollectiveAborted), error
    assert "the job was aborted: rank 1 stayed out" in str(error)
    assert len(waits) == 3 and waits == sorted(waits)  # seconds since the collective began


def test_on_wait_ends_a_send_to_a_rank_that_stops_reading():
    # A broadcast's root only sends: 64 MB outgrows every socket buffer, so rank 0 waits for
    # rank 1 to take the rest. on_wait is polled there too, so the "abort" ends it, not the
    # 30 s send timeout (a CollectiveTimeout).
    error, waits = with_an_absent_rank_1(
        lambda comm: comm.broadcast_(np.ones(16 << 20, np.float32), root=0),
        "the job was aborted: rank 1 stopped reading")
    assert isinstance(error, CollectiveAborted), error
    assert "rank 1 stopped reading" in str(error)
    assert len(waits) == 3 and waits == sorted(waits)


def test_on_wait_changes_no_result():
    # Polled only while no data has arrived: a healthy ring gives the same bits with it.
    def run(comm):
        return comm.allreduce_(random_data(comm.rank, 300_001, "float32")).tobytes()

    plain = run_ring(3, run)
    watched = run_ring(3, run, on_wait=lambda waited_s: None, segment_bytes=64 * 1024)
    assert len(set(plain) | set(watched)) == 1
