"""The supervisor: runs one job on Ray from the driver, and restarts the group on loss.

One attempt = a coordinator + N RankActors in a placement group. The driver hands rank 0
the state to resume from, then collects rank 0's records and checkpoints every half
second and writes them into its own run directory (disttrain.train.driver). If a worker
dies, the coordinator's abort wakes the survivors, the whole group is torn down and a
new one resumes from the driver's newest valid checkpoint (as Ray Train restarts a
worker group), up to [distributed] max_restarts times.

Elastic jobs ([distributed] min_workers < workers) lose no work instead: the survivors'
collectives are aborted, which abandons the step in flight before any optimizer.step, and
every replica holds the same state after each complete step; so the supervisor takes the
state of a survivor from its memory (the one behind, if one finished the step in flight
and another did not: at most that step is recomputed), and a group of the survivors' size
goes on from it, with no checkpoint read (a resize, not a restart). When CPUs for more
workers appear, the group stops at the next step every rank agrees on and a larger one
goes on from rank 0's state the same way. The global batch does not change with the world
size, so neither does the training.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from disttrain.train import SpecError
from disttrain.train.driver import Driver
from disttrain.train.loop import NonFiniteError
from disttrain.train.timeline import resize_event
from disttrain.workers.coordinator import HEARTBEATS_MISSED, create_coordinator
from disttrain.workers.ray_rank import remote_rank_actor

from .lost_nodes import nodes_of, settle

POLL_S = 0.5
# A group that just lost a worker does not grow back for this long: a crash-looping
# worker, or a node that flaps, must not stop the group every few seconds.
GROW_COOLDOWN_S = 10.0
# An elastic job restarting from a checkpoint waits this long for all its workers to fit.
RESTART_WAITS_FOR_ALL_S = 30.0
# A restart waits at most this long for the failed group's nodes to answer or be declared
# dead (lost_nodes.py); Ray's health checks take up to about a minute to give up on a node.
LOST_NODES_WAIT_S = 90.0


class JobFailed(RuntimeError):
    """The job could not finish within its restarts."""


class WorkerLost(RuntimeError):
    """A rank died or failed; the message names it."""


class Resize(Exception):
    """The group stopped at an agreed step to grow: go on with `to` workers from `state`."""

    def __init__(self, state, to: int, reason: str):
        super().__init__(reason)
        self.state, self.to, self.reason = state, to, reason


@dataclass
class Attempt:
    """One try at the job: its coordinator, placement group, actors and where they run
    (filled in as they start, so a failure half-way tears down what was started)."""
    coordinator: object = None
    group: object = None
    actors: list = field(default_factory=list)
    infos: list = field(default_factory=list)
    collecting: object = None  # the driver's pending drain call to rank 0
    runs: list = field(default_factory=list)  # each rank's run() call
    world_size: int = 0
    grow_after: float = 0.0  # time.monotonic() before which the group does not grow
    growing: bool = False  # asked to stop at the next agreed step, to grow


def ensure_ray(address: str | None, num_cpus: int) -> None:
    """Join the cluster at address (or $RAY_ADDRESS), else start a local one for the job."""
    if ray.is_initialized():
        return
    kwargs = dict(logging_level=logging.WARNING, include_dashboard=False, log_to_driver=True)
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, **kwargs)
    else:  # "local": a cluster of our own, not whatever /tmp/ray says was started last
        ray.init(address="local", num_cpus=num_cpus, **kwargs)


class Supervisor:
    """Runs one job to completion on Ray, the driver writing the run directory as it goes."""

    def __init__(self, spec, driver: Driver, resume: bool = False, should_stop=None,
                 loop=None, datasets=None):
        self.spec, self.driver, self.resume = spec, driver, resume
        self.loop = loop  # a user's train_loop(ctx), shipped to every rank by Ray
        # (train, val) of a Ray Dataset (refs to its blocks), put once for every rank
        self.datasets = None if datasets is None else ray.put(datasets)
        self.should_stop = should_stop or (lambda: False)
        self.secret = secrets.token_hex(32)  # authenticates ring connections of this job
        self._resizing_since: float | None = None

    def run(self) -> dict:
        """Attempts until one finishes; the summary. JobFailed after max_restarts."""
        d = self.spec.distributed
        restarts = self.driver.run.status.get("restarts", 0)  # carried across --resume
        first = restarts
        # (state, world size, seconds before growing, nodes): go on from a replica's memory
        memory = None
        failed_regroups = 0  # groups from memory that failed to start, in a row
        suspects: set = set()  # the nodes of the group that failed last
        while True:
            attempt = Attempt()
            from_memory = memory
            try:
                if memory is not None:
                    (state, world, cooldown, nodes), memory = memory, None
                else:
                    state, world, cooldown, nodes = (self.driver.resume_state() if self.resume
                                                     or restarts > first else None), None, 0, None
                if nodes is None:  # placed anew: not on a machine that may just have gone
                    self._settle(suspects)
                suspects = set()
                self._start(attempt, world, nodes, restarting=restarts > first)
                # counted from when the group runs: its start can take longer than that
                attempt.grow_after = time.monotonic() + cooldown
                failed_regroups = 0
                return self._watch(attempt, state)
            except Resize as resize:  # growing: the group stopped at an agreed step
                memory = (resize.state, resize.to, 0.0, None)
                self._note_resize(attempt.world_size, resize.to, resize.state, resize.reason)
            except (RayError, WorkerLost) as error:  # setup failures count as well
                suspects = nodes_of(attempt)
                kept = self._survivors_state(attempt) if d.least_workers() < d.workers else None
                if attempt.actors:  # rank 0's records and a checkpoint made before the loss
                    self._collect(attempt)
                if kept is not None and kept[1] >= d.least_workers():
                    memory = (kept[0], kept[1], GROW_COOLDOWN_S, kept[2])
                    self._note_resize(attempt.world_size, kept[1], kept[0], str(error))
                    continue
                if from_memory is not None and not attempt.runs and failed_regroups < 3:
                    # The group from memory did not start (a node that was going away, say):
                    # the state is still here, so place it again, anywhere that fits.
                    failed_regroups += 1
                    memory = (from_memory[0], from_memory[1], from_memory[2], None)
                    self.driver.progress.warn(f"the group of {from_memory[1]} did not start "
                                              f"({error}); placing it again")
                    continue
                restarts += 1
                self.driver.progress.warn(f"attempt {restarts} failed: {error}")
                failures = self.driver.run.status.get("failures", []) + [str(error)]
                self.driver.run.write_status(state="restarting", restarts=restarts,
                                             failures=failures)
                if restarts - first > d.max_restarts:
                    raise JobFailed(f"{error} (gave up after {d.max_restarts} restarts)") \
                        from None
            finally:
                self._teardown(attempt)

    def _settle(self, nodes: set) -> None:
        """Before placing a new group where a group just failed: wait until each of its
        nodes answers or is declared dead (lost_nodes.py), so no bundle lands on a machine
        that is gone but not yet known to be."""
        if not nodes:
            return
        unsettled = settle(nodes, LOST_NODES_WAIT_S)
        if unsettled:
            self.driver.progress.warn(
                f"node(s) {', '.join(n[:12] for n in unsettled)} neither answered nor were "
                f"declared dead within {LOST_NODES_WAIT_S:.0f} s; placing the group anyway")

    def _survivors_state(self, attempt: Attempt):
        """(the state of the survivor furthest behind, how many survived, their nodes), or None
        when the attempt never ran or no replica survived with a state.

        The abort that ended the attempt wakes every survivor's collective, so their run()
        calls end (raising) within moments; a rank whose call does not end, or whose actor
        is gone, is lost. The caller hands what rank 0 produced to the driver after this."""
        if not attempt.runs:
            return None
        if attempt.coordinator is not None:
            attempt.coordinator.abort.remote("a worker was lost; the group re-forms")
        # A survivor's collective is aborted within moments; a rank still in run() after a
        # heartbeat timeout (and a margin) is as good as lost, on a node that vanished.
        d = self.spec.distributed
        ray.wait(attempt.runs, num_returns=len(attempt.runs),
                 timeout=HEARTBEATS_MISSED * d.heartbeat_s + 5)
        states, nodes = [], []
        for info, actor, ref in zip(attempt.infos, attempt.actors, attempt.runs):
            try:
                ray.get(ref, timeout=0)
            except (RayActorError, GetTimeoutError):
                continue  # its process is gone, or it never answered: lost
            except RayError:
                pass  # the aborted collective: a survivor
            try:
                state = ray.get(actor.snapshot.remote(), timeout=30)
            except (RayError, GetTimeoutError):
                continue
            if state is not None:
                states.append(state)
                nodes.append(info["node_id"])
        if not states:
            return None
        # Survivors differ by at most the step in flight (an all-reduce a rank finished while
        # another did not). Going on from the one behind recomputes that step, and rank 0's
        # log lines then continue without a gap, whichever rank was ahead.
        return min(states, key=lambda s: s.meta["step"]), len(states), nodes

    def _note_resize(self, old: int, new: int, state, reason: str) -> None:
        """Say it, and keep it in status.json: step, from, to, why."""
        step = int(state.meta["step"])
        self.driver.run.forget_metrics_after(step, warn=self.driver.progress.warn)
        self.driver.progress.say(f"step {step}: {old} -> {new} workers ({reason}); going on "
                                 "from memory, no checkpoint read")
        now = time.time()
        resizes = self.driver.run.status.get("resizes", []) + [
            {"step": step, "from": old, "to": new, "reason": reason, "time": now,
             "seconds": None}]  # filled in once the new group runs (_start)
        self.driver.trace.append(resize_event(step, old, new, reason, now))
        self.driver.run.write_status(state="resizing", resizes=resizes)
        self._resizing_since = time.monotonic()

    def _start(self, attempt: Attempt, world: int | None = None, nodes=None,
               restarting: bool = False) -> None:
        """Place and start a group of `world` workers (None: the job's workers, or for an
        elastic job as many as fit once min_workers do). nodes: one Ray node id per worker,
        for survivors re-forming where they ran: nodes known alive, whereas a placement
        group could land on a lost node that Ray has not yet declared dead."""
        d = self.spec.distributed
        if world is None:
            world = (self._wait_until_placeable(RESTART_WAITS_FOR_ALL_S if restarting else 0.0)
                     if d.least_workers() < d.workers else d.workers)
        attempt.world_size = world
        # On the driver's own node, which lives as long as the job does: anywhere else, a
        # node lost with a worker could take the coordinator (and the group) down with it.
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(),
                                              soft=True)
        attempt.coordinator = create_coordinator(
            world_size=world, timeout_s=d.timeout_s,
            heartbeat_timeout_s=HEARTBEATS_MISSED * d.heartbeat_s, scheduling_strategy=here)
        if nodes is not None:
            where = [NodeAffinitySchedulingStrategy(node_id=node, soft=False) for node in nodes]
        else:
            strategy = placement_strategy(d.placement)
            attempt.group = placement_group([{"CPU": d.cpus_per_worker}] * world,
                                            strategy=strategy)
            try:
                ray.get(attempt.group.ready(), timeout=d.placement_timeout_s)
            except GetTimeoutError:
                raise WorkerLost(
                    f"could not place {world} workers x {d.cpus_per_worker} CPU "
                    f"({strategy}) within {d.placement_timeout_s:.0f} s; the cluster has "
                    f"{ray.cluster_resources().get('CPU', 0)} CPUs: lower [distributed] "
                    "workers or cpus_per_worker") from None
            self.driver.mark("placed")
            where = [PlacementGroupSchedulingStrategy(placement_group=attempt.group,
                                                      placement_group_bundle_index=i)
                     for i in range(world)]
        # The ranks' spec: this group's size (the job's min_workers does not concern them)
        spec = self.spec.to_dict()
        spec["distributed"].update(workers=world, min_workers=0)
        actor_class = remote_rank_actor(num_cpus=d.cpus_per_worker)
        attempt.actors = [
            actor_class.options(scheduling_strategy=where[i]).remote(
                i, spec, attempt.coordinator, self.secret, self.loop, self.datasets)
            for i in range(world)
        ]
        infos = self._get([a.join.remote() for a in attempt.actors], attempt,
                          timeout=d.timeout_s + 60)
        self.driver.mark("joined")
        attempt.infos = sorted(infos, key=lambda info: info["rank"])
        # Worker index i registered with id i, and integer ids get ranks in order.
        assert [i["rank"] for i in infos] == list(range(world)), infos
        self.driver.set_workers([{k: i[k] for k in ("rank", "node", "node_id", "pid")}
                                 for i in attempt.infos])
        coordinator = ray.get(attempt.coordinator.status.remote(), timeout=60)
        self.driver.run.write_status(coordinator={"pid": coordinator["pid"]}, world_size=world)
        if self._resizing_since is not None:  # how long the group was not training
            resizes = self.driver.run.status["resizes"]
            resizes[-1]["seconds"] = round(time.monotonic() - self._resizing_since, 3)
            self.driver.run.write_status(resizes=resizes)
            self._resizing_since = None

    def _placeable(self) -> int:
        """How many more workers the cluster's free CPUs would hold now."""
        free = ray.available_resources().get("CPU", 0.0)
        return int(free / self.spec.distributed.cpus_per_worker + 1e-9)

    def _wait_until_placeable(self, all_within_s: float = 0.0) -> int:
        """An elastic job starts once min_workers fit (within placement_timeout_s), with
        as many as fit up to workers; the rest join as CPUs appear (_maybe_grow). A restart
        from a checkpoint first waits up to all_within_s for all of them, as a job that is
        not elastic restarts: the CPUs of the group just torn down come back in a moment."""
        d = self.spec.distributed
        started = time.monotonic()
        while True:
            fit = min(d.workers, self._placeable())
            waited = time.monotonic() - started
            if fit == d.workers or (fit >= d.least_workers() and waited >= all_within_s) or (
                    waited > d.placement_timeout_s):
                return max(fit, d.least_workers())  # too few: placement says so, in one line
            time.sleep(POLL_S)

    def _maybe_grow(self, attempt: Attempt) -> None:
        """Below the job's workers, with CPUs free for more: stop at the next agreed step
        (every rank stops at the same one), then _watch raises Resize."""
        d = self.spec.distributed
        if (attempt.growing or attempt.world_size >= d.workers or d.least_workers() >= d.workers
                or time.monotonic() < attempt.grow_after or self._placeable() < 1):
            return
        attempt.growing = True
        for actor in attempt.actors:
            actor.request_stop.remote()

    def _get(self, refs: list, attempt: Attempt, timeout: float) -> list:
        """ray.get that turns a dead actor into WorkerLost naming its rank."""
        try:
            return ray.get(refs, timeout=timeout)
        except RayActorError as error:
            raise WorkerLost(self._dead_rank(attempt, error)) from None

    def _watch(self, attempt: Attempt, state) -> dict:
        runs = attempt.runs = [actor.run.remote(state if rank == 0 else None)
                               for rank, actor in enumerate(attempt.actors)]
        pending = list(runs)
        stop_sent = False
        attempt.collecting = attempt.actors[0].drain.remote(POLL_S)  # answers on a post
        checked = time.monotonic()
        while pending:
            ready, _ = ray.wait([*pending, attempt.collecting], num_returns=1, timeout=POLL_S)
            if attempt.collecting in ready:
                self._hand_over(self._fetch_items(attempt.collecting))
                attempt.collecting = attempt.actors[0].drain.remote(POLL_S)
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
            if time.monotonic() - checked >= POLL_S:
                self._check_coordinator(attempt)
                self._maybe_grow(attempt)
                checked = time.monotonic()
            if self.should_stop() and not stop_sent:
                for actor in attempt.actors:
                    actor.request_stop.remote()
                stop_sent = True
                self.driver.progress.say("stopping at the next logged step; a checkpoint "
                                         "follows")
            for rank, ref in enumerate(runs):
                if ref not in pending:
                    self._raise_if_failed(attempt, ref, rank)
        summaries = self._get(runs, attempt, timeout=self.spec.distributed.timeout_s)
        self._collect(attempt)
        if attempt.growing and summaries[0]["stopped"] and not stop_sent:
            state = ray.get(attempt.actors[0].snapshot.remote(), timeout=60)
            to = min(self.spec.distributed.workers, attempt.world_size + self._placeable())
            raise Resize(state, to, f"CPUs for {to - attempt.world_size} more worker"
                                    f"{'s' if to - attempt.world_size > 1 else ''} became free")
        return summaries[0]

    def _collect(self, attempt: Attempt) -> None:
        """Hand whatever rank 0 still holds (or a pending drain took) to the driver."""
        if attempt.collecting is not None:
            self._hand_over(self._fetch_items(attempt.collecting))
            attempt.collecting = None
        self._hand_over(self._fetch_items(attempt.actors[0].drain.remote()))

    @staticmethod
    def _fetch_items(ref) -> list:
        try:
            return ray.get(ref, timeout=60)
        except (RayError, GetTimeoutError):
            return []  # a dead rank 0 is reported by _raise_if_failed

    def _hand_over(self, items: list) -> None:
        """Rank 0's records and checkpoints, in order, to the driver, which writes RUN."""
        for kind, item in items:
            if kind == "record":
                self.driver.on_record(item)
            else:
                self.driver.on_checkpoint(item)

    def _check_coordinator(self, attempt: Attempt) -> None:
        """The coordinator is supervised like a worker: its death, or its abort (a rank
        silent for HEARTBEATS_MISSED heartbeats), ends the attempt."""
        gone, status = self._coordinator_status(attempt)
        if gone or status["aborted"]:
            raise WorkerLost(gone or status["aborted"])

    @staticmethod
    def _coordinator_status(attempt: Attempt) -> tuple[str | None, dict | None]:
        """(why the coordinator cannot answer, or None; its status when it does)."""
        try:
            return None, ray.get(attempt.coordinator.status.remote(), timeout=30)
        except RayActorError:
            return "the coordinator actor died", None
        except GetTimeoutError:
            return "the coordinator actor did not answer within 30 s", None

    def _raise_if_failed(self, attempt: Attempt, ref, rank: int) -> None:
        try:
            ray.get(ref, timeout=0)
            return
        except RayActorError:
            reported = "its process exited"
        except RayError as error:
            cause = getattr(error, "cause", None) or error
            if isinstance(cause, NonFiniteError):  # deterministic: a restart meets it again
                raise JobFailed(str(cause)) from None
            if isinstance(cause, SpecError):  # the user's input, found in a worker: exit 2
                raise SpecError(str(cause)) from None
            reported = str(cause).strip().splitlines()[-1]
        # A rank that fails because the coordinator died says only "the actor is dead":
        # name the coordinator as the cause.
        gone, _ = self._coordinator_status(attempt)
        if gone:
            raise WorkerLost(f"{gone}; rank {rank} reported: {reported}")
        # A survivor often notices a dead peer (closed socket) before Ray does: name the
        # dead rank as the cause, and wake every rank still waiting on it.
        dead = self._find_dead_rank(attempt)
        reason = f"{dead}; rank {rank} reported: {reported}" if dead else (
            f"rank {rank} failed: {reported}")
        attempt.coordinator.abort.remote(reason)
        raise WorkerLost(reason)

    def _find_dead_rank(self, attempt: Attempt, patience_s: float = 10.0) -> str | None:
        """'rank R (pid P on NODE) died' for the first worker whose process is gone."""
        deadline = time.monotonic() + patience_s
        while time.monotonic() < deadline:
            for info in attempt.infos:
                try:
                    ray.get(attempt.actors[info["rank"]].info.remote(), timeout=2)
                except RayActorError:
                    return f"rank {info['rank']} (pid {info['pid']} on {info['node']}) died"
                except (RayError, GetTimeoutError):
                    continue
            time.sleep(0.2)
        return None

    def _dead_rank(self, attempt: Attempt, error) -> str:
        return self._find_dead_rank(attempt) or f"a worker died: {str(error).splitlines()[0]}"

    def _teardown(self, attempt: Attempt) -> None:
        for handle in [*attempt.actors, attempt.coordinator]:
            if handle is not None:
                ray.kill(handle, no_restart=True)
        if attempt.group is not None:
            remove_placement_group(attempt.group)


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
