"""[scheduler] name picks torch's per-epoch schedulers; the lrs are torch's, epoch by epoch.

Each job file's scheduler is stepped beside the torch scheduler built from the same keys
over the same optimizer settings, for more epochs than its horizon: every lr must be
torch's exactly. A local job then logs, at each epoch's last step, the lr that epoch
ran with.
"""

from __future__ import annotations

import json

import pytest
import torch

from disttrain import nn
from disttrain.train.builders import build_optimizer, build_scheduler
from disttrain.train.spec import SpecError, spec_from_dict

from .helpers import run_local, small_job

EPOCHS = 12
# (job keys, torch's scheduler built from the same keys)
CASES = {
    "step": ({"step_size": 3, "gamma": 0.5},
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)),
    "multistep": ({"milestones": [2, 5, 5, 9], "gamma": 0.3},
                  lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5, 9], gamma=0.3)),
    "exponential": ({"gamma": 0.8},
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.8)),
    "cosine": ({"t_max": 7, "eta_min": 0.001},
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=0.001)),
    "linear": ({}, lambda o: torch.optim.lr_scheduler.LinearLR(o)),  # torch's defaults
    "linear-decay": ({"start_factor": 1.0, "end_factor": 0.1, "total_iters": 8},
                     lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.1, 8)),
}


def _spec(name: str, keys: dict, **job):
    raw = small_job(**job)
    raw["scheduler"] = {"name": name, **keys}
    return spec_from_dict(raw)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_job_files_schedule_is_torchs(case):
    keys, make_torch = CASES[case]
    spec = _spec(case.split("-")[0], keys)
    optimizer = build_optimizer(spec, nn.Linear(3, 2).parameters())
    ours = build_scheduler(spec, optimizer)
    theirs_opt = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=spec.optimizer.lr,
                                 momentum=spec.optimizer.momentum)
    theirs = make_torch(theirs_opt)
    for epoch in range(EPOCHS):
        assert ours.get_last_lr() == theirs.get_last_lr(), f"epoch {epoch}"
        optimizer.step()
        theirs_opt.step()
        ours.step()
        theirs.step()


def test_a_job_runs_each_epoch_at_its_scheduled_lr(tmp_path):
    # 240 training samples in batches of 24: 10 steps an epoch, logged at each epoch's end
    keys = {"start_factor": 0.25, "total_iters": 2}
    run_local({**small_job(), "scheduler": {"name": "linear", **keys}}, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in records if r["kind"] == "train"]
    opt = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=2)
    want = []
    for _ in range(3):
        want.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert logged == pytest.approx(want, rel=1e-15) and want[0] != want[2]


@pytest.mark.parametrize("keys, key", [
    ({"name": "multistep"}, "milestones"),
    ({"name": "multistep", "milestones": [0, 3]}, "milestones"),
    ({"name": "linear", "start_factor": 0.0}, "start_factor"),
    ({"name": "linear", "end_factor": 1.5}, "end_factor"),
    ({"name": "linear", "total_iters": 0}, "total_iters"),
    ({"name": "warmup"}, "name"),
])
def test_bad_schedules_name_their_key(keys, key):
    raw = small_job()
    raw["scheduler"] = keys
    with pytest.raises(SpecError, match=rf"\[scheduler\] {key}"):
        spec_from_dict(raw)
