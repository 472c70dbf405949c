"""Bad input stops at the door: exit code 2, exactly one line on stderr naming the file
and the [section] key (or the flag), no run directory, no worker started.

Each case runs the real CLI in a subprocess. Workers cannot start unnoticed: the child
finds a `ray` package that exits 97 when imported and an `mpiexec` that exits 97, first
on its paths, so a case that got as far as launching fails loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.train.helpers import REPO

BASE = {
    "job": {"name": '"t"', "epochs": "1", "max_steps": "3", "batch_size": "8",
            "log_every": "1"},
    "model": {"sizes": "[16, 8, 4]"},
    "data": {"name": '"synthetic"', "n_samples": "64"},
    "distributed": {"backend": '"local"', "workers": "1"},
}
CPUS = os.cpu_count() or 1


def job_text(changes: dict) -> str:
    """BASE with {"section.key": raw TOML value} changes, as a job file."""
    tables = {section: dict(table) for section, table in BASE.items()}
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        tables.setdefault(section, {})[key] = value
    return "".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
                   for section, table in tables.items())


def regression(**changes) -> dict:
    """Changes that make BASE a regression job (synthetic float targets, one column)."""
    return {"job.task": '"regression"', "model.sizes": "[16, 8, 1]", **changes}


def ray_job(**changes) -> dict:
    """Changes that make BASE a coordinator job (so reaching launch would start Ray)."""
    return {"distributed.backend": '"coordinator"', "distributed.workers": "2", **changes}


# name: ({"section.key": raw TOML} or a whole file's text, what the line must name, CLI args)
KEY_CASES = {
    # the file as a whole
    "not TOML": ("[job\nname = ", "not valid TOML", ()),
    "TOML nested too deeply": ("a = " + "[" * 50_000 + "]" * 50_000, "nested too deeply", ()),
    "not UTF-8": ("name = '\udcff'", "not a text file", ()),
    "larger than a job file": ("#" * (1 << 20) + "\n", "larger than 1 MB", ()),
    "unknown table": ({"trainer.x": "1"}, "[trainer]", ()),
    "table that is a value": ('job = 3\n', "[job] must be a table", ()),
    # [job]
    "name climbs out of runs/": ({"job.name": '"../../x"'}, "[job] name", ()),
    "name is hidden": ({"job.name": '".x"'}, "[job] name", ()),
    "name holds a NUL": ({"job.name": '"a\\u0000b"'}, "[job] name", ()),
    "name holds a slash": ({"job.name": '"a/b"'}, "[job] name", ()),
    "unknown key": ({"job.epoch": "1"}, "[job] epoch", ()),
    "seed negative": ({"job.seed": "-1"}, "[job] seed", ()),
    "epochs zero": ({"job.epochs": "0"}, "[job] epochs", ()),
    "max_steps negative": ({"job.max_steps": "-3"}, "[job] max_steps", ()),
    "batch_size a string": ({"job.batch_size": '"8"'}, "[job] batch_size", ()),
    "batch_size a float": ({"job.batch_size": "8.0"}, "[job] batch_size", ()),
    "batch_size below workers": (ray_job(**{"distributed.workers": "9"}), "[job] batch_size",
                                 ()),
    "batch_size beyond the data": ({"job.batch_size": "4000"}, "[job] batch_size", ()),
    "log_every zero": ({"job.log_every": "0"}, "[job] log_every", ()),
    "keep_checkpoints zero": ({"job.keep_checkpoints": "0"}, "[job] keep_checkpoints", ()),
    "blas_threads huge": ({"job.blas_threads": "9223372036854775807"}, "[job] blas_threads",
                          ()),
    "dtype unknown": ({"job.dtype": '"float16"'}, "[job] dtype", ()),
    "on_nonfinite unknown": ({"job.on_nonfinite": '"ignore"'}, "[job] on_nonfinite", ()),
    "eval_every_epoch not a bool": ({"job.eval_every_epoch": "1"}, "[job] eval_every_epoch",
                                    ()),
    # [job] task and loss (issue 9): the loss must exist, fit the task, import, run on two
    # samples and give a scalar Tensor that backward() can start from
    "task unknown": ({"job.task": '"ranking"'}, "[job] task", ()),
    "loss unknown": ({"job.loss": '"hinge"'}, "[job] loss", ()),
    "loss a file without a function": ({"job.loss": '"losses.py"'}, "[job] loss", ()),
    "cross_entropy for regression": (regression(**{"job.loss": '"cross_entropy"'}),
                                     "[job] loss", ()),
    "nll for regression": (regression(**{"job.loss": '"nll"'}), "[job] loss", ()),
    "mse for classification": ({"job.loss": '"mse"'}, "[job] loss", ()),
    "huber for classification": ({"job.loss": '"huber"'}, "[job] loss", ()),
    "custom loss file missing": ({"job.loss": '"nowhere.py:loss"'}, "[job] loss", ()),
    "custom loss module missing": ({"job.loss": '"no_such_package.losses:loss"'}, "[job] loss",
                                   ()),
    "custom loss module exits": ({"job.loss": '"exits.py:loss"'}, "[job] loss", ()),
    "custom loss has no such function": ({"job.loss": '"losses.py:nothing"'}, "[job] loss",
                                         ()),
    "custom loss raises": (regression(**{"job.loss": '"losses.py:raises"'}), "[job] loss", ()),
    "custom loss per sample": (regression(**{"job.loss": '"losses.py:per_sample"'}),
                               "[job] loss", ()),
    "custom loss a float": ({"job.loss": '"losses.py:a_float"'}, "[job] loss", ()),
    "custom loss detached": (regression(**{"job.loss": '"losses.py:detached"'}), "[job] loss",
                             ()),
    "regression on class labels": (regression(**{"data.name": '"digits"'}), "[data] name", ()),
    "regression output wider than the targets": (regression(**{"model.sizes": "[16, 8, 4]"}),
                                                 "[model] sizes", ()),
    "regression output of another shape": (
        regression(**{"model.kind": '"custom"', "model.factory": '"models.py:flat_output"'}),
        "[model] factory", ()),
    "n_targets zero": (regression(**{"data.n_targets": "0"}), "[data] n_targets", ()),
    # [model]
    "sizes do not fit the data": ({"model.sizes": "[16, 8, 3]"}, "[model] sizes", ()),
    "sizes with a zero": ({"model.sizes": "[16, 0, 4]"}, "[model] sizes", ()),
    "sizes of one layer": ({"model.sizes": "[16]"}, "[model] sizes", ()),
    "sizes with a string": ({"model.sizes": '[16, "8", 4]'}, "[model] sizes", ()),
    "sizes too many parameters": ({"model.sizes": "[16, 1000000, 1000000, 4]"},
                                  "[model] sizes", ()),
    "dropout one": ({"model.dropout": "1.0"}, "[model] dropout", ()),
    "dropout nan": ({"model.dropout": "nan"}, "[model] dropout", ()),
    "activation unknown": ({"model.activation": '"swish"'}, "[model] activation", ()),
    "kind unknown": ({"model.kind": '"rnn"'}, "[model] kind", ()),
    "cnn on non-square data": ({"model.kind": '"cnn"', "data.n_features": "15"},
                               "[model] kind", ()),
    "factory without a function": ({"model.kind": '"custom"', "model.factory": '"model.py"'},
                                   "[model] factory", ()),
    "factory file missing": ({"model.kind": '"custom"',
                              "model.factory": '"nowhere.py:build"'}, "[model] factory", ()),
    "factory with a NUL": ({"model.kind": '"custom"',
                            "model.factory": '"a\\u0000.py:build"'}, "[model] factory", ()),
    "factory path through a file": ({"model.kind": '"custom"',
                                     "model.factory": '"job.toml/m.py:build"'},
                                    "[model] factory", ()),
    "factory raises": ({"model.kind": '"custom"', "model.factory": '"models.py:raises"'},
                       "[model] factory", ()),
    "factory module exits": ({"model.kind": '"custom"', "model.factory": '"exits.py:build"'},
                             "[model] factory", ()),
    "factory has no such function": ({"model.kind": '"custom"',
                                      "model.factory": '"models.py:nothing"'},
                                     "[model] factory", ()),
    "factory model does not fit the data": ({"model.kind": '"custom"',
                                             "model.factory": '"models.py:too_narrow"'},
                                            "[model] factory", ()),
    # [data]
    "data name unknown": ({"data.name": '"mnist"'}, "[data] name", ()),
    "val_fraction zero": ({"data.val_fraction": "0"}, "[data] val_fraction", ()),
    "val_fraction one": ({"data.val_fraction": "1.0"}, "[data] val_fraction", ()),
    "val_fraction inf": ({"data.val_fraction": "inf"}, "[data] val_fraction", ()),
    "empty validation set": ({"data.n_samples": "16", "data.val_fraction": "0.01"},
                             "[data] val_fraction", ()),
    "n_samples one": ({"data.n_samples": "1"}, "[data] n_samples", ()),
    "n_samples x n_features too many": ({"data.n_samples": "10000000",
                                         "data.n_features": "100000"}, "[data] n_samples", ()),
    "n_features zero": ({"data.n_features": "0"}, "[data] n_features", ()),
    "n_classes one": ({"data.n_classes": "1"}, "[data] n_classes", ()),
    # [optimizer]
    "lr nan": ({"optimizer.lr": "nan"}, "[optimizer] lr", ()),
    "lr inf": ({"optimizer.lr": "inf"}, "[optimizer] lr", ()),
    "lr negative": ({"optimizer.lr": "-1.0"}, "[optimizer] lr", ()),
    "optimizer unknown": ({"optimizer.name": '"lbfgs"'}, "[optimizer] name", ()),
    "momentum above one": ({"optimizer.momentum": "1.5"}, "[optimizer] momentum", ()),
    "dampening two": ({"optimizer.dampening": "2"}, "[optimizer] dampening", ()),
    "weight_decay -inf": ({"optimizer.weight_decay": "-inf"}, "[optimizer] weight_decay",
                          ()),
    "nesterov without momentum": ({"optimizer.nesterov": "true"}, "[optimizer] nesterov",
                                  ()),
    "betas of one": ({"optimizer.name": '"adam"', "optimizer.betas": "[0.9, 1.0]"},
                     "[optimizer] betas", ()),
    "betas of three": ({"optimizer.name": '"adam"', "optimizer.betas": "[0.9, 0.99, 0.9]"},
                       "[optimizer] betas", ()),
    "betas nan": ({"optimizer.name": '"adamw"', "optimizer.betas": "[nan, 0.9]"},
                  "[optimizer] betas", ()),
    "eps negative": ({"optimizer.name": '"adam"', "optimizer.eps": "-1e-8"},
                     "[optimizer] eps", ()),
    # [scheduler]
    "scheduler unknown": ({"scheduler.name": '"cyclic"'}, "[scheduler] name", ()),
    "gamma zero": ({"scheduler.name": '"step"', "scheduler.gamma": "0"},
                   "[scheduler] gamma", ()),
    "gamma nan": ({"scheduler.name": '"step"', "scheduler.gamma": "nan"},
                  "[scheduler] gamma", ()),
    "step_size zero": ({"scheduler.name": '"step"', "scheduler.step_size": "0"},
                       "[scheduler] step_size", ()),
    "t_max negative": ({"scheduler.name": '"cosine"', "scheduler.t_max": "-1"},
                       "[scheduler] t_max", ()),
    "eta_min inf": ({"scheduler.name": '"cosine"', "scheduler.eta_min": "inf"},
                    "[scheduler] eta_min", ()),
    # [distributed]
    "backend unknown": ({"distributed.backend": '"nccl"'}, "[distributed] backend", ()),
    "local backend with two workers": ({"distributed.workers": "2"}, "[distributed] backend",
                                       ()),
    "workers zero": (ray_job(**{"distributed.workers": "0"}), "[distributed] workers", ()),
    "workers ten thousand": (ray_job(**{"distributed.workers": "10000"}),
                             "[distributed] workers", ()),
    "cpus_per_worker zero": (ray_job(**{"distributed.cpus_per_worker": "0"}),
                             "[distributed] cpus_per_worker", ()),
    "timeout_s inf": (ray_job(**{"distributed.timeout_s": "inf"}), "[distributed] timeout_s",
                      ()),
    "heartbeat_s zero": (ray_job(**{"distributed.heartbeat_s": "0"}),
                         "[distributed] heartbeat_s", ()),
    "bucket_cap_mb negative": (ray_job(**{"distributed.bucket_cap_mb": "-1"}),
                               "[distributed] bucket_cap_mb", ()),
    "max_restarts negative": (ray_job(**{"distributed.max_restarts": "-1"}),
                              "[distributed] max_restarts", ()),
    "placement unknown": (ray_job(**{"distributed.placement": '"ANY"'}),
                          "[distributed] placement", ()),
    # the machine (issue 7, item 10): more than OVERSUBSCRIBE (4) x its CPUs, on each backend
    "more workers than the machine": (
        ray_job(**{"distributed.workers": str(8 * CPUS), "job.batch_size": str(8 * CPUS)}),
        "[distributed] workers", ()),
    "more CPUs per worker than the machine": (
        ray_job(**{"distributed.cpus_per_worker": str(4 * CPUS)}), "[distributed] workers",
        ()),
    "more MPI ranks than the machine": (
        {"distributed.backend": '"mpi"', "distributed.workers": str(8 * CPUS),
         "job.batch_size": str(8 * CPUS)}, "[distributed] workers", ()),
    "--oversubscribe lets the machine check pass, the next check fails": (
        ray_job(**{"distributed.workers": str(8 * CPUS), "job.batch_size": str(8 * CPUS),
                   "model.sizes": "[10, 3]"}), "[model] sizes", ("--oversubscribe",)),
    # command-line overrides are checked as the keys they set
    "--workers zero": (ray_job(), "[distributed] workers", ("--workers", "0")),
    "--epochs negative": ({}, "[job] epochs", ("--epochs", "-1")),
    "--backend local with two workers": (ray_job(), "[distributed] backend",
                                         ("--backend", "local")),
}

MODELS = '''
from disttrain import nn

def raises(spec):
    raise KeyError("oops\\nwith a second line")

def too_narrow(spec):
    return nn.Linear(3, 4)

nothing = 42


class _Flat(nn.Module):
    """One output per sample as shape (N,), where regression targets are (N, 1)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(16, 1)

    def forward(self, x):
        return self.linear(x).reshape(-1)


