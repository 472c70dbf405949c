"""Training-step benchmark: disttrain beside PyTorch CPU and hand-written numpy.

Table 1: an MLP 784-512-512-10 (ReLU), batch 256, float32, cross-entropy, SGD with
momentum 0.9, ms per step (zero_grad, forward, backward, update), at each BLAS thread
count. All three start from the same weights and see the same batch; the first step's
losses and updated weights are compared so the rows measure equal work.

Table 2: a graph of small ops on 16x16 tensors (add, mul, tanh, matmul, broadcast add,
sum with keepdim, scalar ops), forward and backward, µs per graph: the engine's per-op
overhead, where BLAS does not matter.

With --model cnn, one table instead: a LeNet-style CNN (conv 5x5 -> ReLU -> max-pool 2 ->
conv 5x5 -> ReLU -> max-pool 2 -> linear head to 10 classes), batch 64, the same step and
optimizer, disttrain beside PyTorch CPU, for several input shapes (28x28 and 32x32, 1 and
3 channels, first conv at stride 1 and 2, with and without padding).

Steps are timed one by one; the implementations take turns in rounds, so a burst of load
from other processes hits all of them. Median and min over the timed steps.

    disttrain bench step --steps 200 --warmup 20 --threads 1,2
    disttrain bench step --model cnn --steps 50 --warmup 5 --threads 1,2
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .common import (
    blas_pools,
    format_table,
    load_average,
    machine_facts,
    print_and_save,
    timing_stats,
)

IMPLS = ("disttrain", "numpy", "torch")
TARGET_VS_NUMPY, TARGET_VS_TORCH, TARGET_GRAPH = 1.10, 1.0, 2.0
LR, MOMENTUM = 0.01, 0.9


# --- the shared problem -------------------------------------------------------------------

def make_problem(sizes=(784, 512, 512, 10), batch=256, seed=0):
    """Weights [(W, b), ...] drawn as torch.nn.Linear draws them, and one batch (x, y)."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(fan_in)
        layers.append((rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32),
                       rng.uniform(-bound, bound, fan_out).astype(np.float32)))
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return layers, x, y


# --- three implementations of one training step -------------------------------------------

class _LibraryStep:
    """The step both libraries write the same way: zero_grad, forward, backward, step, on a
    model built by build(nn) whose parameters, in order, start at `weights`."""

    def step(self):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss

    def loss_value(self, loss) -> float:
        return loss.item()


class DisttrainStep(_LibraryStep):
    """disttrain.nn + CrossEntropyLoss + disttrain.optim.SGD."""

    name = "disttrain"

    def __init__(self, build, weights, x, y):
        import disttrain
        from disttrain import nn, optim

        self.model = build(nn)
        for p, w in zip(self.model.parameters(), weights):
            p.data[...] = w
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x, self.y = disttrain.from_numpy(x), disttrain.from_numpy(y)

    def weights(self) -> list:
        return [p.data for p in self.model.parameters()]


class TorchStep(_LibraryStep):
    """torch.nn + CrossEntropyLoss + torch.optim.SGD, on the CPU."""

    name = "torch"

    def __init__(self, build, weights, x, y):
        import torch

        self.model = build(torch.nn)
        with torch.no_grad():
            for p, w in zip(self.model.parameters(), weights):
                p.copy_(torch.from_numpy(w))
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def weights(self) -> list:
        return [p.detach().numpy() for p in self.model.parameters()]


def _mlp(nn, layers):
    """Linear layers of the given (weight, bias) shapes with ReLU between, in either library."""
    mods = []
    for i, (w, _) in enumerate(layers):
        lin = nn.Linear(w.shape[1], w.shape[0])
        mods += [lin] if i == len(layers) - 1 else [lin, nn.ReLU()]
    return nn.Sequential(*mods)


class DisttrainMLP(DisttrainStep):
    """The MLP in disttrain."""

    def __init__(self, layers, x, y):
        super().__init__(lambda nn: _mlp(nn, layers), [a for wb in layers for a in wb], x, y)


