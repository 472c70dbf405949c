"""Jobs on a running cluster, through Ray's Jobs API: submit, logs, stop, list, status, fetch.

`disttrain submit JOB --address http://HEAD:8265` checks the job here (bad input stops
here, nothing is sent), stages the job file and the files it names (a factory's .py, data
files) in a folder that Ray uploads as the job's working directory, and asks the head to
run `disttrain train` there. The job's driver then lives on the head, so it survives this
terminal closing, and so does its run directory: `RUNS_ON_HEAD/ID` on the head, which
`fetch` copies back through the same API (launch/archive.py), since the cluster shares no
disk with this machine. `stop` is Ray's stop: SIGTERM to the driver, which stops at the
next step with a checkpoint, as Ctrl-C does; the head gives it RAY_JOB_STOP_WAIT_TIME_S
(3 s unless the head was started with more) before a SIGKILL.

Ray's token authentication applies as to every Ray client: RAY_AUTH_MODE=token and the
token in RAY_AUTH_TOKEN (or the file in RAY_AUTH_TOKEN_PATH); a missing or wrong token is
refused by the head, and said here in one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from disttrain.train.spec import DATA_FILE_KEYS, dump_job

from .archive import ArchiveError, unpack

# Where the head keeps submitted runs; a shell expression, expanded by the head's shell.
RUNS_ON_HEAD = "${DISTTRAIN_RUNS:-$HOME/disttrain-runs}"
MARK = "disttrain"  # the metadata key that tells our jobs from other Ray jobs
REQUEST_TIMEOUT_S = (10, 300)  # connect, read: no request waits forever on a dead head
STOP_WAIT_S = 120.0  # `disttrain stop` waits this long for the job to end


class JobsApiError(Exception):
    """The head could not be reached, refused us, or does not know the job: one line."""


def jobs_address(address: str | None) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS, else an http(s) $RAY_ADDRESS (as `ray job`)."""
    for candidate in (address, os.environ.get("RAY_API_SERVER_ADDRESS"),
                      os.environ.get("RAY_ADDRESS")):
        if candidate and candidate.startswith(("http://", "https://")):
            return candidate.rstrip("/")
        if candidate and candidate is address:
            raise JobsApiError(f"--address {candidate!r}: the Jobs API is served over HTTP by "
                               "the head's dashboard; give e.g. http://HEAD:8265")
    raise JobsApiError("no cluster given: pass --address http://HEAD:8265 (the head's "
                       "dashboard, started with `ray start --head --dashboard-host=0.0.0.0`) "
                       "or set RAY_API_SERVER_ADDRESS")


