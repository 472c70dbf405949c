"""Parquet through the CLI: a .parquet file and a folder of parts (as Ray Data writes them)
hold the same samples as .npz and train to the same parameters, with their own val_path
too; a bad file, or a missing pyarrow, is one line before anything starts; `disttrain
submit` stages a Parquet folder whole.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from disttrain.data.datasets import split_indices
from disttrain.data.files import load_arrays
from disttrain.train.spec import load_job
from tests.launch.test_data_files import file_job, samples
from tests.launch.test_faults import assert_bit_identical, status
from tests.launch.test_run_directory import cli, write_job
from tests.launch.test_watch import one_line_error
from tests.train.helpers import REPO, final_params

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.slow


def table(x, y, label="class"):
    """Features f0, f1, ... (float64, as written) and the label column (int64)."""
    columns = {f"f{i}": x[:, i] for i in range(x.shape[1])}
    columns[label] = y
    return pa.table(columns)


def write_parquet_folder(folder, x, y, parts=3):
    """x, y as `parts` files part-00000.parquet, ... in row order, as Ray Data's write_parquet."""
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(y)), parts)):
        pq.write_table(table(x[rows], y[rows]), folder / f"part-{i:05d}.parquet")
    return folder


def run(tmp_path, name: str, data: dict, eval_every_epoch=False):
    """Train data's job through the CLI; (final parameters, each epoch's validation)."""
    job = file_job(data)
    job["job"]["eval_every_epoch"] = eval_every_epoch
    run_dir = tmp_path / f"run-{name}"
    done = cli("train", str(write_job(tmp_path / f"{name}.toml", job)), "--run-dir",
               str(run_dir), "--quiet")
    assert done.returncode == 0, done.stderr
    assert status(run_dir)["state"] == "done"
    evals = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "eval"]
    return final_params(run_dir), [(e["val_loss"], e["val_accuracy"]) for e in evals]


def test_a_parquet_file_and_folder_train_as_the_same_npz(tmp_path):
    x, y = samples()
    np.savez(tmp_path / "train.npz", x=x, y=y)
    pq.write_table(table(x, y), tmp_path / "train.parquet")
    write_parquet_folder(tmp_path / "parts", x, y)
    reference, _ = run(tmp_path, "npz", {"path": "train.npz"})
    for name, path in (("file", "train.parquet"), ("folder", "parts")):
        params, _ = run(tmp_path, name, {"path": path, "label_column": "class"})
        assert_bit_identical(params, reference)


def test_a_parquet_val_path_is_the_same_as_the_split_it_holds(tmp_path):
    """A folder of training parts and a validation file, holding the job's own split,
    train and evaluate exactly as the split of one .npz does."""
    x, y = samples()
    train, val = (split_indices(len(y), s, 0.2, 3) for s in ("train", "val"))
    np.savez(tmp_path / "all.npz", x=x, y=y)
    write_parquet_folder(tmp_path / "tr", x[train], y[train])
    pq.write_table(table(x[val], y[val]), tmp_path / "va.parquet")
    split = run(tmp_path, "split", {"path": "all.npz"}, eval_every_epoch=True)
    files = run(tmp_path, "files", {"path": "tr", "val_path": "va.parquet",
                                    "label_column": "class"}, eval_every_epoch=True)
    assert_bit_identical(files[0], split[0])
    assert files[1] == split[1] and files[1]


def write_bad_files(folder):
    x, y = samples()
    words = table(x, y).append_column("note", pa.array(["a"] * len(y)))
    pq.write_table(words, folder / "words.parquet")
    pq.write_table(table(x, y.astype(str)), folder / "textlabels.parquet")
    pq.write_table(table(x, y, label="target"), folder / "target.parquet")
    (folder / "empty").mkdir()
    (folder / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    write_parquet_folder(folder / "mixed", x, y, parts=2)
    pq.write_table(table(x[:5], y[:5], label="other"), folder / "mixed" / "part-00009.parquet")
    x_nan = x.copy()
    x_nan[4, 2] = np.nan
    pq.write_table(table(x_nan, y), folder / "nan.parquet")


@pytest.mark.parametrize("path, needle", [
    ("words.parquet", "words.parquet: column 'note' holds string values, not numbers"),
    ("textlabels.parquet", "column 'class' holds string values, not numbers; it is the label"),
    ("target.parquet", "target.parquet: has no column 'class'"),
    ("empty", "empty: a folder with no .parquet files"),
    ("broken.parquet", "broken.parquet: cannot be read as .parquet"),
    ("mixed", "part-00009.parquet: its columns"),
    ("nan.parquet", "nan.parquet: the features hold NaN or infinite values"),
    ("missing.parquet", "missing.parquet: no such file"),
])
def test_a_bad_parquet_path_is_one_line_and_nothing_starts(tmp_path, path, needle):
    write_bad_files(tmp_path)
    run_dir = tmp_path / "never"
    done = cli("train", str(write_job(tmp_path / "job.toml", file_job(
        {"path": path, "label_column": "class"}))), "--run-dir", str(run_dir))
    one_line_error(done, "[data] path: ", needle)
    assert not run_dir.exists()


@pytest.mark.parametrize("backend", ["local", "coordinator"])
def test_parquet_without_pyarrow_names_the_extra_and_nothing_starts(tmp_path, backend):
    x, y = samples()
    pq.write_table(table(x, y), tmp_path / "train.parquet")
    job = file_job({"path": "train.parquet", "label_column": "class"})
    job["distributed"].update(backend=backend, workers=1 if backend == "local" else 2)
    run_dir = tmp_path / "never"
    done = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['pyarrow'] = None; "
         "from disttrain.launch.cli import main; sys.exit(main(sys.argv[1:]))", "train",
         str(write_job(tmp_path / "job.toml", job)), "--run-dir", str(run_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    one_line_error(done, "[data] path: ", "train.parquet: Parquet data needs pyarrow: "
                   "pip install 'disttrain[data]'")
    assert not run_dir.exists()


def test_submit_stages_a_parquet_folder_whole(tmp_path):
    """The staged job reads its own copy of the folder: the original is gone."""
    from disttrain.launch.submit import stage

    x, y = samples()
    write_parquet_folder(tmp_path / "parts", x, y)
    spec = load_job(write_job(tmp_path / "job.toml", file_job(
        {"path": "parts", "val_path": "parts", "label_column": "class"})))
    staged = tmp_path / "staged"
    staged.mkdir()
    stage(spec, staged)
    shutil.rmtree(tmp_path / "parts")
    again = load_job(staged / "job.toml")
    for key in ("path", "val_path"):
        got_x, got_y = load_arrays(getattr(again.data, key), label_column="class")
        assert np.array_equal(got_x, x) and np.array_equal(got_y, y)