class TorchMLP(TorchStep):
    """The same MLP in torch."""

    def __init__(self, layers, x, y):
        super().__init__(lambda nn: _mlp(nn, layers), [a for wb in layers for a in wb], x, y)


class NumpyMLP:
    """The same step written by hand: preallocated buffers, matmuls with out=, in-place
    ReLU, softmax and momentum; no array is allocated per step except a few tiny ones."""

    name = "numpy"

    def __init__(self, layers, x, y):
        self.params = [a.copy() for wb in layers for a in wb]
        self.grads = [np.empty_like(p) for p in self.params]
        self.bufs = [np.zeros_like(p) for p in self.params]
        self.tmp = [np.empty_like(p) for p in self.params]
        self.x, self.y = x, y
        n = x.shape[0]
        self.rows = np.arange(n)
        widths = [w.shape[0] for w, _ in layers]
        self.acts = [np.empty((n, k), np.float32) for k in widths]  # relu outputs, logits
        self.deltas = [np.empty((n, k), np.float32) for k in widths[:-1]]
        self.mask = [np.empty((n, k), bool) for k in widths[:-1]]

    def step(self):
        x, y, rows = self.x, self.y, self.rows
        (w1, b1, w2, b2, w3, b3) = self.params
        (gw1, gb1, gw2, gb2, gw3, gb3) = self.grads
        h1, h2, z = self.acts
        d1, d2 = self.deltas
        m1, m2 = self.mask
        n = x.shape[0]
        # forward
        np.matmul(x, w1.T, out=h1)
        h1 += b1
        np.maximum(h1, 0, out=h1)
        np.matmul(h1, w2.T, out=h2)
        h2 += b2
        np.maximum(h2, 0, out=h2)
        np.matmul(h2, w3.T, out=z)
        z += b3
        # log-softmax cross-entropy; z becomes softmax - onehot, scaled by 1/n: dL/dz
        z -= z.max(axis=1, keepdims=True)
        picked = z[rows, y]
        np.exp(z, out=z)
        total = z.sum(axis=1, keepdims=True)
        loss = (np.log(total).sum() - picked.sum()) / n
        z /= total
        z[rows, y] -= 1
        z *= 1.0 / n
        # backward
        np.matmul(z.T, h2, out=gw3)
        np.sum(z, axis=0, out=gb3)
        np.matmul(z, w3, out=d2)
        np.greater(h2, 0, out=m2)
        d2 *= m2
        np.matmul(d2.T, h1, out=gw2)
        np.sum(d2, axis=0, out=gb2)
        np.matmul(d2, w2, out=d1)
        np.greater(h1, 0, out=m1)
        d1 *= m1
        np.matmul(d1.T, x, out=gw1)
        np.sum(d1, axis=0, out=gb1)
        # SGD with momentum, as torch: buf = momentum * buf + g; p -= lr * buf
        for p, g, buf, tmp in zip(self.params, self.grads, self.bufs, self.tmp):
            buf *= MOMENTUM
            buf += g
            np.multiply(buf, LR, out=tmp)
            p -= tmp
        return loss

    def loss_value(self, loss) -> float:
        return float(loss)

    def weights(self) -> list:
        return self.params


CLASSES = {"disttrain": DisttrainMLP, "numpy": NumpyMLP, "torch": TorchMLP}


def check_equal_work(problem, classes=None) -> dict:
    """First-step losses of fresh models, and the largest weight difference after it from
    torch's (the reference)."""
    losses, weights = {}, {}
    for name, cls in (classes or CLASSES).items():
        impl = cls(*problem)
        losses[name] = impl.loss_value(impl.step())
        weights[name] = [np.array(w) for w in impl.weights()]
    ref = weights["torch"]
    weight_diff = max(float(np.max(np.abs(a - b)))
                      for name in weights if name != "torch" for a, b in zip(weights[name], ref))
    loss_diff = max(abs(a - b) for a in losses.values() for b in losses.values())
    return {"loss": losses, "max_loss_diff": loss_diff, "max_weight_diff": weight_diff}


