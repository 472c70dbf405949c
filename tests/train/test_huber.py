"""[job] huber_delta: the job's Huber loss is torch's huber_loss with that delta, in value,
gradient and a whole training trajectory; a delta no loss would read is refused."""

from __future__ import annotations

import numpy as np
import pytest

import disttrain
from disttrain.train.builders import build_loss
from disttrain.train.spec import SpecError, spec_from_dict
from tests.train.test_equivalence import assert_same_as_torch, regression_job, torch_twin

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("delta", [0.25, 1.0, 3.0])
def test_the_jobs_loss_is_torchs_huber_loss_with_its_delta(delta):
    rng = np.random.default_rng(0)
    output, target = rng.normal(scale=2, size=(32, 3)), rng.normal(size=(32, 3))
    output[0, :2] = target[0, :2] + [delta, -delta]  # on the boundary, both ways
    loss_fn = build_loss(spec_from_dict(regression_job(**{"job.loss": "huber",
                                                          "job.huber_delta": delta})))
    ours = disttrain.tensor(output, requires_grad=True)
    loss = loss_fn(ours, disttrain.tensor(target))
    loss.backward()
    theirs = torch.tensor(output, requires_grad=True)
    expected = torch.nn.functional.huber_loss(theirs, torch.tensor(target), delta=delta)
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-14)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-14, atol=0)


def test_a_regression_job_with_its_own_delta_trains_as_pytorch():
    """Same weights, same batches, torch's huber_loss(delta=0.25) and SGD with momentum:
    the same parameters. torch with delta 1.0 ends elsewhere, so a delta ignored fails."""
    from disttrain.distributed import LocalCommunicator
    from disttrain.train import Trainer

    spec = spec_from_dict(regression_job(**{"job.loss": "huber", "job.huber_delta": 0.25}))
    trainer = Trainer(spec, LocalCommunicator())
    finals = {}
    for delta in (0.25, 1.0):
        model, opt, batches = torch_twin(torch, spec, trainer)
        for x, y in batches:
            opt.zero_grad()
            torch.nn.functional.huber_loss(model(torch.from_numpy(x)), torch.from_numpy(y),
                                           delta=delta).backward()
            opt.step()
        finals[delta] = model
    trainer.run()
    assert_same_as_torch(trainer, finals[0.25])
    other = {k: v.numpy() for k, v in finals[1.0].state_dict().items()}
    assert max(np.abs(trainer.model.state_dict()[k].data - v).max()
               for k, v in other.items()) > 1e-4


@pytest.mark.parametrize("changes, needle", [
    ({"job.huber_delta": 2.0}, "[job] huber_delta: only loss = 'huber' uses it, but the loss "
                               "is 'mse'; set loss = 'huber', or drop huber_delta"),
    ({"job.loss": "l1", "job.huber_delta": 0.5}, "but the loss is 'l1'"),
    ({"job.loss": "huber", "job.huber_delta": 0.0}, "[job] huber_delta: must be greater than 0"),
    ({"job.loss": "huber", "job.huber_delta": -1.0}, "[job] huber_delta: must be greater"),
    ({"job.loss": "huber", "job.huber_delta": "1"}, "[job] huber_delta: expected a number"),
])
def test_a_delta_that_would_be_ignored_or_is_not_positive_is_refused(changes, needle):
    with pytest.raises(SpecError) as error:
        spec_from_dict(regression_job(**changes), source="job.toml")
    assert str(error.value).startswith("job.toml: ") and needle in str(error.value)


def test_huber_with_the_default_delta_is_as_before():
    """A job file written before the key (no huber_delta) trains with torch's delta 1.0."""
    spec = spec_from_dict(regression_job(**{"job.loss": "huber"}))
    assert spec.job.huber_delta == 1.0
    x, y = disttrain.tensor(np.array([[0.0], [3.0]])), disttrain.tensor(np.zeros((2, 1)))
    assert build_loss(spec)(x, y).item() == pytest.approx((0 + 1.0 * (3 - 0.5)) / 2)
