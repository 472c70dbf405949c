"""[optimizer] name picks any of disttrain's optimizers with torch's hyperparameters.

Each job file's optimizer is compared with the torch optimizer built from the same keys:
the param group (every hyperparameter, the defaults of keys left out included) must be
torch's. A job then trains with each, locally, and the sharded optimizer equals the plain
one on Ray for the two added last.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disttrain import nn
from disttrain.train.builders import build_optimizer
from disttrain.train.spec import SpecError, spec_from_dict

from .helpers import final_params, run_local, small_job
from .test_sharded import assert_equivalent

TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
         "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad,
         "adamax": torch.optim.Adamax, "nadam": torch.optim.NAdam, "radam": torch.optim.RAdam}

# (job keys, the torch keyword arguments they mean)
CASES = {
    "sgd": ({"lr": 0.05, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.9}),
    "adam": ({"lr": 0.003}, {"lr": 0.003}),
    "adamw-eps": ({"lr": 0.003, "eps": 1e-6, "weight_decay": 0.05},
                  {"lr": 0.003, "eps": 1e-6, "weight_decay": 0.05}),
    "rmsprop": ({"lr": 0.01}, {"lr": 0.01}),
    "rmsprop-all": ({"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True,
                     "weight_decay": 1e-3},
                    {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True,
                     "weight_decay": 1e-3}),
    "adagrad": ({"lr": 0.01}, {"lr": 0.01}),  # eps left out: Adagrad's own 1e-10
    "adagrad-all": ({"lr": 0.01, "lr_decay": 0.01, "initial_accumulator_value": 0.1,
                     "eps": 1e-8, "weight_decay": 1e-3},
                    {"lr": 0.01, "lr_decay": 0.01, "initial_accumulator_value": 0.1,
                     "eps": 1e-8, "weight_decay": 1e-3}),
    "adamax": ({"lr": 0.002}, {"lr": 0.002}),
    "adamax-all": ({"lr": 0.002, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 1e-3},
                   {"lr": 0.002, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 1e-3}),
    "nadam": ({"lr": 0.002}, {"lr": 0.002}),
    "nadam-all": ({"lr": 0.002, "momentum_decay": 0.01, "decoupled_weight_decay": True,
                   "weight_decay": 0.01, "eps": 1e-6},
                  {"lr": 0.002, "momentum_decay": 0.01, "decoupled_weight_decay": True,
                   "weight_decay": 0.01, "eps": 1e-6}),
    "radam": ({"lr": 0.003}, {"lr": 0.003}),
    "radam-all": ({"lr": 0.003, "decoupled_weight_decay": True, "weight_decay": 0.01},
                  {"lr": 0.003, "decoupled_weight_decay": True, "weight_decay": 0.01}),
}


def _spec(name: str, keys: dict):
    job = small_job()
    job["optimizer"] = {"name": name, **keys}
    return spec_from_dict(job)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_job_files_optimizer_is_torchs(case):
    name = case.split("-")[0]
    keys, torch_kwargs = CASES[case]
    ours = build_optimizer(_spec(name, keys), nn.Linear(3, 2).parameters())
    theirs = TORCH[name](torch.nn.Linear(3, 2).parameters(), **torch_kwargs)
    assert type(ours).__name__ == type(theirs).__name__
    group = {k: v for k, v in ours.param_groups[0].items() if k != "params"}
    want = {k: v for k, v in theirs.param_groups[0].items() if k != "params"}
    assert group == want


@pytest.mark.parametrize("key, value", [("alpha", -0.5), ("lr_decay", -1.0),
                                        ("initial_accumulator_value", -0.1), ("eps", -1e-8),
                                        ("momentum_decay", -0.1)])
def test_negative_values_name_their_key(key, value):
    name = {"alpha": "rmsprop", "eps": "rmsprop", "momentum_decay": "nadam"}.get(key, "adagrad")
    with pytest.raises(SpecError, match=rf"\[optimizer\] {key}"):
        _spec(name, {key: value})


def test_an_unknown_optimizer_lists_the_names():
    with pytest.raises(SpecError, match="rmsprop.*adagrad|adagrad.*rmsprop"):
        _spec("lbfgs", {})


@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "adamax", "nadam", "radam"])
def test_a_job_trains_with_it(tmp_path, name):
    job = small_job(**{"optimizer.name": name, "optimizer.lr": 0.01})
    trained = run_local(job, tmp_path / name)
    untrained = run_local(small_job(**{"optimizer.name": name, "optimizer.lr": 0.01,
                                       "job.max_steps": 1}), tmp_path / "one")
    assert max(np.abs(trained[k] - untrained[k]).max() for k in trained) > 1e-3
    assert all(np.isfinite(v).all() for v in final_params(tmp_path / name).values())


@pytest.mark.ray
@pytest.mark.parametrize("name", ["rmsprop", "adagrad", "nadam", "radam"])
def test_sharded_equals_unsharded_for_it(ray_session, tmp_path, name, monkeypatch):
    from . import test_sharded
    monkeypatch.setitem(test_sharded.OPTIMIZERS, name, {"optimizer.name": name,
                                                        "optimizer.lr": 0.01})
    assert_equivalent(tmp_path, name, "coordinator", 3, state_on_first_grad=name != "adagrad")