def time_rounds(impls: dict, steps: int, warmup: int, rounds: int, settle: int = 2) -> dict:
    """Seconds of each timed call of impl.step(), the implementations taking turns."""
    for impl in impls.values():
        for _ in range(warmup):
            impl.step()
    times = {name: [] for name in impls}
    rounds = max(1, min(rounds, steps))
    for r in range(rounds):
        count = steps // rounds + (1 if r < steps % rounds else 0)
        for name, impl in impls.items():
            for _ in range(settle):  # let the previous library's spinning threads go idle
                impl.step()
            for _ in range(count):
                start = time.perf_counter()
                impl.step()
                times[name].append(time.perf_counter() - start)
    return times


def bench_mlp(problem, threads: int, steps: int, warmup: int, rounds: int) -> dict:
    """One row of table 1: ms per step of each implementation at `threads` BLAS threads."""
    impls = {name: CLASSES[name](*problem) for name in IMPLS}
    times = time_rounds(impls, steps, warmup, rounds)
    row = {"threads": threads}
    for name in IMPLS:
        row[name] = {k: (v * 1e3 if k != "n" else v) for k, v in timing_stats(times[name]).items()}
    for other in ("numpy", "torch"):
        row[f"disttrain/{other}"] = row["disttrain"]["median"] / row[other]["median"]
        row[f"disttrain/{other} (min)"] = row["disttrain"]["min"] / row[other]["min"]
    return row


# --- table 2: a graph of small ops ----------------------------------------------------------

OPS_PER_BLOCK = 10


def small_graph(x, a, b, v, n_ops: int):
    """A chain of n_ops small ops (rounded up to a multiple of 10), reduced to a scalar."""
    h = x
    for _ in range(-(-n_ops // OPS_PER_BLOCK)):
        h = h + a
        h = h * b
        h = h.tanh()
        h = h @ a
        h = h + v  # (16,) broadcast over rows
        s = h.sum(1, keepdim=True)
        h = h - s * (1 / 16)  # two ops: scalar mul, broadcast sub
        h = h.tanh()
        h = h * 0.5
    return h.sum()


def _graph_inputs(lib, n=16, seed=1):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n, n), dtype=np.float32),
              (0.25 * rng.standard_normal((n, n))).astype(np.float32),
              rng.uniform(0.5, 1.5, (n, n)).astype(np.float32),
              (0.1 * rng.standard_normal(n)).astype(np.float32)]
    if lib == "torch":
        import torch

        return [torch.tensor(a, requires_grad=i > 0) for i, a in enumerate(arrays)]
    import disttrain

    return [disttrain.tensor(a, requires_grad=i > 0) for i, a in enumerate(arrays)]


