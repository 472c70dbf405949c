"""Pinned buffers (ShmGroup.pin, CoordinatorCommunicator.bucket_buffers): memory the
shared-memory collectives read where it is, so nothing is copied in.

The proof that nothing went through the copying path is structural: every collective
below runs on pinned buffers only, and the group never creates a data segment (its
`names` hold the control segment and the pinned one alone), so the bytes cannot have
been copied anywhere else. Results are compared with numpy's rank-order sums, bit for
bit, and with the unpinned path's.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from disttrain.distributed.comm import CollectiveError, chunk_bounds
from disttrain.workers.comm import shm
from disttrain.workers.comm.base import sum_in_rank_order
from disttrain.workers.comm.shm import carve, segment_name
from tests.workers.helpers import random_data
from tests.workers.test_shm import joined_groups, run_ranks, shm_exists

pytestmark = pytest.mark.skipif(not shm.supported(), reason="shared-memory path is x86-64 Linux")

SIZES = [(300_001, np.float32), (7, np.float64), (1, np.float32), (250_000, np.float64)]


def pinned_buffers(groups, sizes=SIZES) -> list:
    """Every rank's buffers carved from its part of one pinned area (a collective)."""
    def pin(g):
        return carve(sizes, lambda n: g.pin(n, step=0, seq=1, timeout_s=30))
    out = run_ranks(groups, pin)
    for o in out:
        assert not isinstance(o, Exception), o
    return out


def rank_order_sum(arrays):
    return sum_in_rank_order(arrays, np.empty_like(arrays[0]))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_every_collective_on_pinned_buffers_is_exact_and_copies_nothing_in(world_size):
    # Small pipeline blocks: several stages, a short last one, uneven shares.
    with joined_groups(world_size, block_bytes=64 * 1024 + 8) as groups:
        buffers = pinned_buffers(groups)
        assert all(b[0].dtype == np.float32 and b[1].dtype == np.float64 for b in buffers)
        assert all(not b.any() for bufs in buffers for b in bufs)  # zeroed
        seq = 1
        for i, (n, dtype) in enumerate(SIZES):
            data = [random_data(r, n, np.dtype(dtype).name) for r in range(world_size)]
            expected = rank_order_sum(data)
            for r in range(world_size):
                buffers[r][i][...] = data[r]
            seq += 1
            out = run_ranks(groups, lambda g, i=i, seq=seq: g.allreduce_(
                buffers[g.rank][i], step=1, seq=seq, timeout_s=30))
            assert out == [True] * world_size
            for r in range(world_size):
                assert buffers[r][i].tobytes() == expected.tobytes(), (i, r)

            # reduce-scatter: this rank's chunk is the rank-order sum (rank >= 2 included,
            # whose chunk of its own slot is also an operand of the sum)
            for r in range(world_size):
                buffers[r][i][...] = data[r]
            seq += 1
            run_ranks(groups, lambda g, i=i, seq=seq: g.reduce_scatter_(
                buffers[g.rank][i], step=1, seq=seq, timeout_s=30))
            for r, (lo, hi) in enumerate(chunk_bounds(n, world_size)):
                assert buffers[r][i][lo:hi].tobytes() == expected[lo:hi].tobytes(), (i, r)

            # all-gather: every chunk from its owner
            for r, (lo, hi) in enumerate(chunk_bounds(n, world_size)):
                buffers[r][i][...] = -1
                buffers[r][i][lo:hi] = data[r][lo:hi]
            seq += 1
            run_ranks(groups, lambda g, i=i, seq=seq: g.allgather_(
                buffers[g.rank][i], step=1, seq=seq, timeout_s=30))
            gathered = np.concatenate([data[r][lo:hi] for r, (lo, hi)
                                       in enumerate(chunk_bounds(n, world_size))])
            for r in range(world_size):
                np.testing.assert_array_equal(buffers[r][i], gathered)

            root = i % world_size
            for r in range(world_size):
                buffers[r][i][...] = data[r]
            seq += 1
            run_ranks(groups, lambda g, i=i, seq=seq, root=root: g.broadcast_(
                buffers[g.rank][i], root, step=1, seq=seq, timeout_s=30))
            for r in range(world_size):
                np.testing.assert_array_equal(buffers[r][i], data[root])
        assert all(g.in_place == 4 * len(SIZES) for g in groups)
        # the control segment and the pinned area: no data segment was ever needed
        assert groups[0].names == [segment_name(groups[0].token, "c"),
                                   segment_name(groups[0].token, "p1")]
        assert not any(shm_exists(name) for name in groups[0].names)  # unlinked once mapped


