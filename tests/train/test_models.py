"""The built-in models of [model] (issue 9).

kind = "cnn" is a LeNet-style stack for images of any size and channel count ([data]
shape): each one trains step for step as PyTorch trains the same network from the same
weights on the same batches, and a CNN job trains digits through the CLI on two Ray
workers. `hidden` gives the layers between the data's input and output widths, `sizes`
every width; a model that cannot fit the data is one line naming the key, from the
driver's check, before anything is built.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from disttrain.train.builders import build_model, check_job
from disttrain.train.spec import SpecError, dump_job, spec_from_dict
from tests.train.helpers import small_job

TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "gelu": "GELU",
                     "silu": "SiLU", "leaky_relu": "LeakyReLU", "elu": "ELU", "selu": "SELU",
                     "mish": "Mish", "hardswish": "Hardswish", "relu6": "ReLU6",
                     "softplus": "Softplus"}


def cnn_job(shape, n_classes=4, **model) -> dict:
    """small_job (float64, SGD with momentum, 30 steps of 24) with a CNN over synthetic
    images of shape [C, H, W]."""
    job = small_job(**{"data.n_features": int(np.prod(shape)), "data.n_classes": n_classes})
    job["model"] = {"kind": "cnn", **model}
    job["data"]["shape"] = list(shape)
    return job


def torch_cnn(torch, spec, n_outputs):
    """The CNN the job describes, built from torch.nn alone; its flattened width is found
    by running torch's layers on a blank image, not by our arithmetic."""
    m, nn, dtype = spec.model, torch.nn, torch.float64
    shape, pad = tuple(spec.data.shape), m.padding
    activation = getattr(nn, TORCH_ACTIVATIONS[m.activation])
    layers, channels = [nn.Unflatten(1, shape)], shape[0]
    for out in m.channels:
        layers += [nn.Conv2d(channels, out, m.kernel_size, padding=pad, dtype=dtype),
                   activation()]
        if m.pool > 1:
            layers.append(nn.MaxPool2d(m.pool))
        channels = out
    layers.append(nn.Flatten())
    flat = nn.Sequential(*layers)(torch.zeros(1, int(np.prod(shape)), dtype=dtype)).shape[1]
    widths = [flat, *m.hidden, n_outputs]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, dtype=dtype))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


CNNS = {
    "digits-like 1x8x8, two convs, same": ([1, 8, 8], dict(channels=[4, 6], hidden=[16])),
    "3 channels, not square, kernel 5, valid": (
        [3, 10, 9], dict(channels=[5], kernel_size=5, padding="valid", hidden=[],
                         activation="tanh")),
    "2 channels, no pooling, two hidden": (
        [2, 5, 5], dict(channels=[3, 3], pool=1, hidden=[8, 8], activation="gelu")),
    "pool 3 over an odd size": ([1, 11, 7], dict(channels=[4], pool=3, hidden=[12],
                                                 activation="sigmoid")),
    **{f"activation {name}": ([1, 6, 6], dict(channels=[3], hidden=[8], activation=name))
       for name in ("silu", "leaky_relu", "elu", "selu", "mish", "hardswish", "relu6",
                    "softplus")},
}


@pytest.mark.parametrize("shape, model", CNNS.values(), ids=CNNS.keys())
def test_a_cnn_trains_as_pytorch_trains_it(shape, model):
    """Same initial weights (ours, copied into torch's network, which must take them
    name for name and shape for shape), same batches, torch.optim.SGD with momentum."""
    torch = pytest.importorskip("torch")
    from disttrain.distributed import LocalCommunicator
    from disttrain.train import Trainer

    spec = spec_from_dict(cnn_job(shape, **model))
    trainer = Trainer(spec, LocalCommunicator())
    ours = trainer.model.state_dict()
    start = {k: v.data.copy() for k, v in ours.items()}
    theirs = torch_cnn(torch, spec, n_outputs=4)
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in start.items()})
    opt = torch.optim.SGD(theirs.parameters(), lr=spec.optimizer.lr,
                          momentum=spec.optimizer.momentum)
    batches = []
    for epoch in range(spec.job.epochs):
        trainer.loader.set_epoch(epoch)
        batches += list(trainer.loader)
    for x, y in batches[:spec.job.max_steps]:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)),
                                          torch.from_numpy(y)).backward()
        opt.step()
    trainer.run()
    ours = trainer.model.state_dict()
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours[name].data, value.numpy(), rtol=0, atol=1e-10,
                                   err_msg=name)
    assert max(np.abs(ours[k].data - v).max() for k, v in start.items()) > 1e-3  # it trained