def flat_output(spec):
    return _Flat()
'''

LOSSES = '''
import disttrain

def raises(output, target):
    raise ZeroDivisionError("no loss today")

def per_sample(output, target):
    return ((output - target) ** 2).sum(dim=1)

def a_float(output, target):
    return 0.5

def detached(output, target):
    return disttrain.tensor(((output.detach().numpy() - target.numpy()) ** 2).mean())

nothing = 42
'''


@pytest.fixture
def guarded_env(tmp_path):
    """An environment whose `import ray` and `mpiexec` exit 97: no worker can start."""
    poison = tmp_path / "poison"
    (poison / "ray").mkdir(parents=True)
    (poison / "ray" / "__init__.py").write_text(
        "import sys\nsys.stderr.write('a worker was about to start (ray imported)\\n')\n"
        "sys.exit(97)\n")
    (poison / "mpiexec").write_text("#!/bin/sh\necho 'mpiexec started' >&2\nexit 97\n")
    (poison / "mpiexec").chmod(0o755)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(poison), str(REPO)]),
               PATH=os.pathsep.join([str(poison), os.environ.get("PATH", "")]))
    env.pop("RAY_ADDRESS", None)
    return env


def run_cli(env, *args, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "disttrain.launch.cli", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_exit_2(done, *names):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("disttrain: error: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_bad_input_is_one_line_exit_2_naming_file_and_key(tmp_path, guarded_env, case):
    content, key, args = KEY_CASES[case]
    job = tmp_path / "job.toml"
    text = job_text(content) if isinstance(content, dict) else content
    job.write_bytes(text.encode("utf-8", "surrogateescape"))
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "losses.py").write_text(LOSSES)
    (tmp_path / "exits.py").write_text("import sys\nsys.exit('bye')\n")
    run = tmp_path / "run"
    done = run_cli(guarded_env, "train", str(job), "--run-dir", str(run), *args)
    assert_one_line_exit_2(done, str(job), key)
    assert not run.exists()


def test_the_table_covers_every_section_and_40_cases():
    text = " ".join(key for _, key, _ in KEY_CASES.values())
    for section in ("job", "model", "data", "optimizer", "scheduler", "distributed"):
        assert f"[{section}]" in text, section
    assert len(KEY_CASES) >= 40


FILE_CASES = {
    "no such file": (lambda tmp: tmp / "nope.toml", "no such job file"),
    "a folder": (lambda tmp: tmp, "is a folder"),
    "a path through a file": (lambda tmp: tmp / "job.toml" / "x.toml", "is a file"),
    "an empty path": (lambda tmp: "", "is a folder"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_unreadable_job_paths_are_one_line_exit_2(tmp_path, guarded_env, case):
    path, what = FILE_CASES[case]
    (tmp_path / "job.toml").write_text(job_text({}))
    run = tmp_path / "run"
    done = run_cli(guarded_env, "train", str(path(tmp_path)), "--run-dir", str(run))
    assert_one_line_exit_2(done, what)
    assert not run.exists()


def _without_root_privileges() -> tuple:
    """A command prefix under which permission bits apply, even to root."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("root ignores permission bits and setpriv is missing")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


def test_unreadable_job_file_is_one_line_exit_2(tmp_path, guarded_env):
    job = tmp_path / "job.toml"
    job.write_text(job_text({}))
    job.chmod(0)
    done = run_cli(guarded_env, "train", str(job), "--run-dir", str(tmp_path / "run"),
                   prefix=_without_root_privileges())
    assert_one_line_exit_2(done, str(job), "permission denied")
    assert not (tmp_path / "run").exists()


RUN_DIR_CASES = {
    "not empty": (lambda tmp: (tmp / "run").mkdir() or (tmp / "run" / "notes.txt").write_text(
        "mine"), lambda tmp: tmp / "run", "is not empty"),
    "a file": (lambda tmp: (tmp / "run").write_text("mine"), lambda tmp: tmp / "run",
               "not a folder"),
    "inside a file": (lambda tmp: (tmp / "run").write_text("mine"),
                      lambda tmp: tmp / "run" / "sub", "is a file"),
    "holds a run": (lambda tmp: (tmp / "run").mkdir() or (tmp / "run" / "status.json")
                    .write_text("{}"), lambda tmp: tmp / "run", "--resume"),
    "resume without checkpoints": (lambda tmp: (tmp / "run").mkdir(),
                                   lambda tmp: tmp / "run", "no checkpoints/"),
}


@pytest.mark.parametrize("case", list(RUN_DIR_CASES))
def test_a_used_or_impossible_run_dir_is_refused_and_left_as_it_was(tmp_path, guarded_env,
                                                                     case):
    make, run_dir, what = RUN_DIR_CASES[case]
    job = tmp_path / "job.toml"
    job.write_text(job_text({}))
    make(tmp_path)
    before = sorted((p.relative_to(tmp_path), p.is_dir() or p.read_bytes())
                    for p in tmp_path.rglob("*"))
    args = ["--resume"] if case.startswith("resume") else []
    done = run_cli(guarded_env, "train", str(job), "--run-dir", str(run_dir(tmp_path)), *args)
    assert_one_line_exit_2(done, "--run-dir" if not args else "--resume", what)
    assert sorted((p.relative_to(tmp_path), p.is_dir() or p.read_bytes())
                  for p in tmp_path.rglob("*")) == before


def test_run_dir_in_a_folder_that_is_not_writable_is_refused(tmp_path, guarded_env):
    job = tmp_path / "job.toml"
    job.write_text(job_text({}))
    (tmp_path / "locked").mkdir(mode=0o555)
    done = run_cli(guarded_env, "train", str(job), "--run-dir", str(tmp_path / "locked" / "run"),
                   prefix=_without_root_privileges())
    assert_one_line_exit_2(done, "--run-dir", "not writable")
    assert not any((tmp_path / "locked").iterdir())
