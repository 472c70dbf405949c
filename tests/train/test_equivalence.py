"""DESIGN.md's promise: the same job on any number of workers reaches the same parameters.

Each backend trains the same float64 job (MLP, SGD with momentum, 30 steps, shuffling
on, a global batch of 24) on 1, 2, 3 and 5 real workers (5 does not divide 24: ranks
hold 5, 5, 5, 5 and 4 samples); the final parameters must equal a one-process run's
within 1e-9. The one-process run itself must equal PyTorch's on the same data and
initial weights, and two runs of one job must be bit-identical.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from .helpers import final_params, run_local, run_on_ray, run_under_mpiexec, small_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    run_local(small_job(), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def reference(reference_dir):
    return final_params(reference_dir)


def logged_losses(run_dir) -> list:
    """(step, loss) of every "train" record: the loss averaged over the global batch."""
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def assert_losses_close(run_dir, reference_dir) -> None:
    got, want = logged_losses(run_dir), logged_losses(reference_dir)
    assert [s for s, _ in got] == [s for s, _ in want] and want
    for (step, a), (_, b) in zip(got, want):
        assert a == pytest.approx(b, rel=1e-12), f"the loss logged at step {step}"


def assert_params_close(got: dict, want: dict, atol: float) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol, err_msg=name)


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["coordinator", "ring"])
@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_ray_backends_match_one_process(ray_session, tmp_path, reference, reference_dir,
                                        backend, workers):
    job = small_job(**{"distributed.backend": backend, "distributed.workers": workers,
                       # five workers fit the session's 4 CPUs at half a CPU each
                       "distributed.cpus_per_worker": 0.5 if workers == 5 else 1})
    got = run_on_ray(job, tmp_path)
    assert_params_close(got, reference, atol=1e-9)
    assert_losses_close(tmp_path, reference_dir)  # each rank's loss weighed by its share
    # and training moved the parameters: an untrained run would not pass a looser check
    assert max(np.abs(got[k] - v).max() for k, v in run_local(
        small_job(**{"job.max_steps": 1}), tmp_path / "one-step").items()) > 1e-3


@pytest.mark.ray
@pytest.mark.parametrize("workers", [3, 4])
def test_hierarchical_ring_matches_one_process(ray_session, tmp_path, reference, workers):
    """On the session's one node the hierarchical ring is shared memory plus the control
    ring; across two nodes (leaders' ring too) see tests/launch/test_hosts.py."""
    job = small_job(**{"distributed.backend": "ring", "distributed.hierarchical": True,
                       "distributed.workers": workers})
    assert_params_close(run_on_ray(job, tmp_path), reference, atol=1e-9)


@pytest.mark.mpi
@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_mpi_backend_matches_one_process(tmp_path, reference, reference_dir, workers):
    job = small_job(**{"distributed.backend": "mpi", "distributed.workers": workers})
    assert_params_close(run_under_mpiexec(job, tmp_path), reference, atol=1e-9)
    assert_losses_close(tmp_path, reference_dir)


def test_same_job_twice_is_bit_identical(tmp_path, reference):
    again = run_local(small_job(), tmp_path)
    for name in reference:
        assert np.array_equal(again[name], reference[name]), name


@pytest.mark.ray
def test_two_ray_runs_are_bit_identical(ray_session, tmp_path):
    job = small_job(**{"distributed.backend": "coordinator", "distributed.workers": 2})
    first = run_on_ray(job, tmp_path / "a")
    second = run_on_ray(job, tmp_path / "b")
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_one_process_run_equals_pytorch(tmp_path):
    """Same initial weights, same batches, torch.optim.SGD: the same parameters."""
    torch = pytest.importorskip("torch")
    from disttrain.distributed import LocalCommunicator
    from disttrain.train import Trainer, spec_from_dict

    spec = spec_from_dict(small_job())
    trainer = Trainer(spec, LocalCommunicator())
    model, opt, batches = torch_twin(torch, spec, trainer)
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                          torch.from_numpy(y)).backward()
        opt.step()
    trainer.run()
    assert_same_as_torch(trainer, model)


def torch_twin(torch, spec, trainer):
    """torch's copy of the trainer's tanh MLP (its very weights), SGD with the job's
    lr and momentum, and the batches the trainer will take, in order."""
    sizes = spec.model.sizes
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=torch.float64))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    model.load_state_dict({k: torch.from_numpy(v.data.copy())
                           for k, v in trainer.model.state_dict().items()})
    opt = torch.optim.SGD(model.parameters(), lr=spec.optimizer.lr,
                          momentum=spec.optimizer.momentum)
    batches = []
    for epoch in range(spec.job.epochs):
        trainer.loader.set_epoch(epoch)
        batches += list(trainer.loader)
    return model, opt, batches[:spec.job.max_steps]


