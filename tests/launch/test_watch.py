"""Watching a run: `disttrain plot` writes a real PNG, [job] tensorboard = true writes event
files that TensorBoard's own reader reads back, and the progress bar appears in a real
pseudo-terminal while output that is not a terminal stays one line per log."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import zlib
from pathlib import Path

import pytest

from disttrain.train.plot import PIXELS, rank_times
from disttrain.train.spec import dump_job, spec_from_dict
from tests.launch.test_cli import disttrain
from tests.train.helpers import REPO, run_under_mpiexec, small_job

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple:
    """(width, height) from a PNG's IHDR chunk, after checking the signature and its CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[16:16 + length]
    (crc,) = struct.unpack(">I", data[16 + length:20 + length])
    assert zlib.crc32(kind + body) == crc, "IHDR checksum mismatch"
    return struct.unpack(">II", body[:8])


def assert_real_image(path: Path) -> None:
    """A PNG of the plot's size that decodes, and is not one flat colour."""
    import matplotlib.image

    assert png_size(path) == PIXELS
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (PIXELS[1], PIXELS[0])
    assert pixels.std() > 0.01


def job_file(tmp_path, name="job.toml", **overrides) -> Path:
    """A small local job: 40 steps over 4 epochs, logged every 5, evaluated each epoch."""
    base = {"job.epochs": 4, "job.max_steps": 40, "job.log_every": 5,
            "job.eval_every_epoch": True, "job.checkpoint_every": 20}
    path = tmp_path / name
    path.write_text(dump_job(spec_from_dict(small_job(**{**base, **overrides}))))
    return path


def train(tmp_path, *args, **overrides) -> Path:
    run = tmp_path / "run"
    done = disttrain("train", str(job_file(tmp_path, **overrides)), "--run-dir", str(run),
                     *args)
    assert done.returncode == 0, done.stderr
    return run


def one_line_error(done, *words) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


# -- disttrain plot -------------------------------------------------------------------------

def test_plot_writes_a_png_of_a_finished_run(tmp_path):
    run = train(tmp_path, "--quiet")
    done = disttrain("plot", str(run))
    assert done.returncode == 0, done.stderr
    assert_real_image(run / "plot.png")
    other = tmp_path / "elsewhere.png"
    assert disttrain("plot", str(run), "-o", str(other)).returncode == 0
    assert_real_image(other)


def test_plot_draws_what_there_is_of_a_torn_run_without_a_timeline(tmp_path):
    run = train(tmp_path, "--quiet")
    (run / "timeline.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 45, "lo')  # a writer killed mid-append
    done = disttrain("plot", str(run), "-o", str(tmp_path / "torn.png"))
    assert done.returncode == 0, done.stderr
    assert "dropped a torn last line" in done.stderr
    assert_real_image(tmp_path / "torn.png")


def test_plot_draws_whichever_validation_metrics_a_run_has(tmp_path):
    """A regression job's eval records hold val_mse and val_mae instead of val_accuracy."""
    from disttrain.train import plot

    records = [{"kind": "train", "step": 5, "epoch": 0, "loss": 2.0},
               {"kind": "train", "step": 10, "epoch": 0, "loss": None},  # all skipped
               {"kind": "eval", "step": 10, "epoch": 0, "val_loss": 1.5, "val_mse": 1.5,
                "val_mae": 0.9},
               {"kind": "eval", "step": 20, "epoch": 1, "val_loss": 1.1, "val_mse": 1.1,
                "val_mae": 0.7}]
    figure = plot._figure()
    losses, validation, _ = plot._panels(figure)
    plot._plot_losses(losses, records)
    plot._plot_val_metrics(validation, records)
    assert [line.get_label() for line in losses.get_lines()] == ["train loss", "val_loss"]
    assert [line.get_label() for line in validation.get_lines()] == ["val_mae", "val_mse"]
    assert list(validation.get_lines()[1].get_ydata()) == [1.5, 1.1]

    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "running", "step": 20}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    done = disttrain("plot", str(run))
    assert done.returncode == 0, done.stderr
    assert_real_image(run / "plot.png")