def test_pinned_and_unpinned_buffers_give_the_same_bits():
    world_size, n = 3, 200_003
    data = [random_data(r, n, "float32") for r in range(world_size)]
    with joined_groups(world_size) as groups:
        buffers = pinned_buffers(groups, [(n, np.float32)])
        for r in range(world_size):
            buffers[r][0][...] = data[r]
        run_ranks(groups, lambda g: g.allreduce_(buffers[g.rank][0], step=0, seq=2,
                                                 timeout_s=30))
        plain = [d.copy() for d in data]
        run_ranks(groups, lambda g: g.allreduce_(plain[g.rank], step=0, seq=3, timeout_s=30))
        for r in range(world_size):
            assert buffers[r][0].tobytes() == plain[r].tobytes()
        assert [g.in_place for g in groups] == [1] * world_size


@pytest.mark.parametrize("op", ["allreduce_", "reduce_scatter_", "allgather_"])
def test_a_rank_whose_buffer_is_not_pinned_makes_every_rank_copy(op):
    # One rank passes a private copy: the group agrees on the data segment, the pinned
    # ranks copy in after all, and the answer is the same.
    world_size, n = 3, 100_001
    data = [random_data(r, n, "float64") for r in range(world_size)]
    with joined_groups(world_size) as groups:
        buffers = pinned_buffers(groups, [(n, np.float64)])
        bufs = [buffers[r][0] for r in range(world_size)]
        bufs[1] = np.empty(n)
        for r in range(world_size):
            bufs[r][...] = data[r]
        out = run_ranks(groups, lambda g: getattr(g, op)(bufs[g.rank], step=0, seq=2,
                                                         timeout_s=30))
        assert out == [True] * world_size
        assert [g.in_place for g in groups] == [0] * world_size
        bounds = chunk_bounds(n, world_size)
        expected = (rank_order_sum(data) if op != "allgather_" else
                    np.concatenate([data[r][lo:hi] for r, (lo, hi) in enumerate(bounds)]))
        for r in range(world_size):
            lo, hi = bounds[r] if op == "reduce_scatter_" else (0, n)
            assert bufs[r][lo:hi].tobytes() == expected[lo:hi].tobytes(), r


def test_no_room_for_a_pinned_area_means_none_on_every_rank(monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    with joined_groups(2) as groups:
        monkeypatch.setattr(os, "posix_fallocate", full)
        assert run_ranks(groups, lambda g: carve(
            SIZES, lambda n: g.pin(n, step=0, seq=1, timeout_s=30))) == [None, None]
        monkeypatch.undo()
        name = segment_name(groups[0].token, "p1")
        assert not shm_exists(name)
        # the group is still usable, and a later pin works
        assert all(b is not None for b in pinned_buffers(groups))


def test_an_area_too_big_for_dev_shm_is_declined_on_every_rank(monkeypatch):
    monkeypatch.setattr(shm, "PIN_SHARE", 1e-12)  # nothing fits a quarter of nothing
    with joined_groups(2) as groups:
        assert run_ranks(groups, lambda g: g.pin(1, step=0, seq=1, timeout_s=30)) == [
            None, None]
        assert not shm_exists(segment_name(groups[0].token, "p1"))


def test_ranks_pinning_different_sizes_fail_naming_both():
    with joined_groups(2) as groups:
        out = run_ranks(groups, lambda g: g.pin(1000 + g.rank, step=4, seq=1, timeout_s=30))
        assert all(isinstance(o, CollectiveError) for o in out), out
        assert "1000" in str(out[1]) and "1001" in str(out[1])


def test_pinned_buffers_outlive_their_group():
    # A job that recovers in memory keeps its model and buckets while the communicator
    # is replaced: the buffers must stay mapped and private to this rank.
    with joined_groups(2) as groups:
        buffers = pinned_buffers(groups, [(1000, np.float32)])
    assert all(g._pins == [] for g in groups)
    for r in range(2):
        buffers[r][0][...] = r + 1  # would fault if the group had unmapped it
    np.testing.assert_array_equal(buffers[0][0], np.ones(1000, np.float32))
    np.testing.assert_array_equal(buffers[1][0], np.full(1000, 2, np.float32))
