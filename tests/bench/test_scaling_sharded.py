"""`disttrain bench scaling --backend NAME+sharded`: the same job with shard_optimizer on."""

from __future__ import annotations

from disttrain.bench import scaling
from disttrain.train.spec import spec_from_dict


def test_a_sharded_backend_name_is_the_same_job_with_shard_optimizer():
    def job(backend):
        return scaling.job_dict(2, backend, (32, 16, 16, 4), batch=8, steps=6, warmup=4,
                                log_every=2)

    plain, sharded = spec_from_dict(job("mpi")), spec_from_dict(job("mpi+sharded"))
    assert sharded.distributed.backend == "mpi" and sharded.distributed.shard_optimizer
    assert not plain.distributed.shard_optimizer
    sharded.distributed.shard_optimizer = False
    assert sharded == plain
