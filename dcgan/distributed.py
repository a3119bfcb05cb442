"""Data-parallel training with DDP when launched by ``torchrun`` (infrastructure of :mod:`dcgan.train`; §4's
batch of 128 split over the ranks).

:class:`_Dist` is this process's rank and world (read from the environment by :func:`_dist_from_env`,
which starts the process group), :func:`_batches` this rank's share of an epoch (a DistributedSampler,
the same on a resume), :func:`_barrier` waits for every rank, and :func:`_ranks_in_sync` checks that
every rank ended with the same parameters. With one process every function is a no-op or trivial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .precision import default_device

__all__: list[str] = []


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def _dist_from_env() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if default_device().type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(d: _Dist) -> None:
    if d.on:
        import torch.distributed as dist

        dist.barrier()


def _batches(n: int, batch: int, epoch: int, seed: int, dist: _Dist) -> list[torch.Tensor]:
    """This rank's index batches for ``epoch`` (DistributedSampler: the same on a resume)."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    idx = torch.tensor(list(sampler), dtype=torch.long)
    per = batch // dist.world
    nb = len(idx) // per
    return [idx[i * per : (i + 1) * per] for i in range(nb)]


def _ranks_in_sync(dist: _Dist, *nets: nn.Module) -> bool:
    """DDP sanity check: every rank ends with the same parameters (compares a float64 checksum)."""
    if not dist.on:
        return True
    import torch.distributed as tdist

    c = torch.stack([torch.cat([p.detach().double().flatten().cpu() for p in n.parameters()]).sum() for n in nets])
    c = c.to(default_device())  # NCCL reduces on the GPU
    lo, hi = c.clone(), c.clone()
    tdist.all_reduce(lo, op=tdist.ReduceOp.MIN)
    tdist.all_reduce(hi, op=tdist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError(f"DDP ranks ended with different parameters (checksums {lo.tolist()} vs {hi.tolist()})")
    return True
