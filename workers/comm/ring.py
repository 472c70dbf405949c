"""RingCommunicator: bandwidth-optimal ring all-reduce over TCP, straight between workers.

Rank r sends to rank r+1 and receives from rank r-1 over two authenticated connections.
All-reduce is reduce-scatter then all-gather, W-1 steps each, pipelined in segments: a
segment is forwarded as soon as it has been added, by a sender thread, so sending and
receiving overlap and large chunks cannot deadlock. Chunking and the order of additions
depend only on (rank, world_size, size), so the same inputs give the same bits every run:
chunk c is summed from its owner round the ring, ((x_c + x_c+1) + x_c+2) + ..., and the
pieces a frame is cut into (an eighth of it, 512 KB to 4 MB; see `_piece`) only decide
how much is added at a time, never in which order.

The sharded optimizer's reduce_scatter_ and allgather_ are the two phases on their own,
each moving (W-1)/W of the buffer out of every rank (the all-reduce: twice that). Rank r
must end the reduce-scatter holding its own chunk (`chunk_bounds`)[r], so that phase's
schedule is the all-reduce's shifted back one chunk: chunk c is summed from rank c+1
round the ring and finished at its owner, ((x_c+1 + x_c+2) + ...) + x_c, an order of its
own, as fixed as the all-reduce's. The all-gather starts from each rank's own chunk.
Their frames carry their own kinds, so a rank in one and a peer in another collective
fail at the first header with the error that names both. Both take explicit `bounds`
(rank r's part of the buffer, the same list on every rank) in place of chunk_bounds: the
hierarchical ring's leaders reduce-scatter and all-gather their nodes' regions.

Where the time goes, on one machine: loopback TCP costs a copy into the kernel and one out
of it, both on the CPU, and on 2 ranks every rank sends and receives the whole buffer at
once, so the ring can go no faster than a raw stream both ways between the same processes
(`disttrain bench allreduce` prints it, `tcp-both-ways`, beside the one-way stream).

Waits: a rank waiting to receive blocks in the kernel (SO_RCVTIMEO = timeout_s, see
`kernel_timeouts`), which notices a peer that died (a reset connection) but not one that
is alive and absent. Given `on_wait`, the rank instead polls its socket before each unit
and calls on_wait(seconds since the collective began) every ON_WAIT_EVERY_MS while
nothing arrives, and while its last sends wait for the next rank to take them; what it
raises ends the collective (the hierarchical path's leaders poll the coordinator's abort
flag there).

Ray-free on purpose: addresses come from any `rendezvous` with
`publish_address(rank, host, port)` and `addresses(timeout_s) -> [(host, port), ...]`;
in a Ray job that is `RayRendezvous`, the coordinator actor's address registry.

The listener. It is bound to the address this rank advertises (not 0.0.0.0), opened before
the address is published, and closed as soon as the previous rank has authenticated: after
setup the ring's port takes no connections at all. While it is open, one thread serves it
and runs every handshake itself on non-blocking sockets, so a stranger never costs a
thread; at most MAX_HANDSHAKES are in progress (a new one evicts the oldest, which a
slow-loris client always is) and each has one deadline, HANDSHAKE_TIMEOUT_S, for the whole
exchange, not per read. The dialer retries a handshake that was cut off until its setup
timeout, so strangers who came first cannot lock the real peer out.

The handshake, on the connection rank r-1 opens to rank r (S: rank r, C: rank r-1, K: the
job's secret, | concatenation, HMAC = HMAC-SHA256):

    S -> C   "DTR1" | ns                                   ns: 32 random bytes
    C -> S   rank | want | nc | HMAC(K, "client" | ns | nc | rank | want)
    S -> C   on | HMAC(K, "server" | nc | ns | on)

rank is C's rank (uint32, must be r-1), want and on one byte each: C's wish for frame
integrity and S's decision, on = want or S's own wish. Both nonces make every transcript
unique (no replay); each side proves it knows K before the other trusts it, and the MACs
cover the integrity choice, so no one on the path can switch it off. A side wishes for
integrity when told to (`integrity=True`), not when told not to (False), and by default
(None) unless the connection stays on this host (the peer's address is loopback or the
connection's own local address).

Frames, from r-1 to r after the handshake (integers big-endian):

    header   "DTR1" | kind u8 | dtype char | 2 pad | step i64 | seq i64 | nbytes u64 | piece u32
    payload  nbytes bytes in pieces of `piece` bytes (the last may be shorter)

The receiver reads the payload piece by piece, as the sender wrote it, and forwards pieces
as it gets them. With integrity on, the header and every piece are each followed by a
32-byte tag, HMAC(Kf, counter | bytes), where Kf = HMAC(K, "frames" | ns | nc) is this
connection's own key and counter (u64) numbers the tagged units sent on it: an altered,
dropped, replayed or reordered unit fails its tag. A piece is checked before it is added,
stored or forwarded, so a bad one ends the collective with a CollectiveError naming the
rank it came from and "integrity"; its numbers reach neither the caller nor the ring.
HMAC-SHA256 runs at about 1.5 GB/s per core here (SHA extensions), three times keyed
BLAKE2b; `disttrain bench allreduce` prints the ring with and without it.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import os
import queue
import select
import selectors
import socket
import struct
import sys
import threading
import time

import numpy as np

from disttrain.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveAborted,
    CollectiveError,
    CollectiveTimeout,
    PeerLost,
    StepMismatch,
)
from disttrain.workers.comm.base import (
    KIND_NAMES,
    KINDS,
    Call,
    CommunicatorBase,
    check_same_call,
    chunk_bounds,
    flat_view,
)

# A frame this rank starts is cut into pieces of 1/PIECES_PER_FRAME of it, kept within
# [MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES] (see RingCommunicator._piece).
PIECES_PER_FRAME = 8
MIN_SEGMENT_BYTES = 512 * 1024
MAX_SEGMENT_BYTES = 4 * 1024 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 5.0  # the whole exchange; an honest peer needs one round trip
ON_WAIT_EVERY_MS = 5  # with an on_wait callback: how often a wait to receive polls it
MAX_HANDSHAKES = 8  # in progress at once on one listener

# magic, kind, dtype char, step, seq, nbytes, piece
_HEADER = struct.Struct("!4sBcxxqqQI")
_MAGIC = b"DTR1"
_NONCE = 32
_MAC = hashlib.sha256().digest_size
_HELLO = len(_MAGIC) + _NONCE  # S -> C
_CLIENT = struct.Struct(f"!IB{_NONCE}s{_MAC}s")  # C -> S: rank, want, nc, mac
_PROOF = struct.Struct(f"!B{_MAC}s")  # S -> C: on, mac


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"|".join(parts), hashlib.sha256).digest()


def _client_mac(secret: bytes, ns: bytes, nc: bytes, rank: int, want: int) -> bytes:
    return _mac(secret, b"client", ns, nc, struct.pack("!IB", rank, want))


def _server_mac(secret: bytes, ns: bytes, nc: bytes, on: int) -> bytes:
    return _mac(secret, b"server", nc, ns, bytes([on]))


class _FrameMac:
    """Tags for one direction of one connection: HMAC(key, counter | unit), counter += 1."""

    def __init__(self, secret: bytes, ns: bytes, nc: bytes):
        self._base = hmac.new(_mac(secret, b"frames", ns, nc), digestmod=hashlib.sha256)
        self._count = 0

    def tag(self, unit) -> bytes:
        h = self._base.copy()  # the keyed state, without hashing the key again
        h.update(self._count.to_bytes(8, "big"))
        h.update(unit)
        self._count += 1
        return h.digest()


def same_host(sock: socket.socket) -> bool:
    """Whether a connection stays on this machine: the peer is loopback or our own address."""
    local, peer = sock.getsockname()[0], sock.getpeername()[0]
    return peer == local or ipaddress.ip_address(peer).is_loopback


def recv_exactly(sock: socket.socket, view: memoryview) -> None:
    """Fill view from a blocking socket. MSG_WAITALL lets the kernel wait for all of it: one
    call (one release of the GIL, no poll) per piece, not one per packet that arrives."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:], len(view) - got, socket.MSG_WAITALL)
        if n == 0:
            raise ConnectionResetError("connection closed")
        got += n


