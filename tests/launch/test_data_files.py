"""Your own data through the CLI: .npz, a pair of .npy files and .csv hold the same samples
and train to the same parameters; a bad file is refused in one line before anything starts.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from disttrain.data import get_dataset
from tests.launch.test_faults import assert_bit_identical, status
from tests.launch.test_run_directory import cli, write_job
from tests.train.helpers import final_params, small_job

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
