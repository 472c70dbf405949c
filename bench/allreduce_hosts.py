"""All-reduce across two "hosts": the flat ring, the hierarchical ring and gloo over one link.

`disttrain bench allreduce --hosts 2 [--per-host 2]` makes two network namespaces joined
by a veth pair (bench/netns.py) and starts `per-host` rank processes in each, ranks
0..p-1 in the first and p..2p-1 in the second, with no Ray: every row's ranks are plain
processes that meet through a folder (the ring) or gloo's TCP store, each with one
BLAS/OpenMP thread (torch.set_num_threads(1) too). Rows, all over the same veth link:

    ring                 the flat ring: every rank in one TCP ring, frames without tags
    ring-hier            hierarchical: shared memory within each namespace, the ring
                         between one leader per namespace, frames without tags
    ring-integrity       the flat ring with HMAC-SHA256 on every frame between the hosts,
                         as a job runs between real hosts by default
    ring-hier-integrity  the hierarchical ring, the same way
    gloo                 torch.distributed's gloo, GLOO_SOCKET_IFNAME=eth0 in each namespace

Each rank binds to its namespace's address; the hierarchical ranks are told their node
(the namespace) explicitly, since both namespaces share one host name and boot id. Timing
as `disttrain bench allreduce` (bench/allreduce.py): after 3 untimed all-reduces and a
barrier, each iteration counts as long as its slowest rank took; the rows of every round
are pooled, and the backends run interleaved round by round. `x gloo` is gloo's median
time over the row's, `x flat` the flat ring's (same integrity) over the row's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

from .allreduce import _slowest, _time_allreduce, add_ratios, allreduce_row, format_rows
from .common import REPO, child_env, machine, thread_note
from .netns import VethPair

BACKENDS = ("ring", "ring-hier", "ring-integrity", "ring-hier-integrity", "gloo")
CHILD_TIMEOUT_S = 900


def run_rows(backends, per_host: int, sizes_mb, iters: int, rounds: int) -> tuple:
    """(rows, failures) for every backend, timed in two namespaces made for this run."""
    world = 2 * per_host
    pooled: dict = {(b, mb): [] for b in backends for mb in sizes_mb}
    failures = []
    with VethPair() as pair:
        for _ in range(rounds):
            for backend in backends:
                try:
                    per_size = _run_backend(pair, backend, per_host, sizes_mb, iters)
                    for mb, times in zip(sizes_mb, per_size):
                        pooled[(backend, mb)] += times
                except (subprocess.SubprocessError, RuntimeError, OSError) as e:
                    failures.append(f"{backend}: {e}")
    rows = add_ratios([allreduce_row(b, world, mb, ts) for (b, mb), ts in pooled.items() if ts])
    return add_vs_flat(rows), failures


def add_vs_flat(rows: list) -> list:
    """Each ring row's speed-up over the flat ring with the same integrity, at its size."""
    for row in rows:
        flat = "ring-integrity" if row["backend"].endswith("integrity") else "ring"
        peer = next((r for r in rows if r["backend"] == flat and r["size_mb"] == row["size_mb"]),
                    None)
        row["vs_flat"] = None if peer is None or row["backend"] == "gloo" else round(
            peer["median_ms"] / row["median_ms"], 3)
    return rows


def _run_backend(pair: VethPair, backend: str, per_host: int, sizes_mb, iters) -> list:
    """Start the ranks of one row in the two namespaces; [size][iteration] seconds."""
    world = 2 * per_host
    sizes = ",".join(map(str, sizes_mb))
    with tempfile.TemporaryDirectory(prefix="dtbench") as folder:
        procs = []
        port = str(random.randint(20000, 30000))  # a fresh namespace: nothing listens there
        try:
            for rank in range(world):
                side = rank // per_host
                if backend == "gloo":
                    cmd = [sys.executable, "-m", "disttrain.bench.allreduce", "--child", "gloo",
                           "--sizes", sizes, "--iters", str(iters)]
                    env = child_env(MASTER_ADDR=pair.ips[0], MASTER_PORT=port, RANK=str(rank),
                                    WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="eth0")
                else:
                    cmd = [sys.executable, "-m", "disttrain.bench.allreduce_hosts", "--child",
                           backend, "--rank", str(rank), "--world", str(world), "--node",
                           pair.names[side], "--host", pair.ips[side], "--folder", folder,
                           "--sizes", sizes, "--iters", str(iters)]
                    env = child_env()
                procs.append(subprocess.Popen(pair.argv(side, *cmd), cwd=REPO, env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True))
            outs = [p.communicate(timeout=CHILD_TIMEOUT_S) for p in procs]
        finally:
            for p in procs:  # after a timeout or an error, leave no rank behind
                if p.poll() is None:
                    p.kill()
                    p.wait()
    if any(p.returncode for p in procs) and not (backend == "gloo" and outs[0][0].strip()):
        errors = "\n".join(err[-2000:] for _, err in outs)
        raise RuntimeError(f"exit codes {[p.returncode for p in procs]}\n{errors}")
    if backend == "gloo":  # rank 0 prints the slowest rank's times
        return json.loads(outs[0][0].strip().splitlines()[-1])
    return _slowest([json.loads(out.strip().splitlines()[-1]) for out, _ in outs])


