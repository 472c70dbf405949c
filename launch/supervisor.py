"""The supervisor: starts (or joins) Ray, places the workers, watches them, restarts on loss.

One attempt = a coordinator + N TrainWorker actors in a placement group. If a worker
dies, the coordinator's abort wakes the survivors, the whole group is torn down and a
new one resumes from the newest valid checkpoint (as Ray Train restarts a worker group),
up to [distributed] max_restarts times.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field

import ray
from disttrain.workers.coordinator import create_coordinator
from disttrain.workers.train_worker import remote_train_worker
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from disttrain.train.rundir import RunDir

from .report import Progress


class JobFailed(RuntimeError):
    """The job could not finish within its restarts."""


@dataclass
class Attempt:
    """One try at the job: its coordinator, placement group, workers and their infos."""
    coordinator: object
    group: object
    workers: list
    infos: list = field(default_factory=list)


def ensure_ray(address: str | None, num_cpus: int) -> None:
    """Join the cluster at address, or start a local one sized for the job."""
    if ray.is_initialized():
        return
    kwargs = dict(logging_level=logging.WARNING, include_dashboard=False,
                  log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


class Supervisor:
    """Runs one job to completion on Ray, writing the run directory as it goes."""

    def __init__(self, spec, run_dir: RunDir, progress: Progress, resume: bool = False):
        self.spec, self.run_dir, self.progress = spec, run_dir, progress
        self.resume = resume
        self.secret = secrets.token_hex(32)  # authenticates ring connections of this job
        self.stop_requested = False
        self.should_stop = lambda: False  # polled; the runner wires SIGINT/SIGTERM to it
        self.trace: list = []

    def request_stop(self, *_):
        """Every rank stops at the next logged step (all agree on it) and checkpoints."""
        self.stop_requested = True

    def run(self) -> dict:
        d = self.spec.distributed
        restarts = 0
        try:
            while True:
                attempt = self._start(resume=self.resume or restarts > 0)
                try:
                    return self._watch(attempt)
                except (RayActorError, WorkerLost) as error:
                    restarts += 1
                    self.progress.warn(f"attempt {restarts} failed: {error}")
                    failures = self.run_dir.status.get("failures", []) + [str(error)]
                    self.run_dir.write_status(state="restarting", restarts=restarts,
                                              failures=failures)
                    if restarts > d.max_restarts:
                        raise JobFailed(f"{error} (gave up after {d.max_restarts} restarts)") \
                            from None
                finally:
                    self._teardown(attempt)
        finally:
            self.run_dir.write_timeline(self.trace)

    def _start(self, resume: bool) -> Attempt:
        d = self.spec.distributed
        coordinator = create_coordinator(world_size=d.workers, timeout_s=d.timeout_s,
                                          heartbeat_timeout_s=max(5 * d.heartbeat_s, 10.0))
        strategy = placement_strategy(d.placement)
        group = placement_group([{"CPU": d.cpus_per_worker}] * d.workers, strategy=strategy)
        try:
            ray.get(group.ready(), timeout=60)
        except GetTimeoutError:
            remove_placement_group(group)
            raise JobFailed(
                f"could not place {d.workers} workers x {d.cpus_per_worker} CPU "
                f"({strategy}) within 60 s; the cluster has "
                f"{ray.cluster_resources().get('CPU', 0)} CPUs: lower [distributed] workers or "
                "cpus_per_worker") from None
        actor = remote_train_worker(num_cpus=d.cpus_per_worker)
        workers = [
            actor.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=i)).remote(
                i, self.spec.to_dict(), str(self.run_dir.path), coordinator, self.secret)
            for i in range(d.workers)
        ]
        attempt = Attempt(coordinator, group, workers)
        infos = self._get([w.setup.remote(resume) for w in workers], attempt,
                          timeout=d.timeout_s + 60)
        attempt.infos = sorted(infos, key=lambda info: info["rank"])
        first = attempt.infos[0]
        if first["resumed_from"]:
            self.progress.say(f"resumed from {first['resumed_from']} (step {first['step']})")
        if resume:
            self.run_dir.forget_metrics_after(first["step"])
        self.run_dir.write_status(
            state="running", step=first["step"], workers=[
                {"rank": i["rank"], "node": i["node"], "node_id": i["node_id"], "pid": i["pid"],
                 "state": "running"}
                for i in attempt.infos])
        self.progress.start(first["step"], first["total_steps"])
        return attempt

    def _get(self, refs: list, attempt: Attempt, timeout: float) -> list:
        """ray.get that turns a dead actor into WorkerLost naming its rank."""
        try:
            return ray.get(refs, timeout=timeout)
        except RayActorError as error:
            raise WorkerLost(self._dead_rank(attempt, error)) from None

    def _watch(self, attempt: Attempt) -> dict:
        d = self.spec.distributed
        runs = [w.run.remote() for w in attempt.workers]
        pending = list(runs)
        stop_sent = False
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            self._drain(attempt)
            if (self.stop_requested or self.should_stop()) and not stop_sent:
                for w in attempt.workers:
                    w.request_stop.remote()
                stop_sent = True
                self.progress.say("stopping at the next logged step; a checkpoint follows")
            for i, ref in enumerate(runs):
                if ref not in pending:
                    self._raise_if_failed(attempt, ref, i)
        summaries = self._get(runs, attempt, timeout=d.timeout_s)
        self._drain(attempt)
        summary = summaries[0]
        state = "stopped" if summary["stopped"] else "done"
        self.run_dir.write_status(state=state, step=summary["step"], workers=[
            dict(w, state=state) for w in self.run_dir.status["workers"]])
        return summary

    def _raise_if_failed(self, attempt: Attempt, ref, index: int) -> None:
        try:
            ray.get(ref, timeout=0)
            return
        except RayActorError:
            reported = "its process exited"
        except RayError as error:
            cause = getattr(error, "cause", None) or error
            reported = str(cause).strip().splitlines()[-1]
        # A survivor often notices a dead peer (closed socket) before Ray does: name the
        # dead rank as the cause, and wake every rank still waiting on it.
        dead = self._find_dead_rank(attempt)
        reason = f"{dead}; rank {index} reported: {reported}" if dead else (
            f"rank {index} failed: {reported}")
        attempt.coordinator.abort.remote(reason)
        raise WorkerLost(reason)

    def _find_dead_rank(self, attempt: Attempt, patience_s: float = 10.0) -> str | None:
        """'rank R (pid P on NODE) died' for the first worker whose process is gone."""
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            for info in attempt.infos:
                try:
                    ray.get(attempt.workers[info["rank"]].info.remote(), timeout=2)
                except RayActorError:
                    return f"rank {info['rank']} (pid {info['pid']} on {info['node']}) died"
                except (RayError, GetTimeoutError):
                    continue
            time.sleep(0.2)
        return None

    def _dead_rank(self, attempt: Attempt, error) -> str:
        return self._find_dead_rank(attempt) or f"a worker died: {str(error).splitlines()[0]}"

    def _drain(self, attempt: Attempt) -> None:
        for worker in attempt.workers:
            try:
                got = ray.get(worker.drain.remote(), timeout=10)
            except (RayError, GetTimeoutError):
                continue  # a dead worker is reported by _raise_if_failed
            records = [r for r in got["records"] if "warning" not in r]
            for r in got["records"]:
                if "warning" in r:
                    self.progress.warn(r["warning"])
            self.run_dir.append_metrics(records)
            self.trace += got["trace"]
            for record in records:
                self.progress.update(record)
                if "epoch" in record:
                    self.run_dir.write_status(step=record["step"], epoch=record["epoch"])

    def _teardown(self, attempt: Attempt) -> None:
        for w in attempt.workers:
            ray.kill(w, no_restart=True)
        ray.kill(attempt.coordinator, no_restart=True)
        remove_placement_group(attempt.group)


class WorkerLost(RuntimeError):
    """A rank died or failed; the message names it."""


def placement_strategy(placement: str) -> str:
    """'auto' packs workers on one machine and spreads them over a cluster's nodes."""
    if placement != "auto":
        return placement
    alive = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    return "SPREAD" if len(alive) > 1 else "PACK"


def default_num_cpus(spec) -> int:
    """Logical CPUs for a local cluster: room for every worker plus the coordinator."""
    d = spec.distributed
    return max(int(d.workers * d.cpus_per_worker + 1), os.cpu_count() or 1)
