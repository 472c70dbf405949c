"""The nodes a failed group ran on, settled before the next group is placed.

A machine that vanished (a killed container, a pulled cable) stays "alive" in Ray's view
until its health checks run out, tens of seconds later, and the CPUs its ranks held look
free again as soon as their placement group is removed. A restart placed in that window
lands a bundle on the dead node, its rank never starts, and the attempt is lost to Ray's
late news rather than to the job: a few such restarts in a row exhaust max_restarts.

So before a restart each node of the failed group is asked to answer a tiny task pinned
to it. A node that answers is alive (the rank's process died, not the machine) and may
take the new group at once; a node that Ray declares dead meanwhile is out of the view
the placement uses. Either way the placement then sees the cluster as it is.
"""

from __future__ import annotations

import time

import ray
from ray.exceptions import RayError
from ray.util.placement_group import placement_group_table
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

POLL_S = 0.5


@ray.remote(num_cpus=0)
def _answer() -> bool:
    return True


def nodes_of(attempt) -> set:
    """Ray node ids of a group: its ranks' (those that joined) and its placement bundles'."""
    nodes = {info["node_id"] for info in attempt.infos if info.get("node_id")}
    if attempt.group is not None:
        try:
            nodes |= set(placement_group_table(attempt.group).get("bundles_to_node_id",
                                                                  {}).values())
        except RayError:
            pass
    return {node for node in nodes if node}


def settle(nodes, wait_s: float) -> list:
    """Wait until each of `nodes` answers a task pinned to it or Ray declares it dead, at
    most wait_s; the nodes that did neither (the caller goes on, and says so)."""
    pending = {}
    for node in nodes:
        where = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        pending[_answer.options(scheduling_strategy=where).remote()] = node
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        answered, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
        for ref in answered:  # done, or failed because its node is gone: settled either way
            del pending[ref]
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        for ref, node in list(pending.items()):
            if node not in alive:
                del pending[ref]
                _cancel(ref)
    for ref in pending:
        _cancel(ref)
    return sorted(pending.values())


def _cancel(ref) -> None:
    try:
        ray.cancel(ref, force=True)
    except (RayError, ValueError, TypeError):
        pass  # already finished or its node gone: nothing to cancel