def _ring_child(args) -> None:
    """One ring rank: build the communicator, time the all-reduces, print them as JSON."""
    from disttrain.workers.comm import make_communicator
    from disttrain.workers.comm.ring import FolderRendezvous

    comm = make_communicator(
        "ring", rank=args.rank, world_size=args.world, secret="bench-secret",
        rendezvous=FolderRendezvous(args.folder, args.world), timeout_s=120.0,
        host=args.host, hierarchical="hier" in args.child, node=args.node,
        integrity=None if args.child.endswith("integrity") else False)
    try:
        times = _time_allreduce(comm.allreduce_, comm.barrier, args.sizes, args.iters)
    finally:
        comm.close()
    print(json.dumps(times), flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This mode's options, on `disttrain bench allreduce`'s parser."""
    parser.add_argument("--hosts", type=int, default=0,
                        help="2: time the flat ring, the hierarchical ring and gloo across "
                             "two network namespaces joined by a veth pair (needs root)")
    parser.add_argument("--per-host", type=int, default=2,
                        help="with --hosts 2: rank processes in each namespace")


def main(args, sizes) -> int:
    """The --hosts 2 table for `disttrain bench allreduce`'s parsed arguments."""
    from .netns import unavailable

    if args.hosts != 2:
        print(f"--hosts: only 2 namespaces are supported, got {args.hosts}", file=sys.stderr)
        return 2
    if args.per_host < 1:
        print(f"--per-host: needs at least 1 rank per namespace, got {args.per_host}",
              file=sys.stderr)
        return 2
    if (why := unavailable()) is not None:
        print(f"--hosts 2 {why}", file=sys.stderr)
        return 2
    backends = list(BACKENDS) if args.backend == "all" else args.backend.split(",")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        print(f"--backend: with --hosts 2 choose from {', '.join(BACKENDS)} or all; got "
              f"{', '.join(unknown)}", file=sys.stderr)
        return 2
    os.environ.update(child_env())
    start = machine()
    rows, failures = run_rows(backends, args.per_host, sizes, args.iters, args.rounds)
    end = machine()
    print(format_rows(rows))
    for row in sorted(rows, key=lambda r: (r["size_mb"], r["backend"])):
        if row["vs_flat"] is not None and row["backend"] not in ("ring", "ring-integrity"):
            print(f"{row['backend']} at {row['size_mb']:g} MB: {row['vs_flat']:.2f}x the flat "
                  "ring's speed (its median time over this row's)")
    print(f"\n2 namespaces x {args.per_host} ranks over one veth pair; {thread_note()} in "
          f"every process; {start['nproc']} cores ({start['usable_cpus']} usable), "
          f"{start['cpu'] or '?'}; load average {start['loadavg']} at start, "
          f"{end['loadavg']} at end; {args.rounds} round(s) x {args.iters} iterations, float32")
    for f in failures:
        print(f"FAILED {f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "machine_start": start, "machine_end": end,
                       "failures": failures, "per_host": args.per_host}, f, indent=1)
    return 1 if failures else 0


def _child_main(argv: list) -> None:
    parser = argparse.ArgumentParser()
    for name in ("--child", "--node", "--host", "--folder"):
        parser.add_argument(name, required=True)
    for name in ("--rank", "--world", "--iters"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--sizes", required=True)
    args = parser.parse_args(argv)
    args.sizes = [float(s) for s in args.sizes.split(",")]
    _ring_child(args)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