def test_plot_refuses_bad_input_in_one_line(tmp_path):
    one_line_error(disttrain("plot", str(tmp_path)), "not a run directory")
    one_line_error(disttrain("plot", str(tmp_path / "missing")), "not a run directory")
    (tmp_path / "status.json").write_text(json.dumps({"state": "starting", "step": 0}))
    one_line_error(disttrain("plot", str(tmp_path)), "no metrics yet")
    (tmp_path / "metrics.jsonl").write_text("not json\n" + json.dumps(
        {"kind": "train", "step": 5, "epoch": 0, "loss": 1.0}) + "\n")
    one_line_error(disttrain("plot", str(tmp_path)), "line 1 is not JSON")

    (tmp_path / "ok").mkdir()
    run = train(tmp_path / "ok", "--quiet")
    (tmp_path / "a-file").write_text("")
    one_line_error(disttrain("plot", str(run), "-o", str(tmp_path / "a-file" / "p.png")),
                   "cannot write", "a-file")
    one_line_error(disttrain("plot", str(run), "-o", str(tmp_path / "no" / "dir" / "p.png")),
                   "cannot write")
    one_line_error(disttrain("plot", str(run), "-o", str(tmp_path)), "cannot write")
    one_line_error(disttrain("plot"), "RUN_DIR")


def test_plot_without_matplotlib_names_the_extra(tmp_path):
    run = train(tmp_path, "--quiet")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['matplotlib'] = None; "
         "from disttrain.launch.cli import main; sys.exit(main(sys.argv[1:]))", "plot",
         str(run)], cwd=REPO, capture_output=True, text=True, timeout=120)
    one_line_error(done, "disttrain plot needs matplotlib: pip install 'disttrain[watch]'")


@pytest.mark.mpi
def test_plot_shows_compute_and_communication_of_every_rank(tmp_path):
    """Two real ranks under mpiexec: both appear, each with time on both tracks."""
    job = small_job(**{"distributed.backend": "mpi", "distributed.workers": 2,
                       "job.max_steps": 20, "job.log_every": 5})
    run = tmp_path / "run"
    run_under_mpiexec(job, run)
    ranks = rank_times(json.loads((run / "timeline.json").read_text())["traceEvents"])
    assert list(ranks) == [0, 1]
    for times in ranks.values():
        assert times["steps"] == 20 and times["compute"] > 0 and times["all-reduce"] > 0
    done = disttrain("plot", str(run))
    assert done.returncode == 0, done.stderr
    assert_real_image(run / "plot.png")


# -- TensorBoard ----------------------------------------------------------------------------

