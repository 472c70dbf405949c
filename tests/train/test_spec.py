"""The job spec's validation, driven by its own tables: every float key refuses NaN and
infinities, every ranged key refuses a value just outside its range, and a spec written
as RUN/job.toml reads back the same."""

from __future__ import annotations

import dataclasses
import math

import pytest

from disttrain.train.spec import (
    CHOICES,
    DEFAULT_LOSS,
    LISTS,
    LOSS_TASKS,
    RANGES,
    JobSpec,
    SpecError,
    dump_job,
    load_job,
    resolve_factory,
    spec_from_dict,
)

from .helpers import REPO, small_job

# [data] keys of a file of your own: checked by loading the file (disttrain/data/files.py)
FILE_KEYS = ("path", "x_key", "y_key", "y_path", "label_column", "val_path", "val_y_path")


def float_keys() -> list:
    spec = JobSpec()
    return [(section.name, f.name) for section in dataclasses.fields(JobSpec)
            for f in dataclasses.fields(getattr(spec, section.name))
            if isinstance(getattr(getattr(spec, section.name), f.name), float)]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("section,key", float_keys())
def test_every_float_key_must_be_finite(section, key, value):
    job = small_job()
    job.setdefault(section, {})[key] = value
    with pytest.raises(SpecError, match=rf"job\.toml: \[{section}\] {key}: must be a finite"):
        spec_from_dict(job, source="job.toml")


def outside(allowed) -> list:
    """Values just outside a Range: its bounds when open, a step past them when closed."""
    step = 1 if isinstance(allowed.low, int) and isinstance(allowed.high or 0, int) else 1e-9
    values = [allowed.low if allowed.low_open else allowed.low - step]
    if allowed.high is not None:
        values.append(allowed.high if allowed.high_open else allowed.high + step)
    return values


@pytest.mark.parametrize("section,key", sorted(RANGES))
def test_every_ranged_key_refuses_values_outside_its_range(section, key):
    default = getattr(getattr(JobSpec(), section), key)
    for value in outside(RANGES[section, key]):
        job = small_job()
        job.setdefault(section, {})[key] = type(default)(value)
        with pytest.raises(SpecError, match=rf"\[{section}\] {key}: must be"):
            spec_from_dict(job, source="job.toml")


def test_every_number_and_choice_of_the_spec_is_in_a_table():
    """A new key without a range or a set of choices would be accepted unchecked."""
    spec = JobSpec()
    checked = set(RANGES) | set(CHOICES) | set(LISTS)
    for section in dataclasses.fields(JobSpec):
        for f in dataclasses.fields(getattr(spec, section.name)):
            value = getattr(getattr(spec, section.name), f.name)
            if isinstance(value, bool):
                continue
            if (section.name, f.name) in (("job", "name"), ("model", "factory"),
                                          ("job", "loss"), *(("data", k) for k in FILE_KEYS)):
                continue  # checked by their own rules: a safe folder name, loadable paths,
                # a loss that fits the task (test_loss_must_be_known_and_fit_the_task)
            assert (section.name, f.name) in checked, (section.name, f.name)


def test_written_spec_reads_back_the_same(tmp_path):
    spec = spec_from_dict(small_job(**{"optimizer.name": "adam", "optimizer.eps": 1e-12}))
    (tmp_path / "job.toml").write_text(dump_job(spec))
    assert load_job(tmp_path / "job.toml") == spec


def test_relative_factory_paths_resolve_from_the_job_files_folder(tmp_path):
    folder = tmp_path / "jobs"
    assert resolve_factory("model.py:build", folder) == f"{folder / 'model.py'}:build"
    assert resolve_factory("../m/model.py:build", folder) == f"{tmp_path / 'm' / 'model.py'}:build"
    assert resolve_factory("/abs/model.py:build", folder) == "/abs/model.py:build"
    assert resolve_factory("package.module:build", folder) == "package.module:build"
    assert resolve_factory("", folder) == ""
    example = load_job(REPO / "examples" / "custom.toml")
    assert example.model.factory == f"{REPO / 'examples' / 'custom_model.py'}:build"