def bench_graph(threads: int, n_ops: int, iters: int, warmup: int, rounds: int) -> dict:
    """One row of table 2: µs per forward+backward of the small-op graph, and a value check."""
    inputs = {lib: _graph_inputs(lib) for lib in ("disttrain", "torch")}

    def runner(lib):
        x, a, b, v = inputs[lib]

        def once():
            for leaf in (a, b, v):
                leaf.grad = None
            out = small_graph(x, a, b, v, n_ops)
            out.backward()
            return out
        return once

    runs = {lib: runner(lib) for lib in inputs}
    values = {lib: float(runs[lib]().item()) for lib in runs}
    grads = {lib: [np.asarray(t.grad.detach().numpy() if lib == "torch" else t.grad.numpy())
                   for t in inputs[lib][1:]] for lib in runs}
    grad_diff = max(float(np.max(np.abs(p - q))) for p, q in zip(grads["disttrain"],
                                                                  grads["torch"]))

    class _Impl:  # time_rounds wants objects with step()
        def __init__(self, fn):
            self.step = fn

    times = time_rounds({lib: _Impl(fn) for lib, fn in runs.items()}, iters, warmup, rounds)
    row = {"threads": threads, "ops": -(-n_ops // OPS_PER_BLOCK) * OPS_PER_BLOCK + 1,
           "max_value_diff": abs(values["disttrain"] - values["torch"]),
           "max_grad_diff": grad_diff}
    for lib in runs:
        row[lib] = {k: (v * 1e6 if k != "n" else v) for k, v in timing_stats(times[lib]).items()}
    row["disttrain/torch"] = row["disttrain"]["median"] / row["torch"]["median"]
    row["disttrain/torch (min)"] = row["disttrain"]["min"] / row["torch"]["min"]
    return row


# --- the CNN table ------------------------------------------------------------------------

# (channels, height/width, first conv's stride, first conv's padding)
CNN_SHAPES = ((1, 28, 1, 0), (1, 28, 1, 2), (1, 28, 2, 0), (3, 32, 1, 0), (3, 32, 2, 2),
              (1, 32, 1, 2))
TARGET_CNN = 1.3


def _cnn_flat_size(size: int, stride: int, padding: int) -> int:
    """Features into the linear head: conv 5x5 / pool 2 / conv 5x5 / pool 2 on size x size."""
    size = ((size + 2 * padding - 5) // stride + 1) // 2
    return 16 * ((size - 4) // 2) ** 2


def _cnn(nn, channels, size, stride, padding):
    """The LeNet-style model, written once for both libraries (their nn APIs match)."""
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, stride=stride, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(_cnn_flat_size(size, stride, padding), 10))


def make_cnn_problem(shape, batch=64, seed=0):
    """torch's initial CNN weights (as numpy) and one batch (x, y) for `shape`."""
    import torch

    torch.manual_seed(seed)
    weights = [p.detach().numpy().copy() for p in _cnn(torch.nn, *shape).parameters()]
    rng = np.random.default_rng(seed)
    channels, size = shape[:2]
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    return shape, weights, x, y


class DisttrainCNN(DisttrainStep):
    """The CNN in disttrain."""

    def __init__(self, shape, weights, x, y):
        super().__init__(lambda nn: _cnn(nn, *shape), weights, x, y)


class TorchCNN(TorchStep):
    """The same CNN in torch."""

    def __init__(self, shape, weights, x, y):
        super().__init__(lambda nn: _cnn(nn, *shape), weights, x, y)


CNN_CLASSES = {"disttrain": DisttrainCNN, "torch": TorchCNN}


def bench_cnn(problem, threads: int, steps: int, warmup: int, rounds: int) -> dict:
    """One row of the CNN table: ms per step of each library for one shape and thread count."""
    channels, size, stride, padding = problem[0]
    impls = {name: cls(*problem) for name, cls in CNN_CLASSES.items()}
    times = time_rounds(impls, steps, warmup, rounds)
    row = {"threads": threads, "input": f"{channels}x{size}x{size}", "stride": stride,
           "padding": padding, "check": check_equal_work(problem, CNN_CLASSES)}
    for name in CNN_CLASSES:
        row[name] = {k: (v * 1e3 if k != "n" else v) for k, v in timing_stats(times[name]).items()}
    row["disttrain/torch"] = row["disttrain"]["median"] / row["torch"]["median"]
    row["disttrain/torch (min)"] = row["disttrain"]["min"] / row["torch"]["min"]
    return row


def run_cnn(threads=(1, 2), steps=50, warmup=5, rounds=10, batch=64, shapes=CNN_SHAPES,
            log=None) -> dict:
    """The CNN table's rows (each with its first-step check) and the load around the run."""
    result = {"model": "cnn", "load_start": load_average(), "machine": machine_facts(),
              "batch": batch, "steps": steps, "warmup": warmup, "cnn": []}
    problems = [make_cnn_problem(shape, batch) for shape in shapes]
    for n in _at_each_thread_count(threads, result, log):
        for problem in problems:
            result["cnn"].append(bench_cnn(problem, n, steps, warmup, rounds))
    result["load_end"] = load_average()
    return result


def _at_each_thread_count(threads, result: dict, log):
    """Yield each thread count with BLAS pools and torch set to it, noting the settings."""
    import torch
    from threadpoolctl import threadpool_limits

    for n in threads:
        with threadpool_limits(limits=n):
            torch.set_num_threads(n)
            pools = f"threads={n}: torch.set_num_threads({n}), threadpoolctl: {blas_pools()}"
            if log:
                log(pools)
            result.setdefault("thread_settings", []).append(pools)
            yield n


def format_cnn(rows: list[dict]) -> str:
    header = ["threads", "input", "stride", "pad", "disttrain ms med/min", "torch ms med/min",
              "dt/torch med", "dt/torch min", "loss dt / torch", "max weight diff"]
    body = [[r["threads"], r["input"], r["stride"], r["padding"],
             f"{r['disttrain']['median']:.2f} / {r['disttrain']['min']:.2f}",
             f"{r['torch']['median']:.2f} / {r['torch']['min']:.2f}",
             f"{r['disttrain/torch']:.2f} ({_verdict(r['disttrain/torch'], TARGET_CNN)})",
             f"{r['disttrain/torch (min)']:.2f} "
             f"({_verdict(r['disttrain/torch (min)'], TARGET_CNN)})",
             f"{r['check']['loss']['disttrain']:.6f} / {r['check']['loss']['torch']:.6f}",
             f"{r['check']['max_weight_diff']:.1e}"]
            for r in rows]
    return format_table(header, body)


def report_cnn(result: dict) -> str:
    lines = [*result["machine"], *result["thread_settings"],
             f"load average at start: {result['load_start']}; at end: {result['load_end']}",
             "",
             "CNN conv5x5(C->6, stride, pad) -> ReLU -> maxpool2 -> conv5x5(6->16) -> ReLU -> "
             f"maxpool2 -> linear(10), batch {result['batch']}, float32, cross-entropy, SGD "
             f"lr={LR} momentum={MOMENTUM}; {result['steps']} timed steps after "
             f"{result['warmup']} warm-up; ms/step median / min; first-step loss of each "
             "library and the largest weight difference after that step",
             format_cnn(result["cnn"]),
             f"target: disttrain/torch <= {TARGET_CNN}"]
    return "\n".join(lines)


# --- output -------------------------------------------------------------------------------------

def _verdict(ratio: float, target: float) -> str:
    return "ok" if ratio <= target else "MISS"


def format_mlp(rows: list[dict]) -> str:
    header = ["threads", "disttrain ms med/min", "numpy ms med/min", "torch ms med/min",
              "dt/numpy med", "dt/torch med", "dt/numpy min", "dt/torch min"]
    body = []
    for r in rows:
        cells = [r["threads"]]
        cells += [f"{r[n]['median']:.2f} / {r[n]['min']:.2f}" for n in IMPLS]
        for key, target in (("disttrain/numpy", TARGET_VS_NUMPY),
                            ("disttrain/torch", TARGET_VS_TORCH)):
            cells.append(f"{r[key]:.3f} ({_verdict(r[key], target)})")
        for key, target in (("disttrain/numpy (min)", TARGET_VS_NUMPY),
                            ("disttrain/torch (min)", TARGET_VS_TORCH)):
            cells.append(f"{r[key]:.3f} ({_verdict(r[key], target)})")
        body.append(cells)
    return format_table(header, body)


def format_graph(rows: list[dict]) -> str:
    header = ["threads", "ops", "disttrain µs med/min", "torch µs med/min", "dt/torch med",
              "dt/torch min"]
    body = [[r["threads"], r["ops"],
             f"{r['disttrain']['median']:.0f} / {r['disttrain']['min']:.0f}",
             f"{r['torch']['median']:.0f} / {r['torch']['min']:.0f}",
             f"{r['disttrain/torch']:.2f} ({_verdict(r['disttrain/torch'], TARGET_GRAPH)})",
             f"{r['disttrain/torch (min)']:.2f} "
             f"({_verdict(r['disttrain/torch (min)'], TARGET_GRAPH)})"]
            for r in rows]
    return format_table(header, body)


def run(threads=(1, 2), steps=200, warmup=20, rounds=20, sizes=(784, 512, 512, 10), batch=256,
        graph_ops=200, graph_iters=300, log=None) -> dict:
    """Both tables' rows, the equal-work check and the load average around the run."""
    result = {"load_start": load_average(), "machine": machine_facts(), "sizes": list(sizes),
              "batch": batch, "steps": steps, "warmup": warmup, "mlp": [], "graph": []}
    problem = make_problem(sizes, batch)
    for n in _at_each_thread_count(threads, result, log):
        if "check" not in result:
            result["check"] = check_equal_work(problem)
        result["mlp"].append(bench_mlp(problem, n, steps, warmup, rounds))
        result["graph"].append(bench_graph(n, graph_ops, graph_iters, warmup, rounds))
    result["load_end"] = load_average()
    return result


def report(result: dict) -> str:
    c = result["check"]
    sizes = "-".join(map(str, result["sizes"]))
    lines = [*result["machine"], *result["thread_settings"],
             f"load average at start: {result['load_start']}; at end: {result['load_end']}",
             "",
             f"MLP {sizes} (ReLU), batch {result['batch']}, float32, cross-entropy, SGD "
             f"lr={LR} momentum={MOMENTUM}; {result['steps']} timed steps after "
             f"{result['warmup']} warm-up; ms/step median / min",
             "first-step loss: " + ", ".join(f"{k} {v:.6f}" for k, v in c["loss"].items())
             + f"; max loss difference {c['max_loss_diff']:.2e}; max weight difference after "
             f"the step {c['max_weight_diff']:.2e}",
             format_mlp(result["mlp"]),
             f"targets: disttrain/numpy <= {TARGET_VS_NUMPY}, disttrain/torch <= "
             f"{TARGET_VS_TORCH}; under load from other processes the 2-thread medians "
             "measure the load as much as the code (a parallel GEMM waits for its slowest "
             "thread): compare the mins there",
             "",
             "small-op graph on 16x16 float32 tensors, forward + backward, µs per graph "
             "median / min",
             format_graph(result["graph"]),
             f"target: disttrain/torch <= {TARGET_GRAPH}; value/grad max difference vs torch: "
             + ", ".join(f"{r['max_value_diff']:.1e}/{r['max_grad_diff']:.1e}"
                         for r in result["graph"])]
    return "\n".join(lines)


def _given(value, default):
    return default if value is None else value


def main(argv: list[str] | None = None) -> int:
    """Run both tables and print them (and write JSON with --json)."""
    parser = argparse.ArgumentParser(prog="disttrain bench step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                        help="mlp: the MLP and small-op tables; cnn: the CNN table")
    parser.add_argument("--steps", type=int, help="timed steps per implementation "
                        "(default 200 for mlp, 50 for cnn)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 20 / 5)")
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts, e.g. 1,2")
    parser.add_argument("--rounds", type=int, help="the implementations take turns this "
                        "many times (default 20 / 10)")
    parser.add_argument("--sizes", default="784,512,512,10", help="MLP layer widths")
    parser.add_argument("--batch", type=int, help="default 256 for mlp, 64 for cnn")
    parser.add_argument("--graph-ops", type=int, default=200)
    parser.add_argument("--graph-iters", type=int, default=300, help="timed graphs per library")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.model == "cnn":
        result = run_cnn(threads=threads, steps=_given(args.steps, 50),
                         warmup=_given(args.warmup, 5), rounds=_given(args.rounds, 10),
                         batch=_given(args.batch, 64))
        return print_and_save(result, report_cnn, args.json)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if len(sizes) != 4:
        parser.error("--sizes needs four widths: inputs,hidden,hidden,classes")
    result = run(threads=threads, steps=_given(args.steps, 200), warmup=_given(args.warmup, 20),
                 rounds=_given(args.rounds, 20), sizes=sizes, batch=_given(args.batch, 256),
                 graph_ops=args.graph_ops, graph_iters=args.graph_iters)
    return print_and_save(result, report, args.json)


if __name__ == "__main__":
    sys.exit(main())
