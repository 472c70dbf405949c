"""[job] task and loss (issue 9) inside the Trainer: cross_entropy and nll (the model
ending in log_softmax) train alike, a custom loss is what the step differentiates, and
the evaluation reports the task's metrics."""

from __future__ import annotations

import numpy as np
import pytest

from disttrain import nn
from disttrain.distributed import LocalCommunicator
from disttrain.train import Trainer, spec_from_dict
from disttrain.train.builders import check_job
from disttrain.train.spec import load_job

from .helpers import small_job

CUSTOM = '''
import numpy as np

import disttrain.nn.functional as F
from disttrain import nn


def log_softmax_mlp(spec):
    """The built-in MLP of small_job, written out, ending in LogSoftmax as NLLLoss expects."""
    sizes, dtype = spec.model.sizes, np.dtype(spec.job.dtype)  # initialised in the job's dtype
    return nn.Sequential(nn.Linear(sizes[0], sizes[1], dtype=dtype), nn.Tanh(),
                         nn.Linear(sizes[1], sizes[2], dtype=dtype), nn.Tanh(),
                         nn.Linear(sizes[2], sizes[3], dtype=dtype), nn.LogSoftmax(dim=1))


def my_cross_entropy(output, target):
    return F.nll_loss(F.log_softmax(output, dim=1), target)


def twice_mse(output, target):
    return 2 * ((output - target) ** 2).mean()
'''


def trained(job: dict):
    """A one-process Trainer of job after its run, and the run's summary."""
    trainer = Trainer(spec_from_dict(job), LocalCommunicator())
    return trainer, trainer.run()


def params(trainer) -> dict:
    return {k: v.data for k, v in trainer.model.state_dict().items()}


def assert_same(a: dict, b: dict, atol=1e-12) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def cross_entropy_run():
    return trained(small_job(**{"job.loss": "cross_entropy"}))


def test_nll_on_the_built_in_model_trains_as_cross_entropy(cross_entropy_run):
    """With loss = "nll" the built-in MLP ends in LogSoftmax(dim=1), as a torch user's
    model for NLLLoss does: log_softmax + nll is cross_entropy, step for step."""
    reference, summary = cross_entropy_run
    trainer, nll_summary = trained(small_job(**{"job.loss": "nll"}))
    assert isinstance(trainer.model[-1], nn.LogSoftmax)
    assert not isinstance(reference.model[-1], nn.LogSoftmax)
    assert_same(params(trainer), params(reference))
    assert nll_summary["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-12)
    assert nll_summary["val_accuracy"] == summary["val_accuracy"] > 0.5


def test_a_custom_model_ending_in_log_softmax_with_nll(tmp_path, cross_entropy_run):
    (tmp_path / "custom.py").write_text(CUSTOM)
    job = small_job(**{"job.loss": "nll", "model.kind": "custom",
                       "model.factory": str(tmp_path / "custom.py") + ":log_softmax_mlp"})
    check_job(spec_from_dict(job))
    trainer, _ = trained(job)
    reference, _ = cross_entropy_run
    assert [type(m) for m in trainer.model][-1] is nn.LogSoftmax
    assert_same(params(trainer), params(reference))


def test_a_custom_loss_is_what_the_step_differentiates(tmp_path, cross_entropy_run):
    """F.nll_loss(F.log_softmax(...)) written by the user trains as cross_entropy does."""
    (tmp_path / "custom.py").write_text(CUSTOM)
    (tmp_path / "job.toml").write_text(
        '[job]\nloss = "custom.py:my_cross_entropy"\n')  # resolved from the job's folder
    loss = load_job(tmp_path / "job.toml").job.loss
    trainer, summary = trained(small_job(**{"job.loss": loss}))
    reference, reference_summary = cross_entropy_run
    assert_same(params(trainer), params(reference))
    assert summary["val_loss"] == pytest.approx(reference_summary["val_loss"], rel=1e-9)


def test_a_custom_regression_loss_scales_the_gradient_as_written(tmp_path):
    """twice_mse with half the learning rate is mse, step for step (plain SGD)."""
    (tmp_path / "custom.py").write_text(CUSTOM)
    base = {"job.task": "regression", "model.sizes": [16, 32, 32, 1], "optimizer.momentum": 0.0}
    mse, mse_summary = trained(small_job(**base, **{"optimizer.lr": 0.02}))
    twice, summary = trained(small_job(**base, **{
        "optimizer.lr": 0.01, "job.loss": str(tmp_path / "custom.py") + ":twice_mse"}))
    assert_same(params(twice), params(mse), atol=1e-12)
    assert summary["val_loss"] == pytest.approx(2 * mse_summary["val_loss"], rel=1e-9)
    assert summary["val_mse"] == pytest.approx(mse_summary["val_mse"], rel=1e-9)


def test_regression_metrics_are_the_errors_of_the_validation_set():
    job = small_job(**{"job.task": "regression", "job.loss": "huber",
                       "model.sizes": [16, 32, 32, 3], "data.n_targets": 3})
    trainer = Trainer(spec_from_dict(job), LocalCommunicator())
    trainer.run()
    x, y = trainer.val_set.arrays
    assert y.shape == (len(x), 3) and y.dtype == np.float64
    trainer.model.eval()
    from disttrain.autograd.tensor import Tensor

    error = trainer.model(Tensor._make(x)).data - y
    metrics = trainer.evaluate()
    assert metrics.keys() == {"val_loss", "val_mse", "val_mae"}
    assert metrics["val_mse"] == pytest.approx(np.mean(error ** 2), rel=1e-12)
    assert metrics["val_mae"] == pytest.approx(np.mean(np.abs(error)), rel=1e-12)
    huber = np.where(np.abs(error) < 1, 0.5 * error ** 2, np.abs(error) - 0.5)
    assert metrics["val_loss"] == pytest.approx(np.mean(huber), rel=1e-12)