def scalars(folder: Path) -> dict:
    """{tag: [(step, value)]} as TensorBoard itself reads the folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep them all
    board.Reload()
    return {tag: [(e.step, e.value) for e in board.Scalars(tag)]
            for tag in board.Tags()["scalars"]}


def expected_scalars(run: Path) -> dict:
    from disttrain.train.rundir import read_metrics

    expected: dict = {}
    for record in read_metrics(run):
        keys = (("loss", "lr", "samples_per_s") if record["kind"] == "train"
                else [k for k in record if k.startswith("val_")])
        for key in keys:
            expected.setdefault(f"{record['kind']}/{key}", []).append(
                (record["step"], record[key]))
    return expected


def assert_same_scalars(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for tag, points in expected.items():
        assert [step for step, _ in got[tag]] == [step for step, _ in points], tag
        assert [value for _, value in got[tag]] == pytest.approx(
            [value for _, value in points], rel=1e-6), tag  # stored as float32


def test_tensorboard_scalars_are_written_and_read_back_by_tensorboard(tmp_path):
    run = train(tmp_path, "--quiet", **{"job.tensorboard": True})
    got = scalars(run / "tensorboard")
    assert {"train/loss", "train/lr", "train/samples_per_s", "eval/val_loss",
            "eval/val_accuracy"} <= set(got)
    assert [step for step, _ in got["train/loss"]] == list(range(5, 41, 5))
    assert_same_scalars(got, expected_scalars(run))


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path):
    """The killed attempt logged steps 25..40 past its last kept checkpoint (20); the resumed
    run logs them again, and TensorBoard shows only the new ones (purge_step)."""
    run = train(tmp_path, "--quiet", **{"job.tensorboard": True})
    for later in ("step-00000040",):
        for file in (run / "checkpoints" / later).iterdir():
            file.unlink()
        (run / "checkpoints" / later).rmdir()
    (run / "status.json").write_text(json.dumps({"state": "running", "step": 40}))
    done = disttrain("train", str(job_file(tmp_path, **{"job.tensorboard": True})),
                     "--run-dir", str(run), "--resume", "--quiet")
    assert done.returncode == 0, done.stderr
    assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per start
    assert_same_scalars(scalars(run / "tensorboard"), expected_scalars(run))


@pytest.mark.parametrize("backend", ["local", "mpi"])  # mpi: the driver is rank 0
def test_tensorboard_without_tensorboardx_names_the_extra_and_writes_nothing(tmp_path,
                                                                             backend):
    job = job_file(tmp_path, **{"job.tensorboard": True, "distributed.backend": backend})
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['tensorboardX'] = None; "
         "from disttrain.launch.cli import main; sys.exit(main(sys.argv[1:]))", "train",
         str(job), "--run-dir", str(run)], cwd=REPO, capture_output=True, text=True,
        timeout=120)
    one_line_error(done, "[job] tensorboard = true needs tensorboardX: "
                         "pip install 'disttrain[watch]'")
    assert not run.exists()


# -- the progress bar -----------------------------------------------------------------------

def run_in_terminal(*args, timeout=120) -> tuple:
    """Run the CLI with a real pseudo-terminal (120 columns) as its stdin, stdout and
    stderr; (exit code, everything it wrote)."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling tty
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
            os.chdir(REPO)
            os.execv(sys.executable, [sys.executable, "-m", "disttrain.launch.cli", *args])
        finally:
            os._exit(127)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([terminal], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            output += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(terminal)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


STEP_LINE = re.compile(r"^step +\d+/40  epoch +\d+  loss \d+\.\d{4}  lr [\d.e-]+  "
                       r"[\d,]+ samples/s$")


def test_a_terminal_gets_a_live_bar(tmp_path):
    code, output = run_in_terminal("train", str(job_file(tmp_path)), "--run-dir",
                                   str(tmp_path / "run"))
    assert code == 0, output
    bar = [part for part in re.split(r"[\r\n]", output) if part.startswith("train:")]
    assert bar, output
    final = bar[-1]
    # steps, ETA (elapsed<remaining), epoch, loss, samples/s
    assert re.search(r"\| 40/40 \[\d\d:\d\d<\d\d:\d\d, ", final), final
    assert re.search(r"epoch 3  loss \d+\.\d{4}  [\d,]+ samples/s\]", final), final
    assert "\r" in output
    assert not any(STEP_LINE.match(line.strip()) for line in output.splitlines())
    # the other lines still print, above the bar: every epoch's evaluation, the last one's too
    assert output.count("done  val_loss") == 4 and "done at step 40" in output
    assert "run directory:" in output


def test_quiet_in_a_terminal_draws_no_bar(tmp_path):
    code, output = run_in_terminal("train", str(job_file(tmp_path)), "--run-dir",
                                   str(tmp_path / "run"), "--quiet")
    assert code == 0, output
    assert "train:" not in output and "\r" not in output.replace("\r\n", "\n")


def test_output_that_is_not_a_terminal_stays_one_line_per_log(tmp_path):
    done = disttrain("train", str(job_file(tmp_path)), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout and "train:" not in done.stdout
    lines = done.stdout.splitlines()
    assert sum(bool(STEP_LINE.match(line)) for line in lines) == 8, done.stdout
    assert sum("done  val_loss" in line for line in lines) == 4  # one per epoch
    assert lines[0] == "training from step 0 to 40" and lines[-1].startswith("run directory:")