def test_the_default_cnn_on_digits_is_lenet_shaped():
    """No [data] shape for digits: 1x8x8 images; channels [6, 16], 3x3 'same' convolutions
    with 2x2 max-pools (8 -> 4 -> 2), then 16*2*2 = 64 features into hidden [128]."""
    spec = spec_from_dict({"model": {"kind": "cnn"}})
    layers = [type(layer).__name__ for layer in build_model(spec, 64, 10)]
    assert layers == ["Unflatten", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d",
                      "Flatten", "Linear", "ReLU", "Linear"]
    shapes = {k: v.shape for k, v in build_model(spec, 64, 10).state_dict().items()}
    assert shapes == {"1.weight": (6, 1, 3, 3), "1.bias": (6,), "4.weight": (16, 6, 3, 3),
                      "4.bias": (16,), "8.weight": (128, 64), "8.bias": (128,),
                      "10.weight": (10, 128), "10.bias": (10,)}


@pytest.mark.ray
@pytest.mark.slow
def test_a_cnn_job_trains_digits_through_the_cli_on_two_ray_workers(ray_session, tmp_path):
    """examples/cnn.toml as written. Measured in one process: 98.6% validation accuracy
    (seed 0; 96.4-97.8% for seeds 1-3); two workers reach the same parameters to float32
    rounding, and 95% leaves room for that."""
    from disttrain.launch.cli import main as cli_main
    from tests.train.helpers import REPO

    run_dir = tmp_path / "run"
    assert cli_main(["train", str(REPO / "examples" / "cnn.toml"), "--run-dir", str(run_dir),
                     "--quiet"]) == 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["world_size"] == 2
    assert status["final"]["val_accuracy"] >= 0.95, status["final"]
    written = (run_dir / "job.toml").read_text()
    assert 'kind = "cnn"' in written and "channels = [6, 16]" in written


# -- hidden and sizes ---------------------------------------------------------------------

def linear_widths(spec, n_features, n_outputs) -> list:
    """(in, out) of every Linear layer of the built model."""
    return [(layer.in_features, layer.out_features) for layer in build_model(
        spec, n_features, n_outputs) if type(layer).__name__ == "Linear"]


def test_hidden_takes_the_input_and_output_widths_from_the_data():
    default = spec_from_dict({})
    assert linear_widths(default, 64, 10) == [(64, 128), (128, 10)]  # the old [64, 128, 10]
    assert linear_widths(default, 16, 4) == [(16, 128), (128, 4)]
    two = spec_from_dict({"model": {"hidden": [32, 8]}})
    assert linear_widths(two, 16, 3) == [(16, 32), (32, 8), (8, 3)]
    linear = spec_from_dict({"model": {"hidden": []}})
    assert linear_widths(linear, 16, 4) == [(16, 4)]
    # a hidden layer as wide as the input is written as it is: no reading it as the input
    assert linear_widths(spec_from_dict({"model": {"hidden": [16]}}), 16, 4) == [(16, 16),
                                                                                (16, 4)]


