"""TrainWorker: a thin Ray actor that holds one replica and runs the plain train loop.

As Ray Train's worker group: the actor only builds things from a plain job spec and
calls disttrain's Trainer; everything it knows of Ray is how to find the coordinator.
"""

from __future__ import annotations

import os
import socket
import threading

import ray
from disttrain.workers.backends import make_communicator
from threadpoolctl import threadpool_limits

from disttrain.train import Trainer, latest_valid_checkpoint, spec_from_dict


class TrainWorker:
    """One rank: register, build the communicator and Trainer, run, report metrics."""

    def __init__(self, worker_index: int, spec_dict: dict, run_dir: str, coordinator,
                 secret: str):
        self.index = worker_index
        self.spec = spec_from_dict(spec_dict)
        self.run_dir = run_dir
        self.coordinator = coordinator
        self.secret = secret
        self.trainer = None
        self.comm = None
        self._records: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # One BLAS pool per worker, sized to the CPUs it was given, so workers on one
        # machine do not oversubscribe its cores.
        self._blas = threadpool_limits(self.spec.blas_threads())

    def info(self) -> dict:
        return {"node": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def setup(self, resume: bool) -> dict:
        """Join the job, build the replica, and load the newest valid checkpoint if resuming."""
        info = self.info()
        rank = ray.get(self.coordinator.register.remote(self.index, info["node"], info["pid"]))
        d = self.spec.distributed
        self.comm = make_communicator(d.backend, rank=rank, world_size=d.workers,
                                      coordinator=self.coordinator, secret=self.secret,
                                      timeout_s=d.timeout_s)
        self.trainer = Trainer(self.spec, self.comm, run_dir=self.run_dir,
                               on_log=self._on_log if rank == 0 else None)
        resumed_from = None
        if resume:
            found = latest_valid_checkpoint(self.run_dir, report=self._on_warning)
            if found is not None:
                path, model, optim_arrays, meta = found
                self.trainer.load_state(model, optim_arrays, meta)
                resumed_from = path.name
        return {**info, "rank": rank, "resumed_from": resumed_from,
                "step": self.trainer.step, "total_steps": self.trainer.total_steps}

    def run(self) -> dict:
        """Train to the end (or to an agreed stop) and return the summary."""
        try:
            return self.trainer.run(should_stop=self._stop.is_set)
        finally:
            self.trainer.close()
            self.comm.close()

    def request_stop(self) -> None:
        self._stop.set()

    def drain(self) -> dict:
        """Metrics records and trace events produced since the last call."""
        with self._lock:
            records, self._records = self._records, []
        trace = []
        if self.trainer is not None:
            trace, self.trainer.times.trace = self.trainer.times.trace, []
        return {"records": records, "trace": trace}

    def _on_log(self, record: dict) -> None:
        with self._lock:
            self._records.append(record)

    def _on_warning(self, message: str) -> None:
        with self._lock:
            self._records.append({"warning": message})


def remote_train_worker(**options):
    """The TrainWorker Ray actor class with the given options (threaded for drain/stop)."""
    return ray.remote(max_concurrency=4, **options)(TrainWorker)