@contextmanager
def _api(address: str):
    """A Jobs API client; every way the call can fail becomes one JobsApiError line."""
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    class Client(JobSubmissionClient):
        def _do_request(self, method, endpoint, **kwargs):  # Ray's has no timeout
            kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
            return super()._do_request(method, endpoint, **kwargs)

    for name in ("ray", "ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)  # Ray's INFO lines are not the job's
    try:
        # Ray lets $RAY_API_SERVER_ADDRESS and $RAY_ADDRESS override the address it is
        # given; an explicit --address must win, so they are out of sight for the call.
        hidden = {k: os.environ.pop(k) for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
                  if k in os.environ}
        try:
            client = Client(address)
        finally:
            os.environ.update(hidden)
        yield client
    except AuthenticationError as error:
        first = str(error).splitlines()[0]
        raise JobsApiError(f"{address}: token authentication failed ({first}): give the "
                           "cluster's token "
                           "in RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) with "
                           "RAY_AUTH_MODE=token") from None
    except (ConnectionError, requests.exceptions.RequestException) as error:
        raise JobsApiError(f"cannot reach the Jobs API at {address} ({type(error).__name__}): "
                           "check --address and that the head runs its dashboard "
                           "(`ray start --head --dashboard-host=0.0.0.0`)") from None
    except RuntimeError as error:  # Ray's SDK reports HTTP errors as RuntimeError
        text = " ".join(str(error).split())
        if "Version check" in text:
            raise JobsApiError(f"{address} does not serve Ray's Jobs API ({text[:200]}); give "
                               "the head's dashboard address, e.g. http://HEAD:8265") from None
        if "does not exist" in text or "status code 404" in text:
            raise JobsApiError(f"{address}: no such job ({text[:200]}); `disttrain list "
                               f"--address {address}` shows the jobs") from None
        raise JobsApiError(f"{address}: {text[:300]}") from None


def run_dir_on_head(submission_id: str) -> str:
    return f"{RUNS_ON_HEAD}/{submission_id}"


def new_submission_id(job_name: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", job_name.lower()).strip("-")[:40] or "job"
    return f"disttrain-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def stage(spec, folder: Path) -> Path:
    """Write spec into folder as job.toml, with every file it names (a model factory's or a
    custom loss's .py, data files, a Parquet folder) copied beside it under a relative path
    (files/...), so the job reads them wherever Ray unpacks the folder."""
    files = folder / "files"
    named = []
    # Code named as "file.py:function"; a "module.path:function" must be installed there.
    for section, key in (("model", "factory"), ("job", "loss")):
        target, colon, function = getattr(getattr(spec, section), key).rpartition(":")
        if target.endswith(".py"):
            named.append((section, key, Path(target), colon + function))
    for key in DATA_FILE_KEYS:
        if getattr(spec.data, key):
            named.append(("data", key, Path(getattr(spec.data, key)), ""))
    for index, (section, key, source, suffix) in enumerate(named):
        copy = files / f"{index}-{source.name}"
        files.mkdir(exist_ok=True)
        if source.is_dir():  # a folder of Parquet files, staged whole
            shutil.copytree(source, copy)
        else:
            shutil.copy2(source, copy)
        setattr(getattr(spec, section), key, f"{copy.relative_to(folder)}{suffix}")
    (folder / "job.toml").write_text(dump_job(spec))
    return folder


def submit(spec, address: str, resume: str | None = None) -> str:
    """Stage spec and submit `disttrain train` on the cluster; the submission id. resume:
    the id of an earlier submission whose run (on the head) this one continues."""
    submission_id = new_submission_id(spec.job.name)
    run_dir = run_dir_on_head(submission_id)
    flags = ""
    if resume:
        with _api(address) as api:
            run_dir = (api.get_job_info(resume).metadata or {}).get("run_dir")
        if not run_dir:
            raise JobsApiError(f"--resume {resume}: not a job submitted by `disttrain submit`, "
                               "so it has no run to continue")
        flags = " --resume"
    entrypoint = (f'mkdir -p "{RUNS_ON_HEAD}" && exec disttrain train job.toml '
                  f'--run-dir "{run_dir}" --address auto{flags}')
    with tempfile.TemporaryDirectory(prefix="disttrain-submit-") as folder, _api(address) as api:
        stage(spec, Path(folder))
        api.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                       runtime_env={"working_dir": folder},
                       metadata={MARK: "1", "job_name": spec.job.name, "run_dir": run_dir})
    return submission_id


def logs(address: str, submission_id: str, follow: bool = False) -> str:
    """The job's output so far; with follow, stream it to stdout until the job ends."""
    with _api(address) as api:
        if not follow:
            return api.get_job_logs(submission_id)
        api.get_job_status(submission_id)  # an unknown id fails here, in one line

        async def stream():
            async for chunk in api.tail_job_logs(submission_id):
                sys.stdout.write(chunk)
                sys.stdout.flush()

        asyncio.run(stream())
        return ""


def wait(address: str, submission_id: str, timeout_s: float | None = None) -> str:
    """Poll until the job reaches a final state (or timeout_s passes); its status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with _api(address) as api:
        while True:
            status = api.get_job_status(submission_id)
            if status.is_terminal() or (deadline and time.monotonic() > deadline):
                return str(status.value)
            time.sleep(0.5)


def stop(address: str, submission_id: str, timeout_s: float = STOP_WAIT_S) -> str:
    """Ask the head to stop the job (SIGTERM to its driver: a stop with a checkpoint) and
    wait for it to end; its final status."""
    with _api(address) as api:
        api.stop_job(submission_id)
    return wait(address, submission_id, timeout_s)


def status(address: str, submission_id: str) -> str:
    """The job as the head sees it, and the last progress line of its output."""
    with _api(address) as api:
        info = api.get_job_info(submission_id)
        tail = [line for line in api.get_job_logs(submission_id).splitlines() if line.strip()]
    meta = info.metadata or {}
    lines = [f"job        {info.submission_id}",
             f"status     {info.status.value}",
             f"message    {info.message or '-'}",
             f"started    {_when(info.start_time)}",
             f"ended      {_when(info.end_time)}",
             f"run dir    {meta.get('run_dir', '-')} on the head (`disttrain fetch` copies it)",
             f"last line  {tail[-1] if tail else '-'}"]
    return "\n".join(lines)


def list_jobs(address: str) -> str:
    """disttrain's jobs on the cluster, newest first."""
    with _api(address) as api:
        jobs = [j for j in api.list_jobs() if (j.metadata or {}).get(MARK)]
    jobs.sort(key=lambda j: j.start_time or 0, reverse=True)
    rows = [f"{'job':<52}  {'status':<10}  started"]
    rows += [f"{j.submission_id:<52}  {j.status.value:<10}  {_when(j.start_time)}" for j in jobs]
    return "\n".join(rows)


def fetch(address: str, submission_id: str, dest: Path) -> list[str]:
    """Copy the job's run directory from the head into dest: a small `disttrain pack` job
    prints it, this side checks and extracts it. The files copied."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise JobsApiError(f"fetch: {dest} exists and is not an empty folder; choose a new "
                           "DEST (nothing was overwritten)")
    with _api(address) as api:
        info = api.get_job_info(submission_id)
        run_dir = (info.metadata or {}).get("run_dir")
        if not (info.metadata or {}).get(MARK) or not run_dir:
            raise JobsApiError(f"{submission_id}: not a job submitted by `disttrain submit`, "
                               "so it has no run directory to fetch")
        pack_id = f"{submission_id}-fetch-{secrets.token_hex(2)}"
        api.submit_job(entrypoint=f'exec disttrain pack "{run_dir}"', submission_id=pack_id,
                       metadata={"fetch_of": submission_id})
    final = wait(address, pack_id, timeout_s=600)
    with _api(address) as api:
        output = api.get_job_logs(pack_id)
        if final in ("SUCCEEDED", "FAILED", "STOPPED"):
            api.delete_job(pack_id)  # a helper job: keep `disttrain list` and Ray's to the user's
    if final != "SUCCEEDED":
        reason = [line for line in output.splitlines() if "error" in line.lower()]
        raise JobsApiError(f"fetch {submission_id}: the pack job on the head ended {final}: "
                           f"{reason[-1] if reason else output.strip()[-300:]}")
    try:
        return unpack(output, dest)
    except ArchiveError as error:
        raise JobsApiError(f"fetch {submission_id}: {error}; run fetch again") from None


def _when(millis) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(millis / 1000)) if millis else "-"