def test_sizes_may_leave_the_input_width_out_and_must_end_with_the_outputs():
    """Issue 9: `[model] sizes` may leave the input width out; its first entry is the input
    only when it equals the data's feature count."""
    spec = spec_from_dict({"model": {"sizes": [16, 16, 4]}})
    assert linear_widths(spec, 16, 4) == [(16, 16), (16, 4)]
    assert linear_widths(spec, 10, 4) == [(10, 16), (16, 16), (16, 4)]  # input left out
    short = spec_from_dict({"model": {"sizes": [32, 4]}})
    assert linear_widths(short, 16, 4) == [(16, 32), (32, 4)]
    assert linear_widths(spec_from_dict({"model": {"sizes": [4]}}), 16, 4) == [(16, 4)]
    with pytest.raises(SpecError, match=r"^\[model\] sizes: \[16, 16, 4\] must end with the "
                                        r"data's 3 classes \(and may start with its 16 "
                                        r"features\)$"):
        build_model(spec, 16, 3)


@pytest.mark.parametrize("model", [{"sizes": [16, 32, 4]}, {"hidden": [32]}, {}])
def test_the_written_job_reads_back_as_the_same_network(model):
    """RUN/job.toml writes every key, sizes and hidden both: it must read back (no 'both'
    error) and build the same layers."""
    spec = spec_from_dict({"model": model})
    again = spec_from_dict(__import__("tomllib").loads(dump_job(spec)))
    assert again == spec
    assert linear_widths(again, 16, 4) == linear_widths(spec, 16, 4)


def test_the_examples_still_train_as_they_did():
    """examples/digits.toml kept its sizes = [64, 128, 10]: the same network as before."""
    from disttrain.train.spec import load_job
    from tests.train.helpers import REPO

    spec = load_job(REPO / "examples" / "digits.toml")
    assert linear_widths(spec, 64, 10) == [(64, 128), (128, 10)]
    regression = load_job(REPO / "examples" / "regression.toml")  # now hidden = [64]
    assert linear_widths(regression, 16, 1) == [(16, 64), (64, 1)]
    check_job(load_job(REPO / "examples" / "cnn.toml"), "cnn.toml")


# -- one line naming the key, from the driver's check -----------------------------------

