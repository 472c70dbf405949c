"""Run one job: locally in this process (backend "local") or on Ray through the supervisor."""

from __future__ import annotations

import signal
import sys
import threading

from disttrain.train.rundir import RunDir
from disttrain.train.spec import SpecError

from .report import Progress


def run_job(spec, run_dir, *, resume=False, address=None, quiet=False) -> int:
    """Train spec, writing run_dir; the CLI's exit code. SIGINT/SIGTERM stop it cleanly."""
    progress = Progress(quiet=quiet)
    run = RunDir(run_dir, spec)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if spec.distributed.backend == "local":
            summary = _run_local(spec, run, progress, resume, stop)
        else:
            summary = _run_on_ray(spec, run, progress, resume, address, stop)
    except SpecError:
        run.write_status(state="failed")
        raise
    except Exception as error:  # the job failed: one clear line, exit 1
        run.write_status(state="failed", error=str(error))
        print(f"disttrain: job failed: {error}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    progress.finish(summary, run.path)
    return 0


def _run_local(spec, run, progress, resume, stop):
    from disttrain.distributed import LocalCommunicator
    from disttrain.train import Trainer, latest_valid_checkpoint

    records = []
    trainer = Trainer(spec, LocalCommunicator(spec.distributed.timeout_s), run_dir=run.path,
                      on_log=records.append)
    if resume:
        found = latest_valid_checkpoint(run.path, report=progress.warn)
        if found:
            trainer.load_state(*found[1:])
            progress.say(f"resumed from {found[0].name} (step {trainer.step})")
        run.forget_metrics_after(trainer.step)
    progress.start(trainer.step, trainer.total_steps)
    run.write_status(state="running", workers=[{"rank": 0, "node": "local", "pid": None,
                                                 "state": "running"}])

    def flush():
        run.append_metrics(records)
        for r in records:
            progress.update(r)
        records.clear()
        return False

    trainer.on_log = lambda r: (records.append(r), flush())
    summary = trainer.run(should_stop=stop.is_set)
    run.write_timeline(trainer.times.trace)
    run.write_status(state="stopped" if summary["stopped"] else "done", step=summary["step"])
    trainer.close()
    return summary


def _run_on_ray(spec, run, progress, resume, address, stop):
    from .supervisor import Supervisor, default_num_cpus, ensure_ray

    ensure_ray(address, default_num_cpus(spec))
    supervisor = Supervisor(spec, run, progress, resume=resume)
    supervisor.should_stop = stop.is_set
    return supervisor.run()
