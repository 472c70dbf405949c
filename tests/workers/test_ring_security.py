"""The ring's port and wire under attack: strangers on the listener, a man in the middle.

Real sockets, a real ring (ranks as threads, Ray-free with a local rendezvous), strangers in
a process of their own so that this process's descriptors are the ring's alone.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from disttrain.distributed.comm import CollectiveError
from disttrain.workers.comm import ring
from disttrain.workers.comm.base import sum_in_rank_order
from disttrain.workers.comm.ring import RingCommunicator, same_host
from tests.workers.helpers import HookedRendezvous, digest, int_data
from tests.workers.test_faults import in_thread

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret"


def run_ring(rendezvous, world_size: int, fn, timeout_s: float = 30.0, **kw) -> list:
    """fn(comm) on every rank of a loopback ring, each rank a thread: results or errors."""
    out = [None] * world_size

    def rank_main(rank):
        options = {k: v[rank] if isinstance(v, list) else v for k, v in kw.items()}
        comm = RingCommunicator(rank, world_size, rendezvous, SECRET, timeout_s=timeout_s,
                                host="127.0.0.1", **options)
        try:
            out[rank] = fn(comm)
        finally:
            comm.close()

    waits = [in_thread(rank_main, r) for r in range(world_size)]
    errors = [w(3 * timeout_s) for w in waits]
    return [e if e is not None else o for e, o in zip(errors, out)]


def exact_sum(world_size: int, n: int, dtype: str) -> np.ndarray:
    arrays = [int_data(r, n, dtype) for r in range(world_size)]
    return sum_in_rank_order(arrays, np.empty_like(arrays[0]))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Peaks:
    """The most descriptors and threads this process held while the block ran."""

    def __enter__(self):
        self.fds, self.threads = open_fds(), threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.002):
            self.fds = max(self.fds, open_fds())
            self.threads = max(self.threads, threading.active_count() - 1)  # not this one

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --- item 11: strangers on the listener ------------------------------------------------

@pytest.mark.parametrize("world_size", [2, 3])
def test_hundreds_of_strangers_neither_stop_the_ring_nor_exhaust_descriptors(world_size):
    per_address = 120  # silent, dribbling and garbage connections to every rank's listener
    strangers = {}

    def let_strangers_in_first(addresses):
        code = (f"from tests.workers.helpers import annoy; "
                f"annoy({[list(a) for a in addresses]!r}, {per_address}, 0.2)")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        strangers["proc"] = proc
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # they are in the listeners' queues and slots before any rank dials
        return addresses

    def train(comm):
        results = []
        for step in range(20):
            comm.step = step
            time.sleep(0.05)  # "compute": the strangers keep knocking meanwhile
            results.append(comm.allreduce_(int_data(comm.rank, 100_003, "float64")))
        return results

    gc.collect()  # close what earlier tests left for the collector, before counting
    before_fds, before_threads = open_fds(), threading.active_count()
    with Peaks() as peaks:
        results = run_ring(HookedRendezvous(world_size, let_strangers_in_first), world_size,
                           train, timeout_s=30.0)
    proc = strangers["proc"]
    proc.stdin.close()  # the strangers report what they saw and leave
    counts = json.loads(proc.stdout.readline())
    proc.wait(10)
    proc.stdout.close()

    expected = exact_sum(world_size, 100_003, "float64")
    for per_rank in results:
        assert not isinstance(per_rank, BaseException), per_rank
        for out in per_rank:
            np.testing.assert_array_equal(out, expected)
    # (a ring the strangers stalled would have ended in a CollectiveTimeout above)
    assert counts["connected"] >= world_size * per_address, counts
    # Each rank: a listener, MAX_HANDSHAKES strangers at most, a dial, two ring sockets.
    budget = world_size * (ring.MAX_HANDSHAKES + 4) + 4  # + this test's pipes to its child
    assert peaks.fds - before_fds <= budget, (peaks.fds, before_fds, budget)
    # Per rank: its thread, the listener's and the sender's; none per stranger.
    assert peaks.threads - before_threads <= 3 * world_size, (peaks.threads, before_threads)
    gc.collect()
    assert open_fds() <= before_fds  # nothing left open (fewer: an earlier test's, collected)
    assert counts["refused"] > 0, counts  # the listeners closed once the ring stood


def test_listener_binds_to_the_advertised_address_and_closes_once_the_peer_is_in():
    seen = {}

    def probe(addresses):
        host, port = addresses[0]
        assert host == "127.0.0.1"
        with pytest.raises(ConnectionRefusedError):  # bound to 127.0.0.1, not 0.0.0.0
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
        for reply in (os.urandom(ring._CLIENT.size), wrong_secret_reply):
            with socket.create_connection((host, port), timeout=5) as raw:
                hello = raw.recv(64)
                assert hello.startswith(b"DTR1")
                raw.sendall(reply(hello[4:]) if callable(reply) else reply)
                try:
                    assert raw.recv(64) == b"", "the listener answered a stranger"
                except ConnectionResetError:
                    pass
        seen["port"] = port
        return addresses

    def wrong_secret_reply(nonce):
        nc = os.urandom(ring._NONCE)  # rank 1 is rank 0's previous rank in a ring of two
        return ring._CLIENT.pack(1, 0, nc, ring._client_mac(b"guess", nonce, nc, 1, 0))

    def allreduce(comm):
        data = comm.allreduce_(int_data(comm.rank, 1001, "float32"))
        with pytest.raises(ConnectionRefusedError):  # nobody listens once the ring stands
            socket.create_connection(("127.0.0.1", comm.listen_address[1]), timeout=5).close()
        return data

    results = run_ring(HookedRendezvous(2, probe), 2, allreduce)
    for out in results:
        assert not isinstance(out, BaseException), out
        np.testing.assert_array_equal(out, exact_sum(2, 1001, "float32"))
    assert "port" in seen


def test_a_setup_that_fails_leaves_no_descriptor_or_thread_behind():
    from disttrain.distributed.comm import CollectiveTimeout

    before_fds, before_threads = open_fds(), threading.active_count()
    # Rank 0 of two, its peer never comes: the rendezvous itself times out.
    with pytest.raises(CollectiveTimeout):
        RingCommunicator(0, 2, HookedRendezvous(2, lambda a: a), SECRET, timeout_s=0.5,
                         host="127.0.0.1")
    assert open_fds() == before_fds
    deadline = time.monotonic() + 5
    while threading.active_count() > before_threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before_threads


# --- item 12: frame integrity ----------------------------------------------------------

class Proxy:
    """A man in the middle on loopback: passes rank 0's connection to rank 1 through, with
    `tamper(stream)` applied to the first `length` bytes rank 0 sends (handshake included)."""

    def __init__(self, target: tuple, length: int, tamper):
        self.target, self.length, self.tamper = target, length, tamper
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address = self._server.getsockname()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        client, _ = self._server.accept()
        self._server.close()
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        head = bytearray()
        while len(head) < self.length:
            data = client.recv(self.length - len(head))
            if not data:
                break
            if len(head) < ring._CLIENT.size:  # the handshake goes on at once: rank 0
                cut = ring._CLIENT.size - len(head)  # sends its frame only after it
                upstream.sendall(data[:cut])
            head += data
        self.tamper(head)
        upstream.sendall(head[ring._CLIENT.size:])
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def through_proxy(length: int, tamper):
    """A rendezvous hook that puts a Proxy in front of rank 1 (only rank 0 dials it)."""
    def hook(addresses):
        proxy = Proxy(tuple(addresses[1]), length, tamper)
        return [addresses[0], proxy.address]
    return hook


def frame_layout(integrity: bool, nbytes: int, piece: int) -> list[tuple[int, int]]:
    """(start, end) of each piece of rank 0's first frame in the stream it sends to rank 1."""
    tag = ring._MAC if integrity else 0
    at = ring._CLIENT.size + ring._HEADER.size + tag
    pieces = []
    for lo in range(0, nbytes, piece):
        size = min(piece, nbytes - lo)
        pieces.append((at, at + size))
        at += size + tag
    return pieces


