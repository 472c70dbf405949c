"""The Python API, `disttrain.launch.train`: the same run as the CLI's, the same checks,
and the README's example run as written."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from disttrain.launch import JobFailed, train
from disttrain.train.spec import SpecError, dump_job, spec_from_dict
from tests.train.helpers import REPO, final_params, run_local, small_job


def test_a_dict_a_file_and_a_spec_train_to_the_same_parameters(tmp_path):
    job = small_job()
    path = tmp_path / "job.toml"
    path.write_text(dump_job(spec_from_dict(job)))
    results = [train(job, tmp_path / "dict"), train(path, tmp_path / "file"),
               train(spec_from_dict(job), tmp_path / "spec")]
    reference = run_local(job, tmp_path / "reference")
    for result in results:
        assert (result.state, result.step) == ("done", 30)
        assert result.final_model.exists() and np.isfinite(result.metrics["loss"])
        got = final_params(result.run_dir)
        for name in reference:
            assert np.array_equal(got[name], reference[name]), name


def test_overrides_reach_the_job(tmp_path):
    result = train(small_job(), tmp_path / "run", max_steps=12,
                   set={"optimizer.lr": 0.01, "job.log_every": 4})
    assert result.step == 12 and result.metrics["lr"] == pytest.approx(0.01)


@pytest.mark.ray
def test_on_ray_it_matches_one_process(ray_session, tmp_path):
    job = small_job()
    result = train(job, tmp_path / "ray", backend="coordinator", workers=2)
    reference = run_local(job, tmp_path / "reference")
    got = final_params(result.run_dir)
    for name in reference:
        np.testing.assert_allclose(got[name], reference[name], rtol=0, atol=1e-9)


@pytest.mark.parametrize("job, kwargs, needle", [
    (small_job(**{"optimizer.lr": -1.0}), {}, "lr"),
    (small_job(), {"set": {"optimizer": 0.1}}, "section.key"),
    (small_job(), {"workers": 0}, "workers"),
    (42, {}, "job must be"),
])
def test_bad_input_raises_one_line_before_anything_starts(tmp_path, job, kwargs, needle):
    with pytest.raises(SpecError, match=needle) as caught:
        train(job, tmp_path / "run", **kwargs)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_a_failed_job_raises_job_failed(tmp_path):
    job = small_job(**{"optimizer.lr": 1e38, "job.dtype": "float32", "job.log_every": 1})
    with pytest.raises(JobFailed, match=r"step \d+: .*lower \[optimizer\] lr"):
        train(job, tmp_path / "run")


def test_the_readme_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```python\n(from disttrain.launch import train\n.*?)```", readme,
                      re.S).group(1)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state, step, accuracy, model = done.stdout.split()
    assert state == "done" and int(step) > 0 and float(accuracy.rstrip("%")) > 50
    assert (tmp_path / "runs" / "notebook" / "final" / "model.npz").exists()
