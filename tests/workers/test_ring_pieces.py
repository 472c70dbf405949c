"""How the ring cuts its frames into pieces never changes a bit of the result.

The ring adds chunk c in one fixed order, starting at the rank that owns it and going round:
((x_c + x_c+1) + x_c+2) + ... (indices mod W), whatever the arrival order; the pieces a
frame is sent in (fixed `segment_bytes`, or the default that grows with the frame) only
decide how much is added at a time. Ranks are threads here, over real loopback sockets.
"""

from __future__ import annotations

import numpy as np
import pytest

from disttrain.workers.comm import ring
from disttrain.workers.comm.base import chunk_bounds, sum_in_rank_order
from tests.workers.helpers import digest, int_data, random_data
from tests.workers.test_faults import run_ring

SMALL = (1, 2, 7, 1001)  # 1 and 2 are smaller than a world of 3: some chunks are empty
# float32: on 2 ranks a 6.4 MB chunk, so the default pieces are 800 KB, not the 512 KB floor.
LARGE = 3_200_001


def ring_order_sum(arrays: list) -> np.ndarray:
    """Each chunk summed as the ring does: from its owner round the ring."""
    w = len(arrays)
    out = np.empty_like(arrays[0])
    for c, (lo, hi) in enumerate(chunk_bounds(out.size, w)):
        out[lo:hi] = arrays[c][lo:hi]
        for k in range(1, w):
            out[lo:hi] += arrays[(c + k) % w][lo:hi]
    return out


def allreduce_and_broadcast(n: int, dtype: str):
    def run(comm):
        summed = comm.allreduce_(random_data(comm.rank, n, dtype))
        exact = comm.allreduce_(int_data(comm.rank, n, dtype))
        sent = int_data(comm.rank, n, dtype)
        comm.broadcast_(sent, comm.world_size - 1)
        return summed, exact, digest(sent)
    return run


def check(results, world_size: int, n: int, dtype: str) -> None:
    for r in results:
        assert not isinstance(r, BaseException), r
    randoms = [random_data(r, n, dtype) for r in range(world_size)]
    expected = digest(ring_order_sum(randoms))
    exact = sum_in_rank_order([int_data(r, n, dtype) for r in range(world_size)],
                              np.empty(n, dtype))
    for summed, exact_sum, sent in results:
        assert digest(summed) == expected  # the very bits of the ring's order, on every rank
        np.testing.assert_array_equal(exact_sum, exact)
        assert sent == digest(int_data(world_size - 1, n, dtype))


@pytest.mark.parametrize("segment_bytes", [None, 8, 4096], ids=["default", "8B", "4KB"])
@pytest.mark.parametrize("n", SMALL)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_small_buffers_in_any_pieces(world_size, dtype, n, segment_bytes):
    results = run_ring(world_size, allreduce_and_broadcast(n, dtype), segment_bytes=segment_bytes)
    check(results, world_size, n, dtype)


@pytest.mark.parametrize("segment_bytes", [None, 64 * 1024], ids=["default", "64KB"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("world_size", [2, 3])
def test_large_buffers_in_default_and_small_pieces(world_size, dtype, segment_bytes):
    results = run_ring(world_size, allreduce_and_broadcast(LARGE, dtype),
                       segment_bytes=segment_bytes)
    check(results, world_size, LARGE, dtype)


def test_the_reference_order_is_not_rank_order():
    # The proof that the checks above can fail: on 3 ranks the ring's order gives other
    # bits than ((x0 + x1) + x2) for these numbers, and the tests hold the ring to its own.
    arrays = [random_data(r, 1001, "float32") for r in range(3)]
    rank_order = sum_in_rank_order(arrays, np.empty(1001, np.float32))
    assert digest(ring_order_sum(arrays)) != digest(rank_order)


def test_default_pieces_grow_with_the_frame_within_bounds():
    # The frames a rank starts: many pieces for large frames (forwarding overlaps receiving),
    # never below the floor nor above the ceiling.
    comm = ring.RingCommunicator(0, 1, None, "s3cret")
    flat = np.empty(1, np.float32)
    pieces = {mb: comm._piece(flat, mb * 2**20 // 4) * 4 for mb in (0, 1, 8, 16, 64)}
    assert pieces[0] == pieces[1] == ring.MIN_SEGMENT_BYTES
    assert pieces[16] == 16 * 2**20 // ring.PIECES_PER_FRAME
    assert pieces[64] == ring.MAX_SEGMENT_BYTES
    assert ring.RingCommunicator(0, 1, None, "s3cret", segment_bytes=8)._piece(flat, 10**6) == 2


# --- the phases over explicit bounds (the hierarchical ring's node regions) -------------

def bounds_from(sizes: list) -> list:
    edges = np.cumsum([0, *sizes]).tolist()
    return list(zip(edges[:-1], edges[1:]))


def scatter_order_sum(arrays: list, bounds: list) -> np.ndarray:
    """Each part summed as the ring's reduce-scatter does: ((x_c+1 + x_c+2) + ...) + x_c."""
    w = len(arrays)
    out = np.empty_like(arrays[0])
    for c, (lo, hi) in enumerate(bounds):
        out[lo:hi] = arrays[(c + 1) % w][lo:hi]
        for k in range(2, w + 1):
            out[lo:hi] += arrays[(c + k) % w][lo:hi]
    return out


# parts of different sizes, an empty one, and one rank's part holding everything
@pytest.mark.parametrize("sizes", [[500, 250, 251], [0, 7, 1], [0, 0, 1001], [600, 401]])
@pytest.mark.parametrize("segment_bytes", [None, 8], ids=["default", "8B"])
def test_phases_over_explicit_bounds(sizes, segment_bytes):
    w, n, dtype = len(sizes), sum(sizes), "float32"
    bounds = bounds_from(sizes)

    def run(comm):
        lo, hi = bounds[comm.rank]
        summed = comm.reduce_scatter_(random_data(comm.rank, n, dtype), bounds=bounds)[lo:hi]
        filled = np.full(n, -1.0, dtype)
        filled[lo:hi] = int_data(comm.rank, n, dtype)[lo:hi]
        return summed.copy(), comm.allgather_(filled, bounds=bounds)

    results = run_ring(w, run, segment_bytes=segment_bytes)
    expected = scatter_order_sum([random_data(r, n, dtype) for r in range(w)], bounds)
    whole = np.concatenate([int_data(r, n, dtype)[lo:hi] for r, (lo, hi) in enumerate(bounds)])
    for rank, out in enumerate(results):
        assert not isinstance(out, BaseException), out
        lo, hi = bounds[rank]
        assert out[0].tobytes() == expected[lo:hi].tobytes()  # the ring's own fixed order
        np.testing.assert_array_equal(out[1], whole)


def test_explicit_bounds_are_checked():
    comm = ring.RingCommunicator(0, 1, None, "s3cret")
    with pytest.raises(ValueError, match=r"reduce_scatter_ bounds must be one \(lo, hi\) per "
                                         r"rank of 1"):
        comm.reduce_scatter_(np.ones(4), bounds=[(0, 2), (2, 4)])
    with pytest.raises(ValueError, match=r"allgather_ bounds .* 0 <= lo <= hi <= 4"):
        comm.allgather_(np.ones(4), bounds=[(0, 5)])
    assert comm.allgather_(np.ones(4), bounds=[(0, 4)]).tolist() == [1.0] * 4