N = 40_000  # float64: rank 0's first frame carries 20,000 of them, 160,000 bytes
PIECE = 32 * 1024  # bytes: 4096 float64 per piece


def allreduce_through(tamper, integrity: bool) -> list:
    layout = frame_layout(integrity, N // 2 * 8, PIECE)
    length = layout[-1][1] + (ring._MAC if integrity else 0)
    return run_ring(HookedRendezvous(2, through_proxy(length, lambda head: tamper(head, layout))),
                    2, lambda comm: comm.allreduce_(int_data(comm.rank, N, "float64")),
                    timeout_s=10.0, integrity=integrity, segment_bytes=PIECE)


def flip_a_bit(head, layout):
    """The sign bit of rank 0's first nonzero number in the frame's second piece."""
    first = PIECE // 8
    data = int_data(0, N, "float64")
    i = first + int(np.flatnonzero(data[first:first + PIECE // 8])[0])
    head[layout[1][0] + (i - first) * 8 + 7] ^= 0x80  # little-endian: byte 7 holds the sign


def swap_two_pieces(head, layout):
    """The frame's first two pieces (each with its tag, if any) change places."""
    (a, a_end), (b, b_end) = layout[0], layout[1]
    assert a_end - a == b_end - b
    span = b - a
    head[a:a + span], head[b:b + span] = head[b:b + span], head[a:a + span]


@pytest.mark.parametrize("tamper", [flip_a_bit, swap_two_pieces], ids=["bit", "reorder"])
def test_a_tampered_frame_fails_the_allreduce_naming_integrity(tamper):
    results = allreduce_through(tamper, integrity=True)
    assert all(isinstance(r, CollectiveError) for r in results), results
    assert "integrity" in str(results[1]) and "rank 0" in str(results[1]), results[1]


@pytest.mark.parametrize("tamper", [flip_a_bit, swap_two_pieces], ids=["bit", "reorder"])
def test_without_integrity_the_same_tampering_goes_unnoticed(tamper):
    # The proof that the test above can fail: the proxy really alters the numbers.
    results = allreduce_through(tamper, integrity=False)
    expected = exact_sum(2, N, "float64")
    for out in results:
        assert not isinstance(out, BaseException), out
        assert not np.array_equal(out, expected)
    assert np.array_equal(results[0], results[1])  # wrong everywhere alike: silent


def test_an_untouched_proxy_passes_with_integrity_on():
    results = allreduce_through(lambda head, layout: None, integrity=True)
    for out in results:
        assert not isinstance(out, BaseException), out
        np.testing.assert_array_equal(out, exact_sum(2, N, "float64"))


def test_integrity_is_off_on_one_host_unless_asked_and_one_side_asking_is_enough():
    def modes(comm):
        comm.allreduce_(np.ones(10))
        return dict(comm.integrity_on)

    default = run_ring(HookedRendezvous(3, lambda a: a), 3, modes)
    assert default == [{"next": False, "prev": False}] * 3
    # Rank 1 asks: its links to rank 0 and rank 2 carry tags, rank 2 -> rank 0 does not.
    asked = run_ring(HookedRendezvous(3, lambda a: a), 3, modes, integrity=[None, True, False])
    assert asked == [{"next": True, "prev": False}, {"next": True, "prev": True},
                     {"next": False, "prev": True}]


def test_same_host_tells_loopback_and_own_address_from_others():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            assert same_host(client)
    with pytest.raises(ValueError, match="integrity"):
        RingCommunicator(0, 1, None, SECRET, integrity="yes")


def test_frame_tags_depend_on_the_counter():
    mac = ring._FrameMac(b"k", b"n" * 32, b"c" * 32)
    assert mac.tag(b"same bytes") != mac.tag(b"same bytes")


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: two hosts, one address each."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = f"dts{os.getpid() % 100000}"
    names, addresses = [f"{tag}a", f"{tag}b"], ["10.231.7.1", "10.231.7.2"]
    commands = [["ip", "netns", "add", names[0]], ["ip", "netns", "add", names[1]],
                ["ip", "link", "add", f"{tag}x", "type", "veth", "peer", "name", f"{tag}y"],
                ["ip", "link", "set", f"{tag}x", "netns", names[0]],
                ["ip", "link", "set", f"{tag}y", "netns", names[1]]]
    for ns, dev, address in zip(names, (f"{tag}x", f"{tag}y"), addresses):
        commands += [["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev],
                     ["ip", "-n", ns, "link", "set", dev, "up"]]
    try:
        for command in commands:
            if subprocess.run(command, capture_output=True).returncode != 0:
                pytest.skip(f"cannot set up network namespaces: {' '.join(command)}")
        yield list(zip(names, addresses))
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_integrity_is_on_by_default_between_hosts(two_hosts, tmp_path):
    procs = []
    for rank, (ns, address) in enumerate(two_hosts):
        code = ("from tests.workers.helpers import ring_rank_main; "
                f"ring_rank_main({rank}, 2, {address!r}, {str(tmp_path)!r})")
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                                      cwd=REPO, stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "PYTHONPATH": str(REPO)}))
    reports = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    expected = digest(exact_sum(2, 100_003, "float32"))
    for report in reports:
        assert report["digest"] == expected
        assert report["integrity_on"] == {"next": True, "prev": True}
