"""Run one job from the driver: in this process, on Ray, or under mpiexec.

Whatever the backend, one Driver (disttrain.train.driver) owns the run directory and
every rank runs disttrain.train.run_rank: here over a LocalCommunicator, on Ray inside
RankActors watched by the Supervisor, under mpiexec in disttrain.workers.mpi_rank
(whose rank 0 is the driver). SIGINT and SIGTERM stop the job within about a second with
a checkpoint, a second one at once; exit codes are the CLI's (0 done or stopped, 1 failed).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from disttrain.distributed import LocalCommunicator
from disttrain.train import SpecError, run_rank
from disttrain.train.driver import Driver
from disttrain.train.progress import Progress
from disttrain.train.rundir import mark_failed, read_status
from disttrain.train.spec import dump_job
from disttrain.train.timeline import process_started

EXIT_OK, EXIT_FAILED = 0, 1
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def run_job(spec, run_dir, *, resume=False, address=None, quiet=False, should_stop=None,
            loop=None, datasets=None) -> int:
    """Train spec into run_dir; the exit code. should_stop: a callable polled for a stop;
    loop: a user's train_loop(ctx) run on every rank instead of the job's; datasets:
    (train, val) handed to every rank instead of the [data] table's (a Ray Dataset's;
    neither under MPI, whose ranks start from a job file)."""
    if spec.distributed.backend == "mpi":
        if loop is not None:
            raise SpecError("[distributed] backend: a train loop runs on Ray (coordinator, "
                            "ring) or locally; mpi ranks run job files: choose another backend")
        if datasets is not None:
            raise SpecError("[distributed] backend: a Ray Dataset trains on Ray (coordinator, "
                            "ring) or locally; mpi ranks read files: choose another backend")
        return run_under_mpiexec(spec, run_dir, resume=resume, quiet=quiet)
    driver = Driver(run_dir, spec, Progress(quiet=quiet))
    driver.mark("process", process_started())
    stop = threading.Event()

    def stopping() -> bool:
        return stop.is_set() or bool(should_stop and should_stop())

    def on_second() -> None:
        driver.fail("interrupted twice: exited at once, without a final checkpoint; "
                    "--resume continues from the last one")

    try:
        if spec.distributed.backend == "local":
            with stop_on_signals(stop, on_second, driver.progress):
                summary = _run_here(spec, driver, resume, stopping, loop, datasets)
        else:
            from .supervisor import Supervisor, default_num_cpus, ensure_ray

            # ray.init installs its own SIGTERM handler: ours go in after it.
            ensure_ray(address, default_num_cpus(spec))
            driver.mark("ray")
            with stop_on_signals(stop, on_second, driver.progress):
                summary = Supervisor(spec, driver, resume=resume, should_stop=stopping,
                                     loop=loop, datasets=datasets).run()
        driver.finish(summary)
    except SpecError as error:
        driver.fail(error)
        raise
    except Exception as error:  # the job failed: one clear line, exit 1
        driver.fail(error)
        print(f"disttrain: job failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _run_here(spec, driver: Driver, resume: bool, should_stop, loop=None,
              datasets=None) -> dict:
    """The whole job in this process: one rank over a LocalCommunicator."""
    state = driver.resume_state() if resume else None
    driver.set_workers([{"rank": 0, "node": socket.gethostname(), "pid": os.getpid()}])
    return run_rank(spec, LocalCommunicator(spec.distributed.timeout_s), state=state,
                    on_record=driver.on_record, on_checkpoint=driver.on_checkpoint,
                    should_stop=should_stop, loop=loop, datasets=datasets)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, on_second=None, progress=None):
    """Inside, the first SIGINT or SIGTERM sets stop (every rank then stops within about a
    second, with a checkpoint); a second one calls on_second and exits at once, code 1.
    Only the main thread can take signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        if not stop.is_set():
            stop.set()
            if progress is not None:
                progress.say(f"{signal.Signals(signum).name}: stopping within about a second, "
                             "with a checkpoint (again to exit now, without one)")
            return
        print(f"disttrain: {signal.Signals(signum).name} again: exiting now without a "
              "checkpoint; --resume continues from the last one", file=sys.stderr, flush=True)
        if on_second is not None:
            on_second()
        os._exit(EXIT_FAILED)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_under_mpiexec(spec, run_dir, *, resume=False, quiet=False) -> int:
    """`mpiexec -n W python -m disttrain.workers.mpi_rank RUN/job.toml --run-dir RUN`;
    rank 0 is the driver. This process owns mpiexec: it runs in a process group of its
    own, gets our SIGINT/SIGTERM (the ranks then stop with a checkpoint; a second signal
    kills the group), and never outlives us. MPI has no restarts: --resume continues."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir / "job.toml"
    job_file.write_text(dump_job(spec))
    command = [find_mpiexec(), "-n", str(spec.distributed.workers), sys.executable, "-m",
               "disttrain.workers.mpi_rank", str(job_file), "--run-dir", str(run_dir)]
    command += ["--resume"] * resume + ["--quiet"] * quiet
    shm_before = _mpich_segments()
    # mpiexec writes to an unlinked file that a thread echoes to our stdout: hydra names a
    # killed rank's pid there, and, unlike a pipe, a file never kills mpiexec with SIGPIPE
    # once this process is gone (the ranks must still stop cleanly then).
    fd, path = tempfile.mkstemp(prefix="disttrain-mpiexec-", suffix=".out")
    with os.fdopen(fd, "w") as output, open(path) as reader:
        os.unlink(path)  # both stay open; nothing is left behind whatever happens
        mpiexec = subprocess.Popen(command, start_new_session=True, stdout=output,
                                   preexec_fn=_term_with_parent)
        dead_pids = _follow(reader, mpiexec)
        returncode = _wait_forwarding_signals(mpiexec)
        dead_pids.join()
    for leftover in _mpich_segments() - shm_before:
        with contextlib.suppress(OSError):
            leftover.unlink()
    if returncode == 0:
        return EXIT_OK
    ranks = _ranks_of(run_dir, dead_pids.pids)
    culprit = (f"rank {', '.join(map(str, ranks))} (pid "
               f"{', '.join(map(str, dead_pids.pids))}) was killed or crashed" if ranks else
               "a rank failed or was killed (its message, if it could write one, is above)")
    why = f"mpiexec exited with code {returncode}: {culprit}"
    mark_failed(run_dir, why)
    print(f"disttrain: job failed: {why}", file=sys.stderr)
    return EXIT_FAILED


def _wait_forwarding_signals(mpiexec: subprocess.Popen) -> int:
    """Wait for mpiexec; our first SIGINT/SIGTERM goes to it (it hands it to the ranks),
    a second kills its group; it never outlives this function."""
    stop = threading.Event()
    try:
        with stop_on_signals(stop, on_second=lambda: _kill_group(mpiexec)):
            forwarded = False
            while mpiexec.poll() is None:
                if stop.is_set() and not forwarded:
                    os.killpg(mpiexec.pid, signal.SIGTERM)  # mpiexec passes it to the ranks
                    forwarded = True
                time.sleep(0.1)
    finally:
        _kill_group(mpiexec)
    return mpiexec.returncode


class _Follower(threading.Thread):
    """Echo what mpiexec writes to a file, noting the pid of each rank hydra reports dead."""

    def __init__(self, reader, mpiexec: subprocess.Popen):
        super().__init__(daemon=True, name="mpiexec-output")
        self.reader, self.mpiexec, self.pids = reader, mpiexec, []

    def run(self) -> None:
        while True:
            finished = self.mpiexec.poll() is not None  # then read once more, to the end
            for line in self.reader:
                sys.stdout.write(line)
                found = re.search(r"PID (\d+) RUNNING AT", line)
                if found:
                    self.pids.append(int(found.group(1)))
            sys.stdout.flush()
            if finished:
                return
            time.sleep(0.05)


def _follow(reader, mpiexec: subprocess.Popen) -> _Follower:
    follower = _Follower(reader, mpiexec)
    follower.start()
    return follower


def _ranks_of(run_dir: Path, pids: list) -> list:
    """The ranks of pids, from the workers rank 0 recorded in status.json."""
    workers = (read_status(run_dir) or {}).get("workers", [])
    return sorted(w["rank"] for w in workers if w.get("pid") in pids)


def _term_with_parent() -> None:
    """In the mpiexec child: get SIGTERM if this CLI dies, even by SIGKILL (Linux), so the
    ranks stop with a checkpoint instead of running on as orphans."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL proc's whole process group (mpiexec and its ranks) if it still runs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _mpich_segments() -> set:
    """MPICH's shared-memory files; a killed rank leaves its own behind in /dev/shm."""
    return set(Path("/dev/shm").glob("mpich_shm_*")) if Path("/dev/shm").is_dir() else set()


def find_mpiexec() -> str:
    """mpiexec on PATH, else the one the mpich wheel put beside this Python."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = shutil.which("mpiexec") or (str(beside) if beside.exists() else None)
    if found is None:
        raise SpecError("[distributed] backend = 'mpi' needs mpiexec: pip install "
                        "'disttrain[mpi]' (the mpich wheel brings it)")
    return found