def test_the_examples_pass_every_check():
    from disttrain.train.builders import check_job

    for name in ("digits.toml", "custom.toml", "regression.toml"):
        check_job(load_job(REPO / "examples" / name), name)


def test_the_loss_defaults_to_the_tasks():
    assert spec_from_dict(small_job()).loss() == "cross_entropy"
    regression = small_job(**{"job.task": "regression"})
    assert spec_from_dict(regression).loss() == "mse"
    assert set(DEFAULT_LOSS) == set(CHOICES["job", "task"]) == set(LOSS_TASKS.values())
    for loss, task in LOSS_TASKS.items():
        assert spec_from_dict(small_job(**{"job.task": task, "job.loss": loss})).loss() == loss


@pytest.mark.parametrize("task, loss, needle", [
    ("classification", "hinge", "'hinge' is not one of 'cross_entropy', 'nll', 'mse'"),
    ("classification", "MSE", "is not one of"),
    ("regression", "cross_entropy", "'cross_entropy' is a classification loss, but [job] "
                                    "task is 'regression'; for regression choose 'mse'"),
    ("regression", "nll", "is a classification loss"),
    ("classification", "mse", "'mse' is a regression loss, but [job] task is "
                              "'classification'; for classification choose 'cross_entropy' "
                              "or 'nll', or set task = 'regression'"),
    ("classification", "huber", "is a regression loss"),
    ("regression", "losses.py:", "custom losses need 'module.path:function'"),
    ("regression", ":fn", "custom losses need"),
    ("regression", "losses.py:my-loss", "custom losses need"),
    ("regression", "a\x01.py:fn", "control character"),
])
def test_loss_must_be_known_and_fit_the_task(task, loss, needle):
    job = small_job(**{"job.task": task, "job.loss": loss})
    with pytest.raises(SpecError) as error:
        spec_from_dict(job, source="job.toml")
    assert str(error.value).startswith("job.toml: [job] loss: "), error.value
    assert needle in str(error.value)


def test_a_regression_job_needs_float_targets():
    with pytest.raises(SpecError, match=r"job.toml: \[data\] name: 'digits' holds class "):
        spec_from_dict(small_job(**{"job.task": "regression", "data.name": "digits"}),
                       source="job.toml")
    with pytest.raises(SpecError, match=r"\[job\] task: 'ranking' is not one of"):
        spec_from_dict(small_job(**{"job.task": "ranking"}), source="job.toml")


def test_a_custom_loss_file_resolves_from_the_job_files_folder(tmp_path):
    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "job.toml"
    job.write_text('[job]\ntask = "regression"\nloss = "losses.py:smooth"\n'
                   '[data]\nname = "synthetic"\n')
    assert load_job(job).job.loss == f"{tmp_path / 'jobs' / 'losses.py'}:smooth"
    job.write_text('[job]\nloss = "mypackage.losses:smooth"\n')
    assert load_job(job).job.loss == "mypackage.losses:smooth"
    job.write_text('[job]\nloss = "nll"\n')
    assert load_job(job).job.loss == "nll"


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_hierarchical_takes_true_false_or_auto_on_the_ring(value):
    spec = spec_from_dict(small_job(**{"distributed.backend": "ring",
                                       "distributed.hierarchical": value}))
    assert spec.distributed.hierarchical == value


@pytest.mark.parametrize("value", ["yes", "Auto", 1, 0.5])
def test_hierarchical_refuses_anything_else_in_one_line(value):
    job = small_job(**{"distributed.backend": "ring", "distributed.hierarchical": value})
    with pytest.raises(SpecError, match=r'^job.toml: \[distributed\] hierarchical: expected '
                                        r'true, false or "auto", got '):
        spec_from_dict(job, source="job.toml")


def test_hierarchical_is_the_rings_alone():
    job = small_job(**{"distributed.backend": "coordinator", "distributed.hierarchical": True})
    with pytest.raises(SpecError, match=r"\[distributed\] hierarchical: only backend 'ring' "
                                        r"has a hierarchical mode, and the backend is "
                                        r"'coordinator'.*set backend = 'ring' or drop"):
        spec_from_dict(job, source="job.toml")
