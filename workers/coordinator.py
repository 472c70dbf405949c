"""The coordinator: one threaded Ray actor per job; ranks, steps, liveness, star all-reduce.

Every collective is a numbered slot (seq = the caller's count of collectives so far).
Ranks drop their payload into the slot and wait; the last arrival completes it. A slot
checks that everyone is in the same collective at the same step (check_same_call, in
workers/comm/base.py, as every data path does), so a rank out of step fails with both
step numbers instead of hanging. Nothing waits forever: every
wait has a deadline, and `abort` (or a missed heartbeat) wakes every waiter with a reason.

The class is plain Python; `create_coordinator` turns it into the Ray actor.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from disttrain.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    CollectiveAborted,
    CollectiveError,
    CollectiveTimeout,
)
from disttrain.workers.comm.base import (
    Call,
    check_rank,
    check_same_call,
    sum_in_rank_order,
    timeout_text,
)

DEFAULT_HEARTBEAT_TIMEOUT_S = 30.0
# A job's ranks beat every [distributed] heartbeat_s; one silent this many beats is dead.
HEARTBEATS_MISSED = 5


@dataclass
class _Slot:
    arrivals: dict = field(default_factory=dict)  # rank -> (Call, payload)
    payloads: list | None = None
    result: Any = None
    error: CollectiveError | None = None
    taken: set = field(default_factory=set)


def _worker_order(worker_id: Any) -> tuple:
    # Integer ids sort numerically, so worker i gets rank i when ids are indices.
    return (0, worker_id, "") if isinstance(worker_id, int) else (1, 0, str(worker_id))


class Coordinator:
    """Rendezvous, collectives, step checks, heartbeats and abort for one job."""

    def __init__(
        self,
        world_size: int,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
    ):
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {world_size}")
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._cond = threading.Condition()
        self._pending: dict = {}  # worker_id -> (node, pid), before ranks are assigned
        self._workers: dict = {}  # rank -> {"worker_id", "node", "pid"}
        self._rank_of: dict = {}  # worker_id -> rank
        self._last_heartbeat: dict = {}  # rank -> monotonic time; only ranks that heartbeat
        self._left: set = set()
        self._position: dict = {}  # rank -> the Call of its latest collective
        self._slots: dict = {}  # seq -> _Slot
        self._addresses: dict = {}  # rank -> (host, port)
        self._abort_reason: str | None = None
        self._stopped = threading.Event()
        threading.Thread(target=self._watch_heartbeats, daemon=True, name="heartbeats").start()

    # --- rendezvous -------------------------------------------------------------------

    def register(self, worker_id: Any, node: str, pid: int, timeout_s: float | None = None) -> int:
        """Join the job; blocks until all ranks joined and returns this worker's rank."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        with self._cond:
            if worker_id in self._rank_of:  # a restarted worker keeps its rank
                rank = self._rank_of[worker_id]
                self._workers[rank].update(node=node, pid=pid)
                self._last_heartbeat.pop(rank, None)
                return rank
            if worker_id not in self._pending and len(self._pending) >= self.world_size:
                raise CollectiveError(
                    f"worker {worker_id!r} tried to register but all {self.world_size} ranks "
                    "are taken; world_size is fixed when the coordinator is created"
                )
            self._pending[worker_id] = (node, pid)
            if len(self._pending) == self.world_size:
                self._assign_ranks()
            while worker_id not in self._rank_of:
                self._raise_if_aborted()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CollectiveTimeout(
                        f"register: only {len(self._pending)} of {self.world_size} workers "
                        f"registered within {timeout_s or self.timeout_s:.1f} s "
                        f"(ids so far: {sorted(map(str, self._pending))})"
                    )
                self._cond.wait(min(remaining, 1.0))
            return self._rank_of[worker_id]

    def _assign_ranks(self) -> None:
        for rank, worker_id in enumerate(sorted(self._pending, key=_worker_order)):
            node, pid = self._pending[worker_id]
            self._rank_of[worker_id] = rank
            self._workers[rank] = {"worker_id": worker_id, "node": node, "pid": pid}
        self._cond.notify_all()

    def publish_address(self, rank: int, host: str, port: int) -> None:
        """Record where `rank`'s ring listener accepts connections."""
        self._check_rank(rank)
        with self._cond:
            self._addresses[rank] = (host, int(port))
            self._cond.notify_all()

    def addresses(self, timeout_s: float | None = None) -> list:
        """Every rank's (host, port), in rank order; blocks until all ranks published."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        with self._cond:
            while len(self._addresses) < self.world_size:
                self._raise_if_aborted()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(set(range(self.world_size)) - set(self._addresses))
                    raise CollectiveTimeout(
                        f"ring rendezvous: ranks {missing} never published an address "
                        f"within {timeout_s or self.timeout_s:.1f} s"
                    )
                self._cond.wait(min(remaining, 1.0))
            return [self._addresses[r] for r in range(self.world_size)]

    # --- liveness ---------------------------------------------------------------------

    @ray.method(concurrency_group="control")
    def heartbeat(self, rank: int) -> None:
        """`rank` is alive; once it heartbeats, silence past the timeout aborts the job."""
        with self._cond:
            self._last_heartbeat[rank] = time.monotonic()

    @ray.method(concurrency_group="control")
    def leave(self, rank: int) -> None:
        """`rank` closed its communicator cleanly: stop watching its heartbeat."""
        with self._cond:
            self._left.add(rank)

    @ray.method(concurrency_group="control")
    def abort(self, reason: str) -> None:
        """Fail every waiting and future collective with `reason` (the first reason wins)."""
        with self._cond:
            if self._abort_reason is None:
                self._abort_reason = reason
            self._cond.notify_all()

    @ray.method(concurrency_group="control")
    def status(self) -> dict:
        """Ranks, nodes, pids, heartbeat ages and the abort reason, for the supervisor."""
        now = time.monotonic()
        with self._cond:
            workers = []
            for rank, w in sorted(self._workers.items()):
                seen = self._last_heartbeat.get(rank)
                age = None if seen is None else round(now - seen, 3)
                at = self._position.get(rank)
                workers.append({"rank": rank, **w, "heartbeat_age_s": age,
                                "position": None if at is None else (at.kind, at.step, at.seq)})
            return {"world_size": self.world_size, "aborted": self._abort_reason,
                    "workers": workers, "pid": os.getpid()}

    def _watch_heartbeats(self) -> None:
        period = min(1.0, self.heartbeat_timeout_s / 4)
        while not self._stopped.wait(period):
            now = time.monotonic()
            with self._cond:
                for rank, seen in self._last_heartbeat.items():
                    silent = now - seen
                    if rank not in self._left and silent > self.heartbeat_timeout_s:
                        w = self._workers.get(rank, {})
                        self.abort(
                            f"rank {rank} (pid {w.get('pid')} on node {w.get('node')}) died: "
                            f"no heartbeat for {self.heartbeat_timeout_s:.1f} s"
                        )
                        break

    # --- collectives ------------------------------------------------------------------

    def exchange(self, rank: int, kind: str, step: int, seq: int, payload: Any,
                 root: int | None = None, timeout_s: float | None = None) -> list:
        """Every rank's payload for collective `seq`, in rank order."""
        slot = self._wait_for_all(Call(rank, step, seq, kind, root=root), payload, timeout_s)
        with self._cond:
            return self._take(rank, seq, slot, slot.payloads)

    def allreduce(self, rank: int, step: int, seq: int, array: np.ndarray,
                  timeout_s: float | None = None) -> np.ndarray:
        """The star all-reduce: the sum of every rank's array, added in rank order."""
        call = Call(rank, step, seq, "allreduce", array.nbytes, array.dtype.char)
        slot = self._wait_for_all(call, array, timeout_s)
        with self._cond:
            if slot.result is None:
                out = np.empty_like(slot.payloads[0])
                slot.result = sum_in_rank_order(slot.payloads, out)
            return self._take(rank, seq, slot, slot.result)

    def broadcast(self, rank: int, step: int, seq: int, payload: Any, root: int,
                  timeout_s: float | None = None) -> Any:
        """Root's payload, handed to every rank."""
        slot = self._wait_for_all(Call(rank, step, seq, "broadcast", root=root), payload,
                                  timeout_s)
        with self._cond:
            return self._take(rank, seq, slot, slot.payloads[root])

    def barrier(self, rank: int, step: int, seq: int, timeout_s: float | None = None) -> None:
        """Return once every rank has entered barrier `seq`."""
        slot = self._wait_for_all(Call(rank, step, seq, "barrier"), None, timeout_s)
        with self._cond:
            self._take(rank, seq, slot, None)

    def _wait_for_all(self, call: Call, payload: Any, timeout_s: float | None) -> _Slot:
        self._check_rank(call.rank)
        timeout_s = timeout_s or self.timeout_s
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._raise_if_aborted()
            slot = self._slots.setdefault(call.seq, _Slot())
            self._check_joins(slot, call)
            slot.arrivals[call.rank] = (call, payload)
            self._position[call.rank] = call
            if len(slot.arrivals) == self.world_size:
                slot.payloads = [slot.arrivals[r][1] for r in range(self.world_size)]
                self._cond.notify_all()
            while slot.payloads is None and slot.error is None:
                self._raise_if_aborted()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sorted(set(range(self.world_size)) - set(slot.arrivals))
                    last = [self._position[r] for r in missing if r in self._position]
                    slot.error = CollectiveTimeout(timeout_text(call, timeout_s, missing, last))
                    self._cond.notify_all()
                    break
                self._cond.wait(min(remaining, 1.0))
            if slot.error is not None:
                raise slot.error
            return slot

    def _check_joins(self, slot: _Slot, call: Call) -> None:
        """A rank joining a slot must be in the collective the lowest rank there is in."""
        if call.rank in slot.arrivals:
            raise CollectiveError(f"rank {call.rank} entered collective #{call.seq} twice")
        if slot.error is not None:
            raise slot.error
        if slot.arrivals:
            try:
                check_same_call(call, slot.arrivals[min(slot.arrivals)][0])
            except CollectiveError as error:
                slot.error = error
                self._cond.notify_all()
                raise

    def _take(self, rank: int, seq: int, slot: _Slot, value: Any) -> Any:
        # The last rank to pick up its result frees the slot (and the object refs in it).
        slot.taken.add(rank)
        if len(slot.taken) == self.world_size:
            self._slots.pop(seq, None)
        return value

    def _check_rank(self, rank: int) -> None:
        check_rank(rank, self.world_size)

    def _raise_if_aborted(self) -> None:
        if self._abort_reason is not None:
            raise CollectiveAborted(self._abort_reason)


