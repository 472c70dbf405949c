"""Your own data through the CLI: .npz, a pair of .npy files and .csv hold the same samples
and train to the same parameters; a bad file is refused in one line before anything starts.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from disttrain.data import get_dataset
from tests.launch.test_faults import assert_bit_identical, status
from tests.launch.test_run_directory import cli, write_job
from tests.train.helpers import REPO, final_params, small_job

pytestmark = pytest.mark.slow


def samples():
    """The synthetic classification set as plain arrays: 300 x 16 features, 4 classes."""
    data = get_dataset("synthetic", n_samples=300, n_features=16, n_classes=4, seed=3,
                       dtype=np.float64, split="all")
    return data.arrays[0], data.arrays[1]


def write_formats(folder):
    """The same samples as .npz, .npy + .npy and .csv; the [data] table of each."""
    x, y = samples()
    np.savez(folder / "train.npz", features=x, labels=y)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    with open(folder / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{i}" for i in range(x.shape[1])] + ["class"])
        writer.writerows([*(repr(float(v)) for v in row), str(label)] for row, label in zip(x, y))
    return {
        "npz": {"path": "train.npz", "x_key": "features", "y_key": "labels"},
        "npy": {"path": "x.npy", "y_path": "y.npy"},
        "csv": {"path": "train.csv", "label_column": "class"},
    }


def file_job(data: dict) -> dict:
    job = small_job(**{"job.max_steps": 40, "model.sizes": [16, 32, 4]})
    job["data"] = {"val_fraction": 0.2, "shuffle": True, **data}
    return job


def test_npz_npy_and_csv_train_to_the_same_parameters(tmp_path):
    tables = write_formats(tmp_path)
    params = {}
    for name, data in tables.items():
        run_dir = tmp_path / f"run-{name}"
        # run from another folder: the data paths are read from the job file's folder
        done = cli("train", str(write_job(tmp_path / f"{name}.toml", file_job(data))),
                   "--run-dir", str(run_dir), "--quiet")
        assert done.returncode == 0, done.stderr
        assert status(run_dir)["state"] == "done"
        params[name] = final_params(run_dir)
    assert_bit_identical(params["npz"], params["npy"])
    assert_bit_identical(params["npz"], params["csv"])  # repr() writes floats exactly
    trained = cli("status", str(tmp_path / "run-npz"), "--json")
    assert '"state": "done"' in trained.stdout


@pytest.mark.parametrize("change, needle", [
    ({"path": "missing.npz"}, "missing.npz: no such file"),
    ({"path": "train.npz", "x_key": "nope", "y_key": "labels"}, "has no array 'nope'"),
    ({"path": "x.npy"}, "give the labels' file as [data] y_path"),
    ({"path": "train.csv", "label_column": "target"}, "has no column 'target'"),
    ({"path": "nan.npz"}, "NaN or infinite"),
    ({"path": "badlabels.npz"}, "class indices"),
    ({"path": "short.npz"}, "one per sample"),
    ({"path": "notes.txt"}, "unknown format '.txt'"),
    ({"path": "garbage.npz"}, "cannot be read as .npz"),
])
def test_a_bad_data_file_is_one_line_and_nothing_starts(tmp_path, change, needle):
    write_formats(tmp_path)
    x, y = samples()
    x_nan = x.copy()
    x_nan[7, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=x_nan, y=y)
    np.savez(tmp_path / "badlabels.npz", x=x, y=y + 0.5)
    np.savez(tmp_path / "short.npz", x=x, y=y[:-1])
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    run_dir = tmp_path / "never"
    done = cli("train", str(write_job(tmp_path / "job.toml", file_job(change))),
               "--run-dir", str(run_dir))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "[data] path" in lines[0], lines
    assert not run_dir.exists()


# -- regression: float targets from the same three formats, and the task's metrics -------

def regression_samples():
    """The synthetic regression set as plain arrays: 300 x 16 features, one float target."""
    x, y = get_dataset("synthetic_regression", n_samples=300, n_features=16, n_targets=1,
                       seed=3, dtype=np.float64, split="all").arrays
    return x, y[:, 0]


def write_regression_formats(folder):
    """The same samples as .npz (y 1-D), .npy + .npy (y as (N, 1)) and .csv."""
    x, y = regression_samples()
    np.savez(folder / "reg.npz", x=x, y=y)
    np.save(folder / "reg_x.npy", x)
    np.save(folder / "reg_y.npy", y[:, None])
    with open(folder / "reg.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{i}" for i in range(x.shape[1])] + ["target"])
        writer.writerows([*(repr(float(v)) for v in row), repr(float(t))] for row, t in zip(x, y))
    return {
        "npz": {"path": "reg.npz"},
        "npy": {"path": "reg_x.npy", "y_path": "reg_y.npy"},
        "csv": {"path": "reg.csv", "label_column": "target"},
    }


def regression_job(data: dict, **changes) -> dict:
    job = file_job(data)
    job["job"].update(task="regression", eval_every_epoch=True)
    job["model"]["sizes"] = [16, 32, 1]
    job["optimizer"]["lr"] = 0.01
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        job[section][key] = value
    return job


def records(run_dir, kind: str) -> list:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_a_regression_job_trains_from_each_format_and_reports_mse_and_mae(tmp_path):
    tables = write_regression_formats(tmp_path)
    params = {}
    for name, data in tables.items():
        run_dir = tmp_path / f"run-{name}"
        done = cli("train", str(write_job(tmp_path / f"{name}.toml", regression_job(data))),
                   "--run-dir", str(run_dir), "--quiet")
        assert done.returncode == 0, done.stderr
        assert status(run_dir)["state"] == "done"
        params[name] = final_params(run_dir)
        evals = records(run_dir, "eval")
        assert evals and all({"val_loss", "val_mse", "val_mae"} <= e.keys() for e in evals)
        assert all("val_accuracy" not in e for e in evals)
        # mse is the loss: the same number, in the loss's float64
        assert all(e["val_loss"] == pytest.approx(e["val_mse"], rel=1e-12) for e in evals)
    # 1-D y (npz), (N, 1) y (npy) and a column (csv) are the same targets
    assert_bit_identical(params["npz"], params["npy"])
    assert_bit_identical(params["npz"], params["csv"])
    # it learned: far better than predicting 0 (the targets' mean square, about 17)
    assert records(tmp_path / "run-npz", "eval")[-1]["val_mse"] < 0.1 * np.mean(
        regression_samples()[1] ** 2)


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_l1_and_huber_regression_jobs_train(tmp_path, loss):
    data = write_regression_formats(tmp_path)["npz"]
    run_dir = tmp_path / "run"
    done = cli("train", str(write_job(tmp_path / "job.toml",
                                      regression_job(data, **{"job.loss": loss}))),
               "--run-dir", str(run_dir), "--quiet")
    assert done.returncode == 0, done.stderr
    evals = records(run_dir, "eval")
    assert {"val_loss", "val_mse", "val_mae"} <= evals[-1].keys()
    assert evals[-1]["val_mae"] < 0.7 * evals[0]["val_mae"]
    if loss == "l1":  # l1 is the mean absolute error itself
        assert evals[-1]["val_loss"] == pytest.approx(evals[-1]["val_mae"], rel=1e-12)


def test_a_custom_loss_job_trains_through_the_cli(tmp_path):
    """examples/regression.toml with the example's own loss, named as a relative file."""
    run_dir = tmp_path / "run"
    done = cli("train", str(REPO / "examples" / "regression.toml"), "--run-dir", str(run_dir),
               "--quiet", "--set", 'job.loss="custom_loss.py:log_cosh"', "--set",
               'distributed.backend="local"', "--set", "distributed.workers=1", "--set",
               "job.epochs=6")
    assert done.returncode == 0, done.stderr
    recorded = (run_dir / "job.toml").read_text()
    assert f'loss = "{REPO / "examples" / "custom_loss.py"}:log_cosh"' in recorded
    evals = records(run_dir, "eval")
    assert {"val_loss", "val_mse", "val_mae"} <= evals[-1].keys()
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert evals[-1]["val_loss"] != pytest.approx(evals[-1]["val_mse"])  # log-cosh, not mse


