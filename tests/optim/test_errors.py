"""Every error text is torch's: the same situation raises the same type and message."""

import warnings

import numpy as np
import pytest
import torch
from torch.optim.optimizer import required as torch_required

import disttrain
import disttrain.optim as optim
from disttrain.optim.lr_scheduler import LambdaLR, StepLR
from disttrain.optim.optimizer import required


def leaf(lib, dtype=None):
    if lib is torch:
        return torch.zeros(2, dtype=dtype or torch.float32, requires_grad=True)
    return disttrain.zeros(2, dtype=dtype or np.float32, requires_grad=True)


def SGD(lib, *a, **k):  # noqa: N802 - stands for the class
    return (torch.optim.SGD if lib is torch else optim.SGD)(*a, **k)


def Adam(lib, *a, **k):  # noqa: N802
    return (torch.optim.Adam if lib is torch else optim.Adam)(*a, **k)


def AdamW(lib, *a, **k):  # noqa: N802
    return (torch.optim.AdamW if lib is torch else optim.AdamW)(*a, **k)


def _add_group(lib, group):
    opt = SGD(lib, [leaf(lib)])
    return opt.add_param_group(group(lib, opt))


def _load(lib, change):
    opt = SGD(lib, [{"params": [leaf(lib)]}, {"params": [leaf(lib), leaf(lib)]}])
    sd = opt.state_dict()
    change(sd)
    opt.load_state_dict(sd)


def _base(lib):
    base = torch.optim.Optimizer if lib is torch else optim.Optimizer
    return base([leaf(lib)], {"lr": torch_required if lib is torch else required})


def _scheduler(lib, make):
    opt = SGD(lib, [{"params": [leaf(lib)]}, {"params": [leaf(lib)]}], lr=0.1)
    sched = torch.optim.lr_scheduler if lib is torch else optim.lr_scheduler
    return make(sched, opt)


CASES = {
    "bare float32 tensor": lambda lib: SGD(lib, leaf(lib)),
    "bare float64 tensor": lambda lib: SGD(lib, leaf(lib, lib.float64)),
    "empty list": lambda lib: SGD(lib, []),
    "set in a group": lambda lib: SGD(lib, [{"params": {leaf(lib)}}]),
    "set to add_param_group": lambda lib: _add_group(lib, lambda lib, o: {"params": {leaf(lib)}}),
    "non-tensor": lambda lib: SGD(lib, [leaf(lib), 1.0]),
    "non-tensor added": lambda lib: _add_group(lib, lambda lib, o: {"params": [leaf(lib), 3]}),
    "non-leaf": lambda lib: SGD(lib, [leaf(lib) * 2]),
    "param in two groups": lambda lib: (lambda p: SGD(lib, [{"params": [p]}, {"params": [p]}]))(
        leaf(lib)),
    "param already in the optimizer": lambda lib: _add_group(
        lib, lambda lib, o: {"params": o.param_groups[0]["params"]}),
    "group not a dict": lambda lib: SGD(lib, [{"params": [leaf(lib)]}, 3]),
    "add a list": lambda lib: _add_group(lib, lambda lib, o: [leaf(lib)]),
    "required default missing": _base,
    "names on some params only": lambda lib: SGD(lib, [("a", leaf(lib)), leaf(lib)]),
    "SGD lr": lambda lib: SGD(lib, [leaf(lib)], lr=-0.5),
    "SGD momentum": lambda lib: SGD(lib, [leaf(lib)], momentum=-1),
    "SGD weight_decay": lambda lib: SGD(lib, [leaf(lib)], weight_decay=-1e-3),
    "SGD nesterov without momentum": lambda lib: SGD(lib, [leaf(lib)], nesterov=True),
    "SGD nesterov with dampening": lambda lib: SGD(lib, [leaf(lib)], momentum=0.9,
                                                   dampening=0.1, nesterov=True),
    "Adam lr": lambda lib: Adam(lib, [leaf(lib)], lr=-1e-3),
    "Adam eps": lambda lib: Adam(lib, [leaf(lib)], eps=-1e-8),
    "Adam beta0": lambda lib: Adam(lib, [leaf(lib)], betas=(1.0, 0.999)),
    "Adam beta1": lambda lib: Adam(lib, [leaf(lib)], betas=(0.9, -0.1)),
    "Adam betas not floats": lambda lib: Adam(lib, [leaf(lib)], betas=(0, 0.5)),
    "Adam weight_decay": lambda lib: Adam(lib, [leaf(lib)], weight_decay=-1),
    "AdamW weight_decay": lambda lib: AdamW(lib, [leaf(lib)], weight_decay=-0.01),
    "load: group count": lambda lib: _load(lib, lambda sd: sd["param_groups"].pop()),
    "load: group size": lambda lib: _load(lib, lambda sd: sd["param_groups"][1]["params"].pop()),
    "scheduler: not an optimizer": lambda lib: (
        torch.optim.lr_scheduler if lib is torch else optim.lr_scheduler).StepLR(object(), 3),
    "scheduler: lambdas count": lambda lib: _scheduler(
        lib, lambda s, o: s.LambdaLR(o, [lambda e: 1.0])),
    "scheduler: resume without initial_lr": lambda lib: _scheduler(
        lib, lambda s, o: s.StepLR(o, 3, last_epoch=4)),
}


@pytest.mark.parametrize("name", CASES)
def test_error_matches_torch(name):
    with pytest.raises(Exception) as theirs:
        CASES[name](torch)
    with pytest.raises(Exception) as mine:
        CASES[name](disttrain)
    assert type(mine.value) is type(theirs.value)
    # torch names its tensor types torch.FloatTensor...; ours are disttrain.FloatTensor...
    assert str(mine.value) == str(theirs.value).replace("torch.", "disttrain.")


def test_bare_tensor_message_names_our_type():
    with pytest.raises(TypeError, match="but got disttrain.FloatTensor$"):
        optim.SGD(leaf(disttrain))


def test_a_bare_set_is_accepted_as_torch_does():
    # torch turns params into a list before looking at it; only a set inside a group raises
    assert len(optim.SGD({leaf(disttrain)}).param_groups) == 1
    assert len(torch.optim.SGD({leaf(torch)}).param_groups) == 1


def test_duplicate_parameters_warn_with_torchs_text():
    texts = []
    for lib in (torch, disttrain):
        p = leaf(lib)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            SGD(lib, [p, p])
        texts.append([str(w.message) for w in caught if "duplicate" in str(w.message)])
    assert texts[0] == texts[1] and len(texts[0]) == 1


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD([p], differentiable=True),
    lambda p: optim.SGD([p], fused=True),
    lambda p: optim.Adam([p], capturable=True),
])
def test_options_we_cannot_honour_are_refused(make):
    with pytest.raises(NotImplementedError, match="not supported"):
        make(leaf(disttrain))


def test_schedulers_warn_when_stepped_before_the_optimizer():
    for lib, module in ((torch, torch.optim.lr_scheduler), (disttrain, optim.lr_scheduler)):
        sched = module.StepLR(SGD(lib, [leaf(lib)], lr=0.1), 3)
        with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
            sched.step()
    assert StepLR and LambdaLR  # the names are importable from the module too
