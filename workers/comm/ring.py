"""RingCommunicator: bandwidth-optimal ring all-reduce over TCP, straight between workers.

Rank r sends to rank r+1 and receives from rank r-1 over two authenticated connections.
All-reduce is reduce-scatter then all-gather, W-1 steps each, pipelined in segments: a
segment is forwarded as soon as it has been added, by a sender thread, so sending and
receiving overlap and large chunks cannot deadlock. Chunking and the order of additions
depend only on (rank, world_size, size), so the same inputs give the same bits every run.

Ray-free on purpose: addresses come from any `rendezvous` with
`publish_address(rank, host, port)` and `addresses(timeout_s) -> [(host, port), ...]`;
in a Ray job that is `RayRendezvous`, the coordinator actor's address registry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
import socket
import struct
import sys
import threading

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
)

SEGMENT_BYTES = 512 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 10.0

# magic, kind, dtype char, step, seq, nbytes
_HEADER = struct.Struct("!4sBcxxqqQ")
_MAGIC = b"DTR1"
_NONCE = 32
_MAC = hashlib.sha256().digest_size


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"|".join(parts), hashlib.sha256).digest()


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionResetError("connection closed")
        got += n


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)


class _Sender:
    """A thread that writes queued frames to the next rank, so sends overlap receives."""

    def __init__(self, sock: socket.socket, on_error):
        self.sock = sock
        self.on_error = on_error
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ring-sender")
        self._thread.start()

    def put(self, data) -> None:
        self._queue.put(data)

    def drain(self, timeout_s: float) -> None:
        """Wait until everything queued is in the kernel: the caller may reuse its buffer."""
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout_s):
            raise TimeoutError("send did not finish")
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
                except OSError as e:
                    self.error = e
                    self.on_error()


class RingCommunicator(CommunicatorBase):
    """A Communicator whose collectives run over a TCP ring between the ranks."""

    noun = "ring"

    def __init__(self, rank: int, world_size: int, rendezvous, secret: bytes | str,
                 timeout_s: float = DEFAULT_TIMEOUT_S, host: str | None = None,
                 bind_host: str = "0.0.0.0", port: int = 0,
                 segment_bytes: int = SEGMENT_BYTES):
        super().__init__(rank, world_size, timeout_s)
        if not secret and world_size > 1:
            raise ValueError("the ring backend needs the job's secret (secret=...) to "
                             "authenticate connections between workers")
        self.segment_bytes = segment_bytes
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret or b"")
        self._next = (rank + 1) % world_size
        self._prev = (rank - 1) % world_size
        self._recv_sock: socket.socket | None = None
        self._send_sock: socket.socket | None = None
        self._sender: _Sender | None = None
        self._listener: socket.socket | None = None
        self.listen_address: tuple[str, int] | None = None
        if world_size > 1:
            self._connect(rendezvous, host or node_address(), bind_host, port)

    # --- setup ------------------------------------------------------------------------

    def _connect(self, rendezvous, host: str, bind_host: str, port: int) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _tune(self._listener)
        self._listener.bind((bind_host, port))
        self._listener.listen(16)
        self.listen_address = (host, self._listener.getsockname()[1])
        self._prev_connected = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True, name="ring-listener").start()
        rendezvous.publish_address(self.rank, *self.listen_address)
        addresses = rendezvous.addresses(self.timeout_s)
        self._send_sock = self._dial(tuple(addresses[self._next]))
        if not self._prev_connected.wait(self.timeout_s):
            raise CollectiveTimeout(
                f"ring setup: rank {self._prev} never connected to rank {self.rank} within "
                f"{self.timeout_s:.1f} s")
        self._sender = _Sender(self._send_sock, on_error=self._wake_receiver)
        self._frame_left = 0  # payload bytes the open outgoing frame still needs

    def _dial(self, address: tuple) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _tune(sock)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(address)
            hello = bytearray(len(_MAGIC) + _NONCE)
            _recv_exactly(sock, memoryview(hello))
            server_nonce, my_nonce = bytes(hello[len(_MAGIC):]), os.urandom(_NONCE)
            rank = struct.pack("!I", self.rank)
            sock.sendall(rank + my_nonce + _mac(self._secret, b"client", server_nonce,
                                                 my_nonce, rank))
            proof = bytearray(_MAC)
            _recv_exactly(sock, memoryview(proof))
        except OSError as e:
            sock.close()
            raise PeerLost(f"ring setup: could not connect to rank {self._next} at "
                           f"{address[0]}:{address[1]} ({e})") from None
        if not hmac.compare_digest(bytes(proof), _mac(self._secret, b"server", my_nonce,
                                                      server_nonce)):
            sock.close()
            raise CollectiveError(f"ring setup: rank {self._next} at {address[0]}:{address[1]} "
                                  "did not prove it knows the job's secret")
        return sock

    def _accept_loop(self) -> None:
        # The listener lives as long as the ring, refusing every connection but the one
        # authenticated from the previous rank; handshakes run in threads so a stalled
        # client cannot block it.
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handshake, args=(sock,), daemon=True).start()

    def _handshake(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(min(self.timeout_s, HANDSHAKE_TIMEOUT_S))
            nonce = os.urandom(_NONCE)
            sock.sendall(_MAGIC + nonce)
            reply = bytearray(4 + _NONCE + _MAC)
            _recv_exactly(sock, memoryview(reply))
            rank_bytes, client_nonce = bytes(reply[:4]), bytes(reply[4:4 + _NONCE])
            mac = bytes(reply[4 + _NONCE:])
            expected = _mac(self._secret, b"client", nonce, client_nonce, bytes(rank_bytes))
            ok = hmac.compare_digest(bytes(mac), expected)
            if not ok or struct.unpack("!I", rank_bytes)[0] != self._prev:
                raise PermissionError("refused")
            if self._prev_connected.is_set():
                raise PermissionError("already connected")
            sock.sendall(_mac(self._secret, b"server", client_nonce, nonce))
        except (OSError, ValueError):
            sock.close()
            return
        sock.settimeout(self.timeout_s)
        self._recv_sock = sock
        self._prev_connected.set()

    # --- the protocol -----------------------------------------------------------------

    def _allreduce(self, flat: np.ndarray) -> None:
        self._collective("allreduce", lambda: self._ring_allreduce(flat))

    def _broadcast(self, flat: np.ndarray, root: int) -> None:
        self._collective("broadcast", lambda: self._ring_broadcast(flat, root))

    def _allgather(self, blob: bytes) -> list:
        return self._collective("allgather", lambda: self._ring_allgather(blob, "allgather"))

    def _barrier(self) -> None:
        self._collective("barrier", lambda: self._ring_allgather(b"", "barrier"))

    def _release(self) -> None:
        """Close the sockets and stop the threads."""
        if self._sender is not None:
            self._sender.stop()
        for sock in (self._listener, self._send_sock, self._recv_sock):
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
        seg = max(1, self.segment_bytes // flat.itemsize)
        scratch = np.empty(min(seg, max(hi - lo for lo, hi in bounds)), flat.dtype)
        # Reduce-scatter: after step s, chunk (r - s - 1) holds the sum of s + 2 ranks.
        self._send_frame("allreduce", flat, *bounds[r])
        for s in range(w - 1):
            lo, hi = bounds[(r - s - 1) % w]
            self._recv_header("allreduce", flat, (hi - lo) * flat.itemsize)
            self._open_frame("allreduce", flat, (hi - lo) * flat.itemsize)  # forwarded next
            for a in range(lo, hi, seg):
                b = min(a + seg, hi)
                part = scratch[: b - a]
                self._recv_into(part)
                np.add(flat[a:b], part, out=flat[a:b])
                self._forward(flat[a:b])
        # All-gather: pass the finished chunks around; the last one received is not sent on.
        for s in range(w - 1):
            lo, hi = bounds[(r - s) % w]
            self._recv_header("allreduce", flat, (hi - lo) * flat.itemsize)
            last = s == w - 2
            if not last:
                self._open_frame("allreduce", flat, (hi - lo) * flat.itemsize)
            for a in range(lo, hi, seg):
                b = min(a + seg, hi)
                self._recv_into(flat[a:b])
                if not last:
                    self._forward(flat[a:b])
        self._sender.drain(self.timeout_s)

    def _ring_broadcast(self, flat: np.ndarray, root: int) -> None:
        seg = max(1, self.segment_bytes // flat.itemsize)
        forwards = self._next != root
        if self.rank == root:
            self._send_frame("broadcast", flat, 0, flat.size)
        else:
            self._recv_header("broadcast", flat, flat.nbytes)
            if forwards:
                self._open_frame("broadcast", flat, flat.nbytes)
            for a in range(0, flat.size, seg):
                b = min(a + seg, flat.size)
                self._recv_into(flat[a:b])
                if forwards:
                    self._forward(flat[a:b])
        self._sender.drain(self.timeout_s)

    def _ring_allgather(self, blob: bytes, kind: str) -> list:
        w, r = self.world_size, self.rank
        blobs: list = [b""] * w
        blobs[r] = blob
        for s in range(w - 1):
            outgoing = blobs[(r - s) % w]
            self._sender.put(self._header(kind, b"B", len(outgoing)) + outgoing)
            nbytes = self._recv_header(kind, None, None)
            incoming = bytearray(nbytes)
            self._recv_into(incoming)
            blobs[(r - s - 1) % w] = bytes(incoming)
        self._sender.drain(self.timeout_s)
        return blobs

    # --- frames -----------------------------------------------------------------------

    def _header(self, kind: str, dtype_char: bytes, nbytes: int) -> bytes:
        return _HEADER.pack(_MAGIC, KINDS[kind], dtype_char, self.step, self._seq, nbytes)

    def _open_frame(self, kind: str, flat: np.ndarray, nbytes: int) -> None:
        self._sender.put(self._header(kind, flat.dtype.char.encode(), nbytes))
        self._frame_left = nbytes

    def _forward(self, part: np.ndarray) -> None:
        self._sender.put(memoryview(part).cast("B"))
        self._frame_left -= part.nbytes

    def _send_frame(self, kind: str, flat: np.ndarray, lo: int, hi: int) -> None:
        self._open_frame(kind, flat, (hi - lo) * flat.itemsize)
        self._forward(flat[lo:hi])

    def _recv_header(self, kind: str, flat: np.ndarray | None, nbytes: int | None) -> int:
        raw = bytearray(_HEADER.size)
        self._recv_into(raw)
        magic, kind_id, dtype_char, step, seq, got = _HEADER.unpack(raw)
        if magic != _MAGIC:
            raise CollectiveError(f"rank {self._prev} sent a malformed frame during "
                                  f"{self._my_call(kind).where()}")
        if kind_id == KINDS["abort"]:
            reason = bytearray(got)
            self._recv_into(reason)
            raise CollectiveAborted(reason.decode(errors="replace"))
        theirs = Call(self._prev, step, seq, KIND_NAMES.get(kind_id, "?"), got,
                      dtype_char.decode(errors="replace"))
        dtype = None if flat is None else flat.dtype.char  # None: any size will do
        check_same_call(theirs, self._my_call(kind, nbytes=nbytes, dtype=dtype))
        return got

    def _recv_into(self, target) -> None:
        view = memoryview(target).cast("B")
        try:
            _recv_exactly(self._recv_sock, view)
        except TimeoutError:
            raise CollectiveTimeout(
                f"collective #{self._seq} at step {self.step}: rank {self._prev} sent nothing "
                f"for {self.timeout_s:.1f} s") from None
        except OSError as e:
            raise PeerLost(f"rank {self._prev} died or closed the ring connection during "
                           f"collective #{self._seq} at step {self.step} ({e})") from None

    # --- failure handling -------------------------------------------------------------

    def _collective(self, kind: str, run):
        self._next_seq(kind)
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

    def _break(self, reason: str) -> None:
        """Tell the next rank why, so the whole ring fails with the first cause, then close."""
        self._broken = reason
        if self._frame_left == 0 and self._sender.error is None:
            # Only between frames: queued after the complete ones, it lands on a boundary.
            data = reason.encode()
            self._sender.put(self._header("abort", b"B", len(data)) + data)
            try:
                self._sender.drain(1.0)
            except (TimeoutError, OSError):
                pass
        self.close()


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
