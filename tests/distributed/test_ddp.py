"""DistributedDataParallel on real communicators, checked against torch's full-batch gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import disttrain
from disttrain import nn
from disttrain.distributed import DistributedDataParallel, LocalCommunicator
from disttrain.distributed.buckets import FIRST_BUCKET_BYTES, assign_buckets

from .helpers import CLASSES, DDPRank, TwoHeads, batch


def torch_grads(state: dict, chunks, use_spare=False) -> dict:
    """The oracle: torch's gradient of the summed loss over every rank's chunks."""
    model = torch.nn.ModuleDict({
        "body": torch.nn.Linear(6, state["body.weight"].shape[0], dtype=torch.float64),
        "head": torch.nn.Linear(state["body.weight"].shape[0], CLASSES, dtype=torch.float64),
        "spare": torch.nn.Linear(state["body.weight"].shape[0], CLASSES, dtype=torch.float64),
        "never": torch.nn.Linear(state["body.weight"].shape[0], CLASSES, dtype=torch.float64)})
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    for x, y in chunks:
        h = torch.tanh(model["body"](torch.from_numpy(x)))
        out = model["head"](h) + (model["spare"](h) if use_spare else 0)
        torch.nn.functional.cross_entropy(out, torch.from_numpy(y), reduction="sum").backward()
    return {n: (None if p.grad is None else p.grad.numpy()) for n, p in model.named_parameters()}


# -- one process ---------------------------------------------------------------------------
def test_one_rank_is_plain_backward_without_buckets():
    disttrain.manual_seed(0)
    model = TwoHeads()
    plain = {n: p.data.copy() for n, p in model.named_parameters()}
    ddp = DistributedDataParallel(model, LocalCommunicator(), bucket_cap_mb=0.0001)
    assert ddp.buckets == []
    x, y = batch(1)
    nn.CrossEntropyLoss()(ddp(disttrain.tensor(x)), disttrain.tensor(y)).backward()
    fresh = TwoHeads()
    fresh.load_state_dict(plain)
    nn.CrossEntropyLoss()(fresh(disttrain.tensor(x)), disttrain.tensor(y)).backward()
    for (name, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            np.testing.assert_array_equal(a.grad.data, b.grad.data, err_msg=name)
    ddp.close()


def test_buckets_follow_reverse_registration_order_with_a_small_first_bucket():
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(8)])  # 256 KiB per weight
    buckets = assign_buckets(list(model.named_parameters()), bucket_cap_mb=1.0)
    names = [n for b in buckets for n in b.names]
    assert names == [n for n, _ in reversed(list(model.named_parameters()))]
    assert buckets[0].numel * 4 <= FIRST_BUCKET_BYTES
    assert all(b.numel * 4 <= 1024 * 1024 for b in buckets)
    assert len(buckets) > 2
    for bucket in buckets:  # every parameter's gradient storage is a view into its bucket
        for p, view in zip(bucket.params, bucket.views):
            assert p._grad_buffer is view and np.shares_memory(view, bucket.buffer)


def test_unused_parameters_keep_grad_none_without_ddp_hanging():
    disttrain.manual_seed(0)
    model = TwoHeads()
    ddp = DistributedDataParallel(model, LocalCommunicator())
    x, y = batch(2)
    nn.CrossEntropyLoss()(ddp(disttrain.tensor(x)), disttrain.tensor(y)).backward()
    assert model.spare.weight.grad is None and model.never.bias.grad is None
    assert model.head.weight.grad is not None
    ddp.close()


# -- several ranks on Ray ------------------------------------------------------------------
@pytest.fixture(params=["coordinator", "ring"])
def ranks(request, ray_session):
    """Two DDPRank actors with a coordinator; built by each test (it picks the model)."""
    import secrets

    from disttrain.workers.coordinator import create_coordinator

    ray = ray_session
    coordinator = create_coordinator(world_size=2, timeout_s=20)
    actors = [ray.remote(num_cpus=0)(DDPRank).remote() for _ in range(2)]
    secret = secrets.token_hex(16)

    def build(hidden=(8, 8), bucket_cap_mb=25.0):
        return ray.get([a.build.remote(request.param, r, 2, coordinator, secret, seed=10 + r,
                                       hidden=hidden[r], bucket_cap_mb=bucket_cap_mb)
                        for r, a in enumerate(actors)], timeout=60)

    yield ray, actors, build
    for a in actors:
        ray.kill(a)
    ray.kill(coordinator)



@pytest.mark.ray
def test_rank0_parameters_are_broadcast_and_grads_equal_torch_full_batch(ranks, request):
    ray, actors, build = ranks
    assert build(bucket_cap_mb=0.0005) == ["ok", "ok"]
    params = ray.get([a.params.remote() for a in actors])
    for name in params[0]:
        np.testing.assert_array_equal(params[0][name], params[1][name])
    chunks = [[batch(100 + r)] for r in range(2)]
    grads = ray.get([a.step.remote(chunks[r]) for r, a in enumerate(actors)], timeout=60)
    assert ray.get([a.grads_are_bucket_views.remote() for a in actors]) == [True, True]
    counts = ray.get([a.buckets_in_place.remote() for a in actors])
    if request.node.callspec.params["ranks"] == "coordinator":
        # every bucket sat in pinned shared memory: all-reduced with no copy in
        assert counts[0][0] >= 1 and counts == [(counts[0][0], counts[0][0])] * 2
    else:
        assert counts[0][1] is None
    want = torch_grads(params[0], chunks[0] + chunks[1])
    for name, g in want.items():
        for rank in range(2):
            if g is None:
                assert grads[rank][name] is None, name
            else:  # DDP averages; the loss is a sum over 2 ranks' chunks
                np.testing.assert_allclose(grads[rank][name] * 2, g, rtol=1e-12, atol=1e-12)


@pytest.mark.ray
def test_no_sync_accumulates_locally_then_one_allreduce(ranks):
    ray, actors, build = ranks
    build()
    params = ray.get(actors[0].params.remote())
    chunks = [[batch(200 + r), batch(300 + r), batch(400 + r)] for r in range(2)]
    grads = ray.get([a.step.remote(chunks[r], sync_last_only=True)
                     for r, a in enumerate(actors)], timeout=60)
    want = torch_grads(params, chunks[0] + chunks[1])
    for name in ("body.weight", "head.bias"):
        np.testing.assert_allclose(grads[0][name] * 2, want[name], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(grads[0][name], grads[1][name])


@pytest.mark.ray
def test_parameter_used_on_one_rank_only_is_averaged_and_unused_stays_none(ranks):
    ray, actors, build = ranks
    build()
    params = ray.get(actors[0].params.remote())
    x0, x1 = batch(500), batch(501)
    grads = ray.get([actors[0].step.remote([x0], use_spare=True),
                     actors[1].step.remote([x1], use_spare=False)], timeout=60)
    with_spare = torch_grads(params, [x0], use_spare=True)
    for rank in range(2):
        np.testing.assert_allclose(grads[rank]["spare.weight"] * 2, with_spare["spare.weight"],
                                   rtol=1e-12, atol=1e-12)
        assert grads[rank]["never.weight"] is None


@pytest.mark.ray
def test_ranks_with_different_models_fail_at_start_naming_the_parameter(ranks):
    ray, actors, build = ranks
    results = build(hidden=(8, 9))
    for result in results:
        assert result.startswith("CollectiveError"), result
        assert "body.weight" in result and "rank 1" in result


@pytest.mark.ray
@pytest.mark.parametrize("backend", ["coordinator", "ring"])
def test_batchnorm_buffers_are_rank0s_before_every_training_forward(backend, ray_session):
    """As torch's DDP (broadcast_buffers=True): each training forward starts from rank 0's
    running statistics, which each rank then moves by its own batch; eval forwards under
    no_grad run no collective."""
    import secrets

    from disttrain.workers.coordinator import create_coordinator

    from .helpers import BatchNormRank

    ray = ray_session
    coordinator = create_coordinator(world_size=2, timeout_s=20)
    actors = [ray.remote(num_cpus=0)(BatchNormRank).remote() for _ in range(2)]
    secret = secrets.token_hex(16)
    try:
        start = ray.get([a.build.remote(backend, r, 2, coordinator, secret)
                         for r, a in enumerate(actors)], timeout=60)
        for key in start[0]:
            np.testing.assert_array_equal(start[0][key], start[1][key])
        assert start[0]["1.running_mean"].tolist() == [1.0] * 4  # rank 0's, not rank 1's 2.0

        def torch_after(state, x):
            """torch's BatchNorm state after one training forward of x from state."""
            model = torch.nn.Sequential(torch.nn.Linear(6, 4, dtype=torch.float64),
                                        torch.nn.BatchNorm1d(4, dtype=torch.float64))
            model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
            model(torch.from_numpy(x))
            return {k: v.detach().numpy() for k, v in model.state_dict().items()}

        xs = [[batch(700 + 10 * step + r)[0] for r in range(2)] for step in range(2)]
        rank0 = start[0]
        for step in range(2):
            after = ray.get([a.train_step.remote(xs[step][r]) for r, a in enumerate(actors)],
                            timeout=60)
            for r in range(2):  # both moved rank 0's statistics by their own batch
                want = torch_after(rank0, xs[step][r])
                for key in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
                    np.testing.assert_allclose(after[r][key], want[key], rtol=1e-12, atol=1e-12)
            rank0 = after[0]
        outputs = ray.get([a.eval_output.remote(xs[0][0]) for a in actors], timeout=60)
        assert not np.array_equal(outputs[0], outputs[1])  # each its own statistics: no sync
    finally:
        for a in actors:
            ray.kill(a)
        ray.kill(coordinator)