@pytest.mark.parametrize("change, needle", [
    ({"path": "nan_target.npz"}, "the targets hold NaN or infinite values (rows 5)"),
    ({"path": "inf_target.npz"}, "the targets hold NaN or infinite values (rows 0, 9)"),
    ({"path": "cube.npz"}, "the targets must be one number or one row of numbers"),
    ({"path": "short_target.npz"}, "one row of numbers per sample"),
    ({"path": "words.npz"}, "the targets must be numbers"),
])
def test_bad_regression_targets_are_one_line_and_nothing_starts(tmp_path, change, needle):
    x, y = regression_samples()
    bad = {"nan_target": y.copy(), "inf_target": y.copy(), "cube": y.reshape(300, 1, 1),
           "short_target": y[:-1], "words": np.array(["a"] * 300)}
    bad["nan_target"][5] = np.nan
    bad["inf_target"][[0, 9]] = np.inf, -np.inf
    for name, targets in bad.items():
        np.savez(tmp_path / f"{name}.npz", x=x, y=targets)
    run_dir = tmp_path / "never"
    done = cli("train", str(write_job(tmp_path / "job.toml", regression_job(change))),
               "--run-dir", str(run_dir))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "[data] path" in lines[0], lines
    assert not run_dir.exists()


def test_a_model_narrower_than_the_target_columns_is_refused(tmp_path):
    x, y = regression_samples()
    np.savez(tmp_path / "two.npz", x=x, y=np.stack([y, -y], axis=1))
    done = cli("train", str(write_job(tmp_path / "job.toml", regression_job({"path": "two.npz"}))),
               "--run-dir", str(tmp_path / "never"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"disttrain: error: {tmp_path / 'job.toml'}: [model] sizes: [16, 32, 1] must end with "
        "the data's 2 target columns (and may start with its 16 features)"]


# -- a validation file of its own ([data] val_path) ------------------------------------------

def test_a_val_path_is_the_same_as_the_split_it_holds(tmp_path):
    """Train and validation files holding exactly the job's own val_fraction split train
    to the same parameters and report the same validation metrics, as .npz and as .npy."""
    from disttrain.data.datasets import split_indices

    tables = write_formats(tmp_path)
    x, y = samples()
    train, val = (split_indices(len(y), s, 0.2, 3) for s in ("train", "val"))
    np.savez(tmp_path / "tr.npz", x=x[train], y=y[train])
    np.savez(tmp_path / "va.npz", x=x[val], y=y[val])
    np.save(tmp_path / "tr_x.npy", x[train])
    np.save(tmp_path / "tr_y.npy", y[train])
    np.save(tmp_path / "va_x.npy", x[val])
    np.save(tmp_path / "va_y.npy", y[val])
    runs = {"split": {"path": "train.npz", "x_key": "features", "y_key": "labels",
                      **{k: v for k, v in tables["npz"].items() if k == "path"}},
            "npz": {"path": "tr.npz", "val_path": "va.npz"},
            "npy": {"path": "tr_x.npy", "y_path": "tr_y.npy", "val_path": "va_x.npy",
                    "val_y_path": "va_y.npy"}}
    results = {}
    for name, data in runs.items():
        job = file_job(data)
        job["job"]["eval_every_epoch"] = True
        run_dir = tmp_path / f"run-{name}"
        done = cli("train", str(write_job(tmp_path / f"{name}.toml", job)), "--run-dir",
                   str(run_dir), "--quiet")
        assert done.returncode == 0, done.stderr
        evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text()
                 .splitlines() if json.loads(line).get("kind") == "eval"]
        results[name] = (final_params(run_dir), [(e["val_loss"], e["val_accuracy"])
                                                 for e in evals])
    for name in ("npz", "npy"):
        assert_bit_identical(results[name][0], results["split"][0])
        assert results[name][1] == results["split"][1] and results[name][1]