def kernel_timeouts(sock: socket.socket, timeout_s: float) -> None:
    """Make a connected socket blocking, with its timeout kept by the kernel.

    Python's own timeout makes a socket non-blocking and polls before every call, so a
    piece of a few MB costs dozens of poll/recv pairs, each a trip through the GIL that
    the other thread of the rank contends for; under a loaded machine that trip, not the
    copying, was the ring's time. SO_RCVTIMEO/SO_SNDTIMEO bound every blocking call alike:
    a call that gets nothing within timeout_s fails with EAGAIN (BlockingIOError)."""
    sock.settimeout(None)
    seconds = int(timeout_s)
    timeval = struct.pack("ll", seconds, int((timeout_s - seconds) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _recv_by(sock: socket.socket, view: memoryview, deadline: float) -> None:
    """recv_exactly with one deadline for all of it (a peer that dribbles cannot stretch it)."""
    got = 0
    while got < len(view):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("handshake deadline passed")
        sock.settimeout(left)
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionResetError("connection closed")
        got += n


def tune_socket(sock: socket.socket) -> None:
    """The ring's socket options: no Nagle delay, buffers sized for its segments."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)


class _Sender:
    """A thread that writes queued frames to the next rank, so sends overlap receives.

    Every queued bytes-like item is one unit of the frame format (a header or a piece),
    followed on the wire by its tag when the connection has integrity on; the tags are
    computed here, off the receiving thread.
    """

    def __init__(self, sock: socket.socket, on_error, mac: _FrameMac | None):
        self.sock = sock
        self.on_error = on_error
        self.mac = mac
        self.error: BaseException | None = None
        self.bytes_sent = 0  # written by this thread only; read between collectives
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ring-sender")
        self._thread.start()

    def put(self, data) -> None:
        self._queue.put(data)

    def drain(self, timeout_s: float, on_wait=None) -> None:
        """Wait until everything queued is in the kernel: the caller may reuse its buffer.
        on_wait(seconds waited), if given, is called every ON_WAIT_EVERY_MS meanwhile."""
        done, began = threading.Event(), time.monotonic()
        self._queue.put(done)
        poll_s = timeout_s if on_wait is None else ON_WAIT_EVERY_MS / 1000
        while not done.wait(min(poll_s, max(0.0, began + timeout_s - time.monotonic()))):
            waited = time.monotonic() - began
            if waited >= timeout_s:
                raise TimeoutError("send did not finish")
            on_wait(waited)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
            elif self.error is None:
                try:
                    self.sock.sendall(item)
                    self.bytes_sent += len(item)
                    if self.mac is not None:
                        self.sock.sendall(self.mac.tag(item))
                        self.bytes_sent += _MAC
                except OSError as e:
                    self.error = e
                    self.on_error()


class _Pending:
    """A handshake in progress on the listener: the client's reply so far, and its deadline."""

    def __init__(self, nonce: bytes):
        self.nonce = nonce
        self.reply = bytearray(_CLIENT.size)
        self.got = 0
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S


class _Listener:
    """The ring's listening socket and its handshakes, served by one thread until the
    previous rank has authenticated (see the module docstring)."""

    def __init__(self, bind_host: str, port: int, admit):
        # admit(sock, server_nonce, client_reply) -> (proof, context), or None to refuse;
        # once the proof is sent, (sock, context) is `admitted` and the listener closes.
        self._admit = admit
        self.admitted: tuple | None = None
        self.done = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tune_socket(self._sock)  # accepted sockets inherit the buffer sizes
        try:
            self._sock.bind((bind_host, port))
            self._sock.listen(128)
        except OSError:
            self._sock.close()
            raise
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="ring-listener")
        self._thread.start()

    def close(self) -> None:
        """Stop serving; returns once the listener and every stranger's socket are closed."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the select() below
        except OSError:
            pass
        self._thread.join(5.0)

    def _serve(self) -> None:
        pending: collections.OrderedDict = collections.OrderedDict()  # sock -> _Pending
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        try:
            while self.admitted is None:
                now = time.monotonic()
                for sock in [s for s, p in pending.items() if p.deadline <= now]:
                    self._drop(selector, pending, sock)
                wake = min((p.deadline for p in pending.values()), default=now + 1.0)
                for key, _ in selector.select(max(0.0, wake - now)):
                    if key.fileobj is self._sock:
                        if not self._accept(selector, pending):
                            return  # the listener was shut down
                    elif key.fileobj in pending:
                        self._read(selector, pending, key.fileobj)
        finally:
            for sock in list(pending):
                self._drop(selector, pending, sock)
            selector.close()
            self._sock.close()
            self.done.set()

    def _accept(self, selector, pending) -> bool:
        try:
            sock, _ = self._sock.accept()
        except BlockingIOError:
            return True
        except OSError:
            return False
        if len(pending) >= MAX_HANDSHAKES:  # the oldest has had the longest to finish
            self._drop(selector, pending, next(iter(pending)))
        sock.setblocking(False)
        state = _Pending(os.urandom(_NONCE))
        try:
            if sock.send(_MAGIC + state.nonce) != _HELLO:  # fits any fresh send buffer
                raise OSError("short send")
        except OSError:
            sock.close()
            return True
        pending[sock] = state
        selector.register(sock, selectors.EVENT_READ)
        return True

    def _read(self, selector, pending, sock: socket.socket) -> None:
        state = pending[sock]
        try:
            n = sock.recv_into(memoryview(state.reply)[state.got:])
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:  # closed or reset by the client
            self._drop(selector, pending, sock)
            return
        state.got += n
        if state.got < len(state.reply):
            return
        verdict = self._admit(sock, state.nonce, bytes(state.reply))
        try:
            if verdict is None or sock.send(verdict[0]) != len(verdict[0]):
                raise OSError("refused")
        except OSError:
            self._drop(selector, pending, sock)
            return
        selector.unregister(sock)
        del pending[sock]
        sock.setblocking(True)
        self.admitted = (sock, verdict[1])

    @staticmethod
    def _drop(selector, pending, sock: socket.socket) -> None:
        selector.unregister(sock)
        del pending[sock]
        sock.close()


class RingCommunicator(CommunicatorBase):
    """A Communicator whose collectives run over a TCP ring between the ranks."""

    noun = "ring"

    def __init__(self, rank: int, world_size: int, rendezvous, secret: bytes | str,
                 timeout_s: float = DEFAULT_TIMEOUT_S, host: str | None = None,
                 bind_host: str | None = None, port: int = 0,
                 segment_bytes: int | None = None, integrity: bool | None = None,
                 on_wait=None):
        super().__init__(rank, world_size, timeout_s)
        if not secret and world_size > 1:
            raise ValueError("the ring backend needs the job's secret (secret=...) to "
                             "authenticate connections between workers")
        if integrity not in (None, True, False):
            raise ValueError(f"integrity must be None (on across hosts), True or False, "
                             f"got {integrity!r}")
        self.segment_bytes = segment_bytes
        self.integrity = integrity
        # on_wait(waited_s), seconds since the collective began: called every
        # ON_WAIT_EVERY_MS while this rank waits for the previous rank's next unit, so a
        # caller can end a wait on a peer that is alive but absent (the hierarchical path
        # polls the coordinator's abort flag); what it raises ends the collective and
        # breaks the ring, as any failure does. None: the kernel's blocking wait alone.
        self._on_wait = on_wait
        self._poller: select.poll | None = None
        self._started = 0.0
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
        self._next = (rank + 1) % world_size
        self._prev = (rank - 1) % world_size
        self._recv_sock: socket.socket | None = None
        self._send_sock: socket.socket | None = None
        self._recv_mac: _FrameMac | None = None
        self._sender: _Sender | None = None
        self._listener: _Listener | None = None
        self._frame_left = 0  # payload bytes the open outgoing frame still needs
        self._scratch_bytes = np.empty(0, np.uint8)  # kept: a fresh one costs page faults
        self.listen_address: tuple[str, int] | None = None
        # Whether frames carry tags, per connection: to the next rank, from the previous.
        self.integrity_on = {"next": False, "prev": False}
        if world_size > 1:
            try:
                self._connect(rendezvous, host or node_address(), bind_host, port)
            except BaseException:
                self.close()
                raise

    @property
    def bytes_sent(self) -> int:
        """Bytes this rank has written to the next rank so far (headers, payload, tags):
        diagnostics, e.g. that a reduce-scatter moves half an all-reduce's bytes."""
        return 0 if self._sender is None else self._sender.bytes_sent

    # --- setup ------------------------------------------------------------------------

    def _connect(self, rendezvous, host: str, bind_host: str | None, port: int) -> None:
        self._listener = _Listener(bind_host or host, port, self._admit)
        self.listen_address = (host, self._listener.port)
        rendezvous.publish_address(self.rank, *self.listen_address)
        addresses = rendezvous.addresses(self.timeout_s)
        self._send_sock, send_mac = self._dial(tuple(addresses[self._next]))
        self.integrity_on["next"] = send_mac is not None
        if not self._listener.done.wait(self.timeout_s) or self._listener.admitted is None:
            raise CollectiveTimeout(
                f"ring setup: rank {self._prev} never connected to rank {self.rank} within "
                f"{self.timeout_s:.1f} s")
        self._recv_sock, self._recv_mac = self._listener.admitted
        kernel_timeouts(self._recv_sock, self.timeout_s)
        if self._on_wait is not None:
            self._poller = select.poll()
            self._poller.register(self._recv_sock, select.POLLIN)
        self.integrity_on["prev"] = self._recv_mac is not None
        self._sender = _Sender(self._send_sock, self._wake_receiver, send_mac)

    def _wants_integrity(self, sock: socket.socket) -> int:
        if self.integrity is None:
            return int(not same_host(sock))
        return int(self.integrity)

    def _dial(self, address: tuple) -> tuple[socket.socket, _FrameMac | None]:
        """Connect to the next rank and authenticate; a handshake cut off (the listener
        evicted it among strangers, or it timed out) is tried again until the setup timeout."""
        deadline = time.monotonic() + self.timeout_s
        pause = 0.02
        while True:
            try:
                return self._dial_once(address, deadline)
            except CollectiveError:  # refused, or not the peer: trying again will not help
                raise
            except OSError as e:
                if time.monotonic() + pause >= deadline:
                    raise PeerLost(f"ring setup: could not connect to rank {self._next} at "
                                   f"{address[0]}:{address[1]} ({e})") from None
            time.sleep(pause)
            pause = min(2 * pause, 0.5)

    def _dial_once(self, address: tuple, setup_deadline: float):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tune_socket(sock)
        deadline = min(setup_deadline, time.monotonic() + HANDSHAKE_TIMEOUT_S)
        try:
            sock.settimeout(max(0.0, deadline - time.monotonic()))
            try:
                sock.connect(address)
            except ConnectionRefusedError:
                raise PeerLost(f"ring setup: rank {self._next} at {address[0]}:{address[1]} "
                               "refused the connection (not listening)") from None
            hello = bytearray(_HELLO)
            _recv_by(sock, memoryview(hello), deadline)
            if hello[:len(_MAGIC)] != _MAGIC:
                raise CollectiveError(f"ring setup: {address[0]}:{address[1]} is not rank "
                                      f"{self._next}'s ring listener")
            ns, nc = bytes(hello[len(_MAGIC):]), os.urandom(_NONCE)
            want = self._wants_integrity(sock)
            sock.sendall(_CLIENT.pack(self.rank, want, nc,
                                      _client_mac(self._secret, ns, nc, self.rank, want)))
            proof = bytearray(_PROOF.size)
            _recv_by(sock, memoryview(proof), deadline)
            on, mac = _PROOF.unpack(proof)
            if not hmac.compare_digest(mac, _server_mac(self._secret, ns, nc, on)) or \
                    on not in (want, 1):
                raise CollectiveError(f"ring setup: rank {self._next} at "
                                      f"{address[0]}:{address[1]} did not prove it knows the "
                                      "job's secret")
        except BaseException:
            sock.close()
            raise
        kernel_timeouts(sock, self.timeout_s)
        return sock, _FrameMac(self._secret, ns, nc) if on else None

    def _admit(self, sock: socket.socket, ns: bytes, reply: bytes):
        """The listener's side of the handshake: (proof, frame MAC or None), or None."""
        rank, want, nc, mac = _CLIENT.unpack(reply)
        if want not in (0, 1) or rank != self._prev or not hmac.compare_digest(
                mac, _client_mac(self._secret, ns, nc, rank, want)):
            return None
        try:
            on = want | self._wants_integrity(sock)
        except OSError:
            return None
        proof = _PROOF.pack(on, _server_mac(self._secret, ns, nc, on))
        return proof, _FrameMac(self._secret, ns, nc) if on else None

    # --- the protocol -----------------------------------------------------------------

    def _allreduce(self, flat: np.ndarray) -> None:
        self._collective("allreduce", lambda: self._ring_allreduce(flat))

    def _broadcast(self, flat: np.ndarray, root: int) -> None:
        self._collective("broadcast", lambda: self._ring_broadcast(flat, root))

    def _reduce_scatter(self, flat: np.ndarray, bounds: list | None = None) -> None:
        self._collective("reduce_scatter", lambda: self._ring_reduce_scatter(flat, bounds))

    def _allgather_chunks(self, flat: np.ndarray, bounds: list | None = None) -> None:
        self._collective("allgather_", lambda: self._ring_allgather_chunks(flat, bounds))

    def reduce_scatter_(self, buf: np.ndarray, bounds: list | None = None) -> np.ndarray:
        """Sum `buf` over all ranks into this rank's part of it, in place. The parts are
        `bounds` (rank r's (lo, hi), the same list on every rank) or else chunk_bounds:
        the hierarchical ring's leaders pass their nodes' regions."""
        return self._in_parts("reduce_scatter_", buf, bounds, self._reduce_scatter)

    def allgather_(self, buf: np.ndarray, bounds: list | None = None) -> np.ndarray:
        """Fill every rank's part of `buf` from its owner, in place; parts as in
        reduce_scatter_."""
        return self._in_parts("allgather_", buf, bounds, self._allgather_chunks)

    def _in_parts(self, op: str, buf: np.ndarray, bounds: list | None, run) -> np.ndarray:
        if bounds is None:
            return getattr(super(), op)(buf)
        flat = flat_view(buf, op)
        bounds = checked_bounds(bounds, flat.size, self.world_size, op)
        if self.world_size > 1:
            run(flat, bounds)
        return buf

    def _allgather(self, blob: bytes) -> list:
        return self._collective("allgather", lambda: self._ring_allgather(blob, "allgather"))

    def _barrier(self) -> None:
        self._collective("barrier", lambda: self._ring_allgather(b"", "barrier"))

    def _release(self) -> None:
        """Close the sockets and stop the threads."""
        if self._sender is not None:
            self._sender.stop()
        if self._listener is not None:
            self._listener.close()
            if self._listener.admitted is not None and self._recv_sock is None:
                self._listener.admitted[0].close()  # setup failed after the peer came
        for sock in (self._send_sock, self._recv_sock):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    # --- the algorithms ---------------------------------------------------------------

    def _ring_allreduce(self, flat: np.ndarray) -> None:
        w, r = self.world_size, self.rank
        bounds = chunk_bounds(flat.size, w)
        scratch = self._first_scratch(flat, bounds)
        # Reduce-scatter: after step s, chunk (r - s - 1) holds the sum of s + 2 ranks; the
        # last one finished (chunk r + 1) is forwarded too, which starts the all-gather.
        self._send_frame("allreduce", flat, *bounds[r])
        for s in range(w - 1):
            scratch = self._add_chunk("allreduce", flat, bounds[(r - s - 1) % w], scratch,
                                      forward=True)
        # All-gather: pass the finished chunks around; the last one received is not sent on.
        for s in range(w - 1):
            self._take_chunk("allreduce", flat, bounds[(r - s) % w], forward=s < w - 2)
        self._drain()

    def _ring_reduce_scatter(self, flat: np.ndarray, bounds: list | None) -> None:
        # The all-reduce's first phase shifted back one chunk, so that the chunk rank r
        # finishes, and keeps, is its own (chunk_bounds)[r]: it starts by sending chunk
        # r - 1 and at step s adds chunk (r - s - 2), never forwarding the last. Chunk c
        # is summed from rank c + 1 round the ring to its owner, (W-1)/W of the buffer
        # leaving each rank instead of the all-reduce's 2(W-1)/W. Explicit `bounds` only
        # move where chunk c lies; the order of its additions is the same.
        w, r = self.world_size, self.rank
        bounds = chunk_bounds(flat.size, w) if bounds is None else bounds
        scratch = self._first_scratch(flat, bounds)
        self._send_frame("reduce_scatter", flat, *bounds[(r - 1) % w])
        for s in range(w - 1):
            scratch = self._add_chunk("reduce_scatter", flat, bounds[(r - s - 2) % w], scratch,
                                      forward=s < w - 2)
        self._drain()

    def _ring_allgather_chunks(self, flat: np.ndarray, bounds: list | None) -> None:
        # The all-reduce's second phase, started from this rank's own chunk.
        w, r = self.world_size, self.rank
        bounds = chunk_bounds(flat.size, w) if bounds is None else bounds
        self._send_frame("allgather_", flat, *bounds[r])
        for s in range(w - 1):
            self._take_chunk("allgather_", flat, bounds[(r - s - 1) % w], forward=s < w - 2)
        self._drain()

    def _first_scratch(self, flat: np.ndarray, bounds: list) -> np.ndarray:
        """Room for one piece of the widest chunk (grown by _add_chunk if a peer's are bigger)."""
        widest = max(hi - lo for lo, hi in bounds)
        return self._scratch(min(self._piece(flat, widest), widest), flat.dtype)

    def _add_chunk(self, kind: str, flat: np.ndarray, chunk: tuple, scratch: np.ndarray, *,
                   forward: bool) -> np.ndarray:
        """Receive the previous rank's partial sum of `chunk` and add it into `flat`, piece by
        piece, forwarding each sum as soon as it is made; returns the (maybe grown) scratch."""
        lo, hi = chunk
        nbytes = (hi - lo) * flat.itemsize
        seg = self._recv_header(kind, flat, nbytes)  # the sender's piece
        if forward:
            self._open_frame(kind, flat, nbytes, seg)  # forwarded as received
        if seg > scratch.size:
            scratch = self._scratch(min(seg, hi - lo), flat.dtype)
        for a in range(lo, hi, seg):
            b = min(a + seg, hi)
            part = scratch[: b - a]
            self._recv_into(part)
            np.add(flat[a:b], part, out=flat[a:b])
            if forward:
                self._forward(flat[a:b])
        return scratch

    def _take_chunk(self, kind: str, flat: np.ndarray, chunk: tuple, *, forward: bool) -> None:
        """Receive a finished `chunk` straight into `flat`, forwarding each piece as it lands."""
        lo, hi = chunk
        nbytes = (hi - lo) * flat.itemsize
        seg = self._recv_header(kind, flat, nbytes)
        if forward:
            self._open_frame(kind, flat, nbytes, seg)
        for a in range(lo, hi, seg):
            b = min(a + seg, hi)
            self._recv_into(flat[a:b])
            if forward:
                self._forward(flat[a:b])

    def _ring_broadcast(self, flat: np.ndarray, root: int) -> None:
        forwards = self._next != root
        if self.rank == root:
            self._send_frame("broadcast", flat, 0, flat.size)
        else:
            seg = self._recv_header("broadcast", flat, flat.nbytes)
            if forwards:
                self._open_frame("broadcast", flat, flat.nbytes, seg)
            for a in range(0, flat.size, seg):
                b = min(a + seg, flat.size)
                self._recv_into(flat[a:b])
                if forwards:
                    self._forward(flat[a:b])
        self._drain()

    def _ring_allgather(self, blob: bytes, kind: str) -> list:
        w, r = self.world_size, self.rank
        blobs: list = [b""] * w
        blobs[r] = blob
        for s in range(w - 1):
            self._send_blob(kind, blobs[(r - s) % w])
            nbytes = self._recv_header(kind, None, None)
            incoming = bytearray(nbytes)
            if nbytes:
                self._recv_into(incoming)
            blobs[(r - s - 1) % w] = bytes(incoming)
        self._drain()
        return blobs

    def _scratch(self, size: int, dtype: np.dtype) -> np.ndarray:
        """`size` elements to receive a piece into before it is added, reused across calls."""
        nbytes = size * dtype.itemsize
        if self._scratch_bytes.nbytes < nbytes:
            self._scratch_bytes = np.empty(nbytes, np.uint8)
        return self._scratch_bytes[:nbytes].view(dtype)

    # --- frames -----------------------------------------------------------------------

    def _piece(self, flat: np.ndarray, size: int) -> int:
        """Elements per piece in a frame of `size` elements that this rank starts.

        `segment_bytes` when given. Otherwise an eighth of the frame, within 512 KB-4 MB:
        enough pieces that forwarding overlaps receiving, and few enough that the ring
        spends its time in the kernel's copies rather than in one Python round (a queued
        piece, a send, a wake-up) per piece: per 64 MB all-reduce on 2 ranks, 4 MB pieces
        took 45 ms of CPU per rank where 512 KB pieces took 65 ms (user 15 -> 9, system
        50 -> 36). How a frame is cut never changes which numbers are added to which.
        """
        if self.segment_bytes is not None:
            return max(1, self.segment_bytes // flat.itemsize)
        nbytes = min(max(size * flat.itemsize // PIECES_PER_FRAME, MIN_SEGMENT_BYTES),
                     MAX_SEGMENT_BYTES)
        return max(1, nbytes // flat.itemsize)

    def _header(self, kind: str, dtype_char: bytes, nbytes: int, piece_bytes: int) -> bytes:
        return _HEADER.pack(_MAGIC, KINDS[kind], dtype_char, self.step, self._seq, nbytes,
                            piece_bytes)

    def _open_frame(self, kind: str, flat: np.ndarray, nbytes: int, piece: int) -> None:
        self._sender.put(self._header(kind, flat.dtype.char.encode(), nbytes,
                                      piece * flat.itemsize))
        self._frame_left = nbytes

    def _forward(self, part: np.ndarray) -> None:
        self._sender.put(memoryview(part).cast("B"))
        self._frame_left -= part.nbytes

    def _send_frame(self, kind: str, flat: np.ndarray, lo: int, hi: int) -> None:
        seg = self._piece(flat, hi - lo)
        self._open_frame(kind, flat, (hi - lo) * flat.itemsize, seg)
        for a in range(lo, hi, seg):
            self._forward(flat[a:min(a + seg, hi)])

    def _send_blob(self, kind: str, blob: bytes) -> None:
        """A frame of raw bytes (allgather, barrier, abort): one piece, or none if empty."""
        header = self._header(kind, b"B", len(blob), len(blob))
        if self._sender.mac is None:
            self._sender.put(header + blob)  # one write: these are small and often latency-bound
            return
        self._sender.put(header)
        if blob:
            self._sender.put(blob)

    def _recv_header(self, kind: str, flat: np.ndarray | None, nbytes: int | None) -> int:
        """Check the next frame is `kind` as this rank calls it: its piece in elements for
        data (`flat` given), else its payload size."""
        raw = bytearray(_HEADER.size)
        self._recv_into(raw)
        magic, kind_id, dtype_char, step, seq, got, piece = _HEADER.unpack(raw)
        if magic != _MAGIC:
            raise CollectiveError(f"rank {self._prev} sent a malformed frame during "
                                  f"{self._my_call(kind).where()}")
        if kind_id == KINDS["abort"]:
            reason = bytearray(got)
            if got:
                self._recv_into(reason)
            raise CollectiveAborted(reason.decode(errors="replace"))
        theirs = Call(self._prev, step, seq, KIND_NAMES.get(kind_id, "?"), got,
                      dtype_char.decode(errors="replace"))
        dtype = None if flat is None else flat.dtype.char  # None: any size will do
        check_same_call(theirs, self._my_call(kind, nbytes=nbytes, dtype=dtype))
        if flat is None:
            return got
        if piece <= 0 or piece % flat.itemsize:
            raise CollectiveError(f"rank {self._prev} sent a frame in pieces of {piece} bytes "
                                  f"during {self._my_call(kind).where()}")
        return piece // flat.itemsize

    def _recv_into(self, target) -> None:
        """Fill `target` with the next unit; with integrity on, check its tag first."""
        view = memoryview(target).cast("B")
        if self._poller is not None:
            self._await_data()
        try:
            recv_exactly(self._recv_sock, view)
            if self._recv_mac is not None:
                tag = bytearray(_MAC)
                recv_exactly(self._recv_sock, memoryview(tag))
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO ran out
            raise CollectiveTimeout(
                f"collective #{self._seq} at step {self.step}: rank {self._prev} sent nothing "
                f"for {self.timeout_s:.1f} s") from None
        except OSError as e:
            raise PeerLost(f"rank {self._prev} died or closed the ring connection during "
                           f"collective #{self._seq} at step {self.step} ({e})") from None
        if self._recv_mac is not None and not hmac.compare_digest(tag,
                                                                  self._recv_mac.tag(view)):
            raise CollectiveError(
                f"integrity check failed on data from rank {self._prev} during collective "
                f"#{self._seq} at step {self.step}: a frame was altered, dropped or replayed "
                "on the way (its HMAC does not match); the collective is abandoned and its "
                "result discarded")

    def _drain(self) -> None:
        """Wait until this rank's sends are in the kernel (the next rank may be slow to take
        them), polling on_wait meanwhile as _await_data does."""
        on_wait = self._on_wait and (lambda _: self._on_wait(time.monotonic() - self._started))
        self._sender.drain(self.timeout_s, on_wait)

    def _await_data(self) -> None:
        """Wait until the previous rank's next unit starts to arrive, calling on_wait every
        ON_WAIT_EVERY_MS (one poll per unit: nothing while data keeps coming). A unit that
        has started is read by the kernel's blocking wait, bounded by SO_RCVTIMEO."""
        began = time.monotonic()
        while not self._poller.poll(ON_WAIT_EVERY_MS):  # readable, closed or reset: go on
            now = time.monotonic()
            if now - began >= self.timeout_s:
                raise CollectiveTimeout(
                    f"collective #{self._seq} at step {self.step}: rank {self._prev} sent "
                    f"nothing for {self.timeout_s:.1f} s")
            self._on_wait(now - self._started)

    # --- failure handling -------------------------------------------------------------

    def _collective(self, kind: str, run):
        self._next_seq(kind)
        self._started = time.monotonic()
        try:
            return run()
        except CollectiveError as e:
            error = e
        except TimeoutError as e:  # the sender could not drain
            error = CollectiveTimeout(
                f"{kind} at step {self.step}: rank {self._next} took nothing for "
                f"{self.timeout_s:.1f} s ({e})")
        except OSError:  # raised by the sender thread; reported below
            error = None
        send_error = self._sender.error
        if send_error is not None and not isinstance(error, (StepMismatch, CollectiveAborted)):
            # The receiver was woken by the sender's failure: the cause is the next rank.
            error = PeerLost(f"rank {self._next} died or closed the ring connection during "
                             f"{kind} at step {self.step} ({send_error})")
        self._break(str(error))
        raise error

    def _wake_receiver(self) -> None:
        try:
            self._recv_sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def abort(self, reason: str) -> None:
        """Fail the whole ring with `reason`: the next rank gets an abort frame, then this
        rank's connections close (its previous rank sees them reset). Once only; nothing
        if the ring is already closed, broken or was never connected."""
        if not self._closed and self._broken is None and self._sender is not None:
            self._break(reason)

    def _break(self, reason: str) -> None:
        """Tell the next rank why, so the whole ring fails with the first cause, then close."""
        self._broken = reason
        if self._frame_left == 0 and self._sender.error is None:
            # Only between frames: queued after the complete ones, it lands on a boundary.
            self._send_blob("abort", reason.encode())
            try:
                self._sender.drain(1.0)
            except (TimeoutError, OSError):
                pass
        self.close()


def checked_bounds(bounds, size: int, world_size: int, op: str) -> list:
    """`bounds` as a list of (lo, hi) ints, one per rank, each within a buffer of `size`
    elements; a ValueError naming `op` otherwise. (Every rank must pass the same list: a
    peer's other chunk sizes show in the frame headers, as any other mismatch.)"""
    out = [(int(lo), int(hi)) for lo, hi in bounds]
    if len(out) != world_size or not all(0 <= lo <= hi <= size for lo, hi in out):
        raise ValueError(f"{op} bounds must be one (lo, hi) per rank of {world_size}, with "
                         f"0 <= lo <= hi <= {size}; got {bounds!r}")
    return out


def node_address() -> str:
    """The address other workers reach this one at: Ray's node IP inside Ray, else the
    address of the interface this machine's outgoing traffic leaves by."""
    ray = sys.modules.get("ray")  # never imported here: the ring itself needs no Ray
    if ray is not None and ray.is_initialized():
        return ray.util.get_node_ip_address()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class RayRendezvous:
    """The ring's rendezvous, backed by the coordinator actor's address registry."""

    def __init__(self, coordinator):
        self._coordinator = coordinator

    def publish_address(self, rank: int, host: str, port: int) -> None:
        """Record `rank`'s ring listener with the coordinator."""
        import ray

        ray.get(self._coordinator.publish_address.remote(rank, host, port))

    def addresses(self, timeout_s: float | None = None) -> list:
        """Every rank's listener address, once all ranks published."""
        import ray

        ref = self._coordinator.addresses.remote(timeout_s)
        return [tuple(a) for a in ray.get(ref, timeout=None if timeout_s is None
                                          else timeout_s + 10.0)]


class FolderRendezvous:
    """The ring's rendezvous through files in one folder that every rank can read: for
    ranks started as plain processes (tests, benchmarks, network namespaces on one
    machine), where there is no coordinator actor. Each address is written atomically."""

    def __init__(self, folder, world_size: int):
        self.folder, self.world_size = str(folder), world_size

    def publish_address(self, rank: int, host: str, port: int) -> None:
        """Write `rank`'s address to the folder (a rename, so readers never see half)."""
        tmp = os.path.join(self.folder, f".{rank}")
        with open(tmp, "w") as f:
            f.write(f"{host} {port}")
        os.rename(tmp, os.path.join(self.folder, str(rank)))

    def addresses(self, timeout_s: float | None = None) -> list:
        """Every rank's address, once all are written; CollectiveTimeout after timeout_s."""
        deadline = time.monotonic() + (timeout_s or DEFAULT_TIMEOUT_S)
        paths = [os.path.join(self.folder, str(r)) for r in range(self.world_size)]
        while not all(os.path.exists(p) for p in paths):
            if time.monotonic() > deadline:
                missing = [r for r, p in enumerate(paths) if not os.path.exists(p)]
                raise CollectiveTimeout(f"ring rendezvous in {self.folder}: ranks {missing} "
                                        f"published no address within {timeout_s} s")
            time.sleep(0.01)
        out = []
        for p in paths:
            with open(p) as f:
                host, port = f.read().split()
            out.append((host, int(port)))
        return out