def create_coordinator(
    world_size: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
    name: str | None = None,
    **actor_options: Any,
):
    """Start the coordinator actor for a job of `world_size` ranks and return its handle."""
    # Every rank may block in a collective while registering, heartbeating or aborting:
    # the default group needs a thread per rank per concurrent call, heartbeats their own.
    options = {
        "num_cpus": 0,
        "max_concurrency": 4 * world_size + 8,
        "max_restarts": 0,
        **actor_options,
    }
    if name is not None:
        options["name"] = name
    actor_cls = ray.remote(concurrency_groups={"control": 4})(Coordinator)
    return actor_cls.options(**options).remote(world_size, timeout_s, heartbeat_timeout_s)


def start_heartbeats(coordinator, rank: int, interval_s: float, stop: threading.Event) -> None:
    """Tell the coordinator every interval_s that `rank` is alive, until stop is set.

    A rank silent for HEARTBEATS_MISSED intervals is declared dead (the coordinator's
    heartbeat_timeout_s); a stopped (SIGSTOP) or wedged process stops beating too.
    """
    def beat():
        # The first beat goes at once: the coordinator watches a rank only once it beat,
        # and a rank that froze before its first beat must not go unwatched.
        while True:
            try:
                coordinator.heartbeat.remote(rank)
            except Exception:  # noqa: BLE001 - a dead coordinator shows in the next collective
                pass
            if stop.wait(interval_s):
                return

    threading.Thread(target=beat, daemon=True, name=f"heartbeat-rank{rank}").start()