BAD_MODELS = {
    "sizes of one width, not the outputs": ({"model": {"sizes": [7]}},
                                            "[model] sizes: [7] must end with the data's 10 "
                                            "classes"),
    "sizes and hidden both": ({"model": {"sizes": [64, 32, 10], "hidden": [32]}},
                              "[model] hidden: [32] and sizes = [64, 32, 10] both give"),
    "sizes with a cnn": ({"model": {"kind": "cnn", "sizes": [64, 32, 10]}},
                         "[model] sizes: kind = 'cnn' takes the width"),
    "hidden with a zero": ({"model": {"hidden": [0]}}, "[model] hidden: every element"),
    "hidden too large": ({"model": {"hidden": [100_000, 100_000]}},
                         "[model] hidden: the model has 10,007,600,010 parameters"),
    "cnn too large": ({"model": {"kind": "cnn", "channels": [6], "pool": 1,
                                 "hidden": [400_000]}},
                      "[model] hidden: the model has 158,000,070 parameters with layers "
                      "[384, 400000, 10] for this data, more than 100,000,000; choose smaller "
                      "layers or more pooling"),
    "cnn convolutions too large": ({"model": {"kind": "cnn", "channels": [6, 20_000, 1_000]}},
                                   "[model] channels: the model has 181,230,478"),
    "channels on an mlp": ({"model": {"channels": [8]}},
                           "[model] channels: only kind = 'cnn' uses channels"),
    "pool on an mlp": ({"model": {"pool": 3}}, "[model] pool: only kind = 'cnn'"),
    "channels empty": ({"model": {"kind": "cnn", "channels": []}}, "[model] channels: "),
    "channels zero": ({"model": {"kind": "cnn", "channels": [6, 0]}},
                      "[model] channels: every element must be in [1, 100000], got 0"),
    "channels a float": ({"model": {"kind": "cnn", "channels": [6.5]}},
                         "[model] channels: expected an integer"),
    "kernel_size zero": ({"model": {"kind": "cnn", "kernel_size": 0}},
                         "[model] kernel_size: must be"),
    "even kernel, same padding": ({"model": {"kind": "cnn", "kernel_size": 4}},
                                  "[model] kernel_size: padding = 'same' pads"),
    "padding unknown": ({"model": {"kind": "cnn", "padding": "full"}},
                        "[model] padding: 'full' is not one of 'same', 'valid'"),
    "pool zero": ({"model": {"kind": "cnn", "pool": 0}}, "[model] pool: must be"),
    "kernel larger than the image": (
        {"model": {"kind": "cnn", "kernel_size": 9, "padding": "valid"}},
        "[model] kernel_size: conv 1 of channels [6, 16] gets a 8x8 image, smaller than its "
        "9x9 kernel with padding 0; choose kernel_size <= 8 or padding = 'same'"),
    "image shrunk by the convs": (
        {"model": {"kind": "cnn", "kernel_size": 5, "padding": "valid"}},
        "[model] kernel_size: conv 2 of channels [6, 16] gets a 2x2 image, smaller than its "
        "5x5 kernel with padding 0; choose kernel_size <= 2 or padding = 'same', or fewer "
        "conv layers (channels = [6])"),
    "image pooled to nothing": (
        {"model": {"kind": "cnn", "channels": [4, 4, 4, 4]}},
        "[model] pool: the max-pool after conv 4 of channels [4, 4, 4, 4] gets a 1x1 image, "
        "smaller than its 2x2 window; choose pool <= 1, or fewer conv layers (channels = "
        "[4, 4, 4])"),
    "pool wider than the image": ({"model": {"kind": "cnn", "pool": 9}},
                                  "[model] pool: the max-pool after conv 1"),
    "shape of two numbers": ({"model": {"kind": "cnn"}, "data": {"shape": [8, 8]}},
                             "[data] shape: expected [channels, height, width]"),
    "shape of another size": ({"model": {"kind": "cnn"}, "data": {"shape": [1, 8, 9]}},
                              "[data] shape: [1, 8, 9] is 72 values per sample, but the data "
                              "has 64 features"),
    "shape with a zero": ({"model": {"kind": "cnn"}, "data": {"shape": [0, 8, 8]}},
                          "[data] shape: every element"),
    "cnn on features that are no square": (
        {"model": {"kind": "cnn"}, "data": {"name": "synthetic", "n_features": 15}},
        "[model] kind: 'cnn' needs images, but the data's 15 features are not a square"),
}


@pytest.mark.parametrize("job, needle", BAD_MODELS.values(), ids=BAD_MODELS.keys())
def test_a_model_that_cannot_be_is_one_line_naming_the_key(job, needle):
    with pytest.raises(SpecError) as error:
        check_job(spec_from_dict(job, source="job.toml"), "job.toml")
    message = str(error.value)
    assert message.startswith("job.toml: ") and needle in message and "\n" not in message, \
        message


def test_a_cnn_on_a_file_needs_its_shape(tmp_path):
    """A square feature count is no proof of a 1-channel image (4x4x4 is 64 = 8x8): a
    file's images are never guessed."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", x=rng.normal(size=(40, 4, 4, 4)), y=np.arange(40) % 3)
    job = {"job": {"batch_size": 8}, "model": {"kind": "cnn", "channels": [4], "hidden": []},
           "data": {"path": str(tmp_path / "images.npz")}}
    with pytest.raises(SpecError, match=r"\[model\] kind: 'cnn' needs the shape of the "
                                        r"images in .*images.npz; set \[data\] shape"):
        check_job(spec_from_dict(job, source="job.toml"), "job.toml")
    job["data"]["shape"] = [4, 4, 4]
    check_job(spec_from_dict(job, source="job.toml"), "job.toml")  # an (N, C, H, W) file
