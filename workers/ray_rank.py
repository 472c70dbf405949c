"""The rank main on Ray: a thin actor that runs disttrain.train.run_rank for one rank.

As in Ray Train's worker group, the actor only builds its communicator and calls the
plain rank-side function; everything it knows of Ray is how to find the coordinator.
What rank 0 produces (records, checkpoints) waits in an outbox until the driver
collects it with `drain`, so the run directory is written on the driver's machine only.
"""

from __future__ import annotations

import os
import socket
import threading

import ray

from disttrain.train import run_rank, spec_from_dict
from disttrain.workers.comm import make_communicator
from disttrain.workers.coordinator import start_heartbeats


class RankActor:
    """One rank of a job on Ray: join the group, then train until done or stopped."""

    def __init__(self, worker_index: int, spec_dict: dict, coordinator, secret: str,
                 loop=None, datasets=None):
        self.index = worker_index
        self.loop = loop  # a user's train_loop(ctx), or None for the job's own loop
        self.datasets = datasets  # (train, val) handed in (a Ray Dataset's), or None
        self.spec = spec_from_dict(spec_dict)
        self.coordinator = coordinator
        self.secret = secret
        self.comm = None
        self._outbox: list = []  # ("record", dict) and ("checkpoint", TrainState), in order
        self._posted = threading.Condition()
        self._stop = threading.Event()
        self._stop_beating = threading.Event()
        self._held: dict = {}  # the Trainer, for snapshot() once run() has ended

    def info(self) -> dict:
        """Where this actor runs: node name, IP, Ray node id and pid."""
        return {"node": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def join(self) -> dict:
        """Register with the coordinator (blocks until every rank has) and connect."""
        info = self.info()
        rank = ray.get(self.coordinator.register.remote(self.index, info["node"], info["pid"]))
        d = self.spec.distributed
        # This actor heartbeats for its rank whatever the backend, so the coordinator
        # notices a dead or frozen rank on the ring too.
        start_heartbeats(self.coordinator, rank, d.heartbeat_s, self._stop_beating)
        options = {"heartbeat_interval_s": None} if d.backend == "coordinator" else {}
        if d.backend == "ring" and d.hierarchical:
            options["hierarchical"] = d.hierarchical
        self.comm = make_communicator(d.backend, rank=rank, world_size=d.workers,
                                      coordinator=self.coordinator, secret=self.secret,
                                      timeout_s=d.timeout_s, **options)
        return {**info, "rank": rank}

    def run(self, state=None) -> dict:
        """Train (rank 0 is handed the state to resume from) and return the summary."""
        try:
            return run_rank(self.spec, self.comm, state=state,
                            on_record=lambda r: self._post("record", r),
                            on_checkpoint=lambda s: self._post("checkpoint", s),
                            should_stop=self._stop.is_set, loop=self.loop,
                            datasets=self.datasets, held=self._held)
        finally:
            self.comm.close()
            self._stop_beating.set()
            self.coordinator.leave.remote(self.comm.rank)

    def snapshot(self):
        """This replica's state (model, optimizer, step) as run() left it, or None.

        Only called once run() has returned or raised: a failed collective abandons the
        step in flight before optimizer.step(), and a finished step is whole, so the state
        is that after `step` complete steps, the same on every replica that reached it."""
        trainer = self._held.get("trainer")
        if trainer is None or trainer.model is None or trainer.optimizer is None:
            return None
        return trainer.state()

    def request_stop(self) -> None:
        """Ask every rank to stop at the next logged step, with a checkpoint."""
        self._stop.set()

    def drain(self, wait_s: float = 0.0) -> list:
        """What rank 0 produced since the last call, in order; waits up to wait_s for
        something, so the driver hears of a checkpoint as soon as it is taken."""
        with self._posted:
            if not self._outbox and wait_s:
                self._posted.wait(wait_s)
            items, self._outbox = self._outbox, []
        return items

    def _post(self, kind: str, item) -> None:
        with self._posted:
            self._outbox.append((kind, item))
            self._posted.notify_all()


def remote_rank_actor(**options):
    """The RankActor Ray actor class with the given options (threaded for drain/stop)."""
    return ray.remote(max_concurrency=4, **options)(RankActor)
