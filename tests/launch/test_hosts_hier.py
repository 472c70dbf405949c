"""The hierarchical ring across separate hosts: two network namespaces (tests/netns.py),
two ranks on each, shared memory within a host and the leaders' ring over the bridge.

A cluster of its own (two worker hosts of one CPU each, so half a CPU per worker puts
exactly two ranks on each), beside test_hosts.py's three-host one.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from disttrain.train.spec import dump_job, spec_from_dict
from tests.launch.test_faults import status
from tests.netns import netns_cluster_or_skip
from tests.train.helpers import final_params, run_local, small_job
from tests.train.test_equivalence import assert_params_close
from tests.workers.test_hier import check_collectives

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_hosts():
    """A head, two worker hosts with one CPU each and a driver host."""
    yield from netns_cluster_or_skip(2)


@pytest.mark.timeout(420)
def test_hierarchical_ring_on_two_hosts_matches_one_process(two_hosts, tmp_path):
    job = small_job(**{"distributed.backend": "ring", "distributed.hierarchical": True,
                       "distributed.workers": 4, "distributed.cpus_per_worker": 0.5,
                       "distributed.placement": "SPREAD"})
    job_file = two_hosts.base / "hier.toml"
    job_file.write_text(dump_job(spec_from_dict(job)))
    run_dir = two_hosts.runs / "hier"
    proc = two_hosts.train(job_file, run_dir)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    final = status(run_dir)
    assert final["state"] == "done" and final["world_size"] == 4, final
    # two ranks on each host: the layout whose mode is "hier" (shared memory + leaders)
    per_node = Counter(w["node_id"] for w in final["workers"])
    assert sorted(per_node.values()) == [2, 2], final["workers"]
    assert_params_close(final_params(run_dir), run_local(small_job(), tmp_path / "one"),
                        atol=1e-9)


@pytest.mark.timeout(300)
def test_collectives_across_two_hosts_take_the_hierarchical_path(two_hosts):
    """Rank processes started straight on the hosts (no Ray), two per host, each bound to
    its host's address: they agree on mode "hier" and give numpy's answers."""
    folder = two_hosts.base / "rendezvous"  # base is seen by every host; runs/ is not
    folder.mkdir()
    hosts = two_hosts.worker_hosts[:2]
    placed = [hosts[0], hosts[0], hosts[1], hosts[1]]
    nodes = ",".join(h.key for h in placed)
    procs = [two_hosts.popen(h.key, sys.executable, "-m", "tests.workers.hier_main",
                             "collectives", str(r), "4", nodes, str(folder), "60", h.ip)
             for r, h in enumerate(placed)]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    lines = []
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        lines.append([json.loads(x) for x in out.splitlines()])
    assert [first["mode"] for first, _ in lines] == ["hier"] * 4
    check_collectives([result for _, result in lines])