@pytest.mark.parametrize("data, needle", [
    ({"path": "train.npz", "x_key": "features", "y_key": "labels", "val_path": "narrow.npz"},
     "[data] val_path: "),
    ({"name": "synthetic", "late": ("val_path", "narrow.npz")}, "set [data] path too"),
    ({"path": "x.npy", "y_path": "y.npy", "late": ("val_y_path", "y.npy")},
     "[data] val_y_path"),
    ({"path": "x.npy", "y_path": "y.npy", "val_path": "x.npy"}, "[data] val_path: "),
    ({"path": "x.npy", "y_path": "y.npy", "val_path": "missing.npz"}, "[data] val_path: "),
])
def test_a_bad_val_path_is_one_line_and_nothing_starts(tmp_path, data, needle):
    write_formats(tmp_path)
    x, y = samples()
    np.savez(tmp_path / "narrow.npz", x=x[:, :8], y=y)
    key, value = data.pop("late", ("", ""))  # a value the spec refuses, written past it
    job_file = write_job(tmp_path / "job.toml", file_job(data))
    job_file.write_text(job_file.read_text().replace(f'\n{key} = ""', f'\n{key} = "{value}"'))
    run_dir = tmp_path / "never"
    done = cli("train", str(job_file), "--run-dir", str(run_dir))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not run_dir.exists()
