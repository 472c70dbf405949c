"""A ray.data.Dataset from Python (disttrain.launch.train(job, data=ds)): on the session's
Ray cluster it trains to the same parameters as the same rows in a .npy pair, with its
val_fraction split or a val_data of its own, and bad data is one SpecError line before
anything starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from disttrain.data.datasets import split_indices
from disttrain.launch.api import train
from disttrain.train.spec import SpecError
from tests.launch.test_data_files import samples
from tests.launch.test_faults import assert_bit_identical
from tests.train.helpers import REPO, final_params, small_job

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def job(backend="coordinator", workers=2, **data) -> dict:
    job = small_job(**{"job.max_steps": 40, "model.sizes": [16, 32, 4],
                       "job.eval_every_epoch": True, "distributed.backend": backend,
                       "distributed.workers": workers})
    job["data"] = {"val_fraction": 0.2, "shuffle": True, "label_column": "label", **data}
    return job


def rows(x, y) -> list:
    return [{**{f"f{i}": float(v) for i, v in enumerate(row)}, "label": int(label)}
            for row, label in zip(x, y)]


def write_npy(folder, name, x, y) -> dict:
    np.save(folder / f"{name}_x.npy", x)
    np.save(folder / f"{name}_y.npy", y)
    return {"x": str(folder / f"{name}_x.npy"), "y": str(folder / f"{name}_y.npy")}


def test_a_ray_dataset_trains_as_the_same_npy_on_two_workers(ray_session, tmp_path):
    from ray import data

    x, y = samples()
    npy = write_npy(tmp_path, "all", x, y)
    ds = data.from_items(rows(x, y), override_num_blocks=5)  # blocks of 60 rows
    from_ray = train(job(), tmp_path / "ray", data=ds)
    from_npy = train(job(path=npy["x"], y_path=npy["y"]), tmp_path / "npy")
    assert from_ray.state == from_npy.state == "done"
    assert_bit_identical(final_params(from_ray.run_dir), final_params(from_npy.run_dir))
    assert from_ray.metrics["val_loss"] == from_npy.metrics["val_loss"]
    assert from_ray.metrics["val_accuracy"] == from_npy.metrics["val_accuracy"]


def test_a_ray_dataset_with_val_data_trains_as_npy_files_with_val_path(ray_session, tmp_path):
    import pandas as pd
    from ray import data

    x, y = samples()
    train_rows, val_rows = (split_indices(len(y), s, 0.2, 3) for s in ("train", "val"))
    frame = pd.DataFrame({**{f"f{i}": x[:, i] for i in range(16)}, "label": y})
    tr = write_npy(tmp_path, "tr", x[train_rows], y[train_rows])
    va = write_npy(tmp_path, "va", x[val_rows], y[val_rows])
    from_ray = train(job("local", 1), tmp_path / "ray",
                     data=data.from_pandas(frame.iloc[train_rows]).repartition(3),
                     val_data=data.from_pandas(frame.iloc[val_rows]))
    from_npy = train(job("local", 1, path=tr["x"], y_path=tr["y"], val_path=va["x"],
                         val_y_path=va["y"]), tmp_path / "npy")
    assert_bit_identical(final_params(from_ray.run_dir), final_params(from_npy.run_dir))
    assert from_ray.metrics["val_loss"] == from_npy.metrics["val_loss"]


def bad(kind):
    from ray import data

    x, y = samples()
    items = rows(x, y)
    if kind == "label":
        return {"data": data.from_items([{k.replace("label", "class"): v
                                          for k, v in r.items()} for r in items])}
    if kind == "words":
        return {"data": data.from_items([dict(r, note="a") for r in items])}
    if kind == "nan":
        items[7]["f3"] = float("nan")
        return {"data": data.from_items(items, override_num_blocks=3)}
    if kind == "few":
        return {"data": data.from_items(items[:20])}  # 16 train rows, batch_size 24
    if kind == "labels":
        return {"data": data.from_items([dict(r, label=r["label"] + 0.5) for r in items])}
    if kind == "val_only":
        return {"val_data": data.from_items(items)}
    return {"data": data.from_items(items)}


@pytest.mark.parametrize("kind, backend, needle", [
    ("label", "coordinator", "data: has no column 'label' (its columns are f0"),
    ("words", "coordinator", "column 'note' holds string values, not numbers"),
    ("nan", "coordinator", "the features hold NaN or infinite values (row 7)"),
    ("few", "coordinator", "[job] batch_size: 24 is larger than the 16 training samples"),
    ("labels", "coordinator", "class indices"),
    ("val_only", "coordinator", "val_data goes with data"),
    ("ok", "mpi", "[distributed] backend: a Ray Dataset trains on Ray"),
])
def test_bad_ray_data_is_one_line_before_anything_starts(ray_session, tmp_path, kind,
                                                         backend, needle):
    with pytest.raises(SpecError) as raised:
        train(job(backend), tmp_path / "never", **bad(kind))
    assert needle in str(raised.value) and "\n" not in str(raised.value), raised.value
    assert not (tmp_path / "never").exists()


def test_the_readme_example_runs_as_written(ray_session, tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(import numpy as np\nfrom ray import data\n.*?)```", readme,
                      re.S).group(1)
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state, accuracy = done.stdout.split()[-2:]
    assert state == "done" and float(accuracy) > 0.8
    assert (tmp_path / "runs" / "ray-data" / "final" / "model.npz").exists()