def assert_same_as_torch(trainer, model) -> None:
    ours = trainer.model.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(ours[name].data, value.numpy(), rtol=0, atol=1e-12,
                                   err_msg=name)


@pytest.mark.ray
def test_timeline_shows_compute_and_each_all_reduce_per_rank(ray_session, tmp_path):
    import json

    run_on_ray(small_job(**{"distributed.backend": "coordinator", "distributed.workers": 2}),
               tmp_path)
    events = json.loads((tmp_path / "timeline.json").read_text())["traceEvents"]
    for rank in ("rank 0", "rank 1"):
        mine = [e for e in events if e["pid"] == rank]
        names = {(e["tid"], e["name"].split(" (")[0]) for e in mine}
        assert {("compute", "backward"), ("compute", "optimizer.step"),
                ("communication", "wait for all-reduce")} <= names
        buckets = [e for e in mine if e["name"].startswith("all-reduce bucket 0")]
        assert len(buckets) == len([e for e in mine if e["name"] == "backward"]) > 0
        assert all(e["dur"] >= 0 and e["ph"] == "X" for e in mine)


# -- regression (issue 9): the same promise with float targets and the task's metrics ----

def regression_job(**overrides) -> dict:
    """small_job as regression: two float target columns, MSE, an eval every epoch."""
    return small_job(**{"job.task": "regression", "job.eval_every_epoch": True,
                        "model.sizes": [16, 32, 32, 2], "data.n_targets": 2,
                        "optimizer.lr": 0.01, **overrides})


def eval_records(run_dir) -> list:
    import json

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "eval"]


@pytest.fixture(scope="module")
def regression_reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("regression-reference")
    return run_local(regression_job(), run_dir), eval_records(run_dir)


def assert_evals_close(got: list, want: list) -> None:
    """The same evaluations, all-reduced over any number of ranks: within float rounding."""
    assert [r["step"] for r in got] == [r["step"] for r in want] and want
    for a, b in zip(got, want):
        assert a.keys() == b.keys() == {"kind", "time", "step", "epoch", "val_loss", "val_mse",
                                        "val_mae"}
        for key in ("val_loss", "val_mse", "val_mae"):
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=0), key


@pytest.mark.ray
def test_a_regression_job_on_two_ray_workers_matches_one_process(ray_session, tmp_path,
                                                                  regression_reference):
    params, evals = regression_reference
    job = regression_job(**{"distributed.backend": "coordinator", "distributed.workers": 2})
    assert_params_close(run_on_ray(job, tmp_path), params, atol=1e-9)
    assert_evals_close(eval_records(tmp_path), evals)
    untrained = run_local(regression_job(**{"job.max_steps": 1}), tmp_path / "one-step")
    assert max(np.abs(params[k] - v).max() for k, v in untrained.items()) > 1e-3


@pytest.mark.mpi
@pytest.mark.parametrize("workers", [2, 3])
def test_a_regression_job_under_mpiexec_matches_one_process(tmp_path, regression_reference,
                                                            workers):
    params, evals = regression_reference
    job = regression_job(**{"distributed.backend": "mpi", "distributed.workers": workers})
    assert_params_close(run_under_mpiexec(job, tmp_path), params, atol=1e-9)
    assert_evals_close(eval_records(tmp_path), evals)


@pytest.mark.parametrize("loss, torch_loss", [
    ("mse", "mse_loss"), ("l1", "l1_loss"), ("huber", "huber_loss")])
def test_a_one_process_regression_run_equals_pytorch(loss, torch_loss):
    """Same initial weights, same batches, torch's loss and SGD: the same parameters."""
    torch = pytest.importorskip("torch")
    from disttrain.distributed import LocalCommunicator
    from disttrain.train import Trainer, spec_from_dict

    spec = spec_from_dict(regression_job(**{"job.loss": loss}))
    trainer = Trainer(spec, LocalCommunicator())
    assert spec.model.sizes == [16, 32, 32, 2]
    model, opt, batches = torch_twin(torch, spec, trainer)
    for x, y in batches:
        assert y.shape == (len(x), 2) and y.dtype == np.float64
        opt.zero_grad()
        getattr(torch.nn.functional, torch_loss)(model(torch.from_numpy(x)),
                                                 torch.from_numpy(y)).backward()
        opt.step()
    trainer.run()
    assert_same_as_torch(trainer, model)
