"""[optimizer] max_grad_norm: torch's clip_grad_norm_ of the averaged gradients, each step.

A one-process run equals PyTorch clipping with clip_grad_norm_ before every SGD step; on
Ray the clipped job on 2 workers equals the one-process run, and with the sharded
optimizer (where no rank holds the whole gradient, so the norm is agreed between ranks)
it equals the unsharded run.
"""

from __future__ import annotations

import numpy as np
import pytest

from disttrain.train.spec import SpecError, spec_from_dict

from .helpers import final_params, run_local, run_on_ray, small_job
from .test_equivalence import assert_params_close, assert_same_as_torch, torch_twin

CLIPPED = {"optimizer.max_grad_norm": 0.05, "optimizer.lr": 0.5}


def test_a_clipped_run_equals_pytorchs_clip_grad_norm(tmp_path):
    torch = pytest.importorskip("torch")
    from disttrain.distributed import LocalCommunicator
    from disttrain.train import Trainer

    spec = spec_from_dict(small_job(**CLIPPED))
    trainer = Trainer(spec, LocalCommunicator())
    model, opt, batches = torch_twin(torch, spec, trainer)
    norms = []
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                          torch.from_numpy(y)).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)))
        opt.step()
    assert sum(n > 0.05 for n in norms) >= 10  # the test sees the clipping at work
    trainer.run()
    assert_same_as_torch(trainer, model)


def test_clipping_changes_the_run(tmp_path):
    clipped = run_local(small_job(**CLIPPED), tmp_path / "clipped")
    plain = run_local(small_job(**{"optimizer.lr": 0.5}), tmp_path / "plain")
    assert max(np.abs(clipped[k] - plain[k]).max() for k in plain) > 1e-3


@pytest.mark.ray
@pytest.mark.parametrize("backend, workers, sharded", [("coordinator", 2, False),
                                                       ("ring", 3, True),
                                                       ("coordinator", 3, True)])
def test_clipped_on_ray_equals_one_process(ray_session, tmp_path, backend, workers, sharded):
    reference = run_local(small_job(**CLIPPED), tmp_path / "one")
    job = small_job(**CLIPPED, **{"distributed.backend": backend,
                                  "distributed.workers": workers,
                                  "distributed.shard_optimizer": sharded})
    got = run_on_ray(job, tmp_path / "ray")
    assert_params_close(got, reference, atol=1e-9)
    assert final_params(tmp_path / "ray").keys() == reference.keys()


def test_a_negative_max_grad_norm_names_the_key():
    with pytest.raises(SpecError, match=r"\[optimizer\] max_grad_norm"):
        spec_from_dict(small_job(**{"optimizer.max_grad_norm": -1.0}))
